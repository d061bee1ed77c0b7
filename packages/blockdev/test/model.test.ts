/**
 * Model check: random concurrent IO on a volume over three real stores and the real map,
 * under replica faults (a replica failing every call, a replica hanging past the deadline) and
 * takeovers in the middle of a stream, against a model disk.
 *
 * Method: overlapping operations are ordered by the volume in issue order (its FIFO range
 * lock), and non-overlapping ones commute, so the model applies operations in the order they
 * were issued and each read must equal the model at its issue point, block by block (per-block
 * linearizability, checked exactly). An operation that failed leaves its blocks uncertain (it
 * may or may not have landed) until a later acknowledged write covers them whole; uncertain
 * blocks are not compared. Between rounds, stale replicas are caught up from an in-sync one
 * (what the rebuild service does) so faults can keep coming. Snapshots are checked through
 * diff (every block that differs from the model is reported, none that was never touched) and
 * through linked clones read back against the snapshot's model.
 *
 * Seeds: HES_MODEL_SEEDS (count, default 3) starting at HES_MODEL_SEED (default 1); a failing
 * seed is printed and replays exactly in its choices (IO timing is real, so interleavings may
 * differ slightly between runs).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { isHesError, type NodeId, Prng } from "@hes/base";
import { inSyncReplicas } from "@hes/replication";
import type { Volume, VolumeManager } from "../src/index.js";
import { MiB, startCluster, type TestCluster } from "./fixture.js";

const BLOCK = 4096;
const SECTOR = 512;
const SIZE = 4 * MiB;
const BLOCKS = SIZE / BLOCK;

class Model {
  readonly data = new Uint8Array(SIZE);
  /** 1 where a failed operation may or may not have changed the block. */
  readonly uncertain = new Uint8Array(BLOCKS);
  /** 1 where any operation (even a failed one) touched the block since the last snapshot. */
  touched = new Uint8Array(BLOCKS);

  /** An operation's effect, applied when it is issued (the volume orders overlaps likewise). */
  issue(offsetBytes: number, bytes: Uint8Array): void {
    this.data.set(bytes, offsetBytes);
    const first = Math.floor(offsetBytes / BLOCK);
    this.touched.fill(1, first, Math.ceil((offsetBytes + bytes.byteLength) / BLOCK));
  }

  /** An acknowledged mutation: blocks it covered whole are certain again. */
  ack(offsetBytes: number, lengthBytes: number): void {
    const first = Math.ceil(offsetBytes / BLOCK);
    const end = Math.floor((offsetBytes + lengthBytes) / BLOCK);
    if (end > first) this.uncertain.fill(0, first, end);
  }

  fail(offsetBytes: number, lengthBytes: number): void {
    const first = Math.floor(offsetBytes / BLOCK);
    const end = Math.ceil((offsetBytes + lengthBytes) / BLOCK);
    this.uncertain.fill(1, first, end);
    this.touched.fill(1, first, end);
  }

  /** Asserts `actual` (read at `offsetBytes`) matches the model on its certain blocks. */
  check(offsetBytes: number, actual: Uint8Array, expected: Uint8Array, what: string): void {
    for (let at = 0; at < actual.byteLength; at += SECTOR) {
      const block = Math.floor((offsetBytes + at) / BLOCK);
      if (this.uncertain[block] === 1) continue;
      const a = actual.subarray(at, at + SECTOR);
      const e = expected.subarray(at, at + SECTOR);
      if (!Buffer.from(a).equals(Buffer.from(e))) {
        assert.fail(`${what}: sector at ${offsetBytes + at} differs from the model`);
      }
    }
  }
}

interface Op {
  readonly kind: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly promise: Promise<unknown>;
  /** The model's bytes at issue time (reads, CAW). */
  readonly expected?: Uint8Array;
  readonly caw?: boolean;
  /** copyRange: where the bytes came from. */
  readonly sourceOffsetBytes?: number;
}

