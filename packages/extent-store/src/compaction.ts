/**
 * Background compaction: copies the live blocks of a mostly-dead segment to the head of the log
 * (as "place" records, conditional on each block still living where it was read), after which
 * the segment holds nothing live and is freed by the next index checkpoint.
 *
 * When it runs (see {@link compactionMode}):
 * - urgent: writers wait for space, or only the reserve is left: any victim, no rate limit;
 * - catch-up: used space passed 1.4 × live data: victims under the ratio bound, no rate limit
 *   (keeps space amplification under 1.5 × at the cost of foreground latency);
 * - pressure: used space passed COMPACTION_START_AMPLIFICATION × live: rate-limited;
 * - idle: no foreground write for COMPACTION_IDLE_MS: rate-limited tidying.
 * Rate-limited means at most `bytesPerSecond` copied, paced on the injected clock.
 *
 * Snapshot pins keep blocks live (a block is copied while any view refers to it, and the copy
 * is recorded for every such view); released snapshots' blocks are dead and are not copied.
 */

import { type Clock, type Disk, HesError, isHesError, type Logger } from "@hes/base";
import { crc32c } from "@node-rs/crc32";
import type { ChunkIndex, DiskIndex } from "./chunk-index.js";
import type { PlaceRecord } from "./format.js";
import {
  BLOCK_SIZE_BYTES,
  COMPACTION_IDLE_MS,
  COMPACTION_PIECE_BYTES,
  COMPACTION_RESERVE_SEGMENTS,
  COMPACTION_START_AMPLIFICATION,
  COMPACTION_VICTIM_LIVE_RATIO_MAX,
  PAGE_BLOCKS,
} from "./limits.js";
import { readHeaderAt, SegmentReader } from "./segment-reader.js";
import { SEGMENT_SEALED, type SegmentTable } from "./segments.js";

/** Used/live above which compaction stops pacing itself. */
export const COMPACTION_CATCH_UP_AMPLIFICATION = 1.4;

/** What compaction needs from its disk store. */
export interface CompactionHost {
  readonly disk: Disk;
  readonly table: SegmentTable;
  readonly index: DiskIndex;
  readonly crcSeed: number;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly bytesPerSecond: number;
  /** Largest record data (compaction gathers at most this much per append). */
  readonly writeBytesMax: number;
  /** Foreground writes are waiting for free segments. */
  readonly spaceBlocked: boolean;
  /** Clock time of the last foreground record. */
  readonly lastForegroundMs: number;
  /** Sequence of the segment of the last durable checkpoint position. */
  readonly checkpointSeq: number;
  /** Appends place records; resolves when durable and applied. */
  appendInternal(items: readonly PlacedRun[]): Promise<void>;
  /** Keeps `segment` from being freed (and reused) while it is read; returns the release. */
  pinSegment(segment: number): () => void;
  /** Checkpoints the index (which frees emptied segments). */
  requestCheckpoint(): Promise<void>;
  /** A pass found nothing more to do (writers waiting for space re-check). */
  compactionIdle(): void;
}

/** One place record with its data. */
export interface PlacedRun {
  readonly record: PlaceRecord;
  readonly data: readonly Uint8Array[];
}

export type CompactionMode = "urgent" | "catch-up" | "pressure" | "idle" | "none";

/** Decides how hard compaction should work now. Pure. */
export function compactionMode(
  table: SegmentTable,
  spaceBlocked: boolean,
  idle: boolean,
): CompactionMode {
  if (spaceBlocked || table.freeCount() <= COMPACTION_RESERVE_SEGMENTS + 1) return "urgent";
  const used = table.usedBytes();
  const slack = table.geometry.segmentSizeBytes;
  const live = table.liveBytes();
  if (used > COMPACTION_CATCH_UP_AMPLIFICATION * live + slack) return "catch-up";
  if (used > COMPACTION_START_AMPLIFICATION * live + slack) return "pressure";
  return idle ? "idle" : "none";
}

/** The sealed segment with the lowest live ratio under `ratioMax`, excluding `skip`. Pure. */
export function chooseVictim(
  table: SegmentTable,
  ratioMax: number,
  skip: ReadonlySet<number>,
): number | undefined {
  let best: number | undefined;
  let bestRatio = ratioMax;
  for (let i = 0; i < table.states.length; i++) {
    if (table.states[i] !== SEGMENT_SEALED || skip.has(i)) continue;
    const fill = table.fillBytes[i] as number;
    const live = (table.liveBlocks[i] as number) * BLOCK_SIZE_BYTES;
    if (live === 0 || fill === 0) continue; // nothing to copy: the next checkpoint frees it
    const ratio = live / fill;
    if (ratio < bestRatio) {
      best = i;
      bestRatio = ratio;
    }
  }
  return best;
}

interface Gathered {
  readonly chunk: ChunkIndex;
  readonly block: number;
  readonly source: number;
  readonly crc: number;
  readonly seq: number;
}

