/**
 * Goal: a snapshot taken while a replica was out of sync stays readable from that replica once
 * it is back in sync (the owner pins only in-sync replicas; the mover must copy the pin).
 * Method: three real stores and the real map; node C misses a write (stale), snapshot S is
 * taken (pinned on A and B), C is caught up by the real Mover, then A and B fail every call:
 * S must still read through a linked clone, from C alone, with its content; and the head
 * written after S must not have leaked into C's pin.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Mover } from "@hes/replication";
import { MiB, pattern, startCluster, type TestCluster } from "./fixture.js";

let t: TestCluster;
before(async () => {
  t = await startCluster(3);
});
after(async () => {
  await t.close();
});

test("a replica caught up after a snapshot gets its pin from an in-sync one", async () => {
  const manager = t.manager(1);
  await manager.create({ name: "pins", sizeBytes: 2 * MiB, chunkSizeBytes: MiB });
  const volume = await manager.open({ name: "pins" });
  await volume.write({ offsetBytes: 0, data: pattern(1, 8192) });
  const replicas = t.cluster.map.chunk(volume.volumeId, 0)?.replicas.map((r) => r.nodeId) ?? [];
  const c = t.nodes.find((n) => n.nodeId === replicas.find((id) => id !== 1));
  const others = t.nodes.filter((n) => n !== c);
  assert.ok(c !== undefined && replicas.length === 3);
  c.fault = "fail";
  await volume.write({ offsetBytes: 8192, data: pattern(2, 4096) }); // C misses it: stale
  const stale = t.cluster.map
    .chunk(volume.volumeId, 0)
    ?.replicas.find((r) => r.nodeId === c.nodeId);
  assert.equal(stale?.state, "stale");
  await volume.snapshots.create({ name: "s" });
  c.fault = "ok";
  await volume.write({ offsetBytes: 0, data: pattern(3, 4096) }); // after S: not in S
  const mover = new Mover({
    nodeId: c.nodeId,
    control: t.cluster.control(c.nodeId),
    replicas: t.directory,
  });
  const results = await mover.runOnce();
  assert.ok(
    results.some((r) => r.ok && r.chunk.chunkIndex === 0),
    JSON.stringify(results),
  );
  const back = t.cluster.map.chunk(volume.volumeId, 0)?.replicas.find((r) => r.nodeId === c.nodeId);
  assert.equal(back?.state, "in-sync");
  await volume.close();

  await manager.clone({ source: "pins", snapshot: "s", name: "pins-clone" });
  const clone = await t.manager(c.nodeId).open({ name: "pins-clone" });
  for (const node of others) node.fault = "fail";
  try {
    const data = await clone.read({ offsetBytes: 0, lengthBytes: 16384 });
    const model = new Uint8Array(16384);
    model.set(pattern(1, 8192));
    model.set(pattern(2, 4096), 8192);
    assert.deepEqual(Buffer.from(data), Buffer.from(model), "S read from C alone");
  } finally {
    for (const node of others) node.fault = "ok";
    await clone.close();
  }
});
