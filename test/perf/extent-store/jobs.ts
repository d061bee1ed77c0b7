/**
 * The extent store's side of the benchmark: the same workload shapes as the fio jobs, through
 * ExtentStore on the same file, with buffers from the disk's aligned pool (what a volume on the
 * hot path does, so O_DIRECT needs no bounce copy).
 */
import { closeSync, openSync, rmSync, writeSync } from "node:fs";
import { Prng } from "@hes/base";
import { type ChunkId, ExtentStore, FileDisk } from "@hes/extent-store";
import { closedLoop, type LoadResult, percentile } from "../common.js";

const BLOCK = 4096;
const MiB = 1024 * 1024;
export const CHUNK_BYTES = 64 * MiB;

/** A store opened on the benchmark file (formatted fresh), with the disk for its pool. */
export interface BenchStore {
  readonly store: ExtentStore;
  readonly disk: FileDisk;
}

/** Formats a fresh store over `file` (its superblocks are wiped first) in IO `mode`. */
export async function openBenchStore(
  file: string,
  indexPath: string,
  mode: string,
): Promise<BenchStore> {
  const fd = openSync(file, "r+");
  writeSync(fd, Buffer.alloc(2 * BLOCK), 0, 2 * BLOCK, 0);
  closeSync(fd);
  rmSync(indexPath, { recursive: true, force: true });
  // Modes: "buffered", "direct" (O_DIRECT + fdatasync), "direct-dsync" (O_DIRECT | O_DSYNC).
  const disk = await FileDisk.open(file, {
    direct: mode.startsWith("direct"),
    dsync: mode.endsWith("dsync"),
  });
  const store = await ExtentStore.open({
    disks: [{ disk, indexPath }],
    clusterId: "bench",
    format: true,
    chunkSizeBytes: CHUNK_BYTES,
    segmentSizeBytes: 64 * MiB,
  });
  return { store, disk };
}

function chunkOf(index: number): ChunkId {
  return { volumeId: 1, chunkIndex: index };
}

