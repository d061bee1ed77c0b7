/**
 * Goal: blockdev's Volume keeps its promises under faults (issue 6 point 7): every acknowledged
 * write reads back, reads are per-block linearizable, snapshots (read through linked clones)
 * and diffs match the model, and a fenced owner's writes never land.
 * Method: three nodes, each a real ExtentStore on a SimDisk (seeded), reached through a switch
 * per node (down: power cut, unsynced writes lost, then restart and the real Mover's catch-up;
 * dropped: every call fails as over a cut link; slow: calls delayed a seeded number of virtual
 * ms, so they complete out of order), the real cluster map (DirectCluster) and the real Volume
 * with its own ManualClock (virtual time; replica deadlines fire in it). One seeded schedule per
 * seed: rounds of 1–6 concurrent reads, writes and zero-writes, and between rounds a fault, a
 * compare-and-write, a snapshot, or a takeover by another node. Each block is a register whose
 * value is the id of the write that produced it (stamped into every byte pattern), so a read
 * returns values; the history goes to the WGL checker per block. Failed writes have unknown
 * outcomes (they may land or not). Replay one seed: HES_SIM_FIRST_SEED=N HES_SIM_SEEDS=1
 * (HES_SIM_TRACE=1 prints each step); HES_SOAK=1 runs 200 fresh seeds (CI: the regression
 * seeds and 20 fresh ones, ≈ 15 s idle, ≤ 60 s loaded).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { HesError, isHesError, Prng } from "@hes/base";
import { type Volume, VolumeManager } from "@hes/blockdev";
import { ExtentStore } from "@hes/extent-store";
import {
  type ChunkReplica,
  DirectCluster,
  LocalReplica,
  Mover,
  type ReplicaDirectory,
} from "@hes/replication";
import { checkLinearizable, type RegisterOp, SimDisk } from "@hes/sim";
import { ManualClock } from "./manual-clock.js";

const BLOCK = 4096;
const MiB = 1024 * 1024;
const VOLUME_BLOCKS = (4 * MiB) / BLOCK;
const root = mkdtempSync(join(tmpdir(), "hes-volume-sim-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

/** Seeds that once failed, each with what it caught. */
const REGRESSION_SEEDS: readonly number[] = [
  12, // a failed zero-write has an unknown outcome too (a test bug, kept as a case)
  41, // a snapshot pinned on one replica that later left the in-sync set (the pin gap)
  1063, // the heal left the last event's dropped link down (a test bug, kept as a case)
  223958754, // a failed takeover fenced the owner and no one reopened (a test bug, kept)
];

