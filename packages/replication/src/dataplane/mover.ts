/**
 * The mover: brings this node's replicas that are not in sync up to date, pulling from an
 * in-sync replica elsewhere, and tells the cluster map.
 *
 * - `filling` (rebuild, or a rebalance target): any leftover of an interrupted copy is dropped,
 *   the source's chunk is exported and imported (the version withheld), then a catch-up pass
 *   from the version the copy started at picks up writes that landed meanwhile; the version is
 *   stored last and `reportReplicaCaughtUp` sent with it. A move target then `finishMove`s.
 * - `stale` (back after an outage): only the union of the blocks changed after the map's
 *   watermark on the source AND on this replica is copied (blocks this replica has that the
 *   source does not are overwritten from the source, holes included), never the whole chunk.
 * - Every head import is conditional (`keepNewer`): a write of the current owner that reached
 *   this replica before the source stays; catch-up seqs are raised to the current epoch's
 *   floor, so an older epoch's unacknowledged write is still replaced.
 *
 * Bounded: `chunksInFlightMax` chunks at once, one token bucket for the node's total copy
 * bandwidth, ≤ 4 windows of ≤ 1 MiB in flight per chunk. Cancellable (close, or the signal of
 * runOnce); restart-safe (the version is stored last, so an interrupted copy is redone).
 *
 * Assumes the volume writes to every replica of the chunk's replica set (in-sync or not) while
 * counting only in-sync ones toward its quorum: writes after a copy's last pass then reach the
 * new replica directly.
 */
import { setMaxListeners } from "node:events";
import {
  type Clock,
  checkInteger,
  HesError,
  isHesError,
  type Logger,
  type NodeId,
  nullLogger,
  systemClock,
} from "@hes/base";
import type { ChunkExportPiece, ChunkId, ChunkRun, ChunkVersion } from "@hes/extent-store";
import { type Assignment, assignmentsOf } from "../cluster-map/liveness.js";
import { type ClusterMapView, isAlive } from "../cluster-map/model.js";
import {
  type ChunkReplica,
  type ClusterControl,
  type ReplicaDirectory,
  volumeSeq,
} from "../contracts.js";
import {
  MOVER_BYTES_PER_SECOND_DEFAULT,
  MOVER_CHUNKS_IN_FLIGHT_DEFAULT,
  MOVER_CHUNKS_IN_FLIGHT_MAX,
  MOVER_IMPORT_BATCH_BYTES,
  MOVER_IMPORT_BATCH_PIECES,
  MOVER_IMPORT_BYTES_IN_FLIGHT_MAX,
  MOVER_IMPORTS_IN_FLIGHT_MAX,
  MOVER_PASSES_MAX,
  MOVER_PIN_COPY_ATTEMPTS_MAX,
  MOVER_PROGRESS_EVERY_BYTES,
  REPLICA_BLOCK_BYTES,
  REPLICA_IO_BYTES_MAX,
} from "./limits.js";
import { RateLimiter } from "./rate-limiter.js";

/** Options of {@link Mover}. */
export interface MoverOptions {
  readonly nodeId: NodeId;
  readonly control: ClusterControl;
  readonly replicas: ReplicaDirectory;
  /** Total copy bandwidth of this node (bytes/s, 0 = unlimited). */
  readonly bytesPerSecond?: number;
  readonly chunksInFlightMax?: number;
  readonly progressEveryBytes?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** What the mover has done since it was made. */
export interface MoverStats {
  readonly rebuilds: number;
  readonly catchUps: number;
  readonly movesFinished: number;
  readonly failures: number;
  /** Data bytes imported by full copies and by catch-up passes. */
  readonly rebuildBytes: number;
  readonly catchUpBytes: number;
}

/** One round's outcome per chunk. */
export interface MoverChunkResult {
  readonly chunk: ChunkId;
  readonly kind: "rebuild" | "catch-up";
  readonly ok: boolean;
  readonly bytesMoved: number;
  readonly error?: unknown;
}

type Body = Exclude<ChunkExportPiece, { kind: "version" }>;

export class Mover {
  readonly nodeId: NodeId;
  private readonly control: ClusterControl;
  private readonly replicas: ReplicaDirectory;
  private readonly limiter: RateLimiter;
  private readonly chunksInFlightMax: number;
  private readonly progressEveryBytes: number;
  private readonly logger: Logger;
  private readonly closing = new AbortController();
  private readonly busy = new Set<string>();
  private counters = {
    rebuilds: 0,
    catchUps: 0,
    movesFinished: 0,
    failures: 0,
    rebuildBytes: 0,
    catchUpBytes: 0,
  };
  private running: Promise<unknown> | undefined;
  private again = false;
  private unsubscribe: (() => void) | undefined;

