/**
 * The cluster map's records and its read-only view.
 *
 * Records are immutable: a change replaces the record, so a record handed out by a query stays
 * valid and never changes under its holder. Numbers are plain safe integers (the wire's
 * uint64 values are checked on the way in); 0 means "none" for ids, as on the wire.
 */
import type { NodeId } from "@hes/base";
import { CHUNKS_PER_VOLUME_MAX } from "../limits.js";

/**
 * A node's state. `up` and `draining` nodes are alive (they heartbeat and may own volumes);
 * `draining` ones take no new replicas and give theirs away. `down` nodes stopped
 * heartbeating for the grace period. `removed` is a tombstone: the id is never reused.
 */
export type NodeState = "up" | "down" | "draining" | "removed";

/**
 * A replica's state. `in-sync` holds every acknowledged write of its chunk; `stale` missed
 * writes and catches up from its durable sequence; `filling` is new (rebuild or a move's
 * target) and is being copied in.
 */
export type ReplicaState = "in-sync" | "stale" | "filling";

/** One disk of a node, as last announced or heartbeated. */
export interface DiskRecord {
  readonly diskId: string;
  readonly path: string;
  readonly capacityBytes: number;
  readonly usedBytes: number;
  /** Out of service (IO errors): its capacity no longer counts. */
  readonly failed: boolean;
}

/** A host of the cluster. */
export interface NodeRecord {
  readonly nodeId: NodeId;
  /** host:port of the gRPC control plane. */
  readonly controlAddress: string;
  /** host:port of the framed data plane. */
  readonly dataAddress: string;
  readonly failureDomain: string;
  readonly state: NodeState;
  /** Draining was asked for; survives a down period (the node comes back draining). */
  readonly drain: boolean;
  readonly disks: readonly DiskRecord[];
  /** Map time (leader-stamped ms) of the last heartbeat, or of joining. */
  readonly lastHeartbeatMs: number;
  readonly joinedAtIndex: number;
  /** Map time it was last marked down (0: never). */
  readonly downSinceMs: number;
  /** Volumes whose lease was taken from it when it was last marked down. */
  readonly revokedVolumeIds: readonly number[];
}

/** A point-in-time copy of a volume (redirect-on-write in the extent store). */
export interface VolumeSnapshotRecord {
  readonly snapshotId: number;
  readonly name: string;
  readonly createdAtIndex: number;
  readonly createdAtMs: number;
}

/** A virtual disk. */
export interface VolumeRecord {
  readonly volumeId: number;
  readonly name: string;
  readonly sizeBytes: number;
  /** A power of two: the placement unit. */
  readonly chunkSizeBytes: number;
  readonly replicationFactor: number;
  /** Replicas a write must be durable on before it is acknowledged. */
  readonly writeQuorum: number;
  /** The lease holder (0: not open anywhere). */
  readonly ownerNodeId: number;
  /** Grows on every grant of the lease; a replica refuses writes from an older epoch. */
  readonly epoch: number;
  /** For a linked clone: the volume and snapshot it reads through to (0: none). */
  readonly parentVolumeId: number;
  readonly parentSnapshotId: number;
  /** Sorted by id. */
  readonly snapshots: readonly VolumeSnapshotRecord[];
  readonly createdAtIndex: number;
}

/** One copy of a chunk. */
export interface ReplicaRecord {
  readonly nodeId: NodeId;
  readonly state: ReplicaState;
  /**
   * Watermark: every write of the chunk with a seq at or below it is durable on this replica
   * (set by catch-up reports and by the owner when it reports a failure); never decreases.
   */
  readonly durableSeq: number;
  /** For a filling replica: bytes copied so far and to copy, as the mover reports. */
  readonly bytesDone: number;
  readonly bytesTotal: number;
}

/** Where one chunk of one volume lives. */
export interface ChunkRecord {
  readonly volumeId: number;
  readonly chunkIndex: number;
  /** The replica set, in placement order; the in-sync set is those `in-sync`. */
  readonly replicas: readonly ReplicaRecord[];
  /** A rebalance move in progress: from leaves at FinishMove, to is filling (0: none). */
  readonly moveFromNodeId: number;
  readonly moveToNodeId: number;
  readonly placedAtIndex: number;
}

/** Cluster-wide settings, changed by commands. */
export interface ClusterConfig {
  /** Silence (in map time) after which a node may be marked down. */
  readonly gracePeriodMs: number;
}

/**
 * What queries and the placement planners see of the map. Lists are sorted by id. Iteration
 * order of `chunksOnNode` depends on history, which differs between a map that applied the
 * log and one restored from a snapshot: nothing that decides state may depend on it.
 */
export interface ClusterMapView {
  readonly clusterId: string;
  readonly config: ClusterConfig;
  readonly appliedIndex: number;
  /** Map time: the highest leader-stamped time applied so far. */
  readonly timeMs: number;
  node(nodeId: number): NodeRecord | undefined;
  nodes(): readonly NodeRecord[];
  volume(volumeId: number): VolumeRecord | undefined;
  volumeByName(name: string): VolumeRecord | undefined;
  volumes(): readonly VolumeRecord[];
  chunk(volumeId: number, chunkIndex: number): ChunkRecord | undefined;
  /** Placed chunks of a volume, in chunk order. */
  chunksOfVolume(volumeId: number): readonly ChunkRecord[];
  /**
   * Chunks with a replica on the node (any state), in an order that depends on history. A
   * live list: read it, do not keep it across `apply`.
   */
  chunksOnNode(nodeId: number): readonly ChunkRecord[];
  replicaCountOnNode(nodeId: number): number;
  /** Chunk size × replicas the node hosts: what placement and rebalance balance. */
  placedBytes(nodeId: number): number;
  readonly chunksPlaced: number;
  readonly movesInFlight: number;
  movesOnNode(nodeId: number): number;
  /** Filling replicas that are not a move's target. */
  readonly rebuildsInFlight: number;
}

/** One safe integer naming a chunk: volume id × 2^20 + chunk index. */
export function chunkKey(volumeId: number, chunkIndex: number): number {
  return volumeId * CHUNKS_PER_VOLUME_MAX + chunkIndex;
}

/** Capacity of a node's disks still in service. */
export function nodeCapacityBytes(node: NodeRecord): number {
  let total = 0;
  for (const disk of node.disks) if (!disk.failed) total += disk.capacityBytes;
  return total;
}

/** Bytes the node itself reports in use on its disks still in service. */
export function nodeReportedUsedBytes(node: NodeRecord): number {
  let total = 0;
  for (const disk of node.disks) if (!disk.failed) total += disk.usedBytes;
  return total;
}

/** True for nodes that heartbeat and may own volumes. */
export function isAlive(node: NodeRecord): boolean {
  return node.state === "up" || node.state === "draining";
}

/** Number of chunks of a volume (the last one may be partial). */
export function chunkCount(volume: VolumeRecord): number {
  return Math.ceil(volume.sizeBytes / volume.chunkSizeBytes);
}

/** The replica of `nodeId` in a chunk, if any. */
export function replicaOn(chunk: ChunkRecord, nodeId: number): ReplicaRecord | undefined {
  return chunk.replicas.find((replica) => replica.nodeId === nodeId);
}

/** Replicas in the in-sync set. */
export function inSyncReplicas(chunk: ChunkRecord): ReplicaRecord[] {
  return chunk.replicas.filter((replica) => replica.state === "in-sync");
}
