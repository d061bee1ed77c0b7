/**
 * Replay of the log tail at open: from the checkpoint's position, batch after batch, following
 * end-of-segment records, applying each durable batch to the index exactly as it was applied
 * when it was written.
 *
 * Where the log ends is decided by what follows an unreadable batch:
 * - nothing valid after it (in its segment, or at the start of any segment with a later
 *   sequence number): it is the torn tail of the last, unacknowledged batch; replay ends;
 * - a valid batch after it: the log went on past it, so it had been synced; its damage is real
 *   corruption. A damaged header means records would be lost: open fails with HES_CORRUPTION.
 *   Damaged data under a valid header is applied (reads of those blocks then fail their
 *   checksum with HES_CORRUPTION) and listed in the report, never skipped silently.
 *
 * Why "later valid" proves durability: every batch records the highest LSN that was durable when
 * it was written (`durableLsn`); a valid later batch whose `durableLsn` is past the last batch
 * applied was written after the damaged one's fdatasync. Batch LSNs and segment sequence numbers
 * are never reused (see disk-store.ts), so leftovers of earlier runs or failed writes never pass
 * for part of the log: a batch must carry its segment's sequence, its own offset, and an LSN
 * above the previous batch's.
 */

import { type Disk, HesError, type Logger } from "@hes/base";
import { crc32c } from "@node-rs/crc32";
import {
  type BatchHeader,
  decodeBatchHeader,
  type EndRecord,
  peekBatchHeader,
  type StoreRecord,
} from "./format.js";
import type { LogPosition } from "./index-db.js";
import { BATCH_HEADER_BYTES_MAX, BLOCK_SIZE_BYTES, PAGE_BLOCKS } from "./limits.js";
import { readHeaderAt, SegmentReader } from "./segment-reader.js";
import { SEGMENT_ACTIVE, SEGMENT_SEALED, type SegmentTable } from "./segments.js";

/** What replay needs from the disk store. */
export interface ReplayTarget {
  readonly disk: Disk;
  readonly table: SegmentTable;
  readonly crcSeed: number;
  readonly chunkBlocks: number;
  readonly logger: Logger;
  /** Applies one durable record (never an end record). */
  apply(record: StoreRecord, dataStartAddress: number): void;
}

/** A block whose data failed its checksum in the middle of the log. */
export interface CorruptBlock {
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly block: number;
  readonly address: number;
}

/** What replay did. */
export interface ReplayReport {
  /** Where the log continues (the tail). */
  readonly position: LogPosition;
  readonly batches: number;
  readonly bytes: number;
  /** Why replay stopped: "clean", or a description of the torn tail. */
  readonly stoppedBecause: string;
  readonly corruptBlocks: readonly CorruptBlock[];
}

/** Replays from `start`. `clean`: the checkpoint came from a clean close (skip tail scans). */
export async function replayLog(
  target: ReplayTarget,
  start: LogPosition,
  clean: boolean,
): Promise<ReplayReport> {
  const reader = await SegmentReader.create(target.disk, 1024 * 1024);
  try {
    return await walk(target, reader, start, clean);
  } finally {
    reader.release();
  }
}

interface Walk {
  segment: number;
  offset: number;
  seq: number;
  /** LSN of the last batch applied (or of the checkpoint). */
  lsn: number;
  batches: number;
  bytes: number;
  readonly corrupt: CorruptBlock[];
}

