/**
 * The pure Raft core, shaped like etcd's raft: `tick`, `step`, `propose` (and membership,
 * ReadIndex, leadership transfer) go in; `ready()` hands out what to persist, send and apply;
 * `advance(ready)` acknowledges it. No IO, no timers, no clock, no randomness of its own: time
 * is `tick()` and randomness an injected `Prng`, so the same inputs give the same outputs.
 *
 * Features: randomized election timeouts; pre-vote (thesis §9.6); check-quorum (a leader
 * that has not heard from a quorum for an election timeout steps down) with leader
 * stickiness (members that hear a leader ignore vote requests); pipelined replication with
 * per-follower flow control (progress.ts); commitment only through an entry of the current
 * term (the paper's Figure 8); raftSnapshots, log compaction and InstallSnapshot;
 * single-server membership changes with learners (conf.ts), including removing the leader;
 * leadership transfer (TimeoutNow); linearizable reads by ReadIndex (thesis §6.4).
 *
 * Calls must not interleave with an outstanding Ready except `propose`,
 * `proposeConfChange`, `readIndex` and `transferLeadership`, which only add to the log or to
 * the outbox: `step` and `tick` may truncate or restore the log, so they wait for `advance`.
 */
import { assert, type HesErrorCode, type Logger, type NodeId, type Prng } from "@hes/base";
import {
  APPEND_BYTES_MAX_DEFAULT,
  APPEND_ENTRIES_MAX_DEFAULT,
  APPLY_BYTES_MAX_DEFAULT,
  ENTRY_DATA_BYTES_MAX,
  INFLIGHT_APPENDS_MAX_DEFAULT,
  INFLIGHT_BYTES_MAX_DEFAULT,
  MEMBERS_MAX,
  READ_REQUESTS_PENDING_MAX,
  SNAPSHOT_RETRY_TICKS_DEFAULT,
  UNCOMMITTED_BYTES_MAX_DEFAULT,
} from "../limits.js";
import { applyConfChange, confEquals, encodeConfChange, quorumOf } from "./conf.js";
import { RaftLog } from "./log.js";
import { Progress } from "./progress.js";
import {
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  makeMessage,
  type ProposeResult,
  type RaftStatus,
  type ReadIndexResult,
  type ReadState,
  type Ready,
  type Refusal,
  type Role,
  type Snapshot,
  type SoftState,
} from "./types.js";

/** Options of one core. Ticks are the driver's unit of time. */
export interface RaftOptions {
  readonly id: NodeId;
  /** Election timeout: a follower campaigns after a random number of ticks in [e, 2e). */
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
  readonly prng: Prng;
  readonly logger: Logger;
  /** Default true. */
  readonly preVote?: boolean;
  /** Default true. */
  readonly checkQuorum?: boolean;
  readonly appendEntriesMax?: number;
  readonly appendBytesMax?: number;
  readonly inflightAppendsMax?: number;
  readonly inflightBytesMax?: number;
  readonly uncommittedBytesMax?: number;
  readonly applyBytesMax?: number;
  readonly snapshotRetryTicks?: number;
  /**
   * Deliberate safety bugs, for proving that the simulator's checkers catch them. Never set
   * outside tests. `commitPreviousTermByCount` commits an entry of an earlier term once a
   * majority holds it, which the paper's Figure 8 shows can lose committed entries.
   */
  readonly unsafe?: { readonly commitPreviousTermByCount?: boolean };
}

/** What a member starts from: its durable state (see the driver's storage). */
export interface RaftInitialState {
  readonly hardState: HardState;
  /** The latest raftSnapshot; index 0 with the bootstrap configuration for a new cluster. */
  readonly snapshot: Snapshot;
  /** The entries after the raftSnapshot, contiguous. */
  readonly entries: readonly Entry[];
}

interface ReadRequest {
  readonly from: NodeId;
  readonly requestId: number;
}

interface ReadRound {
  readonly context: number;
  readonly index: number;
  readonly acks: Set<NodeId>;
  readonly requests: readonly ReadRequest[];
}

type PollResult = "won" | "lost" | "pending";

export class RaftCore {
  readonly id: NodeId;
  private readonly electionTicks: number;
  private readonly heartbeatTicks: number;
  private readonly prng: Prng;
  private readonly logger: Logger;
  private readonly preVote: boolean;
  private readonly checkQuorum: boolean;
  private readonly appendEntriesMax: number;
  private readonly appendBytesMax: number;
  private readonly inflightAppendsMax: number;
  private readonly inflightBytesMax: number;
  private readonly uncommittedBytesMax: number;
  private readonly applyBytesMax: number;
  private readonly snapshotRetryTicks: number;
  private readonly unsafeCommitByCount: boolean;

  private term: number;
  private vote: NodeId;
  private lead: NodeId = 0;
  private role: Role = "follower";
  private readonly log: RaftLog;

  private voters = new Set<NodeId>();
  private learners = new Set<NodeId>();
  private confIndex = -1;
  private confRef: ConfState | undefined;

