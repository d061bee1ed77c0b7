/**
 * Raft messages over gRPC (`RaftTransportService.Send`, client-streaming): one long-lived
 * stream per peer carries batches of messages. Best effort, as Raft assumes: a message to an
 * unreachable peer is dropped, the per-peer queue is bounded and drops on overflow, and a
 * failed stream is reopened with backoff when there is something to send.
 *
 *   const transport = new GrpcRaftTransport({ selfId: 1, clusterId, peers: { 2: "h2:7000" } });
 *   addService(server, RaftTransportService, transport.service());
 */

import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import {
  type Clock,
  HesError,
  isHesError,
  type Logger,
  type NodeId,
  nullLogger,
  systemClock,
  type Timer,
  type Transport,
  type TransportHandler,
} from "@hes/base";
import {
  type CreateClientOptions,
  createClient,
  RaftTransportService,
  type SendRequest,
  type ServiceClientOf,
  type ServiceImplementation,
} from "@hes/proto";
import type { Message } from "../core/types.js";
import {
  TRANSPORT_BATCH_MESSAGES_MAX,
  TRANSPORT_QUEUE_MESSAGES_MAX,
  TRANSPORT_RECONNECT_MS_MAX,
  TRANSPORT_RECONNECT_MS_MIN,
} from "../limits.js";
import { messageFromWire, messageToWire } from "./wire.js";

export interface GrpcRaftTransportOptions {
  readonly selfId: NodeId;
  /** Batches for another cluster are refused (a misrouted or misconfigured peer). */
  readonly clusterId: string;
  /** Peer id → "host:port". More can be added with `setPeer`. */
  readonly peers?: Readonly<Record<number, string>>;
  readonly logger?: Logger;
  readonly clock?: Clock;
  readonly client?: CreateClientOptions;
}

type Client = ServiceClientOf<typeof RaftTransportService>;
type RaftTransportMethods =
  typeof RaftTransportService extends GenService<infer M extends GenServiceMethods> ? M : never;

type SendRequestInit = Parameters<Client["send"]>[0] extends AsyncIterable<infer T> ? T : never;

/** One peer's outbound stream and queue. */
class Peer {
  queue: Message[] = [];
  client: Client | undefined;
  streaming = false;
  wake: (() => void) | undefined;
  backoffMs = TRANSPORT_RECONNECT_MS_MIN;
  retry: Timer | undefined;
  closed = false;

  constructor(
    readonly id: NodeId,
    public address: string,
  ) {}
}

export class GrpcRaftTransport implements Transport<Message> {
  private readonly selfId: NodeId;
  private readonly clusterId: string;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly clientOptions: CreateClientOptions;
  private readonly peers = new Map<NodeId, Peer>();
  private handler: TransportHandler<Message> | undefined;
  private closed = false;
  /** Counters for monitoring. */
  readonly stats = { sent: 0, received: 0, dropped: 0, streamFailures: 0 };

  constructor(options: GrpcRaftTransportOptions) {
    this.selfId = options.selfId;
    this.clusterId = options.clusterId;
    this.logger = (options.logger ?? nullLogger).child({ transport: "raft-grpc" });
    this.clock = options.clock ?? systemClock;
    this.clientOptions = options.client ?? {};
    for (const [id, address] of Object.entries(options.peers ?? {})) {
      this.setPeer(Number(id), address);
    }
  }

  /** Adds a peer or changes its address (an open stream to the old address is closed). */
  setPeer(id: NodeId, address: string): void {
    const existing = this.peers.get(id);
    if (existing !== undefined) {
      if (existing.address === address) return;
      this.removePeer(id);
    }
    this.peers.set(id, new Peer(id, address));
  }

  /** Forgets a peer: its queue is dropped and its stream closed. */
  removePeer(id: NodeId): void {
    const peer = this.peers.get(id);
    if (peer === undefined) return;
    this.peers.delete(id);
    this.shutPeer(peer);
  }