/** The background compactor of one disk. */
export class Compactor {
  private readonly host: CompactionHost;
  private readonly stop = new AbortController();
  private readonly unreadable = new Set<number>();
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private nextAllowedMs = 0;
  private pacing: AbortController | undefined;
  /** Bytes copied so far (for stats and tests). */
  copiedBytes = 0;
  running = false;

  constructor(host: CompactionHost) {
    this.host = host;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Something changed (a batch was applied, a writer is blocked): re-evaluate. */
  kick(): void {
    // Writers blocked for space: stop pacing, copy at full speed.
    if (this.host.spaceBlocked) this.pacing?.abort();
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  async close(): Promise<void> {
    this.stop.abort();
    this.kick();
    await this.loop;
  }

  private async run(): Promise<void> {
    while (!this.stop.signal.aborted) {
      try {
        const worked = await this.step();
        if (worked) continue;
      } catch (error) {
        if (this.stop.signal.aborted) return;
        if (isHesError(error, "HES_DISK_FAILED", "HES_CLOSED")) return;
        this.host.logger.error({ err: error }, "compaction pass failed");
      }
      this.host.compactionIdle();
      await this.sleepUntilKicked();
    }
  }

  /** One unit of work; false when there was nothing to do. */
  private async step(): Promise<boolean> {
    const { table, clock } = this.host;
    const idle = clock.nowMs() - this.host.lastForegroundMs >= COMPACTION_IDLE_MS;
    const mode = compactionMode(table, this.host.spaceBlocked, idle);
    if (this.awaitingCheckpoint()) {
      await this.host.requestCheckpoint();
      return true;
    }
    if (mode === "none") return false;
    if (mode === "urgent" && !this.canFreeSpace()) return false;
    const ratioMax = mode === "urgent" ? 1 : COMPACTION_VICTIM_LIVE_RATIO_MAX;
    const victim = chooseVictim(table, ratioMax, this.unreadable);
    if (victim === undefined) return false;
    this.running = true;
    try {
      await this.compact(victim, mode === "pressure" || mode === "idle");
    } finally {
      this.running = false;
    }
    return true;
  }

  /** True when compaction (or a checkpoint, or a reader finishing) can still free a segment. */
  canFreeSpace(): boolean {
    const { table } = this.host;
    for (let i = 0; i < table.states.length; i++) {
      if (table.states[i] === SEGMENT_SEALED && table.liveBlocks[i] === 0) return true;
    }
    // Copying every sealed segment's live data must net at least one whole segment.
    let reclaimable = 0;
    for (let i = 0; i < table.states.length; i++) {
      if (table.states[i] !== SEGMENT_SEALED || this.unreadable.has(i)) continue;
      reclaimable +=
        (table.fillBytes[i] as number) - (table.liveBlocks[i] as number) * BLOCK_SIZE_BYTES;
    }
    return reclaimable >= table.geometry.segmentSizeBytes;
  }

  /** Sealed, empty segments that only a checkpoint (past them) can free. */
  private awaitingCheckpoint(): boolean {
    const { table } = this.host;
    for (let i = 0; i < table.states.length; i++) {
      if (
        table.states[i] === SEGMENT_SEALED &&
        table.liveBlocks[i] === 0 &&
        (table.seqs[i] as number) >= this.host.checkpointSeq
      ) {
        return true;
      }
    }
    return false;
  }

  private sleepUntilKicked(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = this.host.clock.setTimer(COMPACTION_IDLE_MS, () => this.kick());
      this.wake = () => {
        timer.cancel();
        resolve();
      };
      if (this.stop.signal.aborted) this.kick();
    });
  }

  /** Copies the live blocks of `segment` forward. */
  private async compact(segment: number, paced: boolean): Promise<void> {
    const { disk, table } = this.host;
    const pieceBytes = Math.min(COMPACTION_PIECE_BYTES, this.host.writeBytesMax);
    const reader = await SegmentReader.create(disk, COMPACTION_PIECE_BYTES);
    const gather = await disk.buffers.acquire(pieceBytes);
    // Blocks of the victim may all die while it is read; it must not be reused meanwhile, or
    // the reads below would see another generation's data.
    const unpin = this.host.pinSegment(segment);
    try {
      reader.moveTo(table.startBytes(segment), table.geometry.segmentSizeBytes);
      const ok = await this.copySegment(segment, reader, gather, paced);
      if (!ok) return;
    } finally {
      unpin();
      reader.release();
      disk.buffers.release(gather);
    }
    if (table.liveBlocks[segment] !== 0) {
      this.host.logger.warn(
        { segment, live: table.liveBlocks[segment] },
        "compaction: segment still holds live blocks after copying; will retry",
      );
      return;
    }
    await this.host.requestCheckpoint();
  }

