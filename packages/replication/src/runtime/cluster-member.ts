/**
 * A member of the control plane: the pure ClusterMap hosted as the state machine of a
 * RaftNode, implementing the pinned {@link ClusterControl} contract.
 *
 * - `propose` on the leader stamps the command with the leader's wall clock and appends it;
 *   on a follower it forwards the unstamped command to the leader (ClusterControlService),
 *   which answers with the committed (index, term); the follower then waits until it applied
 *   that index itself and answers with its own outcome (identical on every member).
 * - Retries: HES_NOT_LEADER and HES_BUSY from Raft mean "not appended", so every kind is
 *   retried until the deadline. HES_UNAVAILABLE / HES_TIMEOUT mean "outcome unknown": only
 *   idempotent kinds ({@link IDEMPOTENT_KINDS}) are retried; the others surface the error.
 * - `sync` is a ReadIndex barrier (Raft forwards it from a follower to the leader).
 * - Bootstrap: the leader proposes InitCluster while the map has none; every member proposes
 *   its own AddNode (or UpdateNode when its addresses or disks changed) until it is in; then
 *   it heartbeats. See loops.ts for these and the leader's liveness / repair / rebalance.
 */
import { setMaxListeners } from "node:events";
import { join } from "node:path";
import type { ChannelCredentials, Server, ServerCredentials } from "@grpc/grpc-js";
import {
  type Clock,
  HesError,
  isHesError,
  isNodeId,
  type Logger,
  type NodeId,
  nullLogger,
  systemClock,
  type Transport,
  throwIfAborted,
} from "@hes/base";
import {
  addService,
  bindServer,
  ClusterAdminService,
  ClusterControlService,
  createClient,
  createServer,
  RaftTransportService,
} from "@hes/proto";
import {
  GrpcRaftTransport,
  type Message,
  RaftNode,
  type RaftNodeOptions,
  type RaftNodeStatus,
  type RaftStorage,
} from "@hes/raft";
import type { ClusterMap } from "../cluster-map/cluster-map.js";
import { type CommandKind, encodeCommand, stampCommand } from "../cluster-map/commands.js";
import type { ClusterMapView } from "../cluster-map/model.js";
import type { ApplyValue, RejoinReport } from "../cluster-map/outcome.js";
import type { ClusterControl, ClusterProposal, ReplicaCallOptions } from "../contracts.js";
import { type AdminRawClient, adminService } from "./admin-service.js";
import {
  clusterControlService,
  type ForwardReply,
  type ForwardRequest,
  type ForwardTarget,
  GrpcForwarder,
  type ProposalForwarder,
} from "./forwarding.js";
import {
  FORWARDED_IN_FLIGHT_MAX,
  HEARTBEAT_INTERVAL_MS_MIN,
  PROPOSALS_IN_FLIGHT_MAX,
  PROPOSE_DEADLINE_MS_DEFAULT,
  PROPOSE_DEADLINE_MS_MAX,
  PROPOSE_RETRY_MS,
  SERVER_SHUTDOWN_GRACE_MS,
} from "./limits.js";
import { type LoopOptions, MemberLoops, type SelfDescription } from "./loops.js";
import { type MapApplied, MapMachine } from "./map-machine.js";

/**
 * Kinds whose repetition is harmless (the map answers "unchanged" or re-checks in map time),
 * so a proposal whose outcome is unknown (HES_UNAVAILABLE / HES_TIMEOUT) is sent again.
 * Not in the list: createVolume / cloneVolume / createSnapshot (a second one is refused by
 * name: ALREADY_EXISTS), deleteVolume / deleteSnapshot / removeNode (NOT_FOUND), addNode
 * (ALREADY_EXISTS), openVolume (a new epoch each time), and the chunk reports whose second
 * application may differ. Their callers decide.
 */
export const IDEMPOTENT_KINDS: ReadonlySet<CommandKind> = new Set<CommandKind>([
  "initCluster",
  "setConfig",
  "updateNode",
  "nodeHeartbeat",
  "markNodeDown",
  "drainNode",
  "resizeVolume",
  "detachClone",
  "placeChunk",
  "reportReplicaProgress",
]);

/** A member of the initial voter set. */
export interface MemberAddress {
  readonly nodeId: NodeId;
  /** host:port of its gRPC server (Raft, forwarding, admin). */
  readonly controlAddress: string;
}

