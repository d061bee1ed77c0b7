/**
 * The map's invariants, checked from scratch: used by the tests after every command and by
 * snapshot decoding before a restored map is accepted. Returns every violation found (empty
 * when the map is sound); never throws.
 */
import { isNodeId } from "@hes/base";
import {
  CHUNK_PLACEMENTS_MAX,
  MOVES_INFLIGHT_MAX,
  MOVES_PER_NODE_MAX,
  REBUILDS_INFLIGHT_MAX,
  REPLICATION_FACTOR_MAX,
  VOLUME_BLOCK_BYTES,
} from "../limits.js";
import { isPowerOfTwo } from "./arguments.js";
import {
  type ChunkRecord,
  type ClusterMapView,
  chunkCount,
  isAlive,
  type VolumeRecord,
} from "./model.js";

/** Extra facts only the state itself knows (id counters). */
export interface InvariantCounters {
  readonly nextVolumeId: number;
  readonly nextSnapshotId: number;
}

function checkVolume(
  view: ClusterMapView,
  volume: VolumeRecord,
  counters: InvariantCounters | undefined,
  out: string[],
): void {
  const v = `volume ${volume.volumeId} (${volume.name})`;
  if (view.volumeByName(volume.name) !== volume) out.push(`${v}: name index out of step`);
  if (!isPowerOfTwo(volume.chunkSizeBytes)) out.push(`${v}: chunk size not a power of two`);
  if (volume.sizeBytes <= 0 || volume.sizeBytes % VOLUME_BLOCK_BYTES !== 0) {
    out.push(`${v}: size ${volume.sizeBytes} not whole blocks`);
  }
  const rf = volume.replicationFactor;
  if (rf < 1 || rf > REPLICATION_FACTOR_MAX) out.push(`${v}: replication factor ${rf}`);
  if (volume.writeQuorum < 1 || volume.writeQuorum > rf) out.push(`${v}: write quorum`);
  if (volume.ownerNodeId !== 0) {
    const owner = view.node(volume.ownerNodeId);
    if (owner === undefined || !isAlive(owner)) {
      out.push(`${v}: lease owner ${volume.ownerNodeId} is not a live node`);
    }
    if (volume.epoch < 1) out.push(`${v}: open at epoch ${volume.epoch}`);
  }
  if (volume.parentVolumeId !== 0) {
    const parent = view.volume(volume.parentVolumeId);
    if (parent?.snapshots.some((s) => s.snapshotId === volume.parentSnapshotId) !== true) {
      out.push(`${v}: parent snapshot ${volume.parentSnapshotId} is gone`);
    }
  }
  const names = new Set<string>();
  let previousId = 0;
  for (const snapshot of volume.snapshots) {
    if (snapshot.snapshotId <= previousId) out.push(`${v}: snapshots not sorted by id`);
    previousId = snapshot.snapshotId;
    if (names.has(snapshot.name)) out.push(`${v}: snapshot name ${snapshot.name} twice`);
    names.add(snapshot.name);
  }
  if (counters !== undefined) {
    if (volume.volumeId >= counters.nextVolumeId) out.push(`${v}: id not below the counter`);
    if (previousId >= counters.nextSnapshotId) out.push(`${v}: snapshot id not below counter`);
  }
}

