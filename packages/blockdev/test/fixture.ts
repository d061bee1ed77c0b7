/**
 * Test cluster in one process: N nodes, each a real ExtentStore on a real file wrapped in a
 * LocalReplica, behind a fault-injecting wrapper (fail, hang), one DirectCluster (the real map,
 * no Raft), and a VolumeManager per node.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HesError, type NodeId } from "@hes/base";
import { ExtentStore, FileDisk } from "@hes/extent-store";
import {
  type ChunkReplica,
  type ClusterControl,
  DirectCluster,
  LocalReplica,
  type ReplicaDirectory,
} from "@hes/replication";
import { VolumeManager } from "../src/index.js";

export const MiB = 2 ** 20;

/** A replica's injected behaviour: healthy, failing every call, or never answering. */
export type Fault = "ok" | "fail" | "hang";

export interface TestNode {
  readonly nodeId: NodeId;
  readonly store: ExtentStore;
  readonly replica: LocalReplica;
  fault: Fault;
  /** Calls that hit a fault (so a test can see the fault was exercised). */
  faultedCalls: number;
}

export interface TestCluster {
  readonly root: string;
  readonly cluster: DirectCluster;
  readonly nodes: TestNode[];
  /** Every node's replica behind its fault injection. */
  readonly directory: ReplicaDirectory;
  /** The manager of node `nodeId` (its replica is the local one). */
  manager(nodeId: NodeId, options?: { replicaDeadlineMs?: number }): VolumeManager;
  close(): Promise<void>;
}

function faulty(node: TestNode): ChunkReplica {
  return new Proxy(node.replica, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        if (node.fault === "ok") return value.apply(target, args);
        node.faultedCalls++;
        if (node.fault === "hang") return new Promise(() => undefined);
        return Promise.reject(new HesError("HES_DISK_FAILED", `node ${node.nodeId}: injected`));
      };
    },
  });
}

export async function startCluster(
  count: number,
  options: { readonly chunkSizeBytes?: number; readonly diskBytes?: number } = {},
): Promise<TestCluster> {
  const root = await mkdtemp(join(tmpdir(), "hes-volume-"));
  const cluster = new DirectCluster();
  cluster.apply({ kind: "initCluster", fields: { clusterId: "volume-test" } });
  const nodes: TestNode[] = [];
  const diskBytes = options.diskBytes ?? 256 * MiB;
  for (let nodeId = 1; nodeId <= count; nodeId++) {
    const disk = await FileDisk.open(join(root, `disk-${nodeId}.img`), {
      createSizeBytes: diskBytes,
    });
    const store = await ExtentStore.open({
      disks: [{ disk, indexPath: join(root, `index-${nodeId}`) }],
      clusterId: "volume-test",
      format: true,
      chunkSizeBytes: options.chunkSizeBytes ?? MiB,
      segmentSizeBytes: 4 * MiB,
    });
    nodes.push({
      nodeId,
      store,
      replica: new LocalReplica(nodeId, store),
      fault: "ok",
      faultedCalls: 0,
    });
    cluster.apply({
      kind: "addNode",
      fields: {
        nodeId,
        controlAddress: `127.0.0.1:${7000 + nodeId}`,
        dataAddress: `127.0.0.1:${8000 + nodeId}`,
        failureDomain: `rack-${nodeId}`,
        disks: [{ diskId: `d${nodeId}`, path: "/x", capacityBytes: diskBytes }],
      },
    });
  }
  const replicas = new Map(nodes.map((n) => [n.nodeId, faulty(n)]));
  const directory: ReplicaDirectory = {
    replica(nodeId) {
      const replica = replicas.get(nodeId);
      if (replica === undefined) throw new HesError("HES_UNAVAILABLE", `no node ${nodeId}`);
      return replica;
    },
  };
  return {
    root,
    cluster,
    nodes,
    directory,
    manager: (nodeId, managerOptions = {}) =>
      new VolumeManager({ control: cluster.control(nodeId), directory, ...managerOptions }),
    async close() {
      for (const node of nodes) await node.store.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** `real`, with `propose` replaced; view, sync and subscribe pass through. */
export function withPropose(
  real: ClusterControl,
  propose: ClusterControl["propose"],
): ClusterControl {
  return {
    nodeId: real.nodeId,
    view: () => real.view(),
    sync: (options) => real.sync(options),
    subscribe: (listener) => real.subscribe(listener),
    propose,
  };
}

/**
 * `directory`, with every replica's `write` passed through `around(nodeId, write)`, where
 * `write()` makes the real call (a test can hold, count or time it).
 */
export function aroundWrites(
  directory: ReplicaDirectory,
  around: (nodeId: NodeId, write: () => Promise<unknown>) => Promise<unknown>,
): ReplicaDirectory {
  return {
    replica(nodeId) {
      const replica = directory.replica(nodeId);
      return new Proxy(replica, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver);
          if (property !== "write" || typeof value !== "function") return value;
          return (...args: unknown[]) =>
            around(nodeId, () => value.apply(target, args) as Promise<unknown>);
        },
      }) as ChunkReplica;
    },
  };
}

/** Resolves once `ready()` holds, checking every turn of the event loop, for at most `ms`. */
export async function until(ready: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Deterministic bytes for (seed, length). */
export function pattern(seed: number, length: number): Uint8Array {
  const data = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = x & 0xff;
  }
  return data;
}