/** Options of {@link ClusterMember.start}. */
export interface ClusterMemberOptions {
  readonly nodeId: NodeId;
  readonly clusterId: string;
  /** Raft's level database lives in `<dataDir>/raft`. Or pass `raftStorage`. */
  readonly dataDir?: string;
  readonly raftStorage?: RaftStorage;
  /**
   * The voters of a new cluster (this node included); used only when the data dir is empty.
   * With `join`, the members of the existing cluster this node will be added to (their
   * addresses let it answer the leader before it has applied the map).
   */
  readonly members: readonly MemberAddress[];
  /**
   * Join an existing cluster instead of founding one: start with no Raft configuration and
   * wait until an admin AddNode (on any member) makes this node a learner, then a voter.
   */
  readonly join?: boolean;
  /** What this node registers in the map (AddNode / UpdateNode). */
  readonly self: SelfDescription;
  /**
   * Raft's transport. Default: gRPC to the members' control addresses (then `credentials` is
   * required). Tests pass `MemoryNetwork.transport(id)`.
   */
  readonly transport?: Transport<Message>;
  /** How proposals reach the leader. Default: gRPC (`credentials` required). */
  readonly forwarder?: ProposalForwarder;
  /**
   * gRPC credentials. The host passes mutual-TLS ones; insecure ones only when the caller
   * says so explicitly (`grpc.credentials.createInsecure()`): there is no insecure default.
   */
  readonly credentials?: {
    readonly server: ServerCredentials;
    readonly channel: ChannelCredentials;
  };
  /**
   * A grpc Server owned by the caller: Raft, ClusterControl and ClusterAdmin services are
   * registered on it (before the caller binds it). Without it, and with gRPC in use, the
   * member creates its own server and binds it at `listenAddress` (default
   * self.controlAddress), closed by `stop()`.
   */
  readonly server?: Server;
  readonly listenAddress?: string;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Raft tuning passed through (ticks, snapshot interval, seed …). */
  readonly raft?: Partial<
    Pick<
      RaftNodeOptions<MapApplied>,
      | "electionTicks"
      | "heartbeatTicks"
      | "tickMs"
      | "snapshotEntriesInterval"
      | "prngSeed"
      | "leaderAppendsBeforePersist"
    >
  >;
  readonly loops?: LoopOptions;
  /** A node that was down heartbeats again: what it missed (revoked leases, catch-up). */
  readonly onRejoin?: (report: RejoinReport) => void;
}

/** What `status()` reports: Raft's view and the map's applied index. */
export interface MemberStatus extends RaftNodeStatus {
  readonly mapAppliedIndex: number;
}

export class ClusterMember implements ClusterControl, ForwardTarget {
  readonly nodeId: NodeId;
  readonly clusterId: string;
  private readonly machine: MapMachine;
  private readonly forwarder: ProposalForwarder;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly channelCredentials: ChannelCredentials | undefined;
  private loops: MemberLoops | undefined;
  private ownServer: Server | undefined;
  private inFlight = 0;
  private forwardedInFlight = 0;
  private readonly closing = new AbortController();
  private stopped: Promise<void> | undefined;

  private constructor(
    options: ClusterMemberOptions,
    readonly raft: RaftNode<MapApplied>,
    machine: MapMachine,
    forwarder: ProposalForwarder,
    private readonly grpcTransport: GrpcRaftTransport | undefined,
    private readonly addressOf: (nodeId: NodeId) => string | undefined,
  ) {
    this.nodeId = options.nodeId;
    this.clusterId = options.clusterId;
    this.machine = machine;
    this.forwarder = forwarder;
    // Every call in flight listens to the closing signal (bounded by the in-flight limits).
    setMaxListeners(PROPOSALS_IN_FLIGHT_MAX + FORWARDED_IN_FLIGHT_MAX + 16, this.closing.signal);
    this.channelCredentials = options.credentials?.channel;
    this.clock = options.clock ?? systemClock;
    this.logger = (options.logger ?? nullLogger).child({ member: options.nodeId });
  }