class SimNode {
  disk: SimDisk;
  store: ExtentStore | undefined;
  dropped = false;
  slowMs = 0;
  readonly indexPath = join(root, `index-${dirs++}`);
  constructor(
    readonly nodeId: number,
    seed: number,
    readonly clock: ManualClock,
  ) {
    this.disk = new SimDisk({ sizeBytes: 64 * MiB, seed, name: `node-${nodeId}` });
  }
  async open(format: boolean): Promise<void> {
    this.store = await ExtentStore.open({
      disks: [{ disk: this.disk, indexPath: this.indexPath }],
      clusterId: "sim",
      format,
      chunkSizeBytes: MiB,
      segmentSizeBytes: 4 * MiB,
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
}

/** Replicas by node through each node's switch (down, dropped, slow). */
function directory(nodes: readonly SimNode[], clock: ManualClock): ReplicaDirectory {
  return {
    replica(nodeId: number): ChunkReplica {
      const node = nodes[nodeId - 1] as SimNode;
      const unavailable = () => new HesError("HES_UNAVAILABLE", `node ${nodeId} unreachable`);
      return new Proxy({} as ChunkReplica, {
        get(_target, property) {
          if (property === "nodeId") return nodeId;
          if (property === "local") return false;
          const store = node.store;
          if (store === undefined || node.dropped) {
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
          if (typeof value !== "function") return value;
          if (property === "exportChunk" || node.slowMs === 0) return value.bind(replica);
          return async (...args: unknown[]) => {
            await clock.sleep(1 + ((args.length * 7 + clock.nowMs()) % node.slowMs));
            return value.apply(replica, args);
          };
        },
      });
    },
  };
}

/** A block holding write `id`: the id and block index in its head, a filler derived from both. */
function blockOf(id: number, block: number): Uint8Array {
  const data = new Uint8Array(BLOCK);
  const view = new DataView(data.buffer);
  view.setUint32(0, id);
  view.setUint32(4, block);
  data.fill((id * 31 + block) & 0xff, 8);
  return data;
}

/** The write id a block holds (undefined: zeroes); throws on a torn or foreign block. */
function blockValue(data: Uint8Array, block: number): number | undefined {
  if (data.every((b) => b === 0)) return undefined;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const id = view.getUint32(0);
  if (
    view.getUint32(4) !== block ||
    !data.subarray(8).every((b) => b === ((id * 31 + block) & 0xff))
  ) {
    throw new Error(`block ${block} is torn or misplaced (head ${id}/${view.getUint32(4)})`);
  }
  return id;
}

/** Moves the manual clock 1 ms per turn of the event loop (see dataplane-sim.test.ts). */
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

interface Run {
  readonly seed: number;
  readonly prng: Prng;
  readonly history: RegisterOp[];
  readonly log: string[];
  /** Per block: the last acknowledged write (undefined: zeroes), and failed writes' ids. */
  readonly acked: (number | undefined)[];
  readonly unknown: Set<number | undefined>[];
  step: number;
  nextId: number;
}

function trace(run: Run, line: string): void {
  run.log.push(line);
  if (process.env.HES_SIM_TRACE === "1") console.log(`seed ${run.seed}: ${line}`);
}

/** One write of `count` blocks at `first` (zeroes when `zero`), recorded in the history. */
async function write(run: Run, volume: Volume, first: number, count: number, zero: boolean) {
  const id = run.nextId++;
  const invoke = run.step++;
  const data = new Uint8Array(count * BLOCK);
  if (!zero) for (let i = 0; i < count; i++) data.set(blockOf(id, first + i), i * BLOCK);
  const request = { offsetBytes: first * BLOCK, lengthBytes: count * BLOCK };
  let ok = true;
  try {
    if (zero) await volume.writeZeroes({ ...request, mayUnmap: id % 2 === 0 });
    else await volume.write({ offsetBytes: request.offsetBytes, data });
  } catch (error) {
    ok = false;
    trace(run, `write ${id} [${first}+${count}] failed: ${String(error)}`);
  }
  const response = ok ? run.step++ : Number.POSITIVE_INFINITY;
  for (let b = first; b < first + count; b++) {
    const value = zero ? undefined : id;
    run.history.push({
      id: run.history.length,
      key: `${b}`,
      kind: "write",
      value,
      invoke,
      response,
    });
    if (ok) run.acked[b] = value;
    else run.unknown[b]?.add(value);
  }
}

async function read(run: Run, volume: Volume, first: number, count: number) {
  const invoke = run.step++;
  let data: Uint8Array;
  try {
    data = await volume.read({ offsetBytes: first * BLOCK, lengthBytes: count * BLOCK });
  } catch (error) {
    trace(run, `read [${first}+${count}] failed: ${String(error)}`);
    return;
  }
  const response = run.step++;
  for (let i = 0; i < count; i++) {
    const value = blockValue(data.subarray(i * BLOCK, (i + 1) * BLOCK), first + i);
    const key = `${first + i}`;
    run.history.push({ id: run.history.length, key, kind: "read", value, invoke, response });
  }
}

/** What a block may hold now: the last acknowledged write, or any failed write's. */
function possible(run: Run, block: number): Set<number | undefined> {
  return new Set<number | undefined>([run.acked[block], ...(run.unknown[block] ?? [])]);
}

function checkBlocks(
  run: Run,
  what: string,
  data: Uint8Array,
  expected: Set<number | undefined>[],
) {
  for (let b = 0; b < VOLUME_BLOCKS; b++) {
    const value = blockValue(data.subarray(b * BLOCK, (b + 1) * BLOCK), b);
    const allowed = expected[b] as Set<number | undefined>;
    if (!allowed.has(value)) {
      assert.fail(
        `seed ${run.seed}: ${what}: block ${b} holds ${value}, expected one of ` +
          `${[...allowed].join(",")}\n${run.log.slice(-30).join("\n")}`,
      );
    }
  }
}

function addNode(cluster: DirectCluster, nodeId: number): void {
  cluster.apply({
    kind: "addNode",
    fields: {
      nodeId,
      controlAddress: "sim:1",
      dataAddress: `sim:${nodeId}`,
      failureDomain: `d${nodeId}`,
      disks: [{ diskId: `disk-${nodeId}`, path: "/sim", capacityBytes: 64 * MiB }],
    },
  });
}

/** Hot spots (one across the chunk 0/1 boundary) so concurrent ops overlap. */
const HOT_BLOCKS = [0, 250, 512, 1000];

function randomRange(prng: Prng): { first: number; count: number } {
  const first = (HOT_BLOCKS[prng.int(HOT_BLOCKS.length)] as number) + prng.int(10);
  return { first, count: 1 + prng.int(4) };
}

interface World {
  readonly nodes: SimNode[];
  readonly cluster: DirectCluster;
  readonly replicas: ReplicaDirectory;
  readonly clock: ManualClock;
  readonly managers: VolumeManager[];
}

async function catchUp(run: Run, world: World, node: SimNode): Promise<void> {
  const mover = new Mover({
    nodeId: node.nodeId,
    control: world.cluster.control(node.nodeId),
    replicas: world.replicas,
    clock: world.clock,
  });
  const results = await mover.runOnce().catch((error: unknown) => {
    trace(run, `mover ${node.nodeId} failed: ${String(error)}`);
    return [];
  });
  trace(run, `mover ${node.nodeId}: ${results.length} chunk(s)`);
}

async function compareAndWrite(run: Run, volume: Volume): Promise<void> {
  const { first } = randomRange(run.prng);
  if ((run.unknown[first]?.size ?? 0) > 0) return; // its content is not known exactly
  const current = run.acked[first];
  const id = run.nextId++;
  const invoke = run.step++;
  const expected = current === undefined ? new Uint8Array(BLOCK) : blockOf(current, first);
  try {
    await volume.compareAndWrite({
      offsetBytes: first * BLOCK,
      expected,
      data: blockOf(id, first),
    });
  } catch (error) {
    assert.ok(
      !isHesError(error, "HES_MISCOMPARE"),
      `seed ${run.seed}: CAW miscompared at ${first}`,
    );
    trace(run, `caw ${id} at ${first} failed: ${String(error)}`);
    run.unknown[first]?.add(id);
    const key = `${first}`;
    run.history.push({
      id: run.history.length,
      key,
      kind: "write",
      value: id,
      invoke,
      response: Infinity,
    });
    return;
  }
  run.acked[first] = id;
  const response = run.step++;
  run.history.push({
    id: run.history.length,
    key: `${first}`,
    kind: "write",
    value: id,
    invoke,
    response,
  });
}

interface SnapshotExpectation {
  readonly name: string;
  readonly blocks: Set<number | undefined>[];
  /**
   * Whether a replica of a placed chunk was not in sync when it was taken: the owner pins only
   * in-sync replicas, and the mover must copy the pin to the others when they catch up (seed
   * 41 read a snapshot whose only pinned replica had left the in-sync set, before it did).
   */
  readonly partial: boolean;
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
  const nodes = [1, 2, 3].map((id) => new SimNode(id, seed * 10 + id, clock));
  for (const node of nodes) await node.open(true);
  const cluster = new DirectCluster(clock);
  cluster.apply({ kind: "initCluster", fields: { clusterId: "sim" } });
  for (const node of nodes) addNode(cluster, node.nodeId);
  const replicas = directory(nodes, clock);
  const managers = [0, 1, 2, 3].map(
    (n) =>
      new VolumeManager({
        control: cluster.control(Math.max(1, n)),
        directory: replicas,
        clock,
        replicaDeadlineMs: 500,
      }),
  );
  const world: World = { nodes, cluster, replicas, clock, managers };
  const run: Run = {
    seed,
    prng,
    history: [],
    log: [],
    acked: new Array(VOLUME_BLOCKS).fill(undefined),
    unknown: Array.from({ length: VOLUME_BLOCKS }, () => new Set<number | undefined>()),
    step: 0,
    nextId: 1,
  };
  await (managers[1] as VolumeManager).create({
    name: "v",
    sizeBytes: VOLUME_BLOCKS * BLOCK,
    chunkSizeBytes: MiB,
    replicationFactor: 3,
  });
  let owner = 1;
  let volume = await (managers[owner] as VolumeManager).open({ name: "v" });
  const snapshots: SnapshotExpectation[] = [];
  const rounds = 10 + prng.int(10);
  for (let round = 0; round < rounds; round++) {
    const ops: Promise<void>[] = [];
    for (let k = 1 + prng.int(6); k > 0; k--) {
      const { first, count } = randomRange(prng);
      const kind = prng.int(10);
      if (kind < 5) ops.push(write(run, volume, first, count, false));
      else if (kind === 5) ops.push(write(run, volume, first, count, true));
      else ops.push(read(run, volume, first, count));
    }
    await Promise.all(ops);
    for (const node of nodes) {
      node.dropped = false;
      node.slowMs = 0;
    }
    volume = await reopenIfFenced(run, world, volume, owner);
    volume = await betweenRounds(run, world, volume, owner, snapshots, (n) => {
      owner = n;
    });
  }
  await finish(run, world, volume, owner, snapshots);
}

/**
 * A takeover that took the new epoch in the map but failed to seal (too few replicas up)
 * still fences the owner it was taking from: some replicas may hold the new epoch, so the old
 * owner must stop. No one serves the volume then, and the host agent retries the open with
 * takeover; the owner node does that here (seed 223958754: node 2's takeover failed with node
 * 1 down, and node 3's volume was fenced at epoch 2 by epoch 3).
 */
async function reopenIfFenced(
  run: Run,
  world: World,
  volume: Volume,
  owner: number,
): Promise<Volume> {
  if (!volume.fenced || world.nodes[owner - 1]?.store === undefined) return volume;
  try {
    const reopened = await (world.managers[owner] as VolumeManager).open({
      name: "v",
      takeover: true,
    });
    trace(run, `node ${owner} reopened its fenced volume (epoch ${reopened.epoch})`);
    await volume.close().catch(() => undefined);
    return reopened;
  } catch (error) {
    trace(run, `node ${owner} could not reopen its fenced volume: ${String(error)}`);
    return volume;
  }
}

/** One seeded event between rounds; returns the volume to use next (a takeover changes it). */
async function betweenRounds(
  run: Run,
  world: World,
  volume: Volume,
  owner: number,
  snapshots: SnapshotExpectation[],
  setOwner: (n: number) => void,
): Promise<Volume> {
  const { prng } = run;
  const down = world.nodes.filter((n) => n.store === undefined);
  const pick = world.nodes[prng.int(3)] as SimNode;
  switch (prng.int(10)) {
    case 0:
      if (down.length === 0) {
        trace(run, `crash node ${pick.nodeId}`);
        await pick.crash();
      }
      break;
    case 1:
      for (const node of down) {
        trace(run, `restart node ${node.nodeId}`);
        await node.open(false);
        await catchUp(run, world, node);
      }
      break;
    case 2:
      trace(run, `drop node ${pick.nodeId} for a round`);
      pick.dropped = true;
      break;
    case 3:
      pick.slowMs = 5 + prng.int(100);
      trace(run, `slow node ${pick.nodeId} (${pick.slowMs} ms) for a round`);
      break;
    case 4:
      await compareAndWrite(run, volume);
      break;
    case 5: {
      const name = `s${snapshots.length}`;
      const blocks = Array.from({ length: VOLUME_BLOCKS }, (_, b) => possible(run, b));
      const partial = world.cluster.map
        .chunksOfVolume(volume.volumeId)
        .some((c) => c.replicas.some((r) => r.state !== "in-sync"));
      try {
        await volume.snapshots.create({ name });
        snapshots.push({ name, blocks, partial });
        trace(run, `snapshot ${name} at step ${run.step}`);
      } catch (error) {
        trace(run, `snapshot ${name} failed: ${String(error)}`);
      }
      break;
    }
    case 6: {
      const next = 1 + ((owner + prng.int(2)) % 3);
      if (world.nodes[next - 1]?.store === undefined) break;
      try {
        const taken = await (world.managers[next] as VolumeManager).open({
          name: "v",
          takeover: true,
        });
        trace(run, `node ${next} took over from node ${owner} (epoch ${taken.epoch})`);
        const stale = run.nextId++;
        await assert.rejects(
          volume.write({ offsetBytes: 0, data: blockOf(stale, 0) }),
          (e: unknown) => isHesError(e, "HES_FENCED"),
          `seed ${run.seed}: the old owner's write was not fenced`,
        );
        await volume.close().catch(() => undefined);
        setOwner(next);
        return taken;
      } catch (error) {
        if (error instanceof assert.AssertionError) throw error;
        trace(run, `takeover by ${next} failed: ${String(error)}`);
      }
      break;
    }
    default:
      break;
  }
  return volume;
}

/** Snapshots taken while a replica was out of sync (pinned on fewer, copied by the mover). */
let partialSnapshots = 0;

/** The diff from `s` covers every block that certainly changed; a clone of it reads `s`. */
async function checkSnapshot(
  run: Run,
  manager: VolumeManager,
  volume: Volume,
  s: SnapshotExpectation,
  expected: Set<number | undefined>[],
): Promise<void> {
  const extents = await volume.diff({ fromSnapshot: s.name });
  for (let block = 0; block < VOLUME_BLOCKS; block++) {
    const then = s.blocks[block] as Set<number | undefined>;
    const now = expected[block] as Set<number | undefined>;
    if (then.size !== 1 || now.size !== 1 || [...then][0] === [...now][0]) continue;
    const covered = extents.some(
      (e) => e.offsetBytes <= block * BLOCK && block * BLOCK < e.offsetBytes + e.lengthBytes,
    );
    assert.ok(covered, `seed ${run.seed}: diff from ${s.name} misses block ${block}`);
  }
  const name = `clone-${s.name}`;
  if (manager.list().every((v) => v.name !== name)) {
    await manager.clone({ source: "v", snapshot: s.name, name });
  }
  const clone = await manager.open({ name });
  try {
    const data = await clone.read({ offsetBytes: 0, lengthBytes: VOLUME_BLOCKS * BLOCK });
    checkBlocks(run, `clone of ${s.name}`, data, s.blocks);
  } finally {
    await clone.close();
  }
}

/** Heals every fault, then checks the volume, the snapshots (through clones), diffs, history. */
async function finish(
  run: Run,
  world: World,
  fencedOrLive: Volume,
  owner: number,
  snapshots: SnapshotExpectation[],
): Promise<void> {
  for (const node of world.nodes) {
    node.dropped = false;
    node.slowMs = 0;
    if (node.store === undefined) await node.open(false);
  }
  for (const node of world.nodes) await catchUp(run, world, node);
  const volume = await reopenIfFenced(run, world, fencedOrLive, owner);
  const invoke = run.step++;
  const all = await volume.read({ offsetBytes: 0, lengthBytes: VOLUME_BLOCKS * BLOCK });
  const response = run.step++;
  const expected = Array.from({ length: VOLUME_BLOCKS }, (_, b) => possible(run, b));
  checkBlocks(run, "final read", all, expected);
  for (let b = 0; b < VOLUME_BLOCKS; b++) {
    const value = blockValue(all.subarray(b * BLOCK, (b + 1) * BLOCK), b);
    run.history.push({
      id: run.history.length,
      key: `${b}`,
      kind: "read",
      value,
      invoke,
      response,
    });
  }
  const manager = world.managers[owner] as VolumeManager;
  for (const s of snapshots) {
    await checkSnapshot(run, manager, volume, s, expected);
    if (s.partial) partialSnapshots++;
  }
  await volume.close();
  const result = checkLinearizable(run.history);
  assert.ok(
    result.ok || result.inconclusive,
    `seed ${run.seed}: not linearizable at block ${result.key}: ${result.detail}\n` +
      run.log.slice(-30).join("\n"),
  );
  for (const node of world.nodes) await node.store?.close();
}

const soak = process.env.HES_SOAK === "1";
const firstSeed = Number(process.env.HES_SIM_FIRST_SEED ?? 0);
const seedCount = Number(process.env.HES_SIM_SEEDS ?? (soak ? 200 : 20));

test("volume simulation: regression seeds", async () => {
  for (const seed of REGRESSION_SEEDS) await runSeed(seed);
});

test(`volume simulation: ${seedCount} seeds`, async (t) => {
  const start = firstSeed === 0 ? 1 + Math.floor(Math.random() * 1e9) : firstSeed;
  for (let seed = start; seed < start + seedCount; seed++) {
    try {
      await runSeed(seed);
    } catch (error) {
      console.error(`volume sim failed: replay with HES_SIM_FIRST_SEED=${seed} HES_SIM_SEEDS=1`);
      throw error;
    }
  }
  t.diagnostic(`snapshots taken while a replica was out of sync, checked: ${partialSnapshots}`);
});
