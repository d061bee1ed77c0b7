/**
 * How a follower hands a proposal to the leader: `ClusterControlService.Propose` over gRPC
 * between hosts, or an in-memory hop between members of one process (tests). Either way the
 * leader answers with the committed entry's (index, term) or a HesError; the map's outcome
 * is computed by the follower itself when it applies that index (see map-machine.ts).
 */
import type { ChannelCredentials } from "@grpc/grpc-js";
import { HesError, type NodeId } from "@hes/base";
import {
  ClusterControlService,
  createClient,
  type ServiceClientOf,
  type ServiceImplementation,
} from "@hes/proto";

/** A forwarded proposal. */
export interface ForwardRequest {
  readonly clusterId: string;
  readonly fromNodeId: NodeId;
  /** Encoded, unstamped ClusterCommand. */
  readonly command: Uint8Array;
}

/** Where the leader put it: committed and applied on the leader. */
export interface ForwardReply {
  readonly index: number;
  readonly term: number;
}

/** The sending side, owned by one member. */
export interface ProposalForwarder {
  propose(
    leaderId: NodeId,
    request: ForwardRequest,
    options: { readonly signal: AbortSignal; readonly deadlineMs: number },
  ): Promise<ForwardReply>;
  close(): void;
}

/** The receiving side: a member's leader-side handler. */
export interface ForwardTarget {
  acceptForwarded(request: ForwardRequest, signal: AbortSignal): Promise<ForwardReply>;
}

/**
 * Members of one process reaching each other without sockets. Links can be cut (the call
 * fails with HES_UNAVAILABLE before reaching the leader, like a refused connection).
 */
export class MemoryForwarding {
  private readonly targets = new Map<NodeId, ForwardTarget>();
  private readonly cut = new Set<string>();

  register(id: NodeId, target: ForwardTarget): void {
    this.targets.set(id, target);
  }

  unregister(id: NodeId, target: ForwardTarget): void {
    if (this.targets.get(id) === target) this.targets.delete(id);
  }

  /** Cuts forwarding both ways between `id` and each of `others`. */
  isolate(id: NodeId, others: readonly NodeId[]): void {
    for (const other of others) {
      this.cut.add(`${id}>${other}`);
      this.cut.add(`${other}>${id}`);
    }
  }

  heal(): void {
    this.cut.clear();
  }

  forwarder(selfId: NodeId): ProposalForwarder {
    return {
      propose: async (leaderId, request, options) => {
        await new Promise<void>((resolve) => setImmediate(resolve));
        const target = this.targets.get(leaderId);
        if (target === undefined || this.cut.has(`${selfId}>${leaderId}`)) {
          throw new HesError("HES_UNAVAILABLE", `member ${leaderId} is unreachable`);
        }
        // A copy: the wire never shares buffers between sender and receiver.
        const reply = await target.acceptForwarded(
          { ...request, command: request.command.slice() },
          options.signal,
        );
        if (this.cut.has(`${leaderId}>${selfId}`)) {
          throw new HesError("HES_UNAVAILABLE", `lost the answer of member ${leaderId}`);
        }
        return reply;
      },
      close: () => {},
    };
  }
}

/** Options of {@link GrpcForwarder}. */
export interface GrpcForwarderOptions {
  /** The control address ("host:port") of a member, or undefined when unknown. */
  readonly addressOf: (nodeId: NodeId) => string | undefined;
  readonly credentials: ChannelCredentials;
}

type ControlClient = ServiceClientOf<typeof ClusterControlService>;

/** Forwarding over `ClusterControlService.Propose`, one cached channel per address. */
export class GrpcForwarder implements ProposalForwarder {
  private readonly clients = new Map<string, ControlClient>();
  private closed = false;

  constructor(private readonly options: GrpcForwarderOptions) {}

  async propose(
    leaderId: NodeId,
    request: ForwardRequest,
    options: { readonly signal: AbortSignal; readonly deadlineMs: number },
  ): Promise<ForwardReply> {
    if (this.closed) throw new HesError("HES_CLOSED", "forwarder closed");
    const address = this.options.addressOf(leaderId);
    if (address === undefined) {
      throw new HesError("HES_UNAVAILABLE", `no control address known for member ${leaderId}`);
    }
    let client = this.clients.get(address);
    if (client === undefined) {
      client = createClient(ClusterControlService, address, {
        credentials: this.options.credentials,
      });
      this.clients.set(address, client);
    }
    const reply = await client.propose(
      { clusterId: request.clusterId, fromNodeId: request.fromNodeId, command: request.command },
      { signal: options.signal, deadlineMs: Math.max(1, options.deadlineMs) },
    );
    return { index: Number(reply.index), term: Number(reply.term) };
  }

  close(): void {
    this.closed = true;
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}

/** The gRPC service a member registers so that followers can forward to it. */
export function clusterControlService(
  target: ForwardTarget,
): ServiceImplementation<(typeof ClusterControlService)["method"]> {
  return {
    propose: async (request, context) => {
      if (request.fromNodeId === 0) {
        throw new HesError("HES_INVALID_ARGUMENT", "from_node_id must name a member");
      }
      const reply = await target.acceptForwarded(
        {
          clusterId: request.clusterId,
          fromNodeId: request.fromNodeId,
          command: request.command,
        },
        context.signal,
      );
      return { index: BigInt(reply.index), term: BigInt(reply.term) };
    },
  };
}
