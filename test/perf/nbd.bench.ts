/**
 * NBD layer overhead: fio's nbd engine (libnbd) with the job shapes of the shared
 * side-by-side benchmark (../shared/bench/fio/nbd.fio) against
 *   (a) nbdkit's memory plugin: the NBD protocol's ceiling on this machine, and
 *   (b) the hes NbdServer exporting a MemoryBlockDevice, in its own process,
 * both on unix sockets, job by job, alternating targets so drift hits both alike. Neither
 * target touches a disk, so the difference is the cost of the NBD server itself.
 *
 * Back of the envelope: the shared README measured nbdkit memory at ~20k IOPS (4k qd1 +
 * flush), ~129k (4k randwrite qd32), ~109k (4k randread qd32), ~3.9 GB/s (1 MiB qd8). nbdkit
 * serves from 16 C threads; the hes server is one JavaScript thread. Node moves ~86k 4 KiB
 * messages/s over loopback at depth 32 (TOOLCHAIN.md) and each NBD request is one such
 * exchange, with parse + a 4 KiB copy + reply on that one core, so ~40–60% of nbdkit at
 * 4 KiB is the expectation; at 1 MiB two memory copies per request (socket → device, or
 * device → socket) bound it at a few GB/s, ~50–80% of nbdkit.
 *
 *   pnpm bench nbd        env: RUNTIME (s per job, default 10), SIZE (bytes, default 2 GiB),
 *                         JOBFILE (default ../shared/bench/fio/nbd.fio, else built-in shapes)
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { printHeader } from "./common.js";

const RUNTIME_SECONDS = Number(process.env.RUNTIME ?? 10);
const SIZE_BYTES = Number(process.env.SIZE ?? 2 * 1024 ** 3);
const JOBS = [
  "randwrite-4k-qd1-sync",
  "randwrite-4k-qd32",
  "randread-4k-qd32",
  "write-1m-qd8",
  "read-1m-qd8",
] as const;
const root = new URL("../..", import.meta.url).pathname;
const sharedJobFile = join(root, "..", "shared", "bench", "fio", "nbd.fio");

/** The shapes of the shared nbd.fio, for machines without ../shared (same jobs, same knobs). */
const BUILT_IN_JOBS = `[global]
ioengine=nbd
uri=\${NBD_URI}
size=\${SIZE}
time_based=1
runtime=\${RUNTIME}
ramp_time=2
group_reporting=1
[prefill]
rw=write
bs=1M
iodepth=16
time_based=0
runtime=0
ramp_time=0
[randwrite-4k-qd1-sync]
rw=randwrite
bs=4k
iodepth=1
fsync=1
[randwrite-4k-qd32]
rw=randwrite
bs=4k
iodepth=32
[randread-4k-qd32]
rw=randread
bs=4k
iodepth=32
[write-1m-qd8]
rw=write
bs=1M
iodepth=8
[read-1m-qd8]
rw=read
bs=1M
iodepth=8
`;

const work = mkdtempSync(join(tmpdir(), "hes-nbd-bench-"));
const jobFile =
  process.env.JOBFILE ?? (existsSync(sharedJobFile) ? sharedJobFile : join(work, "nbd.fio"));
if (jobFile === join(work, "nbd.fio")) writeFileSync(jobFile, BUILT_IN_JOBS);
const jobText = readFileSync(jobFile, "utf8");
if (!/size=\$\{SIZE\}/.test(jobText) && SIZE_BYTES < 2 * 1024 ** 3) {
  throw new Error(`${jobFile} fixes size=2G: keep SIZE at 2 GiB or set JOBFILE`);
}

printHeader(
  "NBD server overhead: fio nbd engine, nbdkit memory vs hes NbdServer(MemoryBlockDevice)",
  {
    runtimeSeconds: RUNTIME_SECONDS,
    sizeBytes: SIZE_BYTES,
    jobFile,
    fio: execFileSync("fio", ["--version"]).toString().trim(),
    nbdkit: execFileSync("nbdkit", ["--version"]).toString().trim(),
  },
);

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

interface Target {
  readonly name: string;
  readonly uri: string;
  readonly pid: number;
  readonly child: ChildProcess;
}

async function waitForSocket(path: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(path); i++) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (!existsSync(path)) throw new Error(`no socket at ${path} after 10 s`);
}

async function startNbdkit(): Promise<Target> {
  const socket = join(work, "nbdkit.sock");
  const child = spawn("nbdkit", ["-f", "-U", socket, "memory", String(SIZE_BYTES)], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitForSocket(socket, child);
  return {
    name: "nbdkit memory",
    uri: `nbd+unix:///?socket=${socket}`,
    pid: child.pid ?? 0,
    child,
  };
}

async function startHes(): Promise<Target> {
  const socket = join(work, "hes.sock");
  const child = spawn(
    process.execPath,
    [
      ...process.execArgv,
      join(root, "test", "perf", "nbd", "server.ts"),
      socket,
      String(SIZE_BYTES),
    ],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, UV_THREADPOOL_SIZE: "16" } },
  );
  const line = await new Promise<string>((resolve) =>
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once("line", resolve),
  );
  const { pid } = JSON.parse(line) as { pid: number };
  return { name: "hes NbdServer", uri: `nbd+unix:///?socket=${socket}`, pid, child };
}