function randomRange(prng: Prng): [number, number] {
  const aligned = prng.chance(0.6);
  const unit = aligned ? BLOCK : SECTOR;
  const length = unit * prng.between(1, aligned ? 24 : 16);
  const offset = unit * prng.int((SIZE - length) / unit + 1);
  return [offset, length];
}

/** Issues one random operation, applying it to the model in issue order. */
function issue(volume: Volume, model: Model, prng: Prng): Op {
  const [offsetBytes, lengthBytes] = randomRange(prng);
  const roll = prng.int(100);
  const before = model.data.slice(offsetBytes, offsetBytes + lengthBytes);
  if (roll < 35) {
    const data = prng.fill(new Uint8Array(lengthBytes));
    return {
      kind: "write",
      offsetBytes,
      lengthBytes,
      promise: volume.write({ offsetBytes, data }),
      expected: data,
    };
  }
  if (roll < 65) {
    return {
      kind: "read",
      offsetBytes,
      lengthBytes,
      promise: volume.read({ offsetBytes, lengthBytes }),
      expected: before,
    };
  }
  if (roll < 73) {
    const promise = volume.writeZeroes({ offsetBytes, lengthBytes, mayUnmap: prng.chance(0.5) });
    return {
      kind: "zero",
      offsetBytes,
      lengthBytes,
      promise,
      expected: new Uint8Array(lengthBytes),
    };
  }
  if (roll < 80) {
    const promise = volume.discard({ offsetBytes, lengthBytes });
    return {
      kind: "discard",
      offsetBytes,
      lengthBytes,
      promise,
      expected: new Uint8Array(lengthBytes),
    };
  }
  if (roll < 90) {
    // Compare-and-write: half the time with the model's current data (must succeed).
    const matching = prng.chance(0.5);
    const expected = matching ? before : prng.fill(new Uint8Array(lengthBytes));
    const data = prng.fill(new Uint8Array(lengthBytes));
    const promise = volume.compareAndWrite({ offsetBytes, expected, data });
    const wouldMatch = Buffer.from(expected).equals(Buffer.from(before));
    return {
      kind: "caw",
      offsetBytes,
      lengthBytes,
      promise,
      expected: wouldMatch ? data : before,
      caw: wouldMatch,
    };
  }
  const [sourceOffsetBytes] = randomRange(prng);
  const source = Math.min(sourceOffsetBytes, SIZE - lengthBytes);
  const copied = model.data.slice(source, source + lengthBytes);
  const promise = volume.copyRange({ sourceOffsetBytes: source, offsetBytes, lengthBytes });
  return {
    kind: "copy",
    offsetBytes,
    lengthBytes,
    promise,
    expected: copied,
    sourceOffsetBytes: source,
  };
}

/** The model's effect of an issued op, at issue time (reads and mismatching CAWs have none). */
function applyIssued(model: Model, op: Op): void {
  if (op.kind === "read" || op.expected === undefined) return;
  if (op.kind === "caw" && op.caw !== true) return;
  model.issue(op.offsetBytes, op.expected);
}

function rangeUncertain(model: Model, op: Op): boolean {
  const first = Math.floor(op.offsetBytes / BLOCK);
  const end = Math.ceil((op.offsetBytes + op.lengthBytes) / BLOCK);
  return model.uncertain.subarray(first, end).includes(1);
}

