/**
 * One hypervisor host, composed: its disks (ExtentStore over FileDisk), its gRPC control server
 * (mutual TLS) carrying the cluster member, its chunk-replica data-plane server (TLS), the
 * volumes it opens, their NBD exports, and its metrics endpoint.
 *
 * The cluster member (Raft + cluster map + admin service), the replica service and the volume
 * are built by other packages; the host takes them as `components` so that it composes whatever
 * exists and says plainly what does not (`host.status().composed`). Start order is bottom-up and
 * stop() runs it in reverse, so nothing is torn down while something above still uses it.
 *
 * Library code: no process.on, no process.exit, no timer outlives stop().
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import { HesError, type Logger, nullLogger } from "@hes/base";
import type { BlockDevice } from "@hes/blockdev";
import { ExtentStore, FileDisk, type StoreDisk } from "@hes/extent-store";
import { isLoopbackHost, NbdServer } from "@hes/nbd";
import {
  addService,
  bindServer,
  createServer,
  type FrameHandler,
  FrameServer,
  HostService,
} from "@hes/proto";
import type { ClusterControl } from "@hes/replication";
import { clusterComponents } from "./compose.js";
import { formatHostPort, type HostConfig, type HostPort, validateHostConfig } from "./config.js";
import { ackBeforeWriteDevice, anyHostFault, type HostFaults } from "./fault-hooks.js";
import { EXPORTS_MAX, GRPC_SHUTDOWN_GRACE_MS, OPEN_VOLUMES_MAX, STOP_DRAIN_MS } from "./limits.js";
import { HostMetrics, type MemberGauges, MetricsServer, meteredDevice } from "./metrics.js";
import { HOST_NODE_FLAGS, heapSizedForStorage } from "./node-flags.js";
import {
  dataPlaneServerTls,
  grpcChannelCredentials,
  grpcServerCredentials,
  loadTlsMaterial,
  type TlsMaterial,
} from "./tls.js";

/** A running cluster member (Raft, cluster map, admin service) as the host sees it. */
export interface HostMember {
  readonly control: ClusterControl;
  gauges(): MemberGauges;
  stop(): Promise<void>;
}

/** What a component factory is given. */
export interface HostContext {
  readonly config: HostConfig;
  readonly store: ExtentStore;
  readonly logger: Logger;
  /** The control server, not yet bound: register services on it. */
  readonly grpcServer: grpc.Server;
  /** Credentials for dialling peers' control servers (mTLS, or plaintext in development). */
  readonly grpcCredentials: grpc.ChannelCredentials;
  readonly tls: TlsMaterial | undefined;
}

/** An open volume: a block device plus how to close it (releasing its lease). */
export interface OpenedVolume {
  readonly device: BlockDevice;
  close(): Promise<void>;
  /** Takes a snapshot (drains in-flight IO, records it in the map, pins the replicas). */
  createSnapshot?(name: string): Promise<void>;
}

/** The pieces other packages build; each absent one is reported, never faked. */
export interface HostComponents {
  /** Starts the Raft member and cluster map and registers the admin service on the server. */
  readonly startMember?: (context: HostContext) => Promise<HostMember>;
  /** The chunk-replica service's handler over this node's store. */
  readonly replicaHandler?: (context: HostContext, member: HostMember | undefined) => FrameHandler;
  /** Opens a named volume on this host (blockdev's Volume). */
  readonly openVolume?: (
    context: HostContext,
    member: HostMember | undefined,
    name: string,
    options: { readonly takeover: boolean },
  ) => Promise<OpenedVolume>;
  /** Snapshots a volume that is not open anywhere (opened here without takeover, closed). */
  readonly snapshotVolume?: (
    context: HostContext,
    member: HostMember | undefined,
    name: string,
    snapshotName: string,
  ) => Promise<void>;
  /**
   * Rolls a volume back to one of its snapshots: opens it here without takeover (so a volume
   * open on another host is refused with HES_LEASE_HELD), rolls back, closes it.
   */
  readonly rollbackVolume?: (
    context: HostContext,
    member: HostMember | undefined,
    name: string,
    snapshotName: string,
  ) => Promise<void>;
}

