/**
 * The real system as a scenario target, driven only through the `hes` CLI contract (issue 7):
 *   hes cluster init --nodes N --dir DIR --hosts A,B,… [--insecure-development] [--disk-size S]
 *   hes node start --config FILE                      (one process per node namespace)
 *   hes status --json --config FILE                   (protobuf JSON of ClusterStatus)
 *   hes volume create NAME --size S --replicas R --chunk-size C --config FILE
 *   hes export NAME --nbd unix:PATH --config FILE     (on the node that is to serve it)
 * Each node lives in its own namespace at 10.77.0.(10+N): `--hosts` makes init put those
 * addresses in the configs and in each node's certificate, so the cluster runs with mutual TLS
 * (the default; HES_FAULTS_TLS=0 runs it with --insecure-development). The addresses are still
 * rewritten after init, so a hes without `--hosts` can be driven insecurely.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { run, waitFor } from "./exec.js";
import type { NbdAddress } from "./nbd-client.js";
import { ManagedProcess } from "./process.js";
import { probeService, type Role, type Target } from "./target.js";
import type { Topology } from "./topology.js";

/** How to run `hes`: node with the source conditions, on the package's bin. */
export interface HesCommand {
  readonly command: string;
  readonly args: readonly string[];
  readonly cwd: string;
}

/**
 * Finds a `hes` that can start nodes: $HES_BIN (a bin .mjs), else packages/cli's `bin.hes`.
 * Returns why not when there is none yet (the host has not landed): scenarios then skip.
 */
export function detectHes(repoRoot: string): { hes: HesCommand } | { missing: string } {
  let bin = process.env.HES_BIN;
  if (bin === undefined) {
    const manifest = JSON.parse(readFileSync(join(repoRoot, "packages/cli/package.json"), "utf8"));
    const declared = typeof manifest.bin === "string" ? manifest.bin : manifest.bin?.hes;
    if (typeof declared !== "string") {
      return {
        missing: "packages/cli declares no `hes` bin yet (the host, issue 7, has not landed)",
      };
    }
    bin = resolve(repoRoot, "packages/cli", declared);
  }
  if (!existsSync(bin)) return { missing: `the hes bin ${bin} does not exist` };
  const cwd = process.env.HES_BIN === undefined ? repoRoot : resolve(dirname(bin), "../../..");
  // The built bin (`pnpm faults` runs `tsc -b` first), as users run it: under tsx every
  // `hes export` of a failover spent about a second more compiling the sources.
  const hes = { command: process.execPath, args: [bin], cwd };
  const probe = spawnSync(hes.command, [...hes.args, "node", "start", "--help"], {
    cwd,
    encoding: "utf8",
    timeout: 60_000,
  });
  if (probe.status !== 0 || !probe.stdout.includes("--config")) {
    const why = `${probe.stderr ?? ""}${probe.stdout ?? ""}`.trim().slice(0, 300);
    return {
      missing: `\`hes node start --help\` does not work yet (exit ${probe.status}): ${why}`,
    };
  }
  return { hes };
}

/** The host refused something the suite needs (e.g. `hes export` unsupported): skip, not fail. */
export class HostNotReadyError extends Error {}

export interface HesClusterOptions {
  readonly topology: Topology;
  readonly workDir: string;
  readonly logDir: string;
  readonly hes: HesCommand;
  readonly volumeName?: string;
  readonly volumeSizeBytes?: number;
  readonly replicas?: number;
  readonly chunkSizeBytes?: number;
  /** Extra environment for every node (the HES_FAULT_* switches of a broken build). */
  readonly nodeEnv?: Readonly<Record<string, string>>;
}

type Json = Record<string, unknown>;

export class HesCluster implements Target {
  readonly kind = "hes";
  readonly failsOver = true;
  readonly nodeNumbers: number[];
  private readonly processes = new Map<number, ManagedProcess>();
  private readonly exports: ManagedProcess[] = [];
  private exporter = 1;
  private exportSocket = "";
  /**
   * The volume must be exported (again) on `exporter`: its node restarted (the export went
   * with the old process), or it is the failover target. awaitService retries the export
   * until it works or the service bound passes: right after a failure, the volume may
   * rightly refuse for a moment (e.g. HES_QUORUM_LOST while a peer restarts).
   */
  private exportPending = false;
  /** `hes export` spawned → its socket exists (CLI start + takeover), for the failover note. */
  lastExportMs: number | undefined;
  /** `node N up` lines in each node's stdout log when it was last (re)started. */
  private readonly upLinesBefore = new Map<number, number>();
  private readonly clusterDir: string;

  constructor(private readonly options: HesClusterOptions) {
    this.nodeNumbers = options.topology.nodes.map((_, i) => i + 1);
    this.clusterDir = join(options.workDir, "cluster");
  }

  get topology(): Topology {
    return this.options.topology;
  }

  private get volumeName(): string {
    return this.options.volumeName ?? "faults";
  }

