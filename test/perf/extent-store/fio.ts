/**
 * fio, run on the benchmark's file with the job shapes of shared/bench/fio/local.fio (plus the
 * synced depth-32 and blender shapes the extent-store targets compare against), parsed from
 * fio's JSON output.
 */
import { execFileSync } from "node:child_process";

/** One fio result: operations per second, bytes per second, latency figures in ms. */
export interface FioResult {
  readonly name: string;
  readonly args: readonly string[];
  readonly iops: number;
  readonly bytesPerSecond: number;
  /** Mean time per operation including its fdatasync, when synced (1 / per-job IOPS). */
  readonly opMeanMs: number;
  /** p50 of the write/read completion latency (without the fdatasync). */
  readonly p50Ms: number;
  /** p50 of the fdatasync latency, when synced. */
  readonly syncP50Ms: number | undefined;
}

/** The fio jobs, by name: extra arguments on top of the common ones. */
export const FIO_JOBS: Record<string, readonly string[]> = {
  "randwrite-4k-qd1-sync": [
    "--ioengine=psync",
    "--rw=randwrite",
    "--bs=4k",
    "--iodepth=1",
    "--fdatasync=1",
  ],
  "randwrite-4k-qd32-sync": ["--rw=randwrite", "--bs=4k", "--iodepth=32", "--fdatasync=1"],
  "randwrite-4k-qd32": ["--rw=randwrite", "--bs=4k", "--iodepth=32"],
  "randread-4k-qd32": ["--rw=randread", "--bs=4k", "--iodepth=32"],
  "write-1m-qd8": ["--rw=write", "--bs=1M", "--iodepth=8"],
  "read-1m-qd8": ["--rw=read", "--bs=1M", "--iodepth=8"],
  // 16 sequential writers, each in its own 64 MiB region, each write followed by fdatasync.
  "blender-16x-seq-4k-sync": [
    "--ioengine=psync",
    "--rw=write",
    "--bs=4k",
    "--fdatasync=1",
    "--numjobs=16",
    "--size=64M",
    "--offset_increment=64M",
  ],
};

function commonArgs(file: string, sizeBytes: number, seconds: number): string[] {
  return [
    `--filename=${file}`,
    `--size=${sizeBytes}`,
    "--direct=1",
    "--ioengine=libaio",
    "--time_based=1",
    `--runtime=${seconds}`,
    "--ramp_time=1",
    "--group_reporting=1",
    "--output-format=json",
  ];
}

/** Writes the whole file once (so reads hit real blocks and writes allocate nothing). */
export function fioPrefill(file: string, sizeBytes: number): void {
  execFileSync("fio", [
    "--name=prefill",
    `--filename=${file}`,
    `--size=${sizeBytes}`,
    "--direct=1",
    "--ioengine=libaio",
    "--rw=write",
    "--bs=1M",
    "--iodepth=16",
    "--output-format=json",
  ]);
}

interface FioSide {
  readonly iops: number;
  readonly bw_bytes: number;
  readonly clat_ns: { readonly percentile?: Record<string, number> };
}

/** Runs one job; later arguments override earlier ones (fio keeps the last). */
export function runFio(name: string, file: string, sizeBytes: number, seconds: number): FioResult {
  const args = [
    `--name=${name}`,
    ...commonArgs(file, sizeBytes, seconds),
    ...(FIO_JOBS[name] ?? []),
  ];
  const output = execFileSync("fio", args, { maxBuffer: 64 * 1024 * 1024 }).toString();
  const json = JSON.parse(output.slice(output.indexOf("{"))) as {
    jobs: Array<{
      read: FioSide;
      write: FioSide;
      sync?: { lat_ns?: { percentile?: Record<string, number> } };
    }>;
  };
  const job = json.jobs[0];
  if (job === undefined) throw new Error(`fio ${name}: no job in output`);
  const side = job.write.iops > job.read.iops ? job.write : job.read;
  const jobs = name.startsWith("blender") ? 16 : 1;
  const synced = args.includes("--fdatasync=1");
  const depth = Number(args.find((arg) => arg.startsWith("--iodepth="))?.split("=")[1] ?? 1);
  return {
    name,
    args,
    iops: side.iops,
    bytesPerSecond: side.bw_bytes,
    opMeanMs: (1000 * jobs * (args.includes("--ioengine=psync") ? 1 : depth)) / side.iops,
    p50Ms: (side.clat_ns.percentile?.["50.000000"] ?? Number.NaN) / 1e6,
    syncP50Ms: synced
      ? (job.sync?.lat_ns?.percentile?.["50.000000"] ?? Number.NaN) / 1e6
      : undefined,
  };
}
