/**
 * The control plane's background work, one pass at a time on every member (never two passes
 * at once, so a slow pass delays the next instead of piling up):
 *
 * - every member: register itself (AddNode, or UpdateNode when its addresses or disks
 *   changed) until the map holds it, then heartbeat (NodeHeartbeat with disk usage from an
 *   injected callback). A heartbeat that brings a down node back carries a RejoinReport,
 *   handed to `onRejoin` (the host stops serving revoked volumes and catches replicas up).
 * - the leader only: InitCluster while the map has none; liveness (nodesToMarkDown →
 *   MarkNodeDown, a few per pass); repairs (planRepairs → ReplaceReplica / FinishMove /
 *   CancelMove) and rebalance (planRebalance → StartMove) at their own, slower cadences.
 *
 * Every proposal goes through the member's propose (forwarded when not the leader) with a
 * short deadline; a refused one is logged and retried by a later pass if still relevant.
 */
import { type Clock, isHesError, type Logger, type NodeId } from "@hes/base";
import type { CommandFields, CommandKind } from "../cluster-map/commands.js";
import { nodesToMarkDown } from "../cluster-map/liveness.js";
import type { ClusterMapView, NodeRecord } from "../cluster-map/model.js";
import type { ApplyValue, RejoinReport } from "../cluster-map/outcome.js";
import type { ClusterProposal } from "../contracts.js";
import { planRebalance } from "../placement/rebalance.js";
import { planRepairs } from "../placement/repair.js";
import {
  HEARTBEAT_INTERVAL_MS_DEFAULT,
  HEARTBEAT_INTERVAL_MS_MIN,
  MARK_DOWN_PER_PASS_MAX,
  REBALANCE_INTERVAL_MS_DEFAULT,
  REBALANCE_MOVES_PER_PASS_MAX,
  REGISTER_RETRY_MS,
  REPAIR_ACTIONS_PER_PASS_MAX,
  REPAIR_INTERVAL_MS_DEFAULT,
} from "./limits.js";

/** One disk as this node registers it. */
export interface SelfDisk {
  readonly diskId: string;
  readonly path: string;
  readonly capacityBytes: number;
}

/** What a node registers about itself. */
export interface SelfDescription {
  readonly controlAddress: string;
  readonly dataAddress: string;
  readonly failureDomain: string;
  readonly disks: readonly SelfDisk[];
}

/** Current usage of one disk, for heartbeats. */
export interface DiskUsageReport {
  readonly diskId: string;
  readonly usedBytes: number;
  readonly failed?: boolean;
}

/** Cadences and inputs of the loops. */
export interface LoopOptions {
  /** False: no background work at all (tests that drive the map by hand). Default true. */
  readonly enabled?: boolean;
  /** Default 1 s, at least 100 ms. */
  readonly heartbeatIntervalMs?: number;
  /** Default 5 s. */
  readonly repairIntervalMs?: number;
  /** Default 30 s. 0 turns rebalance off. */
  readonly rebalanceIntervalMs?: number;
  /** Grace period InitCluster sets (0 = the map's default, 30 s); later: setConfig. */
  readonly initialGracePeriodMs?: number;
  /** Disk usage for heartbeats; default: none reported. */
  readonly diskUsage?: () => readonly DiskUsageReport[];
}

/** What the loops need of their member. */
export interface LoopMember {
  readonly nodeId: NodeId;
  readonly clusterId: string;
  view(): ClusterMapView;
  isLeader(): boolean;
  propose<K extends CommandKind>(
    proposal: ClusterProposal<K>,
    options?: { readonly signal?: AbortSignal; readonly deadlineMs?: number },
  ): Promise<ApplyValue>;
  sync(options?: { readonly signal?: AbortSignal }): Promise<ClusterMapView>;
}

/** Deadline of one loop proposal: a pass must not hang behind an unreachable leader. */
const LOOP_PROPOSE_DEADLINE_MS = 5_000;