  /** Opens (or recovers) the member, registers its services, and starts its loops. */
  static async start(options: ClusterMemberOptions): Promise<ClusterMember> {
    checkOptions(options);
    const logger = (options.logger ?? nullLogger).child({ member: options.nodeId });
    const clock = options.clock ?? systemClock;
    const machine = new MapMachine(logger);
    const addresses = new Map<NodeId, string>();
    for (const m of options.members) addresses.set(m.nodeId, m.controlAddress);
    // Members added later are found through the map's node records.
    const addressOf = (id: NodeId): string | undefined =>
      addresses.get(id) ?? nonEmpty(machine.map.node(id)?.controlAddress);
    const { transport, grpcTransport } = openTransport(options, logger, clock);
    const forwarder =
      options.forwarder ??
      new GrpcForwarder({ addressOf, credentials: requireCredentials(options).channel });
    let raft: RaftNode<MapApplied>;
    try {
      raft = await RaftNode.start<MapApplied>({
        id: options.nodeId,
        ...(options.join === true ? {} : { peers: options.members.map((m) => m.nodeId) }),
        ...(options.raftStorage === undefined
          ? { storageDir: join(options.dataDir ?? "", "raft") }
          : { storage: options.raftStorage }),
        transport,
        stateMachine: machine,
        clock,
        logger,
        ...options.raft,
      });
    } catch (error) {
      // Raft did not take ownership of the transport: close what was opened here.
      forwarder.close();
      await transport.close();
      throw error;
    }
    const member = new ClusterMember(options, raft, machine, forwarder, grpcTransport, addressOf);
    try {
      await member.serve(options);
    } catch (error) {
      await member.stop();
      throw error;
    }
    if (grpcTransport !== undefined) member.followPeerAddresses(grpcTransport, addresses);
    member.loops = new MemberLoops({
      member,
      self: options.self,
      clock,
      logger,
      options: options.loops ?? {},
      ...(options.onRejoin === undefined ? {} : { onRejoin: options.onRejoin }),
      signal: member.closing.signal,
    });
    member.loops.start();
    return member;
  }

  /** Registers the services on the caller's server, or on a server of our own. */
  private async serve(options: ClusterMemberOptions): Promise<void> {
    const usesGrpc = this.grpcTransport !== undefined || options.server !== undefined;
    if (!usesGrpc) return;
    let server = options.server;
    if (server === undefined) {
      server = createServer();
      this.ownServer = server;
    }
    if (this.grpcTransport !== undefined) {
      addService(server, RaftTransportService, this.grpcTransport.service(), {
        logger: this.logger,
      });
    }
    addService(server, ClusterControlService, clusterControlService(this), {
      logger: this.logger,
    });
    addService(server, ClusterAdminService, adminService(this), { logger: this.logger });
    if (this.ownServer !== undefined) {
      const address = options.listenAddress ?? options.self.controlAddress;
      await bindServer(this.ownServer, address, requireCredentials(options).server);
    }
  }

  /** Keeps the Raft transport's peer list in step with the map's control addresses. */
  private followPeerAddresses(transport: GrpcRaftTransport, known: Map<NodeId, string>): void {
    this.machine.subscribe((view) => {
      for (const node of view.nodes()) {
        if (node.nodeId === this.nodeId || node.controlAddress === "") continue;
        if (node.state === "removed") continue;
        if (known.get(node.nodeId) === node.controlAddress) continue;
        known.set(node.nodeId, node.controlAddress);
        transport.setPeer(node.nodeId, node.controlAddress);
      }
    });
  }

  // ---- ClusterControl ----

  view(): ClusterMap {
    return this.machine.map;
  }

  subscribe(listener: (view: ClusterMapView) => void): () => void {
    return this.machine.subscribe(listener);
  }

  /**
   * See {@link ClusterControl.propose}. Options add `deadlineMs` (default 10 s, at most 60 s):
   * the whole call, forwarding and retries included, ends by then with HES_TIMEOUT.
   */
  async propose<K extends CommandKind>(
    proposal: ClusterProposal<K>,
    options: ReplicaCallOptions & { readonly deadlineMs?: number } = {},
  ): Promise<ApplyValue> {
    const deadlineMs = options.deadlineMs ?? PROPOSE_DEADLINE_MS_DEFAULT;
    if (
      !Number.isSafeInteger(deadlineMs) ||
      deadlineMs < 1 ||
      deadlineMs > PROPOSE_DEADLINE_MS_MAX
    ) {
      throw new RangeError(`deadlineMs must be an integer in [1, ${PROPOSE_DEADLINE_MS_MAX}]`);
    }
    // Encoding checks the fields' types and ranges (RangeError/TypeError) before anything moves.
    const bytes = encodeCommand(proposal.kind, proposal.fields);
    throwIfAborted(options.signal, `proposal ${proposal.kind}`);
    this.checkOpen();
    if (this.inFlight >= PROPOSALS_IN_FLIGHT_MAX) {
      throw new HesError(
        "HES_BUSY",
        `${PROPOSALS_IN_FLIGHT_MAX} proposals in flight on member ${this.nodeId}`,
      );
    }
    this.inFlight++;
    const call = this.callSignal(options.signal, deadlineMs, `proposal ${proposal.kind}`);
    try {
      const applied = await this.proposeBytes(proposal.kind, bytes, call);
      if (!applied.result.ok) throw applied.result.error;
      return applied.result.value;
    } catch (error) {
      throw call.translate(error);
    } finally {
      call.dispose();
      this.inFlight--;
    }
  }