  constructor(options: MoverOptions) {
    this.nodeId = options.nodeId;
    this.control = options.control;
    this.replicas = options.replicas;
    const clock = options.clock ?? systemClock;
    this.limiter = new RateLimiter(options.bytesPerSecond ?? MOVER_BYTES_PER_SECOND_DEFAULT, clock);
    this.chunksInFlightMax = checkInteger(
      options.chunksInFlightMax ?? MOVER_CHUNKS_IN_FLIGHT_DEFAULT,
      "chunksInFlightMax",
      { min: 1, max: MOVER_CHUNKS_IN_FLIGHT_MAX },
    );
    this.progressEveryBytes = checkInteger(
      options.progressEveryBytes ?? MOVER_PROGRESS_EVERY_BYTES,
      "progressEveryBytes",
      { min: 1 },
    );
    this.logger = options.logger ?? nullLogger;
  }

  stats(): MoverStats {
    return { ...this.counters };
  }

  /**
   * Runs whenever the map changes (coalesced: at most one round at a time, one more queued).
   * A failed chunk is retried at the next change of the map or `kick()`.
   */
  start(): void {
    if (this.unsubscribe !== undefined) return;
    this.unsubscribe = this.control.subscribe(() => this.kick());
    this.kick();
  }

  /** Asks for a round now (coalesced with one already running). */
  kick(): void {
    if (this.closing.signal.aborted) return;
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    this.running = this.runOnce()
      .catch((error: unknown) => this.logger.warn({ err: error }, "mover round failed"))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Resolves when no round is running (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running !== undefined) await this.running;
  }

  /** Cancels copies in progress and waits for them to stop. */
  async close(): Promise<void> {
    this.unsubscribe?.();
    this.closing.abort();
    await this.idle();
  }

  /** The work of this node now: replicas not in sync, with an in-sync source elsewhere. */
  pending(view: ClusterMapView = this.control.view()): Assignment[] {
    return assignmentsOf(view, this.nodeId).filter((a) => a.state !== "in-sync");
  }

  /** One round over the current assignments, `chunksInFlightMax` chunks at a time. */
  async runOnce(signal?: AbortSignal): Promise<MoverChunkResult[]> {
    const work = this.pending().filter((a) => !this.busy.has(`${a.volumeId}/${a.chunkIndex}`));
    const results: MoverChunkResult[] = [];
    const signals = [this.closing.signal, ...(signal === undefined ? [] : [signal])];
    const combined = AbortSignal.any(signals);
    // Every request of every copy listens to it (deadlines, cancellation): not a leak.
    setMaxListeners(0, combined);
    let next = 0;
    const worker = async () => {
      while (next < work.length && !combined.aborted) {
        const assignment = work[next++] as Assignment;
        results.push(await this.one(assignment, combined));
      }
    };
    await Promise.all(Array.from({ length: this.chunksInFlightMax }, worker));
    return results;
  }

  private async one(assignment: Assignment, signal: AbortSignal): Promise<MoverChunkResult> {
    const chunk = { volumeId: assignment.volumeId, chunkIndex: assignment.chunkIndex };
    const key = `${chunk.volumeId}/${chunk.chunkIndex}`;
    const kind = assignment.state === "filling" ? "rebuild" : "catch-up";
    this.busy.add(key);
    const moved = { bytes: 0 };
    try {
      if (kind === "rebuild") await this.rebuild(assignment, chunk, moved, signal);
      else {
        // Snapshots taken while it was stale were pinned only where the chunk was in sync.
        await this.copyPins(assignment, chunk, moved, signal);
        await this.catchUp(assignment, chunk, assignment.durableSeq, moved, signal);
      }
      await this.finishMoveIfTarget(chunk);
      if (kind === "rebuild") this.counters.rebuilds++;
      else this.counters.catchUps++;
      this.logger.info({ chunk, kind, bytesMoved: moved.bytes }, "replica in sync");
      return { chunk, kind, ok: true, bytesMoved: moved.bytes };
    } catch (error) {
      this.counters.failures++;
      this.logger.warn({ err: error, chunk, kind }, "replica copy failed; retried next round");
      return { chunk, kind, ok: false, bytesMoved: moved.bytes, error };
    } finally {
      this.busy.delete(key);
    }
  }

