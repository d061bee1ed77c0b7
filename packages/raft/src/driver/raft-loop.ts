/**
 * The IO shell around the pure core, written with callbacks instead of promises so that the
 * simulator runs this exact code under its own scheduler (a promise's continuation would run
 * outside the simulator's control). `RaftNode` wraps it in a promise API for production.
 *
 * One cycle: take the ticks that fired and every message that arrived since the last cycle
 * (the inbox), step them all into the core, take one Ready, write it to storage in one batch
 * (one sync), then send its messages, apply its committed entries, serve its reads, and
 * advance. Cycles never overlap; what arrives during a write waits in the inbox, so a busy
 * member batches more per sync instead of syncing more often.
 */
import {
  AssertionError,
  assert,
  type Clock,
  HesError,
  type Logger,
  type NodeId,
  type Timer,
  type Transport,
} from "@hes/base";
import { decodeConfChange } from "../core/conf.js";
import { RaftCore, type RaftInitialState, type RaftOptions } from "../core/raft.js";
import {
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  type RaftStatus,
  type Ready,
  type Refusal,
} from "../core/types.js";
import {
  INBOX_MESSAGES_MAX,
  PENDING_TICKS_MAX,
  PROPOSALS_PENDING_MAX,
  READS_PENDING_MAX,
} from "../limits.js";
import { mustSync, type RaftStorage } from "../storage/raft-storage.js";

/** A committed entry handed to the state machine. */
export interface AppliedEntry {
  readonly index: number;
  readonly term: number;
  readonly data: Uint8Array;
}

/**
 * The replicated state machine. Every method must be deterministic: the same entries in the
 * same order give the same state and results on every member (a throw is a result too, and
 * reaches the proposer as the rejection of its proposal). The state is volatile: after a
 * restart the driver rebuilds it from the latest raftSnapshot and the log.
 */
export interface StateMachine<Result = unknown> {
  apply(entry: AppliedEntry): Result;
  /** The whole state, for a raftSnapshot (log compaction and InstallSnapshot). */
  snapshot(): Uint8Array;
  /** Replaces the whole state by a raftSnapshot's. */
  restore(data: Uint8Array, meta: { readonly index: number; readonly term: number }): void;
}

/** Where a caller waits for an outcome. Exactly one method is called, once. */
export interface Waiter<T> {
  resolve(value: T): void;
  reject(error: Error): void;
}

/** What a proposal resolves with: its log index and the state machine's result. */
export interface ProposalOutcome<Result> {
  readonly index: number;
  readonly result: Result;
}

/** Options of {@link RaftLoop}. */
export interface RaftLoopOptions<Result> {
  readonly raft: RaftOptions;
  readonly initial: RaftInitialState;
  readonly storage: Pick<RaftStorage, "write">;
  readonly transport: Transport<Message>;
  readonly stateMachine: StateMachine<Result>;
  readonly clock: Pick<Clock, "setTimer">;
  /** Runs `fn` soon, after the current call stack (setImmediate; the simulator's queue). */
  readonly defer: (fn: () => void) => void;
  readonly tickMs: number;
  /** Applied entries between raftSnapshots (log compaction). */
  readonly snapshotEntriesInterval: number;
  /** Ticks a read or a leadership transfer may wait before it fails with HES_TIMEOUT. */
  readonly requestTimeoutTicks: number;
  readonly logger: Logger;
  /** Called after a membership-change entry is applied. */
  readonly onMembershipChange?: (confState: ConfState, change: ConfChange) => void;
  /**
   * Lets a leader send appends, heartbeats and raftSnapshots while its own write of the same
   * Ready is in progress (see `earlyMessages`). Default false: everything waits (STYLE §2).
   */
  readonly leaderAppendsBeforePersist?: boolean;
  /**
   * Deliberate bug for proving the simulator's checkers: send a Ready's messages before its
   * write is durable. Never set outside tests.
   */
  readonly unsafe?: { readonly sendBeforePersist?: boolean };
}

interface PendingProposal<Result> {
  readonly term: number;
  readonly waiter: Waiter<ProposalOutcome<Result | undefined>>;
}

interface PendingRead {
  readonly waiter: Waiter<number>;
  readonly deadlineTick: number;
  /** The leader asked to confirm it (this member when leading). */
  readonly leaderId: NodeId;
  index: number;
}