  private async proposeBytes(
    kind: CommandKind,
    bytes: Uint8Array,
    call: CallSignal,
  ): Promise<MapApplied> {
    const retryUnknown = IDEMPOTENT_KINDS.has(kind);
    for (;;) {
      try {
        return await this.proposeOnce(bytes, call);
      } catch (error) {
        const retry =
          isHesError(error, "HES_NOT_LEADER") ||
          isHesError(error, "HES_BUSY") ||
          (retryUnknown &&
            (isHesError(error, "HES_UNAVAILABLE") || isHesError(error, "HES_TIMEOUT")));
        if (!retry || call.signal.aborted) throw error;
        this.logger.debug({ kind, err: error }, "proposal retried");
      }
      await this.clock.sleep(PROPOSE_RETRY_MS, call.signal);
    }
  }

  /** One attempt: on the leader directly, else forwarded to the known leader. */
  private async proposeOnce(bytes: Uint8Array, call: CallSignal): Promise<MapApplied> {
    const status = this.raft.status();
    if (status.role === "leader") return this.appendAsLeader(bytes, call.signal);
    if (status.leaderId === 0) throw new HesError("HES_NOT_LEADER", "no leader known yet");
    const reply = await this.forwarder.propose(
      status.leaderId,
      { clusterId: this.clusterId, fromNodeId: this.nodeId, command: bytes },
      { signal: call.signal, deadlineMs: call.remainingMs() },
    );
    const applied = await this.waitApplied(reply.index, call.signal);
    if (applied === undefined || applied.term !== reply.term) {
      throw new HesError(
        "HES_UNAVAILABLE",
        `outcome of entry ${reply.index} unknown here (it arrived inside a raftSnapshot)`,
      );
    }
    return applied;
  }

  private async appendAsLeader(bytes: Uint8Array, signal: AbortSignal): Promise<MapApplied> {
    const stamped = stampCommand(bytes, Math.max(1, Math.floor(this.clock.wallMs())));
    const { result } = await this.raft.propose(stamped, { signal });
    if (result === undefined)
      throw new HesError("HES_UNAVAILABLE", "entry applied without outcome");
    return result;
  }

  private waitApplied(index: number, signal: AbortSignal): Promise<MapApplied | undefined> {
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        cancel();
        reject(new HesError("HES_ABORTED", `waiting for entry ${index} aborted`));
      };
      const cancel = this.machine.whenApplied(index, (applied) => {
        signal.removeEventListener("abort", onAbort);
        resolve(applied);
      });
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** The leader's side of forwarding (ClusterControlService.Propose). */
  async acceptForwarded(request: ForwardRequest, signal: AbortSignal): Promise<ForwardReply> {
    if (request.clusterId !== this.clusterId) {
      throw new HesError(
        "HES_PERMISSION_DENIED",
        `proposal for cluster ${JSON.stringify(request.clusterId)} reached ${this.clusterId}`,
      );
    }
    this.checkOpen();
    const status = this.raft.status();
    if (status.role !== "leader") {
      throw new HesError("HES_NOT_LEADER", `member ${this.nodeId} is not the leader`, {
        details: status.leaderId === 0 ? {} : { leaderHint: status.leaderId },
      });
    }
    if (this.forwardedInFlight >= FORWARDED_IN_FLIGHT_MAX) {
      throw new HesError("HES_BUSY", `${FORWARDED_IN_FLIGHT_MAX} forwarded proposals in flight`);
    }
    this.forwardedInFlight++;
    try {
      const applied = await this.appendAsLeader(request.command, signal);
      return { index: applied.index, term: applied.term };
    } finally {
      this.forwardedInFlight--;
    }
  }

