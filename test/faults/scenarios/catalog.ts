/**
 * The scenarios of the quick tier (CI, ≤ 15 minutes together) and the soak. Each names the
 * faults its seeded schedule draws from, the cluster size, and its rounds.
 */
import { FAULTS, type Fault, faultNamed } from "../lib/faults.js";

export interface ScenarioSpec {
  readonly name: string;
  readonly nodes: number;
  readonly rounds: number;
  readonly faults: readonly Fault[];
  /** Nodes killed after the final rebuild, before the final reads (0 = skip that proof). */
  readonly killAfterRebuild: number;
}

const named = (names: string[]) => names.map(faultNamed);

export const QUICK_SCENARIOS: readonly ScenarioSpec[] = [
  {
    name: "crashes",
    nodes: 3,
    rounds: 10,
    faults: named([
      ...["kill-leader", "kill-replica", "kill-exporter", "kill-two", "kill-all"],
      ...["pause-leader", "pause-replica"],
    ]),
    killAfterRebuild: 0,
  },
  {
    name: "partitions",
    nodes: 5,
    rounds: 8,
    faults: named([
      ...["partition-minority", "partition-leader-minority", "partition-one-way"],
      ...["partition-bridge", "partition-flapping", "loss-20pct"],
    ]),
    // Five nodes, replicas 3: two original nodes down still leaves a Raft majority.
    killAfterRebuild: 2,
  },
  {
    name: "disks",
    nodes: 3,
    rounds: 10,
    faults: named([
      ...["disk-eio-fdatasync", "disk-eio-write", "disk-enospc-write", "disk-slow-fdatasync"],
      ...["disk-full", "bit-flips", "stale-contents", "wipe-replace"],
    ]),
    killAfterRebuild: 0,
  },
];

/** The soak draws from every fault on five nodes. */
export function soakScenario(rounds: number): ScenarioSpec {
  return { name: "soak", nodes: 5, rounds, faults: FAULTS, killAfterRebuild: 2 };
}
