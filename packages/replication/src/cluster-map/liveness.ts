/**
 * Liveness policy: which nodes the leader should propose to mark down, and what a node that
 * comes back must do. Pure functions of the map and a time the caller supplies.
 *
 * The leader calls {@link nodesToMarkDown} with its own clock and proposes MarkNodeDown for
 * each node returned, stamped with that same clock. The map re-checks the silence in command
 * time when it applies the command, so a heartbeat that lands in between wins the race and the
 * proposal is rejected; every member decides the same way.
 */
import type { NodeId } from "@hes/base";
import type { ClusterMapView, ReplicaState } from "./model.js";
import { isAlive, replicaOn } from "./model.js";

/** Inputs of {@link nodesToMarkDown}. */
export interface MarkDownPolicyInput {
  /** The leader's clock now (ms since the epoch), as it will stamp the proposals. */
  readonly nowMs: number;
  /**
   * When this member became leader (its clock). Heartbeats sent to the previous leader may
   * never have reached the log, so nobody is marked down until a full grace period after the
   * election.
   */
  readonly leaderSinceMs: number;
}

/** Live nodes silent for at least the grace period, by id. */
export function nodesToMarkDown(view: ClusterMapView, input: MarkDownPolicyInput): NodeId[] {
  const grace = view.config.gracePeriodMs;
  const out: NodeId[] = [];
  for (const node of view.nodes()) {
    if (!isAlive(node)) continue;
    const since = Math.max(node.lastHeartbeatMs, input.leaderSinceMs);
    if (input.nowMs - since >= grace) out.push(node.nodeId);
  }
  return out;
}

/** One replica a node must host, as the map sees it. */
export interface Assignment {
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly state: ReplicaState;
  /** What the map knows durable on this replica: a stale one catches up from here. */
  readonly durableSeq: number;
  /** Highest durable sequence among the chunk's in-sync replicas (the catch-up target). */
  readonly inSyncDurableSeq: number;
  /** The volume's current epoch: writes from older epochs must be refused. */
  readonly epoch: number;
}

/**
 * Every replica `nodeId` must host, sorted by (volume, chunk). A node that comes back
 * compares this with what its disks hold: chunks it holds that are not listed were re-placed
 * while it was away (drop them); `stale` ones catch up from `durableSeq`; `filling` ones are
 * copied in; `in-sync` ones missed nothing.
 */
export function assignmentsOf(view: ClusterMapView, nodeId: number): Assignment[] {
  const out: Assignment[] = [];
  for (const chunk of view.chunksOnNode(nodeId)) {
    const replica = replicaOn(chunk, nodeId);
    if (replica === undefined) continue;
    let inSyncDurableSeq = 0;
    for (const r of chunk.replicas) {
      if (r.state === "in-sync") inSyncDurableSeq = Math.max(inSyncDurableSeq, r.durableSeq);
    }
    out.push({
      volumeId: chunk.volumeId,
      chunkIndex: chunk.chunkIndex,
      state: replica.state,
      durableSeq: replica.durableSeq,
      inSyncDurableSeq,
      epoch: view.volume(chunk.volumeId)?.epoch ?? 0,
    });
  }
  return out.sort((a, b) => a.volumeId - b.volumeId || a.chunkIndex - b.chunkIndex);
}