  /** See {@link ClusterControl.sync}: a ReadIndex barrier, retried until the deadline. */
  async sync(
    options: ReplicaCallOptions & { readonly deadlineMs?: number } = {},
  ): Promise<ClusterMap> {
    throwIfAborted(options.signal, "sync");
    this.checkOpen();
    const call = this.callSignal(
      options.signal,
      options.deadlineMs ?? PROPOSE_DEADLINE_MS_DEFAULT,
      "sync",
    );
    try {
      for (;;) {
        try {
          await this.raft.readIndex({ signal: call.signal });
          return this.machine.map;
        } catch (error) {
          // A read changes nothing: every "not now" is retried until the call's deadline.
          const retry =
            isHesError(error, "HES_NOT_LEADER") ||
            isHesError(error, "HES_BUSY") ||
            isHesError(error, "HES_TIMEOUT") ||
            isHesError(error, "HES_UNAVAILABLE");
          if (!retry || call.signal.aborted) throw error;
        }
        await this.clock.sleep(PROPOSE_RETRY_MS, call.signal);
      }
    } catch (error) {
      throw call.translate(error);
    } finally {
      call.dispose();
    }
  }

  // ---- Raft membership (the admin service's AddNode / RemoveNode) ----

  /** Makes `nodeId` a voter (learner first, promoted once caught up). On the leader. */
  async addVoter(nodeId: NodeId, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.checkOpen();
    await this.raft.addVoter(
      nodeId,
      options.signal === undefined ? {} : { signal: options.signal },
    );
  }

  /** Removes `nodeId` from the Raft group. On the leader. */
  async removeMember(nodeId: NodeId, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.checkOpen();
    await this.raft.removeMember(
      nodeId,
      options.signal === undefined ? {} : { signal: options.signal },
    );
  }

  /** Runs `here` when this member leads, else `remote` against the leader's admin service. */
  async onLeader<T>(
    here: () => Promise<T>,
    remote: (leader: AdminRawClient) => Promise<T>,
  ): Promise<T> {
    this.checkOpen();
    const status = this.raft.status();
    if (status.role === "leader") return here();
    const address = status.leaderId === 0 ? undefined : this.addressOf(status.leaderId);
    if (address === undefined || this.channelCredentials === undefined) {
      throw new HesError("HES_NOT_LEADER", `member ${this.nodeId} cannot reach the leader`, {
        details: status.leaderId === 0 ? {} : { leaderHint: status.leaderId },
      });
    }
    const client = createClient(ClusterAdminService, address, {
      credentials: this.channelCredentials,
    });
    try {
      return await remote(client);
    } finally {
      client.close();
    }
  }

  // ---- Introspection and lifecycle ----

  status(): MemberStatus {
    return { ...this.raft.status(), mapAppliedIndex: this.machine.map.appliedIndex };
  }

  /** The leader's view of a member's durable log index; undefined when this one is no leader. */
  matchOf(nodeId: NodeId): number | undefined {
    return this.raft.matchOf(nodeId);
  }

  isLeader(): boolean {
    return this.raft.status().role === "leader";
  }

