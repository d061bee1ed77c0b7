/**
 * Commands about chunk placement: first placement, replica failure and catch-up,
 * re-placement, progress reports, and rebalance moves. Each handler checks everything first,
 * then changes the state.
 */
import type { NodeId } from "@hes/base";
import type {
  CancelMoveCommand,
  FinishMoveCommand,
  PlaceChunkCommand,
  ReplaceReplicaCommand,
  ReportReplicaCaughtUpCommand,
  ReportReplicaFailureCommand,
  ReportReplicaProgressCommand,
  StartMoveCommand,
} from "@hes/proto";
import {
  CHUNK_PLACEMENTS_MAX,
  CHUNKS_PER_VOLUME_MAX,
  MOVES_INFLIGHT_MAX,
  MOVES_PER_NODE_MAX,
  PROGRESS_ENTRIES_MAX,
  REBUILDS_INFLIGHT_MAX,
  VOLUME_ID_MAX,
} from "../limits.js";
import { canHost, chooseReplicas, placementSeed } from "../placement/choose-replicas.js";
import { volumeArg } from "./apply-volumes.js";
import { nodeIdArg, optionalNodeIdArg, reject, u64 } from "./arguments.js";
import {
  type ChunkRecord,
  chunkCount,
  isAlive,
  type ReplicaRecord,
  replicaOn,
  type VolumeRecord,
} from "./model.js";
import { changed, type HandlerContext, type Outcome } from "./outcome.js";
import type { MapState } from "./state.js";

function chunkIndexArg(volume: VolumeRecord, value: bigint): number {
  const chunkIndex = u64(value, "chunk_index");
  if (chunkIndex >= chunkCount(volume)) {
    reject(
      "HES_INVALID_ARGUMENT",
      `chunk ${chunkIndex} is past the end of volume ${volume.name} (${chunkCount(volume)} chunks)`,
    );
  }
  return chunkIndex;
}

interface ChunkTarget {
  readonly volume: VolumeRecord;
  readonly chunk: ChunkRecord;
}

/** The volume and its placed chunk, or a rejection. */
function placedChunkArg(state: MapState, volumeId: bigint, chunkIndex: bigint): ChunkTarget {
  const volume = volumeArg(state, volumeId);
  const index = chunkIndexArg(volume, chunkIndex);
  const chunk = state.chunk(volume.volumeId, index);
  if (chunk === undefined) {
    reject("HES_NOT_FOUND", `chunk ${index} of volume ${volume.name} is not placed`);
  }
  return { volume, chunk };
}

/** Rejects a report made under an epoch other than the volume's current one. */
function checkEpoch(volume: VolumeRecord, value: bigint): void {
  const epoch = u64(value, "epoch");
  if (epoch !== volume.epoch) {
    reject("HES_FENCED", `volume ${volume.name}: epoch ${epoch} superseded by ${volume.epoch}`, {
      current: volume.epoch,
    });
  }
}

function replicaArg(chunk: ChunkRecord, nodeId: NodeId): ReplicaRecord {
  const replica = replicaOn(chunk, nodeId);
  if (replica === undefined) {
    reject(
      "HES_NOT_FOUND",
      `node ${nodeId} holds no replica of chunk ${chunk.chunkIndex} of volume ${chunk.volumeId}`,
    );
  }
  return replica;
}

function withReplica(chunk: ChunkRecord, next: ReplicaRecord): ChunkRecord {
  const replicas = chunk.replicas.map((r) => (r.nodeId === next.nodeId ? next : r));
  return { ...chunk, replicas };
}

function inSyncCount(replicas: readonly ReplicaRecord[]): number {
  return replicas.filter((r) => r.state === "in-sync").length;
}

function domainsOf(state: MapState, replicas: readonly ReplicaRecord[]): string[] {
  return replicas.map((r) => state.node(r.nodeId)?.failureDomain ?? "");
}

