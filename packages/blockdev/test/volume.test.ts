/**
 * Volume over three real extent stores and the real cluster map (DirectCluster): lifecycle,
 * the BlockDevice operations, fan-out with quorum and failure reports, fencing on takeover,
 * seal + reconcile, checksum repair, snapshots, clones, diff, space and QoS.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { isHesError } from "@hes/base";
import type { Volume } from "../src/index.js";
import { MiB, pattern, startCluster, type TestCluster } from "./fixture.js";

const code =
  (c: string) =>
  (error: unknown): boolean =>
    isHesError(error) && error.code === c;

let t: TestCluster;
before(async () => {
  t = await startCluster(3);
});
after(async () => {
  await t.close();
});

async function fresh(name: string, sizeBytes = 8 * MiB): Promise<Volume> {
  const manager = t.manager(1);
  await manager.create({ name, sizeBytes, chunkSizeBytes: MiB });
  return manager.open({ name });
}

test("lifecycle: create, open takes the lease, second open refused, close, stat, list, delete", async () => {
  const one = t.manager(1);
  const two = t.manager(2);
  const info = await one.create({ name: "life", sizeBytes: 4 * MiB, chunkSizeBytes: MiB });
  assert.equal(info.placedChunks, 0);
  await assert.rejects(
    one.create({ name: "life", sizeBytes: 4 * MiB }),
    code("HES_ALREADY_EXISTS"),
  );
  await assert.rejects(one.create({ name: "bad", sizeBytes: 1000 }), RangeError);
  const volume = await one.open({ name: "life" });
  await assert.rejects(two.open({ name: "life" }), code("HES_LEASE_HELD"));
  await volume.write({ offsetBytes: MiB, data: pattern(1, 8192) });
  assert.equal((await one.stat({ name: "life" })).placedChunks, 1);
  assert.equal((await one.stat({ name: "life" })).ownerNodeId, 1);
  await assert.rejects(one.delete({ name: "life" }), code("HES_LEASE_HELD"));
  await volume.close();
  await assert.rejects(volume.read({ offsetBytes: 0, lengthBytes: 512 }), code("HES_CLOSED"));
  assert.equal((await one.stat({ name: "life" })).ownerNodeId, 0);
  assert.ok(one.list().some((v) => v.name === "life"));
  await one.delete({ name: "life" });
  assert.ok(!one.list().some((v) => v.name === "life"));
  for (const node of t.nodes) {
    assert.ok(!node.store.listChunks().some((c) => c.chunk.volumeId === info.volumeId));
  }
  await assert.rejects(one.open({ name: "life" }), code("HES_NOT_FOUND"));
});

test("grow online; shrink only when asked, and the cut tail reads as zeros after growing back", async () => {
  const manager = t.manager(1);
  const volume = await fresh("resize", 2 * MiB);
  await volume.write({ offsetBytes: 2 * MiB - 8192, data: pattern(2, 8192) });
  await volume.resize({ sizeBytes: 3 * MiB });
  assert.equal(volume.sizeBytes, 3 * MiB);
  await volume.write({ offsetBytes: 3 * MiB - 4096, data: pattern(3, 4096) });
  await volume.close();
  await assert.rejects(
    manager.resize({ name: "resize", sizeBytes: MiB }),
    code("HES_INVALID_ARGUMENT"),
  );
  await manager.resize({ name: "resize", sizeBytes: MiB + 4096, allowShrink: true });
  await manager.resize({ name: "resize", sizeBytes: 3 * MiB });
  const again = await manager.open({ name: "resize" });
  const tail = await again.read({ offsetBytes: MiB + 4096, lengthBytes: 2 * MiB - 4096 });
  assert.ok(
    tail.every((b) => b === 0),
    "data past a shrink does not come back",
  );
  await again.close();
});

test("IO: aligned and 512-byte writes, zeroes, discard, allocation, bad input changes nothing", async () => {
  const volume = await fresh("io");
  const model = new Uint8Array(volume.sizeBytes);
  const write = async (offsetBytes: number, data: Uint8Array) => {
    await volume.write({ offsetBytes, data });
    model.set(data, offsetBytes);
  };
  await write(0, pattern(10, 3 * 4096));
  await write(512, pattern(11, 1024));
  await write(MiB - 1536, pattern(12, 4096));
  await volume.writeZeroes({ offsetBytes: 4096, lengthBytes: 4096, mayUnmap: false });
  model.fill(0, 4096, 8192);
  await volume.discard({ offsetBytes: 8192 + 512, lengthBytes: 1024 });
  model.fill(0, 8192 + 512, 8192 + 1536);
  assert.deepEqual(
    await volume.read({ offsetBytes: 0, lengthBytes: 2 * MiB }),
    model.subarray(0, 2 * MiB),
  );
  const extents = await volume.allocation({ offsetBytes: 0, lengthBytes: volume.sizeBytes });
  assert.equal(
    extents.reduce((n, e) => n + e.lengthBytes, 0),
    volume.sizeBytes,
  );
  assert.deepEqual(extents[0], { offsetBytes: 0, lengthBytes: 4096, hole: false, zero: false });
  assert.deepEqual(extents[1], { offsetBytes: 4096, lengthBytes: 4096, hole: false, zero: true });
  assert.ok(extents.at(-1)?.hole, "unwritten chunks are holes");
  await assert.rejects(volume.write({ offsetBytes: 100, data: new Uint8Array(512) }), RangeError);
  await assert.rejects(
    volume.write({ offsetBytes: volume.sizeBytes, data: new Uint8Array(512) }),
    RangeError,
  );
  await assert.rejects(volume.read({ offsetBytes: 0, lengthBytes: 33 * MiB }), RangeError);
  assert.deepEqual(
    await volume.read({ offsetBytes: 0, lengthBytes: 2 * MiB }),
    model.subarray(0, 2 * MiB),
  );
  await volume.flush();
  await volume.close();
});

test("compareAndWrite writes on a match and reports HES_MISCOMPARE with the current data", async () => {
  const volume = await fresh("caw");
  await volume.write({ offsetBytes: 0, data: pattern(20, 512) });
  await volume.compareAndWrite({
    offsetBytes: 0,
    expected: pattern(20, 512),
    data: pattern(21, 512),
  });
  assert.deepEqual(await volume.read({ offsetBytes: 0, lengthBytes: 512 }), pattern(21, 512));
  await assert.rejects(
    volume.compareAndWrite({ offsetBytes: 0, expected: pattern(20, 512), data: pattern(22, 512) }),
    (error: unknown) =>
      code("HES_MISCOMPARE")(error) &&
      Buffer.from((error as { details: { current: Uint8Array } }).details.current).equals(
        pattern(21, 512),
      ),
  );
  // Many racing CAWs on one lock word: exactly one wins each round.
  const word = (n: number) => new Uint8Array(512).fill(n);
  await volume.write({ offsetBytes: 4096, data: word(0) });
  const results = await Promise.allSettled(
    [1, 2, 3, 4, 5].map((n) =>
      volume.compareAndWrite({ offsetBytes: 4096, expected: word(0), data: word(n) }),
    ),
  );
  assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
  await volume.close();
});

test("copyRange is offloaded to the replicas when chunks share them, else copied", async () => {
  const volume = await fresh("copy");
  await volume.write({ offsetBytes: 0, data: pattern(30, 64 * 1024) });
  await volume.write({ offsetBytes: MiB, data: new Uint8Array(4096) }); // place chunk 1
  const result = await volume.copyRange({
    sourceOffsetBytes: 0,
    offsetBytes: MiB + 8192,
    lengthBytes: 64 * 1024,
  });
  const view = t.cluster.map;
  const same =
    JSON.stringify(
      view
        .chunk(volume.volumeId, 0)
        ?.replicas.map((r) => r.nodeId)
        .sort(),
    ) ===
    JSON.stringify(
      view
        .chunk(volume.volumeId, 1)
        ?.replicas.map((r) => r.nodeId)
        .sort(),
    );
  assert.equal(result.offloadedBytes, same ? 64 * 1024 : 0);
  assert.deepEqual(
    await volume.read({ offsetBytes: MiB + 8192, lengthBytes: 64 * 1024 }),
    pattern(30, 64 * 1024),
  );
  const unaligned = await volume.copyRange({
    sourceOffsetBytes: 512,
    offsetBytes: 3 * MiB + 1024,
    lengthBytes: 4096,
  });
  assert.equal(unaligned.copiedBytes, 4096);
  assert.deepEqual(
    await volume.read({ offsetBytes: 3 * MiB + 1024, lengthBytes: 4096 }),
    pattern(30, 64 * 1024).subarray(512, 4608),
  );
  const other = await fresh("copy-target");
  await other.copyRange({
    source: volume,
    sourceOffsetBytes: 0,
    offsetBytes: 0,
    lengthBytes: 64 * 1024,
  });
  assert.deepEqual(
    await other.read({ offsetBytes: 0, lengthBytes: 64 * 1024 }),
    pattern(30, 64 * 1024),
  );
  await other.close();
  await volume.close();
});

test("a failing replica is reported with its watermark and left out; the write still succeeds", async () => {
  const volume = await fresh("fail");
  await volume.write({ offsetBytes: 0, data: pattern(40, 4096) });
  const chunk = t.cluster.map.chunk(volume.volumeId, 0);
  const victim = t.nodes.find((n) => n.nodeId === chunk?.replicas.at(-1)?.nodeId);
  assert.ok(victim);
  victim.fault = "fail";
  try {
    await volume.write({ offsetBytes: 4096, data: pattern(41, 4096) });
    const after = t.cluster.map.chunk(volume.volumeId, 0);
    const replica = after?.replicas.find((r) => r.nodeId === victim.nodeId);
    assert.equal(replica?.state, "stale");
    const firstSeq = victim.store.version({ volumeId: volume.volumeId, chunkIndex: 0 })?.durableSeq;
    assert.equal(replica?.durableSeq, firstSeq, "safeSeq = everything it acknowledged");
    assert.ok(victim.faultedCalls > 0);
    await volume.write({ offsetBytes: 8192, data: pattern(42, 4096) });
    assert.deepEqual(
      await volume.read({ offsetBytes: 4096, lengthBytes: 8192 }),
      new Uint8Array(Buffer.concat([pattern(41, 4096), pattern(42, 4096)])),
    );
  } finally {
    victim.fault = "ok";
  }
  await volume.close();
});

test("a hung replica is cut off at the deadline; below the quorum nothing is acknowledged", async () => {
  const manager = t.manager(1, { replicaDeadlineMs: 100 });
  await manager.create({ name: "hang", sizeBytes: 4 * MiB, chunkSizeBytes: MiB });
  const volume = await manager.open({ name: "hang" });
  await volume.write({ offsetBytes: 0, data: pattern(50, 4096) });
  const replicas = t.cluster.map.chunk(volume.volumeId, 0)?.replicas.map((r) => r.nodeId) ?? [];
  const [a, b] = replicas.filter((n) => n !== 1).map((n) => t.nodes[n - 1]);
  assert.ok(a && b);
  a.fault = "hang";
  const started = performance.now();
  await volume.write({ offsetBytes: 4096, data: pattern(51, 4096) });
  assert.ok(performance.now() - started < 1000, "the write did not wait for the hung replica");
  b.fault = "fail";
  await assert.rejects(
    volume.write({ offsetBytes: 8192, data: pattern(52, 4096) }),
    code("HES_QUORUM_LOST"),
  );
  a.fault = "ok";
  b.fault = "ok";
  assert.deepEqual(await volume.read({ offsetBytes: 4096, lengthBytes: 4096 }), pattern(51, 4096));
  await volume.close();
});

test("takeover fences the old owner: its later writes fail HES_FENCED and never land", async () => {
  const a = await fresh("migrate");
  await a.write({ offsetBytes: 0, data: pattern(60, 4096) });
  const started = performance.now();
  const b = await t.manager(2).open({ name: "migrate", takeover: true });
  await b.write({ offsetBytes: 4096, data: pattern(61, 4096) });
  const takeoverMs = performance.now() - started;
  await assert.rejects(a.write({ offsetBytes: 0, data: pattern(62, 4096) }), code("HES_FENCED"));
  await assert.rejects(a.read({ offsetBytes: 0, lengthBytes: 4096 }), code("HES_FENCED"));
  assert.deepEqual(
    await b.read({ offsetBytes: 0, lengthBytes: 8192 }),
    new Uint8Array(Buffer.concat([pattern(60, 4096), pattern(61, 4096)])),
  );
  console.log(`takeover-to-first-acknowledged-write: ${takeoverMs.toFixed(2)} ms`);
  await a.close();
  await b.close();
});

test("a corrupt block is read from another replica and repaired", async () => {
  const volume = await fresh("corrupt");
  await volume.write({ offsetBytes: 0, data: pattern(70, 4096) });
  const local = t.nodes[0];
  assert.ok(local);
  const original = local.replica.read.bind(local.replica);
  let corruptions = 0;
  local.replica.read = async (...args) => {
    if (corruptions === 0) {
      corruptions++;
      const { HesError } = await import("@hes/base");
      throw new HesError("HES_CORRUPTION", "injected checksum failure");
    }
    return original(...args);
  };
  const chunk = { volumeId: volume.volumeId, chunkIndex: 0 };
  const before = local.store.version(chunk)?.durableSeq ?? 0;
  try {
    assert.deepEqual(await volume.read({ offsetBytes: 0, lengthBytes: 4096 }), pattern(70, 4096));
    assert.equal(corruptions, 1);
    assert.ok(
      (local.store.version(chunk)?.durableSeq ?? 0) > before,
      "the bad replica was rewritten",
    );
    const healed = await local.store.read(chunk, 0, 4096);
    assert.deepEqual(Buffer.from(healed), Buffer.from(pattern(70, 4096)));
  } finally {
    local.replica.read = original;
  }
  await volume.close();
});

test("a new owner reconciles replicas that differ in their last writes (highest seq wins)", async () => {
  const manager = t.manager(1);
  const volume = await fresh("reconcile");
  await volume.write({ offsetBytes: 0, data: pattern(80, 8192) });
  const epoch = volume.epoch;
  await volume.close();
  // An unacknowledged write that reached one replica only (its owner died before the others).
  const chunk = { volumeId: volume.volumeId, chunkIndex: 0 };
  const holders = t.cluster.map.chunk(volume.volumeId, 0)?.replicas.map((r) => r.nodeId) ?? [];
  const lone = t.nodes[(holders[1] as number) - 1];
  assert.ok(lone);
  const seq = (lone.store.version(chunk)?.durableSeq ?? 0) + 1;
  await lone.store.write(chunk, 4096, pattern(81, 4096), { epoch, seq });
  const reopened = await manager.open({ name: "reconcile" });
  const expected = await reopened.read({ offsetBytes: 4096, lengthBytes: 4096 });
  assert.deepEqual(Buffer.from(expected), Buffer.from(pattern(81, 4096)), "the newest write wins");
  for (const nodeId of holders) {
    const store = t.nodes[nodeId - 1]?.store;
    const data = await store?.read(chunk, 4096, 4096);
    assert.deepEqual(Buffer.from(data ?? []), Buffer.from(pattern(81, 4096)), `node ${nodeId}`);
  }
  await reopened.close();
});

test("when an epoch's seqs run low the volume takes a new epoch and keeps its data", async () => {
  const manager = t.manager(1);
  await manager.create({ name: "renew", sizeBytes: 4 * MiB, chunkSizeBytes: MiB });
  const volume = await manager.open({ name: "renew", seqCounterMax: 16 });
  const first = volume.epoch;
  for (let i = 0; i < 40; i++) {
    await volume.write({ offsetBytes: (i % 8) * 4096, data: pattern(90 + i, 4096) });
  }
  assert.ok(volume.epoch > first + 1, `epoch went from ${first} to ${volume.epoch}`);
  assert.ok(!volume.fenced);
  for (let i = 32; i < 40; i++) {
    const data = await volume.read({ offsetBytes: (i % 8) * 4096, lengthBytes: 4096 });
    assert.deepEqual(Buffer.from(data), Buffer.from(pattern(90 + i, 4096)));
  }
  await volume.close();
});
