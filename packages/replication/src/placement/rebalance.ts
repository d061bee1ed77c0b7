/**
 * Rebalancing: which chunk replicas to move so that every node's utilisation (placed bytes
 * over capacity) is close to the cluster mean, and draining nodes empty out. Runs on the
 * leader, off the apply path: the plan is advice turned into StartMove commands, and the map
 * re-checks each one when it applies it (the state may have moved on).
 *
 * Method (greedy, near the minimum of data moved): take the fullest node and the emptiest one
 * and move one chunk between them if that narrows the gap, preferring chunks whose replica is
 * not the owner's local copy (data locality). Repeat within the move budget. Draining nodes
 * are sources first, whatever their utilisation. Stops once every node is within
 * REBALANCE_TOLERANCE_FRACTION of the mean, so a balanced cluster is left alone.
 *
 * Deterministic for a given map; note that it walks a node's chunks in insertion order, so a
 * map restored from a snapshot may pick different (equally valid) chunks.
 */
import { type NodeId, Prng } from "@hes/base";
import {
  type ChunkRecord,
  type ClusterMapView,
  chunkKey,
  type NodeRecord,
  nodeCapacityBytes,
  replicaOn,
} from "../cluster-map/model.js";
import {
  MOVES_INFLIGHT_MAX,
  MOVES_PER_NODE_MAX,
  REBALANCE_SCAN_PER_NODE_MAX,
  REBALANCE_TOLERANCE_FRACTION,
} from "../limits.js";
import { canHost } from "./choose-replicas.js";

/** One move of a plan: propose it as StartMove. */
export interface PlannedMove {
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly fromNodeId: NodeId;
  readonly toNodeId: NodeId;
  readonly bytes: number;
}

/** Options of {@link planRebalance}. */
export interface RebalanceOptions {
  /** Most moves to return (default: what MOVES_INFLIGHT_MAX leaves free). */
  readonly movesMax?: number;
  /** Balanced when every node is within this fraction of the mean utilisation. */
  readonly toleranceFraction?: number;
  /** Seeds which chunks are looked at first (default: from the applied index). */
  readonly seed?: number;
}

interface Load {
  readonly node: NodeRecord;
  readonly capacityBytes: number;
  placedBytes: number;
  movesLeft: number;
}

function utilisation(load: Load): number {
  return load.capacityBytes === 0
    ? Number.POSITIVE_INFINITY
    : load.placedBytes / load.capacityBytes;
}

/** Per-node utilisation and the cluster mean over nodes that take replicas. */
export function utilisationOf(view: ClusterMapView): {
  readonly byNode: ReadonlyMap<NodeId, number>;
  readonly mean: number;
} {
  let placed = 0;
  let capacity = 0;
  const byNode = new Map<NodeId, number>();
  for (const node of view.nodes()) {
    if (node.state !== "up" || node.drain) continue;
    const cap = nodeCapacityBytes(node);
    if (cap === 0) continue;
    placed += view.placedBytes(node.nodeId);
    capacity += cap;
    byNode.set(node.nodeId, view.placedBytes(node.nodeId) / cap);
  }
  return { byNode, mean: capacity === 0 ? 0 : placed / capacity };
}

interface Planner {
  readonly view: ClusterMapView;
  readonly loads: Map<NodeId, Load>;
  readonly chosen: Set<number>;
  readonly moves: PlannedMove[];
  readonly prng: Prng;
}

/** Can `chunk`'s replica on `from` move to `to` without breaking placement rules? */
function movable(p: Planner, chunk: ChunkRecord, from: NodeId, to: Load, local: boolean): boolean {
  if (chunk.moveToNodeId !== 0 || p.chosen.has(chunkKey(chunk.volumeId, chunk.chunkIndex))) {
    return false;
  }
  if (chunk.replicas.some((r) => r.state === "filling" || r.nodeId === to.node.nodeId)) {
    return false;
  }
  if (replicaOn(chunk, from)?.state !== "in-sync") return false;
  const owner = p.view.volume(chunk.volumeId)?.ownerNodeId ?? 0;
  if (!local && owner === from) return false;
  for (const replica of chunk.replicas) {
    if (replica.nodeId === from) continue;
    if (p.view.node(replica.nodeId)?.failureDomain === to.node.failureDomain) return false;
  }
  return true;
}

/**
 * Finds a chunk to move from `from` to `to`, non-local replicas first. Scans the source's
 * chunks from a random position (seeded), so that chunks which cannot move to this target do
 * not pile up in front of every scan, at most REBALANCE_SCAN_PER_NODE_MAX of them per pass.
 */
function findChunk(p: Planner, from: Load, to: Load): ChunkRecord | undefined {
  const chunks = p.view.chunksOnNode(from.node.nodeId);
  if (chunks.length === 0) return undefined;
  const scan = Math.min(chunks.length, REBALANCE_SCAN_PER_NODE_MAX);
  for (const local of [false, true]) {
    const start = p.prng.int(chunks.length);
    for (let i = 0; i < scan; i++) {
      const chunk = chunks[(start + i) % chunks.length] as ChunkRecord;
      if (movable(p, chunk, from.node.nodeId, to, local)) return chunk;
    }
  }
  return undefined;
}

