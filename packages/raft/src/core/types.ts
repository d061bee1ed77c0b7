/**
 * The data the pure Raft core takes in and hands out. Plain objects with number indices and
 * terms (safe integers; the wire edge converts protobuf's bigints with `toSafeNumber`).
 * Numeric enum values match `hes.v1` in raft.proto so the wire codec is a field copy.
 */
import type { HesErrorCode, NodeId } from "@hes/base";

/** What an entry's data means. */
export const EntryType = {
  /** An opaque state-machine command. */
  Normal: 1,
  /** A membership change; data is encoded by `encodeConfChange` (conf.ts). */
  ConfChange: 2,
  /** The empty entry a new leader appends so entries of earlier terms can commit (Figure 8). */
  Noop: 3,
} as const;
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

/** One log entry. Immutable once created: the same object may sit in several logs and messages. */
export interface Entry {
  readonly index: number;
  readonly term: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** The RPCs of the paper plus pre-vote, leadership transfer and ReadIndex. */
export const MessageType = {
  Append: 1,
  AppendResponse: 2,
  Vote: 3,
  VoteResponse: 4,
  PreVote: 5,
  PreVoteResponse: 6,
  Heartbeat: 7,
  HeartbeatResponse: 8,
  /** InstallSnapshot. The follower answers with an AppendResponse. */
  Snapshot: 9,
  TimeoutNow: 11,
  ReadIndex: 12,
  ReadIndexResponse: 13,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** Voters and learners of one configuration, each list sorted ascending, disjoint. */
export interface ConfState {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
}

export interface SnapshotMeta {
  /** The last log index the raftSnapshot covers. */
  readonly index: number;
  /** The term of the entry at `index`. */
  readonly term: number;
  /** The configuration in force at `index`. */
  readonly confState: ConfState;
}

/** A state-machine image at `meta.index` (a raftSnapshot, not a volume snapshot). */
export interface Snapshot {
  readonly meta: SnapshotMeta;
  readonly data: Uint8Array;
}

/**
 * One message between members. Fields a type does not use are 0 / false / empty, so every
 * message has the same shape (one hidden class in V8, a field copy to protobuf).
 */
export interface Message {
  readonly type: MessageType;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
  /**
   * Append: term of the entry before `entries`. Vote/PreVote: the candidate's last log term.
   * Rejected AppendResponse: term of the follower's entry at `rejectHint`.
   */
  readonly logTerm: number;
  /**
   * Append: index of the entry before `entries`. Vote/PreVote: the candidate's last index.
   * AppendResponse: the last index now known to match (or the rejected index).
   * ReadIndexResponse: the read index.
   */
  readonly index: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
  readonly reject: boolean;
  /** Rejected AppendResponse: the follower's guess of where the logs may match. */
  readonly rejectHint: number;
  readonly snapshot: Snapshot | undefined;
  /** ReadIndex / ReadIndexResponse: request id. Heartbeat(-Response): ReadIndex round id. */
  readonly context: number;
  /** Vote/PreVote sent because of a leadership transfer: voters ignore leader stickiness. */
  readonly force: boolean;
}

/** State that must be durable before any message that depends on it is sent. */
export interface HardState {
  readonly term: number;
  /** The candidate voted for in `term`, 0 for none. */
  readonly vote: NodeId;
  readonly commit: number;
}

export type Role = "follower" | "pre-candidate" | "candidate" | "leader";

/** Volatile state, reported when it changes. */
export interface SoftState {
  /** The leader this member follows (itself when leading), 0 when unknown. */
  readonly leaderId: NodeId;
  readonly role: Role;
}

/** A linearizable read may be served once the local state machine applied through `index`. */
export interface ReadState {
  readonly requestId: number;
  readonly index: number;
}

/**
 * What the driver must do, in this order, before calling `advance(ready)`:
 *
 * 1. Persist, atomically and durably (one write batch with sync): `snapshot` (replacing the
 *    stored one and deleting stored entries at or below its index), then delete stored
 *    entries after `truncateAfter`, then store `entries` (overwriting same indices), and
 *    `hardState`. Persisting is what makes a vote or an acknowledgement a promise.
 * 2. Send `messages`. Only now: a vote granted, or an append acknowledged, before it is on
 *    disk can be forgotten by a crash, and then two leaders of one term (a vote given twice)
 *    or a committed entry on fewer than a quorum of disks (an ack for a lost entry) follow.
 *    (The one exception a driver may take: a leader's Append, Heartbeat and Snapshot messages
 *    may leave while the write is in progress, thesis §10.2.1. They promise nothing about the
 *    leader's disk, and the leader counts its own copy toward commit only after step 4.)
 * 3. If `restore` is set, restore the state machine from it; then apply `committedEntries`
 *    in order and serve `readStates` whose index has been applied. Applying before step 1
 *    could apply an entry this node then loses in a crash while its state machine (or a
 *    client told "done") keeps the effect; applying out of order breaks determinism.
 * 4. Call `advance(ready)`. It marks the entries stable (a leader counts its own copy toward
 *    commit only now) and the entries applied. Calling it before 1–3 are done lets the core
 *    commit on a copy that is not yet durable, or hand the same entries out twice.
 *
 * `softState` is informational (who leads) and needs no persistence.
 */
export interface Ready {
  readonly softState: SoftState | undefined;
  readonly hardState: HardState | undefined;
  readonly snapshot: Snapshot | undefined;
  readonly truncateAfter: number | undefined;
  readonly entries: readonly Entry[];
  readonly messages: readonly Message[];
  readonly restore: Snapshot | undefined;
  readonly committedEntries: readonly Entry[];
  readonly readStates: readonly ReadState[];
}

/** Why a proposal (or read, or membership change) was refused at once; nothing changed. */
export interface Refusal {
  readonly ok: false;
  readonly code: HesErrorCode;
  readonly message: string;
  /** The member to try instead, 0 when unknown. */
  readonly leaderHint: NodeId;
}

/** The result of `propose` / `proposeConfChange`. */
export type ProposeResult = { readonly ok: true; readonly index: number } | Refusal;

/** The result of `readIndex`. */
export type ReadIndexResult = { readonly ok: true } | Refusal;

/** Membership change kinds (values match `RaftConfChangeType` in raft.proto). */
export const ConfChangeType = {
  /** Promotes a caught-up learner to voter. */
  AddVoter: 1,
  /** Removes a voter (the leader included) or a learner. */
  Remove: 2,
  /** Adds a non-voting member that receives the log. */
  AddLearner: 3,
} as const;
export type ConfChangeType = (typeof ConfChangeType)[keyof typeof ConfChangeType];

/** One single-server membership change. */
export interface ConfChange {
  readonly type: ConfChangeType;
  readonly nodeId: NodeId;
  /** Opaque bytes for the application (for example the new member's address). */
  readonly context?: Uint8Array;
}

/** A snapshot of the core's state, for status reports and checkers. */
export interface RaftStatus {
  readonly id: NodeId;
  readonly role: Role;
  readonly term: number;
  readonly vote: NodeId;
  readonly leaderId: NodeId;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly snapshotIndex: number;
  readonly confState: ConfState;
  /** Set while a leadership transfer is in progress (leader only). */
  readonly leadTransferee: NodeId;
}

const EMPTY_ENTRIES: readonly Entry[] = Object.freeze([]);

/** Builds a message with every unused field at its zero value. */
export function makeMessage(
  fields: Pick<Message, "type" | "from" | "to" | "term"> & Partial<Message>,
): Message {
  return {
    type: fields.type,
    from: fields.from,
    to: fields.to,
    term: fields.term,
    logTerm: fields.logTerm ?? 0,
    index: fields.index ?? 0,
    entries: fields.entries ?? EMPTY_ENTRIES,
    commit: fields.commit ?? 0,
    reject: fields.reject ?? false,
    rejectHint: fields.rejectHint ?? 0,
    snapshot: fields.snapshot,
    context: fields.context ?? 0,
    force: fields.force ?? false,
  };
}
