/**
 * The scrubber: compares the per-block crc32c of a chunk's in-sync replicas, range by range, at
 * a bounded rate, and repairs a replica whose block fails its checksum (HES_CORRUPTION) or
 * differs from the agreed value (the majority; on a tie the replica with the highest version)
 * by importing the good replica's content for just those blocks.
 *
 * Each chunk is scrubbed by one node: the first live in-sync replica in placement order, so a
 * cluster does not compare every chunk once per replica.
 *
 * Writes race with a comparison: a range is compared only when every replica reports the same
 * version before and after reading its checksums; otherwise it is skipped (counted) and
 * compared next round. A corrupt block is repaired regardless (it cannot be read anyway).
 */
import {
  type Clock,
  checkInteger,
  isHesError,
  type Logger,
  type NodeId,
  nullLogger,
  systemClock,
  type Timer,
} from "@hes/base";
import type { ChunkExportPiece, ChunkId, ChunkVersion } from "@hes/extent-store";
import { type ChunkRecord, type ClusterMapView, isAlive } from "../cluster-map/model.js";
import type { ChunkReplica, ClusterControl, ReplicaDirectory } from "../contracts.js";
import {
  REPLICA_BLOCK_BYTES,
  SCRUB_BYTES_PER_SECOND_DEFAULT,
  SCRUB_RANGE_BYTES,
} from "./limits.js";
import { RateLimiter } from "./rate-limiter.js";

/** Options of {@link Scrubber}. */
export interface ScrubberOptions {
  readonly nodeId: NodeId;
  readonly control: ClusterControl;
  readonly replicas: ReplicaDirectory;
  /** Checksum reads per second over all replicas (bytes/s, 0 = unlimited). */
  readonly bytesPerSecond?: number;
  /** Pause between full rounds when started (default 24 h). */
  readonly intervalMs?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** Counters since the scrubber was made. */
export interface ScrubStats {
  readonly rounds: number;
  readonly chunksScrubbed: number;
  readonly bytesCompared: number;
  /** Blocks that failed their checksum on a replica. */
  readonly corruptBlocks: number;
  /** Blocks whose checksum differed from the agreed one. */
  readonly divergentBlocks: number;
  readonly blocksRepaired: number;
  /** Ranges skipped because writes changed a replica during the comparison. */
  readonly rangesSkipped: number;
  readonly failures: number;
}

const DAY_MS = 24 * 3600 * 1000;

export class Scrubber {
  private readonly limiter: RateLimiter;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly intervalMs: number;
  private readonly closing = new AbortController();
  private counters = {
    rounds: 0,
    chunksScrubbed: 0,
    bytesCompared: 0,
    corruptBlocks: 0,
    divergentBlocks: 0,
    blocksRepaired: 0,
    rangesSkipped: 0,
    failures: 0,
  };
  private timer: Timer | undefined;
  private running: Promise<unknown> | undefined;

  constructor(private readonly options: ScrubberOptions) {
    this.clock = options.clock ?? systemClock;
    this.limiter = new RateLimiter(
      options.bytesPerSecond ?? SCRUB_BYTES_PER_SECOND_DEFAULT,
      this.clock,
    );
    this.intervalMs = checkInteger(options.intervalMs ?? DAY_MS, "intervalMs", { min: 1 });
    this.logger = options.logger ?? nullLogger;
  }

  stats(): ScrubStats {
    return { ...this.counters };
  }

  /** Scrubs every `intervalMs` until closed. */
  start(): void {
    if (this.timer !== undefined || this.closing.signal.aborted) return;
    this.timer = this.clock.setTimer(this.intervalMs, () => {
      this.timer = undefined;
      this.running = this.runOnce()
        .catch((error: unknown) => this.logger.warn({ err: error }, "scrub round failed"))
        .finally(() => {
          this.running = undefined;
          this.start();
        });
    });
  }

  async close(): Promise<void> {
    this.closing.abort();
    this.timer?.cancel();
    this.timer = undefined;
    await this.running;
  }

  /** The chunks this node scrubs: those where it is the first live in-sync replica. */
  chunksToScrub(view: ClusterMapView = this.options.control.view()): ChunkRecord[] {
    const out: ChunkRecord[] = [];
    for (const chunk of view.chunksOnNode(this.options.nodeId)) {
      const first = chunk.replicas.find((r) => {
        const node = view.node(r.nodeId);
        return r.state === "in-sync" && node !== undefined && isAlive(node);
      });
      if (first?.nodeId === this.options.nodeId) out.push(chunk);
    }
    return out.sort((a, b) => a.volumeId - b.volumeId || a.chunkIndex - b.chunkIndex);
  }

