/**
 * What a scenario runs against: a set of node processes in the topology's namespaces serving
 * one volume over NBD. `HesCluster` (cluster.ts) is the real system through the `hes` CLI;
 * `NbdkitTarget` is a stand-in (one nbdkit process) so the scheduler, faults, workloads,
 * checker and reports run end to end today, and can be shown to fail on a system that loses
 * acknowledged writes.
 */
import { PROBE_OFFSET_BYTES } from "./limits.js";
import { type NbdAddress, NbdClient } from "./nbd-client.js";
import type { ManagedProcess } from "./process.js";
import type { Topology } from "./topology.js";

/**
 * A node's role, resolved when a fault needs it. "replica": neither the Raft leader nor the
 * exporter; "other": any node but the exporter (after a leader kill on three nodes, the new
 * leader may be the only node that is not the exporter, so no "replica" exists).
 */
export type Role = "leader" | "exporter" | "replica" | "other" | "any";

export interface Target {
  readonly kind: string;
  readonly topology: Topology;
  /** Whether the volume can be served by another node when its exporter dies. */
  readonly failsOver: boolean;
  /** Node numbers, 1-based. */
  readonly nodeNumbers: readonly number[];
  /** Starts every node and the export; resolves once the volume serves IO. */
  start(): Promise<void>;
  /** Where clients reach the volume now (may move after a failover). */
  exportAddress(): NbdAddress;
  /** The node's current process, undefined while it is down. */
  process(node: number): ManagedProcess | undefined;
  /** Starts a node again (after a kill or a wipe) with its same identity and data dir. */
  restart(node: number): Promise<void>;
  /** The node's data directory (disk faults, bit flips, wipes act on it while it is down). */
  dataDir(node: number): string;
  /** A node holding `role` now (undefined if none: e.g. no leader elected). */
  nodeWithRole(role: Role, exclude?: readonly number[]): Promise<number | undefined>;
  /** After faults heal: waits until the volume serves IO again; resolves with how long it took. */
  awaitService(timeoutMs: number): Promise<number>;
  /** After `node` died: makes the volume served by a live node (no-op if unaffected). */
  failover(deadNode: number): Promise<void>;
  /** Waits until a node just restarted is up (its store open), where the target can tell. */
  awaitNodeUp?(node: number, timeoutMs: number): Promise<void>;
  /** How long the last (re-)export took, from spawning it to its socket existing (hes only). */
  readonly lastExportMs?: number | undefined;
  /** Waits until every chunk has all its replicas in sync (hes only). */
  awaitFullRedundancy?(timeoutMs: number): Promise<void>;
  /** Stops everything (SIGTERM then SIGKILL) and keeps the logs. */
  stop(): Promise<void>;
  /** Files to copy into a failure report. */
  logFiles(): string[];
}

/**
 * One probe of service: connect, read block 0, write zeros with FUA to the probe block
 * (PROBE_OFFSET_BYTES: no workload uses it, and it shares the hot set's chunk). Resolves once
 * the write is acknowledged.
 */
export async function probeService(address: NbdAddress): Promise<true> {
  const client = await NbdClient.connect(address);
  try {
    await client.read(0, 4096);
    await client.write(PROBE_OFFSET_BYTES, new Uint8Array(4096), { fua: true });
    return true;
  } finally {
    client.destroy();
  }
}
