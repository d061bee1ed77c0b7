/**
 * `ClusterAdminService` (cluster.proto) served by any member: reads answer from this member's
 * map after a ReadIndex `sync` (linearizable), writes are proposals (forwarded to the leader
 * by the member). Raft membership changes (AddNode / RemoveNode) run on the leader: another
 * member hands the whole call to the leader's admin service.
 *
 * Every request is checked before anything is proposed: HES_INVALID_ARGUMENT naming the
 * field. Map refusals come back with the map's code (HES_NOT_FOUND, HES_ALREADY_EXISTS, …),
 * which the gRPC glue turns into a status and the AdminClient back into the same HesError.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { HesError, type NodeId } from "@hes/base";
import type {
  AddNodeResponseSchema,
  ClusterAdminService,
  DiskInfo,
  ServiceClientOf,
  ServiceImplementation,
  SnapshotInfo,
  VolumeInfo,
} from "@hes/proto";
import type { ClusterMap } from "../cluster-map/cluster-map.js";
import type { CommandKind } from "../cluster-map/commands.js";
import type { VolumeRecord, VolumeSnapshotRecord } from "../cluster-map/model.js";
import type { ApplyValue } from "../cluster-map/outcome.js";
import { clusterStatus, nodeInfo, volumeInfo } from "../cluster-map/status.js";
import type { ClusterProposal } from "../contracts.js";
import { NAME_BYTES_MAX } from "../limits.js";
import { ADMIN_DEADLINE_MS_DEFAULT } from "./limits.js";

/** The generated client of the admin service. */
export type AdminRawClient = ServiceClientOf<typeof ClusterAdminService>;

type AdminMethods =
  typeof ClusterAdminService extends GenService<infer M extends GenServiceMethods> ? M : never;

/** What the admin service needs of its member. */
export interface AdminHost {
  readonly nodeId: NodeId;
  sync(options: { signal?: AbortSignal; deadlineMs?: number }): Promise<ClusterMap>;
  propose<K extends CommandKind>(
    proposal: ClusterProposal<K>,
    options: { signal?: AbortSignal; deadlineMs?: number },
  ): Promise<ApplyValue>;
  status(): {
    readonly role: string;
    readonly leaderId: NodeId;
    readonly term: number;
    readonly commitIndex: number;
    readonly members: { readonly voters: readonly NodeId[]; readonly learners: readonly NodeId[] };
  };
  /** The leader's view of a member's durable log index; undefined when not leading. */
  matchOf(nodeId: NodeId): number | undefined;
  /** Raft membership, on the leader. */
  addVoter(nodeId: NodeId, options: { signal?: AbortSignal }): Promise<void>;
  removeMember(nodeId: NodeId, options: { signal?: AbortSignal }): Promise<void>;
  /**
   * Runs a membership call on the leader: here when this member leads, else through the
   * leader's admin service. HES_NOT_LEADER when no leader can be reached.
   */
  onLeader<T>(here: () => Promise<T>, remote: (leader: AdminRawClient) => Promise<T>): Promise<T>;
}

function invalid(message: string): HesError {
  return new HesError("HES_INVALID_ARGUMENT", message);
}

function nameArg(value: string, field: string): string {
  if (value === "") throw invalid(`${field} is required`);
  if (Buffer.byteLength(value, "utf8") > NAME_BYTES_MAX) {
    throw invalid(`${field} is longer than ${NAME_BYTES_MAX} bytes`);
  }
  return value;
}

function numberArg(value: bigint | number, field: string, min = 0): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || BigInt(n) !== BigInt(value) || n < min) {
    throw invalid(`${field} must be an integer ≥ ${min}, got ${String(value)}`);
  }
  return n;
}

function nodeIdArg(value: number, field: string): NodeId {
  if (!Number.isInteger(value) || value < 1 || value > 0xffff_ffff) {
    throw invalid(`${field} must name a node (1 … 2^32-1), got ${value}`);
  }
  return value;
}

function volumeByName(map: ClusterMap, name: string, field: string): VolumeRecord {
  const volume = map.volumeByName(nameArg(name, field));
  if (volume === undefined) throw new HesError("HES_NOT_FOUND", `no volume named ${name}`);
  return volume;
}

function snapshotByName(volume: VolumeRecord, name: string, field: string): VolumeSnapshotRecord {
  const snapshot = volume.snapshots.find((s) => s.name === nameArg(name, field));
  if (snapshot === undefined) {
    throw new HesError("HES_NOT_FOUND", `volume ${volume.name} has no snapshot named ${name}`);
  }
  return snapshot;
}