  /** One round over this node's chunks. */
  async runOnce(signal?: AbortSignal): Promise<void> {
    const combined = AbortSignal.any([this.closing.signal, ...(signal ? [signal] : [])]);
    for (const record of this.chunksToScrub()) {
      if (combined.aborted) break;
      try {
        await this.scrubChunk(
          { volumeId: record.volumeId, chunkIndex: record.chunkIndex },
          combined,
        );
      } catch (error) {
        if (isHesError(error, "HES_ABORTED")) throw error;
        this.counters.failures++;
        this.logger.warn({ err: error, chunk: record }, "scrub of a chunk failed");
      }
    }
    this.counters.rounds++;
  }

  /** Compares and repairs one chunk across its live in-sync replicas. */
  async scrubChunk(chunk: ChunkId, signal?: AbortSignal): Promise<void> {
    const view = this.options.control.view();
    const record = view.chunk(chunk.volumeId, chunk.chunkIndex);
    const volume = view.volume(chunk.volumeId);
    if (record === undefined || volume === undefined) return;
    const replicas = record.replicas
      .filter((r) => r.state === "in-sync" && isAlive(view.node(r.nodeId) ?? deadNode))
      .map((r) => this.options.replicas.replica(r.nodeId));
    if (replicas.length < 2) return;
    const ctx = { chunk, replicas, epoch: volume.epoch, signal };
    for (let offset = 0; offset < volume.chunkSizeBytes; offset += SCRUB_RANGE_BYTES) {
      const length = Math.min(SCRUB_RANGE_BYTES, volume.chunkSizeBytes - offset);
      await this.scrubRange(ctx, offset, length);
    }
    this.counters.chunksScrubbed++;
  }

  private async scrubRange(ctx: ScrubContext, offset: number, length: number): Promise<void> {
    const { chunk, replicas, signal } = ctx;
    const opts = signal === undefined ? {} : { signal };
    const before = await Promise.all(replicas.map((r) => r.version(chunk, opts)));
    const sums: Sums[] = [];
    for (const replica of replicas) {
      await this.limiter.take(length, signal);
      sums.push(await this.checksumsOf(replica, chunk, offset, length, signal));
    }
    const after = await Promise.all(replicas.map((r) => r.version(chunk, opts)));
    const quiet = before.every((v, i) => sameVersion(v, after[i]) && sameVersion(v, before[0]));
    this.counters.bytesCompared += length * replicas.length;
    const blocks = length / REPLICA_BLOCK_BYTES;
    const bad: number[][] = replicas.map(() => []);
    let differs = false;
    for (let b = 0; b < blocks; b++) {
      const agreed = agreedValue(sums, after, b);
      if (agreed === undefined) continue;
      sums.forEach((s, i) => {
        const value = s?.[b];
        if (value === undefined || value === agreed) return;
        if (value < 0) {
          this.counters.corruptBlocks++;
          bad[i]?.push(b);
        } else if (quiet) {
          this.counters.divergentBlocks++;
          bad[i]?.push(b);
        } else {
          differs = true; // a write in flight, most likely: compare again next round
        }
      });
    }
    if (differs) this.counters.rangesSkipped++;
    for (let i = 0; i < replicas.length; i++) {
      const blocksBad = bad[i] as number[];
      if (blocksBad.length === 0) continue;
      const good = this.goodReplica(sums, after, blocksBad, i);
      if (good === undefined) continue;
      await this.repair(
        ctx,
        replicas[i] as ChunkReplica,
        replicas[good] as ChunkReplica,
        offset,
        blocksBad,
        after[good],
      );
    }
  }

  /**
   * Per-block checksums of one replica; a block that fails its checksum is marked -1 (found by
   * asking block by block once the range as a whole failed). undefined: unreachable.
   */
  private async checksumsOf(
    replica: ChunkReplica,
    chunk: ChunkId,
    offset: number,
    length: number,
    signal: AbortSignal | undefined,
  ): Promise<Sums> {
    const opts = signal === undefined ? {} : { signal };
    try {
      return await replica.blockChecksums(chunk, offset, length, opts);
    } catch (error) {
      if (!isHesError(error, "HES_CORRUPTION")) {
        this.logger.warn({ err: error, chunk, node: replica.nodeId }, "scrub: replica unreadable");
        return undefined;
      }
    }
    const out = new Float64Array(length / REPLICA_BLOCK_BYTES);
    for (let b = 0; b < out.length; b++) {
      try {
        const one = await replica.blockChecksums(
          chunk,
          offset + b * REPLICA_BLOCK_BYTES,
          REPLICA_BLOCK_BYTES,
          opts,
        );
        out[b] = one[0] as number;
      } catch (error) {
        if (!isHesError(error, "HES_CORRUPTION")) throw error;
        out[b] = -1;
      }
    }
    return out;
  }