interface PendingTransfer {
  readonly to: NodeId;
  readonly waiter: Waiter<void>;
  readonly deadlineTick: number;
}

/** Turns a core refusal into the HesError callers see. */
export function refusalError(refusal: Refusal): HesError {
  return new HesError(refusal.code, refusal.message, {
    details: refusal.leaderHint === 0 ? {} : { leaderHint: refusal.leaderHint },
  });
}

export class RaftLoop<Result = unknown> {
  /** The core, for status, checkers and tests. Drive it only through this loop. */
  readonly core: RaftCore;
  private readonly options: RaftLoopOptions<Result>;
  private readonly logger: Logger;
  private timer: Timer | undefined;
  private inbox: Message[] = [];
  private pendingTicks = 0;
  private tickCount = 0;
  private writing = false;
  private pumpScheduled = false;
  private stopped = false;
  private failure: Error | undefined;
  private onIdle: (() => void) | undefined;
  /** The hard state in storage, and the latest the core handed out (may differ in commit). */
  private storedHard: HardState;
  private latestHard: HardState;
  private appliedIndex: number;
  private readSeq = 0;
  private readonly proposals = new Map<number, PendingProposal<Result>>();
  private readonly reads = new Map<number, PendingRead>();
  private readonly transfers = new Set<PendingTransfer>();

  constructor(options: RaftLoopOptions<Result>) {
    this.options = options;
    this.logger = options.logger;
    this.core = new RaftCore(options.raft, options.initial);
    this.storedHard = options.initial.hardState;
    this.latestHard = options.initial.hardState;
    const snapshot = options.initial.snapshot;
    this.appliedIndex = snapshot.meta.index;
    if (snapshot.meta.index > 0) {
      options.stateMachine.restore(snapshot.data, {
        index: snapshot.meta.index,
        term: snapshot.meta.term,
      });
    }
    options.transport.setHandler((_from, message) => this.receive(message));
    this.armTimer();
  }

  // ─── Requests ──────────────────────────────────────────────────────────────────────────

  /** Proposes `data`; the waiter settles once this member applied it (or it was lost). */
  propose(data: Uint8Array, waiter: Waiter<ProposalOutcome<Result | undefined>>): () => void {
    if (!this.admitProposal(waiter)) return noop;
    return this.track(this.core.propose(data), waiter);
  }

  /** Proposes a membership change; settles once applied here. */
  proposeConfChange(
    change: ConfChange,
    waiter: Waiter<ProposalOutcome<Result | undefined>>,
  ): () => void {
    if (!this.admitProposal(waiter)) return noop;
    return this.track(this.core.proposeConfChange(change), waiter);
  }

  private admitProposal(waiter: Waiter<ProposalOutcome<Result | undefined>>): boolean {
    const refused =
      this.refuseRequest() ??
      (this.proposals.size >= PROPOSALS_PENDING_MAX
        ? new HesError("HES_BUSY", "too many proposals waiting on this member")
        : undefined);
    if (refused === undefined) return true;
    waiter.reject(refused);
    return false;
  }

  private track(
    result: ReturnType<RaftCore["propose"]>,
    waiter: Waiter<ProposalOutcome<Result | undefined>>,
  ): () => void {
    if (!result.ok) {
      waiter.reject(refusalError(result));
      return noop;
    }
    const older = this.proposals.get(result.index);
    if (older !== undefined) older.waiter.reject(droppedError(result.index));
    const pending: PendingProposal<Result> = { term: this.core.status().term, waiter };
    this.proposals.set(result.index, pending);
    this.schedulePump();
    return () => {
      if (this.proposals.get(result.index) === pending) this.proposals.delete(result.index);
    };
  }

  /**
   * A linearizable read barrier: settles with the read index once this member's state
   * machine applied it, so a read of the local state then reflects every write that
   * completed before this call.
   */
  readIndex(waiter: Waiter<number>): () => void {
    const refused = this.refuseRequest();
    if (refused !== undefined) {
      waiter.reject(refused);
      return noop;
    }
    if (this.reads.size >= READS_PENDING_MAX) {
      waiter.reject(new HesError("HES_BUSY", "too many reads waiting on this member"));
      return noop;
    }
    const requestId = ++this.readSeq;
    const result = this.core.readIndex(requestId);
    if (!result.ok) {
      waiter.reject(refusalError(result));
      return noop;
    }
    const deadlineTick = this.tickCount + this.options.requestTimeoutTicks;
    const { leaderId } = this.core.status();
    this.reads.set(requestId, { waiter, deadlineTick, leaderId, index: -1 });
    this.schedulePump();
    return () => {
      this.reads.delete(requestId);
    };
  }

