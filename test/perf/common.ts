/**
 * Shared helpers for benchmarks: the header every benchmark prints (machine, Node, commit,
 * parameters), latency percentiles, and a closed-loop load generator.
 */
import { execSync } from "node:child_process";
import { cpus, totalmem } from "node:os";

/** Prints what a reader needs to compare runs: machine, Node, commit, parameters. */
export function printHeader(title: string, parameters: Record<string, unknown>): void {
  let commit = "unknown";
  try {
    commit = execSync("git rev-parse --short HEAD", { stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
    const dirty = execSync("git status --porcelain", { stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
    if (dirty !== "") commit += "+dirty";
  } catch {
    // not a git checkout
  }
  const cpu = cpus();
  console.log(`# ${title}`);
  console.log(
    `machine: ${cpu.length} × ${cpu[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ` +
      `node ${process.version}; commit ${commit}; ${new Date().toISOString()}`,
  );
  console.log(`parameters: ${JSON.stringify(parameters)}`);
}

/** Percentile of an unsorted sample (nearest rank). */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

/** Result of a closed-loop run. */
export interface LoadResult {
  readonly ops: number;
  readonly seconds: number;
  readonly opsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/**
 * Runs `operation` with `depth` callers in a closed loop for `seconds` (after `warmupSeconds`)
 * and reports throughput and latency. Latencies are sampled (at most `samplesMax`).
 */
export async function closedLoop(
  operation: () => Promise<unknown>,
  depth: number,
  seconds: number,
  warmupSeconds = 1,
  samplesMax = 200_000,
): Promise<LoadResult> {
  let measuring = false;
  let stop = false;
  let ops = 0;
  const latencies: number[] = [];
  const worker = async (): Promise<void> => {
    while (!stop) {
      const start = performance.now();
      await operation();
      if (measuring) {
        ops++;
        if (latencies.length < samplesMax) latencies.push(performance.now() - start);
      }
    }
  };
  const workers = Array.from({ length: depth }, worker);
  await new Promise((resolve) => setTimeout(resolve, warmupSeconds * 1000));
  measuring = true;
  const begin = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  measuring = false;
  const elapsed = (performance.now() - begin) / 1000;
  stop = true;
  await Promise.all(workers);
  return {
    ops,
    seconds: elapsed,
    opsPerSecond: ops / elapsed,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}
