/**
 * The Raft seed runner (STYLE §7). From one seed it draws a cluster (3 or 5 members), fault
 * levels and timings, then runs two phases over the production core and driver:
 *
 * - safety: clients issue puts (proposals) and gets (ReadIndex reads) while the network
 *   drops, duplicates, delays and reorders messages, partitions come and go (symmetric,
 *   one-way, bridge, isolation), members crash (losing unsynced writes) and restart, clocks
 *   drift, and leadership is transferred. RaftChecker checks every event.
 * - liveness: every fault heals. Within a bounded number of ticks a stable leader must exist,
 *   every proposal it accepts from then on must commit, and all members must converge.
 *
 * Finally the client history must be linearizable (checkLinearizable, per key).
 * The same seed replays the same run exactly.
 */
import { AssertionError, isHesError, type NodeId, Prng } from "@hes/base";
import {
  type AppliedEntry,
  type ConfChange,
  ConfChangeType,
  type Message,
  MessageType,
  makeConfState,
  type RaftCore,
  type StoredRaftState,
} from "@hes/raft";
import { checkLinearizable, type RegisterOp } from "../linearizability.js";
import { Scheduler } from "../scheduler.js";
import { CALM_NETWORK, type NetworkFaults, SimNetwork } from "../sim-network.js";
import { RaftChecker } from "./raft-checker.js";
import { SimMember } from "./sim-member.js";

/** A deliberate bug to switch on, to prove the checkers catch it. */
export type UnsafeMode = "commit-previous-term" | "send-before-persist";

export interface RaftSimOptions {
  readonly seed: number;
  readonly unsafe?: UnsafeMode;
  /** Force the cluster size (default: drawn from the seed). */
  readonly members?: number;
  /** Keep a trace of faults and phase changes (printed on failure). */
  readonly trace?: boolean;
  /** Check only end-to-end properties, not the commitment rule itself (RaftChecker). */
  readonly endToEndOnly?: boolean;
}

export interface RaftSimResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly failure: string | undefined;
  readonly params: string;
  readonly virtualMs: number;
  readonly events: number;
  readonly stats: Readonly<Record<string, number>>;
  readonly inconclusive: boolean;
  readonly trace: readonly string[];
}

const TICK_MS = 100;
const ELECTION_TICKS = 10;
const HEARTBEAT_TICKS = 1;
/** Liveness bound: a stable leader within this many ticks of healing. */
export const LIVENESS_LEADER_TICKS = 10 * ELECTION_TICKS;
/** A leader is stable once it has led, unchanged, for this many ticks. */
const STABLE_LEADER_TICKS = 2 * ELECTION_TICKS;
/** Liveness bound: a proposal commits on every member within this many ticks. */
export const LIVENESS_COMMIT_TICKS = 5 * ELECTION_TICKS;

const NETWORK_LEVELS: readonly NetworkFaults[] = [
  CALM_NETWORK,
  { ...CALM_NETWORK, dropRate: 0.02, duplicateRate: 0.02, delayUsMax: 5_000 },
  {
    dropRate: 0.1,
    duplicateRate: 0.05,
    delayUsMin: 100,
    delayUsMax: 20_000,
    longDelayRate: 0.02,
    longDelayUsMax: 1_500_000,
  },
  {
    dropRate: 0.3,
    duplicateRate: 0.1,
    delayUsMin: 500,
    delayUsMax: 50_000,
    longDelayRate: 0.05,
    longDelayUsMax: 3_000_000,
  },
];

interface Params {
  readonly memberCount: number;
  readonly safetyMs: number;
  readonly clients: number;
  readonly keys: number;
  readonly appendEntriesMax: number;
  readonly inflightAppendsMax: number;
  readonly snapshotEntriesInterval: number;
  readonly driftMax: number;
  readonly diskMaxUs: number;
  readonly syncUs: number;
  readonly faultGapMs: number;
  /** Probability that a leader crashes the moment its commit index moves. */
  readonly crashAtCommitRate: number;
  /** Probability that a member crashes the moment it becomes leader. */
  readonly crashAtElectionRate: number;
  /** The driver's option: a leader's appends leave before its own write completes. */
  readonly leaderAppendsBeforePersist: boolean;
  /** Members are removed and added back (as learners, then voters) during the run. */
  readonly membershipChurn: boolean;
  /** Probability that a vote or an ack is followed within 2 ms by its sender's crash. */
  readonly crashAfterPromiseRate: number;
}