  private readonly progress = new Map<NodeId, Progress>();
  private readonly votes = new Map<NodeId, boolean>();
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private leadTransferee: NodeId = 0;
  private uncommittedBytes = 0;

  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  private pendingBroadcast = false;
  private readsNew: ReadRequest[] = [];
  private readsAwaitingCommit: ReadRequest[] = [];
  private readRounds: ReadRound[] = [];
  private readRoundSeq = 0;

  private persistedHard: HardState;
  private reportedSoft: SoftState = { leaderId: 0, role: "follower" };
  private outstanding: Ready | undefined;

  constructor(options: RaftOptions, initial: RaftInitialState) {
    assert(options.id >= 1 && Number.isSafeInteger(options.id), "raft id must be positive");
    assert(options.heartbeatTicks >= 1, "heartbeatTicks must be at least 1");
    assert(
      options.electionTicks > options.heartbeatTicks,
      "electionTicks must exceed heartbeatTicks",
    );
    this.id = options.id;
    this.electionTicks = options.electionTicks;
    this.heartbeatTicks = options.heartbeatTicks;
    this.prng = options.prng;
    this.logger = options.logger;
    this.preVote = options.preVote ?? true;
    this.checkQuorum = options.checkQuorum ?? true;
    this.appendEntriesMax = options.appendEntriesMax ?? APPEND_ENTRIES_MAX_DEFAULT;
    this.appendBytesMax = options.appendBytesMax ?? APPEND_BYTES_MAX_DEFAULT;
    this.inflightAppendsMax = options.inflightAppendsMax ?? INFLIGHT_APPENDS_MAX_DEFAULT;
    this.inflightBytesMax = options.inflightBytesMax ?? INFLIGHT_BYTES_MAX_DEFAULT;
    this.uncommittedBytesMax = options.uncommittedBytesMax ?? UNCOMMITTED_BYTES_MAX_DEFAULT;
    this.applyBytesMax = options.applyBytesMax ?? APPLY_BYTES_MAX_DEFAULT;
    this.snapshotRetryTicks = options.snapshotRetryTicks ?? SNAPSHOT_RETRY_TICKS_DEFAULT;
    this.unsafeCommitByCount = options.unsafe?.commitPreviousTermByCount === true;
    assert(this.appendEntriesMax >= 1 && this.inflightAppendsMax >= 1, "flow limits >= 1");

    this.log = new RaftLog(initial.snapshot, initial.entries, initial.hardState.commit);
    this.term = initial.hardState.term;
    this.vote = initial.hardState.vote;
    assert(this.term >= this.log.lastTerm(), "stored term older than the stored log");
    this.persistedHard = { term: this.term, vote: this.vote, commit: this.log.committed };
    this.syncConfig();
    this.resetRandomizedElectionTimeout();
  }

  // ─── Inputs ────────────────────────────────────────────────────────────────────────────

  /** Advances logical time by one tick (elections, heartbeats, check-quorum, retries). */
  tick(): void {
    assert(this.outstanding === undefined, "tick while a Ready is outstanding");
    if (this.role === "leader") this.tickLeader();
    else this.tickElection();
  }

  /** Starts an election now (tests and tools; the driver lets timeouts do it). */
  campaign(): void {
    assert(this.outstanding === undefined, "campaign while a Ready is outstanding");
    this.hup(false);
  }

  /** Handles one message from a peer. Messages for another member are dropped. */
  step(m: Message): void {
    assert(this.outstanding === undefined, "step while a Ready is outstanding");
    if (m.to !== this.id || m.from === this.id || m.from < 1) {
      this.logger.warn({ from: m.from, to: m.to, type: m.type }, "dropped misaddressed message");
      return;
    }
    if (!this.stepTerm(m)) return;
    switch (m.type) {
      case MessageType.PreVote:
      case MessageType.Vote:
        this.handleVoteRequest(m);
        return;
    }
    if (this.role === "leader") this.stepLeader(m);
    else if (this.role === "follower") this.stepFollower(m);
    else this.stepCandidate(m);
  }

  /** Appends `data` as a new entry if this member leads. Nothing changes on refusal. */
  propose(data: Uint8Array): ProposeResult {
    const refusal = this.refuseProposal(data.byteLength);
    if (refusal !== undefined) return refusal;
    return { ok: true, index: this.appendLocal(EntryType.Normal, data) };
  }

