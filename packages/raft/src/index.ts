/**
 * @hes/raft: Raft consensus. A pure, deterministic core (`RaftCore`: tick/step/propose in,
 * ready/advance out) and a driver (`RaftNode`) that persists to level, exchanges messages
 * over a `Transport` (in memory or gRPC) and applies committed entries to a `StateMachine`.
 */
export {
  applyConfChange,
  type ConfChangeRecord,
  confEquals,
  decodeConfChange,
  EMPTY_CONF,
  encodeConfChange,
  makeConfState,
  quorumOf,
} from "./core/conf.js";
export {
  describeEntry,
  describeMessage,
  describeReady,
  messageTypeName,
} from "./core/describe.js";
export { RaftCore, type RaftInitialState, type RaftOptions } from "./core/raft.js";
export {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  makeMessage,
  type ProposeResult,
  type RaftStatus,
  type ReadIndexResult,
  type ReadState,
  type Ready,
  type Refusal,
  type Role,
  type Snapshot,
  type SnapshotMeta,
  type SoftState,
} from "./core/types.js";
export {
  type AppliedEntry,
  type ProposalOutcome,
  RaftLoop,
  type RaftLoopOptions,
  refusalError,
  type StateMachine,
  type Waiter,
} from "./driver/raft-loop.js";
export {
  RaftNode,
  type RaftNodeOptions,
  type RaftNodeStatus,
  type RequestOptions,
} from "./driver/raft-node.js";
export * from "./limits.js";
export {
  decodeEntry,
  decodeHardState,
  decodeSnapshot,
  encodeEntry,
  encodeHardState,
  encodeSnapshot,
} from "./storage/codec.js";
export {
  INITIAL_HARD_STATE,
  LevelRaftStorage,
  type LevelRaftStorageOptions,
} from "./storage/level-storage.js";
export {
  mustSync,
  type RaftStorage,
  type RaftStorageWrite,
  type StoredRaftState,
} from "./storage/raft-storage.js";
export {
  GrpcRaftTransport,
  type GrpcRaftTransportOptions,
} from "./transport/grpc-transport.js";
export { MemoryNetwork } from "./transport/memory-transport.js";
export { createWireMessage, messageFromWire, messageToWire } from "./transport/wire.js";