  /** Hands leadership to `to`; settles when this member sees `to` lead. */
  transferLeadership(to: NodeId, waiter: Waiter<void>): () => void {
    const refused = this.refuseRequest();
    if (refused !== undefined) {
      waiter.reject(refused);
      return noop;
    }
    const result = this.core.transferLeadership(to);
    if (!result.ok) {
      waiter.reject(refusalError(result));
      return noop;
    }
    const pending = {
      to,
      waiter,
      deadlineTick: this.tickCount + this.options.requestTimeoutTicks,
    };
    this.transfers.add(pending);
    this.settleTransfers();
    this.schedulePump();
    return () => {
      this.transfers.delete(pending);
    };
  }

  status(): RaftStatus & { readonly failed: boolean } {
    return { ...this.core.status(), failed: this.failure !== undefined };
  }

  /** Match index of a member as this leader sees it (undefined when not leading). */
  matchOf(id: NodeId): number | undefined {
    return this.core.matchOf(id);
  }

  /**
   * Stops ticking and receiving, lets a write in progress finish (so what it promised is on
   * disk), fails every waiter with HES_CLOSED, then calls `done`. Idempotent.
   */
  stop(done: () => void): void {
    if (this.stopped) {
      if (this.writing) {
        const previous = this.onIdle;
        this.onIdle = () => {
          previous?.();
          done();
        };
      } else {
        done();
      }
      return;
    }
    this.stopped = true;
    this.timer?.cancel();
    this.inbox = [];
    const finish = (): void => {
      this.failAll(new HesError("HES_CLOSED", "raft member stopped"));
      done();
    };
    // A clean stop stores the latest commit index, so a restart replays without waiting.
    const flush = (): void => {
      if (this.latestHard === this.storedHard || this.failure !== undefined) {
        finish();
        return;
      }
      const hardState = this.latestHard;
      const write = { hardState, snapshot: undefined, truncateAfter: undefined, entries: [] };
      this.options.storage.write({ ...write, sync: true }, (error) => {
        if (error === undefined) this.storedHard = hardState;
        finish();
      });
    };
    if (this.writing) this.onIdle = flush;
    else flush();
  }

  /** Stops at once, as a crash would: nothing more is written, sent or applied. */
  kill(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.inbox = [];
    this.onIdle = undefined;
    this.failAll(new HesError("HES_CLOSED", "raft member crashed"));
  }

  // ─── The cycle ─────────────────────────────────────────────────────────────────────────

  private receive(message: Message): void {
    if (this.stopped || this.failure !== undefined) return;
    if (this.inbox.length >= INBOX_MESSAGES_MAX) {
      this.logger.warn({ from: message.from }, "raft inbox full: message dropped");
      return;
    }
    this.inbox.push(message);
    this.schedulePump();
  }

  private armTimer(): void {
    this.timer = this.options.clock.setTimer(this.options.tickMs, () => {
      if (this.stopped) return;
      this.pendingTicks = Math.min(this.pendingTicks + 1, PENDING_TICKS_MAX);
      this.armTimer();
      this.schedulePump();
    });
  }

  private schedulePump(): void {
    if (this.pumpScheduled || this.stopped) return;
    this.pumpScheduled = true;
    this.options.defer(() => this.pump());
  }