function drawParams(prng: Prng, members: number | undefined): Params {
  return {
    memberCount: members ?? prng.pick([3, 3, 5]),
    safetyMs: prng.between(15_000, 30_000),
    clients: prng.between(2, 4),
    keys: prng.between(1, 3),
    appendEntriesMax: prng.pick([1, 2, 8, 64]),
    inflightAppendsMax: prng.pick([1, 4, 64]),
    snapshotEntriesInterval: prng.pick([5, 20, 100, 10_000]),
    driftMax: prng.pick([0, 0.05, 0.2, 0.5]),
    diskMaxUs: prng.pick([300, 2_000, 10_000]),
    syncUs: prng.pick([100, 1_000, 5_000]),
    faultGapMs: prng.pick([1_000, 3_000, 6_000]),
    crashAtCommitRate: prng.pick([0, 0.02, 0.1]),
    crashAtElectionRate: prng.pick([0, 0.1, 0.3]),
    leaderAppendsBeforePersist: prng.chance(0.5),
    membershipChurn: prng.chance(0.5),
    crashAfterPromiseRate: prng.pick([0, 0.001, 0.005]),
  };
}

interface LiveMember {
  readonly id: NodeId;
  readonly core: RaftCore;
}

interface ClientOp {
  readonly kind: "write" | "read";
  readonly key: string;
  value: number | undefined;
  readonly invoke: number;
  readonly invokeMs: number;
  accepted: boolean;
}

class RaftSim {
  readonly scheduler = new Scheduler();
  readonly prng: Prng;
  readonly params: Params;
  readonly network: SimNetwork<Message>;
  readonly checker: RaftChecker;
  readonly members = new Map<NodeId, SimMember>();
  readonly ids: NodeId[];
  readonly trace: string[] = [];
  readonly history: RegisterOp[] = [];
  readonly stats = {
    puts: 0,
    gets: 0,
    unknown: 0,
    refused: 0,
    crashes: 0,
    partitions: 0,
    transfers: 0,
    confChanges: 0,
  };
  private readonly tracing: boolean;
  private opSeq = 0;
  private valueSeq = 0;
  private outstanding = 0;
  private clientsStopped = false;
  private faultsStopped = false;
  /** Puts invoked after this op position must commit (the liveness phase). */
  livenessFrom = Number.POSITIVE_INFINITY;
  livenessFailure: string | undefined;
  private readonly leaderHint = new Map<number, NodeId>();

  constructor(private readonly options: RaftSimOptions) {
    this.prng = new Prng(options.seed);
    this.params = drawParams(this.prng, options.members);
    this.tracing = options.trace === true;
    this.network = new SimNetwork<Message>(this.scheduler, this.prng.fork());
    this.checker = new RaftChecker(() => this.scheduler.nowMs(), options.endToEndOnly !== true);
    this.network.onSend = (from, _to, message) => {
      this.checker.onSend(from, message);
      this.crashAfterPromise(from, message);
    };
    this.ids = Array.from({ length: this.params.memberCount }, (_, i) => i + 1);
    const p = this.params;
    for (const id of this.ids) {
      const rate = 1 + (this.prng.float() * 2 - 1) * p.driftMax;
      this.members.set(
        id,
        new SimMember({
          id,
          scheduler: this.scheduler,
          network: this.network,
          prng: this.prng.fork(),
          clockRate: rate,
          disk: { minUs: 50, maxUs: p.diskMaxUs, syncUs: p.syncUs },
          observer: this.checker,
          raft: {
            electionTicks: ELECTION_TICKS,
            heartbeatTicks: HEARTBEAT_TICKS,
            appendEntriesMax: p.appendEntriesMax,
            inflightAppendsMax: p.inflightAppendsMax,
            unsafe: { commitPreviousTermByCount: options.unsafe === "commit-previous-term" },
          },
          tickMs: TICK_MS,
          snapshotEntriesInterval: p.snapshotEntriesInterval,
          onApply: (memberId, entry: AppliedEntry) =>
            this.checker.onApply(memberId, { ...entry, type: 1 }),
          unsafeSendBeforePersist: options.unsafe === "send-before-persist",
          leaderAppendsBeforePersist: p.leaderAppendsBeforePersist,
        }),
      );
    }
  }