export interface HostOptions {
  readonly logger?: Logger;
  readonly components?: HostComponents;
  /** Deliberately broken behaviour for the fault suite only (`hostFaultsFromEnv`). */
  readonly faults?: HostFaults;
}

/** Where an export listens: a unix socket, or TCP (TLS required off loopback). */
export type ExportTarget =
  | { readonly unix: string }
  | { readonly tcp: string; readonly tls?: { key: Buffer; cert: Buffer; ca?: Buffer } };

export interface HostStatus {
  readonly nodeId: number;
  readonly control: string;
  readonly data: string;
  readonly metrics: string | undefined;
  readonly volumes: readonly string[];
  readonly exports: readonly { name: string; address: string }[];
  readonly composed: {
    readonly member: boolean;
    readonly replicaService: boolean;
    readonly volumes: boolean;
  };
}

interface VolumeEntry {
  readonly opened: OpenedVolume;
  readonly metered: BlockDevice;
  /** Drops writes a broken build acknowledged but has not issued (see fault-hooks.ts). */
  readonly cancelFaults: () => void;
  exportAddress?: string;
}

export class Host {
  private readonly volumes = new Map<string, VolumeEntry>();
  /** Volumes being rolled back here (open for that alone; not usable meanwhile). */
  private readonly rollingBack = new Set<string>();
  private nbd: NbdServer | undefined;
  /** Unix sockets the NBD server listens on (it keeps them until stop). */
  private readonly nbdSockets = new Set<string>();
  private stopping: Promise<void> | undefined;
  private metricsServer: MetricsServer | undefined;

  private constructor(
    readonly config: HostConfig,
    private readonly context: HostContext,
    private readonly components: HostComponents,
    private readonly member: HostMember | undefined,
    private readonly frames: FrameServer,
    readonly metrics: HostMetrics,
    private readonly faults: HostFaults,
    readonly addresses: { control: HostPort; data: HostPort; metrics?: HostPort },
  ) {}

  /**
   * Validates `config` (RangeError/TypeError naming the field: nothing is opened before it
   * passes), then brings the host up bottom-up. If any step fails, what was started is stopped.
   */
  static async start(config: HostConfig, options: HostOptions = {}): Promise<Host> {
    const checked = validateHostConfig(JSON.parse(JSON.stringify(config)), process.cwd());
    const logger = (options.logger ?? nullLogger).child({ node: checked.nodeId });
    if (!heapSizedForStorage()) {
      logger.warn(
        { execArgv: process.execArgv, flags: HOST_NODE_FLAGS },
        "node runs without an initial old-space size: V8 will run a major GC every few MiB of " +
          "IO; start node with these flags (docs/PERFORMANCE.md)",
      );
    }
    const components = options.components ?? clusterComponents();
    const undo: (() => Promise<void>)[] = [];
    try {
      const tls = checked.tls === undefined ? undefined : await loadTlsMaterial(checked.tls);
      const store = await openStore(checked, logger);
      undo.push(() => store.close());
      const grpcServer = createServer();
      undo.push(() => shutdownGrpc(grpcServer));
      const grpcCredentials =
        tls === undefined
          ? (await import("@grpc/grpc-js")).credentials.createInsecure()
          : grpcChannelCredentials(tls);
      const context: HostContext = {
        config: checked,
        store,
        logger,
        grpcServer,
        grpcCredentials,
        tls,
      };
      const member = await components.startMember?.(context);
      if (member !== undefined) undo.push(() => member.stop());
      const hostRef: { current?: Host } = {};
      addService(grpcServer, HostService, hostService(hostRef), { logger });
      const controlPort = await bindServer(
        grpcServer,
        formatHostPort(checked.listen.control),
        tls === undefined ? undefined : grpcServerCredentials(tls),
      );
      const handler = components.replicaHandler?.(context, member) ?? refuseData;
      const frames = new FrameServer({
        handler,
        logger: logger.child({ component: "data-plane" }),
        ...(tls === undefined ? {} : { tls: dataPlaneServerTls(tls) }),
      });
      const data = (await frames.listen(checked.listen.data)) as HostPort;
      undo.push(() => frames.close(STOP_DRAIN_MS));
      const metrics = new HostMetrics(checked.nodeId);
      let metricsServer: MetricsServer | undefined;
      const faults = options.faults ?? {};
      if (anyHostFault(faults)) {
        logger.warn(
          { faults },
          "DELIBERATELY BROKEN HOST: fault hooks are on; acknowledged writes WILL be lost. " +
            "For the fault suite only; never run this on data you want to keep.",
        );
      }
      const host = new Host(checked, context, components, member, frames, metrics, faults, {
        control: { host: checked.listen.control.host, port: controlPort },
        data,
      });
      hostRef.current = host;
      if (checked.listen.metrics !== undefined) {
        metricsServer = await MetricsServer.listen(
          checked.listen.metrics,
          metrics,
          () => host.refreshGauges(),
          () => host.health(),
        );
        host.metricsServer = metricsServer;
        host.addresses.metrics = metricsServer.address;
      }
      logger.info({ control: controlPort, data: data.port }, "host started");
      return host;
    } catch (error) {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      throw error;
    }
  }