function snapshotInfo(volume: VolumeRecord, snapshot: VolumeSnapshotRecord): SnapshotInfo {
  return {
    $typeName: "hes.v1.SnapshotInfo",
    snapshotId: BigInt(snapshot.snapshotId),
    name: snapshot.name,
    volumeId: BigInt(volume.volumeId),
    createdAtMs: BigInt(snapshot.createdAtMs),
  };
}

function disksArg(disks: readonly DiskInfo[]): Array<{
  diskId: string;
  path: string;
  capacityBytes: number;
}> {
  return disks.map((d, i) => ({
    diskId: d.diskId,
    path: d.path,
    capacityBytes: numberArg(d.capacityBytes, `disks[${i}].capacity_bytes`),
  }));
}

type AdminImpl = ServiceImplementation<AdminMethods>;

/** What every handler shares: the host and its proposal / read helpers. */
function context(host: AdminHost) {
  const opts = (signal: AbortSignal) => ({ signal, deadlineMs: ADMIN_DEADLINE_MS_DEFAULT });
  const propose = <K extends CommandKind>(
    signal: AbortSignal,
    kind: K,
    fields: ClusterProposal<K>["fields"],
  ) => host.propose({ kind, fields }, opts(signal));
  const volumeNow = async (
    signal: AbortSignal,
    volumeId: number | undefined,
  ): Promise<VolumeInfo> => {
    const map = await host.sync(opts(signal));
    const volume = volumeId === undefined ? undefined : map.volume(volumeId);
    if (volume === undefined) throw new HesError("HES_NOT_FOUND", `volume ${volumeId} is gone`);
    return volumeInfo(map, volume);
  };
  return { host, opts, propose, volumeNow };
}

type Context = ReturnType<typeof context>;

/** Status and volumes. */
function volumeHandlers(
  ctx: Context,
): Pick<
  AdminImpl,
  | "getStatus"
  | "createVolume"
  | "getVolume"
  | "listVolumes"
  | "deleteVolume"
  | "resizeVolume"
  | "cloneVolume"
> {
  const { host, opts, propose, volumeNow } = ctx;
  return {
    getStatus: async (_request, { signal }) => {
      const map = await host.sync(opts(signal));
      const status = clusterStatus(map);
      const raft = host.status();
      status.leaderId = raft.leaderId;
      status.term = BigInt(raft.term);
      status.commitIndex = BigInt(raft.commitIndex);
      // Match indexes are the leader's progress; a follower does not know them and says 0.
      const member = (nodeId: NodeId, voter: boolean) => ({
        $typeName: "hes.v1.MemberInfo" as const,
        nodeId,
        voter,
        matchIndex: BigInt(host.matchOf(nodeId) ?? 0),
      });
      status.members = [
        ...raft.members.voters.map((nodeId) => member(nodeId, true)),
        ...raft.members.learners.map((nodeId) => member(nodeId, false)),
      ];
      return { status };
    },
    createVolume: async (request, { signal }) => {
      const value = await propose(signal, "createVolume", {
        name: nameArg(request.name, "name"),
        sizeBytes: numberArg(request.sizeBytes, "size_bytes", 1),
        chunkSizeBytes: numberArg(request.chunkSizeBytes, "chunk_size_bytes"),
        replicationFactor: numberArg(request.replicas, "replicas"),
        writeQuorum: numberArg(request.writeQuorum, "write_quorum"),
      });
      return { volume: await volumeNow(signal, value.volumeId) };
    },
    getVolume: async (request, { signal }) => {
      const map = await host.sync(opts(signal));
      return { volume: volumeInfo(map, volumeByName(map, request.name, "name")) };
    },
    listVolumes: async (_request, { signal }) => {
      const map = await host.sync(opts(signal));
      return { volumes: map.volumes().map((v) => volumeInfo(map, v)) };
    },
    deleteVolume: async (request, { signal }) => {
      const map = await host.sync(opts(signal));
      const volume = volumeByName(map, request.name, "name");
      await propose(signal, "deleteVolume", { volumeId: volume.volumeId });
      return {};
    },
    resizeVolume: async (request, { signal }) => {
      const sizeBytes = numberArg(request.sizeBytes, "size_bytes", 1);
      const map = await host.sync(opts(signal));
      const volume = volumeByName(map, request.name, "name");
      await propose(signal, "resizeVolume", {
        volumeId: volume.volumeId,
        sizeBytes,
        allowShrink: request.allowShrink,
      });
      return { volume: await volumeNow(signal, volume.volumeId) };
    },
    cloneVolume: async (request, { signal }) => {
      const name = nameArg(request.name, "name");
      const map = await host.sync(opts(signal));
      const source = volumeByName(map, request.sourceName, "source_name");
      const snapshot = snapshotByName(source, request.snapshotName, "snapshot_name");
      const value = await propose(signal, "cloneVolume", {
        sourceVolumeId: source.volumeId,
        snapshotId: snapshot.snapshotId,
        name,
      });
      return { volume: await volumeNow(signal, value.volumeId) };
    },
  };
}

