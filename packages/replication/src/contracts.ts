/**
 * The two contracts the data path and the control plane meet at. Pinned here before either
 * side is built so that the replica service, the Raft-hosted cluster map, the in-process
 * volume (blockdev) and the host can be written in parallel.
 *
 * - {@link ChunkReplica}: one copy of chunks on one node. `LocalReplica` calls the node's own
 *   ExtentStore (a function call: no socket, no serialisation); `RemoteReplica` reaches another
 *   node's chunk-replica service over the data-plane framing. The volume treats both the same.
 * - {@link ClusterControl}: what a node's code needs of the cluster map: a local view, proposals
 *   that are ordered by Raft, and a linearizable sync point. The Raft-hosted runtime implements
 *   it; so does a single-process map applied directly (tests of code above the map).
 *
 * Sequence numbers: `seq` is per volume and strictly increasing across owners, so that "every
 * block written after S" (catch-up) and "the highest durable seq wins" (reconcile) mean the
 * same thing on every replica. Owners derive it from their lease epoch, see {@link volumeSeq}.
 */
import type { NodeId } from "@hes/base";
import type {
  ChangeQuery,
  ChunkExportPiece,
  ChunkId,
  ChunkRun,
  ChunkVersion,
} from "@hes/extent-store";
import type { CommandKind } from "./cluster-map/commands.js";
import type { ClusterMapView } from "./cluster-map/model.js";
import type { ApplyValue } from "./cluster-map/outcome.js";

/** Bits of a volume seq that count writes within one lease epoch. */
export const SEQ_COUNTER_BITS = 32;
/** Writes one owner may issue per epoch before it must renew its lease (take a new epoch). */
export const SEQ_PER_EPOCH_MAX = 2 ** SEQ_COUNTER_BITS - 1;
/** Highest epoch whose seqs stay safe integers: 2^53 / 2^32 = 2^21. */
export const SEQ_EPOCH_MAX = 2 ** (53 - SEQ_COUNTER_BITS) - 1;

/**
 * The `counter`-th write (1-based) of the owner holding `epoch`: epoch × 2^32 + counter. Seqs
 * of a newer epoch are higher than every seq of an older one, with no coordination between
 * owners. RangeError when the counter is exhausted (the owner must take a new epoch).
 */
export function volumeSeq(epoch: number, counter: number): number {
  if (!Number.isSafeInteger(epoch) || epoch < 1 || epoch > SEQ_EPOCH_MAX) {
    throw new RangeError(`epoch must be an integer in [1, ${SEQ_EPOCH_MAX}], got ${epoch}`);
  }
  if (!Number.isSafeInteger(counter) || counter < 1 || counter > SEQ_PER_EPOCH_MAX) {
    throw new RangeError(`counter must be an integer in [1, ${SEQ_PER_EPOCH_MAX}]`);
  }
  return epoch * 2 ** SEQ_COUNTER_BITS + counter;
}

/** The epoch a seq was issued under (inverse of {@link volumeSeq}). */
export function epochOfSeq(seq: number): number {
  return Math.floor(seq / 2 ** SEQ_COUNTER_BITS);
}

/** A mutation's fence and order: the writer's lease epoch and the volume seq it issued. */
export interface ReplicaWriteStamp {
  readonly epoch: number;
  readonly seq: number;
  readonly signal?: AbortSignal;
}

/** Options of a read: the reader's epoch (fenced like writes) and an optional snapshot. */
export interface ReplicaReadOptions {
  /** The reader's lease epoch; a replica that has seen a newer one answers HES_FENCED. */
  readonly epoch: number;
  /** Read a pinned snapshot of the chunk instead of its head. */
  readonly snapshotId?: number;
  readonly signal?: AbortSignal;
}

/** Options of calls that only need cancellation. */
export interface ReplicaCallOptions {
  readonly signal?: AbortSignal;
}

/** One side of a copy-range offload. */
export interface CopyRangeSide {
  readonly chunk: ChunkId;
  readonly offsetBytes: number;
}

/** Options of {@link ChunkReplica.importChunk}. */
export interface ReplicaImportOptions {
  readonly epoch: number;
  readonly keepNewer?: boolean;
  readonly signal?: AbortSignal;
}

/**
 * One node's copies of chunks, as seen by a writer, a mover or a scrubber.
 *
 * Rules every implementation keeps:
 * 1. Arguments are checked before anything touches a disk (RangeError/TypeError locally;
 *    HES_INVALID_ARGUMENT from a remote service); a refused request changes nothing.
 * 2. Epoch fencing: a mutation or read whose epoch is below the chunk's stored epoch fails with
 *    HES_FENCED and changes nothing. A higher epoch is stored (it fences older writers).
 * 3. A resolved mutation is durable on that node's disk (fdatasync'd): the replica side has no
 *    volatile write cache.
 * 4. Offsets and lengths are multiples of 4 KiB inside the chunk; partial blocks are the
 *    volume's business (read-modify-write under its write order).
 * 5. Errors: HES_FENCED, HES_CORRUPTION (a block failed its checksum: no bytes returned),
 *    HES_NOT_FOUND (snapshot not pinned), HES_DISK_FAILED, HES_UNAVAILABLE (unreachable),
 *    HES_TIMEOUT (deadline passed: the outcome of a mutation is unknown).
 */
