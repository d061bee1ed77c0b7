/**
 * Every bound of the cluster map and the placement policy, each with its reason
 * (STYLE §3). Relationships between them are asserted at load. A command that would cross a
 * bound is rejected with a clear HesError and changes nothing.
 */
import { assert } from "@hes/base";
import { CONTROL_MESSAGE_BYTES_MAX } from "@hes/proto";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

// ---- Command language and encoding ----

/** The command language this code speaks (`ClusterCommand.version`). */
export const CLUSTER_COMMAND_VERSION = 1;

/** The snapshot encoding this code writes and reads (`ClusterMapState.format`). */
export const CLUSTER_MAP_FORMAT = 1;

/**
 * Largest encoded command. The biggest legitimate ones are a heartbeat of a node with every
 * disk and a full batch of progress reports (~1024 × 40 bytes); a Raft entry should stay far
 * below the control plane's 16 MiB message bound so appends batch many entries.
 */
export const COMMAND_BYTES_MAX = 256 * KiB;

/** Entries in one ReportReplicaProgress batch: keeps one entry's apply time short. */
export const PROGRESS_ENTRIES_MAX = 1024;

// ---- Nodes ----

/**
 * Live (not removed) nodes. The design targets 3 to ~16 hosts; 64 leaves room and keeps
 * placement (linear in nodes per chunk) and status output small.
 */
export const NODES_MAX = 64;

/**
 * Node records including removed ones, kept as tombstones so that a removed node id is never
 * silently reused by a host that still holds old data.
 */
export const NODE_RECORDS_MAX = 256;

/** Disks per node: a host with more than this is a storage appliance, not a hypervisor. */
export const DISKS_PER_NODE_MAX = 64;

/** host:port strings, disk ids and paths: generous for DNS names and /dev/disk/by-id paths. */
export const ADDRESS_BYTES_MAX = 256;

/** Failure-domain labels (rack or chassis names). */
export const FAILURE_DOMAIN_BYTES_MAX = 64;

/** Cluster ids (a UUID is 36 characters). */
export const CLUSTER_ID_BYTES_MAX = 64;

/** Default silence after which a node may be marked down (issue 5: 30 s). */
export const GRACE_PERIOD_MS_DEFAULT = 30_000;

/** Shortest grace period: below this a GC pause or a leader change marks healthy nodes down. */
export const GRACE_PERIOD_MS_MIN = 1_000;

/** Longest grace period: beyond an hour, lost redundancy waits too long to be restored. */
export const GRACE_PERIOD_MS_MAX = 3_600_000;

// ---- Volumes ----

/** Live volumes: the map keeps them all in memory and `hes status` lists them. */
export const VOLUMES_MAX = 4096;

/** Volume and snapshot names (bytes of UTF-8; names are [A-Za-z0-9._-]). */
export const NAME_BYTES_MAX = 128;

/** Volume sizes are whole blocks: the extent store's block is 4 KiB. */
export const VOLUME_BLOCK_BYTES = 4 * KiB;

/** Largest volume: 64 TiB is 2^20 chunks of the default size. */
export const VOLUME_SIZE_BYTES_MAX = 64 * TiB;

/** Default chunk (placement unit) size, as DESIGN.md says. */
export const CHUNK_SIZE_BYTES_DEFAULT = 64 * MiB;

/** Smallest chunk: smaller ones multiply placement records for no gain in balance. */
export const CHUNK_SIZE_BYTES_MIN = 1 * MiB;

/** Largest chunk: a rebuild copies a chunk as one unit; 1 GiB still streams in seconds. */
export const CHUNK_SIZE_BYTES_MAX = 1 * GiB;

/** Chunks of one volume: keeps a volume's chunk index below 2^20 (see chunkKey). */
export const CHUNKS_PER_VOLUME_MAX = 1 << 20;

/**
 * Placed chunks in the whole map. Each costs ~200 bytes of memory and ~40 bytes of Raft
 * snapshot; 2^20 of them is 64 TiB of written data at the default chunk size, a ~50 MiB
 * snapshot and ~200 MiB of memory on every member.
 */
export const CHUNK_PLACEMENTS_MAX = 1 << 20;

