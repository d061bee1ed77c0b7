/**
 * Bounds of the data plane between replicas (service, client, mover, scrubber), each with its
 * reason (STYLE §3). Relationships are asserted at load.
 */
import { assert } from "@hes/base";
import { FRAME_META_BYTES_MAX, FRAME_PAYLOAD_BYTES_DEFAULT } from "@hes/proto";

const KiB = 1024;
const MiB = 1024 * KiB;

/** The extent store's block: every offset and length on the wire is a multiple of it. */
export const REPLICA_BLOCK_BYTES = 4 * KiB;

/**
 * Largest read, write or checksum range in one request. The store writes at most 4 MiB at once
 * (so a write stays atomic); reads and checksum ranges use the same bound so one request's
 * server memory is bounded. The client splits longer reads and checksum ranges.
 */
export const REPLICA_IO_BYTES_MAX = 4 * MiB;

/**
 * Chunk address space one export or import request covers: its payload stays ≤ 1 MiB (the
 * issue's bound for streaming copies), so a rebuild never holds more than a few MiB per chunk.
 */
export const REPLICA_COPY_WINDOW_BYTES = 1 * MiB;

/**
 * Export / import windows in flight per chunk copy: enough to hide one round trip plus one
 * disk read at ~1 GB/s on loopback; bounded so a copy holds ≤ 4 MiB per chunk.
 */
export const REPLICA_COPY_WINDOWS_IN_FLIGHT_MAX = 4;

/**
 * Runs in one allocation / changed-blocks answer: the worst case of a 1 GiB chunk is one run
 * per block (262,144 runs × 12 bytes = 3 MiB), inside the frame payload bound.
 */
export const REPLICA_RUNS_MAX = 262_144;
export const REPLICA_RUN_WIRE_BYTES = 12;

/** Deadline of one IO request (read, write, zeroes, checksums): a hung node stalls a volume
 * for at most this long (DESIGN: per-write timeout ≤ 2 s). */
export const REPLICA_IO_DEADLINE_MS_DEFAULT = 2_000;

/** Deadline of metadata requests (seal, version, pin, delete, maps): fsync-bound, small. */
export const REPLICA_CONTROL_DEADLINE_MS_DEFAULT = 5_000;

/** Deadline of one export / import window: ≤ 1 MiB read or written and synced. */
export const REPLICA_COPY_DEADLINE_MS_DEFAULT = 10_000;

/** Attempts of an idempotent request whose connection failed (reads, versions, maps). A
 * mutation is never retried: its outcome is unknown. */
export const REPLICA_IDEMPOTENT_ATTEMPTS_MAX = 2;

/** Requests in flight per peer connection (the client's window): pipelining without letting
 * one volume's burst take the peer's whole server budget (256 per connection). */
export const REPLICA_CLIENT_INFLIGHT_MAX = 64;

/** Chunks the mover copies at once on one node: rebuild is disk-bound; more only thrashes. */
export const MOVER_CHUNKS_IN_FLIGHT_DEFAULT = 2;
export const MOVER_CHUNKS_IN_FLIGHT_MAX = 64;

/** Data bytes per import call of a copy (one window of the service's import). */
export const MOVER_IMPORT_BATCH_BYTES = 1 * MiB;

/** Pieces per import call: scattered 4 KiB blocks (catch-up) spread over many calls. */
export const MOVER_IMPORT_BATCH_PIECES = 16;

/** Import calls in flight per chunk copy: the store makes one call's pieces durable one after
 * another, so overlapping calls let group commit batch them. */
export const MOVER_IMPORTS_IN_FLIGHT_MAX = 32;

/** Data bytes of the import calls in flight per chunk copy: bounds memory per chunk. */
export const MOVER_IMPORT_BYTES_IN_FLIGHT_MAX = 4 * MiB;

/** Default rebuild bandwidth (bytes/s, all chunks of the node together); 0 = unlimited. */
export const MOVER_BYTES_PER_SECOND_DEFAULT = 200 * MiB;

/** Progress is reported to the map every this many bytes per chunk (and at the end): a 64 MiB
 * chunk makes 8 reports, cheap for Raft. */
export const MOVER_PROGRESS_EVERY_BYTES = 8 * MiB;

/** Catch-up passes per chunk per round before giving up until the next round (writes may keep
 * landing; each pass copies only what changed during the previous one). */
export const MOVER_PASSES_MAX = 4;

/**
 * Attempts to copy one snapshot pin to a replica before giving up until the next round: the
 * owner's writes reach a filling or stale replica while the snapshot's view is imported, and
 * one landing between the import and the pin spoils the pin (it is then released and redone).
 */
export const MOVER_PIN_COPY_ATTEMPTS_MAX = 4;

/** Default scrub rate (bytes/s read on each replica): background work that must not compete
 * with VM IO. */
export const SCRUB_BYTES_PER_SECOND_DEFAULT = 32 * MiB;

/** Range one scrub comparison covers (one checksum request per replica). */
export const SCRUB_RANGE_BYTES = 4 * MiB;

/** Token bucket depth: the burst a rate limiter allows, in seconds of its rate. */
export const RATE_BURST_SECONDS = 0.25;

assert(REPLICA_IO_BYTES_MAX <= FRAME_PAYLOAD_BYTES_DEFAULT, "an IO request fits one frame");
assert(
  REPLICA_RUNS_MAX * REPLICA_RUN_WIRE_BYTES <= FRAME_PAYLOAD_BYTES_DEFAULT,
  "a full run list fits one frame",
);
assert(REPLICA_COPY_WINDOW_BYTES <= FRAME_PAYLOAD_BYTES_DEFAULT, "a copy window fits a frame");
// An export window's meta: ≤ one piece per block, each ≤ 17 bytes + 8 per block of seqs.
assert(
  (REPLICA_COPY_WINDOW_BYTES / REPLICA_BLOCK_BYTES) * 25 + 64 <= FRAME_META_BYTES_MAX,
  "an export window's piece list fits the frame meta",
);
assert(SCRUB_RANGE_BYTES <= REPLICA_IO_BYTES_MAX, "a scrub range is one checksum request");
assert(MOVER_CHUNKS_IN_FLIGHT_DEFAULT <= MOVER_CHUNKS_IN_FLIGHT_MAX, "default within the max");
