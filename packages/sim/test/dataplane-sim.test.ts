/**
 * Goal: the data plane's repair machinery (mover: rebuild and catch-up; scrubber) brings a
 * chunk's replicas back to byte-identical copies of every acknowledged write after faults:
 * node crashes (power cuts: unsynced writes lost), EIO on writes, bit flips on a disk's medium,
 * and a node whose disk is wiped (its replicas rebuilt elsewhere).
 * Method: four nodes, each a real ExtentStore on a SimDisk (seeded), replicas called directly
 * (LocalReplica behind a switch that makes a down node unreachable), the real cluster map
 * (DirectCluster), the real Mover and Scrubber. One seeded schedule of operations per seed:
 * the test is the owner of a volume (writes to every reachable replica of the replica set,
 * acknowledged on a quorum of 2, failures reported to the map with the replica's watermark),
 * faults hit one node at a time, and a heal phase restarts it and runs the movers and the
 * scrubber. After the last heal every replica of every chunk must equal the model of
 * acknowledged writes, block for block. A failing seed is printed; replay one with
 * HES_SIM_FIRST_SEED=N HES_SIM_SEEDS=1. HES_SOAK=1 runs 200 seeds. HES_SIM_TRACE=1 prints each step.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { HesError, isHesError, Prng } from "@hes/base";
import { type ChunkId, ExtentStore } from "@hes/extent-store";
import {
  type ChunkReplica,
  DirectCluster,
  LocalReplica,
  Mover,
  type ReplicaDirectory,
  Scrubber,
  volumeSeq,
} from "@hes/replication";
import { SimDisk } from "@hes/sim";
import { ManualClock } from "./manual-clock.js";

const BLOCK = 4096;
const MiB = 1024 * 1024;
const CHUNKS = 2;
const BLOCKS = MiB / BLOCK;
const root = mkdtempSync(join(tmpdir(), "hes-dataplane-sim-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

class SimNode {
  disk: SimDisk;
  store: ExtentStore | undefined;
  indexPath = join(root, `index-${dirs++}`);
  constructor(
    readonly nodeId: number,
    readonly seed: number,
    readonly clock: ManualClock,
  ) {
    this.disk = new SimDisk({ sizeBytes: 48 * MiB, seed, name: `node-${nodeId}` });
  }
  get up(): boolean {
    return this.store !== undefined;
  }
  async open(format: boolean): Promise<void> {
    this.store = await ExtentStore.open({
      disks: [{ disk: this.disk, indexPath: this.indexPath }],
      clusterId: "sim",
      format,
      chunkSizeBytes: MiB,
      segmentSizeBytes: MiB,
      clock: this.clock,
      newDiskId: () => this.nodeId.toString(16).padStart(32, "0"),
    });
  }
  /** Power cut: in-flight IO fails, unsynced writes may be lost or torn. */
  async crash(): Promise<void> {
    this.disk.crash();
    await this.store?.close({ checkpoint: false }).catch(() => {});
    this.store = undefined;
    this.disk = this.disk.restart();
  }
  /** A new, empty disk (the old one is gone). */
  async wipe(seed: number): Promise<void> {
    await this.crash();
    this.disk = new SimDisk({ sizeBytes: 48 * MiB, seed, name: `node-${this.nodeId}` });
    this.indexPath = join(root, `index-${dirs++}`);
    await this.open(true);
  }
}

/** Replicas by node; a down node's calls fail HES_UNAVAILABLE, like an unreachable peer. */
function directory(nodes: readonly SimNode[]): ReplicaDirectory {
  return {
    replica(nodeId: number): ChunkReplica {
      const node = nodes[nodeId - 1] as SimNode;
      const unavailable = () => new HesError("HES_UNAVAILABLE", `node ${nodeId} is down`);
      return new Proxy({} as ChunkReplica, {
        get(_target, property) {
          if (property === "nodeId") return nodeId;
          if (property === "local") return false;
          const store = node.store;
          if (store === undefined) {
            if (property === "exportChunk") {
              // biome-ignore lint/correctness/useYield: fails before yielding, like a dead peer
              return async function* () {
                throw unavailable();
              };
            }
            return () => Promise.reject(unavailable());
          }
          const replica = new LocalReplica(nodeId, store);
          const value = Reflect.get(replica, property, replica);
          return typeof value === "function" ? value.bind(replica) : value;
        },
      });
    },
  };
}

function content(seq: number, block: number): Uint8Array {
  return new Prng(seq * 1000 + block).fill(new Uint8Array(BLOCK));
}

/**
 * Moves the manual clock 1 ms per turn of the event loop while the seed runs, so the stores'
 * timers (group commit, compaction pacing) fire in virtual time order between real IO
 * completions of the index databases.
 */
