/**
 * A typed client of `ClusterAdminService` for the `hes` CLI and tests: plain numbers instead
 * of bigints, no protobuf `$typeName`s, and failures as HesErrors with the server's code
 * (re-created from the gRPC status metadata by the proto glue).
 *
 *   const admin = AdminClient.connect("127.0.0.1:7100", { credentials });
 *   const volume = await admin.createVolume({ name: "vm1", sizeBytes: 10 * 2 ** 30 });
 *   const status = await admin.status();
 *   admin.close();
 */
import type { ChannelCredentials } from "@grpc/grpc-js";
import { toSafeNumber } from "@hes/base";
import {
  ClusterAdminService,
  type ClusterStatus,
  createClient,
  type NodeInfo,
  type SnapshotInfo,
  type VolumeInfo,
} from "@hes/proto";
import type { AdminRawClient } from "./admin-service.js";

/** A protobuf message as plain data: numbers for 64-bit integers, no `$typeName`. */
export type Plain<T> = T extends bigint
  ? number
  : T extends Uint8Array
    ? Uint8Array
    : T extends readonly (infer U)[]
      ? Plain<U>[]
      : T extends object
        ? { [K in keyof T as K extends "$typeName" | "$unknown" ? never : K]: Plain<T[K]> }
        : T;

export type ClusterStatusPlain = Plain<ClusterStatus>;
export type VolumeInfoPlain = Plain<VolumeInfo>;
export type NodeInfoPlain = Plain<NodeInfo>;
export type SnapshotInfoPlain = Plain<SnapshotInfo>;

/** Converts a decoded message to plain data; RangeError for an integer past 2^53. */
export function toPlain<T>(message: T, path = "response"): Plain<T> {
  if (typeof message === "bigint") return toSafeNumber(message, path) as Plain<T>;
  if (message instanceof Uint8Array) return message as Plain<T>;
  if (Array.isArray(message)) {
    return message.map((item, i) => toPlain(item, `${path}[${i}]`)) as Plain<T>;
  }
  if (message !== null && typeof message === "object") {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(message)) {
      if (key === "$typeName" || key === "$unknown") continue;
      out[key] = toPlain(value, `${path}.${key}`);
    }
    return out as Plain<T>;
  }
  return message as Plain<T>;
}

/** Per-call options. */
export interface AdminCallOptions {
  readonly signal?: AbortSignal;
  /** Default: the client's (15 s). */
  readonly deadlineMs?: number;
}

const ADMIN_CLIENT_DEADLINE_MS_DEFAULT = 15_000;

export class AdminClient {
  private constructor(
    /** The generated client, for anything this wrapper does not cover. */
    readonly raw: AdminRawClient,
    private readonly deadlineMs: number,
  ) {}

  /**
   * A client of the member at `address`. Credentials are required: mutual TLS in
   * production, `grpc.credentials.createInsecure()` only when the caller means it.
   */
  static connect(
    address: string,
    options: { readonly credentials: ChannelCredentials; readonly deadlineMs?: number },
  ): AdminClient {
    if (typeof address !== "string" || address === "") {
      throw new TypeError("address must be host:port");
    }
    if (options?.credentials === undefined) throw new TypeError("credentials are required");
    const raw = createClient(ClusterAdminService, address, { credentials: options.credentials });
    return new AdminClient(raw, options.deadlineMs ?? ADMIN_CLIENT_DEADLINE_MS_DEFAULT);
  }

  private call(options: AdminCallOptions): { deadlineMs: number; signal?: AbortSignal } {
    const deadlineMs = options.deadlineMs ?? this.deadlineMs;
    return options.signal === undefined ? { deadlineMs } : { deadlineMs, signal: options.signal };
  }

  /** Leader, term, commit index, members, nodes, volumes with their health, placement. */
  async status(options: AdminCallOptions = {}): Promise<ClusterStatusPlain> {
    const { status } = await this.raw.getStatus({}, this.call(options));
    if (status === undefined) throw new TypeError("GetStatus answered without a status");
    return toPlain(status);
  }

  async createVolume(
    request: {
      readonly name: string;
      readonly sizeBytes: number;
      readonly chunkSizeBytes?: number;
      readonly replicas?: number;
      readonly writeQuorum?: number;
    },
    options: AdminCallOptions = {},
  ): Promise<VolumeInfoPlain> {
    const reply = await this.raw.createVolume(
      {
        name: request.name,
        sizeBytes: big(request.sizeBytes, "sizeBytes"),
        chunkSizeBytes: big(request.chunkSizeBytes ?? 0, "chunkSizeBytes"),
        replicas: request.replicas ?? 0,
        writeQuorum: request.writeQuorum ?? 0,
      },
      this.call(options),
    );
    return volumeOf(reply.volume);
  }

