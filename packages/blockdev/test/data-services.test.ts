/**
 * Data services over three real stores and the real map: snapshots (create, list, rollback,
 * delete), linked clones reading through their parent's snapshot with copy-up of partial
 * blocks, flatten with progress, diff between snapshots and the head, exact space accounting,
 * QoS limits changed online, and fencing at the replicas when the old owner never sees the map.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { isHesError, type NodeId } from "@hes/base";
import { type ClusterControl, type ClusterMapView, DirectCluster } from "@hes/replication";
import { VolumeManager } from "../src/index.js";
import { MiB, pattern, startCluster, type TestCluster } from "./fixture.js";

let t: TestCluster;
before(async () => {
  t = await startCluster(3);
});
after(async () => {
  await t.close();
});

const bytes = (data: Uint8Array) => Buffer.from(data);

test("snapshots: create, list, diff, space, rollback, delete", async () => {
  const manager = t.manager(1);
  await manager.create({ name: "snap", sizeBytes: 4 * MiB, chunkSizeBytes: MiB });
  const volume = await manager.open({ name: "snap" });
  await volume.write({ offsetBytes: 0, data: pattern(1, 16384) });
  const s1 = await volume.snapshots.create({ name: "s1" });
  assert.deepEqual(
    volume.snapshots.list().map((s) => s.name),
    ["s1"],
  );
  await volume.write({ offsetBytes: 4096, data: pattern(2, 4096) });
  await volume.write({ offsetBytes: 2 * MiB, data: pattern(3, 8192) });
  await volume.snapshots.create({ name: "s2" });
  await volume.discard({ offsetBytes: 0, lengthBytes: 4096 });

  assert.deepEqual(await volume.diff({ fromSnapshot: "s1", toSnapshot: "s2" }), [
    { offsetBytes: 4096, lengthBytes: 4096 },
    { offsetBytes: 2 * MiB, lengthBytes: 8192 },
  ]);
  assert.deepEqual(await volume.diff({ fromSnapshot: "s2" }), [
    { offsetBytes: 0, lengthBytes: 4096 },
  ]);
  assert.deepEqual(await volume.diff({ toSnapshot: "s1" }), [
    { offsetBytes: 0, lengthBytes: 16384 },
  ]);

  const space = await volume.space();
  const by = Object.fromEntries(space.map((s) => [s.view, s]));
  // s1: 4 blocks; block 0 shared with s2, block 1 unique (rewritten), blocks 2-3 shared.
  assert.deepEqual(by.s1, {
    view: "s1",
    allocatedBytes: 16384,
    uniqueBytes: 4096,
    sharedBytes: 12288,
  });
  // s2: blocks 0-3 + 2 in chunk 2. Block 0 is unique to s1..s2 boundary? shared with s1, gone
  // from head (discarded); blocks 1-3 and chunk 2 are shared with the head.
  assert.deepEqual(by.s2, {
    view: "s2",
    allocatedBytes: 24576,
    uniqueBytes: 0,
    sharedBytes: 24576,
  });
  assert.deepEqual(by.head, {
    view: "head",
    allocatedBytes: 20480,
    uniqueBytes: 0,
    sharedBytes: 20480,
  });

  await volume.snapshots.rollback({ name: "s1" });
  assert.deepEqual(
    bytes(await volume.read({ offsetBytes: 0, lengthBytes: 16384 })),
    bytes(pattern(1, 16384)),
  );
  assert.ok((await volume.read({ offsetBytes: 2 * MiB, lengthBytes: 8192 })).every((b) => b === 0));
  await volume.snapshots.delete({ name: "s2" });
  assert.deepEqual(
    volume.snapshots.list().map((s) => s.name),
    ["s1"],
  );
  for (const node of t.nodes) {
    for (const chunk of node.store.listChunks()) {
      if (chunk.chunk.volumeId === volume.volumeId)
        assert.ok(!chunk.snapshotIds.includes(s1.snapshotId + 1));
    }
  }
  await volume.close();
});

test("linked clones read through the parent's snapshot; partial writes copy up; flatten", async () => {
  const manager = t.manager(1);
  await manager.create({ name: "golden", sizeBytes: 4 * MiB, chunkSizeBytes: MiB });
  const golden = await manager.open({ name: "golden" });
  await golden.write({ offsetBytes: 0, data: pattern(10, 3 * MiB) });
  await golden.snapshots.create({ name: "base" });
  await golden.write({ offsetBytes: 0, data: pattern(11, 8192) }); // after the snapshot
  await golden.close();

  const info = await manager.clone({ source: "golden", snapshot: "base", name: "vm1" });
  assert.equal(info.parentVolumeId, golden.volumeId);
  const clone = await manager.open({ name: "vm1" });
  const model = new Uint8Array(4 * MiB);
  model.set(pattern(10, 3 * MiB));
  assert.deepEqual(bytes(await clone.read({ offsetBytes: 0, lengthBytes: 4 * MiB })), bytes(model));
  await clone.write({ offsetBytes: 512, data: pattern(12, 512) }); // copy-up of a partial block
  model.set(pattern(12, 512), 512);
  await clone.discard({ offsetBytes: MiB, lengthBytes: 4096 }); // must stay zero, not read through
  model.fill(0, MiB, MiB + 4096);
  assert.deepEqual(bytes(await clone.read({ offsetBytes: 0, lengthBytes: 4 * MiB })), bytes(model));
  const allocation = await clone.allocation({ offsetBytes: 0, lengthBytes: 4 * MiB });
  const at2 = allocation.find(
    (e) => e.offsetBytes <= 2 * MiB && e.offsetBytes + e.lengthBytes > 2 * MiB,
  );
  assert.ok(at2 !== undefined && !at2.hole && !at2.zero, "the parent's data shows through");
  assert.ok(allocation.at(-1)?.hole, "what the parent never wrote is a hole");

  const job = clone.flatten();
  await job.done;
  assert.deepEqual(job.progress(), { chunksDone: 4, chunksTotal: 4 });
  const own = t.cluster.map.chunksOfVolume(clone.volumeId).length;
  assert.equal(own, 4, "every chunk now lives in the clone");
  assert.deepEqual(bytes(await clone.read({ offsetBytes: 0, lengthBytes: 4 * MiB })), bytes(model));
  // Flatten cut the parent link: the parent's snapshot and the parent itself may now go, and
  // the clone reads the same without them.
  assert.equal(t.cluster.map.volume(clone.volumeId)?.parentVolumeId, 0);
  const parent = await manager.open({ name: "golden" });
  await parent.snapshots.delete({ name: "base" });
  await parent.close();
  await manager.delete({ name: "golden" });
  assert.deepEqual(bytes(await clone.read({ offsetBytes: 0, lengthBytes: 4 * MiB })), bytes(model));
  await clone.write({ offsetBytes: 3 * MiB, data: pattern(13, 4096) });
  model.set(pattern(13, 4096), 3 * MiB);
  assert.deepEqual(bytes(await clone.read({ offsetBytes: 0, lengthBytes: 4 * MiB })), bytes(model));
  await clone.close();
  const reopened = await manager.open({ name: "vm1" });
  assert.deepEqual(
    bytes(await reopened.read({ offsetBytes: 0, lengthBytes: 4 * MiB })),
    bytes(model),
  );
  await reopened.close();
});

test("a clone not flattened keeps its parent: the parent snapshot cannot be deleted", async () => {
  const manager = t.manager(1);
  await manager.create({ name: "golden2", sizeBytes: 2 * MiB, chunkSizeBytes: MiB });
  const golden = await manager.open({ name: "golden2" });
  await golden.write({ offsetBytes: 0, data: pattern(30, 8192) });
  await golden.snapshots.create({ name: "base" });
  await manager.clone({ source: "golden2", snapshot: "base", name: "vm2" });
  await assert.rejects(golden.snapshots.delete({ name: "base" }), (e: unknown) =>
    isHesError(e, "HES_INVALID_ARGUMENT"),
  );
  await golden.close();
  await assert.rejects(manager.delete({ name: "golden2" }), (e: unknown) => isHesError(e));
});

test("QoS: an IOPS limit paces IO and can be lifted online", async () => {
  const manager = t.manager(1);
  await manager.create({ name: "qos", sizeBytes: 4 * MiB, chunkSizeBytes: MiB });
  const volume = await manager.open({ name: "qos", qos: { iops: 20 } });
  const data = pattern(20, 4096);
  // The bucket starts with one second of credit (20 writes); 30 writes need >= 0.5 s more.
  let started = performance.now();
  for (let i = 0; i < 30; i++) await volume.write({ offsetBytes: 0, data });
  const limitedMs = performance.now() - started;
  assert.ok(limitedMs >= 450, `30 writes at 20 IOPS took ${limitedMs} ms`);
  volume.setQos({ iops: 0 });
  started = performance.now();
  for (let i = 0; i < 30; i++) await volume.write({ offsetBytes: 0, data });
  assert.ok(performance.now() - started < limitedMs, "lifting the limit online speeds IO up");
  assert.throws(() => volume.setQos({ iops: -1 }), RangeError);
  await volume.close();
});

test("an old owner that never sees the map is fenced by the replicas the new owner sealed", async () => {
  const manager = t.manager(1);
  await manager.create({ name: "blind", sizeBytes: 4 * MiB, chunkSizeBytes: MiB });
  // Node 1's control never reports map changes (its view is the live map, but no callbacks),
  // as a partitioned host would behave.
  const real = t.cluster.control(1);
  const deaf: ClusterControl = { ...real, subscribe: () => () => undefined };
  const blindManager = new VolumeManager({
    control: deaf,
    directory: { replica: (n: NodeId) => t.nodes[n - 1]?.replica as never },
  });
  const a = await blindManager.open({ name: "blind" });
  await a.write({ offsetBytes: 0, data: pattern(30, 4096) });
  const b = await t.manager(2).open({ name: "blind", takeover: true });
  await assert.rejects(a.write({ offsetBytes: 0, data: pattern(31, 4096) }), (e: unknown) =>
    isHesError(e, "HES_FENCED"),
  );
  assert.ok(a.fenced);
  assert.deepEqual(
    bytes(await b.read({ offsetBytes: 0, lengthBytes: 4096 })),
    bytes(pattern(30, 4096)),
  );
  await b.close();
  await a.close();
  void DirectCluster;
  void (null as unknown as ClusterMapView);
});
