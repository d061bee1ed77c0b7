/**
 * @hes/raft: Raft consensus: a pure, deterministic core (tick/step/propose in, ready/advance out) and a driver that persists to level and sends over gRPC.
 *
 * Not built yet: this package exports nothing until its issue lands (see README.md).
 */
export {};
