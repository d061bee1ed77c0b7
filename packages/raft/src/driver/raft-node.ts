/**
 * A Raft member for production: the core driven by `RaftLoop`, durable on level, talking
 * over a `Transport`, ticking on a `Clock`, with a promise API that honours AbortSignals.
 *
 *   const node = await RaftNode.start({ id: 1, peers: [1, 2, 3], storageDir, transport,
 *     stateMachine });
 *   const { index, result } = await node.propose(command);     // on the leader
 *   await node.readIndex();                                     // then read the state machine
 *   await node.stop();
 */
import {
  type Clock,
  checkBytes,
  checkInteger,
  HesError,
  isHesError,
  isNodeId,
  type Logger,
  type NodeId,
  nullLogger,
  Prng,
  systemClock,
  type Transport,
  throwIfAborted,
} from "@hes/base";
import { EMPTY_CONF, makeConfState } from "../core/conf.js";
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  type Message,
  type RaftStatus,
} from "../core/types.js";
import {
  ELECTION_TICKS_DEFAULT,
  ENTRY_DATA_BYTES_MAX,
  HEARTBEAT_TICKS_DEFAULT,
  MEMBERS_MAX,
  MEMBERSHIP_TIMEOUT_MS_DEFAULT,
  SNAPSHOT_ENTRIES_INTERVAL_DEFAULT,
  TICK_MS_DEFAULT,
} from "../limits.js";
import { INITIAL_HARD_STATE, LevelRaftStorage } from "../storage/level-storage.js";
import type { RaftStorage } from "../storage/raft-storage.js";
import { type ProposalOutcome, RaftLoop, type StateMachine, type Waiter } from "./raft-loop.js";

/** Options of {@link RaftNode.start}. */
export interface RaftNodeOptions<Result> {
  readonly id: NodeId;
  /**
   * The voters of a new cluster (including `id`), used only when the storage is empty. Omit
   * to join an existing cluster: the member starts with no configuration and waits to be
   * added (as a learner) by the leader.
   */
  readonly peers?: readonly NodeId[];
  /** Directory of the level database; or pass `storage`. */
  readonly storageDir?: string;
  readonly storage?: RaftStorage;
  /** Owned by the node from here on: `stop()` closes it. */
  readonly transport: Transport<Message>;
  readonly stateMachine: StateMachine<Result>;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Default 10 (1 s at 100 ms ticks). */
  readonly electionTicks?: number;
  /** Default 1. */
  readonly heartbeatTicks?: number;
  /** Default 100. */
  readonly tickMs?: number;
  readonly snapshotEntriesInterval?: number;
  /** Ticks before a read or transfer fails with HES_TIMEOUT. Default 3 election timeouts. */
  readonly requestTimeoutTicks?: number;
  readonly preVote?: boolean;
  readonly checkQuorum?: boolean;
  /**
   * Let the leader send appends while its own write is in progress (thesis §10.2.1): one
   * fsync less on the commit path. Default false (every message waits for the write).
   */
  readonly leaderAppendsBeforePersist?: boolean;
  /** Seed of the election-timeout randomness; default from Math.random. */
  readonly prngSeed?: number;
  readonly onMembershipChange?: (confState: ConfState, change: ConfChange) => void;
}

/** Per-call options. */
export interface RequestOptions {
  readonly signal?: AbortSignal;
}

/** What `status()` reports. */
export interface RaftNodeStatus {
  readonly id: NodeId;
  readonly role: RaftStatus["role"];
  readonly term: number;
  readonly leaderId: NodeId;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly members: ConfState;
  /** True after a storage failure: the member stopped and must be restarted. */
  readonly failed: boolean;
}

export class RaftNode<Result = unknown> {
  private readonly loop: RaftLoop<Result>;
  private readonly storage: RaftStorage;
  private readonly transport: Transport<Message>;
  private readonly clock: Clock;
  private readonly tickMs: number;
  private stopping: Promise<void> | undefined;

  private constructor(
    loop: RaftLoop<Result>,
    storage: RaftStorage,
    transport: Transport<Message>,
    clock: Clock,
    tickMs: number,
  ) {
    this.loop = loop;
    this.storage = storage;
    this.transport = transport;
    this.clock = clock;
    this.tickMs = tickMs;
  }