async function walk(
  target: ReplayTarget,
  reader: SegmentReader,
  start: LogPosition,
  clean: boolean,
): Promise<ReplayReport> {
  const { table } = target;
  const segmentSize = table.geometry.segmentSizeBytes;
  const state: Walk = { ...start, offset: start.offsetBytes, batches: 0, bytes: 0, corrupt: [] };
  reader.moveTo(table.startBytes(state.segment), segmentSize);
  for (;;) {
    const batch = await readBatch(target, reader, state);
    if ("invalid" in batch) {
      const why = `${batch.invalid} at segment ${state.segment} offset ${state.offset}`;
      if (!clean && (await laterBatchExists(target, reader, state))) {
        throw new HesError(
          "HES_CORRUPTION",
          `${target.disk.name}: log record damaged in the middle of the log (${why}); ` +
            "later records exist, so acknowledged writes would be lost: the disk must be rebuilt",
          { details: { segment: state.segment, offsetBytes: state.offset } },
        );
      }
      return finish(state, clean ? "clean" : why);
    }
    const badBlocks = await verifyData(target, reader, state, batch);
    if (badBlocks.length > 0) {
      if (!(await laterBatchExists(target, reader, state))) {
        return finish(state, `torn batch (data checksum) at segment ${state.segment}`);
      }
      state.corrupt.push(...badBlocks);
      target.logger.error(
        { disk: target.disk.name, blocks: badBlocks },
        "replay: acknowledged data failed its checksum; reads of these blocks will fail",
      );
    }
    checkRanges(target, batch);
    const batchBytes = (batch.headerBlocks + batch.dataBlocks) * BLOCK_SIZE_BYTES;
    const dataStart =
      (table.startBytes(state.segment) + state.offset) / BLOCK_SIZE_BYTES + batch.headerBlocks;
    let end: EndRecord | undefined;
    for (const record of batch.records) {
      if (record.kind === "end") end = record;
      else target.apply(record, dataStart);
    }
    state.batches++;
    state.lsn = batch.lsn;
    state.bytes += batchBytes;
    state.offset += batchBytes;
    table.fillBytes[state.segment] = state.offset;
    if (end !== undefined) enterSegment(target, reader, state, end);
  }
}

function finish(state: Walk, stoppedBecause: string): ReplayReport {
  return {
    position: { segment: state.segment, offsetBytes: state.offset, seq: state.seq, lsn: state.lsn },
    batches: state.batches,
    bytes: state.bytes,
    stoppedBecause,
    corruptBlocks: state.corrupt,
  };
}

/** Follows an end record into the next segment. */
function enterSegment(target: ReplayTarget, reader: SegmentReader, state: Walk, end: EndRecord) {
  const { table } = target;
  const next = end.nextSegment;
  if (next >= table.states.length || next === state.segment || !(end.nextSeq > state.seq)) {
    throw new HesError("HES_CORRUPTION", `${target.disk.name}: end record points nowhere valid`);
  }
  if ((table.liveBlocks[next] as number) !== 0) {
    throw new HesError(
      "HES_CORRUPTION",
      `${target.disk.name}: the log continues in segment ${next}, which still holds live data`,
    );
  }
  table.states[state.segment] = SEGMENT_SEALED;
  table.states[next] = SEGMENT_ACTIVE;
  table.seqs[next] = end.nextSeq;
  table.fillBytes[next] = 0;
  state.segment = next;
  state.offset = 0;
  state.seq = end.nextSeq;
  reader.moveTo(table.startBytes(next), table.geometry.segmentSizeBytes);
}

/** Reads and checks the batch header at the walk's position. */
async function readBatch(
  target: ReplayTarget,
  reader: SegmentReader,
  state: Walk,
): Promise<BatchHeader | { readonly invalid: string }> {
  const segmentSize = target.table.geometry.segmentSizeBytes;
  if (state.offset + BLOCK_SIZE_BYTES > segmentSize) return { invalid: "segment end" };
  const header = await readHeaderAt(reader, state.offset, segmentSize, target.crcSeed);
  if ("invalid" in header) return header;
  if (
    header.segmentSeq !== state.seq ||
    header.segmentIndex !== state.segment ||
    header.offsetBlocks * BLOCK_SIZE_BYTES !== state.offset ||
    header.lsn <= state.lsn
  ) {
    return { invalid: "stale or misplaced batch" };
  }
  return header;
}