  private pump(): void {
    this.pumpScheduled = false;
    if (this.stopped || this.writing || this.failure !== undefined) return;
    const ticks = this.pendingTicks;
    this.pendingTicks = 0;
    for (let i = 0; i < ticks; i++) this.core.tick();
    this.tickCount += ticks;
    if (ticks > 0) this.expireRequests();
    const inbox = this.inbox;
    this.inbox = [];
    for (const message of inbox) this.core.step(message);
    if (!this.core.hasReady()) return;
    const rd = this.core.ready();
    const early = this.earlyMessages(rd);
    for (const message of early) this.options.transport.send(message.to, message);
    if (rd.hardState !== undefined) this.latestHard = rd.hardState;
    const write = {
      hardState: this.latestHard === this.storedHard ? undefined : this.latestHard,
      snapshot: rd.snapshot,
      truncateAfter: rd.truncateAfter,
      entries: rd.entries,
    };
    // A Ready that moved nothing but the commit index needs no write: the commit index is
    // recomputed after a restart, so it rides along with the next write instead.
    const needsWrite =
      rd.snapshot !== undefined ||
      rd.truncateAfter !== undefined ||
      rd.entries.length > 0 ||
      mustSync(this.storedHard, write);
    if (!needsWrite) {
      this.afterPersist(rd, early);
      return;
    }
    this.writing = true;
    this.options.storage.write({ ...write, sync: mustSync(this.storedHard, write) }, (error) => {
      if (error === undefined && write.hardState !== undefined) this.storedHard = write.hardState;
      this.written(rd, early, error);
    });
  }

  /**
   * Messages that may leave before the Ready's write is durable: none, unless
   * `leaderAppendsBeforePersist` is set, in which case a leader's appends, heartbeats and
   * raftSnapshots go at once (thesis §10.2.1: they promise nothing about the leader's disk,
   * and the leader counts its own copy toward commit only after `advance`). Votes, vote
   * requests and every response always wait.
   */
  private earlyMessages(rd: Ready): readonly Message[] {
    if (this.options.unsafe?.sendBeforePersist === true) return rd.messages;
    if (this.options.leaderAppendsBeforePersist !== true) return NO_MESSAGES;
    return rd.messages.filter(
      (m) =>
        m.type === MessageType.Append ||
        m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snapshot,
    );
  }

  private written(rd: Ready, early: readonly Message[], error: Error | undefined): void {
    this.writing = false;
    if (error !== undefined) {
      this.fail(error);
    } else if (!this.stopped) {
      this.afterPersist(rd, early);
    }
    const idle = this.onIdle;
    this.onIdle = undefined;
    idle?.();
  }

  /** Steps 2–4 of a Ready (see `Ready`): send, apply, advance. */
  private afterPersist(rd: Ready, early: readonly Message[]): void {
    this.send(rd, early);
    const settle: Array<() => void> = [];
    if (rd.restore !== undefined) this.restore(rd, settle);
    for (const entry of rd.committedEntries) this.apply(entry, settle);
    for (const state of rd.readStates) {
      const read = this.reads.get(state.requestId);
      if (read !== undefined) read.index = state.index;
    }
    this.core.advance(rd);
    this.settleReads(settle);
    this.maybeCompact();
    if (rd.softState !== undefined) {
      this.logger.debug({ ...rd.softState }, "raft role changed");
      this.settleTransfers();
      this.dropReadsOfOldLeader(rd.softState.leaderId, settle);
    }
    for (const fn of settle) fn();
    this.schedulePump();
  }

  private send(rd: Ready, early: readonly Message[]): void {
    if (early.length === rd.messages.length) return;
    const sent = new Set(early);
    for (const message of rd.messages) {
      if (!sent.has(message)) this.options.transport.send(message.to, message);
    }
  }

  private restore(rd: Ready, settle: Array<() => void>): void {
    const snapshot = rd.restore;
    assert(snapshot !== undefined, "restore without a raftSnapshot");
    const { index, term } = snapshot.meta;
    this.options.stateMachine.restore(snapshot.data, { index, term });
    this.appliedIndex = index;
    for (const [at, pending] of this.proposals) {
      if (at > index) continue;
      this.proposals.delete(at);
      settle.push(() =>
        pending.waiter.reject(
          new HesError("HES_UNAVAILABLE", `outcome unknown: entry ${at} arrived in a raftSnapshot`),
        ),
      );
    }
  }

