/**
 * @hes/sim: the deterministic simulator (private): SimClock, SimNetwork, SimDisk, seed runner
 * and checkers. Built so far: SimDisk (see README.md).
 */
export {
  type LatencyRangeMs,
  SimDisk,
  type SimDiskCounters,
  type SimDiskFaults,
  type SimDiskOptions,
  SimMedium,
} from "./sim-disk.js";