/** Waits for the ops in issue order, checking reads and tracking which blocks are certain. */
async function settle(model: Model, ops: readonly Op[]): Promise<void> {
  for (const op of ops) {
    const outcome = (await op.promise) as
      | { ok: true; value: unknown }
      | { ok: false; error: unknown };
    if (op.kind === "read") {
      if (outcome.ok) {
        const what = `read ${op.offsetBytes}+${op.lengthBytes}`;
        model.check(op.offsetBytes, outcome.value as Uint8Array, op.expected as Uint8Array, what);
      } else expectFault(outcome.error);
      continue;
    }
    if (op.kind === "caw") {
      const miscompare = !outcome.ok && isHesError(outcome.error, "HES_MISCOMPARE");
      if (outcome.ok === (op.caw === true) && (outcome.ok || miscompare)) {
        if (outcome.ok) model.ack(op.offsetBytes, op.lengthBytes);
        continue;
      }
      // A CAW may only surprise the model where an earlier op left the blocks uncertain.
      if (outcome.ok || miscompare)
        assert.ok(rangeUncertain(model, op), "CAW contradicted certain data");
      else expectFault(outcome.error);
      model.fail(op.offsetBytes, op.lengthBytes);
      continue;
    }
    const from = op.sourceOffsetBytes;
    if (outcome.ok && from !== undefined && rangeUncertain(model, { ...op, offsetBytes: from })) {
      // A copy of uncertain bytes is itself uncertain.
      model.fail(op.offsetBytes, op.lengthBytes);
    } else if (outcome.ok) model.ack(op.offsetBytes, op.lengthBytes);
    else {
      expectFault(outcome.error);
      model.fail(op.offsetBytes, op.lengthBytes);
    }
  }
}

function expectFault(error: unknown): void {
  if (!isHesError(error, "HES_QUORUM_LOST", "HES_FENCED", "HES_TIMEOUT", "HES_DISK_FAILED"))
    throw error;
}

/** Brings stale replicas back (what the rebuild service does), with no IO in flight. */
async function catchUp(t: TestCluster, volume: Volume, model: Model): Promise<void> {
  const control = t.cluster.control(1);
  for (const chunk of t.cluster.map.chunksOfVolume(volume.volumeId)) {
    const source = inSyncReplicas(chunk)[0];
    if (source === undefined) continue;
    for (const stale of chunk.replicas.filter((r) => r.state !== "in-sync")) {
      const from = t.nodes[source.nodeId - 1]?.replica;
      const to = t.nodes[stale.nodeId - 1]?.replica;
      assert.ok(from && to);
      const id = { volumeId: chunk.volumeId, chunkIndex: chunk.chunkIndex };
      // Re-imported blocks are new extents: a diff may list them (over-reporting is allowed).
      const first = (chunk.chunkIndex * MiB) / BLOCK;
      model.touched.fill(1, first, first + MiB / BLOCK);
      const version = await to.importChunk(
        id,
        from.exportChunk(id, { sinceSeq: stale.durableSeq }),
        { epoch: volume.epoch },
      );
      await control.propose({
        kind: "reportReplicaCaughtUp",
        fields: {
          volumeId: chunk.volumeId,
          chunkIndex: chunk.chunkIndex,
          epoch: volume.epoch,
          nodeId: stale.nodeId,
          durableSeq: version?.durableSeq ?? 0,
        },
      });
    }
  }
}