  /** The control-plane member, when one was composed. */
  get control(): ClusterControl | undefined {
    return this.member?.control;
  }

  get store(): ExtentStore {
    return this.context.store;
  }

  /**
   * Opens a volume on this host (its lease taken in the cluster map by the volume). With
   * `takeover`, a volume open elsewhere is taken over (the old owner gets HES_FENCED).
   */
  async openVolume(name: string, options: { takeover?: boolean } = {}): Promise<BlockDevice> {
    this.assertRunning();
    if (typeof name !== "string" || name.length === 0) throw new TypeError("name must be a string");
    const open = this.volumes.get(name);
    if (open !== undefined) return open.metered;
    if (this.rollingBack.has(name)) {
      throw new HesError("HES_BUSY", `volume ${name} is being rolled back on this host`);
    }
    if (this.volumes.size >= OPEN_VOLUMES_MAX) {
      throw new HesError("HES_BUSY", `${OPEN_VOLUMES_MAX} volumes are open on this host already`);
    }
    const opener = this.components.openVolume;
    if (opener === undefined) {
      throw new HesError("HES_UNSUPPORTED", "this host was composed without volumes (blockdev)");
    }
    const startedMs = performance.now();
    const opened = await opener(this.context, this.member, name, { takeover: !!options.takeover });
    this.context.logger.info(
      { volume: name, takeover: !!options.takeover, ms: Math.round(performance.now() - startedMs) },
      "volume opened",
    );
    let device = opened.device;
    let cancelFaults = (): void => undefined;
    if (this.faults.ackBeforeWrite === true) {
      const log = this.context.logger.child({ component: "fault-hooks", volume: name });
      log.warn("BROKEN: writes to this volume are acknowledged before they are written");
      const broken = ackBeforeWriteDevice(device, (error) =>
        log.warn({ err: error }, "a late (already acknowledged) write failed"),
      );
      device = broken.device;
      cancelFaults = () => broken.cancel();
    }
    const metered = meteredDevice(device, name, this.metrics);
    this.volumes.set(name, { opened, metered, cancelFaults });
    this.metrics.volumesOpen.set(this.volumes.size);
    return metered;
  }