  /**
   * Proposes a single-server membership change. The leader must have committed an entry of
   * its term, no other change may be uncommitted, and a learner is promoted only once it
   * holds every committed entry (it catches up before it can slow the quorum down).
   */
  proposeConfChange(change: ConfChange): ProposeResult {
    const refusal = this.refuseProposal(change.context?.byteLength ?? 0);
    if (refusal !== undefined) return refusal;
    if (!this.committedInTerm()) {
      return this.refuse("HES_BUSY", "the leader has not committed an entry of its term yet");
    }
    if (this.log.latestConfIndex() > this.log.committed) {
      return this.refuse("HES_BUSY", "another membership change is not yet committed");
    }
    const next = applyConfChange(this.log.latestConf(), change);
    if (typeof next === "string") {
      const code: HesErrorCode = next.includes("already")
        ? "HES_ALREADY_EXISTS"
        : next.includes("not a member")
          ? "HES_NOT_FOUND"
          : "HES_INVALID_ARGUMENT";
      return this.refuse(code, next);
    }
    if (next.voters.length + next.learners.length > MEMBERS_MAX) {
      return this.refuse("HES_INVALID_ARGUMENT", `a cluster has at most ${MEMBERS_MAX} members`);
    }
    if (next.voters.length > this.voters.size) {
      const pr = this.progress.get(change.nodeId);
      if (pr === undefined || pr.match < this.log.committed) {
        return this.refuse("HES_BUSY", `learner ${change.nodeId} has not caught up yet`);
      }
    }
    const data = encodeConfChange({ change, confState: next });
    const index = this.appendLocal(EntryType.ConfChange, data);
    this.syncConfig();
    return { ok: true, index };
  }

  /**
   * Asks for a linearizable read barrier tagged `requestId` (unique per member). A
   * `ReadState` with that id comes out of a later Ready once the leader confirmed it still
   * leads; the read may be served when the local state machine applied its index.
   */
  readIndex(requestId: number): ReadIndexResult {
    if (this.role === "leader") return this.handleReadRequest({ from: this.id, requestId });
    if (this.lead === 0) return this.refuse("HES_NOT_LEADER", "no leader known");
    this.send({ type: MessageType.ReadIndex, to: this.lead, context: requestId });
    return { ok: true };
  }

  /** Hands leadership to voter `to`: bring it up to date, then tell it to campaign now. */
  transferLeadership(to: NodeId): { readonly ok: true } | Refusal {
    if (this.role !== "leader") return this.refuse("HES_NOT_LEADER", "not the leader");
    if (to === this.id) return { ok: true };
    if (!this.voters.has(to)) return this.refuse("HES_INVALID_ARGUMENT", `${to} is not a voter`);
    if (this.leadTransferee === to) return { ok: true };
    this.leadTransferee = to;
    this.electionElapsed = 0;
    this.logger.info({ to }, `leadership transfer to ${to} started at term ${this.term}`);
    const pr = this.progress.get(to) as Progress;
    if (pr.match === this.log.lastIndex()) this.send({ type: MessageType.TimeoutNow, to });
    else this.maybeSendAppend(to, true);
    return { ok: true };
  }

  /**
   * Records a raftSnapshot of the state machine taken at applied index `index` and drops the
   * log up to it (log compaction). It is persisted with the next Ready.
   */
  compact(index: number, data: Uint8Array): void {
    assert(this.outstanding === undefined, "compact while a Ready is outstanding");
    assert(index <= this.log.applied, "compaction beyond the applied index");
    if (index <= this.log.snapshotIndex()) return;
    const term = this.log.term(index) as number;
    const confState = this.log.confAt(index);
    this.log.compact({ meta: { index, term, confState }, data });
    this.logger.debug({ index, term }, `compacted log through ${index}`);
  }

  // ─── Outputs ───────────────────────────────────────────────────────────────────────────

  /** True when `ready()` has something for the driver. */
  hasReady(): boolean {
    return (
      this.msgs.length > 0 ||
      this.pendingBroadcast ||
      this.readsNew.length > 0 ||
      this.readStates.length > 0 ||
      this.log.hasUnstable() ||
      this.log.snapshotUnstable ||
      this.log.restorePending ||
      this.log.hasNextCommitted() ||
      this.hardStateChanged() ||
      this.softStateChanged()
    );
  }

  /** What to persist, send and apply now (see `Ready` for the order). One at a time. */
  ready(): Ready {
    assert(this.outstanding === undefined, "ready while a Ready is outstanding");
    this.flushBroadcast();
    this.flushReads();
    const log = this.log;
    const restore = log.restorePending ? log.snapshot : undefined;
    if (restore !== undefined) log.applying = restore.meta.index;
    const committedEntries = log.nextCommitted(this.applyBytesMax);
    const lastCommitted = committedEntries[committedEntries.length - 1];
    if (lastCommitted !== undefined) log.applying = lastCommitted.index;
    const rd: Ready = {
      softState: this.softStateChanged() ? this.softState() : undefined,
      hardState: this.hardStateChanged() ? this.hardState() : undefined,
      snapshot: log.snapshotUnstable ? log.snapshot : undefined,
      truncateAfter: log.persistedLast > log.stableLast ? log.stableLast : undefined,
      entries: log.unstableEntries(),
      messages: this.msgs,
      restore,
      committedEntries,
      readStates: this.readStates,
    };
    this.msgs = [];
    this.readStates = [];
    this.outstanding = rd;
    return rd;
  }

