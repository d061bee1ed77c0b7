/**
 * The stand-in target: one nbdkit process in node 1's namespace serving a volume on a unix
 * socket. With the `file` plugin every FUA write is fdatasync'd, so kills lose nothing that was
 * acknowledged and the suite must pass; with the `memory` plugin ("broken": acknowledges from
 * RAM) a kill -9 loses every acknowledged write, and the suite must say so. This lets the whole
 * pipeline (schedule, faults, workloads, checker, report) run and fail today, before the host.
 */
import { closeSync, mkdirSync, openSync, rmSync } from "node:fs";
import { join } from "node:path";
import { run, waitFor } from "./exec.js";
import type { NbdAddress } from "./nbd-client.js";
import { ManagedProcess } from "./process.js";
import { probeService, type Role, type Target } from "./target.js";
import type { Topology } from "./topology.js";

export interface NbdkitTargetOptions {
  readonly topology: Topology;
  readonly workDir: string;
  readonly logDir: string;
  readonly sizeBytes: number;
  /** true: the memory plugin, which loses everything on a crash (must be caught). */
  readonly broken: boolean;
}

export class NbdkitTarget implements Target {
  readonly kind: string;
  readonly nodeNumbers = [1];
  readonly failsOver = false;
  private current: ManagedProcess | undefined;
  private readonly socketPath: string;
  private readonly logs: string[] = [];

  constructor(private readonly options: NbdkitTargetOptions) {
    this.kind = options.broken ? "nbdkit-memory (broken on purpose)" : "nbdkit-file";
    this.socketPath = join(options.workDir, "nbd.sock");
  }

  get topology(): Topology {
    return this.options.topology;
  }

  async start(): Promise<void> {
    mkdirSync(this.dataDir(1), { recursive: true });
    const image = join(this.dataDir(1), "volume.img");
    closeSync(openSync(image, "a"));
    await run("truncate", ["-s", String(this.options.sizeBytes), image]);
    await this.restart(1);
  }

  exportAddress(): NbdAddress {
    return { path: this.socketPath, exportName: "" };
  }

  process(node: number): ManagedProcess | undefined {
    return node === 1 && this.current?.running === true ? this.current : undefined;
  }

  async restart(node: number): Promise<void> {
    if (node !== 1) throw new RangeError(`the stand-in has only node 1, not ${node}`);
    if (this.current?.running === true) throw new Error("node 1 is already running");
    rmSync(this.socketPath, { force: true });
    const plugin = this.options.broken
      ? ["memory", String(this.options.sizeBytes)]
      : ["file", join(this.dataDir(1), "volume.img")];
    this.current = ManagedProcess.spawn({
      namespace: this.topology.node(1).namespace,
      command: "nbdkit",
      // One request at a time across connections: the file plugin's reads run beside its
      // writes, and a read of a block being written can see half of it (a torn 4 KiB block
      // failed the self-test once, in CI). The suite tests hes, not nbdkit's page cache.
      args: [
        "-f",
        "-U",
        this.socketPath,
        "--filter=noparallel",
        ...plugin,
        "serialize=all-requests",
      ],
      logDir: this.options.logDir,
      name: "node1",
    });
    this.logs.push(this.current.stdoutPath, this.current.stderrPath);
    await this.awaitService(10_000);
  }

  dataDir(node: number): string {
    return join(this.options.workDir, `node${node}`, "data");
  }

  async nodeWithRole(role: Role, exclude: readonly number[] = []): Promise<number | undefined> {
    void role; // one node holds every role
    return exclude.includes(1) ? undefined : 1;
  }

  async awaitService(timeoutMs: number): Promise<number> {
    const start = performance.now();
    await waitFor(
      "the export to serve a read",
      () => probeService(this.exportAddress()),
      timeoutMs,
      50,
    );
    return performance.now() - start;
  }

  async failover(deadNode: number): Promise<void> {
    // Nowhere to fail over to: the scenario restarts the node itself.
    void deadNode;
  }

  async stop(): Promise<void> {
    await this.current?.stop(3_000);
  }

  logFiles(): string[] {
    return [...new Set(this.logs)];
  }
}
