/**
 * A {@link ClusterControl} over a map applied directly in this process, with no Raft: each
 * proposal is stamped with the injected clock, applied at the next index, and answered. It is
 * the real state machine (same validation, same outcomes), so code above the map (volumes,
 * movers, the host in single-node development) can be tested without a consensus group. The
 * replicated runtime implements the same contract over Raft.
 */
import { type Clock, HesError, type NodeId, systemClock } from "@hes/base";
import { ClusterMap } from "../cluster-map/cluster-map.js";
import { type CommandKind, encodeCommand } from "../cluster-map/commands.js";
import type { ClusterMapView } from "../cluster-map/model.js";
import type { ApplyValue } from "../cluster-map/outcome.js";
import type { ClusterControl, ClusterProposal, ReplicaCallOptions } from "../contracts.js";

/** One map shared by every node handle made from it (see {@link DirectCluster.control}). */
export class DirectCluster {
  readonly map = new ClusterMap();
  private index = 0;
  private readonly listeners = new Set<(view: ClusterMapView) => void>();

  constructor(private readonly clock: Clock = systemClock) {}

  /** Applies one command now; rejects with the map's error when it is refused. */
  apply<K extends CommandKind>(proposal: ClusterProposal<K>): ApplyValue {
    const timeMs = Math.max(1, Math.floor(this.clock.wallMs()));
    const bytes = encodeCommand(proposal.kind, proposal.fields, { timeMs });
    this.index += 1;
    const result = this.map.apply(bytes, { index: this.index, term: 1 });
    if (!result.ok) throw result.error;
    for (const listener of this.listeners) listener(this.map);
    return result.value;
  }

  /** A node's handle on this map. */
  control(nodeId: NodeId): ClusterControl {
    return {
      nodeId,
      view: () => this.map,
      propose: async <K extends CommandKind>(
        proposal: ClusterProposal<K>,
        options: ReplicaCallOptions = {},
      ): Promise<ApplyValue> => {
        if (options.signal?.aborted === true) {
          throw new HesError("HES_ABORTED", `proposal ${proposal.kind} was cancelled`);
        }
        return this.apply(proposal);
      },
      sync: async () => this.map,
      subscribe: (listener) => {
        this.listeners.add(listener);
        return () => this.listeners.delete(listener);
      },
    };
  }
}
