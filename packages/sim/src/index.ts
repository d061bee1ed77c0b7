/**
 * @hes/sim: the deterministic simulator (private). `Scheduler` is the one queue of timed
 * events; `SimClock` and `SimNetwork` stand in for time and the network, `SimDisk` for
 * disks; the Raft runner
 * drives the production Raft core and driver under faults and checks them.
 */
export {
  checkLinearizable,
  type LinearizabilityResult,
  type RegisterOp,
} from "./linearizability.js";
export { entryHash, RaftChecker } from "./raft/raft-checker.js";
export {
  LIVENESS_COMMIT_TICKS,
  LIVENESS_LEADER_TICKS,
  type RaftSimOptions,
  type RaftSimResult,
  runRaftSim,
  type UnsafeMode,
} from "./raft/raft-sim.js";
export { RAFT_REGRESSION_SEEDS } from "./raft/regressions.js";
export { SimKv, SimMember, type SimMemberOptions } from "./raft/sim-member.js";
export {
  type DiskLatency,
  SimRaftStorage,
  type StorageObserver,
} from "./raft/sim-raft-storage.js";
export { type ScheduledEvent, Scheduler } from "./scheduler.js";
export { SimClock } from "./sim-clock.js";
export {
  type LatencyRangeMs,
  SimDisk,
  type SimDiskCounters,
  type SimDiskFaults,
  type SimDiskOptions,
  SimMedium,
} from "./sim-disk.js";
export {
  CALM_NETWORK,
  type NetworkFaults,
  SIM_LINK_INFLIGHT_MAX,
  SimNetwork,
} from "./sim-network.js";