  async getVolume(name: string, options: AdminCallOptions = {}): Promise<VolumeInfoPlain> {
    return volumeOf((await this.raw.getVolume({ name }, this.call(options))).volume);
  }

  async listVolumes(options: AdminCallOptions = {}): Promise<VolumeInfoPlain[]> {
    return toPlain((await this.raw.listVolumes({}, this.call(options))).volumes);
  }

  async deleteVolume(name: string, options: AdminCallOptions = {}): Promise<void> {
    await this.raw.deleteVolume({ name }, this.call(options));
  }

  async resizeVolume(
    name: string,
    sizeBytes: number,
    options: AdminCallOptions & { readonly allowShrink?: boolean } = {},
  ): Promise<VolumeInfoPlain> {
    const reply = await this.raw.resizeVolume(
      { name, sizeBytes: big(sizeBytes, "sizeBytes"), allowShrink: options.allowShrink === true },
      this.call(options),
    );
    return volumeOf(reply.volume);
  }

  /** A linked clone `name` of snapshot `snapshotName` of `sourceName`. */
  async cloneVolume(
    sourceName: string,
    snapshotName: string,
    name: string,
    options: AdminCallOptions = {},
  ): Promise<VolumeInfoPlain> {
    const reply = await this.raw.cloneVolume(
      { sourceName, snapshotName, name },
      this.call(options),
    );
    return volumeOf(reply.volume);
  }

  async createSnapshot(
    volumeName: string,
    name: string,
    options: AdminCallOptions = {},
  ): Promise<SnapshotInfoPlain> {
    const reply = await this.raw.createSnapshot({ volumeName, name }, this.call(options));
    if (reply.snapshot === undefined) throw new TypeError("CreateSnapshot answered no snapshot");
    return toPlain(reply.snapshot);
  }

  async listSnapshots(
    volumeName: string,
    options: AdminCallOptions = {},
  ): Promise<SnapshotInfoPlain[]> {
    return toPlain((await this.raw.listSnapshots({ volumeName }, this.call(options))).snapshots);
  }

  async deleteSnapshot(
    volumeName: string,
    name: string,
    options: AdminCallOptions = {},
  ): Promise<void> {
    await this.raw.deleteSnapshot({ volumeName, name }, this.call(options));
  }

  /** Registers a running, not yet joined node and makes it a Raft voter. */
  async addNode(
    request: {
      readonly nodeId: number;
      readonly controlAddress: string;
      readonly dataAddress?: string;
      readonly failureDomain?: string;
      readonly disks?: readonly {
        readonly diskId: string;
        readonly path: string;
        readonly capacityBytes: number;
      }[];
    },
    options: AdminCallOptions = {},
  ): Promise<NodeInfoPlain> {
    const reply = await this.raw.addNode(
      {
        nodeId: request.nodeId,
        controlAddress: request.controlAddress,
        dataAddress: request.dataAddress ?? "",
        failureDomain: request.failureDomain ?? "",
        disks: (request.disks ?? []).map((d) => ({
          diskId: d.diskId,
          path: d.path,
          capacityBytes: big(d.capacityBytes, "capacityBytes"),
        })),
      },
      this.call(options),
    );
    return nodeOf(reply.node);
  }

  async drainNode(
    nodeId: number,
    options: AdminCallOptions & { readonly cancel?: boolean } = {},
  ): Promise<NodeInfoPlain> {
    const reply = await this.raw.drainNode(
      { nodeId, cancel: options.cancel === true },
      this.call(options),
    );
    return nodeOf(reply.node);
  }

  async removeNode(nodeId: number, options: AdminCallOptions = {}): Promise<void> {
    await this.raw.removeNode({ nodeId }, this.call(options));
  }

  /** Changes cluster settings; answers the grace period now in force. */
  async setConfig(
    config: { readonly gracePeriodMs?: number },
    options: AdminCallOptions = {},
  ): Promise<{ gracePeriodMs: number }> {
    const reply = await this.raw.setConfig(
      { gracePeriodMs: big(config.gracePeriodMs ?? 0, "gracePeriodMs") },
      this.call(options),
    );
    return { gracePeriodMs: toSafeNumber(reply.gracePeriodMs, "gracePeriodMs") };
  }

  close(): void {
    this.raw.close();
  }
}

function big(value: number, name: string): bigint {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative safe integer, got ${value}`);
  }
  return BigInt(value);
}

function volumeOf(volume: VolumeInfo | undefined): VolumeInfoPlain {
  if (volume === undefined) throw new TypeError("the server answered without a volume");
  return toPlain(volume);
}

function nodeOf(node: NodeInfo | undefined): NodeInfoPlain {
  if (node === undefined) throw new TypeError("the server answered without a node");
  return toPlain(node);
}
