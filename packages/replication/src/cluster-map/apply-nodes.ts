/**
 * Commands about the cluster itself and its nodes: init, config, join, update, heartbeat,
 * mark down, drain, remove. Each handler checks everything first, then changes the state.
 */
import type {
  AddNodeCommand,
  DiskInfo,
  DrainNodeCommand,
  InitClusterCommand,
  MarkNodeDownCommand,
  NodeHeartbeatCommand,
  RemoveNodeCommand,
  SetConfigCommand,
  UpdateNodeCommand,
} from "@hes/proto";
import {
  ADDRESS_BYTES_MAX,
  CLUSTER_ID_BYTES_MAX,
  DISKS_PER_NODE_MAX,
  FAILURE_DOMAIN_BYTES_MAX,
  GRACE_PERIOD_MS_DEFAULT,
  GRACE_PERIOD_MS_MAX,
  GRACE_PERIOD_MS_MIN,
  NODE_RECORDS_MAX,
  NODES_MAX,
} from "../limits.js";
import { nodeIdArg, reject, textArg, u64 } from "./arguments.js";
import { type DiskRecord, isAlive, type NodeRecord, replicaOn } from "./model.js";
import { changed, type HandlerContext, type Outcome, UNCHANGED } from "./outcome.js";
import type { MapState } from "./state.js";

function graceArg(value: bigint): number {
  return u64(value, "grace_period_ms", { min: GRACE_PERIOD_MS_MIN, max: GRACE_PERIOD_MS_MAX });
}

export function applyInitCluster(ctx: HandlerContext, command: InitClusterCommand): Outcome {
  const clusterId = textArg(command.clusterId, "cluster_id", CLUSTER_ID_BYTES_MAX);
  const gracePeriodMs =
    command.gracePeriodMs === 0n ? GRACE_PERIOD_MS_DEFAULT : graceArg(command.gracePeriodMs);
  const { state } = ctx;
  if (state.clusterId !== "") {
    if (state.clusterId === clusterId) return UNCHANGED;
    reject("HES_ALREADY_EXISTS", `cluster map already belongs to cluster ${state.clusterId}`);
  }
  state.clusterId = clusterId;
  state.config = { gracePeriodMs };
  return changed();
}

export function applySetConfig(ctx: HandlerContext, command: SetConfigCommand): Outcome {
  if (command.gracePeriodMs === 0n) return UNCHANGED;
  const gracePeriodMs = graceArg(command.gracePeriodMs);
  if (gracePeriodMs === ctx.state.config.gracePeriodMs) return UNCHANGED;
  ctx.state.config = { ...ctx.state.config, gracePeriodMs };
  return changed();
}

function disksArg(disks: readonly DiskInfo[]): DiskRecord[] {
  if (disks.length > DISKS_PER_NODE_MAX) {
    reject("HES_INVALID_ARGUMENT", `${disks.length} disks exceed DISKS_PER_NODE_MAX`);
  }
  const seen = new Set<string>();
  return disks.map((disk, i) => {
    const diskId = textArg(disk.diskId, `disks[${i}].disk_id`, ADDRESS_BYTES_MAX);
    if (seen.has(diskId)) reject("HES_INVALID_ARGUMENT", `disk id ${diskId} appears twice`);
    seen.add(diskId);
    const capacityBytes = u64(disk.capacityBytes, `disk ${diskId} capacity_bytes`, { min: 1 });
    const usedBytes = u64(disk.usedBytes, `disk ${diskId} used_bytes`, { max: capacityBytes });
    const path = textArg(disk.path, `disk ${diskId} path`, ADDRESS_BYTES_MAX);
    return { diskId, path, capacityBytes, usedBytes, failed: disk.failed };
  });
}

/** The node, or a rejection for an unknown or removed one. */
function liveNode(state: MapState, nodeId: number, what: string): NodeRecord {
  const node = state.node(nodeIdArg(nodeId, what));
  if (node === undefined) reject("HES_NOT_FOUND", `node ${nodeId} is not in the cluster`);
  if (node.state === "removed") {
    reject("HES_PERMISSION_DENIED", `node ${nodeId} was removed from the cluster`);
  }
  return node;
}

export function applyAddNode(ctx: HandlerContext, command: AddNodeCommand): Outcome {
  const { state } = ctx;
  const nodeId = nodeIdArg(command.nodeId, "node_id");
  const controlAddress = textArg(command.controlAddress, "control_address", ADDRESS_BYTES_MAX);
  const dataAddress = textArg(command.dataAddress, "data_address", ADDRESS_BYTES_MAX);
  const failureDomain = textArg(command.failureDomain, "failure_domain", FAILURE_DOMAIN_BYTES_MAX);
  const disks = disksArg(command.disks);
  const existing = state.node(nodeId);
  if (existing !== undefined) {
    const why = existing.state === "removed" ? "was removed (ids are never reused)" : "exists";
    reject("HES_ALREADY_EXISTS", `node ${nodeId} ${why}`);
  }
  if (state.liveNodeCount >= NODES_MAX) {
    reject("HES_BUSY", `the cluster has NODES_MAX (${NODES_MAX}) nodes`);
  }
  if (state.nodeRecordCount >= NODE_RECORDS_MAX) {
    reject("HES_BUSY", `NODE_RECORDS_MAX (${NODE_RECORDS_MAX}) node records, removed included`);
  }
  state.putNode({
    nodeId,
    controlAddress,
    dataAddress,
    failureDomain,
    state: "up",
    drain: false,
    disks,
    lastHeartbeatMs: ctx.timeMs,
    joinedAtIndex: ctx.index,
    downSinceMs: 0,
    revokedVolumeIds: [],
  });
  return changed();
}

