/**
 * Where a member keeps its durable Raft state. The driver hands one write per Ready and waits
 * for it before sending or applying anything of that Ready (persist-before-send).
 */
import type { RaftInitialState } from "../core/raft.js";
import type { Entry, HardState, Snapshot } from "../core/types.js";

/** One atomic write: the persistence part of a Ready (see `Ready` for the meaning). */
export interface RaftStorageWrite {
  readonly hardState: HardState | undefined;
  readonly snapshot: Snapshot | undefined;
  readonly truncateAfter: number | undefined;
  readonly entries: readonly Entry[];
  /**
   * True when the write must be durable before it completes. False only when losing it in a
   * crash is harmless: nothing but the commit index moved (it is recomputed after a restart).
   */
  readonly sync: boolean;
}

/** The durable state of a member, as loaded at start. */
export type StoredRaftState = RaftInitialState;

/**
 * A member's durable state. `write` calls never overlap (the driver waits for each); the
 * callback reports success or a failure after which the member must stop (its state on disk
 * is then unknown, and continuing could break a promise already made).
 */
export interface RaftStorage {
  /** The stored state, or undefined when the storage holds none (a new member). */
  load(): Promise<StoredRaftState | undefined>;
  /** Writes the first state of a new member (when `load` found none), durably. */
  bootstrap(state: StoredRaftState): Promise<void>;
  write(batch: RaftStorageWrite, done: (error: Error | undefined) => void): void;
  close(): Promise<void>;
}

/** True when a write of this Ready content must be synced (see `RaftStorageWrite.sync`). */
export function mustSync(
  previous: HardState | undefined,
  batch: Omit<RaftStorageWrite, "sync">,
): boolean {
  if (batch.entries.length > 0 || batch.snapshot !== undefined) return true;
  if (batch.truncateAfter !== undefined) return true;
  const hard = batch.hardState;
  if (hard === undefined) return false;
  return previous === undefined || hard.term !== previous.term || hard.vote !== previous.vote;
}