async function runSeed(seed: number): Promise<void> {
  const prng = new Prng(seed);
  const t = await startCluster(3);
  try {
    const managers = new Map<NodeId, VolumeManager>(
      t.nodes.map((n) => [n.nodeId, t.manager(n.nodeId, { replicaDeadlineMs: 1000 })]),
    );
    const manager = managers.get(1) as VolumeManager;
    await manager.create({ name: "model", sizeBytes: SIZE, chunkSizeBytes: MiB });
    let owner: NodeId = 1;
    let volume = await manager.open({ name: "model" });
    const model = new Model();
    const snapshots: { name: string; data: Uint8Array; uncertain: Uint8Array }[] = [];
    for (let round = 0; round < 12; round++) {
      const fault = prng.int(10);
      const victim = t.nodes[prng.int(3)];
      assert.ok(victim);
      if (fault < 2) victim.fault = "fail";
      else if (fault < 3) victim.fault = "hang";
      const ops: Op[] = [];
      const count = prng.between(8, 24);
      const takeoverAt = prng.chance(0.2) ? prng.int(count) : -1;
      let next: Promise<Volume> | undefined;
      for (let i = 0; i < count; i++) {
        if (i === takeoverAt) {
          const target = ((owner % 3) + 1) as NodeId;
          next = (managers.get(target) as VolumeManager).open({ name: "model", takeover: true });
          owner = target;
        }
        const raw = issue(volume, model, prng);
        // Outcomes are collected at once (no unhandled rejection) and judged in issue order.
        const op = {
          ...raw,
          promise: raw.promise.then(
            (value) => ({ ok: true as const, value }),
            (error: unknown) => ({ ok: false as const, error }),
          ),
        };
        applyIssued(model, op);
        ops.push(op);
      }
      await settle(model, ops);
      if (process.env.HES_MODEL_DEBUG) {
        console.log(
          `round ${round}: fault ${victim.fault} on ${victim.nodeId}, takeover ${takeoverAt}`,
        );
        for (const op of ops) {
          const o = (await op.promise) as { ok: boolean; error?: unknown };
          console.log(
            `  ${op.kind} ${op.offsetBytes}+${op.lengthBytes} ${o.ok ? "ok" : String(o.error)}`,
          );
        }
      }
      victim.fault = "ok";
      if (next !== undefined) {
        const old = volume;
        volume = await next;
        await old.close();
      }
      await catchUp(t, volume, model);
      const all = await volume.read({ offsetBytes: 0, lengthBytes: SIZE });
      model.check(0, all, model.data, `round ${round} full read`);
      if (prng.chance(0.3)) {
        const name = `s${round}`;
        await volume.snapshots.create({ name });
        snapshots.push({ name, data: model.data.slice(), uncertain: model.uncertain.slice() });
        model.touched = new Uint8Array(BLOCKS);
      }
    }
    await checkSnapshots(volume, model, snapshots, managers, owner);
    await volume.close();
  } catch (error) {
    console.log(`model check failed: seed=${seed}`);
    throw error;
  } finally {
    await t.close();
  }
}

async function checkSnapshots(
  volume: Volume,
  model: Model,
  snapshots: readonly { name: string; data: Uint8Array; uncertain: Uint8Array }[],
  managers: Map<NodeId, VolumeManager>,
  owner: NodeId,
): Promise<void> {
  const last = snapshots.at(-1);
  if (last === undefined) return;
  const diff = await volume.diff({ fromSnapshot: last.name });
  const inDiff = new Uint8Array(BLOCKS);
  for (const e of diff)
    inDiff.fill(1, e.offsetBytes / BLOCK, (e.offsetBytes + e.lengthBytes) / BLOCK);
  for (let b = 0; b < BLOCKS; b++) {
    if (inDiff[b] === 1)
      assert.equal(
        model.touched[b],
        1,
        `diff reports block ${b}, never touched since ${last.name}`,
      );
    const differs = !Buffer.from(model.data.subarray(b * BLOCK, (b + 1) * BLOCK)).equals(
      Buffer.from(last.data.subarray(b * BLOCK, (b + 1) * BLOCK)),
    );
    if (differs && model.uncertain[b] === 0 && last.uncertain[b] === 0)
      assert.equal(inDiff[b], 1, `block ${b} changed but is not in the diff`);
  }
  const manager = managers.get(owner) as VolumeManager;
  for (const snapshot of snapshots) {
    await manager.clone({
      source: "model",
      snapshot: snapshot.name,
      name: `clone-${snapshot.name}`,
    });
    const clone = await manager.open({ name: `clone-${snapshot.name}` });
    const data = await clone.read({ offsetBytes: 0, lengthBytes: SIZE });
    const view = new Model();
    view.uncertain.set(snapshot.uncertain);
    view.check(0, data, snapshot.data, `clone of ${snapshot.name}`);
    await clone.close();
  }
}

const first = Number(process.env.HES_MODEL_SEED ?? 1);
const count = Number(process.env.HES_MODEL_SEEDS ?? 3);
for (let seed = first; seed < first + count; seed++) {
  test(`model check, seed ${seed}`, async () => {
    await runSeed(seed);
  });
}