export function applyUpdateNode(ctx: HandlerContext, command: UpdateNodeCommand): Outcome {
  const { state } = ctx;
  const node = liveNode(state, command.nodeId, "node_id");
  const controlAddress = textArg(command.controlAddress, "control_address", ADDRESS_BYTES_MAX);
  const dataAddress = textArg(command.dataAddress, "data_address", ADDRESS_BYTES_MAX);
  const failureDomain = textArg(command.failureDomain, "failure_domain", FAILURE_DOMAIN_BYTES_MAX);
  const disks = disksArg(command.disks);
  const replicas = state.replicaCountOnNode(node.nodeId);
  if (failureDomain !== node.failureDomain && replicas > 0) {
    reject(
      "HES_INVALID_ARGUMENT",
      `node ${node.nodeId} hosts ${replicas} replicas: drain it before changing its failure ` +
        `domain (${node.failureDomain} → ${failureDomain})`,
    );
  }
  state.putNode({ ...node, controlAddress, dataAddress, failureDomain, disks });
  return changed();
}

export function applyNodeHeartbeat(ctx: HandlerContext, command: NodeHeartbeatCommand): Outcome {
  const { state } = ctx;
  const node = liveNode(state, command.nodeId, "node_id");
  const usage = new Map<string, { usedBytes: number; failed: boolean }>();
  for (const [i, report] of command.disks.entries()) {
    const disk = node.disks.find((d) => d.diskId === report.diskId);
    if (disk === undefined) {
      reject("HES_NOT_FOUND", `node ${node.nodeId} has no disk ${JSON.stringify(report.diskId)}`);
    }
    if (usage.has(disk.diskId)) reject("HES_INVALID_ARGUMENT", `disk ${disk.diskId} twice`);
    const usedBytes = u64(report.usedBytes, `disks[${i}].used_bytes`, { max: disk.capacityBytes });
    usage.set(disk.diskId, { usedBytes, failed: report.failed });
  }
  const disks = node.disks.map((disk) => {
    const report = usage.get(disk.diskId);
    if (report === undefined) return disk;
    // A failed disk stays failed until an UpdateNode replaces the node's disks.
    return { ...disk, usedBytes: report.usedBytes, failed: disk.failed || report.failed };
  });
  if (node.state !== "down") {
    state.putNode({ ...node, disks, lastHeartbeatMs: ctx.timeMs });
    return changed();
  }
  state.putNode({
    ...node,
    disks,
    lastHeartbeatMs: ctx.timeMs,
    state: node.drain ? "draining" : "up",
  });
  let replicas = 0;
  let replicasNotInSync = 0;
  for (const chunk of state.chunksOnNode(node.nodeId)) {
    replicas++;
    if (replicaOn(chunk, node.nodeId)?.state !== "in-sync") replicasNotInSync++;
  }
  return changed({
    rejoin: {
      downSinceMs: node.downSinceMs,
      revokedVolumeIds: node.revokedVolumeIds,
      replicas,
      replicasNotInSync,
    },
  });
}

export function applyMarkNodeDown(ctx: HandlerContext, command: MarkNodeDownCommand): Outcome {
  const { state } = ctx;
  const node = liveNode(state, command.nodeId, "node_id");
  if (node.state === "down") return UNCHANGED;
  const silentMs = ctx.timeMs - node.lastHeartbeatMs;
  if (silentMs < state.config.gracePeriodMs) {
    reject(
      "HES_INVALID_ARGUMENT",
      `node ${node.nodeId} heartbeated ${silentMs} ms ago, within the grace period of ` +
        `${state.config.gracePeriodMs} ms`,
      { silentMs },
    );
  }
  const revokedVolumeIds: number[] = [];
  for (const volume of state.volumes()) {
    if (volume.ownerNodeId !== node.nodeId) continue;
    revokedVolumeIds.push(volume.volumeId);
    // The epoch stays: the next owner's open raises it, which fences this one.
    state.putVolume({ ...volume, ownerNodeId: 0 });
  }
  state.putNode({ ...node, state: "down", downSinceMs: ctx.timeMs, revokedVolumeIds });
  return changed({ revokedVolumeIds });
}

export function applyDrainNode(ctx: HandlerContext, command: DrainNodeCommand): Outcome {
  const { state } = ctx;
  const node = liveNode(state, command.nodeId, "node_id");
  const drain = !command.cancel;
  if (node.drain === drain) return UNCHANGED;
  let next: NodeRecord["state"] = node.state;
  if (isAlive(node)) next = drain ? "draining" : "up";
  state.putNode({ ...node, drain, state: next });
  return changed();
}

export function applyRemoveNode(ctx: HandlerContext, command: RemoveNodeCommand): Outcome {
  const { state } = ctx;
  const node = liveNode(state, command.nodeId, "node_id");
  const replicas = state.replicaCountOnNode(node.nodeId);
  if (replicas > 0) {
    reject(
      "HES_INVALID_ARGUMENT",
      `node ${node.nodeId} still hosts ${replicas} replicas: drain it (or let repair re-place ` +
        "them if it is down) and wait until it hosts none",
      { replicas },
    );
  }
  const owned = state.volumes().filter((volume) => volume.ownerNodeId === node.nodeId);
  if (owned.length > 0) {
    reject(
      "HES_LEASE_HELD",
      `node ${node.nodeId} owns volume(s) ${owned.map((v) => v.name).join(", ")}: close them`,
    );
  }
  state.putNode({ ...node, state: "removed", drain: false });
  return changed();
}