  log(line: string): void {
    if (this.tracing) this.trace.push(`${this.scheduler.nowMs().toFixed(1)}ms ${line}`);
  }

  private bootstrapState(): StoredRaftState {
    return {
      hardState: { term: 0, vote: 0, commit: 0 },
      snapshot: {
        meta: { index: 0, term: 0, confState: makeConfState(this.ids, []) },
        data: new TextEncoder().encode("[]"),
      },
      entries: [],
    };
  }

  private liveMembers(): SimMember[] {
    return [...this.members.values()].filter((m) => m.up);
  }

  private readonly roles = new Map<NodeId, string>();

  private afterEvent = (): void => {
    const live: LiveMember[] = [];
    for (const m of this.members.values()) {
      if (m.loop !== undefined) live.push({ id: m.id, core: m.loop.core });
    }
    this.checker.afterEvent(live);
    if (this.tracing) this.traceRoles(live);
    if (!this.faultsStopped) this.crashAtCommit(live);
  };

  private readonly leaderCommits = new Map<NodeId, number>();

  /**
   * Buggify: now and then a member crashes within 2 ms of granting a vote or acknowledging
   * an append, the window in which a promise not yet on disk would be forgotten.
   */
  private crashAfterPromise(from: NodeId, message: Message): void {
    const promise =
      (message.type === MessageType.VoteResponse && !message.reject) ||
      (message.type === MessageType.AppendResponse && !message.reject);
    if (!promise || this.faultsStopped || !this.prng.chance(this.params.crashAfterPromiseRate)) {
      return;
    }
    const member = this.members.get(from) as SimMember;
    const loop = member.loop;
    this.scheduler.after(this.prng.between(0, 2_000), () => {
      if (member.loop === loop && loop !== undefined && !this.faultsStopped) {
        this.crash(member, "after a promise");
      }
    });
  }

  /**
   * Buggify (FoundationDB's term): now and then a leader crashes the moment its commit index
   * moves, before it can tell anyone. That is the narrowest, most dangerous window there is
   * (Figure 8 lives in it), and random crash times almost never hit it.
   */
  private crashAtCommit(live: readonly LiveMember[]): void {
    for (const { id, core } of live) {
      const s = core.status();
      if (s.role !== "leader") {
        this.leaderCommits.delete(id);
        continue;
      }
      const before = this.leaderCommits.get(id);
      this.leaderCommits.set(id, s.commitIndex);
      // A new leader may also die at once, its no-op still on its way.
      const rate =
        before === undefined
          ? this.params.crashAtElectionRate
          : s.commitIndex > before
            ? this.params.crashAtCommitRate
            : 0;
      if (rate === 0 || !this.prng.chance(rate)) continue;
      const member = this.members.get(id) as SimMember;
      if (before !== undefined) {
        this.leaderCommits.delete(id);
        this.crash(member, "at commit");
        continue;
      }
      // Within a few milliseconds of winning: before or just after its no-op is durable,
      // and before that no-op reaches a quorum.
      const loop = member.loop;
      this.scheduler.after(this.prng.between(0, 5_000), () => {
        if (member.loop === loop && loop !== undefined && !this.faultsStopped) {
          this.crash(member, "after election");
        }
      });
    }
  }

  private traceRoles(live: readonly LiveMember[]): void {
    for (const { id, core } of live) {
      const s = core.status();
      const role = `${s.role}@${s.term}`;
      if (this.roles.get(id) === role) continue;
      this.roles.set(id, role);
      this.log(
        `member ${id}: ${s.role} term ${s.term} commit ${s.commitIndex} last ${s.lastIndex}`,
      );
    }
  }

  private failed = (): boolean => this.checker.violation !== undefined;