/** Writes `regionBytes` (whole chunks from chunk 0) with 1 MiB writes, 8 in flight. */
export async function fill({ store, disk }: BenchStore, regionBytes: number): Promise<void> {
  const data = await disk.buffers.acquire(MiB);
  new Prng(1).fill(data);
  let next = 0;
  let seq = 1;
  const worker = async (): Promise<void> => {
    while (next < regionBytes) {
      const at = next;
      next += MiB;
      await store.write(chunkOf(Math.floor(at / CHUNK_BYTES)), at % CHUNK_BYTES, data, {
        epoch: 1,
        seq: seq++,
      });
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  disk.buffers.release(data);
}

/**
 * Waits (at most `boundMs`) until compaction has been idle for a second, so a job does not pay
 * for the previous job's garbage. Returns the seconds waited.
 */
export async function quiesce(store: ExtentStore, boundMs = 30_000): Promise<number> {
  const began = performance.now();
  let idleSince = performance.now();
  while (performance.now() - began < boundMs) {
    if (store.stats().disks.some((disk) => disk.compacting)) idleSince = performance.now();
    if (performance.now() - idleSince >= 1000) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return (performance.now() - began) / 1000;
}

/** The store workloads, each a closed loop for `seconds`. Seqs grow across all of them. */
export async function runStoreJobs(
  bench: BenchStore,
  regionBytes: number,
  seconds: number,
): Promise<Map<string, LoadResult>> {
  const { store, disk } = bench;
  const results = new Map<string, LoadResult>();
  const prng = new Prng(7);
  const blocks = regionBytes / BLOCK;
  const chunkBlocks = CHUNK_BYTES / BLOCK;
  let seq = 1_000_000;
  const block4k = await disk.buffers.acquire(BLOCK);
  prng.fill(block4k);
  const randomWrite = () => {
    const b = prng.int(blocks);
    return store.write(chunkOf(Math.floor(b / chunkBlocks)), (b % chunkBlocks) * BLOCK, block4k, {
      epoch: 1,
      seq: seq++,
    });
  };
  // Reads complete out of order: each takes a buffer from the free list and gives it back.
  const readBuffers = await Promise.all(
    Array.from({ length: 32 }, () => disk.buffers.acquire(MiB)),
  );
  const free = [...readBuffers];
  const withBuffer = async (use: (buffer: Uint8Array) => Promise<void>): Promise<void> => {
    const buffer = free.pop() as Uint8Array;
    try {
      await use(buffer);
    } finally {
      free.push(buffer);
    }
  };
  const randomRead = () => {
    const b = prng.int(blocks);
    return withBuffer((buffer) =>
      store.readInto(
        chunkOf(Math.floor(b / chunkBlocks)),
        (b % chunkBlocks) * BLOCK,
        buffer.subarray(0, BLOCK),
      ),
    );
  };
  const big = await disk.buffers.acquire(MiB);
  prng.fill(big);
  let cursor = 0;
  const sequentialWrite = () => {
    const at = cursor;
    cursor = (cursor + MiB) % regionBytes;
    return store.write(chunkOf(Math.floor(at / CHUNK_BYTES)), at % CHUNK_BYTES, big, {
      epoch: 1,
      seq: seq++,
    });
  };
  let readCursor = 0;
  const sequentialRead = () => {
    const at = readCursor;
    readCursor = (readCursor + MiB) % regionBytes;
    return withBuffer((buffer) =>
      store.readInto(chunkOf(Math.floor(at / CHUNK_BYTES)), at % CHUNK_BYTES, buffer),
    );
  };
  const job = async (name: string, run: () => Promise<LoadResult>): Promise<void> => {
    const waited = await quiesce(store);
    const compactedBefore = store.stats().disks[0]?.compactedBytes ?? 0;
    const result = await run();
    const compacted = (store.stats().disks[0]?.compactedBytes ?? 0) - compactedBefore;
    results.set(name, result);
    console.log(
      `  ${name}: ${Math.round(result.opsPerSecond)}/s p50 ${result.p50Ms.toFixed(3)} ms ` +
        `(waited ${waited.toFixed(1)} s for compaction before; it copied ` +
        `${(compacted / MiB).toFixed(0)} MiB during)`,
    );
  };
  await job("write-1m-qd8", () => closedLoop(sequentialWrite, 8, seconds));
  await job("read-1m-qd8", () => closedLoop(sequentialRead, 8, seconds));
  await job("randread-4k-qd32", () => closedLoop(randomRead, 32, seconds));
  await job("randwrite-4k-qd1-sync", () => closedLoop(randomWrite, 1, seconds));
  await job("randwrite-4k-qd32-sync", () => closedLoop(randomWrite, 32, seconds));
  await job("blender-16x-seq-4k-sync", () => blender(bench, seconds, block4k, () => seq++));
  for (const buffer of [block4k, big, ...readBuffers]) disk.buffers.release(buffer);
  return results;
}

/** 16 writers, each writing 4 KiB blocks sequentially through its own chunk, each durable. */
async function blender(
  { store }: BenchStore,
  seconds: number,
  data: Uint8Array,
  nextSeq: () => number,
): Promise<LoadResult> {
  let measuring = false;
  let stop = false;
  let ops = 0;
  const latencies: number[] = [];
  const writer = async (w: number): Promise<void> => {
    for (let at = 0; !stop; at = (at + BLOCK) % CHUNK_BYTES) {
      const start = performance.now();
      await store.write(chunkOf(w), at, data, { epoch: 1, seq: nextSeq() });
      if (measuring) {
        ops++;
        latencies.push(performance.now() - start);
      }
    }
  };
  const writers = Array.from({ length: 16 }, (_, w) => writer(w));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  measuring = true;
  const begin = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  measuring = false;
  const elapsed = (performance.now() - begin) / 1000;
  stop = true;
  await Promise.all(writers);
  return {
    ops,
    seconds: elapsed,
    opsPerSecond: ops / elapsed,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}
