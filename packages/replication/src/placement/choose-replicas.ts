/**
 * Where a new replica goes: the placement policy the cluster map runs inside `apply` when a
 * chunk is first written or a replica is re-placed. Pure and deterministic: the same map and
 * seed give the same answer on every member.
 *
 * Policy, in order:
 *  1. Only `up` nodes that are not draining and have room for the chunk (by the map's own
 *     accounting and by what the node reports) are candidates.
 *  2. Replicas of one chunk go to distinct failure domains, never two in one.
 *  3. The writing host is chosen first (data locality), unless it is already fuller than the
 *     cluster mean by more than PLACEMENT_LOCALITY_SLACK_FRACTION.
 *  4. The rest are drawn at random (seeded), weighted by capacity × (1 − utilisation)²: nodes
 *     at equal utilisation fill in proportion to their size, emptier ones faster. (Weighting by
 *     free bytes alone would equalise free bytes, not utilisation, on mixed disk sizes.)
 *  5. Fewer domains than the replication factor: as many replicas as there are domains, down
 *     to `minCount` (the write quorum), so a degraded cluster still takes new writes; repair
 *     adds the missing replicas once a domain returns. Fewer than `minCount`: a clear error.
 */
import { type NodeId, Prng } from "@hes/base";
import type { ClusterMapView, NodeRecord } from "../cluster-map/model.js";
import { nodeCapacityBytes, nodeReportedUsedBytes } from "../cluster-map/model.js";
import { PLACEMENT_LOCALITY_SLACK_FRACTION } from "../limits.js";

/** What {@link chooseReplicas} is asked. */
export interface ChooseReplicasRequest {
  readonly view: ClusterMapView;
  /** Bytes each new replica reserves (the volume's chunk size). */
  readonly chunkBytes: number;
  /** Replicas wanted. */
  readonly count: number;
  /** Fewest acceptable; below this the request fails. */
  readonly minCount: number;
  /** The writing host (0: none). */
  readonly preferredNodeId: number;
  /** Nodes that already hold a replica of the chunk, and their domains. */
  readonly excludeNodeIds: readonly number[];
  readonly excludeDomains: readonly string[];
  /** Seeds the weighted draw; derive it from replicated data only. */
  readonly seed: number;
}

/** The answer: chosen node ids in choice order, or why none could be. */
export type ChooseReplicasResult =
  | { readonly ok: true; readonly nodeIds: readonly NodeId[] }
  | {
      readonly ok: false;
      readonly code: "HES_NO_SPACE" | "HES_UNAVAILABLE";
      readonly message: string;
    };

interface Candidate {
  readonly node: NodeRecord;
  readonly capacityBytes: number;
  readonly placedBytes: number;
}

/** True when the node may take a new replica of `chunkBytes`. */
export function canHost(view: ClusterMapView, node: NodeRecord, chunkBytes: number): boolean {
  if (node.state !== "up" || node.drain) return false;
  const capacity = nodeCapacityBytes(node);
  return (
    capacity - view.placedBytes(node.nodeId) >= chunkBytes &&
    capacity - nodeReportedUsedBytes(node) >= chunkBytes
  );
}

/** Chooses replicas for one chunk (see the module comment for the policy). */
export function chooseReplicas(request: ChooseReplicasRequest): ChooseReplicasResult {
  const { view, chunkBytes } = request;
  const excluded = new Set(request.excludeNodeIds);
  const usedDomains = new Set(request.excludeDomains);
  const alive: NodeRecord[] = [];
  const candidates: Candidate[] = [];
  let placedTotal = 0;
  let capacityTotal = 0;
  for (const node of view.nodes()) {
    if (node.state !== "up" || node.drain) continue;
    alive.push(node);
    const capacityBytes = nodeCapacityBytes(node);
    const placedBytes = view.placedBytes(node.nodeId);
    placedTotal += placedBytes;
    capacityTotal += capacityBytes;
    if (excluded.has(node.nodeId) || usedDomains.has(node.failureDomain)) continue;
    if (canHost(view, node, chunkBytes)) candidates.push({ node, capacityBytes, placedBytes });
  }
  const chosen: NodeId[] = [];
  const take = (candidate: Candidate): void => {
    chosen.push(candidate.node.nodeId);
    usedDomains.add(candidate.node.failureDomain);
  };
  const meanUtilisation = capacityTotal === 0 ? 0 : placedTotal / capacityTotal;
  const preferred = candidates.find((c) => c.node.nodeId === request.preferredNodeId);
  if (
    preferred !== undefined &&
    chosen.length < request.count &&
    preferred.placedBytes / preferred.capacityBytes <=
      meanUtilisation * (1 + PLACEMENT_LOCALITY_SLACK_FRACTION)
  ) {
    take(preferred);
  }
  const prng = new Prng(request.seed);
  while (chosen.length < request.count) {
    const open = candidates.filter((c) => !usedDomains.has(c.node.failureDomain));
    if (open.length === 0) break;
    take(drawWeighted(open, prng));
  }
  if (chosen.length >= request.minCount) return { ok: true, nodeIds: chosen };
  return failure(request, alive, usedDomains.size - new Set(request.excludeDomains).size);
}

function weight(candidate: Candidate): number {
  const free = candidate.capacityBytes - candidate.placedBytes;
  // Integers up to 2^53 in, a double out: the same on every member (IEEE arithmetic).
  return (free / candidate.capacityBytes) * free;
}

function drawWeighted(open: readonly Candidate[], prng: Prng): Candidate {
  let total = 0;
  for (const candidate of open) total += weight(candidate);
  let point = prng.float() * total;
  for (const candidate of open) {
    point -= weight(candidate);
    if (point < 0) return candidate;
  }
  return open[open.length - 1] as Candidate;
}

function failure(
  request: ChooseReplicasRequest,
  alive: readonly NodeRecord[],
  found: number,
): ChooseReplicasResult {
  const excludedDomains = new Set(request.excludeDomains);
  const aliveDomains = new Set(
    alive
      .filter((n) => !request.excludeNodeIds.includes(n.nodeId))
      .map((n) => n.failureDomain)
      .filter((domain) => !excludedDomains.has(domain)),
  );
  const needed = request.minCount;
  if (aliveDomains.size < needed) {
    return {
      ok: false,
      code: "HES_UNAVAILABLE",
      message:
        `placement needs ${needed} more failure domain(s) with an up node; ` +
        `${aliveDomains.size} available (${[...aliveDomains].sort().join(", ") || "none"})`,
    };
  }
  return {
    ok: false,
    code: "HES_NO_SPACE",
    message:
      `placement needs ${needed} failure domain(s) with room for a ` +
      `${request.chunkBytes}-byte chunk; only ${found} have it`,
  };
}

function mix32(hash: number, value: number): number {
  let h = Math.imul(hash ^ value, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * A seed for {@link chooseReplicas} from replicated facts only (the log index and the chunk),
 * so every member draws the same numbers. Safe integers in, a Prng seed (< 2^53) out.
 */
export function placementSeed(logIndex: number, volumeId: number, chunkIndex: number): number {
  let high = 0x9e3779b9;
  let low = 0x7f4a7c15;
  for (const value of [logIndex, volumeId, chunkIndex]) {
    const lo = value >>> 0;
    const hi = Math.floor(value / 0x1_0000_0000) >>> 0;
    high = mix32(high, lo);
    high = mix32(high, hi);
    low = mix32(low, hi ^ high);
    low = mix32(low, lo);
  }
  return (high & 0x1f_ffff) * 0x1_0000_0000 + low;
}