  /** Opens (if needed) and exports a volume over NBD; resolves with the bound address. */
  async export(
    name: string,
    target: ExportTarget,
    options: { takeover?: boolean } = {},
  ): Promise<string> {
    this.assertRunning();
    await this.openVolume(name, options);
    const entry = this.volumes.get(name);
    if (entry === undefined) throw new HesError("HES_CLOSED", `volume ${name} closed meanwhile`);
    if (entry.exportAddress !== undefined) {
      throw new HesError("HES_ALREADY_EXISTS", `${name} is exported at ${entry.exportAddress}`);
    }
    const exported = [...this.volumes.values()].filter((v) => v.exportAddress !== undefined);
    if (exported.length >= EXPORTS_MAX) throw new HesError("HES_BUSY", "too many exports");
    this.nbd ??= new NbdServer({ logger: this.context.logger.child({ component: "nbd" }) });
    this.nbd.addExport({ name, device: entry.metered });
    entry.exportAddress = await this.listenNbd(target);
    return entry.exportAddress;
  }

  private async listenNbd(target: ExportTarget): Promise<string> {
    const nbd = this.nbd as NbdServer;
    if ("unix" in target) {
      // One server serves every export on every listener: a socket still listening from an
      // earlier export (since unexported) serves this one too.
      if (!this.nbdSockets.has(target.unix)) {
        await nbd.listen({ path: target.unix });
        this.nbdSockets.add(target.unix);
      }
      return `unix:${target.unix}`;
    }
    const match = /^(.+):(\d{1,5})$/.exec(target.tcp);
    if (match?.[1] === undefined || match[2] === undefined) {
      throw new RangeError(`tcp: expected "host:port", got ${JSON.stringify(target.tcp)}`);
    }
    const bound = await nbd.listen({
      host: match[1],
      port: Number(match[2]),
      ...(target.tls === undefined ? {} : { tls: target.tls }),
    });
    return `tcp:${formatHostPort(bound as HostPort)}`;
  }

  /** Ends a volume's export (draining its connections) and closes it (releasing its lease). */
  async closeVolume(name: string): Promise<void> {
    const entry = this.volumes.get(name);
    if (entry === undefined) return;
    if (entry.exportAddress !== undefined) {
      await this.nbd?.removeExport(name, { drainMs: STOP_DRAIN_MS });
    }
    this.volumes.delete(name);
    entry.cancelFaults();
    try {
      await entry.opened.device.flush();
    } finally {
      await entry.opened.close();
      this.metrics.forgetVolume(name);
      this.metrics.volumesOpen.set(this.volumes.size);
    }
  }

  /**
   * Takes snapshot `snapshotName` of a volume open on this host, or of one open nowhere (then
   * opened here for it); a volume open on another host is refused with HES_LEASE_HELD.
   */
  async createSnapshot(name: string, snapshotName: string): Promise<void> {
    this.assertRunning();
    if (typeof name !== "string" || name.length === 0) throw new TypeError("name must be a string");
    if (typeof snapshotName !== "string" || snapshotName.length === 0) {
      throw new TypeError("snapshotName must be a string");
    }
    const entry = this.volumes.get(name);
    if (entry !== undefined) {
      if (entry.opened.createSnapshot === undefined) {
        throw new HesError("HES_UNSUPPORTED", "this host's volumes cannot take snapshots");
      }
      return entry.opened.createSnapshot(snapshotName);
    }
    const snapshot = this.components.snapshotVolume;
    if (snapshot === undefined || this.rollingBack.has(name)) {
      throw snapshot === undefined
        ? new HesError("HES_UNSUPPORTED", "this host was composed without volumes (blockdev)")
        : new HesError("HES_BUSY", `volume ${name} is being rolled back on this host`);
    }
    await snapshot(this.context, this.member, name, snapshotName);
  }