  /** Opens the storage, recovers (or bootstraps) the state, and starts ticking. */
  static async start<Result>(options: RaftNodeOptions<Result>): Promise<RaftNode<Result>> {
    if (!isNodeId(options.id)) throw new RangeError(`id must be a node id, got ${options.id}`);
    const electionTicks = checkInteger(
      options.electionTicks ?? ELECTION_TICKS_DEFAULT,
      "electionTicks",
      { min: 2, max: 10_000 },
    );
    const heartbeatTicks = checkInteger(
      options.heartbeatTicks ?? HEARTBEAT_TICKS_DEFAULT,
      "heartbeatTicks",
      { min: 1, max: electionTicks - 1 },
    );
    const tickMs = checkInteger(options.tickMs ?? TICK_MS_DEFAULT, "tickMs", {
      min: 1,
      max: 60_000,
    });
    const peers = options.peers;
    if (peers !== undefined) {
      if (!peers.includes(options.id)) throw new RangeError("peers must include id");
      if (peers.length > MEMBERS_MAX || !peers.every(isNodeId)) {
        throw new RangeError(`peers must be 1..${MEMBERS_MAX} node ids`);
      }
    }
    const logger = (options.logger ?? nullLogger).child({ raftId: options.id });
    const storage = options.storage ?? (await openLevel(options, logger));
    let state = await storage.load();
    if (state === undefined) {
      const confState = peers === undefined ? EMPTY_CONF : makeConfState(peers, []);
      state = {
        hardState: INITIAL_HARD_STATE,
        snapshot: { meta: { index: 0, term: 0, confState }, data: new Uint8Array(0) },
        entries: [],
      };
      await storage.bootstrap(state);
      logger.info({ voters: confState.voters }, "raft member bootstrapped");
    }
    const clock = options.clock ?? systemClock;
    const loop = new RaftLoop<Result>({
      raft: {
        id: options.id,
        electionTicks,
        heartbeatTicks,
        prng: new Prng(options.prngSeed ?? Math.floor(Math.random() * 2 ** 48)),
        logger,
        ...(options.preVote === undefined ? {} : { preVote: options.preVote }),
        ...(options.checkQuorum === undefined ? {} : { checkQuorum: options.checkQuorum }),
      },
      initial: state,
      storage,
      transport: options.transport,
      stateMachine: options.stateMachine,
      clock,
      defer: (fn) => setImmediate(fn),
      tickMs,
      snapshotEntriesInterval: options.snapshotEntriesInterval ?? SNAPSHOT_ENTRIES_INTERVAL_DEFAULT,
      requestTimeoutTicks: options.requestTimeoutTicks ?? electionTicks * 3,
      logger,
      leaderAppendsBeforePersist: options.leaderAppendsBeforePersist === true,
      ...(options.onMembershipChange === undefined
        ? {}
        : { onMembershipChange: options.onMembershipChange }),
    });
    return new RaftNode(loop, storage, options.transport, clock, tickMs);
  }

  /**
   * Proposes `data` (at most ENTRY_DATA_BYTES_MAX). Resolves once this member's state machine
   * applied it, with its index and result. Fails fast with HES_NOT_LEADER (and
   * `details.leaderHint`) on a follower; HES_NOT_LEADER also when leadership changed and the
   * entry was dropped; HES_ABORTED when `signal` fires (the entry may still commit).
   */
  propose(
    data: Uint8Array,
    options: RequestOptions = {},
  ): Promise<ProposalOutcome<Result | undefined>> {
    checkBytes(data, "data", ENTRY_DATA_BYTES_MAX);
    return this.request(options.signal, (waiter) => this.loop.propose(data, waiter));
  }

  /**
   * A linearizable read barrier. Resolves with the read index once this member's state
   * machine applied through the leader's commit index at the time of the call; reads of the
   * local state machine after that see every write that completed before the call.
   * HES_NOT_LEADER when no leader is known; HES_TIMEOUT when the leader did not confirm.
   */
  async readIndex(options: RequestOptions = {}): Promise<{ readonly index: number }> {
    const index = await this.request(options.signal, (waiter: Waiter<number>) =>
      this.loop.readIndex(waiter),
    );
    return { index };
  }

