/**
 * Repair planning: what the leader proposes to restore redundancy. For every replica on a
 * down node, a ReplaceReplica (the map picks the new home with the placement policy); for
 * every chunk placed with fewer replicas than its volume wants (placed while a domain was
 * missing), a ReplaceReplica that adds one; for every move touching a down node, a CancelMove
 * (or a FinishMove when its target is already in sync) first. Chunks with no possible new
 * home (no node with room in a domain the chunk does not use) are left for later. Like
 * rebalance, this is advice: the map re-checks each command.
 *
 * Chunks whose only in-sync replica is on the down node are skipped: nobody can rebuild them
 * until that node returns (the map would refuse with HES_QUORUM_LOST anyway).
 */
import {
  type ChunkRecord,
  type ClusterMapView,
  chunkKey,
  isAlive,
  type NodeRecord,
  replicaOn,
} from "../cluster-map/model.js";
import { REBUILDS_INFLIGHT_MAX, REPAIR_PLAN_MAX } from "../limits.js";
import { canHost } from "./choose-replicas.js";

/** One repair step: propose it as the command of the same name. */
export type RepairAction =
  | {
      readonly kind: "cancelMove" | "finishMove";
      readonly volumeId: number;
      readonly chunkIndex: number;
    }
  | {
      readonly kind: "replaceReplica";
      readonly volumeId: number;
      readonly chunkIndex: number;
      /** 0: add a replica to an under-replicated chunk. */
      readonly oldNodeId: number;
    };

/**
 * True when some node outside the chunk's replica set, in a domain none of the other replicas
 * (all but `except`) use, can take the chunk now: the same test the map's placement applies.
 */
function hasHome(view: ClusterMapView, chunk: ChunkRecord, except: number): boolean {
  const bytes = view.volume(chunk.volumeId)?.chunkSizeBytes ?? 0;
  const used = new Set<string>();
  for (const replica of chunk.replicas) {
    if (replica.nodeId !== except) used.add(view.node(replica.nodeId)?.failureDomain ?? "");
  }
  for (const node of view.nodes()) {
    if (used.has(node.failureDomain) || replicaOn(chunk, node.nodeId) !== undefined) continue;
    if (canHost(view, node, bytes)) return true;
  }
  return false;
}

function aliveInSync(view: ClusterMapView, chunk: ChunkRecord, except: number): number {
  let count = 0;
  for (const replica of chunk.replicas) {
    if (replica.nodeId === except || replica.state !== "in-sync") continue;
    const node = view.node(replica.nodeId);
    if (node !== undefined && isAlive(node)) count++;
  }
  return count;
}

/**
 * Repair actions to propose now: at most `maxActions` (default REPAIR_PLAN_MAX), and no more
 * re-placements than the rebuild budget leaves free. Walks the chunks of down nodes and, for
 * under-replication, every placed chunk: linear in the map, run it every few seconds at most.
 */
export function planRepairs(
  view: ClusterMapView,
  options: { readonly maxActions?: number } = {},
): RepairAction[] {
  const max = options.maxActions ?? REPAIR_PLAN_MAX;
  let rebuildBudget = REBUILDS_INFLIGHT_MAX - view.rebuildsInFlight;
  const out: RepairAction[] = [];
  const seen = new Set<number>();
  const down: NodeRecord[] = view.nodes().filter((n) => n.state === "down");
  for (const node of down) {
    for (const chunk of view.chunksOnNode(node.nodeId)) {
      if (out.length >= max) return out;
      const key = chunkKey(chunk.volumeId, chunk.chunkIndex);
      if (seen.has(key)) continue;
      seen.add(key);
      const { volumeId, chunkIndex } = chunk;
      if (chunk.moveToNodeId !== 0) {
        // A target already in sync finishes (it may hold the only good copy); else cancel.
        const target = replicaOn(chunk, chunk.moveToNodeId);
        const kind = target?.state === "in-sync" ? "finishMove" : "cancelMove";
        out.push({ kind, volumeId, chunkIndex });
        continue;
      }
      if (rebuildBudget <= 0 || aliveInSync(view, chunk, node.nodeId) === 0) continue;
      if (!hasHome(view, chunk, node.nodeId)) continue;
      out.push({ kind: "replaceReplica", volumeId, chunkIndex, oldNodeId: node.nodeId });
      rebuildBudget--;
    }
  }
  for (const volume of view.volumes()) {
    for (const chunk of view.chunksOfVolume(volume.volumeId)) {
      if (out.length >= max || rebuildBudget <= 0) return out;
      if (chunk.replicas.length >= volume.replicationFactor || chunk.moveToNodeId !== 0) continue;
      if (seen.has(chunkKey(chunk.volumeId, chunk.chunkIndex))) continue;
      if (aliveInSync(view, chunk, 0) === 0 || !hasHome(view, chunk, 0)) continue;
      out.push({
        kind: "replaceReplica",
        volumeId: volume.volumeId,
        chunkIndex: chunk.chunkIndex,
        oldNodeId: 0,
      });
      rebuildBudget--;
    }
  }
  return out;
}