  configPath(node: number): string {
    return join(this.clusterDir, `node-${node}`, "config.json");
  }

  /** Runs a `hes` admin command from the client namespace against any node that answers. */
  async cli(args: readonly string[], timeoutMs = 30_000): Promise<string> {
    let lastError: unknown;
    const order = [this.exporter, ...this.nodeNumbers.filter((n) => n !== this.exporter)];
    for (const node of order.filter((n) => this.processes.get(n)?.running === true)) {
      try {
        return await run(
          "ip",
          [
            ...["netns", "exec", this.topology.client.namespace, this.options.hes.command],
            ...[...this.options.hes.args, ...args, "--config", this.configPath(node)],
          ],
          timeoutMs,
        );
      } catch (err) {
        lastError = err;
      }
    }
    throw new Error(`hes ${args.join(" ")}: no node answered: ${String(lastError)}`);
  }

  async status(): Promise<Json> {
    return JSON.parse(await this.cli(["status", "--json"], 15_000)) as Json;
  }

  async start(): Promise<void> {
    const { hes } = this.options;
    const secure = process.env.HES_FAULTS_TLS !== "0";
    const hosts = this.nodeNumbers.map((n) => this.topology.node(n).address);
    await run(
      hes.command,
      [
        ...[...hes.args, "cluster", "init", "--nodes", String(this.nodeNumbers.length)],
        ...["--dir", this.clusterDir, "--disk-size", "1GiB"],
        ...(secure ? ["--hosts", hosts.join(",")] : ["--insecure-development"]),
      ],
      120_000,
    );
    for (const node of this.nodeNumbers) this.rewriteAddresses(node);
    for (const node of this.nodeNumbers) await this.restart(node);
    await waitFor(
      "a Raft leader in `hes status`",
      async () => leaderOf(await this.status()),
      60_000,
      250,
    );
    const size = this.options.volumeSizeBytes ?? 256 * 1024 * 1024;
    await this.cli([
      ...["volume", "create", this.volumeName, "--size", `${size / 1024 / 1024}MiB`],
      ...["--replicas", String(this.options.replicas ?? 3)],
      ...["--chunk-size", `${(this.options.chunkSizeBytes ?? 16 * 1024 * 1024) / 1024 / 1024}MiB`],
    ]);
    await this.exportOn(1, false);
    await this.awaitService(30_000);
  }

  /** Points the node's own listeners and every peer entry at the namespace addresses. */
  private rewriteAddresses(node: number): void {
    const path = this.configPath(node);
    const config = JSON.parse(readFileSync(path, "utf8")) as Json;
    const address = (id: number) => this.topology.node(id).address;
    const listen = config.listen as Json;
    for (const key of ["control", "data", "nbd"]) {
      if (listen[key] !== undefined) listen[key] = withHost(listen[key], address(node));
    }
    for (const peer of config.peers as Array<Json & { nodeId: number }>) {
      for (const key of ["control", "data"]) peer[key] = withHost(peer[key], address(peer.nodeId));
    }
    writeFileSync(path, `${JSON.stringify(config, null, 2)}\n`);
  }

  /** Serves the volume from `node` on a fresh unix socket (taking over its lease). */
  private async exportOn(node: number, takeover: boolean): Promise<void> {
    const socket = join(this.options.workDir, `export-node${node}-${this.exports.length}.sock`);
    rmSync(socket, { force: true });
    const spawnedAt = performance.now();
    const exporter = ManagedProcess.spawn({
      namespace: this.topology.node(node).namespace,
      command: this.options.hes.command,
      args: [
        ...[...this.options.hes.args, "export", this.volumeName, "--nbd", `unix:${socket}`],
        ...(takeover ? ["--takeover"] : []),
        ...["--config", this.configPath(node)],
      ],
      logDir: this.options.logDir,
      name: `export-node${node}-${this.exports.length}`,
      cwd: this.options.hes.cwd,
    });
    this.exports.push(exporter);
    this.exporter = node;
    this.exportSocket = socket;
    const outcome = await waitFor(
      `hes export on node ${node} to create ${socket}`,
      () => {
        if (existsSync(socket)) return { exitCode: 0, why: "" };
        const status = exporter.status;
        if (status === undefined || status.code === 0) return undefined;
        const why = readFileSync(exporter.stderrPath, "utf8").trim().slice(0, 400);
        return { exitCode: status.code ?? -1, why };
      },
      30_000,
      50,
    );
    if (outcome.exitCode === 0) {
      this.lastExportMs = performance.now() - spawnedAt;
      return;
    }
    const error = `hes export on node ${node} exited ${outcome.exitCode}: ${outcome.why}`;
    // 29 = HES_UNSUPPORTED: this build has no export yet; that is "not ready", not a failure.
    throw outcome.exitCode === 29 ? new HostNotReadyError(error) : new Error(error);
  }

  exportAddress(): NbdAddress {
    return { path: this.exportSocket, exportName: "" };
  }

