/**
 * Message transport between cluster members, injected so that consensus runs unchanged over
 * gRPC in production, in memory in tests and over `SimNetwork` in the simulator.
 */

/** A cluster member's id: a positive integer below 2^32, assigned when the node joins. */
export type NodeId = number;

/** Largest node id (ids travel as uint32). */
export const NODE_ID_MAX = 0xffff_ffff;

/** True when `value` is a valid {@link NodeId}. */
export function isNodeId(value: unknown): value is NodeId {
  return typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= NODE_ID_MAX;
}

/** Receives messages for one member. */
export type TransportHandler<Message> = (from: NodeId, message: Message) => void;

/**
 * Best-effort, unordered delivery, as Raft assumes: a message may be dropped, delayed,
 * duplicated or reordered, and `send` never throws for an unreachable peer. Implementations
 * bound what they queue per peer and drop beyond it (Raft retransmits).
 */
export interface Transport<Message> {
  /** Queues `message` for `to`. Returns at once; delivery is not confirmed. */
  send(to: NodeId, message: Message): void;
  /** Sets the one handler for inbound messages; replaces any earlier one. */
  setHandler(handler: TransportHandler<Message>): void;
  /** Stops sending and receiving and releases connections. Idempotent. */
  close(): Promise<void>;
}
