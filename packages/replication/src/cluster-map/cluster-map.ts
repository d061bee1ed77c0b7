/**
 * The cluster map: a deterministic state machine applied from the Raft log.
 *
 * Contract for the Raft driver:
 *  - `apply(entryData, { index, term })` for every committed NORMAL entry, in log order,
 *    exactly once (indexes strictly increase; a repeat is a driver bug and trips an assertion).
 *  - The outcome is the same on every member: a valid command changes the map the same way
 *    everywhere; an invalid one (unknown version, bad field, unknown volume, lease held, …) is
 *    rejected with the same HesError code everywhere and changes nothing but the applied index
 *    and map time.
 *  - Time is only what the command carries (`ClusterCommand.time_ms`, stamped by the leader);
 *    map time is the highest stamp applied so far, so it never runs backwards when leaders
 *    with different clocks follow each other. The map never reads a clock.
 *  - `snapshot()` encodes the whole map (deterministic bytes: equal maps encode equally) with
 *    the applied index and term; `restore(bytes)` replaces the map with a decoded snapshot.
 *
 * Queries read the current state; records they return are immutable.
 */
import { assert, HesError, isHesError } from "@hes/base";
import type { ClusterCommand, ClusterStatus } from "@hes/proto";
import { CLUSTER_COMMAND_VERSION } from "../limits.js";
import {
  applyCancelMove,
  applyFinishMove,
  applyPlaceChunk,
  applyReplaceReplica,
  applyReportReplicaCaughtUp,
  applyReportReplicaFailure,
  applyReportReplicaProgress,
  applyStartMove,
} from "./apply-chunks.js";
import {
  applyAddNode,
  applyDrainNode,
  applyInitCluster,
  applyMarkNodeDown,
  applyNodeHeartbeat,
  applyRemoveNode,
  applySetConfig,
  applyUpdateNode,
} from "./apply-nodes.js";
import {
  applyCloneVolume,
  applyCloseVolume,
  applyCreateSnapshot,
  applyCreateVolume,
  applyDeleteSnapshot,
  applyDeleteVolume,
  applyDetachClone,
  applyOpenVolume,
  applyResizeVolume,
} from "./apply-volumes.js";
import { type CommandKind, decodeCommand } from "./commands.js";
import { checkInvariants } from "./invariants.js";
import { type Assignment, assignmentsOf } from "./liveness.js";
import type {
  ChunkRecord,
  ClusterConfig,
  ClusterMapView,
  NodeRecord,
  VolumeRecord,
} from "./model.js";
import type { ApplyResult, HandlerContext, Outcome } from "./outcome.js";
import { decodeState, encodeState } from "./snapshot.js";
import { MapState } from "./state.js";
import { clusterStatus } from "./status.js";

/** The replicated facts of one log entry besides its data. */
export interface ApplyContext {
  /** The entry's Raft log index. */
  readonly index: number;
  /** The entry's Raft term. */
  readonly term: number;
}

type Command = ClusterCommand["command"];

function dispatch(ctx: HandlerContext, command: Command): Outcome {
  switch (command.case) {
    case "initCluster":
      return applyInitCluster(ctx, command.value);
    case "setConfig":
      return applySetConfig(ctx, command.value);
    case "addNode":
      return applyAddNode(ctx, command.value);
    case "updateNode":
      return applyUpdateNode(ctx, command.value);
    case "nodeHeartbeat":
      return applyNodeHeartbeat(ctx, command.value);
    case "markNodeDown":
      return applyMarkNodeDown(ctx, command.value);
    case "drainNode":
      return applyDrainNode(ctx, command.value);
    case "removeNode":
      return applyRemoveNode(ctx, command.value);
    case "createVolume":
      return applyCreateVolume(ctx, command.value);
    case "deleteVolume":
      return applyDeleteVolume(ctx, command.value);
    case "resizeVolume":
      return applyResizeVolume(ctx, command.value);
    case "openVolume":
      return applyOpenVolume(ctx, command.value);
    case "closeVolume":
      return applyCloseVolume(ctx, command.value);
    case "createSnapshot":
      return applyCreateSnapshot(ctx, command.value);
    case "deleteSnapshot":
      return applyDeleteSnapshot(ctx, command.value);
    case "cloneVolume":
      return applyCloneVolume(ctx, command.value);
    case "detachClone":
      return applyDetachClone(ctx, command.value);
    case "placeChunk":
      return applyPlaceChunk(ctx, command.value);
    case "reportReplicaFailure":
      return applyReportReplicaFailure(ctx, command.value);
    case "reportReplicaCaughtUp":
      return applyReportReplicaCaughtUp(ctx, command.value);
    case "replaceReplica":
      return applyReplaceReplica(ctx, command.value);
    case "reportReplicaProgress":
      return applyReportReplicaProgress(ctx, command.value);
    case "startMove":
      return applyStartMove(ctx, command.value);
    case "finishMove":
      return applyFinishMove(ctx, command.value);
    case "cancelMove":
      return applyCancelMove(ctx, command.value);
    case undefined:
      throw new HesError("HES_UNSUPPORTED", "cluster command names no command this map knows");
  }
}