export function applyPlaceChunk(ctx: HandlerContext, command: PlaceChunkCommand): Outcome {
  const { state } = ctx;
  const volume = volumeArg(state, command.volumeId);
  const chunkIndex = chunkIndexArg(volume, command.chunkIndex);
  if (volume.ownerNodeId === 0) {
    reject("HES_FENCED", `volume ${volume.name} is not open: only its owner places chunks`, {
      current: volume.epoch,
    });
  }
  checkEpoch(volume, command.epoch);
  const preferredNodeId = optionalNodeIdArg(command.preferredNodeId, "preferred_node_id");
  const existing = state.chunk(volume.volumeId, chunkIndex);
  if (existing !== undefined) return { changed: false, value: { chunk: existing } };
  if (state.chunksPlaced >= CHUNK_PLACEMENTS_MAX) {
    reject("HES_NO_SPACE", `the map holds CHUNK_PLACEMENTS_MAX (${CHUNK_PLACEMENTS_MAX}) chunks`);
  }
  const choice = chooseReplicas({
    view: state,
    chunkBytes: volume.chunkSizeBytes,
    count: volume.replicationFactor,
    minCount: volume.writeQuorum,
    preferredNodeId,
    excludeNodeIds: [],
    excludeDomains: [],
    seed: placementSeed(ctx.index, volume.volumeId, chunkIndex),
  });
  if (!choice.ok)
    reject(choice.code, `volume ${volume.name} chunk ${chunkIndex}: ${choice.message}`);
  const chunk: ChunkRecord = {
    volumeId: volume.volumeId,
    chunkIndex,
    // A new chunk is empty everywhere, so every replica starts in sync.
    replicas: choice.nodeIds.map((nodeId) => ({
      nodeId,
      state: "in-sync",
      durableSeq: 0,
      bytesDone: 0,
      bytesTotal: 0,
    })),
    moveFromNodeId: 0,
    moveToNodeId: 0,
    placedAtIndex: ctx.index,
  };
  state.putChunk(chunk);
  return changed({ chunk });
}

export function applyReportReplicaFailure(
  ctx: HandlerContext,
  command: ReportReplicaFailureCommand,
): Outcome {
  const { state } = ctx;
  const { volume, chunk } = placedChunkArg(state, command.volumeId, command.chunkIndex);
  checkEpoch(volume, command.epoch);
  const replica = replicaArg(chunk, nodeIdArg(command.nodeId, "node_id"));
  if (replica.state === "stale") return { changed: false, value: { chunk } };
  if (replica.state === "in-sync" && inSyncCount(chunk.replicas) === 1) {
    reject(
      "HES_QUORUM_LOST",
      `node ${replica.nodeId} holds the last in-sync replica of chunk ${chunk.chunkIndex} of ` +
        `${volume.name}; it stays in the in-sync set`,
    );
  }
  // A filling replica that failed restarts its copy; an in-sync one must catch up, from the
  // owner's watermark (its durableSeq then means "holds every write at or below this").
  const safeSeq = u64(command.safeSeq, "safe_seq");
  const next: ReplicaRecord =
    replica.state === "filling"
      ? { ...replica, bytesDone: 0 }
      : { ...replica, state: "stale", durableSeq: Math.max(replica.durableSeq, safeSeq) };
  const updated = withReplica(chunk, next);
  state.putChunk(updated);
  return changed({ chunk: updated });
}

