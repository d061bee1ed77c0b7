/**
 * The map's Raft-snapshot encoding (`ClusterMapState` in cluster_map.proto). Every list is
 * sorted by id, so one state always encodes to the same bytes: two members can compare their
 * maps by comparing snapshots. Decoding checks structure, references and the invariants, and
 * refuses anything off with HES_BAD_FORMAT.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { HesError, isNodeId } from "@hes/base";
import {
  type ClusterMapNode,
  type ClusterMapNodeSchema,
  type ClusterMapState,
  ClusterMapStateSchema,
  type ClusterMapVolume,
  type ClusterMapVolumeSchema,
  NodeState as WireNodeState,
} from "@hes/proto";
import {
  CHUNKS_PER_VOLUME_MAX,
  CLUSTER_MAP_FORMAT,
  REPLICATION_FACTOR_MAX,
  VOLUME_ID_MAX,
} from "../limits.js";
import { decodeChunkTable, encodeChunkTable } from "./chunk-table.js";
import { checkInvariants } from "./invariants.js";
import type { ChunkRecord, NodeRecord, NodeState, VolumeRecord } from "./model.js";
import { MapState } from "./state.js";

const NODE_STATE_TO_WIRE: Readonly<Record<NodeState, WireNodeState>> = {
  up: WireNodeState.UP,
  down: WireNodeState.DOWN,
  draining: WireNodeState.DRAINING,
  removed: WireNodeState.REMOVED,
};

function invert<K extends string>(table: Readonly<Record<K, number>>): Map<number, K> {
  return new Map(Object.entries(table).map(([k, v]) => [v as number, k as K]));
}
const NODE_STATE_FROM_WIRE = invert(NODE_STATE_TO_WIRE);

/** The wire name of a node state (shared with the status view). */
export function nodeStateToWire(state: NodeState): WireNodeState {
  return NODE_STATE_TO_WIRE[state];
}

const big = BigInt;

/** Encodes the whole map, deterministically. */
export function encodeState(state: MapState): Uint8Array {
  const chunks: ChunkRecord[] = [];
  for (const volume of state.volumes()) chunks.push(...state.chunksOfVolume(volume.volumeId));
  const message = create(ClusterMapStateSchema, {
    format: CLUSTER_MAP_FORMAT,
    clusterId: state.clusterId,
    gracePeriodMs: big(state.config.gracePeriodMs),
    appliedIndex: big(state.appliedIndex),
    appliedTerm: big(state.appliedTerm),
    timeMs: big(state.timeMs),
    nextVolumeId: big(state.nextVolumeId),
    nextSnapshotId: big(state.nextSnapshotId),
    nodes: state.nodes().map(encodeNode),
    volumes: state.volumes().map(encodeVolume),
    chunkTable: encodeChunkTable(chunks),
  });
  return toBinary(ClusterMapStateSchema, message);
}

function encodeNode(node: NodeRecord): MessageInitShape<typeof ClusterMapNodeSchema> {
  return {
    nodeId: node.nodeId,
    controlAddress: node.controlAddress,
    dataAddress: node.dataAddress,
    failureDomain: node.failureDomain,
    state: NODE_STATE_TO_WIRE[node.state],
    disks: node.disks.map((d) => ({
      diskId: d.diskId,
      path: d.path,
      capacityBytes: big(d.capacityBytes),
      usedBytes: big(d.usedBytes),
      failed: d.failed,
    })),
    lastHeartbeatMs: big(node.lastHeartbeatMs),
    drain: node.drain,
    joinedAtIndex: big(node.joinedAtIndex),
    downSinceMs: big(node.downSinceMs),
    revokedVolumeIds: node.revokedVolumeIds.map(big),
  };
}

function encodeVolume(volume: VolumeRecord): MessageInitShape<typeof ClusterMapVolumeSchema> {
  return {
    volumeId: big(volume.volumeId),
    name: volume.name,
    sizeBytes: big(volume.sizeBytes),
    chunkSizeBytes: big(volume.chunkSizeBytes),
    replicationFactor: volume.replicationFactor,
    writeQuorum: volume.writeQuorum,
    ownerNodeId: volume.ownerNodeId,
    epoch: big(volume.epoch),
    parentVolumeId: big(volume.parentVolumeId),
    parentSnapshotId: big(volume.parentSnapshotId),
    snapshots: volume.snapshots.map((s) => ({
      volumeSnapshotId: big(s.snapshotId),
      name: s.name,
      createdAtIndex: big(s.createdAtIndex),
      createdAtMs: big(s.createdAtMs),
    })),
    createdAtIndex: big(volume.createdAtIndex),
  };
}

// ---- Decoding ----

function bad(message: string, cause?: unknown): never {
  throw new HesError("HES_BAD_FORMAT", `cluster map snapshot: ${message}`, { cause });
}

function num(value: bigint, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (value < 0n || value > BigInt(max)) bad(`${what} ${value} out of range`);
  return Number(value);
}

function nodeIdOf(value: number, what: string, allowZero = false): number {
  if (allowZero && value === 0) return 0;
  if (!isNodeId(value)) bad(`${what} ${value} is not a node id`);
  return value;
}

