/**
 * Real stores on files and real chunk-replica services on loopback sockets, for the data-plane
 * tests: `startNodes(n)` gives n nodes, each an ExtentStore on its own file, a service bound
 * to 127.0.0.1:0, and the node's ReplicaPool over a DirectCluster map that knows every node.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Clock, systemClock } from "@hes/base";
import { ExtentStore, FileDisk } from "@hes/extent-store";
import {
  ChunkReplicaService,
  DirectCluster,
  LocalReplica,
  ReplicaPool,
  type ReplicaPoolOptions,
} from "@hes/replication";

export const MiB = 2 ** 20;
/** Small chunks (several 1 MiB copy windows each) keep the tests fast. */
export const CHUNK_BYTES = 4 * MiB;

export interface TestNode {
  readonly nodeId: number;
  readonly dir: string;
  store: ExtentStore;
  service: ChunkReplicaService;
  pool: ReplicaPool;
  port: number;
}

export async function openStore(dir: string, format: boolean): Promise<ExtentStore> {
  const disk = await FileDisk.open(join(dir, "disk.img"), { createSizeBytes: 128 * MiB });
  return ExtentStore.open({
    disks: [{ disk, indexPath: join(dir, "index") }],
    clusterId: "dataplane-test",
    format,
    chunkSizeBytes: CHUNK_BYTES,
    segmentSizeBytes: 4 * MiB,
  });
}

/** Wall clock of the map, with an offset tests move forward (grace periods). */
export class ShiftedClock implements Clock {
  offsetMs = 0;
  nowMs = () => systemClock.nowMs() + this.offsetMs;
  wallMs = () => systemClock.wallMs() + this.offsetMs;
  setTimer = (delayMs: number, callback: () => void) => systemClock.setTimer(delayMs, callback);
  sleep = (delayMs: number, signal?: AbortSignal) => systemClock.sleep(delayMs, signal);
}

export class TestCluster {
  readonly clock = new ShiftedClock();
  readonly cluster = new DirectCluster(this.clock);
  readonly nodes: TestNode[] = [];
  constructor(readonly root: string) {}

  node(nodeId: number): TestNode {
    const node = this.nodes.find((n) => n.nodeId === nodeId);
    if (node === undefined) throw new Error(`no node ${nodeId}`);
    return node;
  }

  /** Stops a node's service and closes its store (its files stay). */
  async stop(nodeId: number): Promise<void> {
    const node = this.node(nodeId);
    await node.pool.close();
    await node.service.close();
    await node.store.close();
  }

  /** Reopens a stopped node's store (wiped first when `wipe`) and serves on its old port. */
  async restart(nodeId: number, wipe = false, client?: ReplicaPoolOptions["client"]) {
    const node = this.node(nodeId);
    if (wipe) await rm(node.dir, { recursive: true, force: true }).then(() => mkdirp(node.dir));
    node.store = await openStore(node.dir, wipe);
    await this.serve(node, node.port, client);
  }

  async serve(node: TestNode, port: number, client?: ReplicaPoolOptions["client"]) {
    node.service = new ChunkReplicaService({ nodeId: node.nodeId, store: node.store });
    const address = await node.service.listen({ host: "127.0.0.1", port });
    node.port = (address as { port: number }).port;
    node.pool = new ReplicaPool({
      nodeId: node.nodeId,
      store: node.store,
      view: () => this.cluster.map,
      ...(client === undefined ? {} : { client }),
    });
  }

  /** A new node (id = count + 1, its own failure domain), serving and known to the map. */
  async addNode(client?: ReplicaPoolOptions["client"]): Promise<TestNode> {
    const nodeId = this.nodes.length + 1;
    const dir = join(this.root, `node-${nodeId}`);
    await mkdirp(dir);
    const store = await openStore(dir, true);
    const node = { nodeId, dir, store, port: 0 } as TestNode;
    await this.serve(node, 0, client);
    this.nodes.push(node);
    this.cluster.apply({
      kind: "addNode",
      fields: {
        nodeId,
        controlAddress: "127.0.0.1:1",
        dataAddress: `127.0.0.1:${node.port}`,
        failureDomain: `d${nodeId}`,
        disks: [{ diskId: `disk-${nodeId}`, path: dir, capacityBytes: 128 * MiB }],
      },
    });
    return node;
  }

  local(nodeId: number): LocalReplica {
    const node = this.node(nodeId);
    return new LocalReplica(nodeId, node.store);
  }

  async close(): Promise<void> {
    for (const node of this.nodes) {
      await node.pool.close().catch(() => {});
      await node.service.close().catch(() => {});
      await node.store.close().catch(() => {});
    }
    await rm(this.root, { recursive: true, force: true });
  }
}

async function mkdirp(dir: string) {
  const { mkdir } = await import("node:fs/promises");
  await mkdir(dir, { recursive: true });
}

/**
 * n nodes, in n failure domains, registered in the map with their real data addresses; the
 * cluster is initialised with a 30 s grace period.
 */
export async function startNodes(
  count: number,
  client?: ReplicaPoolOptions["client"],
): Promise<TestCluster> {
  const root = await mkdtemp(join(tmpdir(), "hes-dataplane-"));
  const t = new TestCluster(root);
  t.cluster.apply({ kind: "initCluster", fields: { clusterId: "t", gracePeriodMs: 30_000 } });
  for (let i = 0; i < count; i++) await t.addNode(client);
  return t;
}

/** Deterministic bytes for a block range (seeded by a number). */
export function pattern(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let x = (Math.imul(seed, 2654435761) + 1) >>> 0;
  for (let i = 0; i < bytes; i += 4) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x & 0xff;
    out[i + 1] = (x >>> 8) & 0xff;
    out[i + 2] = (x >>> 16) & 0xff;
    out[i + 3] = seed & 0xff;
  }
  return out;
}