export class MemberLoops {
  private readonly member: LoopMember;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly options: LoopOptions;
  private readonly signal: AbortSignal;
  private readonly onRejoin: ((report: RejoinReport) => void) | undefined;
  private readonly heartbeatMs: number;
  private running: Promise<void> = Promise.resolve();
  private registered = false;
  private leaderSinceMs: number | undefined;
  private lastRepairMs = Number.NEGATIVE_INFINITY;
  private lastRebalanceMs = Number.NEGATIVE_INFINITY;
  /** Passes completed; tests wait on it. */
  passes = 0;

  constructor(input: {
    member: LoopMember;
    self: SelfDescription;
    clock: Clock;
    logger: Logger;
    options: LoopOptions;
    onRejoin?: (report: RejoinReport) => void;
    signal: AbortSignal;
  }) {
    this.member = input.member;
    this.self = input.self;
    this.clock = input.clock;
    this.logger = input.logger;
    this.options = input.options;
    this.signal = input.signal;
    this.onRejoin = input.onRejoin;
    const heartbeat = input.options.heartbeatIntervalMs ?? HEARTBEAT_INTERVAL_MS_DEFAULT;
    if (!Number.isSafeInteger(heartbeat) || heartbeat < HEARTBEAT_INTERVAL_MS_MIN) {
      throw new RangeError(`heartbeatIntervalMs must be an integer ≥ ${HEARTBEAT_INTERVAL_MS_MIN}`);
    }
    this.heartbeatMs = heartbeat;
  }

  private readonly self: SelfDescription;

  start(): void {
    if (this.options.enabled === false) return;
    this.running = this.run();
  }

  /** Resolves once the loop has ended (after the member's signal fired). */
  stopped(): Promise<void> {
    return this.running;
  }

  private async run(): Promise<void> {
    while (!this.signal.aborted) {
      try {
        await this.pass();
      } catch (error) {
        if (!this.signal.aborted) this.logger.warn({ err: error }, "control-plane pass failed");
      }
      this.passes++;
      const waitMs = this.registered
        ? this.heartbeatMs
        : Math.min(this.heartbeatMs, REGISTER_RETRY_MS);
      try {
        await this.clock.sleep(waitMs, this.signal);
      } catch {
        return;
      }
    }
  }

  private async pass(): Promise<void> {
    const leader = this.member.isLeader();
    if (!leader) this.leaderSinceMs = undefined;
    else this.leaderSinceMs ??= this.clock.wallMs();
    let view = this.member.view();
    if (leader && view.clusterId === "") {
      const gracePeriodMs = this.options.initialGracePeriodMs ?? 0;
      await this.tryPropose("initCluster", { clusterId: this.member.clusterId, gracePeriodMs });
      view = this.member.view();
    }
    if (view.clusterId === "") return;
    if (view.clusterId !== this.member.clusterId) {
      this.logger.error(
        { mapClusterId: view.clusterId, clusterId: this.member.clusterId },
        "the map belongs to another cluster: this member stays out of it",
      );
      return;
    }
    if (!this.registered) {
      view = await this.member.sync({ signal: this.signal });
      this.registered = await this.register(view.node(this.member.nodeId));
      if (!this.registered) return;
    }
    await this.heartbeat();
    if (leader && this.member.isLeader()) await this.leaderDuties();
  }

  /** Proposes AddNode / UpdateNode as needed; true once the map holds this node as it is. */
  private async register(node: NodeRecord | undefined): Promise<boolean> {
    const self = this.self;
    const fields = {
      nodeId: this.member.nodeId,
      controlAddress: self.controlAddress,
      dataAddress: self.dataAddress,
      failureDomain: self.failureDomain,
      disks: self.disks.map((d) => ({
        diskId: d.diskId,
        path: d.path,
        capacityBytes: d.capacityBytes,
      })),
    };
    if (node === undefined) {
      return (await this.tryPropose("addNode", fields)) !== undefined;
    }
    if (node.state === "removed") {
      this.logger.error({ nodeId: node.nodeId }, "this node was removed from the cluster map");
      return false;
    }
    if (sameRegistration(node, self)) return true;
    return (await this.tryPropose("updateNode", fields)) !== undefined;
  }