  run(): RaftSimResult {
    let failure: string | undefined;
    let inconclusive = false;
    try {
      for (const m of this.members.values()) m.start(this.bootstrapState());
      for (let c = 0; c < this.params.clients; c++)
        this.scheduleClient(c, this.prng.between(0, 500_000));
      this.scheduleFault();
      if (this.params.membershipChurn) this.scheduleMembership();
      const safetyEndUs = this.params.safetyMs * 1000;
      this.scheduler.run(safetyEndUs, this.afterEvent, this.failed);
      failure = this.checker.violation ?? this.livenessPhase();
      if (failure === undefined) {
        const lin = checkLinearizable(this.history);
        inconclusive = lin.inconclusive;
        if (!lin.ok) failure = `linearizability: key ${lin.key}: ${lin.detail}`;
      }
    } catch (error) {
      if (!(error instanceof AssertionError)) throw error;
      failure = `assertion: ${error.message}`;
    }
    return {
      seed: this.options.seed,
      ok: failure === undefined,
      failure,
      params: JSON.stringify(this.params),
      virtualMs: this.scheduler.nowMs(),
      events: this.scheduler.eventsRun,
      stats: { ...this.stats, ...this.checker.counts, ...this.network.stats },
      inconclusive,
      trace: this.trace,
    };
  }

  // ─── Liveness ──────────────────────────────────────────────────────────────────────────

  private livenessPhase(): string | undefined {
    this.faultsStopped = true;
    this.network.heal();
    this.network.setFaults(CALM_NETWORK);
    for (const m of this.members.values()) {
      m.clock.setRate(1);
      if (!m.up) this.restart(m);
    }
    this.log("liveness: healed everything");
    const healedUs = this.scheduler.nowUs();
    let stable: { id: NodeId; term: number; sinceUs: number } | undefined;
    const leaderDeadlineUs = healedUs + LIVENESS_LEADER_TICKS * TICK_MS * 1000;
    this.scheduler.run(leaderDeadlineUs, this.afterEvent, () => {
      if (this.failed()) return true;
      // A leader whose pending membership change removes it is about to step down.
      const leader = this.currentLeader(true);
      if (leader === undefined || stable?.id !== leader.id || stable.term !== leader.term) {
        stable = leader === undefined ? undefined : { ...leader, sinceUs: this.scheduler.nowUs() };
        return false;
      }
      return this.scheduler.nowUs() - stable.sinceUs >= STABLE_LEADER_TICKS * TICK_MS * 1000;
    });
    if (this.checker.violation !== undefined) return this.checker.violation;
    const leader = this.currentLeader();
    if (
      leader === undefined ||
      stable === undefined ||
      this.scheduler.nowUs() - stable.sinceUs < STABLE_LEADER_TICKS * TICK_MS * 1000
    ) {
      return `liveness: no stable leader within ${LIVENESS_LEADER_TICKS} ticks of healing`;
    }
    this.log(`liveness: stable leader ${leader.id} at term ${leader.term}`);
    this.livenessFrom = this.opSeq;
    return this.livenessCommit(leader.id);
  }

  /** The leader of the highest term among live members (optionally: one that stays). */
  private currentLeader(mustStay = false): { id: NodeId; term: number } | undefined {
    let best: { id: NodeId; term: number } | undefined;
    let maxTerm = 0;
    for (const m of this.liveMembers()) {
      const s = this.loopOf(m).core.status();
      maxTerm = Math.max(maxTerm, s.term);
      const stays = !mustStay || s.confState.voters.includes(m.id);
      if (s.role === "leader" && stays && (best === undefined || s.term > best.term)) {
        best = { id: m.id, term: s.term };
      }
    }
    return best !== undefined && best.term === maxTerm ? best : undefined;
  }