function autoAdvance(clock: ManualClock): () => Promise<void> {
  let running = true;
  const loop = (async () => {
    while (running) {
      await new Promise((resolve) => setImmediate(resolve));
      await clock.advance(1).catch((error: unknown) => console.error("timer failed", error));
    }
  })();
  return async () => {
    running = false;
    await loop;
  };
}

async function runSeed(seed: number): Promise<void> {
  const clock = new ManualClock();
  const stop = autoAdvance(clock);
  try {
    await runSeedWith(seed, clock);
  } finally {
    await stop();
  }
}

async function runSeedWith(seed: number, clock: ManualClock): Promise<void> {
  const prng = new Prng(seed);
  const nodes = [1, 2, 3, 4].map((id) => new SimNode(id, seed * 10 + id, clock));
  for (const node of nodes) await node.open(true);
  const cluster = new DirectCluster(clock);
  cluster.apply({ kind: "initCluster", fields: { clusterId: "sim", gracePeriodMs: 1_000 } });
  for (const node of nodes.slice(0, 3)) addNode(cluster, node.nodeId);
  const { volumeId } = cluster.apply({
    kind: "createVolume",
    fields: { name: "v", sizeBytes: CHUNKS * MiB, chunkSizeBytes: MiB, writeQuorum: 2 },
  });
  const vid = volumeId as number;
  const epoch = cluster.apply({ kind: "openVolume", fields: { volumeId: vid, nodeId: 1 } })
    .epoch as number;
  for (let c = 0; c < CHUNKS; c++) {
    cluster.apply({ kind: "placeChunk", fields: { volumeId: vid, chunkIndex: c, epoch } });
  }
  addNode(cluster, 4); // the spare a wiped node's replicas are rebuilt on
  const replicas = directory(nodes);
  const chunkId = (c: number): ChunkId => ({ volumeId: vid, chunkIndex: c });
  /** Model: per chunk and block, the seq of the acknowledged content (0: zeros). */
  const model = Array.from({ length: CHUNKS }, () => new Array<number>(BLOCKS).fill(0));
  /** The owner's watermark per (chunk, node): every write ≤ it is durable there. */
  const watermark = new Map<string, number>();
  const failed = new Set<string>(); // (chunk, node) that missed a write since its watermark
  let counter = 0;
  const log: string[] = [];

  const replicaSet = (c: number) => cluster.map.chunk(vid, c)?.replicas.map((r) => r.nodeId) ?? [];

  async function write(c: number, first: number, count: number): Promise<void> {
    counter++;
    const seq = volumeSeq(epoch, counter);
    const data = new Uint8Array(count * BLOCK);
    for (let i = 0; i < count; i++) data.set(content(seq, first + i), i * BLOCK);
    const zero = prng.int(10) === 0;
    const targets = replicaSet(c);
    const outcomes = await Promise.allSettled(
      targets.map((n) => {
        const replica = replicas.replica(n);
        return zero
          ? replica.writeZeroes(chunkId(c), first * BLOCK, count * BLOCK, { epoch, seq })
          : replica.write(chunkId(c), first * BLOCK, data, { epoch, seq });
      }),
    );
    const ok = outcomes.filter((o) => o.status === "fulfilled").length;
    const inSyncOk = targets.filter(
      (n, i) =>
        outcomes[i]?.status === "fulfilled" &&
        cluster.map.chunk(vid, c)?.replicas.find((r) => r.nodeId === n)?.state === "in-sync",
    ).length;
    assert.ok(
      inSyncOk >= 2,
      `seed ${seed}: write ${seq} not acknowledged (${ok} ok)\n${log.join("\n")}`,
    );
    for (let i = 0; i < count; i++) (model[c] as number[])[first + i] = zero ? 0 : seq;
    targets.forEach((n, i) => {
      const key = `${c}/${n}`;
      if (outcomes[i]?.status === "fulfilled") {
        if (!failed.has(key)) watermark.set(key, seq);
        return;
      }
      if (failed.has(key)) return;
      failed.add(key);
      const state = cluster.map.chunk(vid, c)?.replicas.find((r) => r.nodeId === n)?.state;
      if (state !== "in-sync") return;
      cluster.apply({
        kind: "reportReplicaFailure",
        fields: {
          volumeId: vid,
          chunkIndex: c,
          epoch,
          nodeId: n,
          safeSeq: watermark.get(key) ?? 0,
        },
      });
    });
  }

  async function heal(): Promise<void> {
    for (const node of nodes) if (!node.up) await node.open(false);
    for (const node of nodes)
      cluster.apply({ kind: "nodeHeartbeat", fields: { nodeId: node.nodeId } });
    for (let round = 0; round < 6; round++) {
      let pending = 0;
      for (const node of nodes) {
        if (process.env.HES_SIM_TRACE) console.error(`heal round ${round} mover ${node.nodeId}`);
        const mover = new Mover({
          ...(process.env.HES_SIM_TRACE ? { logger: traceLogger } : {}),
          // The Mover's own default (2 chunks in flight) unless overridden.
          ...(process.env.HES_SIM_MOVER_CHUNKS
            ? { chunksInFlightMax: Number(process.env.HES_SIM_MOVER_CHUNKS) }
            : {}),
          nodeId: node.nodeId,
          control: cluster.control(node.nodeId),
          replicas,
          bytesPerSecond: 0,
          clock,
        });
        pending += mover.pending().length;
        await mover.runOnce();
        await mover.close();
      }
      if (pending === 0) break;
    }
    for (let c = 0; c < CHUNKS; c++) {
      const record = cluster.map.chunk(vid, c);
      assert.ok(
        record?.replicas.every((r) => r.state === "in-sync"),
        `seed ${seed}: chunk ${c} not healed: ${JSON.stringify(record?.replicas)}\n${log.join("\n")}`,
      );
      for (const r of record?.replicas ?? []) {
        failed.delete(`${c}/${r.nodeId}`);
        watermark.set(`${c}/${r.nodeId}`, volumeSeq(epoch, Math.max(1, counter)));
      }
    }
    for (const node of nodes) {
      if (process.env.HES_SIM_TRACE) console.error(`scrub ${node.nodeId}`);
      const scrubber = new Scrubber({
        nodeId: node.nodeId,
        control: cluster.control(node.nodeId),
        replicas,
        bytesPerSecond: 0,
        clock,
      });
      await scrubber.runOnce();
      await scrubber.close();
    }
  }

  for (let step = 0; step < 60; step++) {
    const roll = prng.int(100);
    const c = prng.int(CHUNKS);
    if (process.env.HES_SIM_TRACE) console.error(`step ${step} roll ${roll} ${log.at(-1)}`);
    if (roll < 70) {
      const count = 1 + prng.int(8);
      const first = prng.int(BLOCKS - count);
      log.push(`step ${step}: write chunk ${c} blocks ${first}+${count}`);
      await write(c, first, count);
    } else if (roll < 78) {
      // Read from a random in-sync replica; a corrupt one is skipped for another.
      const first = prng.int(BLOCKS - 4);
      const sources = (cluster.map.chunk(vid, c)?.replicas ?? []).filter(
        (r) => r.state === "in-sync",
      );
      let read: Uint8Array | undefined;
      for (const r of sources) {
        try {
          read = await replicas
            .replica(r.nodeId)
            .read(chunkId(c), first * BLOCK, 4 * BLOCK, { epoch });
          break;
        } catch (error) {
          if (!isHesError(error, "HES_CORRUPTION", "HES_UNAVAILABLE", "HES_IO")) throw error;
        }
      }
      assert.ok(read !== undefined, `seed ${seed}: no in-sync replica could serve a read`);
      for (let i = 0; i < 4; i++) {
        const seq = (model[c] as number[])[first + i] as number;
        const expected = seq === 0 ? new Uint8Array(BLOCK) : content(seq, first + i);
        assert.deepEqual(read.subarray(i * BLOCK, (i + 1) * BLOCK), expected, `seed ${seed}: read`);
      }
    } else if (roll < 96) {
      // One fault on one node (only when everything is healed: one impaired node at a time).
      await heal();
      const victim = nodes.filter(
        (n) => replicaSet(0).includes(n.nodeId) || replicaSet(1).includes(n.nodeId),
      );
      const node = victim[prng.int(victim.length)] as SimNode;
      const fault = prng.int(4);
      log.push(
        `step ${step}: fault ${["crash", "eio", "flip", "wipe"][fault]} on node ${node.nodeId}`,
      );
      if (fault === 0) await node.crash();
      else if (fault === 1) {
        // The EIO is consumed now (by this write, or the store's own IO), so that it cannot
        // hit later, when another node is impaired too: one fault at a time.
        node.disk.failNext("write");
        const onNode = [0, 1].find((k) => replicaSet(k).includes(node.nodeId)) ?? 0;
        await write(onNode, prng.int(BLOCKS - 1), 1);
      } else if (fault === 2) flipDataBit(node, model, prng, seed);
      else await wipe(node);
    } else {
      log.push(`step ${step}: heal`);
      await heal();
    }
  }
  await heal();

  async function wipe(node: SimNode): Promise<void> {
    await node.wipe(seed * 100 + node.nodeId);
    for (let c = 0; c < CHUNKS; c++) {
      if (!replicaSet(c).includes(node.nodeId)) continue;
      const state = cluster.map
        .chunk(vid, c)
        ?.replicas.find((r) => r.nodeId === node.nodeId)?.state;
      if (state === "in-sync") {
        cluster.apply({
          kind: "reportReplicaFailure",
          fields: { volumeId: vid, chunkIndex: c, epoch, nodeId: node.nodeId, safeSeq: 0 },
        });
      }
      failed.add(`${c}/${node.nodeId}`);
      cluster.apply({
        kind: "replaceReplica",
        fields: { volumeId: vid, chunkIndex: c, oldNodeId: node.nodeId },
      });
    }
  }

  // Every replica of every chunk equals the model, block for block.
  for (let c = 0; c < CHUNKS; c++) {
    const expected = new Uint8Array(MiB);
    (model[c] as number[]).forEach((seq, b) => {
      if (seq !== 0) expected.set(content(seq, b), b * BLOCK);
    });
    for (const nodeId of replicaSet(c)) {
      const data = await replicas.replica(nodeId).read(chunkId(c), 0, MiB, { epoch });
      if (!Buffer.from(data).equals(Buffer.from(expected))) {
        assert.fail(
          `seed ${seed}: chunk ${c} on node ${nodeId} differs from the acknowledged writes\n${log.join("\n")}`,
        );
      }
    }
  }
  for (const node of nodes) await node.store?.close();
}

