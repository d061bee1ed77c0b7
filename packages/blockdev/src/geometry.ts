/**
 * Pure helpers that cut volume ranges into chunk pieces and turn replica runs into volume
 * extents. No IO.
 */
import type { ChunkRun } from "@hes/extent-store";
import type { AllocationExtent } from "./block-device.js";
import { VOLUME_BLOCK_BYTES } from "./limits.js";

/** A piece of a volume range inside one chunk. */
export interface ChunkPiece {
  readonly chunkIndex: number;
  /** Offset inside the chunk. */
  readonly chunkOffsetBytes: number;
  /** Offset of the piece from the start of the range. */
  readonly rangeOffsetBytes: number;
  readonly lengthBytes: number;
}

/** Splits `[offsetBytes, offsetBytes + lengthBytes)` at chunk boundaries and `pieceBytesMax`. */
export function chunkPieces(
  offsetBytes: number,
  lengthBytes: number,
  chunkSizeBytes: number,
  pieceBytesMax: number,
): ChunkPiece[] {
  const pieces: ChunkPiece[] = [];
  let done = 0;
  while (done < lengthBytes) {
    const at = offsetBytes + done;
    // An infinite chunk size splits only by piece size (ranges already inside one chunk).
    const chunkIndex = Number.isFinite(chunkSizeBytes) ? Math.floor(at / chunkSizeBytes) : 0;
    const chunkOffsetBytes = chunkIndex === 0 ? at : at - chunkIndex * chunkSizeBytes;
    const length = Math.min(lengthBytes - done, chunkSizeBytes - chunkOffsetBytes, pieceBytesMax);
    pieces.push({ chunkIndex, chunkOffsetBytes, rangeOffsetBytes: done, lengthBytes: length });
    done += length;
  }
  return pieces;
}

/** The 4 KiB-aligned range covering a 512-aligned one. */
export function widen(offsetBytes: number, lengthBytes: number): [number, number] {
  const start = Math.floor(offsetBytes / VOLUME_BLOCK_BYTES) * VOLUME_BLOCK_BYTES;
  const end = Math.ceil((offsetBytes + lengthBytes) / VOLUME_BLOCK_BYTES) * VOLUME_BLOCK_BYTES;
  return [start, end - start];
}

/** Replica runs (offsets inside a chunk) as volume extents. */
export function runsToExtents(runs: readonly ChunkRun[], chunkBaseBytes: number) {
  return runs.map(
    (run): AllocationExtent => ({
      offsetBytes: chunkBaseBytes + run.offsetBytes,
      lengthBytes: run.lengthBytes,
      hole: run.state === "hole",
      zero: run.state !== "data",
    }),
  );
}

/** Clips extents to `[offsetBytes, end)` and merges neighbours of the same kind. */
export function clipAndMerge(
  extents: readonly AllocationExtent[],
  offsetBytes: number,
  lengthBytes: number,
): AllocationExtent[] {
  const end = offsetBytes + lengthBytes;
  const out: AllocationExtent[] = [];
  for (const extent of extents) {
    const start = Math.max(extent.offsetBytes, offsetBytes);
    const stop = Math.min(extent.offsetBytes + extent.lengthBytes, end);
    if (stop <= start) continue;
    const last = out[out.length - 1];
    if (
      last !== undefined &&
      last.hole === extent.hole &&
      last.zero === extent.zero &&
      last.offsetBytes + last.lengthBytes === start
    ) {
      out[out.length - 1] = { ...last, lengthBytes: stop - last.offsetBytes };
    } else {
      out.push({
        offsetBytes: start,
        lengthBytes: stop - start,
        hole: extent.hole,
        zero: extent.zero,
      });
    }
  }
  return out;
}

/** A changed range of a volume (diff). */
export interface ChangedExtent {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** Sorts and merges touching ranges. */
export function mergeRanges(ranges: readonly ChangedExtent[]): ChangedExtent[] {
  const sorted = [...ranges].sort((a, b) => a.offsetBytes - b.offsetBytes);
  const out: ChangedExtent[] = [];
  for (const range of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && last.offsetBytes + last.lengthBytes >= range.offsetBytes) {
      const end = Math.max(
        last.offsetBytes + last.lengthBytes,
        range.offsetBytes + range.lengthBytes,
      );
      out[out.length - 1] = { offsetBytes: last.offsetBytes, lengthBytes: end - last.offsetBytes };
    } else {
      out.push(range);
    }
  }
  return out;
}

/** Per-block flags of a chunk from runs: true where `predicate(run)` holds. */
export function blockFlags(
  runs: readonly ChunkRun[],
  blocks: number,
  predicate: (run: ChunkRun) => boolean,
): Uint8Array {
  const flags = new Uint8Array(blocks);
  for (const run of runs) {
    if (!predicate(run)) continue;
    const first = run.offsetBytes / VOLUME_BLOCK_BYTES;
    flags.fill(1, first, Math.min(blocks, first + run.lengthBytes / VOLUME_BLOCK_BYTES));
  }
  return flags;
}

/** A span of a chunk to compare at once, and which of its 4 KiB blocks to compare. */
export interface CompareSpan {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  /** One byte per block of the span: 1 where a changed range covers it. */
  readonly mask: Uint8Array;
}

/**
 * Groups sorted, disjoint, block-aligned ranges into spans of at most `spanBytesMax`, so
 * that many small changed ranges cost one checksum/allocation request per span instead of one
 * each (2,560 random 4 KiB writes took 2 s to reconcile range by range). A range longer than a
 * span is split. Only the blocks of the ranges are marked for comparison, never the gaps.
 */
export function compareSpans(
  ranges: readonly ChangedExtent[],
  blockBytes: number,
  spanBytesMax: number,
): CompareSpan[] {
  const spans: { offsetBytes: number; endBytes: number; parts: ChangedExtent[] }[] = [];
  for (const range of ranges) {
    let at = range.offsetBytes;
    const end = range.offsetBytes + range.lengthBytes;
    while (at < end) {
      let span = spans[spans.length - 1];
      if (span === undefined || at + blockBytes - span.offsetBytes > spanBytesMax) {
        span = { offsetBytes: at, endBytes: at, parts: [] };
        spans.push(span);
      }
      const partEnd = Math.min(end, span.offsetBytes + spanBytesMax);
      span.parts.push({ offsetBytes: at, lengthBytes: partEnd - at });
      span.endBytes = partEnd;
      at = partEnd;
    }
  }
  return spans.map((span) => {
    const mask = new Uint8Array((span.endBytes - span.offsetBytes) / blockBytes);
    for (const part of span.parts) {
      const first = (part.offsetBytes - span.offsetBytes) / blockBytes;
      mask.fill(1, first, first + part.lengthBytes / blockBytes);
    }
    return { offsetBytes: span.offsetBytes, lengthBytes: span.endBytes - span.offsetBytes, mask };
  });
}