export interface ChunkReplica {
  /** The node holding these copies. */
  readonly nodeId: NodeId;
  /** True when calls reach this process's own extent store directly. */
  readonly local: boolean;

  write(
    chunk: ChunkId,
    offsetBytes: number,
    data: Uint8Array,
    stamp: ReplicaWriteStamp,
  ): Promise<void>;
  read(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options: ReplicaReadOptions,
  ): Promise<Uint8Array>;
  /** Zeroes a range as metadata; with `unmap` it becomes a hole. */
  writeZeroes(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    stamp: ReplicaWriteStamp & { readonly unmap?: boolean },
  ): Promise<void>;
  discard(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    stamp: ReplicaWriteStamp,
  ): Promise<void>;
  /**
   * Copies a range from one chunk to another held by this same node, at the node (XCOPY
   * offload: no data crosses the network). Source may be a pinned snapshot.
   */
  copyRange(
    source: CopyRangeSide & { readonly snapshotId?: number },
    target: CopyRangeSide,
    lengthBytes: number,
    stamp: ReplicaWriteStamp,
  ): Promise<void>;

  /** Raises the chunk's epoch to at least `epoch` durably and returns its version. */
  seal(chunk: ChunkId, epoch: number, options?: ReplicaCallOptions): Promise<ChunkVersion>;
  /** The chunk's version; undefined when the node holds no such chunk. */
  version(chunk: ChunkId, options?: ReplicaCallOptions): Promise<ChunkVersion | undefined>;
  /** Data / zero / hole runs over a range (NBD block status, space accounting). */
  allocation(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options?: { readonly snapshotId?: number; readonly signal?: AbortSignal },
  ): Promise<ChunkRun[]>;
  /** Blocks changed after a seq, or between snapshots (catch-up, diff, backup). */
  changedBlocks(
    chunk: ChunkId,
    query: ChangeQuery,
    options?: ReplicaCallOptions,
  ): Promise<ChunkRun[]>;
  /** crc32c of each 4 KiB block of a range as stored (scrub compares these across replicas). */
  blockChecksums(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options?: { readonly snapshotId?: number; readonly signal?: AbortSignal },
  ): Promise<Uint32Array>;

  /** Streams the chunk (or the blocks changed since `sinceSeq`) for rebuild and catch-up. */
  exportChunk(
    chunk: ChunkId,
    options?: {
      readonly sinceSeq?: number;
      readonly snapshotId?: number;
      readonly signal?: AbortSignal;
    },
  ): AsyncIterable<ChunkExportPiece>;
  /**
   * Applies an export from another replica; the version is stored last. `keepNewer`: a block
   * this replica holds with a newer seq than the piece's, when the piece is applied, stays (a
   * write that reached this replica before the copy's source; see ExtentStore ImportOptions).
   */
  importChunk(
    chunk: ChunkId,
    pieces: AsyncIterable<ChunkExportPiece>,
    options: ReplicaImportOptions,
  ): Promise<ChunkVersion | undefined>;

  /** Pins the chunk's current head as snapshot `snapshotId` (redirect-on-write, no copy). */
  pinSnapshot(
    chunk: ChunkId,
    snapshotId: number,
    options: { readonly epoch: number },
  ): Promise<void>;
  releaseSnapshot(
    chunk: ChunkId,
    snapshotId: number,
    options: { readonly epoch: number },
  ): Promise<void>;
  /** Drops the chunk and every snapshot of it. */
  deleteChunk(chunk: ChunkId, options: { readonly epoch: number }): Promise<void>;
}

/** Finds the {@link ChunkReplica} for a node: local for this node, remote (pooled) otherwise. */
export interface ReplicaDirectory {
  replica(nodeId: NodeId): ChunkReplica;
}

/** A proposal to the cluster map: a command kind and its plain fields (see encodeCommand). */
export interface ClusterProposal<K extends CommandKind = CommandKind> {
  readonly kind: K;
  readonly fields: import("./cluster-map/commands.js").CommandFields<K>;
}

/**
 * A node's handle on the Raft-ordered cluster map.
 *
 * - `view()` is this node's applied copy: cheap, possibly behind the leader.
 * - `propose()` sends a command through the leader (forwarding when this node is not it),
 *   waits until this node has applied it, and resolves with its value; a command the map
 *   refuses rejects with the map's HesError (same code on every member). HES_NOT_LEADER /
 *   HES_UNAVAILABLE / HES_TIMEOUT when no leader can be reached in time (outcome unknown for
 *   the last two: commands are idempotent where it matters, so a retry is safe).
 * - `sync()` resolves once this node's view includes everything committed before the call
 *   (ReadIndex): a linearizable read point.
 * - `subscribe()` calls back after each applied batch; returns the unsubscribe function.
 */
export interface ClusterControl {
  readonly nodeId: NodeId;
  view(): ClusterMapView;
  propose<K extends CommandKind>(
    proposal: ClusterProposal<K>,
    options?: ReplicaCallOptions,
  ): Promise<ApplyValue>;
  sync(options?: ReplicaCallOptions): Promise<ClusterMapView>;
  subscribe(listener: (view: ClusterMapView) => void): () => void;
}