  private async copySegment(
    segment: number,
    reader: SegmentReader,
    gather: Uint8Array,
    paced: boolean,
  ): Promise<boolean> {
    const { table, index, crcSeed } = this.host;
    const seq = table.seqs[segment] as number;
    const fill = table.fillBytes[segment] as number;
    const segmentSize = table.geometry.segmentSizeBytes;
    const pending: Gathered[] = [];
    for (let offset = 0; offset < fill && !this.stop.signal.aborted; ) {
      const header = await readHeaderAt(reader, offset, segmentSize, crcSeed);
      if ("invalid" in header || header.segmentSeq !== seq) {
        this.markUnreadable(segment, offset, "invalid" in header ? header.invalid : "stale");
        return false;
      }
      const dataOffset = offset + header.headerBlocks * BLOCK_SIZE_BYTES;
      const dataAddress = (table.startBytes(segment) + dataOffset) / BLOCK_SIZE_BYTES;
      for (const record of header.records) {
        if (record.kind !== "write" && record.kind !== "place") continue;
        for (let i = 0; i < record.blockCount; i++) {
          const chunk = index.get(record.volumeId, record.chunkIndex);
          const block = record.kind === "write" ? record.firstBlock + i : record.blocks[i];
          const source = dataAddress + record.dataIndex + i;
          const entry = chunk && index.liveEntry(chunk, block as number, source);
          if (chunk === undefined || entry === undefined) continue;
          const at = pending.length * BLOCK_SIZE_BYTES;
          const bytes = await reader.read(
            dataOffset + (record.dataIndex + i) * BLOCK_SIZE_BYTES,
            4096,
          );
          if (crc32c(bytes) !== entry.crc) {
            this.host.logger.error(
              { segment, chunk: chunk.key, block, source },
              "compaction: block failed its checksum; copied as is (reads keep failing it)",
            );
          }
          gather.set(bytes, at);
          pending.push({ chunk, block: block as number, source, crc: entry.crc, seq: entry.seq });
          if (pending.length * BLOCK_SIZE_BYTES === gather.byteLength) {
            await this.flush(pending, gather, paced);
          }
        }
      }
      offset += (header.headerBlocks + header.dataBlocks) * BLOCK_SIZE_BYTES;
    }
    await this.flush(pending, gather, paced);
    return !this.stop.signal.aborted;
  }

  private markUnreadable(segment: number, offset: number, why: string): void {
    this.unreadable.add(segment);
    this.host.logger.error(
      { segment, offset, why },
      "compaction: segment has an unreadable batch header; leaving it in place (run scrub)",
    );
  }

  /** Appends the gathered blocks as place records (one per run of the same chunk). */
  private async flush(pending: Gathered[], gather: Uint8Array, paced: boolean): Promise<void> {
    if (pending.length === 0) return;
    const bytes = pending.length * BLOCK_SIZE_BYTES;
    if (paced) await this.pace(bytes);
    const runs: PlacedRun[] = [];
    for (let start = 0; start < pending.length; ) {
      let end = start + 1;
      const chunk = (pending[start] as Gathered).chunk;
      while (end < pending.length && pending[end]?.chunk === chunk && end - start < PAGE_BLOCKS) {
        end++;
      }
      runs.push(placeRun(pending.slice(start, end), gather, start));
      start = end;
    }
    await this.host.appendInternal(runs);
    this.copiedBytes += bytes;
    pending.length = 0;
  }

  private async pace(bytes: number): Promise<void> {
    const { clock } = this.host;
    const now = clock.nowMs();
    if (this.nextAllowedMs > now && !this.host.spaceBlocked) {
      const pacing = new AbortController();
      const onStop = () => pacing.abort();
      this.stop.signal.addEventListener("abort", onStop, { once: true });
      this.pacing = pacing;
      try {
        await clock.sleep(this.nextAllowedMs - now, pacing.signal);
      } catch (error) {
        if (!isHesError(error, "HES_ABORTED")) throw error;
      } finally {
        this.pacing = undefined;
        this.stop.signal.removeEventListener("abort", onStop);
      }
      if (this.stop.signal.aborted) throw new HesError("HES_CLOSED", "compaction stopped");
    }
    const start = Math.max(now, this.nextAllowedMs);
    this.nextAllowedMs = start + (bytes / this.host.bytesPerSecond) * 1000;
  }
}

function placeRun(items: readonly Gathered[], gather: Uint8Array, first: number): PlacedRun {
  const n = items.length;
  const record: PlaceRecord = {
    kind: "place",
    volumeId: (items[0] as Gathered).chunk.volumeId,
    chunkIndex: (items[0] as Gathered).chunk.chunkIndex,
    blockCount: n,
    dataIndex: 0,
    blocks: Uint32Array.from(items, (item) => item.block),
    crcs: Uint32Array.from(items, (item) => item.crc),
    sources: Uint32Array.from(items, (item) => item.source),
    seqs: Float64Array.from(items, (item) => item.seq),
  };
  const data = gather.subarray(first * BLOCK_SIZE_BYTES, (first + n) * BLOCK_SIZE_BYTES);
  return { record, data: [data] };
}