export function applyReportReplicaCaughtUp(
  ctx: HandlerContext,
  command: ReportReplicaCaughtUpCommand,
): Outcome {
  const { state } = ctx;
  const { volume, chunk } = placedChunkArg(state, command.volumeId, command.chunkIndex);
  checkEpoch(volume, command.epoch);
  const replica = replicaArg(chunk, nodeIdArg(command.nodeId, "node_id"));
  const durableSeq = u64(command.durableSeq, "durable_seq");
  const node = state.node(replica.nodeId);
  if (node === undefined || !isAlive(node)) {
    reject("HES_UNAVAILABLE", `node ${replica.nodeId} is ${node?.state ?? "unknown"}`);
  }
  let newest = 0;
  for (const other of chunk.replicas) {
    if (other.state === "in-sync" && other.durableSeq > newest) newest = other.durableSeq;
  }
  if (durableSeq < newest) {
    reject(
      "HES_INVALID_ARGUMENT",
      `replica on node ${replica.nodeId} is durable to ${durableSeq}, behind the in-sync ` +
        `replicas at ${newest}`,
      { newest },
    );
  }
  const nextSeq = Math.max(replica.durableSeq, durableSeq);
  if (replica.state === "in-sync" && nextSeq === replica.durableSeq) {
    return { changed: false, value: { chunk } };
  }
  const updated = withReplica(chunk, {
    ...replica,
    state: "in-sync",
    durableSeq: nextSeq,
    bytesDone: replica.bytesTotal,
  });
  state.putChunk(updated);
  return changed({ chunk: updated });
}

/** The node a re-placement goes to: the given one (checked) or the policy's choice. */
function replacementTarget(
  ctx: HandlerContext,
  volume: VolumeRecord,
  chunk: ChunkRecord,
  remaining: readonly ReplicaRecord[],
  excludeNodeIds: readonly number[],
  requested: number,
): NodeId {
  const { state } = ctx;
  const domains = domainsOf(state, remaining);
  if (requested !== 0) {
    const node = state.node(requested);
    if (node === undefined) reject("HES_NOT_FOUND", `node ${requested} is not in the cluster`);
    if (excludeNodeIds.includes(requested) || domains.includes(node.failureDomain)) {
      reject(
        "HES_INVALID_ARGUMENT",
        `node ${requested} (domain ${node.failureDomain}) would put two replicas of chunk ` +
          `${chunk.chunkIndex} in one failure domain or on one node`,
      );
    }
    if (!canHost(state, node, volume.chunkSizeBytes)) {
      reject("HES_INVALID_ARGUMENT", `node ${requested} cannot take a replica now`);
    }
    return requested;
  }
  const choice = chooseReplicas({
    view: state,
    chunkBytes: volume.chunkSizeBytes,
    count: 1,
    minCount: 1,
    preferredNodeId: volume.ownerNodeId,
    excludeNodeIds,
    excludeDomains: domains,
    seed: placementSeed(ctx.index, volume.volumeId, chunk.chunkIndex),
  });
  if (!choice.ok) reject(choice.code, `re-placing chunk ${chunk.chunkIndex}: ${choice.message}`);
  return choice.nodeIds[0] as NodeId;
}

export function applyReplaceReplica(ctx: HandlerContext, command: ReplaceReplicaCommand): Outcome {
  const { state } = ctx;
  const { volume, chunk } = placedChunkArg(state, command.volumeId, command.chunkIndex);
  const oldNodeId = optionalNodeIdArg(command.oldNodeId, "old_node_id");
  const newNodeId = optionalNodeIdArg(command.newNodeId, "new_node_id");
  if (chunk.moveToNodeId !== 0) {
    reject("HES_BUSY", `chunk ${chunk.chunkIndex} of ${volume.name} is moving: cancel it first`);
  }
  let remaining = chunk.replicas;
  if (oldNodeId === 0) {
    if (chunk.replicas.length >= volume.replicationFactor) {
      reject("HES_INVALID_ARGUMENT", `chunk ${chunk.chunkIndex} already has all its replicas`);
    }
  } else {
    const old = replicaArg(chunk, oldNodeId);
    const oldNode = state.node(oldNodeId);
    if (old.state === "in-sync" && oldNode !== undefined && isAlive(oldNode)) {
      reject(
        "HES_INVALID_ARGUMENT",
        `the replica on node ${oldNodeId} is in sync on a live node: move it instead`,
      );
    }
    remaining = chunk.replicas.filter((r) => r.nodeId !== oldNodeId);
    if (inSyncCount(remaining) === 0) {
      reject(
        "HES_QUORUM_LOST",
        `no other in-sync replica of chunk ${chunk.chunkIndex} of ${volume.name}: wait for ` +
          `node ${oldNodeId} to return`,
      );
    }
  }
  if (state.rebuildsInFlight >= REBUILDS_INFLIGHT_MAX) {
    reject("HES_BUSY", `REBUILDS_INFLIGHT_MAX (${REBUILDS_INFLIGHT_MAX}) rebuilds in flight`);
  }
  const excluded = chunk.replicas.map((r) => r.nodeId);
  const target = replacementTarget(ctx, volume, chunk, remaining, excluded, newNodeId);
  const added: ReplicaRecord = {
    nodeId: target,
    state: "filling",
    durableSeq: 0,
    bytesDone: 0,
    bytesTotal: volume.chunkSizeBytes,
  };
  const updated = { ...chunk, replicas: [...remaining, added] };
  state.putChunk(updated);
  return changed({ chunk: updated });
}

