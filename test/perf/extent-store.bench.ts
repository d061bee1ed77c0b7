/**
 * Extent store benchmark, beside fio on the same file in the same run.
 *
 * Back of the envelope (TOOLCHAIN.md, this VM): a 4 KiB write + fdatasync costs ~0.5 ms at depth
 * 1 (~1,800/s); O_DIRECT 4 KiB random writes reach ~29,000/s at depth 32 from Node and
 * ~40,000–50,000/s from fio. The store appends every write to a log and syncs once per batch,
 * so at depth 32 one fdatasync covers up to 32 writes (~128 KiB sequential): durable random
 * writes should beat fio's synced random writes and approach its unsynced ones; depth 1 pays
 * one 8 KiB write (header + data) and one fdatasync, about fio's synced latency. Per 4 KiB the
 * store adds a crc32c (~1 µs), a header entry and an index update: CPU should not bind first.
 * Large IO is one writev (1 MiB + one header block) per write: near fio's bandwidth.
 *
 *   pnpm bench extent-store
 *   env: SECONDS (per job, default 5), BENCH_DIR (default /var/tmp/hes-bench),
 *        BENCH_FILE_GIB (default 2), MODES (default "direct-dsync,direct,buffered"),
 *        MEMORY_GIB (fill size of the memory benchmark, default 4; 0 skips it),
 *        MEMORY_OVERWRITES (default 200000)
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type LoadResult, printHeader } from "./common.js";
import { FIO_JOBS, type FioResult, fioPrefill, runFio } from "./extent-store/fio.js";
import { fill, openBenchStore, runStoreJobs } from "./extent-store/jobs.js";
import { measureMemory } from "./extent-store/memory.js";

const GiB = 1024 * 1024 * 1024;
const SECONDS = Number(process.env.SECONDS ?? 5);
const DIR = process.env.BENCH_DIR ?? "/var/tmp/hes-bench";
const FILE_BYTES = Number(process.env.BENCH_FILE_GIB ?? 2) * GiB;
const MODES = (process.env.MODES ?? "direct-dsync,direct,buffered").split(",");
const MEMORY_GIB = Number(process.env.MEMORY_GIB ?? 4);
const MEMORY_OVERWRITES = Number(process.env.MEMORY_OVERWRITES ?? 200_000);
const REGION_BYTES = FILE_BYTES / 2; // the store's data set: half the file, the rest is log room

printHeader("extent store beside fio, same file, same run", {
  seconds: SECONDS,
  file: join(DIR, "extent-store.dat"),
  fileBytes: FILE_BYTES,
  storeRegionBytes: REGION_BYTES,
  modes: MODES,
  uvThreadpool: process.env.UV_THREADPOOL_SIZE,
  chunkBytes: 64 * 1024 * 1024,
  segmentBytes: 64 * 1024 * 1024,
  memoryGiB: MEMORY_GIB,
  memoryOverwrites: MEMORY_OVERWRITES,
});

mkdirSync(DIR, { recursive: true });
const file = join(DIR, "extent-store.dat");
const indexPath = join(DIR, "extent-store-index");

console.log("\nprefilling the file with fio (1 MiB writes)…");
fioPrefill(file, FILE_BYTES);
const fio = new Map<string, FioResult>();
for (const name of Object.keys(FIO_JOBS)) {
  process.stdout.write(`fio ${name}… `);
  const result = runFio(name, file, FILE_BYTES, SECONDS);
  fio.set(name, result);
  console.log(`${Math.round(result.iops)} IOPS`);
}

const store = new Map<string, Map<string, LoadResult>>();
for (const mode of MODES) {
  const bench = await openBenchStore(file, indexPath, mode);
  process.stdout.write(`store (${mode}): filling ${REGION_BYTES / GiB} GiB… `);
  const began = performance.now();
  await fill(bench, REGION_BYTES);
  console.log(
    `${(REGION_BYTES / 1048576 / ((performance.now() - began) / 1000)).toFixed(0)} MiB/s`,
  );
  store.set(mode, await runStoreJobs(bench, REGION_BYTES, SECONDS));
  const stats = bench.store.stats();
  console.log(
    `store (${mode}): used ${(stats.usedBytes / GiB).toFixed(2)} GiB, live ` +
      `${(stats.liveBytes / GiB).toFixed(2)} GiB, compacted ` +
      `${((stats.disks[0]?.compactedBytes ?? 0) / GiB).toFixed(2)} GiB`,
  );
  await bench.store.close();
}

const rows: Array<[string, string, (r: FioResult) => number, (r: LoadResult) => number]> = [
  ["randwrite-4k-qd1-sync", "ops/s", (r) => r.iops, (r) => r.opsPerSecond],
  ["randwrite-4k-qd32-sync", "ops/s", (r) => r.iops, (r) => r.opsPerSecond],
  ["randread-4k-qd32", "ops/s", (r) => r.iops, (r) => r.opsPerSecond],
  ["write-1m-qd8", "MiB/s", (r) => r.bytesPerSecond / 1048576, (r) => r.opsPerSecond],
  ["read-1m-qd8", "MiB/s", (r) => r.bytesPerSecond / 1048576, (r) => r.opsPerSecond],
  ["blender-16x-seq-4k-sync", "ops/s", (r) => r.iops, (r) => r.opsPerSecond],
];
const fmt = (value: number): string => Math.round(value).toLocaleString("en-US");
console.log(`\n| workload | unit | fio | ${MODES.map((m) => `store ${m} | ratio`).join(" | ")} |`);
console.log(`|---|---|---|${MODES.map(() => "---|---").join("|")}|`);
for (const [name, unit, fromFio, fromStore] of rows) {
  const f = fio.get(name);
  if (f === undefined) continue;
  const cells = MODES.map((mode) => {
    const s = store.get(mode)?.get(name);
    if (s === undefined) return "– | –";
    return `${fmt(fromStore(s))} (p50 ${s.p50Ms.toFixed(2)} ms) | ${((fromStore(s) / fromFio(f)) * 100).toFixed(0)}%`;
  });
  console.log(`| ${name} | ${unit} | ${fmt(fromFio(f))} | ${cells.join(" | ")} |`);
}
const unsynced = fio.get("randwrite-4k-qd32");
const fio1 = fio.get("randwrite-4k-qd1-sync");
console.log("\ntargets (ratios to fio in this run):");
for (const mode of MODES) {
  const s = store.get(mode);
  if (s === undefined || unsynced === undefined || fio1 === undefined) continue;
  const qd32 = s.get("randwrite-4k-qd32-sync")?.opsPerSecond ?? Number.NaN;
  const qd32sync = fio.get("randwrite-4k-qd32-sync")?.iops ?? Number.NaN;
  const p50 = s.get("randwrite-4k-qd1-sync")?.p50Ms ?? Number.NaN;
  const line = (label: string, ratio: number, target: number, higherIsBetter = true) =>
    `  ${mode}: ${label}: ${(ratio * 100).toFixed(0)}% (target ${higherIsBetter ? "≥" : "≤"} ${target * 100}%) ` +
    `${(higherIsBetter ? ratio >= target : ratio <= target) ? "met" : "NOT met"}`;
  console.log(line("durable 4k qd32 vs fio fdatasync qd32", qd32 / qd32sync, 1));
  console.log(line("durable 4k qd32 vs fio direct unsynced qd32", qd32 / unsynced.iops, 0.5));
  console.log(line("qd1 durable p50 vs fio fdatasync op latency", p50 / fio1.opMeanMs, 1.5, false));
  const seqWrite =
    (s.get("write-1m-qd8")?.opsPerSecond ?? 0) /
    ((fio.get("write-1m-qd8")?.bytesPerSecond ?? 1) / 1048576);
  console.log(line("1 MiB sequential writes vs fio", seqWrite, 0.8));
  const randRead =
    (s.get("randread-4k-qd32")?.opsPerSecond ?? 0) / (fio.get("randread-4k-qd32")?.iops ?? 1);
  console.log(line("4k random reads qd32 vs fio", randRead, 0.6));
}
console.log(
  `\nfio qd1 synced: ${fio1?.opMeanMs.toFixed(3)} ms per write+fdatasync ` +
    `(write p50 ${fio1?.p50Ms.toFixed(3)} ms, fdatasync p50 ${fio1?.syncP50Ms?.toFixed(3)} ms)`,
);
console.log("fio commands (common arguments first, job arguments last):");
for (const result of fio.values()) console.log(`  fio ${result.args.join(" ")}`);
rmSync(indexPath, { recursive: true, force: true });

if (MEMORY_GIB > 0) {
  console.log(
    `\n# index memory: ${MEMORY_GIB} GiB of 1 MiB writes, then ${MEMORY_OVERWRITES} 4 KiB overwrites`,
  );
  const memory = await measureMemory(DIR, MEMORY_GIB * GiB, MEMORY_OVERWRITES);
  console.log(
    "| phase | GiB stored | extents | pages | index bytes (store's count) | per GiB | per extent | heap+buffers growth | s |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const row of memory) {
    console.log(
      `| ${row.phase} | ${row.storedGiB.toFixed(2)} | ${fmt(row.extents)} | ${fmt(row.pages)} | ` +
        `${fmt(row.indexBytes)} | ${fmt(row.indexBytes / row.storedGiB)} | ` +
        `${(row.indexBytes / row.extents).toFixed(1)} | ${fmt(row.heapGrowthBytes)} | ${row.seconds.toFixed(1)} |`,
    );
  }
}
rmSync(file, { force: true });
