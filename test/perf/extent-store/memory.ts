/**
 * Index memory, measured: fill a sparse multi-GiB disk with 1 MiB writes, then scatter 4 KiB
 * random overwrites over it, and report the index's size (the store's own count of pages, and
 * the process's heap + ArrayBuffer growth after a forced GC) per GiB stored and per extent.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Prng } from "@hes/base";
import { ExtentStore, FileDisk } from "@hes/extent-store";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const BLOCK = 4096;

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

function heapBytes(): number {
  gc();
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** One measurement row. */
export interface MemoryRow {
  readonly phase: string;
  readonly storedGiB: number;
  readonly extents: number;
  readonly pages: number;
  readonly indexBytes: number;
  readonly heapGrowthBytes: number;
  readonly seconds: number;
}

/** Runs the memory benchmark in `dir`; returns one row per phase. */
export async function measureMemory(
  dir: string,
  fillBytes: number,
  overwrites: number,
): Promise<MemoryRow[]> {
  const file = join(dir, "memory.dat");
  const indexPath = join(dir, "memory-index");
  rmSync(file, { force: true });
  rmSync(indexPath, { recursive: true, force: true });
  const disk = await FileDisk.open(file, { createSizeBytes: Math.ceil(fillBytes * 1.6 + GiB) });
  const chunkBytes = 64 * MiB;
  const store = await ExtentStore.open({
    disks: [{ disk, indexPath }],
    clusterId: "bench-memory",
    format: true,
    chunkSizeBytes: chunkBytes,
    segmentSizeBytes: 64 * MiB,
  });
  const rows: MemoryRow[] = [];
  const data = await disk.buffers.acquire(MiB);
  new Prng(3).fill(data);
  const base = heapBytes(); // after the pool's first arena exists
  const row = (phase: string, started: number): void => {
    const index = store.indexStats();
    rows.push({
      phase,
      storedGiB: (index.dataBlocks * BLOCK) / GiB,
      extents: index.extents,
      pages: index.pages,
      indexBytes: index.indexBytes,
      heapGrowthBytes: heapBytes() - base,
      seconds: (performance.now() - started) / 1000,
    });
  };
  let started = performance.now();
  let next = 0;
  let seq = 1;
  const filler = async (): Promise<void> => {
    while (next < fillBytes) {
      const at = next;
      next += MiB;
      const chunk = { volumeId: 1, chunkIndex: Math.floor(at / chunkBytes) };
      await store.write(chunk, at % chunkBytes, data, { epoch: 1, seq: seq++ });
    }
  };
  await Promise.all(Array.from({ length: 8 }, filler));
  row(`after ${fillBytes / GiB} GiB of 1 MiB writes`, started);
  started = performance.now();
  const prng = new Prng(4);
  const block = data.subarray(0, BLOCK);
  let done = 0;
  const overwriter = async (): Promise<void> => {
    while (done++ < overwrites) {
      const b = prng.int(fillBytes / BLOCK);
      const at = b * BLOCK;
      const chunk = { volumeId: 1, chunkIndex: Math.floor(at / chunkBytes) };
      await store.write(chunk, at % chunkBytes, block, { epoch: 1, seq: seq++ });
    }
  };
  await Promise.all(Array.from({ length: 32 }, overwriter));
  row(`after ${overwrites.toLocaleString("en-US")} random 4 KiB overwrites`, started);
  disk.buffers.release(data);
  await store.close();
  rmSync(file, { force: true });
  rmSync(indexPath, { recursive: true, force: true });
  return rows;
}