  private apply(entry: Entry, settle: Array<() => void>): void {
    assert(entry.index === this.appliedIndex + 1, () => `apply gap at ${entry.index}`);
    this.appliedIndex = entry.index;
    let result: Result | undefined;
    let failure: Error | undefined;
    if (entry.type === EntryType.Normal) {
      try {
        result = this.options.stateMachine.apply(entry);
      } catch (error) {
        if (error instanceof AssertionError) throw error;
        failure = error instanceof Error ? error : new Error(String(error));
      }
    } else if (entry.type === EntryType.ConfChange) {
      const record = decodeConfChange(entry.data);
      this.options.onMembershipChange?.(record.confState, record.change);
    }
    const pending = this.proposals.get(entry.index);
    if (pending === undefined) return;
    this.proposals.delete(entry.index);
    if (pending.term !== entry.term) {
      settle.push(() => pending.waiter.reject(droppedError(entry.index)));
    } else if (failure !== undefined) {
      const error = failure;
      settle.push(() => pending.waiter.reject(error));
    } else {
      settle.push(() => pending.waiter.resolve({ index: entry.index, result }));
    }
  }

  private settleReads(settle: Array<() => void>): void {
    for (const [id, read] of this.reads) {
      if (read.index < 0 || read.index > this.appliedIndex) continue;
      this.reads.delete(id);
      const index = read.index;
      settle.push(() => read.waiter.resolve(index));
    }
  }

  /**
   * Fails the reads still unconfirmed by a leader that is no longer this member's: a read
   * asked of a leader that died would otherwise wait out the request timeout (3 s) although
   * a new leader could confirm it at once. The caller retries (HES_NOT_LEADER changes
   * nothing). Reads already confirmed keep their index: it was valid when confirmed.
   */
  private dropReadsOfOldLeader(leaderId: NodeId, settle: Array<() => void>): void {
    for (const [id, read] of this.reads) {
      if (read.index >= 0 || read.leaderId === leaderId) continue;
      this.reads.delete(id);
      settle.push(() =>
        read.waiter.reject(
          new HesError("HES_NOT_LEADER", `leader changed from ${read.leaderId} to ${leaderId}`),
        ),
      );
    }
  }

  private settleTransfers(): void {
    const { leaderId } = this.core.status();
    for (const transfer of this.transfers) {
      if (leaderId !== transfer.to) continue;
      this.transfers.delete(transfer);
      transfer.waiter.resolve();
    }
  }

  private maybeCompact(): void {
    const snapshotIndex = this.core.snapshot().meta.index;
    if (this.appliedIndex - snapshotIndex < this.options.snapshotEntriesInterval) return;
    const data = this.options.stateMachine.snapshot();
    this.core.compact(this.appliedIndex, data);
    this.logger.info({ index: this.appliedIndex }, "took a raftSnapshot");
  }

  private expireRequests(): void {
    const now = this.tickCount;
    for (const [id, read] of this.reads) {
      if (read.deadlineTick > now) continue;
      this.reads.delete(id);
      read.waiter.reject(new HesError("HES_TIMEOUT", "read index not confirmed in time"));
    }
    for (const transfer of this.transfers) {
      if (transfer.deadlineTick > now) continue;
      this.transfers.delete(transfer);
      transfer.waiter.reject(
        new HesError("HES_TIMEOUT", `leadership did not move to ${transfer.to} in time`),
      );
    }
  }

  private refuseRequest(): HesError | undefined {
    if (this.failure !== undefined) {
      return new HesError("HES_IO", "raft member failed; restart it", { cause: this.failure });
    }
    if (this.stopped) return new HesError("HES_CLOSED", "raft member stopped");
    return undefined;
  }

  private fail(error: Error): void {
    this.failure = error;
    this.timer?.cancel();
    this.inbox = [];
    this.logger.error({ err: error }, "raft storage failed: member stopped");
    this.failAll(new HesError("HES_IO", "raft storage failed", { cause: error }));
  }

  private failAll(error: HesError): void {
    const proposals = [...this.proposals.values()];
    const reads = [...this.reads.values()];
    const transfers = [...this.transfers];
    this.proposals.clear();
    this.reads.clear();
    this.transfers.clear();
    for (const p of proposals) p.waiter.reject(error);
    for (const r of reads) r.waiter.reject(error);
    for (const t of transfers) t.waiter.reject(error);
  }
}

function noop(): void {}

const NO_MESSAGES: readonly Message[] = Object.freeze([]);

function droppedError(index: number): HesError {
  return new HesError(
    "HES_NOT_LEADER",
    `proposal at ${index} was dropped: leadership changed before it committed`,
  );
}
