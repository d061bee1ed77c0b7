/**
 * fio through an NBD export (`ioengine=nbd`) with `verify=crc32c`, in two phases so a crash
 * can sit between them: `fioWrite` writes with verify headers and saves fio's verify state
 * (which writes completed, which were in flight) when it ends, however it ends; `fioVerify`
 * reloads that state and reads back only the writes that completed. At depth 1 at most one
 * write is in flight when a node dies, so an in-flight write is never mistaken for a loss.
 */
import { type ChildProcess, execFile } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { NbdAddress } from "./nbd-client.js";

export interface FioJob {
  readonly address: NbdAddress;
  /** fio's working directory: its verify state and JSON output live here. */
  readonly stateDir: string;
  /** Bytes of the export the job covers (from offset 0). */
  readonly sizeBytes: number;
  /** Where the job's region starts on the export. */
  readonly offsetBytes?: number;
  readonly blockBytes?: number;
  readonly iodepth?: number;
  /** Stop after this many IOs, or after `runtimeS` seconds, whichever is first. */
  readonly ios?: number;
  readonly runtimeS?: number;
  readonly seed?: number;
}

export interface FioResult {
  /** fio's exit status and its job error (0 = none). */
  readonly exitCode: number;
  readonly jobError: number;
  readonly writeBytes: number;
  readonly readBytes: number;
  readonly writeIops: number;
  /** fio's own complaints (e.g. "verify: bad magic header …"). */
  readonly stderr: string;
}

/** The nbd engine's URI for an address (libnbd syntax). */
export function nbdUri(address: NbdAddress): string {
  const name = encodeURIComponent(address.exportName);
  if ("path" in address) return `nbd+unix:///${name}?socket=${address.path}`;
  return `nbd://${address.host}:${address.port}/${name}`;
}

function baseArgs(job: FioJob): string[] {
  return [
    "--name=hesf",
    "--ioengine=nbd",
    `--uri=${nbdUri(job.address)}`,
    "--rw=randwrite",
    `--bs=${job.blockBytes ?? 4096}`,
    `--size=${job.sizeBytes}`,
    `--offset=${job.offsetBytes ?? 0}`,
    `--iodepth=${job.iodepth ?? 1}`,
    "--verify=crc32c",
    `--randseed=${job.seed ?? 1}`,
    ...(job.ios === undefined ? [] : [`--number_ios=${job.ios}`]),
  ];
}

/** A running fio; `stop()` sends SIGINT, on which fio ends its job and saves its state. */
export interface RunningFio {
  readonly result: Promise<FioResult>;
  stop(): void;
}

function runFio(job: FioJob, args: string[], outputName: string, timeoutMs: number): RunningFio {
  mkdirSync(job.stateDir, { recursive: true });
  const output = join(job.stateDir, outputName);
  let child: ChildProcess | undefined;
  const result = new Promise<FioResult>((resolve) => {
    const all = [...args, "--output-format=json", `--output=${output}`];
    child = execFile("fio", all, { cwd: job.stateDir, timeout: timeoutMs }, (err, _out, stderr) => {
      const exitCode = err === null ? 0 : typeof err.code === "number" ? err.code : -1;
      resolve({ ...parseReport(output), exitCode, stderr });
    });
  });
  return { result, stop: () => child?.kill("SIGINT") };
}

function parseReport(output: string): Omit<FioResult, "exitCode" | "stderr"> {
  let parsed: { jobs?: unknown[] } = {};
  try {
    const text = readFileSync(output, "utf8");
    parsed = JSON.parse(text.slice(text.indexOf("{")));
  } catch {
    // fio died before writing its report: the exit code and stderr say why
  }
  const j = (parsed.jobs?.[0] ?? {}) as {
    error?: number;
    write?: { io_bytes?: number; iops?: number };
    read?: { io_bytes?: number };
  };
  return {
    jobError: j.error ?? -1,
    writeBytes: j.write?.io_bytes ?? 0,
    readBytes: j.read?.io_bytes ?? 0,
    writeIops: j.write?.iops ?? 0,
  };
}

/** Phase 1: verified writes, saving the verify state at exit (also when the export dies). */
export function fioWrite(job: FioJob): Promise<FioResult> {
  return startFioWrite(job).result;
}

/** Phase 1, stoppable: for a workload that runs until the scenario ends. */
export function startFioWrite(job: FioJob): RunningFio {
  const args = [
    ...baseArgs(job),
    "--do_verify=0",
    "--verify_state_save=1",
    ...(job.runtimeS === undefined ? [] : ["--time_based", `--runtime=${job.runtimeS}`]),
  ];
  return runFio(job, args, "write.json", ((job.runtimeS ?? 60) + 60) * 1000);
}

/** Phase 2: read back and check every write phase 1 completed. */
export function fioVerify(job: FioJob): Promise<FioResult> {
  const args = [...baseArgs(job), "--verify_only", "--verify_state_load=1", "--verify_fatal=1"];
  return runFio(job, args, "verify.json", 120_000).result;
}