function checkChunk(
  view: ClusterMapView,
  volume: VolumeRecord,
  chunk: ChunkRecord,
  out: string[],
): void {
  const c = `chunk ${chunk.volumeId}/${chunk.chunkIndex}`;
  if (chunk.chunkIndex >= chunkCount(volume)) out.push(`${c}: past the end of its volume`);
  const moving = chunk.moveToNodeId !== 0;
  if (moving !== (chunk.moveFromNodeId !== 0)) out.push(`${c}: half a move`);
  const most = volume.replicationFactor + (moving ? 1 : 0);
  if (chunk.replicas.length === 0 || chunk.replicas.length > most) {
    out.push(`${c}: ${chunk.replicas.length} replicas (most ${most})`);
  }
  if (!chunk.replicas.some((r) => r.state === "in-sync")) out.push(`${c}: no in-sync replica`);
  const nodes = new Set<number>();
  const domains = new Map<string, number>();
  for (const replica of chunk.replicas) {
    if (nodes.has(replica.nodeId)) out.push(`${c}: two replicas on node ${replica.nodeId}`);
    nodes.add(replica.nodeId);
    if (replica.bytesDone > replica.bytesTotal) out.push(`${c}: progress past its total`);
    const node = view.node(replica.nodeId);
    if (node === undefined || node.state === "removed") {
      out.push(`${c}: replica on unknown or removed node ${replica.nodeId}`);
      continue;
    }
    // A move's source and target may share a domain: the source leaves when it finishes.
    if (replica.nodeId === chunk.moveFromNodeId) continue;
    const other = domains.get(node.failureDomain);
    if (other !== undefined) {
      out.push(`${c}: nodes ${other} and ${replica.nodeId} share domain ${node.failureDomain}`);
    }
    domains.set(node.failureDomain, replica.nodeId);
  }
  if (moving && (!nodes.has(chunk.moveFromNodeId) || !nodes.has(chunk.moveToNodeId))) {
    out.push(`${c}: move ends are not replicas`);
  }
}

interface Tally {
  placedBytes: number;
  replicas: number;
  moves: number;
}

/** Every invariant violation of the map (empty when sound). */
export function checkInvariants(view: ClusterMapView, counters?: InvariantCounters): string[] {
  const out: string[] = [];
  const tallies = new Map<number, Tally>();
  const tally = (nodeId: number): Tally => {
    let t = tallies.get(nodeId);
    if (t === undefined) {
      t = { placedBytes: 0, replicas: 0, moves: 0 };
      tallies.set(nodeId, t);
    }
    return t;
  };
  for (const node of view.nodes()) {
    if (!isNodeId(node.nodeId)) out.push(`node id ${node.nodeId} invalid`);
  }
  let chunks = 0;
  let moves = 0;
  let rebuilds = 0;
  for (const volume of view.volumes()) {
    checkVolume(view, volume, counters, out);
    for (const chunk of view.chunksOfVolume(volume.volumeId)) {
      chunks++;
      checkChunk(view, volume, chunk, out);
      if (chunk.moveToNodeId !== 0) {
        moves++;
        tally(chunk.moveFromNodeId).moves++;
        tally(chunk.moveToNodeId).moves++;
      }
      for (const replica of chunk.replicas) {
        const t = tally(replica.nodeId);
        t.placedBytes += volume.chunkSizeBytes;
        t.replicas++;
        if (replica.state === "filling" && replica.nodeId !== chunk.moveToNodeId) rebuilds++;
      }
    }
  }
  for (const node of view.nodes()) {
    const t = tally(node.nodeId);
    if (view.placedBytes(node.nodeId) !== t.placedBytes) {
      out.push(`node ${node.nodeId}: placed bytes index out of step`);
    }
    if (view.replicaCountOnNode(node.nodeId) !== t.replicas) {
      out.push(`node ${node.nodeId}: replica index out of step`);
    }
    if (view.movesOnNode(node.nodeId) !== t.moves) out.push(`node ${node.nodeId}: move count`);
    if (t.moves > MOVES_PER_NODE_MAX) out.push(`node ${node.nodeId}: too many moves`);
    if (node.state === "removed" && t.replicas > 0) out.push(`removed node ${node.nodeId} hosts`);
  }
  if (view.chunksPlaced !== chunks || chunks > CHUNK_PLACEMENTS_MAX) out.push("chunk count");
  if (view.movesInFlight !== moves || moves > MOVES_INFLIGHT_MAX) out.push("moves in flight");
  if (view.rebuildsInFlight !== rebuilds || rebuilds > REBUILDS_INFLIGHT_MAX) {
    out.push("rebuilds in flight");
  }
  return out;
}