  /** In-sync replicas of the chunk on other live nodes, in placement order. */
  private sources(chunk: ChunkId): ChunkReplica[] {
    const view = this.control.view();
    const record = view.chunk(chunk.volumeId, chunk.chunkIndex);
    const out: ChunkReplica[] = [];
    for (const replica of record?.replicas ?? []) {
      if (replica.state !== "in-sync" || replica.nodeId === this.nodeId) continue;
      const node = view.node(replica.nodeId);
      if (node === undefined || !isAlive(node)) continue;
      out.push(this.replicas.replica(replica.nodeId));
    }
    if (out.length === 0) {
      throw new HesError("HES_UNAVAILABLE", `no live in-sync replica of chunk ${key(chunk)}`);
    }
    return out;
  }

  /** Tries each source in turn for a step that reads from one. */
  private async fromSources<T>(
    chunk: ChunkId,
    step: (source: ChunkReplica) => Promise<T>,
  ): Promise<T> {
    let last: unknown;
    for (const source of this.sources(chunk)) {
      try {
        return await step(source);
      } catch (error) {
        if (isHesError(error, "HES_ABORTED", "HES_FENCED")) throw error;
        last = error;
        this.logger.warn({ err: error, chunk, source: source.nodeId }, "copy source failed");
      }
    }
    throw last;
  }

  private async rebuild(
    assignment: Assignment,
    chunk: ChunkId,
    moved: { bytes: number },
    signal: AbortSignal,
  ): Promise<void> {
    const target = this.replicas.replica(this.nodeId);
    const epoch = assignment.epoch;
    // A leftover of an interrupted copy has no trustworthy version: start clean.
    if ((await target.version(chunk, { signal })) !== undefined) {
      await target.deleteChunk(chunk, { epoch });
    }
    // The snapshots first (each imported into the head, then pinned); the head copy follows.
    await this.copyPins(assignment, chunk, moved, signal);
    const startedAt = await this.fromSources(chunk, async (source) => {
      const chunkBytes = sizeOfChunk(this.control.view(), chunk);
      const total = dataBytes(await source.allocation(chunk, 0, chunkBytes, { signal }));
      const progress = this.progressReporter(chunk, total);
      let version: ChunkVersion | undefined;
      const pieces = this.metered(source.exportChunk(chunk, { signal }), signal, (piece, n) => {
        if (piece.kind === "version") version = piece;
        moved.bytes += n;
        this.counters.rebuildBytes += n;
        progress(moved.bytes);
      });
      await importParallel(target, chunk, pieces, epoch, signal);
      await progress(moved.bytes, true);
      return version;
    });
    // Writes that landed during the copy: everything changed after the version it began at.
    await this.catchUp(assignment, chunk, startedAt?.durableSeq ?? 0, moved, signal);
  }

  /**
   * Copies the blocks changed after `sinceSeq` on the source or on this replica, stores the
   * source's version, and reports the replica caught up. Repeats (bounded) while the map says
   * the in-sync replicas moved on meanwhile.
   */
  private async catchUp(
    assignment: Assignment,
    chunk: ChunkId,
    sinceSeq: number,
    moved: { bytes: number },
    signal: AbortSignal,
  ): Promise<void> {
    let since = sinceSeq;
    for (let pass = 1; ; pass++) {
      const durableSeq = await this.fromSources(chunk, (source) =>
        this.catchUpPass(assignment, chunk, source, since, moved, signal),
      );
      try {
        await this.control.propose(
          {
            kind: "reportReplicaCaughtUp",
            fields: { ...chunk, epoch: assignment.epoch, nodeId: this.nodeId, durableSeq },
          },
          { signal },
        );
        return;
      } catch (error) {
        // The in-sync replicas are ahead of the version seen: one more pass from it.
        if (!isHesError(error, "HES_INVALID_ARGUMENT") || pass >= MOVER_PASSES_MAX) throw error;
        since = durableSeq;
      }
    }
  }

