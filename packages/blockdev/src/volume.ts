/**
 * `Volume`: one open virtual disk in the host agent's process (DESIGN "Data path").
 *
 * - The owner holds the lease (epoch E). Every mutation takes a volume seq `volumeSeq(E, n)`
 *   after it holds its blocks in the {@link RangeLock}, so overlapping writes reach every
 *   replica in issue order with increasing seqs.
 * - A chunk is placed on its first write (thin) and sealed + reconciled on its first touch by
 *   this owner (at open for every placed chunk): the old owner is fenced before anything is
 *   served, and replicas that differ in their last writes are made equal.
 * - A mutation fans out to every replica of the chunk's set on a live node (the local one by
 *   direct call, through the `ReplicaDirectory`): filling and stale ones too, uncounted, since
 *   the mover's last catch-up pass relies on it. It is acknowledged once a write quorum of
 *   in-sync replicas answered, the others answered or passed their deadline, AND every in-sync
 *   replica that failed was reported to the map (`reportReplicaFailure` with the owner's
 *   watermark `safeSeq`): the in-sync set in the map always holds every acknowledged write.
 *   HES_FENCED from any replica or from the map fences this volume.
 * - A mutation that failed after it was sent leaves its chunk unsettled: nothing is served
 *   until `settle` (a new epoch if a copy may still arrive, then seal + reconcile) made its
 *   replicas equal again.
 * - Reads go to the local in-sync replica, else another in-sync one; a block failing its
 *   checksum is read from another replica and rewritten on the bad one.
 */
import { type Clock, HesError, isHesError, type Logger, type NodeId, type Timer } from "@hes/base";
import type { ChunkId, ChunkRun, ChunkVersion } from "@hes/extent-store";
import {
  type ChunkRecord,
  type ChunkReplica,
  type ClusterControl,
  type ClusterMapView,
  chunkCount,
  inSyncReplicas,
  isAlive,
  type ReplicaDirectory,
  type ReplicaWriteStamp,
  SEQ_PER_EPOCH_MAX,
  type VolumeRecord,
  type VolumeSnapshotRecord,
  volumeSeq,
} from "@hes/replication";
import type {
  AllocationExtent,
  BlockDevice,
  RangeRequest,
  WriteRequest,
  WriteZeroesRequest,
} from "./block-device.js";
import { type DeadlineCallOptions, withDeadline } from "./deadline.js";
import {
  blockFlags,
  type ChangedExtent,
  type CompareSpan,
  chunkPieces,
  clipAndMerge,
  compareSpans,
  mergeRanges,
  runsToExtents,
  widen,
} from "./geometry.js";
import {
  VOLUME_BLOCK_BYTES,
  VOLUME_CLOSE_RELEASE_MS,
  VOLUME_FOLLOWER_FAILURE_LOG_MS,
  VOLUME_INFLIGHT_OPS_MAX,
  VOLUME_LOGICAL_BLOCK_BYTES,
  VOLUME_QUEUED_OPS_MAX,
  VOLUME_RECONCILE_SEQ_WINDOW,
  VOLUME_RECONCILE_SPANS_IN_FLIGHT,
  VOLUME_REPLICA_PIECE_BYTES,
  VOLUME_REPORT_DEADLINE_MS,
  VOLUME_REPORT_RETRY_MS,
  VOLUME_REQUEST_BYTES_MAX,
  VOLUME_SEAL_ATTEMPTS_MAX,
  VOLUME_SEAL_RETRY_MS,
  VOLUME_SEQ_RENEW_MARGIN,
} from "./limits.js";
import { RangeLock } from "./range-lock.js";
import { type QosLimits, TokenBuckets } from "./token-bucket.js";

/** What a Volume needs from its host: the map, the replicas, time and logs. */
export interface VolumeDeps {
  readonly control: ClusterControl;
  readonly directory: ReplicaDirectory;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Per-replica deadline of one call (≤ 2 s). */
  readonly replicaDeadlineMs: number;
}

/** Internal open options (see VolumeManager.open). */
export interface VolumeOpenState {
  readonly record: VolumeRecord;
  readonly epoch: number;
  readonly qos?: QosLimits;
  /** Seqs one epoch may issue before the lease is renewed (tests lower it). */
  readonly seqCounterMax?: number;
}

/** compareAndWrite request: atomic against every other write of the volume (SCSI ATS). */
export interface CompareAndWriteRequest {
  readonly offsetBytes: number;
  readonly expected: Uint8Array;
  readonly data: Uint8Array;
  readonly fua?: boolean;
  readonly signal?: AbortSignal;
}

/** copyRange request: `lengthBytes` from `source` (default: this volume) to `offsetBytes`. */
export interface CopyRangeRequest {
  readonly source?: Volume;
  readonly sourceOffsetBytes: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly fua?: boolean;
  readonly signal?: AbortSignal;
}

/** How a copyRange was done: pieces offloaded to the replicas vs through this process. */
export interface CopyRangeResult {
  readonly offloadedBytes: number;
  readonly copiedBytes: number;
}

/** Space figures of one view of a volume (a snapshot or the head). */
export interface SpaceFigures {
  /** "head" or a snapshot name. */
  readonly view: string;
  /** Data bytes the view references (zeroes and holes hold no space). */
  readonly allocatedBytes: number;
  /** Bytes only this view references: freed when it is deleted (head: overwritten). */
  readonly uniqueBytes: number;
  /** Bytes this view shares with a neighbouring snapshot or the head. */
  readonly sharedBytes: number;
}

/** Background flatten of a linked clone. */
export interface FlattenJob {
  readonly done: Promise<void>;
  progress(): { readonly chunksDone: number; readonly chunksTotal: number };
}

interface ChunkState {
  ready?: Promise<void> | undefined;
  placing?: Promise<ChunkRecord> | undefined;
  /** Seqs sent to each replica and not yet answered (the safeSeq watermark). */
  readonly pending: Map<NodeId, Set<number>>;
  /**
   * Replicas this owner saw fail and is reporting: no more writes go there (a new write could
   * otherwise succeed and move the watermark past the write it missed) until the map shows
   * them out of the in-sync set and, after catch-up, back in.
   */
  readonly leaving: Set<NodeId>;
  /**
   * The failure report in flight for each leaving replica. Another mutation whose write there
   * failed too waits for it: it may not be acknowledged while the map still counts that
   * replica in sync.
   */
  readonly reporting: Map<NodeId, Promise<void>>;
  /**
   * Filling or stale replicas whose write from this owner failed or timed out, with the lowest
   * such seq. The mover may report one caught up from a pass that began before that write
   * reached its source, so once the map shows it in sync it is neither read from nor counted
   * until this owner has reconciled it from a replica that owes nothing (`prepare`).
   */
  readonly owed: Map<NodeId, number>;
  /** A reconcile for owed writes is queued on `ready`. */
  repairing?: boolean;
}

/** Where a read is served from: this volume's head, or a snapshot of it or of an ancestor. */
interface ReadSource {
  readonly volume: VolumeRecord;
  readonly snapshot?: VolumeSnapshotRecord;
  readonly head: boolean;
}

type ReplicaCall = (
  replica: ChunkReplica,
  chunk: ChunkId,
  stamp: ReplicaWriteStamp,
) => Promise<unknown>;

const BLOCK = VOLUME_BLOCK_BYTES;
/** A range covering any volume (2^52 bytes), for operations that hold the whole volume. */
const WHOLE_VOLUME_BYTES = 2 ** 52;

function checkRange(offsetBytes: unknown, lengthBytes: unknown, sizeBytes: number): void {
  if (!Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(lengthBytes)) {
    throw new TypeError("offsetBytes and lengthBytes must be safe integers");
  }
  const offset = offsetBytes as number;
  const length = lengthBytes as number;
  if (offset < 0 || length < 0 || offset % VOLUME_LOGICAL_BLOCK_BYTES !== 0) {
    throw new RangeError(`offset ${offset} must be a multiple of 512 and >= 0`);
  }
  if (length % VOLUME_LOGICAL_BLOCK_BYTES !== 0) {
    throw new RangeError(`length ${length} must be a multiple of 512`);
  }
  if (length > VOLUME_REQUEST_BYTES_MAX) {
    throw new RangeError(`length ${length} exceeds VOLUME_REQUEST_BYTES_MAX`);
  }
  if (offset + length > sizeBytes) {
    throw new RangeError(`range ${offset}+${length} passes the end of the volume (${sizeBytes})`);
  }
}

