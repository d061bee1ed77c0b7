/**
 * Disk faults on real processes and real files:
 * - `SyscallFault`: strace attached to a running process (`-f -p PID`) injecting an error
 *   (EIO, ENOSPC) or a delay into chosen syscalls, restricted with `-P` to the data files so
 *   logs and sockets keep working; detaching ends the fault.
 * - `SmallFilesystem`: a size-limited tmpfs or a loop-mounted ext4 image at a directory, and
 *   `fill()` to take its last free byte (disk full), `unfill()` to give it back.
 * - `flipBits`, `saveCopy`/`restoreCopy` (stale contents), `wipe`: for a stopped node's files.
 */
import { randomUUID } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { Prng } from "@hes/base";
import { run, runQuiet, waitFor } from "./exec.js";
import { BIT_FLIPS_MAX, STRACE_ATTACH_TIMEOUT_MS } from "./limits.js";
import { ManagedProcess } from "./process.js";

export type InjectedError = "EIO" | "ENOSPC";

export interface SyscallFaultOptions {
  readonly pid: number;
  /** e.g. ["fdatasync"], ["write", "pwrite64", "pwritev"]. */
  readonly syscalls: readonly string[];
  readonly fault: { readonly error: InjectedError } | { readonly delayUs: number };
  /** Only syscalls on these paths (strace -P); empty = every call (stdout too!). */
  readonly paths: readonly string[];
  readonly logDir: string;
  readonly name: string;
}

function tracerPids(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
    return Number(/TracerPid:\s+(\d+)/.exec(status)?.[1] ?? "0");
  });
}

/** An strace injecting into a running process; `detach()` removes the fault. */
export class SyscallFault {
  private constructor(
    private readonly tracer: ManagedProcess,
    readonly pid: number,
    readonly logPath: string,
  ) {}

  static async attach(options: SyscallFaultOptions): Promise<SyscallFault> {
    if (options.syscalls.length === 0) throw new RangeError("no syscalls to inject into");
    const list = options.syscalls.join(",");
    const action =
      "error" in options.fault
        ? `error=${options.fault.error}`
        : `delay_enter=${checkDelayUs(options.fault.delayUs)}`;
    const logPath = join(options.logDir, `${options.name}.strace.log`);
    const args = [
      ...["-f", "-p", String(options.pid), "-o", logPath],
      ...options.paths.flatMap((path) => ["-P", path]),
      ...["-e", `trace=${list}`, "-e", `inject=${list}:${action}`],
    ];
    const tracer = ManagedProcess.spawn({
      command: "strace",
      args,
      logDir: options.logDir,
      name: options.name,
    });
    const fault = new SyscallFault(tracer, options.pid, logPath);
    try {
      await waitFor(
        `strace attached to every thread of ${options.pid}`,
        () => {
          if (!tracer.running) throw new Error(`strace exited: ${JSON.stringify(tracer.status)}`);
          return tracerPids(options.pid).every((p) => p === tracer.pid) ? true : undefined;
        },
        STRACE_ATTACH_TIMEOUT_MS,
      );
    } catch (err) {
      await tracer.kill9();
      throw err;
    }
    return fault;
  }

  /** Injections strace has made so far (log lines marked INJECTED, or DELAYED for delays). */
  injectedCount(): number {
    try {
      return readFileSync(this.logPath, "utf8").match(/\((INJECTED|DELAYED)\)/g)?.length ?? 0;
    } catch {
      return 0;
    }
  }

  /** Detaches strace (SIGTERM makes it detach cleanly); the process runs on unharmed. */
  async detach(): Promise<void> {
    await this.tracer.stop(5_000);
    await waitFor(
      `strace detached from ${this.pid}`,
      () => {
        try {
          return tracerPids(this.pid).every((p) => p === 0) ? true : undefined;
        } catch {
          return true; // the target itself has gone
        }
      },
      STRACE_ATTACH_TIMEOUT_MS,
    );
  }
}

function checkDelayUs(delayUs: number): number {
  if (!Number.isInteger(delayUs) || delayUs <= 0 || delayUs > 60_000_000) {
    throw new RangeError(`delayUs must be an integer in 1..60e6, got ${delayUs}`);
  }
  return delayUs;
}

/** Every regular file under `dir` (for `paths` of a SyscallFault on a node's data dir). */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(path));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

export type SmallFilesystemKind = "tmpfs" | "ext4";

/** A size-limited filesystem mounted at `dir` for disk-full faults. */
export class SmallFilesystem {
  private fillPath: string | undefined;