  private async catchUpPass(
    assignment: Assignment,
    chunk: ChunkId,
    source: ChunkReplica,
    sinceSeq: number,
    moved: { bytes: number },
    signal: AbortSignal,
  ): Promise<number> {
    const target = this.replicas.replica(this.nodeId);
    const epoch = assignment.epoch;
    // Every write at or below the source's watermark is on it now, so on this replica after
    // the pass: the watermark is claimable even where the chunk's own last write is older.
    const record = this.control.view().chunk(chunk.volumeId, chunk.chunkIndex);
    const watermark = record?.replicas.find((r) => r.nodeId === source.nodeId)?.durableSeq ?? 0;
    const [sourceRuns, targetRuns] = await Promise.all([
      source.changedBlocks(chunk, { sinceSeq }, { signal }),
      target.changedBlocks(chunk, { sinceSeq }, { signal }),
    ]);
    let version: ChunkVersion | undefined;
    const count = (piece: ChunkExportPiece, n: number) => {
      if (piece.kind === "version") version = piece;
      moved.bytes += n;
      this.counters.catchUpBytes += n;
    };
    // Both imports are conditional, and their seqs raised to the current epoch's floor: a
    // block this replica holds from an older epoch and the source lacks was never
    // acknowledged and is replaced, while a write of the current owner that reached this
    // replica before the source (the volume writes here too) stays. Unconditional, the copy
    // undid such a write, and the replica was then reported caught up without it.
    const floor = epochFloor(epoch);
    // Blocks the source changed: its export since the watermark, with their own seqs.
    const changed = source.exportChunk(chunk, { sinceSeq, signal });
    const metered = this.metered(changed, signal, count);
    await importParallel(target, chunk, raised(metered, floor), epoch, signal);
    // Blocks only this replica changed (writes the source never acknowledged): the source's
    // content there, stamped with the watermark (the source's blocks are at or below it).
    const extra = subtractRuns(targetRuns, sourceRuns);
    if (extra.length > 0) {
      const pieces = this.sourceContent(source, chunk, extra, sinceSeq, epoch, signal);
      const meteredExtra = this.metered(pieces, signal, count);
      await importParallel(target, chunk, raised(meteredExtra, floor), epoch, signal);
    }
    // The version last: the copy above is durable before the replica claims it.
    const seen = version ?? (await source.version(chunk, { signal }));
    if (seen !== undefined) {
      await target.importChunk(chunk, once({ kind: "version", ...seen }), { epoch, signal });
    }
    return Math.max(seen?.durableSeq ?? 0, watermark);
  }

  /**
   * Gives this replica the chunk's snapshots it lacks (pins go only to in-sync replicas, so a
   * rebuilt replica has none and a stale one misses those taken meanwhile), oldest first, from
   * a source that holds each. Each snapshot's view is imported into the head and pinned; the
   * head is made right afterwards by the copy or catch-up that follows. A snapshot no source
   * holds, or one whose copy keeps being spoiled by writes, is logged and left for a later
   * round: never a wrong pin (each is checked block by block against the source's view).
   */
  private async copyPins(
    assignment: Assignment,
    chunk: ChunkId,
    moved: { bytes: number },
    signal: AbortSignal,
  ): Promise<void> {
    const view = this.control.view();
    const record = view.chunk(chunk.volumeId, chunk.chunkIndex);
    const volume = view.volume(chunk.volumeId);
    if (record === undefined || volume === undefined) return;
    const target = this.replicas.replica(this.nodeId);
    const wanted = volume.snapshots
      .filter((s) => s.createdAtIndex >= record.placedAtIndex)
      .sort((a, b) => a.snapshotId - b.snapshotId);
    for (const { snapshotId } of wanted) {
      if (await hasPin(target, chunk, snapshotId, signal)) continue;
      try {
        await this.fromSources(chunk, (source) =>
          this.copyPin(assignment, chunk, source, snapshotId, moved, signal),
        );
        this.logger.info({ chunk, snapshotId }, "snapshot pin copied");
      } catch (error) {
        if (isHesError(error, "HES_ABORTED", "HES_FENCED")) throw error;
        this.logger.warn({ err: error, chunk, snapshotId }, "snapshot pin not copied");
      }
    }
  }