  /** Acknowledges that `rd` was persisted, sent and applied (see `Ready`). */
  advance(rd: Ready): void {
    assert(rd === this.outstanding, "advance of a Ready that is not the outstanding one");
    this.outstanding = undefined;
    const log = this.log;
    if (rd.hardState !== undefined) this.persistedHard = rd.hardState;
    if (rd.softState !== undefined) this.reportedSoft = rd.softState;
    if (rd.snapshot !== undefined) {
      if (log.snapshot === rd.snapshot) log.snapshotUnstable = false;
      log.persistedLast = Math.max(log.persistedLast, rd.snapshot.meta.index);
    }
    if (rd.truncateAfter !== undefined) log.persistedLast = rd.truncateAfter;
    const lastEntry = rd.entries[rd.entries.length - 1];
    if (lastEntry !== undefined) log.persistedLast = lastEntry.index;
    log.stableLast = log.persistedLast;
    assert(log.stableLast <= log.lastIndex(), "stable index beyond the log");
    if (rd.restore !== undefined) {
      log.restorePending = false;
      log.applied = rd.restore.meta.index;
    }
    const lastApplied = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastApplied !== undefined) log.applied = lastApplied.index;
    if (this.role === "leader" && this.maybeCommit()) this.bcastAppend();
  }

  status(): RaftStatus {
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      vote: this.vote,
      leaderId: this.lead,
      commitIndex: this.log.committed,
      appliedIndex: this.log.applied,
      firstIndex: this.log.firstIndex(),
      lastIndex: this.log.lastIndex(),
      snapshotIndex: this.log.snapshotIndex(),
      confState: this.log.latestConf(),
      leadTransferee: this.leadTransferee,
    };
  }

  /** The term of the entry at `index` in this member's log (undefined if absent/compacted). */
  termAt(index: number): number | undefined {
    return this.log.term(index);
  }

  /** The entry at `index` in this member's log (undefined if absent or compacted). */
  entryAt(index: number): Entry | undefined {
    return this.log.entry(index);
  }

  /** The current raftSnapshot (the bootstrap one, index 0, until the first compaction). */
  snapshot(): Snapshot {
    return this.log.snapshot;
  }

  /**
   * Match index of a member as the leader sees it (tests, the driver's catch-up wait, admin
   * status). For the leader itself it is its durable last index, the figure commitment counts.
   */
  matchOf(id: NodeId): number | undefined {
    if (this.role !== "leader") return undefined;
    return id === this.id ? this.log.stableLast : this.progress.get(id)?.match;
  }

  // ─── Terms and roles ───────────────────────────────────────────────────────────────────

  /** Applies the term rules to `m`; false when the message must be dropped. */
  private stepTerm(m: Message): boolean {
    if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const inLease =
          this.checkQuorum && this.lead !== 0 && this.electionElapsed < this.electionTicks;
        if (inLease && !m.force) {
          this.logger.debug(
            { from: m.from, term: m.term },
            `ignored ${m.type === MessageType.Vote ? "vote" : "pre-vote"} from ${m.from}: ` +
              `leader ${this.lead} is live`,
          );
          return false;
        }
      }
      if (m.type === MessageType.PreVote) return true;
      if (m.type === MessageType.PreVoteResponse && !m.reject) return true;
      const leaderMessage =
        m.type === MessageType.Append ||
        m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snapshot;
      this.becomeFollower(m.term, leaderMessage ? m.from : 0);
      return true;
    }
    if (m.term < this.term) {
      if (
        (this.checkQuorum || this.preVote) &&
        (m.type === MessageType.Heartbeat || m.type === MessageType.Append)
      ) {
        // Tells a stale leader (or a member stuck at an old term) that a newer term exists.
        this.send({ type: MessageType.AppendResponse, to: m.from });
      } else if (m.type === MessageType.PreVote) {
        this.send({ type: MessageType.PreVoteResponse, to: m.from, reject: true });
      }
      return false;
    }
    return true;
  }

  private becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.lead = lead;
    this.role = "follower";
    this.logger.info({ term, lead }, `became follower at term ${term}`);
  }

  private becomePreCandidate(): void {
    assert(this.role !== "leader", "leader cannot become pre-candidate");
    this.votes.clear();
    this.lead = 0;
    this.role = "pre-candidate";
    this.logger.info({ term: this.term }, `became pre-candidate at term ${this.term}`);
  }

  private becomeCandidate(): void {
    assert(this.role !== "leader", "leader cannot become candidate");
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = "candidate";
    this.logger.info({ term: this.term }, `became candidate at term ${this.term}`);
  }

  private becomeLeader(): void {
    assert(this.role === "candidate", "only a candidate becomes leader");
    this.reset(this.term);
    this.lead = this.id;
    this.role = "leader";
    const next = this.log.lastIndex() + 1;
    for (const id of [...this.voters, ...this.learners]) {
      if (id === this.id) continue;
      this.progress.set(id, new Progress(next, this.inflightAppendsMax, this.inflightBytesMax));
    }
    this.uncommittedBytes = 0;
    for (let i = this.log.committed + 1; i <= this.log.lastIndex(); i++) {
      this.uncommittedBytes += (this.log.entry(i) as Entry).data.byteLength;
    }
    this.logger.info({ term: this.term }, `became leader at term ${this.term}`);
    // The no-op lets entries of earlier terms commit (they may only commit through an entry
    // of the current term, Figure 8) and gates membership changes and ReadIndex.
    this.appendLocal(EntryType.Noop, new Uint8Array(0));
  }

  private reset(term: number): void {
    if (term !== this.term) {
      this.term = term;
      this.vote = 0;
    }
    this.lead = 0;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.leadTransferee = 0;
    this.votes.clear();
    this.progress.clear();
    this.pendingBroadcast = false;
    this.readsNew = [];
    this.readsAwaitingCommit = [];
    this.readRounds = [];
  }

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeout = this.electionTicks + this.prng.int(this.electionTicks);
  }

  private promotable(): boolean {
    return this.voters.has(this.id);
  }

  // ─── Elections ─────────────────────────────────────────────────────────────────────────

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  /** Starts an election: a pre-vote first unless `force` (a leadership transfer). */
  private hup(force: boolean): void {
    if (this.role === "leader") return;
    if (!this.promotable()) {
      this.logger.debug("not a voter: cannot campaign");
      return;
    }
    if (this.preVote && !force) this.runCampaign("pre", false);
    else this.runCampaign("real", force);
  }

  private runCampaign(kind: "pre" | "real", force: boolean): void {
    if (kind === "pre") this.becomePreCandidate();
    else this.becomeCandidate();
    const voteTerm = kind === "pre" ? this.term + 1 : this.term;
    if (this.poll(this.id, true) === "won") {
      if (kind === "pre") this.runCampaign("real", force);
      else this.becomeLeader();
      return;
    }
    const type = kind === "pre" ? MessageType.PreVote : MessageType.Vote;
    for (const to of this.voters) {
      if (to === this.id) continue;
      this.send({
        type,
        to,
        term: voteTerm,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        force,
      });
    }
  }

  private poll(from: NodeId, granted: boolean): PollResult {
    if (!this.votes.has(from)) this.votes.set(from, granted);
    let yes = 0;
    let no = 0;
    for (const voter of this.voters) {
      const v = this.votes.get(voter);
      if (v === true) yes++;
      else if (v === false) no++;
    }
    const quorum = quorumOf(this.voters.size);
    if (yes >= quorum) return "won";
    if (no >= quorum) return "lost";
    return "pending";
  }

  private handleVoteRequest(m: Message): void {
    const isPre = m.type === MessageType.PreVote;
    const canVote =
      this.vote === m.from || (this.vote === 0 && this.lead === 0) || (isPre && m.term > this.term);
    const responseType = isPre ? MessageType.PreVoteResponse : MessageType.VoteResponse;
    if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      this.logger.debug(
        { to: m.from, term: m.term },
        `granted ${isPre ? "pre-vote" : "vote"} to ${m.from} for term ${m.term}`,
      );
      // A granted pre-vote answers in the candidate's future term, so it is not stale there.
      this.send({ type: responseType, to: m.from, term: m.term });
      if (!isPre) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.logger.debug(
        { to: m.from, term: m.term },
        `rejected ${isPre ? "pre-vote" : "vote"} from ${m.from} for term ${m.term}`,
      );
      this.send({ type: responseType, to: m.from, reject: true });
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case MessageType.Append:
      case MessageType.Heartbeat:
      case MessageType.Snapshot:
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case MessageType.PreVoteResponse:
      case MessageType.VoteResponse: {
        const expected =
          this.role === "pre-candidate" ? MessageType.PreVoteResponse : MessageType.VoteResponse;
        if (m.type !== expected) return;
        const result = this.poll(m.from, !m.reject);
        if (result === "won") {
          if (this.role === "pre-candidate") this.runCampaign("real", false);
          else this.becomeLeader();
        } else if (result === "lost") {
          this.becomeFollower(this.term, 0);
        }
        return;
      }
      default:
        return;
    }
  }

  // ─── Follower ──────────────────────────────────────────────────────────────────────────

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Append:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        if (m.commit > this.log.lastIndex()) {
          // The leader counted entries this log no longer has (it was lost with the disk):
          // commit what is here; the leader's next probe finds the gap and refills it.
          this.logger.warn(
            { from: m.from, commit: m.commit, last: this.log.lastIndex() },
            `commit ${m.commit} from ${m.from} is beyond this log (last ${this.log.lastIndex()}): its entries were lost`,
          );
        }
        this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
        this.send({ type: MessageType.HeartbeatResponse, to: m.from, context: m.context });
        return;
      case MessageType.Snapshot:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TimeoutNow:
        this.logger.info({ from: m.from }, `campaigning at once: leadership transfer`);
        this.hup(true);
        return;
      case MessageType.ReadIndexResponse:
        this.readStates.push({ requestId: m.context, index: m.index });
        return;
      default:
        return;
    }
  }

  private handleAppend(m: Message): void {
    const log = this.log;
    if (m.index < log.committed) {
      this.send({ type: MessageType.AppendResponse, to: m.from, index: log.committed });
      return;
    }
    const lastNew = log.maybeAppend(m.index, m.logTerm, m.entries);
    if (lastNew !== undefined) {
      log.commitTo(Math.min(m.commit, lastNew));
      this.syncConfig();
      this.send({ type: MessageType.AppendResponse, to: m.from, index: lastNew });
      return;
    }
    const hintIndex = log.findConflictByTerm(Math.min(m.index, log.lastIndex()), m.logTerm);
    this.logger.debug(
      { from: m.from, index: m.index, logTerm: m.logTerm },
      `rejected append after ${m.index}/${m.logTerm}: hint ${hintIndex}`,
    );
    this.send({
      type: MessageType.AppendResponse,
      to: m.from,
      index: m.index,
      reject: true,
      rejectHint: hintIndex,
      logTerm: log.term(hintIndex) as number,
    });
  }

  private handleSnapshot(m: Message): void {
    const snapshot = m.snapshot;
    if (snapshot === undefined) {
      this.logger.warn({ from: m.from }, "snapshot message without a raftSnapshot");
      return;
    }
    const { index, term } = snapshot.meta;
    const log = this.log;
    if (index <= log.committed) {
      this.send({ type: MessageType.AppendResponse, to: m.from, index: log.committed });
      return;
    }
    if (log.matchTerm(index, term)) {
      // The log already holds the snapshot's last entry: everything up to it is committed.
      log.commitTo(index);
      this.send({ type: MessageType.AppendResponse, to: m.from, index: log.committed });
      return;
    }
    log.restore(snapshot);
    this.syncConfig();
    this.logger.info({ index, term }, `restored raftSnapshot at ${index}/${term}`);
    this.send({ type: MessageType.AppendResponse, to: m.from, index: log.lastIndex() });
  }

  // ─── Leader ────────────────────────────────────────────────────────────────────────────

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTicks) {
      this.electionElapsed = 0;
      if (this.checkQuorum) {
        if (!this.quorumActive()) {
          this.logger.warn({ term: this.term }, "stepped down: no quorum heard for a timeout");
          this.becomeFollower(this.term, 0);
          return;
        }
        for (const pr of this.progress.values()) pr.recentActive = false;
      }
      if (this.leadTransferee !== 0) {
        this.logger.info({ to: this.leadTransferee }, "leadership transfer timed out");
        this.leadTransferee = 0;
      }
    }
    if (this.heartbeatElapsed >= this.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      const lastRound = this.readRounds[this.readRounds.length - 1];
      this.bcastHeartbeat(lastRound?.context ?? 0);
    }
    for (const [id, pr] of this.progress) {
      if (pr.state !== "snapshot") continue;
      if (++pr.snapshotTicks >= this.snapshotRetryTicks) {
        pr.becomeProbe();
        this.maybeSendAppend(id, true);
      }
    }
  }

  private quorumActive(): boolean {
    let active = 0;
    for (const id of this.voters) {
      if (id === this.id || this.progress.get(id)?.recentActive === true) active++;
    }
    return active >= quorumOf(this.voters.size);
  }

  private stepLeader(m: Message): void {
    const pr = this.progress.get(m.from);
    switch (m.type) {
      case MessageType.AppendResponse:
        if (pr !== undefined) this.handleAppendResponse(m, pr);
        return;
      case MessageType.HeartbeatResponse:
        if (pr !== undefined) this.handleHeartbeatResponse(m, pr);
        return;
      case MessageType.ReadIndex:
        this.handleReadRequest({ from: m.from, requestId: m.context });
        return;
      case MessageType.Append:
      case MessageType.Heartbeat:
      case MessageType.Snapshot:
        assert(false, `two leaders in term ${this.term}: ${this.id} and ${m.from}`);
        return;
      default:
        return;
    }
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      const hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm);
      const match = pr.match;
      if (!pr.maybeDecreaseTo(m.index, hint)) return;
      if (pr.match < match) {
        this.logger.warn(
          { from: m.from, match, hint },
          `${m.from} lost entries it had acknowledged (through ${match}); probing from ${pr.match}`,
        );
      }
      this.maybeSendAppend(m.from, true);
      return;
    }
    const wasPaused = pr.isPaused();
    // In probe, an ack of exactly the match point also proves where the logs agree.
    const probeAck = pr.state === "probe" && m.index === pr.match;
    if (!pr.maybeUpdate(m.index) && !probeAck) {
      if (wasPaused && !pr.isPaused()) this.sendAllowed(m.from);
      return;
    }
    if (pr.state === "probe") pr.becomeReplicate();
    else if (pr.state === "snapshot" && pr.match >= pr.pendingSnapshot) {
      pr.becomeProbe();
      pr.becomeReplicate();
    }
    if (this.maybeCommit()) this.bcastAppend();
    else {
      this.sendAllowed(m.from);
      if (pr.sentCommit < this.log.committed) this.maybeSendAppend(m.from, true);
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.logger.info({ to: m.from }, `sent TimeoutNow to ${m.from}: it is up to date`);
      this.send({ type: MessageType.TimeoutNow, to: m.from });
    }
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    pr.probeSent = false;
    if (pr.state === "replicate" && pr.inflightFull()) pr.freeFirst();
    if (pr.match < this.log.lastIndex()) this.maybeSendAppend(m.from, true);
    if (m.context !== 0) this.ackReadRound(m.context, m.from);
  }

  /** Sends appends to `to` while flow control allows and entries remain. */
  private sendAllowed(to: NodeId): void {
    while (this.maybeSendAppend(to, false)) {
      // each round sends one bounded append
    }
  }

  /**
   * Sends one append (or the raftSnapshot when the needed entries were compacted) to `to`.
   * Returns true when it sent entries, so callers can keep the pipeline full.
   */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.progress.get(to);
    if (pr === undefined || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined) {
      this.sendSnapshot(to, pr);
      return false;
    }
    const last = this.log.lastIndex();
    const entries =
      pr.next <= last
        ? this.log.slice(pr.next, last, this.appendBytesMax, this.appendEntriesMax)
        : [];
    if (entries.length === 0 && !sendIfEmpty) return false;
    let bytes = 0;
    for (const entry of entries) bytes += entry.data.byteLength;
    this.send({
      type: MessageType.Append,
      to,
      index: prevIndex,
      logTerm: prevTerm,
      entries,
      commit: this.log.committed,
    });
    pr.sentEntries(prevIndex + entries.length, entries.length, bytes);
    pr.sentCommit = this.log.committed;
    return entries.length > 0;
  }

  private sendSnapshot(to: NodeId, pr: Progress): void {
    const snapshot = this.log.snapshot;
    this.logger.info(
      { to, index: snapshot.meta.index },
      `sent raftSnapshot at ${snapshot.meta.index} to ${to}`,
    );
    this.send({ type: MessageType.Snapshot, to, snapshot });
    pr.becomeSnapshot(snapshot.meta.index);
  }

  private bcastAppend(): void {
    for (const id of this.progress.keys()) this.maybeSendAppend(id, true);
  }

  private bcastHeartbeat(context: number): void {
    for (const [to, pr] of this.progress) {
      this.send({
        type: MessageType.Heartbeat,
        to,
        commit: Math.min(pr.match, this.log.committed),
        context,
      });
    }
  }

  /** Sends what proposals since the last Ready appended: one batch per follower. */
  private flushBroadcast(): void {
    if (!this.pendingBroadcast) return;
    this.pendingBroadcast = false;
    for (const id of this.progress.keys()) this.sendAllowed(id);
  }

  private maybeCommit(): boolean {
    const matches: number[] = [];
    for (const id of this.voters) {
      matches.push(id === this.id ? this.log.stableLast : (this.progress.get(id)?.match ?? 0));
    }
    if (matches.length === 0) return false;
    matches.sort((a, b) => b - a);
    const candidate = matches[quorumOf(matches.length) - 1] as number;
    if (candidate <= this.log.committed) return false;
    // Figure 8: counting replicas commits only entries of the current term.
    if (this.log.term(candidate) !== this.term && !this.unsafeCommitByCount) return false;
    const before = this.log.committed;
    this.log.commitTo(candidate);
    for (let i = before + 1; i <= candidate; i++) {
      this.uncommittedBytes -= (this.log.entry(i) as Entry).data.byteLength;
    }
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes);
    if (this.committedInTerm() && this.readsAwaitingCommit.length > 0) {
      this.readsNew.push(...this.readsAwaitingCommit);
      this.readsAwaitingCommit = [];
    }
    this.stepDownIfRemoved();
    return true;
  }

  /** A leader that committed its own removal hands over to the best voter and steps down. */
  private stepDownIfRemoved(): void {
    if (this.voters.has(this.id) || this.log.committed < this.log.latestConfIndex()) return;
    let best: NodeId = 0;
    let bestMatch = -1;
    for (const id of this.voters) {
      const match = this.progress.get(id)?.match ?? 0;
      if (match > bestMatch) {
        best = id;
        bestMatch = match;
      }
    }
    this.logger.info({ term: this.term, to: best }, "stepped down: removed from the cluster");
    if (best !== 0 && bestMatch === this.log.lastIndex()) {
      this.send({ type: MessageType.TimeoutNow, to: best });
    }
    this.becomeFollower(this.term, 0);
  }

  private committedInTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  private refuseProposal(bytes: number): Refusal | undefined {
    if (this.role !== "leader") return this.refuse("HES_NOT_LEADER", "not the leader");
    if (this.leadTransferee !== 0) {
      return {
        ok: false,
        code: "HES_NOT_LEADER",
        message: `leadership is moving to ${this.leadTransferee}`,
        leaderHint: this.leadTransferee,
      };
    }
    if (bytes > ENTRY_DATA_BYTES_MAX) {
      return this.refuse("HES_TOO_LARGE", `entry of ${bytes} bytes > ${ENTRY_DATA_BYTES_MAX}`);
    }
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > this.uncommittedBytesMax) {
      return this.refuse("HES_BUSY", "too much uncommitted data; the quorum is slow or gone");
    }
    return undefined;
  }

  private refuse(code: HesErrorCode, message: string): Refusal {
    return { ok: false, code, message, leaderHint: this.lead === this.id ? 0 : this.lead };
  }

  private appendLocal(type: EntryType, data: Uint8Array): number {
    const index = this.log.lastIndex() + 1;
    this.log.append([{ index, term: this.term, type, data }]);
    this.uncommittedBytes += data.byteLength;
    this.pendingBroadcast = true;
    return index;
  }

  // ─── ReadIndex ─────────────────────────────────────────────────────────────────────────

  private handleReadRequest(request: ReadRequest): ReadIndexResult {
    const pending = this.readsNew.length + this.readsAwaitingCommit.length + this.readRounds.length;
    if (pending >= READ_REQUESTS_PENDING_MAX) {
      return this.refuse("HES_BUSY", "too many reads waiting on the leader");
    }
    if (!this.committedInTerm()) {
      // Until an entry of its term commits, the leader's commit index may be stale.
      this.readsAwaitingCommit.push(request);
    } else {
      this.readsNew.push(request);
    }
    return { ok: true };
  }

  /** Opens one read round for the requests since the last Ready: one heartbeat broadcast. */
  private flushReads(): void {
    if (this.readsNew.length === 0 || this.role !== "leader") return;
    const round: ReadRound = {
      context: ++this.readRoundSeq,
      index: this.log.committed,
      acks: new Set(this.voters.has(this.id) ? [this.id] : []),
      requests: this.readsNew,
    };
    this.readsNew = [];
    this.readRounds.push(round);
    if (round.acks.size >= quorumOf(this.voters.size)) {
      this.releaseReadRounds(round.context);
      return;
    }
    this.bcastHeartbeat(round.context);
  }

  private ackReadRound(context: number, from: NodeId): void {
    const round = this.readRounds.find((r) => r.context === context);
    if (round === undefined || !this.voters.has(from)) return;
    round.acks.add(from);
    if (round.acks.size >= quorumOf(this.voters.size)) this.releaseReadRounds(context);
  }

  /** A quorum confirmed leadership after `context` was sent: it and all earlier rounds hold. */
  private releaseReadRounds(context: number): void {
    while (this.readRounds.length > 0 && (this.readRounds[0] as ReadRound).context <= context) {
      const round = this.readRounds.shift() as ReadRound;
      for (const request of round.requests) {
        if (request.from === this.id) {
          this.readStates.push({ requestId: request.requestId, index: round.index });
        } else {
          this.send({
            type: MessageType.ReadIndexResponse,
            to: request.from,
            context: request.requestId,
            index: round.index,
          });
        }
      }
    }
  }

  // ─── Configuration ─────────────────────────────────────────────────────────────────────

  /** Adopts the latest configuration in the log (config-on-append) if it changed. */
  private syncConfig(): void {
    const index = this.log.latestConfIndex();
    const conf = this.log.latestConf();
    if (index === this.confIndex && conf === this.confRef) return;
    const unchanged = this.confRef !== undefined && confEquals(this.confRef, conf);
    this.confIndex = index;
    this.confRef = conf;
    if (unchanged) return;
    this.voters = new Set(conf.voters);
    this.learners = new Set(conf.learners);
    this.logger.info(
      { index, voters: conf.voters, learners: conf.learners },
      `configuration at ${index}: voters=(${conf.voters.join(",")}) learners=(${conf.learners.join(",")})`,
    );
    if (this.role !== "leader") return;
    const next = this.log.lastIndex() + 1;
    for (const id of [...conf.voters, ...conf.learners]) {
      if (id === this.id || this.progress.has(id)) continue;
      this.progress.set(id, new Progress(next, this.inflightAppendsMax, this.inflightBytesMax));
    }
    for (const id of [...this.progress.keys()]) {
      if (!this.voters.has(id) && !this.learners.has(id)) this.progress.delete(id);
    }
    if (this.leadTransferee !== 0 && !this.voters.has(this.leadTransferee)) {
      this.leadTransferee = 0;
    }
  }

  // ─── Plumbing ──────────────────────────────────────────────────────────────────────────

  private send(fields: Pick<Message, "type" | "to"> & Partial<Message>): void {
    this.msgs.push(makeMessage({ from: this.id, term: this.term, ...fields }));
  }

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private hardStateChanged(): boolean {
    const h = this.persistedHard;
    return h.term !== this.term || h.vote !== this.vote || h.commit !== this.log.committed;
  }

  private softState(): SoftState {
    return { leaderId: this.lead, role: this.role };
  }

  private softStateChanged(): boolean {
    return this.reportedSoft.leaderId !== this.lead || this.reportedSoft.role !== this.role;
  }
}
