/**
 * {@link ReplicaDirectory} of one node: its own replica is the in-process {@link LocalReplica};
 * every other node's is a pooled {@link RemoteReplica} (one connection per peer, reused by all
 * volumes), resolved from the cluster map's `dataAddress`. When a node's address changes in
 * the map the old client is closed and a new one made.
 */
import type tls from "node:tls";
import { checkInteger, HesError, type Logger, type NodeId } from "@hes/base";
import type { ExtentStore } from "@hes/extent-store";
import type { FrameAddress } from "@hes/proto";
import type { ClusterMapView } from "../cluster-map/model.js";
import type { ChunkReplica, ReplicaDirectory } from "../contracts.js";
import { LocalReplica } from "./local-replica.js";
import { RemoteReplica, type RemoteReplicaOptions } from "./remote-replica.js";

/** Options of {@link ReplicaPool}. */
export interface ReplicaPoolOptions {
  readonly nodeId: NodeId;
  /** This node's store (its replica is called directly). */
  readonly store: ExtentStore;
  /** The cluster map as this node sees it (addresses of the peers). */
  readonly view: () => ClusterMapView;
  /** Client TLS (mutual TLS between hosts); plaintext when absent. */
  readonly tls?: tls.ConnectionOptions;
  /** Deadlines and in-flight bound of every remote client. */
  readonly client?: Pick<
    RemoteReplicaOptions,
    "ioDeadlineMs" | "controlDeadlineMs" | "copyDeadlineMs" | "inflightMax"
  >;
  readonly logger?: Logger;
}

/** Parses "host:port" (IPv6 as "[::1]:port") or "unix:/path" into a frame address. */
export function parseDataAddress(address: string): FrameAddress {
  if (address.startsWith("unix:")) return { path: address.slice(5) };
  const colon = address.lastIndexOf(":");
  if (colon <= 0) throw new RangeError(`data address "${address}" is not host:port`);
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  const port = Number(address.slice(colon + 1));
  checkInteger(port, "port", { min: 1, max: 65_535 });
  return { host, port };
}

/** Replicas by node, for one node of the cluster. */
export class ReplicaPool implements ReplicaDirectory {
  readonly local: LocalReplica;
  private readonly remotes = new Map<NodeId, { address: string; replica: RemoteReplica }>();
  private closed = false;

  constructor(private readonly options: ReplicaPoolOptions) {
    this.local = new LocalReplica(options.nodeId, options.store);
  }

  /**
   * The replica on `nodeId`. HES_NOT_FOUND when the map does not know the node (or it has no
   * data address); HES_CLOSED after close.
   */
  replica(nodeId: NodeId): ChunkReplica {
    if (this.closed) throw new HesError("HES_CLOSED", "replica pool is closed");
    if (nodeId === this.options.nodeId) return this.local;
    const node = this.options.view().node(nodeId);
    if (node === undefined || node.dataAddress === "") {
      throw new HesError("HES_NOT_FOUND", `node ${nodeId} has no data address in the map`);
    }
    const known = this.remotes.get(nodeId);
    if (known !== undefined && known.address === node.dataAddress) return known.replica;
    if (known !== undefined) void known.replica.close();
    const replica = new RemoteReplica({
      nodeId,
      address: parseDataAddress(node.dataAddress),
      chunkSizeBytes: this.options.store.chunkSizeBytes,
      ...this.options.client,
      ...(this.options.tls === undefined ? {} : { tls: this.options.tls }),
      ...(this.options.logger === undefined ? {} : { logger: this.options.logger }),
    });
    this.remotes.set(nodeId, { address: node.dataAddress, replica });
    return replica;
  }

  /** The remote replicas made so far (stats, tests). */
  remoteReplicas(): RemoteReplica[] {
    return [...this.remotes.values()].map((entry) => entry.replica);
  }

  /** Closes every peer connection (the local store is the caller's). */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.remotes.values()];
    this.remotes.clear();
    await Promise.all(all.map((entry) => entry.replica.close()));
  }
}