  private async copyPin(
    assignment: Assignment,
    chunk: ChunkId,
    source: ChunkReplica,
    snapshotId: number,
    moved: { bytes: number },
    signal: AbortSignal,
  ): Promise<void> {
    const target = this.replicas.replica(this.nodeId);
    const epoch = assignment.epoch;
    const chunkBytes = sizeOfChunk(this.control.view(), chunk);
    for (let attempt = 1; attempt <= MOVER_PIN_COPY_ATTEMPTS_MAX; attempt++) {
      const expected = new Map<number, string>();
      const pieces = this.metered(
        source.exportChunk(chunk, { snapshotId, signal }),
        signal,
        (_, n) => {
          moved.bytes += n;
          this.counters.rebuildBytes += n;
        },
      );
      // Unconditional: the head must equal the snapshot's view when pinned. (A follower write
      // that reached the head before its source is undone here: see the README's limits.)
      const view = viewOf(pieces, expected);
      await importParallel(target, chunk, view, epoch, signal, false);
      // Blocks the head holds that the snapshot does not: holes, so the pin lacks them too.
      const head = await target.allocation(chunk, 0, chunkBytes, { signal });
      const extra = head.flatMap((run) =>
        run.state === "hole" ? [] : blocksOf(run).filter((b) => !expected.has(b)),
      );
      const holes: ChunkExportPiece[] = extra.map((b) => ({
        kind: "hole",
        offsetBytes: b * REPLICA_BLOCK_BYTES,
        lengthBytes: REPLICA_BLOCK_BYTES,
        seq: 1,
      }));
      if (holes.length > 0) {
        await importParallel(target, chunk, iterate(holes), epoch, signal, false);
      }
      await target.pinSnapshot(chunk, snapshotId, { epoch });
      const got = new Map<number, string>();
      for await (const _ of viewOf(target.exportChunk(chunk, { snapshotId, signal }), got)) {
        // drained: viewOf records each block's state and seq
      }
      if (sameView(expected, got)) return;
      // A write landed between the import and the pin: release it and try again.
      await target.releaseSnapshot(chunk, snapshotId, { epoch });
    }
    throw new HesError(
      "HES_BUSY",
      `snapshot ${snapshotId} of chunk ${key(chunk)}: ` +
        `writes spoiled ${MOVER_PIN_COPY_ATTEMPTS_MAX} copies`,
    );
  }

  /** The source's current content over `runs` as export pieces (data read, zeroes as such). */
  private async *sourceContent(
    source: ChunkReplica,
    chunk: ChunkId,
    runs: readonly ChunkRun[],
    seq: number,
    epoch: number,
    signal: AbortSignal,
  ): AsyncGenerator<Body> {
    const stamp = Math.max(1, seq);
    for (const run of runs) {
      const states = await source.allocation(chunk, run.offsetBytes, run.lengthBytes, { signal });
      for (const part of states) {
        if (part.state !== "data") {
          yield {
            kind: part.state,
            offsetBytes: part.offsetBytes,
            lengthBytes: part.lengthBytes,
            seq: stamp,
          };
          continue;
        }
        for (let done = 0; done < part.lengthBytes; done += REPLICA_IO_BYTES_MAX) {
          const n = Math.min(REPLICA_IO_BYTES_MAX, part.lengthBytes - done);
          const offsetBytes = part.offsetBytes + done;
          const data = await source.read(chunk, offsetBytes, n, { epoch, signal });
          const seqs = new Float64Array(n / REPLICA_BLOCK_BYTES).fill(stamp);
          yield { kind: "data", offsetBytes, data, seqs };
        }
      }
    }
  }

  /** Passes pieces through the node's token bucket, counting data bytes. */
  private async *metered(
    pieces: AsyncIterable<ChunkExportPiece>,
    signal: AbortSignal,
    onPiece: (piece: ChunkExportPiece, dataBytes: number) => void,
  ): AsyncGenerator<ChunkExportPiece> {
    for await (const piece of pieces) {
      if (piece.kind === "version") {
        onPiece(piece, 0); // withheld: the caller stores it last
        continue;
      }
      const n = piece.kind === "data" ? piece.data.byteLength : 0;
      await this.limiter.take(n, signal);
      onPiece(piece, n);
      yield piece;
    }
  }

