/**
 * A process the suite starts inside a network namespace (`ip netns exec` execs the command in
 * place, so the pid we hold is the process itself and signals reach it directly), with stdout
 * and stderr appended to log files that the failure report collects.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";

export interface SpawnOptions {
  /** Run inside this network namespace; undefined = the caller's namespace. */
  readonly namespace?: string;
  readonly command: string;
  readonly args: readonly string[];
  /** Directory for `<name>.out.log` / `<name>.err.log`. */
  readonly logDir: string;
  readonly name: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
}

/** How a process ended: exit code, or the signal that ended it. */
export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export class ManagedProcess {
  readonly exited: Promise<ExitStatus>;
  private exitStatus: ExitStatus | undefined;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    readonly stdoutPath: string,
    readonly stderrPath: string,
  ) {
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        this.exitStatus = { code, signal };
        resolve(this.exitStatus);
      });
    });
  }

  static spawn(options: SpawnOptions): ManagedProcess {
    mkdirSync(options.logDir, { recursive: true });
    const stdoutPath = join(options.logDir, `${options.name}.out.log`);
    const stderrPath = join(options.logDir, `${options.name}.err.log`);
    const out = openSync(stdoutPath, "a");
    const errOut = openSync(stderrPath, "a");
    const [command, args] =
      options.namespace === undefined
        ? [options.command, options.args]
        : ["ip", ["netns", "exec", options.namespace, options.command, ...options.args]];
    try {
      const child = spawn(command, args, {
        stdio: ["ignore", out, errOut],
        env: { ...process.env, ...options.env },
        cwd: options.cwd,
      });
      return new ManagedProcess(options.name, child, stdoutPath, stderrPath);
    } finally {
      closeSync(out);
      closeSync(errOut);
    }
  }

  get pid(): number {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error(`${this.name} has no pid (spawn failed)`);
    return pid;
  }

  /** Undefined while running. */
  get status(): ExitStatus | undefined {
    return this.exitStatus;
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** Sends a signal; false if the process has already gone. */
  signal(signal: NodeJS.Signals): boolean {
    if (!this.running) return false;
    try {
      return this.child.kill(signal);
    } catch {
      return false;
    }
  }

  /** kill -9 and wait for the exit to be reaped. */
  async kill9(): Promise<ExitStatus> {
    this.signal("SIGCONT");
    this.signal("SIGKILL");
    return this.exited;
  }

  /** SIGTERM, then SIGKILL if it has not gone within `graceMs`. */
  async stop(graceMs = 5_000): Promise<ExitStatus> {
    if (!this.running) return this.exited;
    this.signal("SIGCONT");
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}