  send(to: NodeId, message: Message): void {
    const peer = this.peers.get(to);
    if (this.closed || peer === undefined) {
      this.stats.dropped++;
      return;
    }
    if (peer.queue.length >= TRANSPORT_QUEUE_MESSAGES_MAX) {
      this.stats.dropped++;
      return;
    }
    peer.queue.push(message);
    if (peer.streaming) peer.wake?.();
    else if (peer.retry === undefined) this.openStream(peer);
  }

  setHandler(handler: TransportHandler<Message>): void {
    this.handler = handler;
  }

  /** The server side: register with `addService(server, RaftTransportService, …)`. */
  service(): ServiceImplementation<RaftTransportMethods> {
    return {
      send: async (requests: AsyncIterable<SendRequest>) => {
        for await (const request of requests) this.receive(request);
        return {};
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const peer of this.peers.values()) this.shutPeer(peer);
    this.peers.clear();
  }

  private receive(request: SendRequest): void {
    const batch = request.batch;
    if (batch === undefined)
      throw new HesError("HES_PROTOCOL", "raft send request without a batch");
    if (batch.clusterId !== this.clusterId) {
      throw new HesError("HES_PERMISSION_DENIED", `raft batch for cluster ${batch.clusterId}`);
    }
    if (batch.to !== this.selfId) {
      throw new HesError(
        "HES_INVALID_ARGUMENT",
        `raft batch for member ${batch.to}, this is ${this.selfId}`,
      );
    }
    if (this.closed || this.handler === undefined) return;
    for (const wire of batch.messages) {
      const message = messageFromWire(wire);
      if (message.from !== batch.from || message.to !== this.selfId) {
        throw new HesError("HES_PROTOCOL", "raft message addressed differently from its batch");
      }
      this.stats.received++;
      this.handler(batch.from, message);
    }
  }

  private openStream(peer: Peer): void {
    if (this.closed || peer.closed) return;
    peer.client ??= createClient(RaftTransportService, peer.address, this.clientOptions);
    peer.streaming = true;
    peer.client.send(this.requests(peer)).then(
      () => this.streamEnded(peer, undefined),
      (error: unknown) => this.streamEnded(peer, error),
    );
  }

  /** The request stream: waits for messages, sends them in batches, until shut. */
  private async *requests(peer: Peer): AsyncIterable<SendRequestInit> {
    while (!peer.closed && !this.closed) {
      if (peer.queue.length === 0) {
        await new Promise<void>((resolve) => {
          peer.wake = resolve;
        });
        peer.wake = undefined;
        continue;
      }
      const messages = peer.queue.splice(0, TRANSPORT_BATCH_MESSAGES_MAX);
      this.stats.sent += messages.length;
      peer.backoffMs = TRANSPORT_RECONNECT_MS_MIN;
      yield {
        batch: {
          from: this.selfId,
          to: peer.id,
          clusterId: this.clusterId,
          messages: messages.map(messageToWire),
        },
      };
    }
  }

  private streamEnded(peer: Peer, error: unknown): void {
    peer.streaming = false;
    if (this.closed || peer.closed) return;
    this.stats.streamFailures++;
    // What was queued is stale by the time a new stream opens; Raft resends what matters.
    this.stats.dropped += peer.queue.length;
    peer.queue = [];
    if (error !== undefined && !isHesError(error, "HES_UNAVAILABLE")) {
      this.logger.warn({ peer: peer.id, err: error }, "raft stream to peer failed");
    }
    const delay = peer.backoffMs;
    peer.backoffMs = Math.min(peer.backoffMs * 2, TRANSPORT_RECONNECT_MS_MAX);
    peer.retry = this.clock.setTimer(delay, () => {
      peer.retry = undefined;
      if (peer.queue.length > 0) this.openStream(peer);
    });
  }

  private shutPeer(peer: Peer): void {
    peer.closed = true;
    peer.retry?.cancel();
    peer.retry = undefined;
    peer.queue = [];
    peer.wake?.();
    peer.client?.close();
    peer.client = undefined;
  }
}