function checkData(data: unknown, name: string): Uint8Array {
  if (!(data instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  return data;
}

/** An open volume. Made by `VolumeManager.open`; implements the NBD-facing BlockDevice. */
export class Volume implements BlockDevice {
  readonly logicalBlockBytes = VOLUME_LOGICAL_BLOCK_BYTES;
  readonly preferredBlockBytes = VOLUME_BLOCK_BYTES;
  readonly maxRequestBytes = VOLUME_REQUEST_BYTES_MAX;
  readonly readOnly = false;
  /** One owner serialises everything in this object: every connection sees every write. */
  readonly multiConnSafe = true;
  readonly volumeId: number;
  readonly name: string;

  private record: VolumeRecord;
  private epochValue: number;
  private counter = 0;
  private readonly seqCounterMax: number;
  private readonly chunks = new Map<number, ChunkState>();
  private readonly lock = new RangeLock();
  private readonly qosBuckets: TokenBuckets;
  private inflight = 0;
  private readonly admissionQueue: (() => void)[] = [];
  private fencedError: HesError | undefined;
  private closed = false;
  private renewing: Promise<void> | undefined;
  /** An openVolume of this owner (a new epoch) is in flight: a higher epoch is not a takeover. */
  private proposingEpoch = false;
  /**
   * Chunks where a mutation failed after it was sent (its outcome unknown: it may be on some
   * replicas and not others), with the epoch it was sent under and whether a copy of it may
   * still be on its way to a replica (a call timed out, was aborted or lost its connection,
   * rather than being refused). Nothing is served until they are settled (`settle`): a read
   * could otherwise see the write on one replica and then, from another, not see it.
   */
  private readonly unsettled = new Map<number, { epoch: number; inFlight: boolean }>();
  private settling: Promise<void> | undefined;
  private readonly unsubscribe: () => void;
  /** Per follower node: when its last failure was logged, and how many were not since. */
  private readonly followerFailureLog = new Map<NodeId, { atMs: number; suppressed: number }>();
  private readonly log: Logger;

  /** @internal Use VolumeManager.open. */
  constructor(
    private readonly deps: VolumeDeps,
    state: VolumeOpenState,
  ) {
    this.record = state.record;
    this.volumeId = state.record.volumeId;
    this.name = state.record.name;
    this.epochValue = state.epoch;
    this.seqCounterMax = state.seqCounterMax ?? SEQ_PER_EPOCH_MAX;
    this.qosBuckets = new TokenBuckets(deps.clock, state.qos);
    this.log = deps.logger.child({ volume: this.name });
    this.unsubscribe = deps.control.subscribe((view) => this.onView(view));
  }

  get sizeBytes(): number {
    return this.record.sizeBytes;
  }

  /** The lease epoch this volume writes under. */
  get epoch(): number {
    return this.epochValue;
  }

  /** The parent (volume id, snapshot id) of a linked clone, or undefined. */
  get parent(): { readonly volumeId: number; readonly snapshotId: number } | undefined {
    const { parentVolumeId, parentSnapshotId } = this.record;
    return parentVolumeId === 0
      ? undefined
      : { volumeId: parentVolumeId, snapshotId: parentSnapshotId };
  }

  /** True once another owner took the volume over: all IO fails with HES_FENCED. */
  get fenced(): boolean {
    return this.fencedError !== undefined;
  }

  get qos(): QosLimits {
    return this.qosBuckets.limits;
  }

  /** Changes the QoS limits while open (0 = unlimited). */
  setQos(limits: QosLimits): void {
    this.qosBuckets.set(limits);
  }

  /** Counter at which the lease is renewed: early enough that no operation runs out. */
  private get seqRenewAt(): number {
    return (
      this.seqCounterMax - Math.min(VOLUME_SEQ_RENEW_MARGIN, Math.floor(this.seqCounterMax / 2))
    );
  }

  private get view(): ClusterMapView {
    return this.deps.control.view();
  }

  private onView(view: ClusterMapView): void {
    const record = view.volume(this.volumeId);
    if (record === undefined) return;
    if (record.epoch > this.epochValue && !this.proposingEpoch) {
      this.fence(
        new HesError(
          "HES_FENCED",
          `volume ${this.name}: epoch ${this.epochValue} superseded by ${record.epoch}`,
          {
            details: { current: record.epoch },
          },
        ),
      );
    }
    if (record.epoch === this.epochValue) this.record = record;
  }

  private fence(error: HesError): void {
    if (this.fencedError !== undefined) return;
    this.fencedError =
      error.code === "HES_FENCED"
        ? error
        : new HesError("HES_FENCED", `volume ${this.name} was fenced`, { cause: error });
    this.log.warn({ epoch: this.epochValue, err: error.message }, "volume fenced");
  }

  private checkUsable(): void {
    if (this.closed) throw new HesError("HES_CLOSED", `volume ${this.name} is closed`);
    if (this.fencedError !== undefined) {
      throw new HesError("HES_FENCED", this.fencedError.message, { cause: this.fencedError });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Admission, ordering, seqs

  /** Runs `body` inside the in-flight window, QoS and the range lock of `[offset, +length)`. */
  private async run<T>(
    offsetBytes: number,
    lengthBytes: number,
    exclusive: boolean,
    signal: AbortSignal | undefined,
    body: () => Promise<T>,
    metered = true,
  ): Promise<T> {
    this.checkUsable();
    if (metered) await this.qosBuckets.admit(lengthBytes, signal);
    await this.admit();
    try {
      if (exclusive && this.counter >= this.seqRenewAt) await this.renewEpoch();
      const [start, length] = widen(offsetBytes, lengthBytes);
      for (;;) {
        if (this.unsettled.size > 0) await this.settle();
        this.checkUsable();
        const release = await this.lock.acquire(start / BLOCK, (start + length) / BLOCK, exclusive);
        // A mutation this one waited for failed: settle first.
        if (this.unsettled.size > 0) {
          release();
          continue;
        }
        try {
          this.checkUsable();
          return await body();
        } finally {
          release();
        }
      }
    } finally {
      this.leave();
    }
  }

  private admit(): Promise<void> {
    if (this.inflight < VOLUME_INFLIGHT_OPS_MAX) {
      this.inflight++;
      return Promise.resolve();
    }
    if (this.admissionQueue.length >= VOLUME_QUEUED_OPS_MAX) {
      return Promise.reject(
        new HesError("HES_BUSY", `volume ${this.name}: too many queued requests`),
      );
    }
    return new Promise((resolve) => this.admissionQueue.push(resolve));
  }

  private leave(): void {
    const next = this.admissionQueue.shift();
    if (next !== undefined) next();
    else this.inflight--;
  }

  /** The next volume seq of this owner. */
  private takeSeq(): number {
    this.counter += 1;
    if (this.counter > this.seqCounterMax) {
      throw new HesError(
        "HES_BUSY",
        `volume ${this.name}: seqs of epoch ${this.epochValue} exhausted`,
      );
    }
    return volumeSeq(this.epochValue, this.counter);
  }

  /**
   * Takes a new epoch when this one's seqs run low: re-opens the lease (the same node, so no
   * takeover) once every in-flight mutation finished, so no older-epoch write is still on its
   * way to a replica that the newer epoch would make refuse it.
   */
  private renewEpoch(): Promise<void> {
    if (this.renewing === undefined) {
      this.renewing = (async () => {
        const release = await this.lock.acquire(0, WHOLE_VOLUME_BYTES / BLOCK, true);
        try {
          if (this.counter < this.seqRenewAt) return;
          await this.newEpoch("seqs of the epoch running out");
        } finally {
          release();
          this.renewing = undefined;
        }
      })();
    }
    return this.renewing;
  }

  /** Re-opens the lease on this node for a new epoch. Callers hold the whole volume. */
  private async newEpoch(why: string): Promise<void> {
    this.proposingEpoch = true;
    try {
      const value = await this.deps.control.propose({
        kind: "openVolume",
        fields: { volumeId: this.volumeId, nodeId: this.deps.control.nodeId },
      });
      this.epochValue = value.epoch as number;
      this.counter = 0;
      this.log.info({ epoch: this.epochValue, why }, "new epoch");
    } catch (error) {
      if (isHesError(error, "HES_FENCED", "HES_LEASE_HELD")) this.fence(error as HesError);
      throw error;
    } finally {
      this.proposingEpoch = false;
    }
  }

  /**
   * Makes the replicas of every unsettled chunk equal again, with the whole volume held: a new
   * epoch first when a failed mutation sent under the current one may still be on its way (a
   * replica sealed with the new one refuses it should it arrive; a refused write needs none,
   * which spares the volume's epochs), then seal + reconcile. The failed mutation ends up on
   * every in-sync replica or on none, so what one read saw, all later reads see. Replicas
   * whose failure report did not land take writes again once reconciled. On failure nothing is
   * served (each operation retries the settle), since the replicas may still differ.
   */
  private settle(): Promise<void> {
    this.settling ??= (async () => {
      const release = await this.lock.acquire(0, WHOLE_VOLUME_BYTES / BLOCK, true);
      try {
        this.checkUsable();
        const chunks = [...this.unsettled];
        if (chunks.length === 0) return;
        if (chunks.some(([, u]) => u.inFlight && u.epoch >= this.epochValue)) {
          await this.newEpoch("settling failed mutations");
        }
        for (const [chunkIndex] of chunks) {
          const state = this.chunkState(chunkIndex);
          state.ready = undefined;
          state.repairing = false;
        }
        await Promise.all(chunks.map(([chunkIndex]) => this.prepare(chunkIndex)));
        for (const [chunkIndex, settled] of chunks) {
          const state = this.chunkState(chunkIndex);
          const record = this.view.chunk(this.volumeId, chunkIndex);
          const inSync = new Set(
            record === undefined ? [] : inSyncReplicas(record).map((r) => r.nodeId),
          );
          for (const nodeId of state.leaving) {
            if (inSync.has(nodeId) && !state.reporting.has(nodeId)) state.leaving.delete(nodeId);
          }
          if (this.unsettled.get(chunkIndex) === settled) this.unsettled.delete(chunkIndex);
        }
        this.log.info(
          { chunks: chunks.map(([chunkIndex]) => chunkIndex) },
          "failed mutations settled",
        );
      } finally {
        release();
        this.settling = undefined;
      }
    })();
    return this.settling;
  }

  // -------------------------------------------------------------------------------------------
  // Chunks: placement, seal and reconcile

  private chunkState(chunkIndex: number): ChunkState {
    let state = this.chunks.get(chunkIndex);
    if (state === undefined) {
      state = { pending: new Map(), leaving: new Set(), reporting: new Map(), owed: new Map() };
      this.chunks.set(chunkIndex, state);
    }
    return state;
  }

  private chunkId(chunkIndex: number): ChunkId {
    return { volumeId: this.volumeId, chunkIndex };
  }

  /** The chunk's record, placing it first (thin provisioning), sealed and reconciled. */
  private async writableChunk(chunkIndex: number): Promise<ChunkRecord> {
    let record = this.view.chunk(this.volumeId, chunkIndex);
    if (record === undefined) {
      const state = this.chunkState(chunkIndex);
      state.placing ??= this.placeChunk(chunkIndex).finally(() => {
        state.placing = undefined;
      });
      record = await state.placing;
      // A chunk this owner placed is empty everywhere: nothing to seal or reconcile.
      state.ready ??= Promise.resolve();
    }
    await this.prepare(chunkIndex);
    return this.view.chunk(this.volumeId, chunkIndex) ?? record;
  }

  private async placeChunk(chunkIndex: number): Promise<ChunkRecord> {
    try {
      const value = await this.deps.control.propose({
        kind: "placeChunk",
        fields: {
          volumeId: this.volumeId,
          chunkIndex,
          epoch: this.epochValue,
          preferredNodeId: this.deps.control.nodeId,
        },
      });
      return value.chunk as ChunkRecord;
    } catch (error) {
      if (isHesError(error, "HES_FENCED")) this.fence(error as HesError);
      throw error;
    }
  }

  /**
   * Seal + reconcile once per chunk per owner, and again when a replica that owes writes (see
   * ChunkState.owed) is back in sync; a failure is retried on the next touch.
   */
  private prepare(chunkIndex: number): Promise<void> {
    const state = this.chunkState(chunkIndex);
    if (state.ready !== undefined && !state.repairing && this.owedInSync(chunkIndex).length > 0) {
      state.repairing = true;
      state.ready = state.ready
        .then(() => this.sealAndReconcile(chunkIndex))
        .then(
          () => {
            state.repairing = false;
          },
          (error: unknown) => {
            state.repairing = false;
            state.ready = undefined;
            throw error;
          },
        );
    }
    if (state.ready === undefined) {
      state.ready = this.sealAndReconcile(chunkIndex).catch((error: unknown) => {
        state.ready = undefined;
        throw error;
      });
    }
    return state.ready;
  }

  /** Replicas the map holds in sync that owe writes of this owner (not yet reconciled). */
  private owedInSync(chunkIndex: number): NodeId[] {
    const owed = this.chunks.get(chunkIndex)?.owed;
    if (owed === undefined || owed.size === 0) return [];
    const record = this.view.chunk(this.volumeId, chunkIndex);
    if (record === undefined) return [];
    return inSyncReplicas(record)
      .map((r) => r.nodeId)
      .filter((nodeId) => owed.has(nodeId));
  }

  /** @internal Prepares every placed chunk (open does this, so the old owner is fenced). */
  async prepareAll(): Promise<void> {
    const indexes = this.view.chunksOfVolume(this.volumeId).map((chunk) => chunk.chunkIndex);
    const width = 32;
    for (let i = 0; i < indexes.length; i += width) {
      await Promise.all(indexes.slice(i, i + width).map((index) => this.prepare(index)));
    }
  }

  /**
   * Seals every replica of the chunk's set (stale and filling ones too) with this owner's
   * epoch. The old owner is fenced once fewer than its write quorum of replicas remain
   * unsealed, whatever their state; and at least one sealed replica must be in sync (the map's
   * in-sync set holds every acknowledged write). Only the sealed in-sync replicas are
   * reconciled; the others are the mover's.
   */
  private async sealAndReconcile(chunkIndex: number): Promise<void> {
    const record = this.view.chunk(this.volumeId, chunkIndex);
    if (record === undefined) return;
    const startMs = this.deps.clock.nowMs();
    const targets = record.replicas;
    const n = targets.length;
    const needed = Math.max(Math.floor(n / 2) + 1, n - this.record.writeQuorum + 1);
    // Unreachable replicas are retried only until enough others have sealed: past that point
    // a straggler is reported like any failed replica (and caught up later), so a takeover
    // after a node's death does not wait out the retries meant for a peer just restarting.
    let answered = 0;
    let answeredInSync = 0;
    let quorumReached = (): void => {};
    const enough = new Promise<void>((resolve) => {
      quorumReached = resolve;
    });
    const results = await Promise.allSettled(
      targets.map(async (r) => {
        const version = await this.sealOne(chunkIndex, r.nodeId, enough);
        answered++;
        if (r.state === "in-sync") answeredInSync++;
        if (answered >= needed && answeredInSync > 0) quorumReached();
        return version;
      }),
    );
    quorumReached();
    const sealedMs = this.deps.clock.nowMs();
    const sealed: { nodeId: NodeId; version: ChunkVersion }[] = [];
    const failed: { nodeId: NodeId; error: unknown }[] = [];
    let sealedCount = 0;
    results.forEach((result, i) => {
      const replica = targets[i] as (typeof targets)[number];
      const nodeId = replica.nodeId;
      const inSync = replica.state === "in-sync";
      if (result.status === "fulfilled") {
        sealedCount++;
        if (inSync) sealed.push({ nodeId, version: result.value });
      } else if (inSync) failed.push({ nodeId, error: result.reason });
      else this.log.info({ chunkIndex, nodeId, err: String(result.reason) }, "seal missed");
    });
    this.fenceOnAny(results.flatMap((r) => (r.status === "rejected" ? [r.reason] : [])));
    if (sealedCount < needed || sealed.length === 0) {
      throw new HesError(
        "HES_QUORUM_LOST",
        `chunk ${chunkIndex} of ${this.name}: sealed ${sealedCount} of ${n} ` +
          `(${sealed.length} in sync), ${needed} needed: ${String(failed[0]?.error)}`,
        { cause: failed[0]?.error },
      );
    }
    for (const f of failed) await this.reportFailure(chunkIndex, f.nodeId, 0);
    const reportedMs = this.deps.clock.nowMs();
    const owed = this.chunkState(chunkIndex).owed;
    const owedNow = new Map(
      [...owed].filter(([nodeId]) => sealed.some((x) => x.nodeId === nodeId)),
    );
    if (owedNow.size > 0 && sealed.every((x) => owedNow.has(x.nodeId))) {
      throw new HesError(
        "HES_QUORUM_LOST",
        `chunk ${chunkIndex} of ${this.name}: every sealed in-sync replica owes writes`,
      );
    }
    if (sealed.length > 1) await this.reconcile(chunkIndex, sealed, owedNow);
    // Reconciled from a replica that owes nothing: what they owed is there now (a write that
    // failed there again meanwhile has a newer entry, which stays).
    for (const [nodeId, seq] of owedNow) if (owed.get(nodeId) === seq) owed.delete(nodeId);
    this.log.debug(
      {
        chunkIndex,
        sealMs: sealedMs - startMs,
        reportMs: reportedMs - sealedMs,
        reconcileMs: this.deps.clock.nowMs() - reportedMs,
        failed: failed.map((f) => f.nodeId),
      },
      "chunk sealed and reconciled",
    );
  }

  /**
   * One replica's seal, retried while the replica is unreachable or slow: a node that just
   * restarted may be in its client's reconnect backoff, and a seal is idempotent. Retries stop
   * once `enough` resolves (the others sealed a quorum without this one).
   */
  private async sealOne(
    chunkIndex: number,
    nodeId: NodeId,
    enough: Promise<void>,
  ): Promise<ChunkVersion> {
    let quorumWithoutThis = false;
    void enough.then(() => {
      quorumWithoutThis = true;
    });
    const chunk = this.chunkId(chunkIndex);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.callReplica(nodeId, "seal", undefined, (replica, o) =>
          replica.seal(chunk, this.epochValue, o),
        );
      } catch (error) {
        const transient = isHesError(error, "HES_UNAVAILABLE", "HES_TIMEOUT");
        const node = this.view.node(nodeId);
        // A node the map holds down is not waited for.
        const alive = node !== undefined && isAlive(node);
        const giveUp = !transient || !alive || attempt >= VOLUME_SEAL_ATTEMPTS_MAX;
        if (giveUp || this.closed || quorumWithoutThis) throw error;
        let timer: Timer | undefined;
        await Promise.race([
          enough,
          new Promise<void>((resolve) => {
            timer = this.deps.clock.setTimer(VOLUME_SEAL_RETRY_MS, resolve);
          }),
        ]);
        timer?.cancel();
        if (quorumWithoutThis) throw error;
      }
    }
  }

  /**
   * Makes the sealed in-sync replicas equal. Writes below (highest seq − window) had all
   * completed when the highest was issued (the in-flight window bounds them), and completed
   * writes are on every in-sync replica; so only blocks changed after that point can differ.
   * Those are compared by checksum and state; where they differ, the replica with the highest
   * durable seq wins and its content is written to the others under this owner's seqs.
   */
  private async reconcile(
    chunkIndex: number,
    sealed: readonly { nodeId: NodeId; version: ChunkVersion }[],
    owed: ReadonlyMap<NodeId, number> = new Map(),
  ): Promise<void> {
    const chunk = this.chunkId(chunkIndex);
    // A replica that owes writes is never the source (its newest seq does not mean it has
    // them all), and blocks back to the oldest owed write are compared.
    const sorted = [...sealed].sort(
      (a, b) =>
        Number(owed.has(a.nodeId)) - Number(owed.has(b.nodeId)) ||
        b.version.durableSeq - a.version.durableSeq,
    );
    const source = sorted[0] as (typeof sorted)[number];
    const sinceSeq = Math.max(
      0,
      Math.min(
        source.version.durableSeq - VOLUME_RECONCILE_SEQ_WINDOW,
        ...[...owed.values()].map((seq) => seq - 1),
      ),
    );
    const changed = await Promise.all(
      sealed.map((s) =>
        this.callReplica(s.nodeId, "changed blocks", undefined, (replica, o) =>
          replica.changedBlocks(chunk, { sinceSeq }, o),
        ),
      ),
    );
    const spans = compareSpans(mergeRanges(changed.flat()), BLOCK, VOLUME_REPLICA_PIECE_BYTES);
    if (spans.length === 0) return;
    // One seq for the whole reconcile of the chunk: the seq window's accounting relies on it.
    const seq = this.takeSeq();
    for (const target of sorted.slice(1)) {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < spans.length) {
          const span = spans[next++] as CompareSpan;
          await this.reconcileSpan(chunkIndex, seq, source.nodeId, target.nodeId, span);
        }
      };
      const workers = Math.min(VOLUME_RECONCILE_SPANS_IN_FLIGHT, spans.length);
      await Promise.all(Array.from({ length: workers }, worker));
    }
  }

  /** Compares the marked blocks of one span on two replicas and copies those that differ. */
  private async reconcileSpan(
    chunkIndex: number,
    seq: number,
    sourceNode: NodeId,
    targetNode: NodeId,
    span: CompareSpan,
  ): Promise<void> {
    const { offsetBytes, lengthBytes, mask } = span;
    const chunk = this.chunkId(chunkIndex);
    const blocks = lengthBytes / BLOCK;
    const look = (nodeId: NodeId) =>
      this.callReplica(nodeId, "reconcile", undefined, async (replica, o) => ({
        crcs: await replica
          .blockChecksums(chunk, offsetBytes, lengthBytes, o)
          .catch(() => undefined),
        runs: await replica.allocation(chunk, offsetBytes, lengthBytes, o),
      }));
    const [source, target] = await Promise.all([look(sourceNode), look(targetNode)]);
    const shift = (runs: ChunkRun[]) =>
      runs.map((r) => ({ ...r, offsetBytes: r.offsetBytes - offsetBytes }));
    const sourceHole = blockFlags(shift(source.runs), blocks, (r) => r.state === "hole");
    const targetHole = blockFlags(shift(target.runs), blocks, (r) => r.state === "hole");
    const sourceZero = blockFlags(shift(source.runs), blocks, (r) => r.state !== "data");
    if (source.crcs === undefined) {
      throw new HesError(
        "HES_CORRUPTION",
        `chunk ${chunkIndex}: the newest replica has a bad block`,
      );
    }
    const targetReplica = this.deps.directory.replica(targetNode);
    const sourceReplica = this.deps.directory.replica(sourceNode);
    for (let b = 0; b < blocks; b++) {
      if (mask[b] !== 1) continue;
      const same =
        target.crcs !== undefined &&
        target.crcs[b] === source.crcs[b] &&
        sourceHole[b] === targetHole[b];
      if (same) continue;
      const at = offsetBytes + b * BLOCK;
      const stamp = { epoch: this.epochValue, seq };
      if (sourceZero[b] === 1) {
        await targetReplica.writeZeroes(chunk, at, BLOCK, { ...stamp, unmap: sourceHole[b] === 1 });
      } else {
        const data = await sourceReplica.read(chunk, at, BLOCK, { epoch: this.epochValue });
        await targetReplica.write(chunk, at, data, stamp);
      }
      this.log.info({ chunkIndex, offsetBytes: at, targetNode }, "reconciled a block");
    }
  }

  // -------------------------------------------------------------------------------------------
  // Replica calls

  private callReplica<T>(
    nodeId: NodeId,
    what: string,
    signal: AbortSignal | undefined,
    call: (replica: ChunkReplica, options: DeadlineCallOptions) => Promise<T>,
  ): Promise<T> {
    const replica = this.deps.directory.replica(nodeId);
    return withDeadline(
      this.deps.clock,
      this.deps.replicaDeadlineMs,
      `${what} on node ${nodeId}`,
      signal,
      (o) => call(replica, o),
    );
  }

  private fenceOnAny(errors: readonly unknown[]): void {
    for (const error of errors) {
      if (isHesError(error, "HES_FENCED")) this.fence(error as HesError);
    }
    this.checkUsable();
  }

  /**
   * Reports a replica that missed a write. `safeSeq`: every write of the chunk at or below it
   * was acknowledged by that replica (the lowest seq still unanswered there, minus one).
   */
  private async reportFailure(chunkIndex: number, nodeId: NodeId, safeSeq: number): Promise<void> {
    try {
      await this.proposeReport(chunkIndex, nodeId, safeSeq);
      this.log.warn({ chunkIndex, nodeId, safeSeq }, "replica left the in-sync set");
    } catch (error) {
      if (isHesError(error, "HES_FENCED")) this.fence(error as HesError);
      throw error;
    }
  }

  /**
   * Proposes the failure report, retried across a leader change for up to
   * VOLUME_REPORT_DEADLINE_MS: the replica's node dying may also have taken the Raft leader,
   * and the write should not fail for an election. A repeat is harmless (a stale replica
   * stays stale); an attempt whose outcome was unknown but that landed shows in the map.
   */
  private async proposeReport(chunkIndex: number, nodeId: NodeId, safeSeq: number) {
    const { clock, control } = this.deps;
    const endMs = clock.nowMs() + VOLUME_REPORT_DEADLINE_MS;
    const fields = { volumeId: this.volumeId, chunkIndex, epoch: this.epochValue, nodeId, safeSeq };
    for (;;) {
      const attempt = new AbortController();
      const timer = clock.setTimer(Math.max(1, endMs - clock.nowMs()), () => attempt.abort());
      try {
        await control.propose({ kind: "reportReplicaFailure", fields }, { signal: attempt.signal });
        return;
      } catch (error) {
        const unknown = isHesError(error, "HES_UNAVAILABLE", "HES_TIMEOUT", "HES_NOT_LEADER");
        if (!unknown && !attempt.signal.aborted) throw error;
        if (attempt.signal.aborted || clock.nowMs() >= endMs) {
          throw new HesError(
            "HES_TIMEOUT",
            `${this.name}: the map did not take the failure of node ${nodeId} (chunk ` +
              `${chunkIndex}) within ${VOLUME_REPORT_DEADLINE_MS} ms`,
            { cause: error },
          );
        }
        const replica = control
          .view()
          .chunk(this.volumeId, chunkIndex)
          ?.replicas.find((r) => r.nodeId === nodeId);
        // An attempt whose outcome was unknown landed, or the replica left the set meanwhile.
        if (replica === undefined || replica.state !== "in-sync") return;
        this.log.debug({ chunkIndex, nodeId, err: String(error) }, "failure report retried");
      } finally {
        timer.cancel();
      }
      await clock.sleep(VOLUME_REPORT_RETRY_MS);
    }
  }

  /**
   * Takes a failed replica out of the in-sync set. Once the map says so, the `leaving` mark is
   * dropped (the in-sync filter excludes it; after catch-up it is back). The map refuses to
   * drop the last in-sync replica: then it stays the chunk's truth and keeps taking writes.
   * When the map cannot be reached the mark stays, so nothing more is written there.
   */
  private async dropReplica(chunkIndex: number, nodeId: NodeId, safeSeq: number): Promise<void> {
    const state = this.chunkState(chunkIndex);
    try {
      await this.reportFailure(chunkIndex, nodeId, safeSeq);
      state.leaving.delete(nodeId);
    } catch (error) {
      if (!isHesError(error, "HES_QUORUM_LOST")) throw error;
      state.leaving.delete(nodeId);
    }
  }

  /**
   * Waits for a concurrent mutation's report of `nodeId`, whose write of this mutation failed
   * too. Fails (outcome unknown) when the map still counts the replica in sync afterwards,
   * because that report failed: the acknowledged write would be missing from an in-sync replica.
   */
  private async awaitReport(chunkIndex: number, state: ChunkState, nodeId: NodeId) {
    await state.reporting.get(nodeId);
    const replica = this.view
      .chunk(this.volumeId, chunkIndex)
      ?.replicas.find((r) => r.nodeId === nodeId);
    if (replica?.state === "in-sync" && state.leaving.has(nodeId)) {
      throw new HesError(
        "HES_UNAVAILABLE",
        `chunk ${chunkIndex} of ${this.name}: the failure of node ${nodeId} is not in the map yet`,
      );
    }
  }

  /** The in-sync replicas a mutation goes to (not those being reported). */
  private writeTargets(record: ChunkRecord, state: ChunkState): NodeId[] {
    for (const nodeId of state.leaving) {
      if (record.replicas.find((r) => r.nodeId === nodeId)?.state !== "in-sync") {
        state.leaving.delete(nodeId);
      }
    }
    return inSyncReplicas(record)
      .map((r) => r.nodeId)
      .filter((nodeId) => !state.leaving.has(nodeId) && !state.owed.has(nodeId));
  }

  /**
   * The filling and stale replicas of the chunk on live nodes: a mutation goes to them too,
   * uncounted, because the mover's last catch-up pass relies on it (a write acknowledged after
   * that pass and before the map marks the replica in-sync would otherwise be missing there).
   */
  private followerTargets(record: ChunkRecord, state: ChunkState): NodeId[] {
    return record.replicas
      .filter((r) => r.state !== "in-sync" || state.owed.has(r.nodeId))
      .filter((r) => {
        const node = this.view.node(r.nodeId);
        return node !== undefined && isAlive(node);
      })
      .map((r) => r.nodeId);
  }

  /**
   * One mutation of one chunk at every replica of its set on a live node: acknowledged at the
   * write quorum of in-sync ones once every failed in-sync replica is reported (see the file
   * comment). A failure of a filling or stale replica is only logged: the mover redoes it.
   */
  private async mutateChunk(
    chunkIndex: number,
    seq: number,
    signal: AbortSignal | undefined,
    call: ReplicaCall,
  ) {
    const record = await this.writableChunk(chunkIndex);
    const state = this.chunkState(chunkIndex);
    const targets = this.writeTargets(record, state);
    const followers = this.followerTargets(record, state);
    const epoch = this.epochValue;
    const errors: unknown[] = [];
    try {
      await this.sendMutation(chunkIndex, seq, signal, call, state, targets, followers, errors);
    } catch (error) {
      // Sent, and maybe applied somewhere: nothing is served until the chunk is settled. A
      // fenced owner serves nothing more; the next owner's takeover reconciles.
      if (this.fencedError === undefined) {
        const before = this.unsettled.get(chunkIndex);
        const inFlight = errors.some(
          (e) =>
            !(e instanceof HesError) ||
            isHesError(e, "HES_TIMEOUT", "HES_UNAVAILABLE", "HES_ABORTED"),
        );
        this.unsettled.set(chunkIndex, {
          epoch: Math.max(epoch, before?.epoch ?? 0),
          inFlight: inFlight || before?.inFlight === true,
        });
      }
      throw error;
    }
  }

  /** The part of `mutateChunk` after the targets are chosen: send, count, report. */
  private async sendMutation(
    chunkIndex: number,
    seq: number,
    signal: AbortSignal | undefined,
    call: ReplicaCall,
    state: ChunkState,
    targets: readonly NodeId[],
    followers: readonly NodeId[],
    errors: unknown[],
  ): Promise<void> {
    const chunk = this.chunkId(chunkIndex);
    for (const nodeId of targets) {
      const pending = state.pending.get(nodeId) ?? new Set<number>();
      state.pending.set(nodeId, pending);
      pending.add(seq);
    }
    const send = (nodeId: NodeId) =>
      this.callReplica(nodeId, "write", signal, (replica, o) =>
        call(replica, chunk, { epoch: this.epochValue, seq, ...o }),
      ).catch((error: unknown) => {
        errors.push(error);
        throw error;
      });
    const followed = Promise.allSettled(followers.map(send));
    const results = await Promise.allSettled(targets.map(send));
    let acknowledged = 0;
    const failed: { nodeId: NodeId; error: unknown; safeSeq: number }[] = [];
    const reportedElsewhere: NodeId[] = [];
    results.forEach((result, i) => {
      const nodeId = targets[i] as NodeId;
      const pending = state.pending.get(nodeId);
      // Reported by a concurrent operation meanwhile: it no longer counts, nor is reported
      // twice; if this write failed there too, it waits for that report below.
      if (pending === undefined) {
        if (result.status === "rejected") reportedElsewhere.push(nodeId);
        return;
      }
      if (result.status === "fulfilled") {
        pending.delete(seq);
        acknowledged++;
        return;
      }
      failed.push({ nodeId, error: result.reason, safeSeq: Math.min(...pending) - 1 });
    });
    this.fenceOnAny(failed.map((f) => f.error));
    // The acknowledgement waits for the uncounted replicas too (each call has its deadline):
    // a write acknowledged while still in flight to a replica the mover is about to report
    // caught up could land there after the report.
    const followerResults = await followed;
    followerResults.forEach((result, i) => {
      if (result.status === "fulfilled") return;
      if (isHesError(result.reason, "HES_FENCED")) this.fenceOnAny([result.reason]);
      const nodeId = followers[i] as NodeId;
      state.owed.set(nodeId, Math.min(seq, state.owed.get(nodeId) ?? seq));
      this.logFollowerFailure(chunkIndex, nodeId, result.reason);
    });
    // When no replica answered, the fault is not one replica's (an overloaded host, a stalled
    // disk, this node cut off): nobody is reported, and the unanswered seq stays in each
    // replica's pending set, so a later report's watermark stays below it.
    if (acknowledged === 0) this.log.warn({ chunkIndex, seq }, "no replica answered a write");
    for (const f of acknowledged === 0 ? [] : failed) {
      this.log.warn({ chunkIndex, nodeId: f.nodeId, err: String(f.error) }, "replica write failed");
      state.pending.delete(f.nodeId);
      state.leaving.add(f.nodeId);
      const report = this.dropReplica(chunkIndex, f.nodeId, f.safeSeq);
      state.reporting.set(f.nodeId, report);
      try {
        await report;
      } finally {
        if (state.reporting.get(f.nodeId) === report) state.reporting.delete(f.nodeId);
      }
    }
    for (const nodeId of reportedElsewhere) await this.awaitReport(chunkIndex, state, nodeId);
    if (acknowledged < this.record.writeQuorum) {
      throw new HesError(
        "HES_QUORUM_LOST",
        `chunk ${chunkIndex} of ${this.name}: ${acknowledged} of ${targets.length} in-sync ` +
          `replicas answered, the write quorum is ${this.record.writeQuorum}`,
        { cause: failed[0]?.error },
      );
    }
  }

  /** Logs a failed write to an uncounted replica, at most once per node per interval. */
  private logFollowerFailure(chunkIndex: number, nodeId: NodeId, error: unknown): void {
    const nowMs = this.deps.clock.nowMs();
    const last = this.followerFailureLog.get(nodeId);
    if (last !== undefined && nowMs - last.atMs < VOLUME_FOLLOWER_FAILURE_LOG_MS) {
      last.suppressed++;
      return;
    }
    this.log.info(
      { chunkIndex, nodeId, err: String(error), suppressed: last?.suppressed ?? 0 },
      "write to a filling or stale replica failed; its mover redoes it",
    );
    this.followerFailureLog.set(nodeId, { atMs: nowMs, suppressed: 0 });
  }

  // -------------------------------------------------------------------------------------------
  // Reads

  private headSource(): ReadSource {
    return { volume: this.record, head: true };
  }

  private parentSource(volume: VolumeRecord): ReadSource | undefined {
    if (volume.parentVolumeId === 0) return undefined;
    const parent = this.view.volume(volume.parentVolumeId);
    if (parent === undefined) {
      throw new HesError(
        "HES_NOT_FOUND",
        `parent ${volume.parentVolumeId} of ${volume.name} is gone`,
      );
    }
    const snapshot = parent.snapshots.find((s) => s.snapshotId === volume.parentSnapshotId);
    if (snapshot === undefined) {
      throw new HesError(
        "HES_NOT_FOUND",
        `snapshot ${volume.parentSnapshotId} of ${parent.name} is gone`,
      );
    }
    return { volume: parent, snapshot, head: false };
  }

  /** The chunk as the source saw it, or undefined when it held nothing there. */
  private sourceChunk(source: ReadSource, chunkIndex: number): ChunkRecord | undefined {
    const record = this.view.chunk(source.volume.volumeId, chunkIndex);
    if (record === undefined) return undefined;
    if (source.snapshot !== undefined && record.placedAtIndex > source.snapshot.createdAtIndex) {
      return undefined;
    }
    return record;
  }

  /**
   * In-sync replicas in read preference order: this node's first. For this volume's own
   * chunks, not those that owe this owner writes (ChunkState.owed): one may lack an
   * acknowledged write. (A replica being reported stays readable: what it lacks is the write
   * whose report is in flight, not yet acknowledged.)
   */
  private readOrder(record: ChunkRecord): NodeId[] {
    const state =
      record.volumeId === this.volumeId ? this.chunks.get(record.chunkIndex) : undefined;
    const nodes = inSyncReplicas(record)
      .map((r) => r.nodeId)
      .filter((n) => state === undefined || !state.owed.has(n));
    const self = this.deps.control.nodeId;
    return [...nodes.filter((n) => n === self), ...nodes.filter((n) => n !== self)];
  }

  private readEpoch(source: ReadSource): number {
    return source.head ? this.epochValue : source.volume.epoch;
  }

  /** Reads a chunk piece (4 KiB aligned) of `source` into `target`, through clone parents. */
  private async readPiece(
    source: ReadSource,
    chunkIndex: number,
    offsetBytes: number,
    target: Uint8Array,
    signal?: AbortSignal,
  ): Promise<void> {
    const record = this.sourceChunk(source, chunkIndex);
    const parent = this.parentSource(source.volume);
    if (record === undefined) {
      if (parent === undefined) target.fill(0);
      else await this.readPiece(parent, chunkIndex, offsetBytes, target, signal);
      return;
    }
    if (source.head && source.volume.volumeId === this.volumeId) await this.prepare(chunkIndex);
    if (parent === undefined) {
      await this.readReplicas(source, record, offsetBytes, target, signal);
      return;
    }
    const runs = await this.replicaRuns(source, record, offsetBytes, target.byteLength);
    for (const run of runs) {
      const part = target.subarray(
        run.offsetBytes - offsetBytes,
        run.offsetBytes - offsetBytes + run.lengthBytes,
      );
      if (run.state === "hole")
        await this.readPiece(parent, chunkIndex, run.offsetBytes, part, signal);
      else if (run.state === "zero") part.fill(0);
      else await this.readReplicas(source, record, run.offsetBytes, part, signal);
    }
  }

  /** Allocation runs of a chunk piece from the first replica that answers. */
  private async replicaRuns(
    source: ReadSource,
    record: ChunkRecord,
    offsetBytes: number,
    lengthBytes: number,
  ): Promise<ChunkRun[]> {
    const chunk = { volumeId: record.volumeId, chunkIndex: record.chunkIndex };
    const snapshotId = source.snapshot?.snapshotId;
    let lastError: unknown;
    for (const nodeId of this.readOrder(record)) {
      try {
        return await this.callReplica(nodeId, "allocation", undefined, (replica, o) =>
          replica.allocation(
            chunk,
            offsetBytes,
            lengthBytes,
            snapshotId === undefined ? o : { snapshotId, ...o },
          ),
        );
      } catch (error) {
        lastError = error;
      }
    }
    throw (
      lastError ?? new HesError("HES_QUORUM_LOST", `chunk ${record.chunkIndex}: no in-sync replica`)
    );
  }

  private async readReplicas(
    source: ReadSource,
    record: ChunkRecord,
    offsetBytes: number,
    target: Uint8Array,
    signal?: AbortSignal,
  ): Promise<void> {
    const chunk = { volumeId: record.volumeId, chunkIndex: record.chunkIndex };
    const snapshotId = source.snapshot?.snapshotId;
    const epoch = this.readEpoch(source);
    const corrupt: NodeId[] = [];
    let lastError: unknown;
    for (const nodeId of this.readOrder(record)) {
      try {
        const data = await this.callReplica(nodeId, "read", signal, (replica, o) =>
          replica.read(chunk, offsetBytes, target.byteLength, {
            epoch,
            ...o,
            ...(snapshotId === undefined ? {} : { snapshotId }),
          }),
        );
        target.set(data);
        if (corrupt.length > 0 && source.head)
          await this.repair(record.chunkIndex, corrupt, offsetBytes, data);
        return;
      } catch (error) {
        if (isHesError(error, "HES_FENCED") && source.head) this.fenceOnAny([error]);
        if (isHesError(error, "HES_CORRUPTION")) corrupt.push(nodeId);
        lastError = error;
      }
    }
    throw (
      lastError ?? new HesError("HES_QUORUM_LOST", `chunk ${record.chunkIndex}: no in-sync replica`)
    );
  }

  /** Rewrites good data over replicas whose blocks failed their checksum. */
  private async repair(
    chunkIndex: number,
    nodes: readonly NodeId[],
    offsetBytes: number,
    data: Uint8Array,
  ) {
    const chunk = this.chunkId(chunkIndex);
    for (const nodeId of nodes) {
      const stamp = { epoch: this.epochValue, seq: this.takeSeq() };
      try {
        await this.callReplica(nodeId, "repair", undefined, (replica, o) =>
          replica.write(chunk, offsetBytes, data, { ...stamp, ...o }),
        );
        this.log.warn(
          { chunkIndex, nodeId, offsetBytes },
          "repaired corrupt blocks from another replica",
        );
      } catch (error) {
        this.log.error({ chunkIndex, nodeId, err: String(error) }, "repair failed");
        await this.reportFailure(chunkIndex, nodeId, 0).catch(() => undefined);
      }
    }
  }

  /** Reads a 4 KiB-aligned range of a source without taking locks (callers hold them). */
  private async readAligned(
    source: ReadSource,
    offsetBytes: number,
    lengthBytes: number,
    signal?: AbortSignal,
  ) {
    const out = new Uint8Array(lengthBytes);
    const pieces = chunkPieces(
      offsetBytes,
      lengthBytes,
      this.record.chunkSizeBytes,
      VOLUME_REPLICA_PIECE_BYTES,
    );
    await Promise.all(
      pieces.map((p) =>
        this.readPiece(
          source,
          p.chunkIndex,
          p.chunkOffsetBytes,
          out.subarray(p.rangeOffsetBytes, p.rangeOffsetBytes + p.lengthBytes),
          signal,
        ),
      ),
    );
    return out;
  }

  /** Reads `lengthBytes` at `offsetBytes` (512-aligned). Unwritten ranges read as zeros. */
  async read(request: RangeRequest): Promise<Uint8Array> {
    checkRange(request.offsetBytes, request.lengthBytes, this.sizeBytes);
    const { offsetBytes, lengthBytes, signal } = request;
    if (lengthBytes === 0) return new Uint8Array(0);
    return this.run(offsetBytes, lengthBytes, false, signal, async () => {
      const [start, length] = widen(offsetBytes, lengthBytes);
      const data = await this.readAligned(this.headSource(), start, length, signal);
      return start === offsetBytes && length === lengthBytes
        ? data
        : data.slice(offsetBytes - start, offsetBytes - start + lengthBytes);
    });
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  /** Writes 4 KiB-aligned data under one seq (callers hold the range). */
  private async writeAligned(
    offsetBytes: number,
    data: Uint8Array,
    signal?: AbortSignal,
  ): Promise<void> {
    const seq = this.takeSeq();
    const pieces = chunkPieces(
      offsetBytes,
      data.byteLength,
      this.record.chunkSizeBytes,
      VOLUME_REPLICA_PIECE_BYTES,
    );
    await Promise.all(
      pieces.map((p) => {
        const part = data.subarray(p.rangeOffsetBytes, p.rangeOffsetBytes + p.lengthBytes);
        return this.mutateChunk(p.chunkIndex, seq, signal, (replica, chunk, stamp) =>
          replica.write(chunk, p.chunkOffsetBytes, part, stamp),
        );
      }),
    );
  }

  /** The widened block-aligned image of a partial write: old edge blocks + the new bytes. */
  private async mergePartial(offsetBytes: number, data: Uint8Array, signal?: AbortSignal) {
    const [start, length] = widen(offsetBytes, data.byteLength);
    if (start === offsetBytes && length === data.byteLength) return { start, image: data };
    const image = new Uint8Array(length);
    const tailStart = start + length - BLOCK;
    const [head, tail] = await Promise.all([
      this.readAligned(this.headSource(), start, BLOCK, signal),
      tailStart > start ? this.readAligned(this.headSource(), tailStart, BLOCK, signal) : undefined,
    ]);
    image.set(head, 0);
    if (tail !== undefined) image.set(tail, length - BLOCK);
    image.set(data, offsetBytes - start);
    return { start, image };
  }

  /**
   * Writes `data` at `offsetBytes` (512-aligned). Resolves once durable on the write quorum:
   * replicas have no volatile cache, so every resolved write is already durable (FUA is free).
   * Partial 4 KiB blocks are read-modify-written while the blocks are held.
   */
  async write(request: WriteRequest): Promise<void> {
    const data = checkData(request.data, "data");
    checkRange(request.offsetBytes, data.byteLength, this.sizeBytes);
    if (data.byteLength === 0) return;
    await this.run(request.offsetBytes, data.byteLength, true, request.signal, async () => {
      const { start, image } = await this.mergePartial(request.offsetBytes, data, request.signal);
      await this.writeAligned(start, image, request.signal);
    });
  }

  /** Every resolved write is durable on its quorum already: flush only checks the volume. */
  async flush(options: { readonly signal?: AbortSignal } = {}): Promise<void> {
    if (options.signal?.aborted === true) throw new HesError("HES_ABORTED", "flush aborted");
    this.checkUsable();
  }

  /** Zeroes a range: partial blocks by read-modify-write, whole blocks as metadata. */
  private async zeroRange(
    offsetBytes: number,
    lengthBytes: number,
    unmap: boolean,
    signal?: AbortSignal,
  ) {
    const firstFull = Math.ceil(offsetBytes / BLOCK) * BLOCK;
    const endFull = Math.floor((offsetBytes + lengthBytes) / BLOCK) * BLOCK;
    if (endFull <= firstFull) {
      const { start: s, image } = await this.mergePartial(
        offsetBytes,
        new Uint8Array(lengthBytes),
        signal,
      );
      await this.writeAligned(s, image, signal);
      return;
    }
    if (firstFull > offsetBytes) {
      const { start: s, image } = await this.mergePartial(
        offsetBytes,
        new Uint8Array(firstFull - offsetBytes),
        signal,
      );
      await this.writeAligned(s, image, signal);
    }
    if (endFull < offsetBytes + lengthBytes) {
      const tail = new Uint8Array(offsetBytes + lengthBytes - endFull);
      const { start: s, image } = await this.mergePartial(endFull, tail, signal);
      await this.writeAligned(s, image, signal);
    }
    // A linked clone's holes read through to its parent: there, zeroes must stay zeroes.
    const hole = unmap && this.record.parentVolumeId === 0;
    const seq = this.takeSeq();
    const pieces = chunkPieces(
      firstFull,
      endFull - firstFull,
      this.record.chunkSizeBytes,
      Infinity,
    );
    await Promise.all(
      pieces.map(async (p) => {
        if (
          this.record.parentVolumeId === 0 &&
          this.view.chunk(this.volumeId, p.chunkIndex) === undefined
        )
          return;
        await this.mutateChunk(p.chunkIndex, seq, signal, (replica, chunk, stamp) =>
          hole
            ? replica.discard(chunk, p.chunkOffsetBytes, p.lengthBytes, stamp)
            : replica.writeZeroes(chunk, p.chunkOffsetBytes, p.lengthBytes, {
                ...stamp,
                unmap: false,
              }),
        );
      }),
    );
  }

  /** The range reads as zeros; whole blocks become holes (metadata only). */
  async discard(request: RangeRequest & { readonly fua?: boolean }): Promise<void> {
    checkRange(request.offsetBytes, request.lengthBytes, this.sizeBytes);
    if (request.lengthBytes === 0) return;
    await this.run(request.offsetBytes, request.lengthBytes, true, request.signal, () =>
      this.zeroRange(request.offsetBytes, request.lengthBytes, true, request.signal),
    );
  }

  /** Zeroes as metadata (never slow, so `fastOnly` is always honoured). */
  async writeZeroes(request: WriteZeroesRequest): Promise<void> {
    checkRange(request.offsetBytes, request.lengthBytes, this.sizeBytes);
    if (request.lengthBytes === 0) return;
    await this.run(request.offsetBytes, request.lengthBytes, true, request.signal, () =>
      this.zeroRange(request.offsetBytes, request.lengthBytes, request.mayUnmap, request.signal),
    );
  }

  /**
   * Compares the range with `expected` and, when equal, writes `data`; atomic with respect to
   * every other write of the volume (the range is held throughout). On a mismatch nothing is
   * written and HES_MISCOMPARE carries `details.current` (the data found) and
   * `details.mismatchOffsetBytes`.
   */
  async compareAndWrite(request: CompareAndWriteRequest): Promise<void> {
    const expected = checkData(request.expected, "expected");
    const data = checkData(request.data, "data");
    if (expected.byteLength !== data.byteLength) {
      throw new RangeError("expected and data must have the same length");
    }
    checkRange(request.offsetBytes, data.byteLength, this.sizeBytes);
    if (data.byteLength === 0) return;
    await this.run(request.offsetBytes, data.byteLength, true, request.signal, async () => {
      const [start, length] = widen(request.offsetBytes, data.byteLength);
      const image = await this.readAligned(this.headSource(), start, length, request.signal);
      const from = request.offsetBytes - start;
      const current = image.slice(from, from + data.byteLength);
      const at = current.findIndex((byte, i) => byte !== expected[i]);
      if (at >= 0) {
        throw new HesError(
          "HES_MISCOMPARE",
          `${this.name}: data differs at byte ${request.offsetBytes + at}`,
          {
            details: { current, mismatchOffsetBytes: request.offsetBytes + at },
          },
        );
      }
      image.set(data, from);
      await this.writeAligned(start, image, request.signal);
    });
  }

  /** Holes, zeroes and data over a range, from the replicas (through clone parents). */
  async allocation(request: RangeRequest): Promise<AllocationExtent[]> {
    checkRange(request.offsetBytes, request.lengthBytes, this.sizeBytes);
    if (request.lengthBytes === 0) return [];
    return this.run(request.offsetBytes, request.lengthBytes, false, request.signal, async () => {
      const [start, length] = widen(request.offsetBytes, request.lengthBytes);
      const extents: AllocationExtent[] = [];
      for (const p of chunkPieces(start, length, this.record.chunkSizeBytes, Infinity)) {
        const base = start + p.rangeOffsetBytes - p.chunkOffsetBytes;
        extents.push(
          ...(await this.allocationOf(
            this.headSource(),
            p.chunkIndex,
            p.chunkOffsetBytes,
            p.lengthBytes,
            base,
          )),
        );
      }
      return clipAndMerge(extents, request.offsetBytes, request.lengthBytes);
    });
  }

  private async allocationOf(
    source: ReadSource,
    chunkIndex: number,
    offsetBytes: number,
    lengthBytes: number,
    baseBytes: number,
  ): Promise<AllocationExtent[]> {
    const record = this.sourceChunk(source, chunkIndex);
    const parent = this.parentSource(source.volume);
    if (record === undefined) {
      if (parent !== undefined)
        return this.allocationOf(parent, chunkIndex, offsetBytes, lengthBytes, baseBytes);
      return [{ offsetBytes: baseBytes + offsetBytes, lengthBytes, hole: true, zero: true }];
    }
    if (source.head && source.volume.volumeId === this.volumeId) await this.prepare(chunkIndex);
    const runs = await this.replicaRuns(source, record, offsetBytes, lengthBytes);
    const out: AllocationExtent[] = [];
    for (const run of runs) {
      if (run.state === "hole" && parent !== undefined) {
        out.push(
          ...(await this.allocationOf(
            parent,
            chunkIndex,
            run.offsetBytes,
            run.lengthBytes,
            baseBytes,
          )),
        );
      } else {
        out.push(...runsToExtents([run], baseBytes));
      }
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // copyRange (XCOPY)

  /**
   * Copies `lengthBytes` from `source` (another open volume, or this one) at
   * `sourceOffsetBytes` to `offsetBytes` of this volume. Where source and target chunk pieces
   * are 4 KiB aligned and share the same in-sync replica set, each replica copies locally
   * (`ChunkReplica.copyRange`): no data passes through this process. Otherwise the data is
   * read and written here. Atomic with respect to other writes of the target range.
   */
  async copyRange(request: CopyRangeRequest): Promise<CopyRangeResult> {
    const source = request.source ?? this;
    checkRange(request.sourceOffsetBytes, request.lengthBytes, source.sizeBytes);
    checkRange(request.offsetBytes, request.lengthBytes, this.sizeBytes);
    if (request.lengthBytes === 0) return { offloadedBytes: 0, copiedBytes: 0 };
    source.checkUsable();
    const copy = () => this.copyHeld(source, request);
    const { signal } = request;
    if (source === this) {
      const low = Math.min(request.offsetBytes, request.sourceOffsetBytes);
      const high = Math.max(request.offsetBytes, request.sourceOffsetBytes) + request.lengthBytes;
      return this.run(low, high - low, true, signal, copy);
    }
    // Both ranges are held, taken in volume-id order so crossing copies cannot deadlock.
    const holdTarget = (inner: () => Promise<CopyRangeResult>) =>
      this.run(request.offsetBytes, request.lengthBytes, true, signal, inner);
    const holdSource = (inner: () => Promise<CopyRangeResult>) =>
      source.run(request.sourceOffsetBytes, request.lengthBytes, false, signal, inner, false);
    return source.volumeId < this.volumeId
      ? holdSource(() => holdTarget(copy))
      : holdTarget(() => holdSource(copy));
  }

  private async copyHeld(source: Volume, request: CopyRangeRequest): Promise<CopyRangeResult> {
    const { offsetBytes, sourceOffsetBytes, lengthBytes, signal } = request;
    if (
      source === this &&
      offsetBytes < sourceOffsetBytes + lengthBytes &&
      sourceOffsetBytes < offsetBytes + lengthBytes
    ) {
      // Overlapping ranges of one volume: read everything first (memmove semantics); a
      // piecewise or replica-side copy would read bytes it already overwrote.
      const [start, widened] = widen(sourceOffsetBytes, lengthBytes);
      const image = await this.readAligned(this.headSource(), start, widened, signal);
      const data = image.subarray(
        sourceOffsetBytes - start,
        sourceOffsetBytes - start + lengthBytes,
      );
      const merged = await this.mergePartial(offsetBytes, data, signal);
      await this.writeAligned(merged.start, merged.image, signal);
      return { offloadedBytes: 0, copiedBytes: lengthBytes };
    }
    let offloadedBytes = 0;
    let copiedBytes = 0;
    const aligned =
      request.offsetBytes % BLOCK === 0 &&
      request.sourceOffsetBytes % BLOCK === 0 &&
      request.lengthBytes % BLOCK === 0;
    const chunkBytes = Math.min(this.record.chunkSizeBytes, source.record.chunkSizeBytes);
    let done = 0;
    while (done < request.lengthBytes) {
      const from = request.sourceOffsetBytes + done;
      const to = request.offsetBytes + done;
      const length = Math.min(
        request.lengthBytes - done,
        chunkBytes - (from % chunkBytes),
        chunkBytes - (to % chunkBytes),
        VOLUME_REPLICA_PIECE_BYTES * 16,
      );
      if (aligned && (await this.tryOffload(source, from, to, length, request.signal)))
        offloadedBytes += length;
      else {
        const [start, widened] = widen(from, length);
        const image = await source.readAligned(source.headSource(), start, widened, request.signal);
        const data = image.subarray(from - start, from - start + length);
        const merged = await this.mergePartial(to, data, request.signal);
        await this.writeAligned(merged.start, merged.image, request.signal);
        copiedBytes += length;
      }
      done += length;
    }
    return { offloadedBytes, copiedBytes };
  }

  /** The XCOPY offload of one piece inside one source and one target chunk, when possible. */
  private async tryOffload(
    source: Volume,
    fromBytes: number,
    toBytes: number,
    lengthBytes: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    // Clones read holes through their parent, so a hole copied as a hole would change meaning.
    if (source.record.parentVolumeId !== 0 || this.record.parentVolumeId !== 0) return false;
    const sourceIndex = Math.floor(fromBytes / source.record.chunkSizeBytes);
    const sourceRecord = this.view.chunk(source.volumeId, sourceIndex);
    if (sourceRecord === undefined) return false;
    await source.prepare(sourceIndex);
    const targetIndex = Math.floor(toBytes / this.record.chunkSizeBytes);
    const targetRecord = await this.writableChunk(targetIndex);
    // Every replica of the target gets the copy (filling and stale ones too), so every one
    // must hold the source chunk: the whole sets are compared, states included.
    const nodes = (r: ChunkRecord) =>
      r.replicas
        .map((x) => `${x.nodeId}:${x.state === "in-sync"}`)
        .sort((a, b) => a.localeCompare(b))
        .join(",");
    if (nodes(sourceRecord) !== nodes(targetRecord)) return false;
    const sourceSide = {
      chunk: { volumeId: source.volumeId, chunkIndex: sourceIndex },
      offsetBytes: fromBytes % source.record.chunkSizeBytes,
    };
    const targetOffset = toBytes % this.record.chunkSizeBytes;
    const seq = this.takeSeq();
    await this.mutateChunk(targetIndex, seq, signal, (replica, chunk, stamp) =>
      replica.copyRange(sourceSide, { chunk, offsetBytes: targetOffset }, lengthBytes, stamp),
    );
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Size

  /** Grows the volume online (the map refuses shrinking an open volume). */
  async resize(options: { readonly sizeBytes: number }): Promise<void> {
    this.checkUsable();
    if (!Number.isSafeInteger(options.sizeBytes) || options.sizeBytes < this.sizeBytes) {
      throw new RangeError(`an open volume only grows: ${options.sizeBytes} < ${this.sizeBytes}`);
    }
    await this.deps.control.propose({
      kind: "resizeVolume",
      fields: { volumeId: this.volumeId, sizeBytes: options.sizeBytes },
    });
    const record = this.view.volume(this.volumeId);
    if (record !== undefined && record.epoch === this.epochValue) this.record = record;
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots, rollback, diff, space

  private snapshotByName(name: string): VolumeSnapshotRecord {
    const record = this.view.volume(this.volumeId) ?? this.record;
    const snapshot = record.snapshots.find((s) => s.name === name);
    if (snapshot === undefined)
      throw new HesError("HES_NOT_FOUND", `${this.name} has no snapshot ${name}`);
    return snapshot;
  }

  /** Runs `body` with the whole volume held: no IO in flight, none starts. */
  private whole<T>(signal: AbortSignal | undefined, body: () => Promise<T>): Promise<T> {
    return this.run(0, WHOLE_VOLUME_BYTES, true, signal, body, false);
  }

  /** Snapshot operations. */
  readonly snapshots = {
    /**
     * A crash-consistent point-in-time copy: drains in-flight IO, records the snapshot in the
     * map, then pins every placed chunk on its in-sync replicas (redirect-on-write, no copy).
     */
    create: (options: {
      readonly name: string;
      readonly signal?: AbortSignal;
    }): Promise<VolumeSnapshotRecord> =>
      this.whole(options.signal, () => this.createSnapshot(options.name)),
    list: (): readonly VolumeSnapshotRecord[] =>
      (this.view.volume(this.volumeId) ?? this.record).snapshots,
    /** Removes the snapshot from the map, then releases its pins (its unique space is freed). */
    delete: (options: { readonly name: string }): Promise<void> =>
      this.deleteSnapshot(options.name),
    /** Makes the head equal to the snapshot again (at the replicas, no data through here). */
    rollback: (options: { readonly name: string; readonly signal?: AbortSignal }): Promise<void> =>
      this.whole(options.signal, () => this.rollback(options.name)),
  };

  private async createSnapshot(name: string): Promise<VolumeSnapshotRecord> {
    await this.prepareAll();
    const value = await this.deps.control.propose({
      kind: "createSnapshot",
      fields: { volumeId: this.volumeId, name },
    });
    const snapshotId = value.snapshotId as number;
    for (const record of this.view.chunksOfVolume(this.volumeId)) {
      const chunk = this.chunkId(record.chunkIndex);
      const targets = inSyncReplicas(record).map((r) => r.nodeId);
      const results = await Promise.allSettled(
        targets.map((nodeId) =>
          this.callReplica(nodeId, "pin", undefined, (replica) =>
            replica.pinSnapshot(chunk, snapshotId, { epoch: this.epochValue }),
          ),
        ),
      );
      const failed = targets.filter((_, i) => results[i]?.status === "rejected");
      this.fenceOnAny(results.flatMap((r) => (r.status === "rejected" ? [r.reason] : [])));
      if (failed.length === targets.length) {
        throw new HesError(
          "HES_QUORUM_LOST",
          `snapshot ${name}: no replica of chunk ${record.chunkIndex} pinned it: ${String((results[0] as PromiseRejectedResult).reason)}`,
        );
      }
      for (const nodeId of failed) await this.reportFailure(record.chunkIndex, nodeId, 0);
    }
    return this.snapshotByName(name);
  }

  private async deleteSnapshot(name: string): Promise<void> {
    this.checkUsable();
    const snapshot = this.snapshotByName(name);
    await this.deps.control.propose({
      kind: "deleteSnapshot",
      fields: { volumeId: this.volumeId, snapshotId: snapshot.snapshotId },
    });
    for (const record of this.view.chunksOfVolume(this.volumeId)) {
      if (record.placedAtIndex > snapshot.createdAtIndex) continue;
      for (const r of record.replicas) {
        await this.callReplica(r.nodeId, "unpin", undefined, (replica) =>
          replica.releaseSnapshot(this.chunkId(record.chunkIndex), snapshot.snapshotId, {
            epoch: this.epochValue,
          }),
        ).catch((error: unknown) => {
          if (!isHesError(error, "HES_NOT_FOUND")) {
            this.log.warn(
              { chunkIndex: record.chunkIndex, nodeId: r.nodeId, err: String(error) },
              "unpin failed",
            );
          }
        });
      }
    }
  }

  private async rollback(name: string): Promise<void> {
    const snapshot = this.snapshotByName(name);
    await this.prepareAll();
    const seq = this.takeSeq();
    for (const record of this.view.chunksOfVolume(this.volumeId)) {
      const chunkBytes = this.record.chunkSizeBytes;
      if (record.placedAtIndex > snapshot.createdAtIndex) {
        // The chunk did not exist then: it becomes a hole (a clone reads through again).
        await this.mutateChunk(record.chunkIndex, seq, undefined, (replica, chunk, stamp) =>
          replica.discard(chunk, 0, chunkBytes, stamp),
        );
        continue;
      }
      await this.mutateChunk(record.chunkIndex, seq, undefined, (replica, chunk, stamp) =>
        replica.copyRange(
          { chunk, offsetBytes: 0, snapshotId: snapshot.snapshotId },
          { chunk, offsetBytes: 0 },
          chunkBytes,
          stamp,
        ),
      );
    }
  }

  /**
   * Changed-block tracking: the extents that differ between snapshot `from` (undefined: an
   * empty volume) and snapshot `to` (undefined: the head), this volume's own blocks only (a
   * clone's diff does not include its parent's).
   */
  async diff(options: {
    readonly fromSnapshot?: string;
    readonly toSnapshot?: string;
  }): Promise<ChangedExtent[]> {
    this.checkUsable();
    const from =
      options.fromSnapshot === undefined ? undefined : this.snapshotByName(options.fromSnapshot);
    const to =
      options.toSnapshot === undefined ? undefined : this.snapshotByName(options.toSnapshot);
    await this.prepareAll();
    const out: ChangedExtent[] = [];
    for (const record of this.view.chunksOfVolume(this.volumeId)) {
      if (to !== undefined && record.placedAtIndex > to.createdAtIndex) continue;
      const runs = await this.chunkDiff(record, from, to);
      const base = record.chunkIndex * this.record.chunkSizeBytes;
      for (const run of runs)
        out.push({ offsetBytes: base + run.offsetBytes, lengthBytes: run.lengthBytes });
    }
    return mergeRanges(out).flatMap((r) => {
      const end = Math.min(r.offsetBytes + r.lengthBytes, this.sizeBytes);
      return end > r.offsetBytes
        ? [{ offsetBytes: r.offsetBytes, lengthBytes: end - r.offsetBytes }]
        : [];
    });
  }

  private async chunkDiff(
    record: ChunkRecord,
    from: VolumeSnapshotRecord | undefined,
    to: VolumeSnapshotRecord | undefined,
  ): Promise<ChunkRun[]> {
    const chunk = this.chunkId(record.chunkIndex);
    const chunkBytes = this.record.chunkSizeBytes;
    let lastError: unknown;
    for (const nodeId of this.readOrder(record)) {
      try {
        return await this.callReplica(nodeId, "diff", undefined, async (replica, o) => {
          if (from !== undefined && record.placedAtIndex <= from.createdAtIndex) {
            const query =
              to === undefined
                ? { fromSnapshotId: from.snapshotId }
                : { fromSnapshotId: from.snapshotId, toSnapshotId: to.snapshotId };
            return replica.changedBlocks(chunk, query, o);
          }
          const runs = await replica.allocation(
            chunk,
            0,
            chunkBytes,
            to === undefined ? o : { snapshotId: to.snapshotId, ...o },
          );
          return runs.filter((run) => run.state !== "hole");
        });
      } catch (error) {
        lastError = error;
      }
    }
    throw (
      lastError ?? new HesError("HES_QUORUM_LOST", `chunk ${record.chunkIndex}: no in-sync replica`)
    );
  }

  /**
   * Exact space accounting of this volume's own blocks per view (snapshots oldest first, then
   * the head). A block is shared between neighbouring views when it did not change between
   * them (redirect-on-write keeps one copy), unique otherwise.
   */
  async space(): Promise<SpaceFigures[]> {
    this.checkUsable();
    await this.prepareAll();
    const snapshots = [...(this.view.volume(this.volumeId) ?? this.record).snapshots];
    const views = [
      ...snapshots.map((s) => ({ name: s.name, snapshot: s as VolumeSnapshotRecord | undefined })),
      { name: "head", snapshot: undefined },
    ];
    const totals = views.map(() => ({ allocated: 0, unique: 0 }));
    for (const record of this.view.chunksOfVolume(this.volumeId)) {
      await this.chunkSpace(record, views, totals);
    }
    return views.map((v, i) => {
      const t = totals[i] as { allocated: number; unique: number };
      return {
        view: v.name,
        allocatedBytes: t.allocated,
        uniqueBytes: t.unique,
        sharedBytes: t.allocated - t.unique,
      };
    });
  }

  private async chunkSpace(
    record: ChunkRecord,
    views: readonly { snapshot: VolumeSnapshotRecord | undefined }[],
    totals: { allocated: number; unique: number }[],
  ): Promise<void> {
    const chunk = this.chunkId(record.chunkIndex);
    const chunkBytes = this.record.chunkSizeBytes;
    const blocks = chunkBytes / BLOCK;
    const nodeId = this.readOrder(record)[0];
    if (nodeId === undefined) return;
    const exists = (s: VolumeSnapshotRecord | undefined) =>
      s === undefined || record.placedAtIndex <= s.createdAtIndex;
    const data: Uint8Array[] = [];
    for (const v of views) {
      if (!exists(v.snapshot)) {
        data.push(new Uint8Array(blocks));
        continue;
      }
      const runs = await this.callReplica(nodeId, "space", undefined, (replica, o) =>
        replica.allocation(
          chunk,
          0,
          chunkBytes,
          v.snapshot === undefined ? o : { snapshotId: v.snapshot.snapshotId, ...o },
        ),
      );
      data.push(blockFlags(runs, blocks, (r) => r.state === "data"));
    }
    // changed[k]: blocks that differ between view k and view k + 1.
    const changed: Uint8Array[] = [];
    for (let k = 0; k + 1 < views.length; k++) {
      const a = views[k]?.snapshot as VolumeSnapshotRecord;
      const b = views[k + 1]?.snapshot;
      if (!exists(a)) {
        changed.push(new Uint8Array(blocks).fill(1));
        continue;
      }
      const query =
        b === undefined
          ? { fromSnapshotId: a.snapshotId }
          : { fromSnapshotId: a.snapshotId, toSnapshotId: b.snapshotId };
      const runs = await this.callReplica(nodeId, "space", undefined, (replica, o) =>
        replica.changedBlocks(chunk, query, o),
      );
      changed.push(blockFlags(runs, blocks, () => true));
    }
    for (let k = 0; k < views.length; k++) {
      const here = data[k] as Uint8Array;
      const total = totals[k] as { allocated: number; unique: number };
      for (let b = 0; b < blocks; b++) {
        if (here[b] !== 1) continue;
        total.allocated += BLOCK;
        const sharedBefore = k > 0 && data[k - 1]?.[b] === 1 && changed[k - 1]?.[b] !== 1;
        const sharedAfter = k + 1 < views.length && data[k + 1]?.[b] === 1 && changed[k]?.[b] !== 1;
        if (!sharedBefore && !sharedAfter) total.unique += BLOCK;
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Clones

  /**
   * Copies every block a linked clone still reads through its parent into the clone, in the
   * background, one chunk at a time (each chunk held while it is copied, so guest writes
   * interleave). Progress counts chunks. Once every chunk is copied the map's parent link is
   * cut (`detachClone`, under this owner's lease): the parent snapshot may then be deleted.
   */
  flatten(options: { readonly signal?: AbortSignal } = {}): FlattenJob {
    const total = chunkCount(this.record);
    let doneChunks = 0;
    const done = (async () => {
      if (this.record.parentVolumeId === 0) {
        doneChunks = total;
        return;
      }
      for (let index = 0; index < total; index++) {
        const chunkBytes = this.record.chunkSizeBytes;
        const length = Math.min(chunkBytes, this.sizeBytes - index * chunkBytes);
        await this.run(index * chunkBytes, length, true, options.signal, () =>
          this.flattenChunk(index, length, options.signal),
        );
        doneChunks++;
      }
      await this.detachFromParent();
    })();
    return { done, progress: () => ({ chunksDone: doneChunks, chunksTotal: total }) };
  }

  /** Cuts the parent link; from then on every read stays in this volume. */
  private async detachFromParent(): Promise<void> {
    this.checkUsable();
    await this.deps.control.propose({
      kind: "detachClone",
      fields: {
        volumeId: this.volumeId,
        nodeId: this.deps.control.nodeId,
        epoch: this.epochValue,
      },
    });
    const record = this.deps.control.view().volume(this.volumeId);
    if (record !== undefined && record.epoch === this.epochValue) this.record = record;
  }

  private async flattenChunk(
    chunkIndex: number,
    lengthBytes: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const own = this.view.chunk(this.volumeId, chunkIndex);
    const holes: ChangedExtent[] =
      own === undefined
        ? [{ offsetBytes: 0, lengthBytes }]
        : (await this.replicaRuns(this.headSource(), own, 0, lengthBytes)).filter(
            (r) => r.state === "hole",
          );
    const parent = this.parentSource(this.record) as ReadSource;
    for (const hole of holes) {
      for (const p of chunkPieces(
        hole.offsetBytes,
        hole.lengthBytes,
        Infinity,
        VOLUME_REPLICA_PIECE_BYTES,
      )) {
        const part = new Uint8Array(p.lengthBytes);
        await this.readPiece(parent, chunkIndex, p.chunkOffsetBytes, part, signal);
        const zero = part.every((byte) => byte === 0);
        const seq = this.takeSeq();
        await this.mutateChunk(chunkIndex, seq, signal, (replica, chunk, stamp) =>
          zero
            ? replica.writeZeroes(chunk, p.chunkOffsetBytes, p.lengthBytes, {
                ...stamp,
                unmap: false,
              })
            : replica.write(chunk, p.chunkOffsetBytes, part, stamp),
        );
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Close

  /** Waits for in-flight IO, then releases the lease. Later IO fails with HES_CLOSED. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.fencedError === undefined) {
      await this.whole(undefined, async () => undefined).catch(() => undefined);
    }
    this.closed = true;
    this.unsubscribe();
    if (this.fencedError !== undefined) return;
    // Bounded (see VOLUME_CLOSE_RELEASE_MS): without quorum the lease stays in the map and the
    // next owner takes it over; every acknowledged write is durable on its replicas already.
    const release = new AbortController();
    const timer = this.deps.clock.setTimer(VOLUME_CLOSE_RELEASE_MS, () => release.abort());
    await this.deps.control
      .propose(
        {
          kind: "closeVolume",
          fields: {
            volumeId: this.volumeId,
            nodeId: this.deps.control.nodeId,
            epoch: this.epochValue,
          },
        },
        { signal: release.signal },
      )
      .catch((error: unknown) => {
        if (isHesError(error, "HES_FENCED")) return;
        const noMap = isHesError(error, "HES_TIMEOUT", "HES_UNAVAILABLE", "HES_NOT_LEADER");
        if (!release.signal.aborted && !noMap) throw error;
        this.log.warn(
          { err: String(error), epoch: this.epochValue },
          "close: the map did not take the lease release; the next owner must open with takeover",
        );
      })
      .finally(() => timer.cancel());
  }
}