interface ProgressEntry {
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly nodeId: NodeId;
  readonly durableSeq: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
}

function progressEntries(command: ReportReplicaProgressCommand): ProgressEntry[] {
  const count = command.entries.length;
  if (count === 0) reject("HES_INVALID_ARGUMENT", "a progress report needs at least one entry");
  if (count > PROGRESS_ENTRIES_MAX) {
    reject("HES_TOO_LARGE", `${count} progress entries exceed PROGRESS_ENTRIES_MAX`);
  }
  return command.entries.map((entry, i) => {
    const bytesTotal = u64(entry.bytesTotal, `entries[${i}].bytes_total`);
    return {
      volumeId: u64(entry.volumeId, `entries[${i}].volume_id`, { min: 1, max: VOLUME_ID_MAX }),
      chunkIndex: u64(entry.chunkIndex, `entries[${i}].chunk_index`, {
        max: CHUNKS_PER_VOLUME_MAX - 1,
      }),
      nodeId: nodeIdArg(entry.nodeId, `entries[${i}].node_id`),
      durableSeq: u64(entry.durableSeq, `entries[${i}].durable_seq`),
      bytesDone: u64(entry.bytesDone, `entries[${i}].bytes_done`, { max: bytesTotal }),
      bytesTotal,
    };
  });
}

export function applyReportReplicaProgress(
  ctx: HandlerContext,
  command: ReportReplicaProgressCommand,
): Outcome {
  const { state } = ctx;
  const entries = progressEntries(command);
  let applied = 0;
  let skipped = 0;
  let any = false;
  for (const entry of entries) {
    const chunk = state.chunk(entry.volumeId, entry.chunkIndex);
    const replica = chunk === undefined ? undefined : replicaOn(chunk, entry.nodeId);
    // The replica may be gone by now (moved, replaced, volume deleted): a late report, not
    // an error, so one stale entry does not sink the batch.
    if (chunk === undefined || replica === undefined) {
      skipped++;
      continue;
    }
    applied++;
    const filling = replica.state === "filling" && entry.bytesTotal > 0;
    const next: ReplicaRecord = {
      ...replica,
      durableSeq: Math.max(replica.durableSeq, entry.durableSeq),
      bytesDone: filling ? entry.bytesDone : replica.bytesDone,
      bytesTotal: filling ? entry.bytesTotal : replica.bytesTotal,
    };
    if (
      next.durableSeq === replica.durableSeq &&
      next.bytesDone === replica.bytesDone &&
      next.bytesTotal === replica.bytesTotal
    ) {
      continue;
    }
    any = true;
    state.putChunk(withReplica(chunk, next));
  }
  return { changed: any, value: { progress: { applied, skipped } } };
}

