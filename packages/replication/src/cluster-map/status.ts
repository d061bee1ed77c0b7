/**
 * The map as `hes status` shows it: the wire's ClusterStatus (cluster.proto). Raft's own
 * fields (leader, term, commit index, members) are not the map's to know; the host fills them.
 */
import { create } from "@bufbuild/protobuf";
import {
  type ClusterStatus,
  ClusterStatusSchema,
  type NodeInfo,
  NodeInfoSchema,
  type VolumeInfo,
  VolumeInfoSchema,
} from "@hes/proto";
import type { ClusterMapView, NodeRecord, VolumeRecord } from "./model.js";
import { isAlive } from "./model.js";
import { nodeStateToWire } from "./snapshot.js";

/** One node as status shows it. */
export function nodeInfo(view: ClusterMapView, node: NodeRecord): NodeInfo {
  let notInSync = 0;
  for (const chunk of view.chunksOnNode(node.nodeId)) {
    if (chunk.replicas.find((r) => r.nodeId === node.nodeId)?.state !== "in-sync") notInSync++;
  }
  return create(NodeInfoSchema, {
    nodeId: node.nodeId,
    controlAddress: node.controlAddress,
    dataAddress: node.dataAddress,
    failureDomain: node.failureDomain,
    state: nodeStateToWire(node.state),
    disks: node.disks.map((d) => ({
      diskId: d.diskId,
      path: d.path,
      capacityBytes: BigInt(d.capacityBytes),
      usedBytes: BigInt(d.usedBytes),
      failed: d.failed,
    })),
    lastHeartbeatWallMs: BigInt(node.lastHeartbeatMs),
    placedBytes: BigInt(view.placedBytes(node.nodeId)),
    replicas: BigInt(view.replicaCountOnNode(node.nodeId)),
    replicasNotInSync: BigInt(notInSync),
  });
}

/** Redundancy work of one volume's chunks (rebuilds and moves in flight, degraded chunks). */
interface Health {
  chunksPlaced: number;
  degraded: number;
  filling: number;
  fillDone: number;
  fillTotal: number;
  moves: number;
}

function volumeHealth(view: ClusterMapView, volume: VolumeRecord): Health {
  const health: Health = {
    chunksPlaced: 0,
    degraded: 0,
    filling: 0,
    fillDone: 0,
    fillTotal: 0,
    moves: 0,
  };
  for (const chunk of view.chunksOfVolume(volume.volumeId)) {
    health.chunksPlaced++;
    if (chunk.moveToNodeId !== 0) health.moves++;
    let healthy = 0;
    for (const replica of chunk.replicas) {
      const node = view.node(replica.nodeId);
      if (replica.state === "in-sync" && node !== undefined && isAlive(node)) healthy++;
      if (replica.state === "filling") {
        health.filling++;
        health.fillDone += replica.bytesDone;
        health.fillTotal += replica.bytesTotal;
      }
    }
    if (healthy < volume.replicationFactor) health.degraded++;
  }
  return health;
}

function summary(health: Health, movesInFlight: number) {
  return {
    chunksPlaced: BigInt(health.chunksPlaced),
    chunksDegraded: BigInt(health.degraded),
    replicasFilling: BigInt(health.filling),
    fillBytesDone: BigInt(health.fillDone),
    fillBytesTotal: BigInt(health.fillTotal),
    movesInFlight,
  };
}

/** One volume as status shows it, with its redundancy work (walks its chunks once). */
export function volumeInfo(view: ClusterMapView, volume: VolumeRecord): VolumeInfo {
  return volumeInfoOf(volume, volumeHealth(view, volume));
}

function volumeInfoOf(volume: VolumeRecord, health: Health): VolumeInfo {
  return create(VolumeInfoSchema, {
    volumeId: BigInt(volume.volumeId),
    name: volume.name,
    sizeBytes: BigInt(volume.sizeBytes),
    chunkSizeBytes: BigInt(volume.chunkSizeBytes),
    replicas: volume.replicationFactor,
    writeQuorum: volume.writeQuorum,
    ownerNodeId: volume.ownerNodeId,
    epoch: BigInt(volume.epoch),
    parentVolumeId: BigInt(volume.parentVolumeId),
    parentSnapshotId: BigInt(volume.parentSnapshotId),
    chunksPlaced: BigInt(health.chunksPlaced),
    snapshots: volume.snapshots.length,
    health: summary(health, health.moves),
  });
}

/**
 * The whole status. Walks every placed chunk once (for the degraded count and fill
 * progress): meant for an operator's request, not a hot path.
 */
export function clusterStatus(view: ClusterMapView): ClusterStatus {
  const total: Health = {
    chunksPlaced: 0,
    degraded: 0,
    filling: 0,
    fillDone: 0,
    fillTotal: 0,
    moves: 0,
  };
  const volumes: VolumeInfo[] = [];
  for (const volume of view.volumes()) {
    const health = volumeHealth(view, volume);
    total.degraded += health.degraded;
    total.filling += health.filling;
    total.fillDone += health.fillDone;
    total.fillTotal += health.fillTotal;
    volumes.push(volumeInfoOf(volume, health));
  }
  total.chunksPlaced = view.chunksPlaced;
  return create(ClusterStatusSchema, {
    clusterId: view.clusterId,
    nodes: view.nodes().map((node) => nodeInfo(view, node)),
    volumes,
    placement: summary(total, view.movesInFlight),
  });
}