  private livenessCommit(leaderId: NodeId): string | undefined {
    const leader = this.members.get(leaderId) as SimMember;
    let marker: number | undefined;
    let refused: string | undefined;
    (leader.loop as NonNullable<SimMember["loop"]>).propose(new TextEncoder().encode("marker=0"), {
      resolve: (outcome) => {
        marker = outcome.index;
      },
      reject: (error) => {
        refused = error.message;
      },
    });
    const deadlineUs = this.scheduler.nowUs() + LIVENESS_COMMIT_TICKS * TICK_MS * 1000;
    const converged = (): boolean => {
      if (marker === undefined) return false;
      const voters = (leader.loop as NonNullable<SimMember["loop"]>).core.status().confState;
      const members = [...voters.voters, ...voters.learners];
      return members.every((id) => {
        const loop = this.members.get(id)?.loop;
        return loop !== undefined && loop.core.status().appliedIndex >= (marker as number);
      });
    };
    this.scheduler.run(
      deadlineUs,
      this.afterEvent,
      () => this.failed() || refused !== undefined || converged(),
    );
    if (this.checker.violation !== undefined) return this.checker.violation;
    if (refused !== undefined) return `liveness: the stable leader refused a proposal: ${refused}`;
    if (!converged())
      return `liveness: a proposal did not commit on every member within ${LIVENESS_COMMIT_TICKS} ticks`;
    this.clientsStopped = true;
    const drainUs = this.scheduler.nowUs() + 10_000_000;
    this.scheduler.run(drainUs, this.afterEvent, () => this.failed() || this.outstanding === 0);
    if (this.checker.violation !== undefined) return this.checker.violation;
    if (this.outstanding > 0)
      return `liveness: ${this.outstanding} client operations never settled`;
    if (this.livenessFailure !== undefined) return this.livenessFailure;
    const now = this.currentLeader();
    if (now?.id !== leaderId) {
      return `liveness: leadership moved from ${leaderId} to ${now?.id ?? "nobody"} after it was stable`;
    }
    return this.checkConvergence(leaderId);
  }

  private checkConvergence(leaderId: NodeId): string | undefined {
    // Let the last commit index reach everyone (one heartbeat round or two).
    this.scheduler.run(this.scheduler.nowUs() + 5 * TICK_MS * 1000, this.afterEvent, this.failed);
    const leaderMember = this.members.get(leaderId) as SimMember;
    const leader = this.loopOf(leaderMember).core.status();
    const expected = JSON.stringify([...leaderMember.kv.map].sort());
    for (const id of [...leader.confState.voters, ...leader.confState.learners]) {
      const m = this.members.get(id) as SimMember;
      const s = this.loopOf(m).core.status();
      if (s.appliedIndex !== leader.commitIndex) {
        return `liveness: member ${id} applied ${s.appliedIndex}, leader committed ${leader.commitIndex}`;
      }
      if (JSON.stringify([...m.kv.map].sort()) !== expected) {
        return `convergence: member ${id}'s state machine differs from the leader's`;
      }
    }
    return undefined;
  }

  private loopOf(member: SimMember): NonNullable<SimMember["loop"]> {
    const loop = member.loop;
    if (loop === undefined) throw new AssertionError(`member ${member.id} is down`);
    return loop;
  }

  // ─── Clients ───────────────────────────────────────────────────────────────────────────

  private scheduleClient(client: number, delayUs: number): void {
    this.scheduler.after(delayUs, () => this.clientStep(client));
  }

  private clientStep(client: number): void {
    if (this.clientsStopped) return;
    const next = (): void => this.scheduleClient(client, this.prng.between(1_000, 100_000));
    const hint = this.leaderHint.get(client);
    const target = hint !== undefined && this.prng.chance(0.95) ? hint : this.prng.pick(this.ids);
    const member = this.members.get(target) as SimMember;
    const loop = member.loop;
    if (loop === undefined) {
      this.leaderHint.delete(client);
      next();
      return;
    }
    const op: ClientOp = {
      kind: this.prng.chance(0.6) ? "write" : "read",
      key: `k${this.prng.int(this.params.keys)}`,
      value: undefined,
      invoke: ++this.opSeq,
      invokeMs: this.scheduler.nowMs(),
      // Until the call returns without settling, a refusal means the entry was never added.
      accepted: false,
    };
    this.outstanding++;
    let settled = false;
    const settle = (outcome: "ok" | "unknown" | "failed", error?: Error): void => {
      if (settled) return;
      settled = true;
      timeout.cancel();
      this.outstanding--;
      this.record(op, outcome, error, client, target);
      next();
    };
    const timeout = this.scheduler.after(this.prng.between(1_000_000, 4_000_000), () => {
      cancel();
      settle("unknown");
    });
    let cancel: () => void;
    if (op.kind === "write") {
      op.value = ++this.valueSeq;
      cancel = loop.propose(new TextEncoder().encode(`${op.key}=${op.value}`), {
        resolve: () => settle("ok"),
        reject: (error) => settle(knownNotApplied(error) ? "failed" : "unknown", error),
      });
    } else {
      cancel = loop.readIndex({
        resolve: () => {
          op.value = member.kv.map.get(op.key);
          settle("ok");
        },
        reject: (error) => settle("failed", error),
      });
    }
    if (!settled) op.accepted = true;
  }