  /**
   * Makes the volume's head equal to snapshot `snapshotName` again. The volume must not be
   * open anywhere: a guest reading it meanwhile would see its disk change under its caches,
   * so a volume open (or exported) on this host is refused with HES_BUSY (unexport it first),
   * and one open on another host with HES_LEASE_HELD (from the lease the rollback takes).
   */
  async rollbackSnapshot(name: string, snapshotName: string): Promise<void> {
    this.assertRunning();
    if (typeof name !== "string" || name.length === 0) throw new TypeError("name must be a string");
    if (typeof snapshotName !== "string" || snapshotName.length === 0) {
      throw new TypeError("snapshotName must be a string");
    }
    if (this.volumes.has(name) || this.rollingBack.has(name)) {
      throw new HesError(
        "HES_BUSY",
        `volume ${name} is open on this host: unexport it (hes unexport ${name}) before a rollback`,
      );
    }
    const rollback = this.components.rollbackVolume;
    if (rollback === undefined) {
      throw new HesError("HES_UNSUPPORTED", "this host was composed without volumes (blockdev)");
    }
    this.rollingBack.add(name);
    try {
      await rollback(this.context, this.member, name, snapshotName);
    } finally {
      this.rollingBack.delete(name);
    }
  }

  status(): HostStatus {
    return {
      nodeId: this.config.nodeId,
      control: formatHostPort(this.addresses.control),
      data: formatHostPort(this.addresses.data),
      metrics: this.addresses.metrics && formatHostPort(this.addresses.metrics),
      volumes: [...this.volumes.keys()],
      exports: [...this.volumes.entries()]
        .filter(([, v]) => v.exportAddress !== undefined)
        .map(([name, v]) => ({ name, address: v.exportAddress as string })),
      composed: {
        member: this.member !== undefined,
        replicaService: this.components.replicaHandler !== undefined,
        volumes: this.components.openVolume !== undefined,
      },
    };
  }

  /**
   * Stops the host: NBD exports drain (in-flight requests finish for up to STOP_DRAIN_MS, then
   * fail), every volume is flushed and closed (its lease released in the map while the member
   * still runs), then the metrics, data plane, member, control server and store, in that order.
   * Idempotent; concurrent calls share one stop.
   */
  stop(): Promise<void> {
    this.stopping ??= this.stopInOrder();
    return this.stopping;
  }

  private async stopInOrder(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (what: string, run: () => Promise<void>) => {
      try {
        await run();
      } catch (error) {
        this.context.logger.error({ err: error }, `stop: ${what} failed`);
        errors.push(error);
      }
    };
    await step("nbd", async () => this.nbd?.close({ drainMs: STOP_DRAIN_MS }));
    for (const name of [...this.volumes.keys()]) {
      await step(`volume ${name}`, () => this.closeVolume(name));
    }
    await step("metrics", async () => this.metricsServer?.close());
    await step("data plane", () => this.frames.close(STOP_DRAIN_MS));
    await step("member", async () => this.member?.stop());
    await step("control server", () => shutdownGrpc(this.context.grpcServer));
    await step("store", () => this.context.store.close());
    this.context.logger.info({ errors: errors.length }, "host stopped");
    if (errors.length > 0) {
      throw new HesError("HES_INTERNAL", `stop: ${errors.length} step(s) failed (see logs)`, {
        cause: errors[0],
      });
    }
  }

  private assertRunning(): void {
    if (this.stopping !== undefined) throw new HesError("HES_CLOSED", "the host is stopping");
  }

  /** Pulls gauges from the store and member just before a scrape. */
  refreshGauges(): void {
    const stats = this.context.store.stats();
    for (const disk of stats.disks) {
      this.metrics.diskCapacity.set({ disk: disk.name }, disk.capacityBytes);
      this.metrics.diskUsed.set({ disk: disk.name }, disk.usedBytes);
    }
    this.metrics.setMember(this.member?.gauges());
  }