  /** Stops the loops, Raft (and its transport), forwarding, and the server if it is ours. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.closing.abort(new HesError("HES_CLOSED", `member ${this.nodeId} stopped`));
      await this.loops?.stopped();
      this.machine.dropWaiters();
      await this.raft.stop();
      this.forwarder.close();
      const server = this.ownServer;
      if (server !== undefined) {
        // Peers keep long-lived Raft streams open: a graceful shutdown gets a bounded wait.
        await new Promise<void>((resolve) => {
          const timer = this.clock.setTimer(SERVER_SHUTDOWN_GRACE_MS, () => {
            server.forceShutdown();
            resolve();
          });
          server.tryShutdown(() => {
            timer.cancel();
            resolve();
          });
        });
      }
    })();
    return this.stopped;
  }

  private checkOpen(): void {
    if (this.closing.signal.aborted) {
      throw new HesError("HES_CLOSED", `member ${this.nodeId} is stopped`);
    }
  }

  /** One signal for a call: the caller's, the deadline's, and this member's closing. */
  private callSignal(
    caller: AbortSignal | undefined,
    deadlineMs: number,
    what: string,
  ): CallSignal {
    const controller = new AbortController();
    const startedMs = this.clock.nowMs();
    let why: "deadline" | "caller" | "closed" | undefined;
    const timer = this.clock.setTimer(deadlineMs, () => {
      why ??= "deadline";
      controller.abort();
    });
    const onCaller = (): void => {
      why ??= "caller";
      controller.abort();
    };
    const onClose = (): void => {
      why ??= "closed";
      controller.abort();
    };
    caller?.addEventListener("abort", onCaller, { once: true });
    this.closing.signal.addEventListener("abort", onClose, { once: true });
    return {
      signal: controller.signal,
      remainingMs: () => Math.max(1, deadlineMs - (this.clock.nowMs() - startedMs)),
      translate: (error) => {
        if (why === "deadline") {
          return new HesError("HES_TIMEOUT", `${what}: no outcome within ${deadlineMs} ms`, {
            cause: error,
          });
        }
        if (why === "closed") {
          return new HesError("HES_CLOSED", `${what}: member ${this.nodeId} stopped`);
        }
        if (why === "caller") {
          return new HesError("HES_ABORTED", `${what}: aborted by the caller`, { cause: error });
        }
        return error;
      },
      dispose: () => {
        timer.cancel();
        caller?.removeEventListener("abort", onCaller);
        this.closing.signal.removeEventListener("abort", onClose);
      },
    };
  }
}

interface CallSignal {
  readonly signal: AbortSignal;
  remainingMs(): number;
  translate(error: unknown): unknown;
  dispose(): void;
}

/** The injected Raft transport, or gRPC to the members' control addresses. */
function openTransport(
  options: ClusterMemberOptions,
  logger: Logger,
  clock: Clock,
): { transport: Transport<Message>; grpcTransport: GrpcRaftTransport | undefined } {
  if (options.transport !== undefined) {
    return { transport: options.transport, grpcTransport: undefined };
  }
  const peers: Record<number, string> = {};
  for (const m of options.members) {
    if (m.nodeId !== options.nodeId) peers[m.nodeId] = m.controlAddress;
  }
  const grpcTransport = new GrpcRaftTransport({
    selfId: options.nodeId,
    clusterId: options.clusterId,
    peers,
    logger,
    clock,
    client: { credentials: requireCredentials(options).channel },
  });
  return { transport: grpcTransport, grpcTransport };
}

function nonEmpty(text: string | undefined): string | undefined {
  return text === undefined || text === "" ? undefined : text;
}

function requireCredentials(options: ClusterMemberOptions): {
  readonly server: ServerCredentials;
  readonly channel: ChannelCredentials;
} {
  if (options.credentials === undefined) {
    throw new TypeError(
      "credentials are required when the member talks gRPC (pass grpc.credentials." +
        "createInsecure() / ServerCredentials.createInsecure() explicitly for plaintext)",
    );
  }
  return options.credentials;
}

function checkOptions(options: ClusterMemberOptions): void {
  if (!isNodeId(options.nodeId))
    throw new RangeError(`nodeId must be a node id, got ${options.nodeId}`);
  if (typeof options.clusterId !== "string" || options.clusterId === "") {
    throw new TypeError("clusterId must be a non-empty string");
  }
  if (options.dataDir === undefined && options.raftStorage === undefined) {
    throw new TypeError("dataDir or raftStorage is required");
  }
  const ids = new Set<number>();
  for (const m of options.members) {
    if (!isNodeId(m.nodeId) || ids.has(m.nodeId)) {
      throw new RangeError(`members must be distinct node ids, got ${m.nodeId}`);
    }
    ids.add(m.nodeId);
  }
  if (options.join !== true && !ids.has(options.nodeId)) {
    throw new RangeError("members must include nodeId (or set join to join an existing cluster)");
  }
  if (options.transport === undefined || options.forwarder === undefined) {
    requireCredentials(options);
  }
  const heartbeatMs = options.loops?.heartbeatIntervalMs;
  if (
    heartbeatMs !== undefined &&
    (!Number.isSafeInteger(heartbeatMs) || heartbeatMs < HEARTBEAT_INTERVAL_MS_MIN)
  ) {
    throw new RangeError(
      `loops.heartbeatIntervalMs must be an integer ≥ ${HEARTBEAT_INTERVAL_MS_MIN}`,
    );
  }
}