/** Default replicas per chunk (DESIGN.md: 3 hosts in distinct failure domains). */
export const REPLICATION_FACTOR_DEFAULT = 3;

/** Most replicas per chunk: more copies than this is a backup policy, not replication. */
export const REPLICATION_FACTOR_MAX = 5;

/** Snapshots of one volume: each pins old data on every replica of every chunk. */
export const SNAPSHOTS_PER_VOLUME_MAX = 256;

/** Linked clones of clones: a read falls through at most this many parents. */
export const CLONE_DEPTH_MAX = 16;

/** Volume ids are never reused; they travel as uint64 but stay below 2^32 (see chunkKey). */
export const VOLUME_ID_MAX = 0xffff_ffff;

// ---- Placement, rebuild, rebalance ----

/**
 * Moves (rebalance) in flight in the whole cluster. Each copies up to one chunk while the
 * owner keeps writing to both ends; 32 × 64 MiB = 2 GiB in flight is plenty to keep disks busy
 * without starving client IO.
 */
export const MOVES_INFLIGHT_MAX = 32;

/**
 * Moves in flight that start or end at one node: a move reads one disk and writes another,
 * so this caps the rebalance load any single disk sees.
 */
export const MOVES_PER_NODE_MAX = 4;

/**
 * Replicas being rebuilt (re-placed after a failure) in the whole cluster. Higher than the
 * move bound: lost redundancy is worth more disk time than balance.
 */
export const REBUILDS_INFLIGHT_MAX = 128;

/**
 * The writing host is preferred as a replica (data locality) unless its utilisation exceeds
 * the cluster mean by more than this fraction of the mean: locality must not fill one host.
 */
export const PLACEMENT_LOCALITY_SLACK_FRACTION = 0.05;

/**
 * Rebalance stops once every node's utilisation is within this fraction of the mean (the
 * issue's target is ±10%; stopping at ±5% leaves margin, and stopping at all avoids churn).
 */
export const REBALANCE_TOLERANCE_FRACTION = 0.05;

/** Chunks a rebalance plan looks at per source node: bounds the planner's work per call. */
export const REBALANCE_SCAN_PER_NODE_MAX = 4096;

/** Re-placements a repair plan proposes per call (the rest come on the next call). */
export const REPAIR_PLAN_MAX = REBUILDS_INFLIGHT_MAX;

assert(CHUNK_SIZE_BYTES_MIN % VOLUME_BLOCK_BYTES === 0, "chunks hold whole blocks");
assert(
  CHUNK_SIZE_BYTES_MIN <= CHUNK_SIZE_BYTES_DEFAULT &&
    CHUNK_SIZE_BYTES_DEFAULT <= CHUNK_SIZE_BYTES_MAX,
  "default chunk size within bounds",
);
assert(
  VOLUME_SIZE_BYTES_MAX / CHUNK_SIZE_BYTES_DEFAULT <= CHUNKS_PER_VOLUME_MAX,
  "a largest volume at the default chunk size fits the chunk index",
);
// chunkKey packs (volume id, chunk index) into one safe integer.
assert(
  (VOLUME_ID_MAX + 1) * CHUNKS_PER_VOLUME_MAX <= Number.MAX_SAFE_INTEGER + 1,
  "chunk keys are safe integers",
);
assert(COMMAND_BYTES_MAX < CONTROL_MESSAGE_BYTES_MAX / 16, "many commands fit one append");
assert(NODES_MAX <= NODE_RECORDS_MAX, "live nodes are a subset of node records");
assert(REPLICATION_FACTOR_DEFAULT <= REPLICATION_FACTOR_MAX, "default replication within max");
assert(MOVES_PER_NODE_MAX <= MOVES_INFLIGHT_MAX, "per-node moves within the cluster bound");
assert(GRACE_PERIOD_MS_MIN <= GRACE_PERIOD_MS_DEFAULT, "default grace within bounds");
assert(GRACE_PERIOD_MS_DEFAULT <= GRACE_PERIOD_MS_MAX, "default grace within bounds");
assert(REBALANCE_TOLERANCE_FRACTION < 0.1, "rebalance stops inside the ±10% target");