  process(node: number): ManagedProcess | undefined {
    const process = this.processes.get(node);
    return process?.running === true ? process : undefined;
  }

  async restart(node: number): Promise<void> {
    if (this.process(node) !== undefined) throw new Error(`node ${node} is already running`);
    const process = ManagedProcess.spawn({
      namespace: this.topology.node(node).namespace,
      command: this.options.hes.command,
      // The flag the example and docs/PERFORMANCE.md give every node: V8's heap sized for IO.
      args: [
        "--initial-old-space-size=256",
        ...this.options.hes.args,
        ...["node", "start", "--config", this.configPath(node)],
      ],
      logDir: this.options.logDir,
      name: `node${node}`,
      cwd: this.options.hes.cwd,
      env: { ...this.options.nodeEnv },
    });
    this.processes.set(node, process);
    this.upLinesBefore.set(node, upLines(process.stdoutPath, node));
    if (node === this.exporter && this.exportSocket !== "") this.exportPending = true;
  }

  /** Waits until the node restarted last printed `node N up` (its store and listeners open). */
  async awaitNodeUp(node: number, timeoutMs: number): Promise<void> {
    const process = this.processes.get(node);
    if (process === undefined) throw new Error(`node ${node} was never started`);
    const before = this.upLinesBefore.get(node) ?? 0;
    await waitFor(
      `node ${node} to print that it is up`,
      () => {
        if (upLines(process.stdoutPath, node) > before) return true;
        if (!process.running) throw new Error(`node ${node} exited while starting`);
        return undefined;
      },
      timeoutMs,
      50,
    );
  }

  dataDir(node: number): string {
    const config = JSON.parse(readFileSync(this.configPath(node), "utf8")) as Json;
    const dir = String(config.dataDir);
    return isAbsolute(dir) ? dir : resolve(dirname(this.configPath(node)), dir);
  }

  async nodeWithRole(role: Role, exclude: readonly number[] = []): Promise<number | undefined> {
    const live = this.nodeNumbers.filter(
      (n) => this.process(n) !== undefined && !exclude.includes(n),
    );
    if (role === "exporter") return live.includes(this.exporter) ? this.exporter : undefined;
    const leader = leaderOf(await this.status().catch(() => ({})));
    if (role === "leader")
      return leader !== undefined && live.includes(leader) ? leader : undefined;
    if (role === "replica") return live.find((n) => n !== leader && n !== this.exporter);
    if (role === "other") return live.find((n) => n !== this.exporter);
    return live[0];
  }

  async awaitService(timeoutMs: number): Promise<number> {
    const start = performance.now();
    await waitFor(
      "the volume to acknowledge a write",
      async () => {
        if (this.exportPending) {
          await this.exportOn(this.exporter, true);
          this.exportPending = false;
        }
        return probeService(this.exportAddress());
      },
      timeoutMs,
      50,
    );
    return performance.now() - start;
  }

  async failover(deadNode: number): Promise<void> {
    if (deadNode !== this.exporter) return;
    const next = this.nodeNumbers.find((n) => n !== deadNode && this.process(n) !== undefined);
    if (next === undefined) return; // everything is down: the heal restarts nodes, then we export
    this.exporter = next;
    this.exportPending = true;
    this.lastExportMs = undefined; // the failover note must not quote an earlier round's export
  }

  /** Waits until no volume has a degraded chunk or a replica still filling (rebuild done). */
  async awaitFullRedundancy(timeoutMs: number): Promise<void> {
    await waitFor(
      "full redundancy (no degraded chunk, no replica filling)",
      async () => {
        const volumes = ((await this.status()).volumes ?? []) as Array<{ health?: Json }>;
        const pending = volumes.some(
          (v) =>
            Number(v.health?.chunksDegraded ?? 0) > 0 || Number(v.health?.replicasFilling ?? 0) > 0,
        );
        return pending ? undefined : true;
      },
      timeoutMs,
      500,
    );
  }

  async stop(): Promise<void> {
    for (const exporter of this.exports) await exporter.stop(5_000);
    await Promise.all([...this.processes.values()].map((p) => p.stop(10_000)));
  }

  logFiles(): string[] {
    return [...this.processes.values(), ...this.exports].flatMap((p) => [
      p.stdoutPath,
      p.stderrPath,
    ]);
  }
}

/** How many times the node's stdout log says it came up (the log is appended across restarts). */
function upLines(path: string, node: number): number {
  if (!existsSync(path)) return 0;
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.startsWith(`node ${node} up`)).length;
}

/** A config address ("host:port" or { host, port }) with its host replaced. */
function withHost(address: unknown, host: string): unknown {
  if (typeof address === "string") return address.replace(/^[^:]+:/, `${host}:`);
  return { ...(address as Json), host };
}

/** The leader's node number from `hes status --json` (protobuf JSON omits 0 = none). */
export function leaderOf(status: Json): number | undefined {
  const id = Number(status.leaderId ?? 0);
  return Number.isInteger(id) && id > 0 ? id : undefined;
}