  private async heartbeat(): Promise<void> {
    const disks = (this.options.diskUsage?.() ?? []).map((d) => ({
      diskId: d.diskId,
      usedBytes: d.usedBytes,
      failed: d.failed === true,
    }));
    const value = await this.tryPropose("nodeHeartbeat", { nodeId: this.member.nodeId, disks });
    const rejoin = value?.rejoin;
    if (rejoin === undefined) return;
    this.logger.warn({ ...rejoin }, "this node was marked down and is back: catching up");
    try {
      this.onRejoin?.(rejoin);
    } catch (error) {
      this.logger.error({ err: error }, "onRejoin threw");
    }
  }

  private async leaderDuties(): Promise<void> {
    const view = this.member.view();
    const nowMs = this.clock.wallMs();
    const leaderSinceMs = this.leaderSinceMs ?? nowMs;
    const silent = nodesToMarkDown(view, { nowMs, leaderSinceMs }).slice(0, MARK_DOWN_PER_PASS_MAX);
    for (const nodeId of silent) {
      const value = await this.tryPropose("markNodeDown", { nodeId });
      if (value !== undefined) this.logger.warn({ nodeId, ...value }, "node marked down");
    }
    const monotonicMs = this.clock.nowMs();
    if (
      monotonicMs - this.lastRepairMs >=
      (this.options.repairIntervalMs ?? REPAIR_INTERVAL_MS_DEFAULT)
    ) {
      this.lastRepairMs = monotonicMs;
      const actions = planRepairs(this.member.view(), { maxActions: REPAIR_ACTIONS_PER_PASS_MAX });
      for (const action of actions) {
        if (this.signal.aborted || !this.member.isLeader()) return;
        const { volumeId, chunkIndex } = action;
        if (action.kind === "replaceReplica") {
          await this.tryPropose("replaceReplica", {
            volumeId,
            chunkIndex,
            oldNodeId: action.oldNodeId,
          });
        } else {
          await this.tryPropose(action.kind, { volumeId, chunkIndex });
        }
      }
    }
    const rebalanceMs = this.options.rebalanceIntervalMs ?? REBALANCE_INTERVAL_MS_DEFAULT;
    if (rebalanceMs > 0 && monotonicMs - this.lastRebalanceMs >= rebalanceMs) {
      this.lastRebalanceMs = monotonicMs;
      const moves = planRebalance(this.member.view(), { movesMax: REBALANCE_MOVES_PER_PASS_MAX });
      for (const move of moves) {
        if (this.signal.aborted || !this.member.isLeader()) return;
        await this.tryPropose("startMove", {
          volumeId: move.volumeId,
          chunkIndex: move.chunkIndex,
          fromNodeId: move.fromNodeId,
          toNodeId: move.toNodeId,
        });
      }
    }
  }

  /** Proposes; a refusal or failure is logged and yields undefined (a later pass retries). */
  private async tryPropose<K extends CommandKind>(
    kind: K,
    fields: CommandFields<K>,
  ): Promise<ApplyValue | undefined> {
    try {
      return await this.member.propose(
        { kind, fields },
        { signal: this.signal, deadlineMs: LOOP_PROPOSE_DEADLINE_MS },
      );
    } catch (error) {
      if (this.signal.aborted) throw error;
      const level = isHesError(error, "HES_ALREADY_EXISTS") ? "debug" : "info";
      this.logger[level]({ kind, err: error }, "control-plane proposal not applied");
      return undefined;
    }
  }
}

function sameRegistration(node: NodeRecord, self: SelfDescription): boolean {
  if (
    node.controlAddress !== self.controlAddress ||
    node.dataAddress !== self.dataAddress ||
    node.failureDomain !== self.failureDomain ||
    node.disks.length !== self.disks.length
  ) {
    return false;
  }
  return self.disks.every((d) =>
    node.disks.some(
      (n) => n.diskId === d.diskId && n.path === d.path && n.capacityBytes === d.capacityBytes,
    ),
  );
}
