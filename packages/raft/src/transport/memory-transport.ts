/**
 * Transport between members in one process, for tests and examples: messages are handed
 * over on a later turn of the event loop (never re-entrantly), per-peer queues are bounded
 * and drop on overflow, and links can be cut to make partitions.
 */
import type { NodeId, Transport, TransportHandler } from "@hes/base";
import type { Message } from "../core/types.js";
import { TRANSPORT_QUEUE_MESSAGES_MAX } from "../limits.js";

/** A set of members that can reach each other in memory. */
export class MemoryNetwork {
  private readonly handlers = new Map<NodeId, TransportHandler<Message>>();
  private readonly cut = new Set<string>();
  private readonly queues = new Map<string, Message[]>();
  private flushScheduled = false;
  /** Messages dropped because a queue was full or a link was cut. */
  dropped = 0;

  /** The transport of member `id` (one per member). */
  transport(id: NodeId): Transport<Message> {
    let closed = false;
    return {
      send: (to, message) => {
        if (!closed) this.enqueue(id, to, message);
      },
      setHandler: (handler) => {
        this.handlers.set(id, handler);
      },
      close: async () => {
        closed = true;
        this.handlers.delete(id);
      },
    };
  }

  /** Cuts the link from `from` to `to` (one way). */
  cutLink(from: NodeId, to: NodeId): void {
    this.cut.add(`${from}>${to}`);
  }

  /** Cuts every link to and from `id`. */
  isolate(id: NodeId, others: readonly NodeId[]): void {
    for (const other of others) {
      this.cutLink(id, other);
      this.cutLink(other, id);
    }
  }

  /** Restores every link. */
  heal(): void {
    this.cut.clear();
  }

  private enqueue(from: NodeId, to: NodeId, message: Message): void {
    const key = `${from}>${to}`;
    if (this.cut.has(key)) {
      this.dropped++;
      return;
    }
    let queue = this.queues.get(key);
    if (queue === undefined) {
      queue = [];
      this.queues.set(key, queue);
    }
    if (queue.length >= TRANSPORT_QUEUE_MESSAGES_MAX) {
      this.dropped++;
      return;
    }
    queue.push(message);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    const queues = [...this.queues];
    this.queues.clear();
    for (const [key, messages] of queues) {
      const [from, to] = key.split(">").map(Number) as [NodeId, NodeId];
      const handler = this.handlers.get(to);
      if (handler === undefined || this.cut.has(key)) {
        this.dropped += messages.length;
        continue;
      }
      for (const message of messages) handler(from, message);
    }
  }
}