/** Volume snapshots. */
function snapshotHandlers(
  ctx: Context,
): Pick<AdminImpl, "createSnapshot" | "listSnapshots" | "deleteSnapshot"> {
  const { host, opts, propose } = ctx;
  return {
    createSnapshot: async (request, { signal }) => {
      const name = nameArg(request.name, "name");
      const map = await host.sync(opts(signal));
      const volume = volumeByName(map, request.volumeName, "volume_name");
      const value = await propose(signal, "createSnapshot", { volumeId: volume.volumeId, name });
      const after = (await host.sync(opts(signal))).volume(volume.volumeId);
      const snapshot = after?.snapshots.find((s) => s.snapshotId === value.snapshotId);
      if (after === undefined || snapshot === undefined) {
        throw new HesError("HES_NOT_FOUND", `snapshot ${name} of ${volume.name} is gone`);
      }
      return { snapshot: snapshotInfo(after, snapshot) };
    },
    listSnapshots: async (request, { signal }) => {
      const map = await host.sync(opts(signal));
      const volume = volumeByName(map, request.volumeName, "volume_name");
      return { snapshots: volume.snapshots.map((s) => snapshotInfo(volume, s)) };
    },
    deleteSnapshot: async (request, { signal }) => {
      const map = await host.sync(opts(signal));
      const volume = volumeByName(map, request.volumeName, "volume_name");
      const snapshot = snapshotByName(volume, request.name, "name");
      await propose(signal, "deleteSnapshot", {
        volumeId: volume.volumeId,
        snapshotId: snapshot.snapshotId,
      });
      return {};
    },
  };
}

/** Nodes, Raft membership and cluster settings. */
function nodeHandlers(
  ctx: Context,
): Pick<AdminImpl, "addNode" | "drainNode" | "removeNode" | "setConfig"> {
  const { host, opts, propose } = ctx;
  return {
    addNode: async (request, { signal }) => {
      const nodeId = nodeIdArg(request.nodeId, "node_id");
      const fields = {
        nodeId,
        controlAddress: nameArg(request.controlAddress, "control_address"),
        dataAddress: request.dataAddress,
        failureDomain: request.failureDomain,
        disks: disksArg(request.disks),
      };
      return host.onLeader<MessageInitShape<typeof AddNodeResponseSchema>>(
        async () => {
          const map = await host.sync(opts(signal));
          // The map first: every member learns the new node's control address from it,
          // so Raft can reach the node as soon as it becomes a learner.
          if (map.node(nodeId) === undefined) await propose(signal, "addNode", fields);
          await host.addVoter(nodeId, { signal });
          const after = await host.sync(opts(signal));
          const node = after.node(nodeId);
          if (node === undefined) throw new HesError("HES_NOT_FOUND", `node ${nodeId} is gone`);
          return { node: nodeInfo(after, node) };
        },
        async (leader) => leader.addNode(request, { signal }),
      );
    },
    drainNode: async (request, { signal }) => {
      const nodeId = nodeIdArg(request.nodeId, "node_id");
      await propose(signal, "drainNode", { nodeId, cancel: request.cancel });
      const map = await host.sync(opts(signal));
      const node = map.node(nodeId);
      if (node === undefined) throw new HesError("HES_NOT_FOUND", `node ${nodeId} is gone`);
      return { node: nodeInfo(map, node) };
    },
    removeNode: async (request, { signal }) => {
      const nodeId = nodeIdArg(request.nodeId, "node_id");
      return host.onLeader(
        async () => {
          await propose(signal, "removeNode", { nodeId });
          const members = host.status().members;
          if (members.voters.includes(nodeId) || members.learners.includes(nodeId)) {
            await host.removeMember(nodeId, { signal });
          }
          return {};
        },
        async (leader) => leader.removeNode(request, { signal }),
      );
    },
    setConfig: async (request, { signal }) => {
      const gracePeriodMs = numberArg(request.gracePeriodMs, "grace_period_ms");
      await propose(signal, "setConfig", { gracePeriodMs });
      const map = await host.sync(opts(signal));
      return { gracePeriodMs: BigInt(map.config.gracePeriodMs) };
    },
  };
}

/** The service implementation for `addService(server, ClusterAdminService, …)`. */
export function adminService(host: AdminHost): AdminImpl {
  const ctx = context(host);
  return { ...volumeHandlers(ctx), ...snapshotHandlers(ctx), ...nodeHandlers(ctx) };
}
