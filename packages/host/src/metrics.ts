/**
 * A node's Prometheus metrics (prom-client, one registry per Host so two hosts in one process
 * never mix) and the plain-HTTP endpoint serving `/metrics` and `/healthz`.
 *
 * Label cardinality is bounded: the only unbounded-looking label is `volume`, and a host has at
 * most OPEN_VOLUMES_MAX volumes open; a volume's series are removed when it closes. Everything
 * else is per node (one series) or per disk (≤ DISKS_PER_HOST_MAX).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { BlockDevice } from "@hes/blockdev";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { HostPort } from "./config.js";
import { METRICS_CONNECTIONS_MAX } from "./limits.js";

/** Latency buckets in seconds: 50 µs (a cached read) to 5 s (a stalled replica). */
const LATENCY_BUCKETS_S = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5,
];

export type IoKind = "read" | "write" | "flush" | "discard" | "write_zeroes";

/** What the host knows of its cluster member when metrics are scraped. */
export interface MemberGauges {
  readonly term: number;
  readonly commitIndex: number;
  readonly leaderId: number;
  readonly rebuildBytesDone?: number;
  readonly rebuildBytesTotal?: number;
  readonly replicasFilling?: number;
}

export class HostMetrics {
  readonly registry = new Registry();
  private readonly ops: Counter<"volume" | "op">;
  private readonly bytes: Counter<"volume" | "op">;
  private readonly errors: Counter<"volume" | "op">;
  private readonly latency: Histogram<"volume" | "op">;
  readonly diskCapacity: Gauge<"disk">;
  readonly diskUsed: Gauge<"disk">;
  readonly raftTerm: Gauge;
  readonly raftCommitIndex: Gauge;
  readonly raftLeader: Gauge;
  readonly rebuildBytesDone: Gauge;
  readonly rebuildBytesTotal: Gauge;
  readonly replicasFilling: Gauge;
  readonly volumesOpen: Gauge;

  constructor(nodeId: number) {
    this.registry.setDefaultLabels({ node: String(nodeId) });
    const r = [this.registry];
    const io = ["volume", "op"] as const;
    this.ops = new Counter({
      name: "hes_volume_ops_total",
      help: "IOs by volume and kind",
      labelNames: io,
      registers: r,
    });
    this.bytes = new Counter({
      name: "hes_volume_bytes_total",
      help: "Bytes read or written",
      labelNames: io,
      registers: r,
    });
    this.errors = new Counter({
      name: "hes_volume_errors_total",
      help: "IOs that failed",
      labelNames: io,
      registers: r,
    });
    this.latency = new Histogram({
      name: "hes_volume_latency_seconds",
      help: "IO latency seen by the exporter (NBD) or the in-process caller",
      labelNames: io,
      buckets: LATENCY_BUCKETS_S,
      registers: r,
    });
    const gauge = (name: string, help: string) => new Gauge({ name, help, registers: r });
    this.diskCapacity = new Gauge({
      name: "hes_disk_capacity_bytes",
      help: "Disk capacity",
      labelNames: ["disk"],
      registers: r,
    });
    this.diskUsed = new Gauge({
      name: "hes_disk_used_bytes",
      help: "Log bytes in use",
      labelNames: ["disk"],
      registers: r,
    });
    this.raftTerm = gauge("hes_raft_term", "Current Raft term of this member");
    this.raftCommitIndex = gauge("hes_raft_commit_index", "Raft commit index of this member");
    this.raftLeader = gauge("hes_raft_leader_id", "Leader this member knows of (0: none)");
    this.rebuildBytesDone = gauge(
      "hes_rebuild_bytes_done",
      "Bytes copied by replica fills in progress",
    );
    this.rebuildBytesTotal = gauge(
      "hes_rebuild_bytes_total",
      "Bytes to copy by replica fills in progress",
    );
    this.replicasFilling = gauge("hes_replicas_filling", "Replicas being rebuilt or caught up");
    this.volumesOpen = gauge("hes_volumes_open", "Volumes open on this host");
  }

