/**
 * @hes/replication: the Raft-ordered cluster map (nodes, volumes, chunk placement, leases,
 * epochs) and the placement policy (first placement, re-placement, rebalance, repair).
 *
 * Contracts pinned for the parts being built: `ChunkReplica` and `ClusterControl` (contracts.ts).
 * Not built yet: the chunk-replica service and its client, rebuild/catch-up data movement and
 * scrub (see README.md).
 */
export { decodeChunkTable, encodeChunkTable } from "./cluster-map/chunk-table.js";
export { type ApplyContext, ClusterMap } from "./cluster-map/cluster-map.js";
export {
  type CommandFields,
  type CommandKind,
  type CommandMessage,
  decodeCommand,
  type EncodeCommandOptions,
  encodeCommand,
  type PlainFields,
  stampCommand,
} from "./cluster-map/commands.js";
export { checkInvariants, type InvariantCounters } from "./cluster-map/invariants.js";
export {
  type Assignment,
  assignmentsOf,
  type MarkDownPolicyInput,
  nodesToMarkDown,
} from "./cluster-map/liveness.js";
export {
  type ChunkRecord,
  type ClusterConfig,
  type ClusterMapView,
  chunkCount,
  chunkKey,
  type DiskRecord,
  inSyncReplicas,
  isAlive,
  type NodeRecord,
  type NodeState,
  nodeCapacityBytes,
  nodeReportedUsedBytes,
  type ReplicaRecord,
  type ReplicaState,
  replicaOn,
  type VolumeRecord,
  type VolumeSnapshotRecord,
} from "./cluster-map/model.js";
export type { ApplyResult, ApplyValue, RejoinReport } from "./cluster-map/outcome.js";
export { clusterStatus, nodeInfo, volumeInfo } from "./cluster-map/status.js";
export {
  type ChunkReplica,
  type ClusterControl,
  type ClusterProposal,
  type CopyRangeSide,
  epochOfSeq,
  type ReplicaCallOptions,
  type ReplicaDirectory,
  type ReplicaImportOptions,
  type ReplicaReadOptions,
  type ReplicaWriteStamp,
  SEQ_COUNTER_BITS,
  SEQ_EPOCH_MAX,
  SEQ_PER_EPOCH_MAX,
  volumeSeq,
} from "./contracts.js";
export * from "./dataplane/limits.js";
export { checkEpoch, LocalReplica } from "./dataplane/local-replica.js";
export {
  Mover,
  type MoverChunkResult,
  type MoverOptions,
  type MoverStats,
  subtractRuns,
} from "./dataplane/mover.js";
export { RateLimiter } from "./dataplane/rate-limiter.js";
export {
  RemoteReplica,
  type RemoteReplicaOptions,
  type RemoteReplicaStats,
} from "./dataplane/remote-replica.js";
export {
  parseDataAddress,
  ReplicaPool,
  type ReplicaPoolOptions,
} from "./dataplane/replica-pool.js";
export { Scrubber, type ScrubberOptions, type ScrubStats } from "./dataplane/scrubber.js";
export { ChunkReplicaService, type ChunkReplicaServiceOptions } from "./dataplane/service.js";
export { ReplicaFlag, ReplicaOp, type ReplicaOpName } from "./dataplane/wire.js";
export * from "./limits.js";
export {
  type ChooseReplicasRequest,
  type ChooseReplicasResult,
  canHost,
  chooseReplicas,
  placementSeed,
} from "./placement/choose-replicas.js";
export {
  type PlannedMove,
  planRebalance,
  type RebalanceOptions,
  utilisationOf,
} from "./placement/rebalance.js";
export { planRepairs, type RepairAction } from "./placement/repair.js";
export {
  type AdminCallOptions,
  AdminClient,
  type ClusterStatusPlain,
  type NodeInfoPlain,
  type Plain,
  type SnapshotInfoPlain,
  toPlain,
  type VolumeInfoPlain,
} from "./runtime/admin-client.js";
export { type AdminHost, type AdminRawClient, adminService } from "./runtime/admin-service.js";
export {
  ClusterMember,
  type ClusterMemberOptions,
  IDEMPOTENT_KINDS,
  type MemberAddress,
  type MemberStatus,
} from "./runtime/cluster-member.js";
export { DirectCluster } from "./runtime/direct-control.js";
export {
  clusterControlService,
  type ForwardReply,
  type ForwardRequest,
  type ForwardTarget,
  GrpcForwarder,
  type GrpcForwarderOptions,
  MemoryForwarding,
  type ProposalForwarder,
} from "./runtime/forwarding.js";
export * from "./runtime/limits.js";
export {
  type DiskUsageReport,
  type LoopMember,
  type LoopOptions,
  MemberLoops,
  type SelfDescription,
  type SelfDisk,
} from "./runtime/loops.js";
export { type MapApplied, MapMachine } from "./runtime/map-machine.js";
