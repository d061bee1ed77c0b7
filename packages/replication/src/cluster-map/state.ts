/**
 * The map's storage: the replicated records plus indexes derived from them (names, chunks per
 * node, placed bytes, moves in flight). Indexes are never encoded; they are kept in step by
 * the only mutators here and rebuilt on restore. Command handlers validate first and mutate
 * only through these methods, so a rejected command changes nothing.
 */
import { assert } from "@hes/base";
import { GRACE_PERIOD_MS_DEFAULT } from "../limits.js";
import {
  type ChunkRecord,
  type ClusterConfig,
  type ClusterMapView,
  chunkKey,
  type NodeRecord,
  type VolumeRecord,
} from "./model.js";

/**
 * The chunks on one node: an array for sampling by position plus a key → position map, with
 * swap-remove so every operation is O(1). Order depends on history (see ClusterMapView).
 */
class ChunksOnNode {
  readonly items: ChunkRecord[] = [];
  private readonly positions = new Map<number, number>();

  get size(): number {
    return this.items.length;
  }

  set(key: number, chunk: ChunkRecord): void {
    const at = this.positions.get(key);
    if (at !== undefined) {
      this.items[at] = chunk;
      return;
    }
    this.positions.set(key, this.items.length);
    this.items.push(chunk);
  }

  delete(key: number): boolean {
    const at = this.positions.get(key);
    if (at === undefined) return false;
    const last = this.items.pop() as ChunkRecord;
    this.positions.delete(key);
    if (at < this.items.length) {
      this.items[at] = last;
      this.positions.set(chunkKey(last.volumeId, last.chunkIndex), at);
    }
    return true;
  }
}

function byId<T>(map: ReadonlyMap<number, T>): T[] {
  return [...map.keys()].sort((a, b) => a - b).map((id) => map.get(id) as T);
}

/** Mutable map state. Only the cluster-map module writes to it. */
export class MapState implements ClusterMapView {
  clusterId = "";
  config: ClusterConfig = { gracePeriodMs: GRACE_PERIOD_MS_DEFAULT };
  appliedIndex = 0;
  appliedTerm = 0;
  timeMs = 0;
  /** Ids are handed out in order and never reused. */
  nextVolumeId = 1;
  nextSnapshotId = 1;

  private readonly nodeRecords = new Map<number, NodeRecord>();
  private readonly volumeRecords = new Map<number, VolumeRecord>();
  /** Per volume: chunk index → placement. */
  private readonly chunkRecords = new Map<number, Map<number, ChunkRecord>>();

  // Derived indexes.
  private readonly volumeIdByName = new Map<string, number>();
  private readonly chunkKeysByNode = new Map<number, ChunksOnNode>();
  private readonly placedBytesByNode = new Map<number, number>();
  private readonly movesByNode = new Map<number, number>();
  private liveNodes = 0;
  chunksPlaced = 0;
  movesInFlight = 0;
  rebuildsInFlight = 0;

  // ---- Reads (ClusterMapView) ----

  node(nodeId: number): NodeRecord | undefined {
    return this.nodeRecords.get(nodeId);
  }

  nodes(): readonly NodeRecord[] {
    return byId(this.nodeRecords);
  }

  /** Nodes that are not removed. */
  get liveNodeCount(): number {
    return this.liveNodes;
  }

  get nodeRecordCount(): number {
    return this.nodeRecords.size;
  }

  volume(volumeId: number): VolumeRecord | undefined {
    return this.volumeRecords.get(volumeId);
  }

  volumeByName(name: string): VolumeRecord | undefined {
    const id = this.volumeIdByName.get(name);
    return id === undefined ? undefined : this.volumeRecords.get(id);
  }

  volumes(): readonly VolumeRecord[] {
    return byId(this.volumeRecords);
  }

  get volumeCount(): number {
    return this.volumeRecords.size;
  }

  chunk(volumeId: number, chunkIndex: number): ChunkRecord | undefined {
    return this.chunkRecords.get(volumeId)?.get(chunkIndex);
  }

  chunksOfVolume(volumeId: number): readonly ChunkRecord[] {
    const chunks = this.chunkRecords.get(volumeId);
    return chunks === undefined ? [] : byId(chunks);
  }

  chunksOnNode(nodeId: number): readonly ChunkRecord[] {
    return this.chunkKeysByNode.get(nodeId)?.items ?? [];
  }

  replicaCountOnNode(nodeId: number): number {
    return this.chunkKeysByNode.get(nodeId)?.size ?? 0;
  }

  placedBytes(nodeId: number): number {
    return this.placedBytesByNode.get(nodeId) ?? 0;
  }

  movesOnNode(nodeId: number): number {
    return this.movesByNode.get(nodeId) ?? 0;
  }

  // ---- Writes ----