export function applyStartMove(ctx: HandlerContext, command: StartMoveCommand): Outcome {
  const { state } = ctx;
  const { volume, chunk } = placedChunkArg(state, command.volumeId, command.chunkIndex);
  const fromNodeId = nodeIdArg(command.fromNodeId, "from_node_id");
  const toNodeId = nodeIdArg(command.toNodeId, "to_node_id");
  if (chunk.moveToNodeId !== 0) {
    reject("HES_BUSY", `chunk ${chunk.chunkIndex} of ${volume.name} is already moving`);
  }
  if (chunk.replicas.some((r) => r.state === "filling")) {
    reject("HES_BUSY", `chunk ${chunk.chunkIndex} of ${volume.name} is being rebuilt`);
  }
  const from = replicaArg(chunk, fromNodeId);
  if (from.state !== "in-sync") {
    reject("HES_INVALID_ARGUMENT", `the replica on node ${fromNodeId} is ${from.state}`);
  }
  if (replicaOn(chunk, toNodeId) !== undefined) {
    reject("HES_ALREADY_EXISTS", `node ${toNodeId} already holds chunk ${chunk.chunkIndex}`);
  }
  const others = chunk.replicas.filter((r) => r.nodeId !== fromNodeId);
  replacementTarget(ctx, volume, chunk, others, [fromNodeId], toNodeId);
  if (state.movesInFlight >= MOVES_INFLIGHT_MAX) {
    reject("HES_BUSY", `MOVES_INFLIGHT_MAX (${MOVES_INFLIGHT_MAX}) moves in flight`);
  }
  for (const nodeId of [fromNodeId, toNodeId]) {
    if (state.movesOnNode(nodeId) >= MOVES_PER_NODE_MAX) {
      reject("HES_BUSY", `node ${nodeId} has MOVES_PER_NODE_MAX moves in flight`);
    }
  }
  const target: ReplicaRecord = {
    nodeId: toNodeId,
    state: "filling",
    durableSeq: 0,
    bytesDone: 0,
    bytesTotal: volume.chunkSizeBytes,
  };
  const updated: ChunkRecord = {
    ...chunk,
    replicas: [...chunk.replicas, target],
    moveFromNodeId: fromNodeId,
    moveToNodeId: toNodeId,
  };
  state.putChunk(updated);
  return changed({ chunk: updated });
}

function movingChunkArg(state: MapState, volumeId: bigint, chunkIndex: bigint): ChunkTarget {
  const target = placedChunkArg(state, volumeId, chunkIndex);
  if (target.chunk.moveToNodeId === 0) {
    reject("HES_INVALID_ARGUMENT", `chunk ${target.chunk.chunkIndex} has no move in progress`);
  }
  return target;
}

export function applyFinishMove(ctx: HandlerContext, command: FinishMoveCommand): Outcome {
  const { state } = ctx;
  const { chunk } = movingChunkArg(state, command.volumeId, command.chunkIndex);
  const target = replicaArg(chunk, chunk.moveToNodeId);
  if (target.state !== "in-sync") {
    reject("HES_INVALID_ARGUMENT", `move target node ${target.nodeId} is not in sync yet`);
  }
  const updated: ChunkRecord = {
    ...chunk,
    replicas: chunk.replicas.filter((r) => r.nodeId !== chunk.moveFromNodeId),
    moveFromNodeId: 0,
    moveToNodeId: 0,
  };
  state.putChunk(updated);
  return changed({ chunk: updated });
}

export function applyCancelMove(ctx: HandlerContext, command: CancelMoveCommand): Outcome {
  const { state } = ctx;
  const { chunk } = movingChunkArg(state, command.volumeId, command.chunkIndex);
  const remaining = chunk.replicas.filter((r) => r.nodeId !== chunk.moveToNodeId);
  if (inSyncCount(remaining) === 0) {
    reject("HES_QUORUM_LOST", `the move target holds the only in-sync replica: finish the move`);
  }
  const updated: ChunkRecord = {
    ...chunk,
    replicas: remaining,
    moveFromNodeId: 0,
    moveToNodeId: 0,
  };
  state.putChunk(updated);
  return changed({ chunk: updated });
}