  /** Progress of a filling replica to the map every `progressEveryBytes` (never awaited
   * inline except at the end: the copy does not wait for Raft). */
  private progressReporter(chunk: ChunkId, bytesTotal: number) {
    let reported = 0;
    let last: Promise<unknown> = Promise.resolve();
    return (bytesDone: number, final = false): Promise<unknown> => {
      if (!final && bytesDone - reported < this.progressEveryBytes) return last;
      reported = bytesDone;
      const entry = {
        ...chunk,
        nodeId: this.nodeId,
        bytesDone: Math.min(bytesDone, Math.max(bytesTotal, bytesDone)),
        bytesTotal: Math.max(bytesTotal, bytesDone),
      };
      last = this.control
        .propose({ kind: "reportReplicaProgress", fields: { entries: [entry] } })
        .catch((error: unknown) => this.logger.debug({ err: error, chunk }, "progress not sent"));
      return last;
    };
  }

  private async finishMoveIfTarget(chunk: ChunkId): Promise<void> {
    const record = this.control.view().chunk(chunk.volumeId, chunk.chunkIndex);
    if (record === undefined || record.moveToNodeId !== this.nodeId) return;
    await this.control.propose({ kind: "finishMove", fields: { ...chunk } });
    this.counters.movesFinished++;
  }
}

function key(chunk: ChunkId): string {
  return `${chunk.volumeId}/${chunk.chunkIndex}`;
}

function sizeOfChunk(view: ClusterMapView, chunk: ChunkId): number {
  const volume = view.volume(chunk.volumeId);
  if (volume === undefined) throw new HesError("HES_NOT_FOUND", `volume ${chunk.volumeId} is gone`);
  return volume.chunkSizeBytes;
}

function dataBytes(runs: readonly ChunkRun[]): number {
  let total = 0;
  for (const run of runs) if (run.state === "data") total += run.lengthBytes;
  return total;
}

/** The lowest seq of epoch `epoch`: every write of the owner holding it is above. */
function epochFloor(epoch: number): number {
  return epoch >= 1 ? volumeSeq(epoch, 1) - 1 : 0;
}

/** The pieces with every seq raised to at least `floor`. */
async function* raised(
  pieces: AsyncIterable<ChunkExportPiece>,
  floor: number,
): AsyncGenerator<ChunkExportPiece> {
  for await (const piece of pieces) {
    if (piece.kind === "version") yield piece;
    else if (piece.kind === "data") {
      yield { ...piece, seqs: piece.seqs.map((seq) => Math.max(seq, floor)) };
    } else yield { ...piece, seq: Math.max(piece.seq, floor) };
  }
}

/**
 * Applies pieces (disjoint block ranges, version withheld) as several imports in flight: the
 * store makes one import's pieces durable one after another, so a single stream is bound to
 * one write at a time (and scattered 4 KiB blocks to one sync each). Batches of ≤ 1 MiB or
 * ≤ MOVER_IMPORT_BATCH_PIECES pieces; ≤ MOVER_IMPORTS_IN_FLIGHT_MAX calls and ≤
 * MOVER_IMPORT_BYTES_IN_FLIGHT_MAX data bytes at once; the first failure stops the copy.
 * Conditional (`keepNewer`, see ReplicaImportOptions) unless told otherwise: the volume writes
 * to this replica meanwhile, and a copy must not undo a write that got here first.
 */
async function importParallel(
  target: ChunkReplica,
  chunk: ChunkId,
  pieces: AsyncIterable<ChunkExportPiece>,
  epoch: number,
  signal: AbortSignal,
  keepNewer = true,
): Promise<void> {
  const inFlight = new Set<Promise<unknown>>();
  let inFlightBytes = 0;
  let failure: unknown;
  let batch: ChunkExportPiece[] = [];
  let batchBytes = 0;
  const flush = async () => {
    const bytes = batchBytes;
    const p = target.importChunk(chunk, iterate(batch), { epoch, keepNewer, signal });
    batch = [];
    batchBytes = 0;
    inFlightBytes += bytes;
    inFlight.add(p);
    const done = () => {
      inFlight.delete(p);
      inFlightBytes -= bytes;
    };
    p.then(done, (error: unknown) => {
      done();
      failure ??= error;
    });
    while (
      failure === undefined &&
      (inFlight.size >= MOVER_IMPORTS_IN_FLIGHT_MAX ||
        inFlightBytes >= MOVER_IMPORT_BYTES_IN_FLIGHT_MAX)
    ) {
      await Promise.race(inFlight).catch(() => {});
    }
  };
  for await (const piece of pieces) {
    if (failure !== undefined) break;
    batch.push(piece);
    if (piece.kind === "data") batchBytes += piece.data.byteLength;
    if (batchBytes >= MOVER_IMPORT_BATCH_BYTES || batch.length >= MOVER_IMPORT_BATCH_PIECES) {
      await flush();
    }
  }
  if (batch.length > 0 && failure === undefined) await flush();
  await Promise.allSettled([...inFlight]);
  if (failure !== undefined) throw failure;
}

/**
 * Passes a view's pieces through without its version (the chunk's own version is not the
 * snapshot's), recording each block's content identity: "d<seq>" for data, "z" for zeroes;
 * holes and unwritten blocks are absent (both read as zeroes without a record to match).
 */
async function* viewOf(
  pieces: AsyncIterable<ChunkExportPiece>,
  into: Map<number, string>,
): AsyncGenerator<ChunkExportPiece> {
  for await (const piece of pieces) {
    if (piece.kind === "version") continue;
    const first = piece.offsetBytes / REPLICA_BLOCK_BYTES;
    if (piece.kind === "data") {
      for (let i = 0; i < piece.seqs.length; i++) into.set(first + i, `d${piece.seqs[i]}`);
    } else if (piece.kind === "zero") {
      for (let i = 0; i < piece.lengthBytes / REPLICA_BLOCK_BYTES; i++) into.set(first + i, "z");
    }
    yield piece;
  }
}

function blocksOf(run: ChunkRun): number[] {
  const first = run.offsetBytes / REPLICA_BLOCK_BYTES;
  return Array.from({ length: run.lengthBytes / REPLICA_BLOCK_BYTES }, (_, i) => first + i);
}

function sameView(a: ReadonlyMap<number, string>, b: ReadonlyMap<number, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [block, state] of a) if (b.get(block) !== state) return false;
  return true;
}