function decodeNode(node: ClusterMapNode): NodeRecord {
  const state = NODE_STATE_FROM_WIRE.get(node.state);
  if (state === undefined) bad(`node ${node.nodeId} has unknown state ${node.state}`);
  return {
    nodeId: nodeIdOf(node.nodeId, "node id"),
    controlAddress: node.controlAddress,
    dataAddress: node.dataAddress,
    failureDomain: node.failureDomain,
    state,
    drain: node.drain,
    disks: node.disks.map((d) => ({
      diskId: d.diskId,
      path: d.path,
      capacityBytes: num(d.capacityBytes, "disk capacity"),
      usedBytes: num(d.usedBytes, "disk used bytes"),
      failed: d.failed,
    })),
    lastHeartbeatMs: num(node.lastHeartbeatMs, "last heartbeat"),
    joinedAtIndex: num(node.joinedAtIndex, "joined at"),
    downSinceMs: num(node.downSinceMs, "down since"),
    revokedVolumeIds: node.revokedVolumeIds.map((id) => num(id, "revoked volume", VOLUME_ID_MAX)),
  };
}

function decodeVolume(volume: ClusterMapVolume): VolumeRecord {
  return {
    volumeId: num(volume.volumeId, "volume id", VOLUME_ID_MAX),
    name: volume.name,
    sizeBytes: num(volume.sizeBytes, "volume size"),
    chunkSizeBytes: num(volume.chunkSizeBytes, "chunk size"),
    replicationFactor: volume.replicationFactor,
    writeQuorum: volume.writeQuorum,
    ownerNodeId: nodeIdOf(volume.ownerNodeId, "owner", true),
    epoch: num(volume.epoch, "epoch"),
    parentVolumeId: num(volume.parentVolumeId, "parent volume", VOLUME_ID_MAX),
    parentSnapshotId: num(volume.parentSnapshotId, "parent snapshot"),
    snapshots: volume.snapshots.map((s) => ({
      snapshotId: num(s.volumeSnapshotId, "snapshot id"),
      name: s.name,
      createdAtIndex: num(s.createdAtIndex, "snapshot index"),
      createdAtMs: num(s.createdAtMs, "snapshot time"),
    })),
    createdAtIndex: num(volume.createdAtIndex, "volume created at"),
  };
}

function checkChunk(chunk: ChunkRecord): ChunkRecord {
  num(BigInt(chunk.volumeId), "chunk volume", VOLUME_ID_MAX);
  num(BigInt(chunk.chunkIndex), "chunk index", CHUNKS_PER_VOLUME_MAX - 1);
  nodeIdOf(chunk.moveFromNodeId, "move source", true);
  nodeIdOf(chunk.moveToNodeId, "move target", true);
  for (const replica of chunk.replicas) nodeIdOf(replica.nodeId, "replica node");
  return chunk;
}

/** Fails unless `keys` is strictly increasing (sorted, no duplicates): the canonical order. */
function checkSorted(keys: readonly number[], what: string): void {
  for (let i = 1; i < keys.length; i++) {
    if ((keys[i] as number) <= (keys[i - 1] as number)) bad(`${what} are not sorted and unique`);
  }
}

/** Decodes a snapshot into a fresh state, or throws HES_BAD_FORMAT. */
export function decodeState(bytes: Uint8Array): MapState {
  let message: ClusterMapState;
  try {
    message = fromBinary(ClusterMapStateSchema, bytes);
  } catch (cause) {
    bad("not a ClusterMapState message", cause);
  }
  if (message.format !== CLUSTER_MAP_FORMAT) {
    bad(`format ${message.format} is not ${CLUSTER_MAP_FORMAT} (written by another version)`);
  }
  const nodes = message.nodes.map(decodeNode);
  const volumes = message.volumes.map(decodeVolume);
  const chunks = decodeChunkTable(message.chunkTable, REPLICATION_FACTOR_MAX + 1).map(checkChunk);
  checkSorted(
    nodes.map((n) => n.nodeId),
    "nodes",
  );
  checkSorted(
    volumes.map((v) => v.volumeId),
    "volumes",
  );
  checkSorted(
    chunks.map((c) => c.volumeId * CHUNKS_PER_VOLUME_MAX + c.chunkIndex),
    "chunks",
  );
  const state = new MapState();
  state.clusterId = message.clusterId;
  state.config = { gracePeriodMs: num(message.gracePeriodMs, "grace period") };
  state.appliedIndex = num(message.appliedIndex, "applied index");
  state.appliedTerm = num(message.appliedTerm, "applied term");
  state.timeMs = num(message.timeMs, "time");
  state.nextVolumeId = num(message.nextVolumeId, "next volume id");
  state.nextSnapshotId = num(message.nextSnapshotId, "next snapshot id");
  for (const node of nodes) state.putNode(node);
  const names = new Set<string>();
  for (const volume of volumes) {
    if (names.has(volume.name)) bad(`volume name ${volume.name} appears twice`);
    names.add(volume.name);
    state.putVolume(volume);
  }
  for (const chunk of chunks) {
    if (state.volume(chunk.volumeId) === undefined) bad(`chunk of unknown volume`);
    const ids = chunk.replicas.map((r) => r.nodeId);
    if (new Set(ids).size !== ids.length || ids.some((id) => state.node(id) === undefined)) {
      bad(`chunk ${chunk.chunkIndex} of volume ${chunk.volumeId} has bad replica nodes`);
    }
    state.putChunk(chunk);
  }
  const violations = checkInvariants(state);
  if (violations.length > 0) bad(`invariants broken: ${violations.slice(0, 5).join("; ")}`);
  return state;
}