  private record(
    op: ClientOp,
    outcome: string,
    error: Error | undefined,
    client: number,
    target: NodeId,
  ): void {
    if (error !== undefined && isHesError(error, "HES_NOT_LEADER")) {
      const hint = error.details.leaderHint;
      if (typeof hint === "number") this.leaderHint.set(client, hint);
      else this.leaderHint.delete(client);
    } else if (outcome === "ok") {
      this.leaderHint.set(client, target);
    }
    const response = outcome === "ok" ? ++this.opSeq : Number.POSITIVE_INFINITY;
    if (op.kind === "write") {
      this.stats.puts++;
      if (outcome !== "failed") {
        this.history.push({
          id: op.invoke,
          key: op.key,
          kind: "write",
          value: op.value,
          invoke: op.invoke,
          response,
        });
      }
      if (outcome === "unknown") this.stats.unknown++;
      if (outcome === "failed") this.stats.refused++;
      if (
        op.invoke > this.livenessFrom &&
        op.accepted &&
        outcome !== "ok" &&
        this.livenessFailure === undefined
      ) {
        const why = error?.message ?? "timeout";
        this.livenessFailure = `liveness: put ${op.key}=${op.value} accepted after healing ended ${outcome}: ${why}`;
      }
    } else if (outcome === "ok") {
      this.stats.gets++;
      this.history.push({
        id: op.invoke,
        key: op.key,
        kind: "read",
        value: op.value,
        invoke: op.invoke,
        response,
      });
    }
  }

  // ─── Faults ────────────────────────────────────────────────────────────────────────────

  private scheduleFault(): void {
    const gapMs = this.params.faultGapMs;
    const gapUs = this.prng.between(gapMs * 500, gapMs * 1500);
    this.scheduler.after(gapUs, () => {
      if (this.faultsStopped) return;
      this.injectFault();
      this.scheduleFault();
    });
  }

  private injectFault(): void {
    const roll = this.prng.int(100);
    if (roll < 25) this.crashOne();
    else if (roll < 50) this.partition();
    else if (roll < 65) this.network.setFaults(this.pickNetwork());
    else if (roll < 80) this.transfer();
    else if (roll < 90) this.driftOne();
    else {
      this.network.heal();
      this.log("network healed");
    }
  }

  private pickNetwork(): NetworkFaults {
    const level = this.prng.pick(NETWORK_LEVELS);
    this.log(
      `network drop=${level.dropRate} dup=${level.duplicateRate} delayMax=${level.delayUsMax}us`,
    );
    return level;
  }

  private crashOne(): void {
    // Half the crashes hit the leader: its crash is what elections, log repair and the
    // Figure 8 rule are for.
    const leader = this.prng.chance(0.5) ? this.currentLeader() : undefined;
    const victim = leader?.id ?? this.prng.pick(this.ids);
    const member = this.members.get(victim) as SimMember;
    if (member.up) this.crash(member, "");
  }

  private crash(member: SimMember, why: string): void {
    this.stats.crashes++;
    member.crash();
    this.log(`crash ${member.id} ${why}`);
    this.scheduler.after(this.prng.between(50_000, 3_000_000), () => {
      if (!member.up && !this.faultsStopped) this.restart(member);
    });
  }

  private restart(member: SimMember): void {
    member.restarts++;
    this.checker.onRestart(member.id);
    member.start(this.bootstrapState());
    this.log(`restart ${member.id}`);
  }

