/**
 * Pure queries over a chunk's views (page arrays): allocation maps, changed blocks since a seq
 * or between two views, and the plan of an export. Runs are in blocks here; the public API
 * converts to bytes.
 */
import type { PageArray } from "./chunk-index.js";
import { ADDRESS_HOLE, ADDRESS_ZERO, PAGE_BLOCKS } from "./limits.js";

/** What a block holds: data on disk, zeroes (metadata only), or nothing (a hole). */
export type BlockState = "data" | "zero" | "hole";

/** A run of blocks in one state. */
export interface BlockRun {
  readonly firstBlock: number;
  readonly blockCount: number;
  readonly state: BlockState;
}

function stateOf(address: number): BlockState {
  if (address === ADDRESS_HOLE) return "hole";
  return address === ADDRESS_ZERO ? "zero" : "data";
}

/** Appends a block to `runs`, extending the last run when it continues it. */
function push(runs: BlockRun[], block: number, state: BlockState, count = 1): void {
  const last = runs[runs.length - 1];
  if (last !== undefined && last.state === state && last.firstBlock + last.blockCount === block) {
    runs[runs.length - 1] = { ...last, blockCount: last.blockCount + count };
  } else {
    runs.push({ firstBlock: block, blockCount: count, state });
  }
}

/** The state of every block in [firstBlock, firstBlock + count), as runs. */
export function allocationRuns(pages: PageArray, firstBlock: number, count: number): BlockRun[] {
  const runs: BlockRun[] = [];
  for (let block = firstBlock; block < firstBlock + count; ) {
    const page = pages[Math.floor(block / PAGE_BLOCKS)];
    const slot = block % PAGE_BLOCKS;
    const n = Math.min(firstBlock + count - block, PAGE_BLOCKS - slot);
    if (page === undefined) {
      push(runs, block, "hole", n);
    } else {
      for (let i = 0; i < n; i++)
        push(runs, block + i, stateOf(page.addresses[slot + i] as number));
    }
    block += n;
  }
  return runs;
}

/** Blocks last written (or zeroed, or discarded) with a seq greater than `sinceSeq`. */
export function changedSinceSeq(pages: PageArray, sinceSeq: number): BlockRun[] {
  const runs: BlockRun[] = [];
  pages.forEach((page, pageIndex) => {
    if (page === undefined) return;
    for (let slot = 0; slot < PAGE_BLOCKS; slot++) {
      if ((page.seqs[slot] as number) > sinceSeq) {
        push(runs, pageIndex * PAGE_BLOCKS + slot, stateOf(page.addresses[slot] as number));
      }
    }
  });
  return runs;
}

/** Blocks that differ between two views; each run carries its state in `to`. */
export function changedBetween(from: PageArray, to: PageArray): BlockRun[] {
  const runs: BlockRun[] = [];
  for (let pageIndex = 0; pageIndex < to.length; pageIndex++) {
    const a = from[pageIndex];
    const b = to[pageIndex];
    if (a === b) continue; // the same page object: nothing changed in this MiB
    for (let slot = 0; slot < PAGE_BLOCKS; slot++) {
      const before = a === undefined ? ADDRESS_HOLE : (a.addresses[slot] as number);
      const after = b === undefined ? ADDRESS_HOLE : (b.addresses[slot] as number);
      if (before !== after) push(runs, pageIndex * PAGE_BLOCKS + slot, stateOf(after));
    }
  }
  return runs;
}

/** One piece an export will send: a run of one state, all seqs > the export's `sinceSeq`. */
export interface ExportRun extends BlockRun {
  /** Seq of each block of the run. */
  readonly seqs: Float64Array;
}

/**
 * The next run to export at or after `fromBlock`: blocks with seq > `sinceSeq` (for a full
 * export, `sinceSeq` is 0, so never-written blocks are skipped), one state, at most
 * `blocksMax` blocks; zero and hole runs also share one seq. Undefined when nothing is left.
 */
export function nextExportRun(
  pages: PageArray,
  fromBlock: number,
  chunkBlocks: number,
  sinceSeq: number,
  blocksMax: number,
): ExportRun | undefined {
  let first = -1;
  let state: BlockState = "hole";
  const seqs: number[] = [];
  for (let block = fromBlock; block < chunkBlocks; block++) {
    const page = pages[Math.floor(block / PAGE_BLOCKS)];
    if (page === undefined) {
      if (first >= 0) break;
      block += PAGE_BLOCKS - 1 - (block % PAGE_BLOCKS);
      continue;
    }
    const slot = block % PAGE_BLOCKS;
    const seq = page.seqs[slot] as number;
    const blockState = stateOf(page.addresses[slot] as number);
    if (seq <= sinceSeq) {
      if (first >= 0) break;
      continue;
    }
    if (first < 0) {
      first = block;
      state = blockState;
    } else if (blockState !== state || (state !== "data" && seq !== seqs[0])) {
      break;
    }
    seqs.push(seq);
    if (seqs.length === blocksMax) break;
  }
  if (first < 0) return undefined;
  return { firstBlock: first, blockCount: seqs.length, state, seqs: Float64Array.from(seqs) };
}
