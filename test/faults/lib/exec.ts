/**
 * Running the system tools the fault suite drives (ip, iptables, strace, mount): one helper
 * that fails loudly with the command line and its stderr, so a broken step is never silent.
 */
import { execFile, execFileSync } from "node:child_process";

/** Runs `file args…`, resolves with stdout; rejects with an Error naming the command. */
export function run(file: string, args: readonly string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (err, out, errOut) => {
        if (err === null) return resolve(out);
        reject(
          new Error(`${file} ${args.join(" ")} failed: ${err.message.trim()} ${errOut.trim()}`),
        );
      },
    );
  });
}

/** Like `run`, but resolves with undefined instead of failing (for idempotent cleanup). */
export async function runQuiet(file: string, args: readonly string[]): Promise<string | undefined> {
  try {
    return await run(file, args);
  } catch {
    return undefined;
  }
}

/**
 * Why the fault suite cannot run here, or undefined when it can: it needs root (namespaces,
 * iptables, mounts, ptrace) and the tools below.
 */
export function faultSuiteUnavailable(): string | undefined {
  if (process.platform !== "linux") return "the fault suite needs Linux network namespaces";
  if (process.getuid?.() !== 0) return "the fault suite needs root (namespaces, iptables, mounts)";
  for (const tool of ["ip", "iptables", "strace", "mount"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return `the fault suite needs '${tool}' on PATH`;
    }
  }
  return undefined;
}

/** Waits until `probe` returns a value (not undefined), polling; throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  pollMs = 20,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (performance.now() > deadline) {
      const why = lastError === undefined ? "" : `: last error ${String(lastError)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