const traceLogger = {
  trace: () => {},
  debug: (o: unknown, m?: string) => console.error("debug", m, JSON.stringify(o)),
  info: (o: unknown, m?: string) => console.error("info", m, JSON.stringify(o)),
  warn: (o: unknown, m?: string) => console.error("warn", m, String((o as { err?: unknown }).err)),
  error: (o: unknown, m?: string) => console.error("error", m, String(o)),
  fatal: (o: unknown, m?: string) => console.error("fatal", m, String(o)),
  child: () => traceLogger,
};

function addNode(cluster: DirectCluster, nodeId: number): void {
  cluster.apply({
    kind: "addNode",
    fields: {
      nodeId,
      controlAddress: "sim:1",
      dataAddress: `sim:${nodeId}`,
      failureDomain: `d${nodeId}`,
      disks: [{ diskId: `disk-${nodeId}`, path: "/sim", capacityBytes: 48 * MiB }],
    },
  });
}

/** Flips one bit inside a block of acknowledged data on the node's medium (found by content). */
function flipDataBit(node: SimNode, model: number[][], prng: Prng, seed: number): void {
  const wanted = new Map<string, true>();
  for (const blocks of model) {
    for (const [b, seq] of blocks.entries()) {
      if (seq !== 0) wanted.set(Buffer.from(content(seq, b).subarray(0, 16)).toString("hex"), true);
    }
  }
  const candidates: number[] = [];
  for (const [block, data] of node.disk.medium.current) {
    if (wanted.has(Buffer.from(data.subarray(0, 16)).toString("hex"))) candidates.push(block);
  }
  if (candidates.length === 0) return;
  const block = candidates.sort((a, b) => a - b)[prng.int(candidates.length)] as number;
  node.disk.flipBit(block * BLOCK + prng.int(BLOCK), prng.int(8));
  void seed;
}

const SEEDS = Number(process.env.HES_SIM_SEEDS ?? (process.env.HES_SOAK === "1" ? 200 : 12));
const FIRST = Number(process.env.HES_SIM_FIRST_SEED ?? 1);

// Regression: with two chunk copies in flight per mover (the Mover's default) every seed
// used to hang: a record queued into a store between its commit pump's exit and the clearing
// of its "pumping" mark was never written (a lost wakeup in the extent store's DiskStore.pump;
// SimDisk completes IO on microtasks, which makes that window reachable). Fixed in the store;
// packages/extent-store/test/pump-wakeup.test.ts pins it deterministically.
const enabled = process.env.HES_DATAPLANE_SIM !== "0";

test(`replicas converge to every acknowledged write after crashes, EIO, bit flips and wipes (${SEEDS} seeds)`, {
  skip: !enabled && "set HES_DATAPLANE_SIM=1",
}, async () => {
  for (let seed = FIRST; seed < FIRST + SEEDS; seed++) {
    try {
      await runSeed(seed);
    } catch (error) {
      console.error(`failing seed ${seed}: replay with HES_SIM_FIRST_SEED=${seed} HES_SIM_SEEDS=1`);
      throw error;
    }
  }
});
