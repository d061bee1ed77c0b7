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

/** One volume as status shows it. */
export function volumeInfo(view: ClusterMapView, volume: VolumeRecord): VolumeInfo {
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
    chunksPlaced: BigInt(view.chunksOfVolume(volume.volumeId).length),
    snapshots: volume.snapshots.length,
  });
}

/**
 * The whole status. Walks every placed chunk once (for the degraded count and fill
 * progress): meant for an operator's request, not a hot path.
 */
export function clusterStatus(view: ClusterMapView): ClusterStatus {
  let degraded = 0;
  let filling = 0;
  let fillDone = 0;
  let fillTotal = 0;
  const volumes = view.volumes();
  for (const volume of volumes) {
    for (const chunk of view.chunksOfVolume(volume.volumeId)) {
      let healthy = 0;
      for (const replica of chunk.replicas) {
        const node = view.node(replica.nodeId);
        if (replica.state === "in-sync" && node !== undefined && isAlive(node)) healthy++;
        if (replica.state === "filling") {
          filling++;
          fillDone += replica.bytesDone;
          fillTotal += replica.bytesTotal;
        }
      }
      if (healthy < volume.replicationFactor) degraded++;
    }
  }
  return create(ClusterStatusSchema, {
    clusterId: view.clusterId,
    nodes: view.nodes().map((node) => nodeInfo(view, node)),
    volumes: volumes.map((volume) => volumeInfo(view, volume)),
    placement: {
      chunksPlaced: BigInt(view.chunksPlaced),
      chunksDegraded: BigInt(degraded),
      replicasFilling: BigInt(filling),
      fillBytesDone: BigInt(fillDone),
      fillBytesTotal: BigInt(fillTotal),
      movesInFlight: view.movesInFlight,
    },
  });
}