  /** Records one IO. */
  observe(volume: string, op: IoKind, bytes: number, seconds: number, failed: boolean): void {
    const labels = { volume, op };
    this.ops.inc(labels);
    if (bytes > 0) this.bytes.inc(labels, bytes);
    if (failed) this.errors.inc(labels);
    this.latency.observe(labels, seconds);
  }

  /** Drops a closed volume's series, keeping the label set bounded by the open volumes. */
  forgetVolume(volume: string): void {
    for (const op of ["read", "write", "flush", "discard", "write_zeroes"] as const) {
      for (const metric of [this.ops, this.bytes, this.errors, this.latency]) {
        metric.remove({ volume, op });
      }
    }
  }

  setMember(gauges: MemberGauges | undefined): void {
    this.raftTerm.set(gauges?.term ?? 0);
    this.raftCommitIndex.set(gauges?.commitIndex ?? 0);
    this.raftLeader.set(gauges?.leaderId ?? 0);
    this.rebuildBytesDone.set(gauges?.rebuildBytesDone ?? 0);
    this.rebuildBytesTotal.set(gauges?.rebuildBytesTotal ?? 0);
    this.replicasFilling.set(gauges?.replicasFilling ?? 0);
  }
}

/** Wraps a device so that every IO is counted and timed under `volume`. */
export function meteredDevice(
  device: BlockDevice,
  volume: string,
  metrics: HostMetrics,
): BlockDevice {
  const time = async <T>(op: IoKind, bytes: number, run: () => Promise<T>): Promise<T> => {
    const started = process.hrtime.bigint();
    let failed = true;
    try {
      const result = await run();
      failed = false;
      return result;
    } finally {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.observe(volume, op, failed ? 0 : bytes, seconds, failed);
    }
  };
  return {
    get sizeBytes() {
      return device.sizeBytes;
    },
    logicalBlockBytes: device.logicalBlockBytes,
    preferredBlockBytes: device.preferredBlockBytes,
    maxRequestBytes: device.maxRequestBytes,
    readOnly: device.readOnly,
    multiConnSafe: device.multiConnSafe,
    read: (r) => time("read", r.lengthBytes, () => device.read(r)),
    write: (r) => time("write", r.data.byteLength, () => device.write(r)),
    flush: (o) => time("flush", 0, () => device.flush(o)),
    discard: (r) => time("discard", 0, () => device.discard(r)),
    writeZeroes: (r) => time("write_zeroes", 0, () => device.writeZeroes(r)),
    allocation: (r) => device.allocation(r),
  };
}

/** Health as `/healthz` reports it: 200 when `ok`, 503 otherwise, the body as JSON. */
export interface Health {
  readonly ok: boolean;
  readonly [key: string]: unknown;
}

/** The HTTP endpoint: GET /metrics (Prometheus text), GET /healthz (JSON). */
export class MetricsServer {
  private constructor(
    private readonly server: Server,
    readonly address: HostPort,
  ) {}

  static async listen(
    address: HostPort,
    metrics: HostMetrics,
    beforeScrape: () => void,
    health: () => Health,
  ): Promise<MetricsServer> {
    const server = createServer((request, response) => {
      const path = (request.url ?? "/").split("?")[0];
      if (request.method !== "GET") {
        response.writeHead(405, { allow: "GET" }).end();
      } else if (path === "/metrics") {
        beforeScrape();
        metrics.registry.metrics().then(
          (text) =>
            response.writeHead(200, { "content-type": metrics.registry.contentType }).end(text),
          () => response.writeHead(500).end(),
        );
      } else if (path === "/healthz") {
        const body = health();
        response
          .writeHead(body.ok ? 200 : 503, { "content-type": "application/json" })
          .end(`${JSON.stringify(body)}\n`);
      } else {
        response.writeHead(404).end();
      }
    });
    server.maxConnections = METRICS_CONNECTIONS_MAX;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(address.port, address.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const bound = server.address() as AddressInfo;
    return new MetricsServer(server, { host: address.host, port: bound.port });
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