  /** Adds `id` as a learner (it receives the log but does not vote). On the leader. */
  async addLearner(
    id: NodeId,
    options: RequestOptions & { context?: Uint8Array; timeoutMs?: number } = {},
  ): Promise<void> {
    const nodeId = checkNodeId(id);
    const change: ConfChange =
      options.context === undefined
        ? { type: ConfChangeType.AddLearner, nodeId }
        : { type: ConfChangeType.AddLearner, nodeId, context: options.context };
    await this.changeMembership(change, options);
  }

  /**
   * Makes `id` a voter: adds it as a learner if it is not a member, waits until it holds
   * every committed entry, then promotes it. On the leader.
   */
  async addVoter(id: NodeId, options: RequestOptions & { timeoutMs?: number } = {}): Promise<void> {
    checkNodeId(id);
    const status = this.loop.status();
    if (status.confState.voters.includes(id)) return;
    if (!status.confState.learners.includes(id)) await this.addLearner(id, options);
    await this.changeMembership({ type: ConfChangeType.AddVoter, nodeId: id }, options);
  }

  /** Removes voter or learner `id` (the leader itself included). On the leader. */
  async removeMember(
    id: NodeId,
    options: RequestOptions & { timeoutMs?: number } = {},
  ): Promise<void> {
    const change: ConfChange = { type: ConfChangeType.Remove, nodeId: checkNodeId(id) };
    await this.changeMembership(change, options);
  }

  /**
   * Proposes a membership change and waits until it is applied here. HES_BUSY refusals are
   * passing states (a new leader has not committed in its term, another change is in
   * flight, a learner is still catching up): they are retried every tick until `timeoutMs`.
   */
  private async changeMembership(
    change: ConfChange,
    options: RequestOptions & { timeoutMs?: number },
  ): Promise<void> {
    const deadline = this.clock.nowMs() + (options.timeoutMs ?? MEMBERSHIP_TIMEOUT_MS_DEFAULT);
    for (;;) {
      try {
        await this.request(options.signal, (waiter) => this.loop.proposeConfChange(change, waiter));
        return;
      } catch (error) {
        if (!isHesError(error, "HES_BUSY") || this.clock.nowMs() >= deadline) throw error;
      }
      await this.clock.sleep(this.tickMs, options.signal);
    }
  }

  /** Hands leadership to voter `to`; resolves when this member sees it lead. On the leader. */
  async transferLeadership(to: NodeId, options: RequestOptions = {}): Promise<void> {
    checkNodeId(to);
    await this.request(options.signal, (waiter: Waiter<void>) =>
      this.loop.transferLeadership(to, waiter),
    );
  }

  status(): RaftNodeStatus {
    const s = this.loop.status();
    return {
      id: s.id,
      role: s.role,
      term: s.term,
      leaderId: s.leaderId,
      commitIndex: s.commitIndex,
      appliedIndex: s.appliedIndex,
      members: s.confState,
      failed: s.failed,
    };
  }

  /**
   * The last log index `id` is known to hold durably, as this member sees it while it leads
   * (its own durable last index for itself); undefined when not leading or `id` is no member.
   */
  matchOf(id: NodeId): number | undefined {
    checkNodeId(id);
    return this.loop.matchOf(id);
  }

  /**
   * Stops the member: no more ticks or messages, a write in progress completes, waiters fail
   * with HES_CLOSED, then the transport and the storage are closed. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await new Promise<void>((resolve) => this.loop.stop(resolve));
      await this.transport.close();
      await this.storage.close();
    })();
    return this.stopping;
  }

  private request<T>(
    signal: AbortSignal | undefined,
    start: (waiter: Waiter<T>) => () => void,
  ): Promise<T> {
    throwIfAborted(signal, "raft request");
    return new Promise<T>((resolve, reject) => {
      let cancel: () => void = () => {};
      const onAbort = (): void => {
        cancel();
        reject(new HesError("HES_ABORTED", "raft request aborted", { cause: signal?.reason }));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      cancel = start({
        resolve: (value) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(value);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      });
    });
  }
}

function checkNodeId(id: NodeId): NodeId {
  if (!isNodeId(id)) throw new RangeError(`not a node id: ${id}`);
  return id;
}

async function openLevel<Result>(
  options: RaftNodeOptions<Result>,
  logger: Logger,
): Promise<LevelRaftStorage> {
  if (options.storageDir === undefined) throw new TypeError("storageDir or storage is required");
  return LevelRaftStorage.open({ directory: options.storageDir, nodeId: options.id, logger });
}