  /** Healthy when no disk failed and, when a member is composed, it knows a leader. */
  health(): { ok: boolean; [key: string]: unknown } {
    const failedDisks = this.context.store
      .stats()
      .disks.filter((d) => d.failed)
      .map((d) => d.name);
    const leaderId = this.member?.gauges().leaderId;
    const ok = this.stopping === undefined && failedDisks.length === 0 && leaderId !== 0;
    return { ok, failedDisks, leaderId: leaderId ?? null, ...this.status() };
  }
}

const refuseData: FrameHandler = () => {
  throw new HesError("HES_UNSUPPORTED", "this host was composed without the chunk-replica service");
};

async function openStore(config: HostConfig, logger: Logger): Promise<ExtentStore> {
  await mkdir(config.dataDir, { recursive: true });
  const disks: StoreDisk[] = [];
  try {
    for (const [i, disk] of config.disks.entries()) {
      const fileDisk = await FileDisk.open(disk.path, {
        createSizeBytes: disk.sizeBytes,
        dsync: true,
      });
      disks.push({ disk: fileDisk, indexPath: join(config.dataDir, `index-${i}`) });
    }
  } catch (error) {
    for (const opened of disks) await opened.disk.close().catch(() => undefined);
    throw error;
  }
  return ExtentStore.open({
    disks,
    clusterId: config.clusterId,
    format: true,
    logger: logger.child({ component: "extent-store" }),
  });
}

/**
 * Graceful shutdown waits for every call to end, and peers' Raft streams into this server only
 * end when those peers stop: after a short grace the remaining calls are cancelled.
 */
function shutdownGrpc(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, GRPC_SHUTDOWN_GRACE_MS);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Parses an NBD target as the CLI writes it: "unix:PATH" or "tcp:HOST:PORT". */
export function parseExportTarget(text: string): ExportTarget {
  if (text.startsWith("unix:") && text.length > 5) return { unix: text.slice(5) };
  if (/^tcp:[A-Za-z0-9.-]+:\d{1,5}$/.test(text)) return { tcp: text.slice(4) };
  throw new HesError(
    "HES_INVALID_ARGUMENT",
    `nbd target ${JSON.stringify(text)}: write unix:PATH or tcp:HOST:PORT`,
  );
}

/** The HostService implementation: exports over RPC are unix sockets or loopback TCP only. */
function hostService(ref: { current?: Host }) {
  const host = (): Host => {
    if (ref.current === undefined) throw new HesError("HES_UNAVAILABLE", "the host is starting");
    return ref.current;
  };
  return {
    async exportVolume(request: { name: string; nbdTarget: string; takeover: boolean }) {
      const target = parseExportTarget(request.nbdTarget);
      if ("tcp" in target && !isLoopbackHost(target.tcp.slice(0, target.tcp.lastIndexOf(":")))) {
        throw new HesError(
          "HES_PERMISSION_DENIED",
          "TCP exports requested over RPC must be on loopback (TLS exports: embed @hes/host)",
        );
      }
      if (request.name === "") throw new HesError("HES_INVALID_ARGUMENT", "name is empty");
      const address = await host().export(request.name, target, { takeover: request.takeover });
      return { address };
    },
    async unexportVolume(request: { name: string }) {
      await host().closeVolume(request.name);
      return {};
    },
    async createSnapshotOnHost(request: { volumeName: string; snapshotName: string }) {
      if (request.volumeName === "" || request.snapshotName === "") {
        throw new HesError("HES_INVALID_ARGUMENT", "volume_name and snapshot_name are required");
      }
      await host().createSnapshot(request.volumeName, request.snapshotName);
      return {};
    },
    async rollbackSnapshot(request: { volumeName: string; snapshotName: string }) {
      if (request.volumeName === "") {
        throw new HesError("HES_INVALID_ARGUMENT", "volume_name is empty");
      }
      if (request.snapshotName === "") {
        throw new HesError("HES_INVALID_ARGUMENT", "snapshot_name is empty");
      }
      await host().rollbackSnapshot(request.volumeName, request.snapshotName);
      return {};
    },
  };
}
