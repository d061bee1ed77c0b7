/**
 * What applying a command yields. The outcome is computed identically on every member; only
 * the proposer usually looks at it (to answer its caller).
 */
import type { HesError } from "@hes/base";
import type { CommandKind } from "./commands.js";
import type { ChunkRecord } from "./model.js";
import type { MapState } from "./state.js";

/** Told to a down node when its heartbeat brings it back. */
export interface RejoinReport {
  /** Map time it was marked down. */
  readonly downSinceMs: number;
  /** Leases taken from it when it was marked down: it must stop serving these volumes. */
  readonly revokedVolumeIds: readonly number[];
  /** Replicas it still hosts, and how many of them must catch up (see `assignments`). */
  readonly replicas: number;
  readonly replicasNotInSync: number;
}

/** The success payload; which fields are set depends on the command. */
export interface ApplyValue {
  /** createVolume, cloneVolume: the new volume's id. */
  readonly volumeId?: number;
  /** createSnapshot: the new snapshot's id. */
  readonly snapshotId?: number;
  /** openVolume: the new lease epoch. */
  readonly epoch?: number;
  /** Chunk commands: the chunk's placement after the command. */
  readonly chunk?: ChunkRecord;
  /** nodeHeartbeat of a node that was down. */
  readonly rejoin?: RejoinReport;
  /** markNodeDown: leases taken from the node. */
  readonly revokedVolumeIds?: readonly number[];
  /** reportReplicaProgress: entries applied, and entries skipped because their replica is gone. */
  readonly progress?: { readonly applied: number; readonly skipped: number };
}

/** The result of `ClusterMap.apply`. */
export type ApplyResult =
  | {
      readonly ok: true;
      readonly kind: CommandKind;
      /** False when the command was valid but already in effect (a retried proposal). */
      readonly changed: boolean;
      readonly value: ApplyValue;
    }
  | {
      readonly ok: false;
      /** Undefined when the bytes did not decode to a known command. */
      readonly kind: CommandKind | undefined;
      /** A stable code and a message; the map is unchanged. */
      readonly error: HesError;
    };

/** What a handler returns. */
export interface Outcome {
  readonly changed: boolean;
  readonly value: ApplyValue;
}

/** A valid command that changed nothing. */
export const UNCHANGED: Outcome = { changed: false, value: {} };

/** A valid command that changed the map, with its payload. */
export function changed(value: ApplyValue = {}): Outcome {
  return { changed: true, value };
}

/** What every handler receives: the state and the replicated facts of this entry. */
export interface HandlerContext {
  readonly state: MapState;
  /** The Raft log index of the command. */
  readonly index: number;
  /** Map time after this command's stamp (never decreases). */
  readonly timeMs: number;
}