/** Whether the replica holds snapshot `snapshotId` of the chunk. */
async function hasPin(
  replica: ChunkReplica,
  chunk: ChunkId,
  snapshotId: number,
  signal: AbortSignal,
): Promise<boolean> {
  try {
    await replica.allocation(chunk, 0, REPLICA_BLOCK_BYTES, { snapshotId, signal });
    return true;
  } catch (error) {
    if (isHesError(error, "HES_NOT_FOUND")) return false;
    throw error;
  }
}

async function* iterate<T>(items: readonly T[]): AsyncGenerator<T> {
  yield* items;
}

async function* once<T>(item: T): AsyncGenerator<T> {
  yield item;
}

/** Byte ranges of `a` not covered by `b` (both sorted, non-overlapping; states dropped). */
export function subtractRuns(a: readonly ChunkRun[], b: readonly ChunkRun[]): ChunkRun[] {
  const out: ChunkRun[] = [];
  let j = 0;
  for (const run of a) {
    let start = run.offsetBytes;
    const end = run.offsetBytes + run.lengthBytes;
    while (j < b.length && (b[j] as ChunkRun).offsetBytes + (b[j] as ChunkRun).lengthBytes <= start)
      j++;
    for (let k = j; k < b.length && start < end; k++) {
      const cut = b[k] as ChunkRun;
      if (cut.offsetBytes >= end) break;
      if (cut.offsetBytes > start)
        out.push({ offsetBytes: start, lengthBytes: cut.offsetBytes - start, state: run.state });
      start = Math.max(start, cut.offsetBytes + cut.lengthBytes);
    }
    if (start < end) out.push({ offsetBytes: start, lengthBytes: end - start, state: run.state });
  }
  return out;
}