function record(p: Planner, chunk: ChunkRecord, from: Load, to: Load): void {
  const bytes = p.view.volume(chunk.volumeId)?.chunkSizeBytes ?? 0;
  p.chosen.add(chunkKey(chunk.volumeId, chunk.chunkIndex));
  p.moves.push({
    volumeId: chunk.volumeId,
    chunkIndex: chunk.chunkIndex,
    fromNodeId: from.node.nodeId,
    toNodeId: to.node.nodeId,
    bytes,
  });
  from.placedBytes -= bytes;
  to.placedBytes += bytes;
  from.movesLeft--;
  to.movesLeft--;
}

/** Tries sources in order against targets in order; records the first move found. */
function moveOne(
  p: Planner,
  sources: readonly Load[],
  targets: readonly Load[],
  worthIt: (from: Load, to: Load, bytes: number) => boolean,
): boolean {
  for (const from of sources) {
    if (from.movesLeft <= 0) continue;
    for (const to of targets) {
      if (to.movesLeft <= 0 || to === from) continue;
      const chunk = findChunk(p, from, to);
      if (chunk === undefined) continue;
      const bytes = p.view.volume(chunk.volumeId)?.chunkSizeBytes ?? 0;
      if (!worthIt(from, to, bytes)) continue;
      if (!canHost(p.view, to.node, bytes) || to.placedBytes + bytes > to.capacityBytes) continue;
      record(p, chunk, from, to);
      return true;
    }
  }
  return false;
}

/** Worth moving when the target ends no fuller than the source: the gap narrows. */
function narrows(from: Load, to: Load, bytes: number): boolean {
  return (
    (to.placedBytes + bytes) / to.capacityBytes <= (from.placedBytes - bytes) / from.capacityBytes
  );
}

/** The moves to start now (at most the free move budget). See the module comment. */
export function planRebalance(view: ClusterMapView, options: RebalanceOptions = {}): PlannedMove[] {
  const tolerance = options.toleranceFraction ?? REBALANCE_TOLERANCE_FRACTION;
  const budget = Math.min(
    options.movesMax ?? Number.MAX_SAFE_INTEGER,
    MOVES_INFLIGHT_MAX - view.movesInFlight,
  );
  const loads = new Map<NodeId, Load>();
  for (const node of view.nodes()) {
    if (node.state !== "up" && node.state !== "draining") continue;
    loads.set(node.nodeId, {
      node,
      capacityBytes: nodeCapacityBytes(node),
      placedBytes: view.placedBytes(node.nodeId),
      movesLeft: MOVES_PER_NODE_MAX - view.movesOnNode(node.nodeId),
    });
  }
  const seed = options.seed ?? view.appliedIndex;
  const p: Planner = { view, loads, chosen: new Set(), moves: [], prng: new Prng(seed) };
  const all = [...loads.values()];
  const targets = all.filter((l) => l.node.state === "up" && !l.node.drain && l.capacityBytes > 0);
  const draining = all.filter((l) => l.node.drain && l.placedBytes > 0);
  const byUtilisation = (a: Load, b: Load) =>
    utilisation(a) - utilisation(b) || a.node.nodeId - b.node.nodeId;
  while (p.moves.length < budget && draining.length > 0) {
    targets.sort(byUtilisation);
    if (!moveOne(p, draining, targets, () => true)) break;
  }
  let capacity = 0;
  let placed = 0;
  for (const t of targets) {
    capacity += t.capacityBytes;
    placed += t.placedBytes;
  }
  const mean = capacity === 0 ? 0 : placed / capacity;
  const high = mean * (1 + tolerance);
  const low = mean * (1 - tolerance);
  while (p.moves.length < budget && targets.length > 1) {
    targets.sort(byUtilisation);
    const emptiest = targets[0] as Load;
    const fullest = targets[targets.length - 1] as Load;
    if (utilisation(fullest) <= high && utilisation(emptiest) >= low) break;
    const descending = [...targets].reverse();
    const sources = descending.filter((l) => utilisation(l) > mean);
    const sinks = targets.filter((l) => utilisation(l) < mean);
    if (moveOne(p, sources, sinks, narrows)) continue;
    // Nothing moves from above the mean to below it. If a node there is only waiting for its
    // moves to finish, wait too. Otherwise failure domains forbid it (a domain with more
    // capacity than its share of replicas): still even out what can be, pair by pair, where
    // the gap is worth a move.
    if ([...sources, ...sinks].some((l) => l.movesLeft <= 0)) break;
    const worthIt = (from: Load, to: Load, bytes: number): boolean =>
      utilisation(from) - utilisation(to) > tolerance * mean && narrows(from, to, bytes);
    if (!moveOne(p, descending, targets, worthIt)) break;
  }
  return p.moves;
}