/** Checks the envelope; returns the command's time stamp. */
function checkEnvelope(command: ClusterCommand): number {
  if (command.version === 0 || command.version > CLUSTER_COMMAND_VERSION) {
    throw new HesError(
      "HES_UNSUPPORTED",
      `cluster command version ${command.version}; this member speaks 1 to ` +
        `${CLUSTER_COMMAND_VERSION}`,
    );
  }
  if (command.timeMs === 0n || command.timeMs > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new HesError("HES_INVALID_ARGUMENT", "cluster command is not stamped with a time");
  }
  return Number(command.timeMs);
}

/** The cluster map (see the module comment for the contract). */
export class ClusterMap implements ClusterMapView {
  private state = new MapState();

  /** Applies one committed log entry. Never throws for bad input; asserts driver contracts. */
  apply(data: Uint8Array, context: ApplyContext): ApplyResult {
    const { index, term } = context;
    const state = this.state;
    assert(
      Number.isSafeInteger(index) && index > state.appliedIndex,
      () => `apply index ${index} does not follow applied index ${state.appliedIndex}`,
    );
    assert(
      Number.isSafeInteger(term) && term >= state.appliedTerm,
      () => `apply term ${term} is below applied term ${state.appliedTerm}`,
    );
    state.appliedIndex = index;
    state.appliedTerm = term;
    let kind: CommandKind | undefined;
    try {
      const command = decodeCommand(data);
      kind = command.command.case;
      const stampMs = checkEnvelope(command);
      state.timeMs = Math.max(state.timeMs, stampMs);
      if (state.clusterId === "" && kind !== "initCluster") {
        throw new HesError("HES_UNAVAILABLE", "cluster map is not initialised (no InitCluster)");
      }
      const outcome = dispatch({ state, index, timeMs: state.timeMs }, command.command);
      return { ok: true, kind: kind as CommandKind, ...outcome };
    } catch (error) {
      if (!isHesError(error)) throw error;
      return { ok: false, kind, error };
    }
  }

  /** Encodes the whole map (deterministic: equal maps give equal bytes). */
  snapshot(): Uint8Array {
    return encodeState(this.state);
  }

  /**
   * Replaces the map with a decoded snapshot. Throws HES_BAD_FORMAT (and keeps the current
   * map) when the bytes are not a sound snapshot of this format.
   */
  restore(bytes: Uint8Array): void {
    this.state = decodeState(bytes);
  }

  /** A new map restored from a snapshot. */
  static fromSnapshot(bytes: Uint8Array): ClusterMap {
    const map = new ClusterMap();
    map.restore(bytes);
    return map;
  }

  /** Every invariant violation (empty when sound); for tests and self-checks. */
  checkInvariants(): string[] {
    return checkInvariants(this.state, this.state);
  }

  // ---- Queries ----

  get clusterId(): string {
    return this.state.clusterId;
  }
  get config(): ClusterConfig {
    return this.state.config;
  }
  get appliedIndex(): number {
    return this.state.appliedIndex;
  }
  get appliedTerm(): number {
    return this.state.appliedTerm;
  }
  get timeMs(): number {
    return this.state.timeMs;
  }
  get chunksPlaced(): number {
    return this.state.chunksPlaced;
  }
  get movesInFlight(): number {
    return this.state.movesInFlight;
  }
  get rebuildsInFlight(): number {
    return this.state.rebuildsInFlight;
  }
  node(nodeId: number): NodeRecord | undefined {
    return this.state.node(nodeId);
  }
  nodes(): readonly NodeRecord[] {
    return this.state.nodes();
  }
  volume(volumeId: number): VolumeRecord | undefined {
    return this.state.volume(volumeId);
  }
  volumeByName(name: string): VolumeRecord | undefined {
    return this.state.volumeByName(name);
  }
  volumes(): readonly VolumeRecord[] {
    return this.state.volumes();
  }
  /** The placement of one chunk (undefined: not written yet, reads as the parent or zeros). */
  chunk(volumeId: number, chunkIndex: number): ChunkRecord | undefined {
    return this.state.chunk(volumeId, chunkIndex);
  }
  chunksOfVolume(volumeId: number): readonly ChunkRecord[] {
    return this.state.chunksOfVolume(volumeId);
  }
  chunksOnNode(nodeId: number): readonly ChunkRecord[] {
    return this.state.chunksOnNode(nodeId);
  }
  replicaCountOnNode(nodeId: number): number {
    return this.state.replicaCountOnNode(nodeId);
  }
  placedBytes(nodeId: number): number {
    return this.state.placedBytes(nodeId);
  }
  movesOnNode(nodeId: number): number {
    return this.state.movesOnNode(nodeId);
  }
  /** What `nodeId` must host (see `assignmentsOf`). */
  assignments(nodeId: number): Assignment[] {
    return assignmentsOf(this.state, nodeId);
  }
  /** The map part of `hes status`. */
  status(): ClusterStatus {
    return clusterStatus(this.state);
  }
}