interface JobResult {
  readonly iops: number;
  readonly megabytesPerSecond: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly syncP50Us: number | undefined;
  readonly serverCpuPercent: number;
  readonly fioCpuPercent: number;
}

interface FioSide {
  io_bytes: number;
  iops: number;
  bw_bytes: number;
  clat_ns?: { percentile?: Record<string, number> };
}

function runFio(target: Target, section: string): JobResult {
  const output = join(work, `${section}-${target.pid}.json`);
  const startCpu = cpuSeconds(target.pid);
  const started = performance.now();
  execFileSync(
    "fio",
    [`--section=${section}`, "--output-format=json", `--output=${output}`, jobFile],
    {
      env: {
        ...process.env,
        NBD_URI: target.uri,
        RUNTIME: String(RUNTIME_SECONDS),
        SIZE: String(SIZE_BYTES),
      },
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  const seconds = (performance.now() - started) / 1000;
  const serverCpuPercent = ((cpuSeconds(target.pid) - startCpu) / seconds) * 100;
  const text = readFileSync(output, "utf8");
  const job = (
    JSON.parse(text.slice(text.indexOf("{"))) as { jobs: Array<Record<string, unknown>> }
  ).jobs[0] as {
    read: FioSide;
    write: FioSide;
    sync?: { lat_ns?: { percentile?: Record<string, number> } };
    usr_cpu: number;
    sys_cpu: number;
    error: number;
  };
  if (job.error !== 0) throw new Error(`fio ${section} on ${target.name}: error ${job.error}`);
  const side = job.read.io_bytes > 0 ? job.read : job.write;
  const percentile = (p: string): number => (side.clat_ns?.percentile?.[p] ?? Number.NaN) / 1000;
  const syncP50 = job.sync?.lat_ns?.percentile?.["50.000000"];
  return {
    iops: side.iops,
    megabytesPerSecond: side.bw_bytes / 1e6,
    p50Us: percentile("50.000000"),
    p99Us: percentile("99.000000"),
    syncP50Us: syncP50 === undefined ? undefined : syncP50 / 1000,
    serverCpuPercent,
    fioCpuPercent: job.usr_cpu + job.sys_cpu,
  };
}

const targets = [await startNbdkit(), await startHes()];
const results = new Map<string, Map<string, JobResult>>();
try {
  for (const target of targets) {
    console.log(`prefill ${target.name} (${SIZE_BYTES} bytes, 1 MiB writes at depth 16)…`);
    runFio(target, "prefill");
    results.set(target.name, new Map());
  }
  for (const job of JOBS) {
    for (const target of targets) {
      console.log(`${job} on ${target.name}…`);
      results.get(target.name)?.set(job, runFio(target, job));
    }
  }
} finally {
  for (const target of targets) target.child.kill("SIGTERM");
}

const fmt = (value: number, digits = 0): string =>
  Number.isFinite(value) ? value.toLocaleString("en-US", { maximumFractionDigits: digits }) : "–";
// CPU per IO holds steadier than throughput when other load shares the machine.
const cpuPerOpUs = (r: JobResult): number => (r.serverCpuPercent / 100 / r.iops) * 1e6;
console.log(
  "\n| job | target | IOPS | MB/s | p50 µs | p99 µs | flush p50 µs | server CPU % | " +
    "server CPU µs/IO | fio CPU % |",
);
console.log("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const job of JOBS) {
  for (const target of targets) {
    const r = results.get(target.name)?.get(job);
    if (r === undefined) continue;
    console.log(
      `| ${job} | ${target.name} | ${fmt(r.iops)} | ${fmt(r.megabytesPerSecond, 1)} | ` +
        `${fmt(r.p50Us)} | ` +
        `${fmt(r.p99Us)} | ${r.syncP50Us === undefined ? "" : fmt(r.syncP50Us)} | ` +
        `${fmt(r.serverCpuPercent)} | ${fmt(cpuPerOpUs(r), 1)} | ${fmt(r.fioCpuPercent)} |`,
    );
  }
}
console.log(
  "\nhes ÷ nbdkit (throughput; latency as nbdkit p50 ÷ hes p50, so > 1 means hes is faster):",
);
for (const job of JOBS) {
  const kit = results.get(targets[0]?.name ?? "")?.get(job);
  const hes = results.get(targets[1]?.name ?? "")?.get(job);
  if (kit === undefined || hes === undefined) continue;
  console.log(
    `  ${job.padEnd(22)} throughput ${(hes.iops / kit.iops).toFixed(2)}×, ` +
      `p50 ${(kit.p50Us / hes.p50Us).toFixed(2)}×, ` +
      `server CPU per IO ${(cpuPerOpUs(hes) / cpuPerOpUs(kit)).toFixed(2)}× nbdkit's`,
  );
}
rmSync(work, { recursive: true, force: true });