/** Checks every data block's crc; returns the blocks that fail. */
async function verifyData(
  target: ReplayTarget,
  reader: SegmentReader,
  state: Walk,
  batch: BatchHeader,
): Promise<CorruptBlock[]> {
  const bad: CorruptBlock[] = [];
  const dataOffset = state.offset + batch.headerBlocks * BLOCK_SIZE_BYTES;
  const dataAddress = (target.table.startBytes(state.segment) + dataOffset) / BLOCK_SIZE_BYTES;
  for (const record of batch.records) {
    if (record.kind !== "write" && record.kind !== "place") continue;
    for (let i = 0; i < record.blockCount; i++) {
      const blockOffset = dataOffset + (record.dataIndex + i) * BLOCK_SIZE_BYTES;
      const bytes = await reader.read(blockOffset, BLOCK_SIZE_BYTES);
      if (crc32c(bytes) !== record.crcs[i]) {
        const block =
          record.kind === "write" ? record.firstBlock + i : (record.blocks[i] as number);
        bad.push({
          volumeId: record.volumeId,
          chunkIndex: record.chunkIndex,
          block,
          address: dataAddress + record.dataIndex + i,
        });
      }
    }
  }
  return bad;
}

/** Records whose blocks fall outside a chunk cannot come from this store: refuse the disk. */
function checkRanges(target: ReplayTarget, batch: BatchHeader): void {
  for (const record of batch.records) {
    let outside = false;
    if (record.kind === "write" || record.kind === "zero" || record.kind === "discard") {
      outside = record.firstBlock + record.blockCount > target.chunkBlocks;
    } else if (record.kind === "place") {
      outside = record.blocks.some((block) => block >= target.chunkBlocks);
    }
    if (outside) {
      throw new HesError(
        "HES_CORRUPTION",
        `${target.disk.name}: a log record addresses blocks outside its chunk ` +
          `(${target.chunkBlocks} blocks of ${PAGE_BLOCKS * BLOCK_SIZE_BYTES}-byte pages)`,
      );
    }
  }
}

/**
 * True when a valid batch exists beyond the walk's position (later in its segment, or at the
 * start of a segment with a later sequence) that was written after the batch at the position
 * had been synced: its `durableLsn` is beyond the last batch applied. Batches written while the
 * damaged one was still in flight (or left over after a failed write) do not count.
 */
async function laterBatchExists(
  target: ReplayTarget,
  reader: SegmentReader,
  state: Walk,
): Promise<boolean> {
  const { table } = target;
  const segmentSize = table.geometry.segmentSizeBytes;
  for (let offset = state.offset + BLOCK_SIZE_BYTES; offset < segmentSize; ) {
    const header = await readHeaderAt(reader, offset, segmentSize, target.crcSeed);
    if (
      !("invalid" in header) &&
      header.segmentSeq === state.seq &&
      header.offsetBlocks * BLOCK_SIZE_BYTES === offset &&
      header.durableLsn > state.lsn
    ) {
      return true;
    }
    offset += BLOCK_SIZE_BYTES;
  }
  const buffer = await target.disk.buffers.acquire(BATCH_HEADER_BYTES_MAX);
  try {
    for (let segment = 0; segment < table.states.length; segment++) {
      if (segment === state.segment) continue;
      const first = buffer.subarray(0, BLOCK_SIZE_BYTES);
      await target.disk.read(first, table.startBytes(segment));
      const peek = peekBatchHeader(first);
      if ("invalid" in peek) continue;
      const bytes = buffer.subarray(0, peek.headerBlocks * BLOCK_SIZE_BYTES);
      if (peek.headerBlocks > 1) await target.disk.read(bytes, table.startBytes(segment));
      const header = decodeBatchHeader(bytes, target.crcSeed);
      if (
        !("invalid" in header) &&
        header.segmentSeq > state.seq &&
        header.offsetBlocks === 0 &&
        header.durableLsn > state.lsn
      ) {
        return true;
      }
    }
  } finally {
    target.disk.buffers.release(buffer);
  }
  return false;
}