  private partition(): void {
    this.stats.partitions++;
    const shuffled = this.prng.shuffle([...this.ids]);
    const kind = this.prng.pick(["symmetric", "one-way", "bridge", "isolate"] as const);
    const cut = this.prng.between(1, shuffled.length - 1);
    const a = shuffled.slice(0, cut);
    const b = shuffled.slice(cut);
    if (kind === "symmetric") this.network.split(a, b);
    else if (kind === "isolate") this.network.split([shuffled[0] as NodeId], shuffled.slice(1));
    else if (kind === "one-way") {
      for (const x of a) for (const y of b) this.network.block(x, y);
    } else {
      // A bridge: one member keeps both sides; the sides cannot reach each other.
      const bridge = shuffled[0] as NodeId;
      const rest = shuffled.slice(1);
      const half = this.prng.between(0, rest.length);
      this.network.split(rest.slice(0, half), rest.slice(half));
      this.log(`bridge through ${bridge}`);
    }
    this.log(`partition ${kind}: ${a.join(",")} | ${b.join(",")}`);
    this.scheduler.after(this.prng.between(500_000, 8_000_000), () => {
      if (this.faultsStopped) return;
      this.network.heal();
      this.log("partition healed");
    });
  }

  /**
   * Membership churn: through the current leader, remove a voter (the leader itself
   * included), add it back as a learner, then promote it once it caught up. Runs until the
   * end; in the liveness phase it only adds members back.
   */
  private scheduleMembership(): void {
    this.scheduler.after(this.prng.between(300_000, 3_000_000), () => {
      if (this.clientsStopped) return;
      this.membershipStep();
      this.scheduleMembership();
    });
  }

  private membershipStep(): void {
    const leader = this.currentLeader();
    const loop = leader === undefined ? undefined : this.members.get(leader.id)?.loop;
    if (loop === undefined) return;
    const conf = loop.core.status().confState;
    const outside = this.ids.filter(
      (id) => !conf.voters.includes(id) && !conf.learners.includes(id),
    );
    let change: ConfChange | undefined;
    const learner = conf.learners[0];
    if (learner !== undefined) change = { type: ConfChangeType.AddVoter, nodeId: learner };
    else if (outside[0] !== undefined)
      change = { type: ConfChangeType.AddLearner, nodeId: outside[0] };
    else if (!this.faultsStopped && conf.voters.length >= 3 && this.prng.chance(0.5)) {
      change = { type: ConfChangeType.Remove, nodeId: this.prng.pick(conf.voters) };
    }
    if (change === undefined) return;
    const what = `${["", "add-voter", "remove", "add-learner"][change.type]} ${change.nodeId}`;
    loop.proposeConfChange(change, {
      resolve: () => {
        this.stats.confChanges++;
        this.log(`membership: ${what} applied`);
      },
      reject: (error) => this.log(`membership: ${what} refused: ${error.message}`),
    });
  }

  private transfer(): void {
    const leader = this.currentLeader();
    if (leader === undefined) return;
    const loop = this.members.get(leader.id)?.loop;
    const voters = loop?.core.status().confState.voters ?? [];
    const to = this.prng.pick(voters);
    if (loop === undefined || to === leader.id) return;
    this.stats.transfers++;
    this.log(`transfer ${leader.id} -> ${to}`);
    loop.transferLeadership(to, { resolve: () => {}, reject: () => {} });
  }

  private driftOne(): void {
    const member = this.members.get(this.prng.pick(this.ids)) as SimMember;
    const rate = 1 + (this.prng.float() * 2 - 1) * Math.max(0.05, this.params.driftMax);
    member.clock.setRate(rate);
    this.log(`clock ${member.id} rate ${rate.toFixed(3)}`);
  }
}

/** Errors after which a proposal certainly did not take effect. */
function knownNotApplied(error: Error): boolean {
  return (
    isHesError(error, "HES_NOT_LEADER") ||
    isHesError(error, "HES_BUSY") ||
    isHesError(error, "HES_TOO_LARGE")
  );
}

/** Runs one seed. */
export function runRaftSim(options: RaftSimOptions): RaftSimResult {
  return new RaftSim(options).run();
}