  private constructor(
    readonly dir: string,
    private readonly imagePath: string | undefined,
  ) {}

  static async mount(
    dir: string,
    sizeBytes: number,
    kind: SmallFilesystemKind,
  ): Promise<SmallFilesystem> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1024 * 1024) {
      throw new RangeError(`sizeBytes must be ≥ 1 MiB, got ${sizeBytes}`);
    }
    mkdirSync(dir, { recursive: true });
    if (kind === "tmpfs") {
      await run("mount", ["-t", "tmpfs", "-o", `size=${sizeBytes}`, "tmpfs", dir]);
      return new SmallFilesystem(dir, undefined);
    }
    const imagePath = `${dir.replace(/\/$/, "")}.ext4.img`;
    closeSync(openSync(imagePath, "w"));
    await run("truncate", ["-s", String(sizeBytes), imagePath]);
    await run("mkfs.ext4", ["-q", "-F", "-m", "0", imagePath]);
    await run("mount", ["-o", "loop", imagePath, dir]);
    return new SmallFilesystem(dir, imagePath);
  }

  /** Takes every free byte with a filler file; returns how many it took. */
  fill(): number {
    if (this.fillPath !== undefined) throw new Error("already full");
    this.fillPath = join(this.dir, `.hesf-fill-${randomUUID()}`);
    const fd = openSync(this.fillPath, "w");
    const block = Buffer.alloc(64 * 1024, 0xee);
    let takenBytes = 0;
    try {
      for (let size = block.length; size >= 512; ) {
        try {
          takenBytes += writeSync(fd, block, 0, size);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
          size /= 2;
        }
      }
    } finally {
      closeSync(fd);
    }
    return takenBytes;
  }

  /** Gives the filler's space back. */
  unfill(): void {
    if (this.fillPath !== undefined) rmSync(this.fillPath, { force: true });
    this.fillPath = undefined;
  }

  async unmount(): Promise<void> {
    await runQuiet("umount", ["-l", this.dir]);
    if (this.imagePath !== undefined) rmSync(this.imagePath, { force: true });
  }
}

/** One flipped bit. */
export interface FlippedBit {
  readonly offsetBytes: number;
  readonly bit: number;
}

/**
 * Flips `count` distinct random bits of a (stopped node's) file, within
 * [fromBytes, toBytes) if given; returns them so a report can say exactly what was done.
 */
export function flipBits(
  path: string,
  prng: Prng,
  count: number,
  range?: { fromBytes: number; toBytes: number },
): FlippedBit[] {
  if (!Number.isInteger(count) || count < 1 || count > BIT_FLIPS_MAX) {
    throw new RangeError(`count must be in 1..${BIT_FLIPS_MAX}, got ${count}`);
  }
  const sizeBytes = statSync(path).size;
  const from = range?.fromBytes ?? 0;
  const to = Math.min(range?.toBytes ?? sizeBytes, sizeBytes);
  if (to - from < 1) throw new RangeError(`empty range in ${path} (${sizeBytes} bytes)`);
  const chosen = new Map<string, FlippedBit>();
  while (chosen.size < Math.min(count, (to - from) * 8)) {
    const flip = { offsetBytes: from + prng.int(to - from), bit: prng.int(8) };
    chosen.set(`${flip.offsetBytes}:${flip.bit}`, flip);
  }
  const fd = openSync(path, "r+");
  try {
    const byte = Buffer.alloc(1);
    for (const { offsetBytes, bit } of chosen.values()) {
      readSync(fd, byte, 0, 1, offsetBytes);
      byte[0] = (byte[0] as number) ^ (1 << bit);
      writeSync(fd, byte, 0, 1, offsetBytes);
    }
  } finally {
    closeSync(fd);
  }
  return [...chosen.values()];
}

/** Copies every file under `dir` to `saveDir` (to restore later as stale contents). */
export function saveCopy(dir: string, saveDir: string): void {
  rmSync(saveDir, { recursive: true, force: true });
  for (const file of filesUnder(dir)) {
    const dest = join(saveDir, file.slice(dir.length));
    mkdirSync(join(dest, ".."), { recursive: true });
    copyFileSync(file, dest);
  }
}

/** Puts saved (now stale) copies back over a stopped node's files. */
export function restoreCopy(saveDir: string, dir: string): void {
  for (const file of filesUnder(saveDir)) {
    const dest = join(dir, file.slice(saveDir.length));
    mkdirSync(join(dest, ".."), { recursive: true });
    copyFileSync(file, dest);
  }
}

/** A node wiped: its data directory emptied (the directory itself stays). */
export function wipe(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
}