  private goodReplica(
    sums: readonly Sums[],
    versions: readonly (ChunkVersion | undefined)[],
    blocks: readonly number[],
    exclude: number,
  ): number | undefined {
    for (let i = 0; i < sums.length; i++) {
      const s = sums[i];
      if (i === exclude || s === undefined) continue;
      if (blocks.every((b) => s[b] === agreedValue(sums, versions, b))) return i;
    }
    return undefined;
  }

  /** Imports the good replica's content of `blocks` (indexes within the range) into `bad`. */
  private async repair(
    ctx: ScrubContext,
    bad: ChunkReplica,
    good: ChunkReplica,
    offset: number,
    blocks: readonly number[],
    goodVersion: ChunkVersion | undefined,
  ): Promise<void> {
    const { chunk, epoch, signal } = ctx;
    const seq = Math.max(1, goodVersion?.durableSeq ?? 1);
    const opts = signal === undefined ? {} : { signal };
    const pieces: ChunkExportPiece[] = [];
    for (const run of blockRuns(blocks)) {
      const at = offset + run.first * REPLICA_BLOCK_BYTES;
      const n = run.count * REPLICA_BLOCK_BYTES;
      for (const part of await good.allocation(chunk, at, n, opts)) {
        if (part.state !== "data") {
          pieces.push({
            kind: part.state,
            offsetBytes: part.offsetBytes,
            lengthBytes: part.lengthBytes,
            seq,
          });
          continue;
        }
        const data = await good.read(chunk, part.offsetBytes, part.lengthBytes, { epoch, ...opts });
        const seqs = new Float64Array(part.lengthBytes / REPLICA_BLOCK_BYTES).fill(seq);
        pieces.push({ kind: "data", offsetBytes: part.offsetBytes, data, seqs });
      }
    }
    await bad.importChunk(chunk, iterate(pieces), { epoch, ...opts });
    this.counters.blocksRepaired += blocks.length;
    this.logger.warn(
      { chunk, node: bad.nodeId, from: good.nodeId, blocks: blocks.length, offsetBytes: offset },
      "scrub repaired blocks of a replica",
    );
  }
}

/** Checksums of a range on one replica (-1: the block failed its checksum), or unreachable. */
type Sums = ArrayLike<number> | undefined;

interface ScrubContext {
  readonly chunk: ChunkId;
  readonly replicas: readonly ChunkReplica[];
  readonly epoch: number;
  readonly signal: AbortSignal | undefined;
}

const deadNode = { state: "down" } as Parameters<typeof isAlive>[0];

function sameVersion(a: ChunkVersion | undefined, b: ChunkVersion | undefined): boolean {
  return a?.epoch === b?.epoch && a?.durableSeq === b?.durableSeq;
}

/**
 * The value a block should have: the most common valid checksum; on a tie, that of the replica
 * with the highest durable seq. undefined when no replica has a valid value.
 */
function agreedValue(
  sums: readonly Sums[],
  versions: readonly (ChunkVersion | undefined)[],
  block: number,
): number | undefined {
  const votes = new Map<number, { count: number; seq: number }>();
  sums.forEach((s, i) => {
    const value = s?.[block];
    if (value === undefined || value < 0) return;
    const vote = votes.get(value) ?? { count: 0, seq: -1 };
    vote.count++;
    vote.seq = Math.max(vote.seq, versions[i]?.durableSeq ?? 0);
    votes.set(value, vote);
  });
  let best: { value: number; count: number; seq: number } | undefined;
  for (const [value, vote] of votes) {
    const better =
      best === undefined ||
      vote.count > best.count ||
      (vote.count === best.count && vote.seq > best.seq);
    if (better) best = { value, ...vote };
  }
  return best?.value;
}

function blockRuns(blocks: readonly number[]): { first: number; count: number }[] {
  const runs: { first: number; count: number }[] = [];
  for (const b of blocks) {
    const last = runs.at(-1);
    if (last !== undefined && last.first + last.count === b) last.count++;
    else runs.push({ first: b, count: 1 });
  }
  return runs;
}

async function* iterate<T>(items: readonly T[]): AsyncGenerator<T> {
  yield* items;
}