  putNode(node: NodeRecord): void {
    const previous = this.nodeRecords.get(node.nodeId);
    if (previous === undefined || previous.state === "removed") {
      if (node.state !== "removed") this.liveNodes++;
    } else if (node.state === "removed") {
      this.liveNodes--;
    }
    this.nodeRecords.set(node.nodeId, node);
  }

  putVolume(volume: VolumeRecord): void {
    const previous = this.volumeRecords.get(volume.volumeId);
    if (previous !== undefined) {
      assert(previous.name === volume.name, "volumes are never renamed");
    } else {
      assert(!this.volumeIdByName.has(volume.name), `volume name ${volume.name} is taken`);
      this.volumeIdByName.set(volume.name, volume.volumeId);
      this.chunkRecords.set(volume.volumeId, new Map());
    }
    this.volumeRecords.set(volume.volumeId, volume);
  }

  /** Removes a volume and the placement of all its chunks. */
  deleteVolume(volumeId: number): void {
    const volume = this.volumeRecords.get(volumeId);
    assert(volume !== undefined, `deleteVolume of unknown volume ${volumeId}`);
    for (const chunk of this.chunksOfVolume(volumeId)) this.deleteChunk(chunk);
    this.chunkRecords.delete(volumeId);
    this.volumeIdByName.delete(volume.name);
    this.volumeRecords.delete(volumeId);
  }

  /** Inserts or replaces a chunk's placement and keeps every index in step. */
  putChunk(chunk: ChunkRecord): void {
    const volume = this.volumeRecords.get(chunk.volumeId);
    assert(volume !== undefined, `chunk of unknown volume ${chunk.volumeId}`);
    const chunks = this.chunkRecords.get(chunk.volumeId) as Map<number, ChunkRecord>;
    const previous = chunks.get(chunk.chunkIndex);
    const key = chunkKey(chunk.volumeId, chunk.chunkIndex);
    if (previous === undefined) {
      this.chunksPlaced++;
    } else {
      this.count(previous, -volume.chunkSizeBytes, -1);
      // Nodes that keep their replica keep their position in the node's list.
      for (const replica of previous.replicas) {
        if (!chunk.replicas.some((r) => r.nodeId === replica.nodeId)) {
          this.removeFromNode(replica.nodeId, key);
        }
      }
    }
    chunks.set(chunk.chunkIndex, chunk);
    this.count(chunk, volume.chunkSizeBytes, 1);
    for (const replica of chunk.replicas) {
      let onNode = this.chunkKeysByNode.get(replica.nodeId);
      if (onNode === undefined) {
        onNode = new ChunksOnNode();
        this.chunkKeysByNode.set(replica.nodeId, onNode);
      }
      onNode.set(key, chunk);
    }
  }

  deleteChunk(chunk: ChunkRecord): void {
    const volume = this.volumeRecords.get(chunk.volumeId);
    assert(volume !== undefined, `chunk of unknown volume ${chunk.volumeId}`);
    const chunks = this.chunkRecords.get(chunk.volumeId) as Map<number, ChunkRecord>;
    const previous = chunks.get(chunk.chunkIndex);
    assert(previous !== undefined, "deleteChunk of a chunk that is not placed");
    this.count(previous, -volume.chunkSizeBytes, -1);
    const key = chunkKey(chunk.volumeId, chunk.chunkIndex);
    for (const replica of previous.replicas) this.removeFromNode(replica.nodeId, key);
    chunks.delete(chunk.chunkIndex);
    this.chunksPlaced--;
  }

  private removeFromNode(nodeId: number, key: number): void {
    const onNode = this.chunkKeysByNode.get(nodeId);
    assert(onNode?.delete(key) === true, "chunk index out of step");
    if (onNode.size === 0) this.chunkKeysByNode.delete(nodeId);
  }

  /** Adds (sign 1) or removes (sign -1) a chunk's share of the counters. */
  private count(chunk: ChunkRecord, bytesPerReplica: number, sign: 1 | -1): void {
    for (const replica of chunk.replicas) {
      this.addTo(this.placedBytesByNode, replica.nodeId, bytesPerReplica);
      if (replica.state === "filling" && replica.nodeId !== chunk.moveToNodeId) {
        this.rebuildsInFlight += sign;
      }
    }
    if (chunk.moveToNodeId !== 0) {
      this.movesInFlight += sign;
      this.addTo(this.movesByNode, chunk.moveFromNodeId, sign);
      this.addTo(this.movesByNode, chunk.moveToNodeId, sign);
    }
  }

  private addTo(map: Map<number, number>, key: number, delta: number): void {
    const value = (map.get(key) ?? 0) + delta;
    assert(value >= 0, "a derived count went negative");
    if (value === 0) map.delete(key);
    else map.set(key, value);
  }
}
