/**
 * Running real NBD clients (qemu-img, qemu-io, nbdcopy, nbdinfo, nbdsh, fio) from tests.
 *
 * Tools run asynchronously: the server under test lives in the same process, so a
 * synchronous spawn would stop it from answering. A missing tool skips the test with the
 * reason, except under CI (CI=true), where every tool must be installed and a missing one
 * fails the test.
 */
import { spawn, spawnSync } from "node:child_process";

/** The system paths first: nbdsh runs `python3 -m nbd`, and the Debian module lives there. */
export const TOOL_ENV: NodeJS.ProcessEnv = {
  ...process.env,
  PATH: `/usr/bin:/bin:${process.env.PATH ?? ""}`,
  LIBNBD_DEBUG: "0",
};

const probes: Record<string, string[]> = {
  "qemu-img": ["--version"],
  "qemu-io": ["--version"],
  nbdcopy: ["--version"],
  nbdinfo: ["--version"],
  nbdsh: ["-c", "import nbd"],
  fio: ["--version"],
  openssl: ["version"],
};

const available = new Map<string, boolean>();

function has(tool: string): boolean {
  let known = available.get(tool);
  if (known === undefined) {
    const probe = spawnSync(tool, probes[tool] ?? ["--version"], {
      env: TOOL_ENV,
      stdio: "ignore",
    });
    known = probe.status === 0;
    available.set(tool, known);
  }
  return known;
}

/** A `skip` value for node:test: false when every tool is there (or under CI), else why. */
export function skipWithout(...tools: string[]): string | false {
  if (process.env.CI === "true") return false;
  const missing = tools.filter((tool) => !has(tool));
  return missing.length === 0
    ? false
    : `needs ${missing.join(", ")}, not installed here (CI installs them)`;
}

/** Result of a tool run. */
export interface RunResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a tool; resolves with its output whatever the exit status (use `run` to require 0). */
export function runAny(
  tool: string,
  args: readonly string[],
  timeoutMs = 60_000,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(tool, args, { env: TOOL_ENV, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (text: string) => {
      stdout += text;
    });
    child.stderr.setEncoding("utf8").on("data", (text: string) => {
      stderr += text;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        error.code === "ENOENT"
          ? new Error(`${tool} is not installed (CI requires it: see .ci/run)`)
          : error,
      );
    });
    child.once("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ status: status ?? (signal === null ? -1 : 128), stdout, stderr });
    });
  });
}

/** Runs a tool and requires exit status 0; the error carries its output. */
export async function run(
  tool: string,
  args: readonly string[],
  timeoutMs?: number,
): Promise<string> {
  const result = await runAny(tool, args, timeoutMs);
  if (result.status !== 0) {
    throw new Error(
      `${tool} ${args.join(" ")} exited ${result.status}\n` +
        `stdout: ${result.stdout}\nstderr: ${result.stderr}`,
    );
  }
  return result.stdout;
}
