/**
 * Goal: a replica that missed a write while it was out of sync is never read from, nor
 * counted, once the map says it caught up, until its owner has given it that write (found by
 * the fault suite, crashes seed 554248899: a read on the owner's own replica, just reported
 * caught up, went back in time). The mover may report a replica caught up from a pass that
 * began before the write reached its source; the write itself failed at the replica.
 * Method: the owner's own replica (node 3) is stale; a write succeeds on the other two and
 * fails on it; the map is then told it caught up (as such a mover would). The next read must
 * return the write, and node 3's store must hold it afterwards.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { pattern, startCluster, type TestCluster } from "./fixture.js";

let t: TestCluster;
before(async () => {
  t = await startCluster(3);
});
after(async () => {
  await t.close();
});

test("a replica reported caught up without a write it missed gets it before any read", async () => {
  const owner = t.manager(3);
  await owner.create({ name: "owed", sizeBytes: 1024 * 1024, chunkSizeBytes: 1024 * 1024 });
  const volume = await owner.open({ name: "owed" });
  const node3 = t.nodes[2];
  assert.ok(node3 !== undefined);
  try {
    await volume.write({ offsetBytes: 0, data: pattern(1, 8192) });
    // Node 3 fails a write: reported, it is stale from now on and gets writes as a follower.
    node3.fault = "fail";
    await volume.write({ offsetBytes: 0, data: pattern(2, 4096) });
    const stale = () =>
      t.cluster.map.chunk(volume.volumeId, 0)?.replicas.find((r) => r.nodeId === 3);
    assert.equal(stale()?.state, "stale");
    // The write it misses as a follower (block 1), acknowledged by nodes 1 and 2.
    await volume.write({ offsetBytes: 4096, data: pattern(3, 4096) });
    node3.fault = "ok";
    // A mover whose pass began before that write reached its source reports it caught up.
    await t.cluster.control(3).propose({
      kind: "reportReplicaCaughtUp",
      fields: { volumeId: volume.volumeId, chunkIndex: 0, epoch: volume.epoch, nodeId: 3 },
    });
    assert.equal(stale()?.state, "in-sync");
    // The owner reads its own replica first: it must not see block 1 as it was before.
    const data = await volume.read({ offsetBytes: 4096, lengthBytes: 4096 });
    assert.deepEqual(Buffer.from(data), Buffer.from(pattern(3, 4096)));
    const chunk = { volumeId: volume.volumeId, chunkIndex: 0 };
    const onNode3 = await node3.replica.read(chunk, 4096, 4096, { epoch: volume.epoch });
    assert.deepEqual(Buffer.from(onNode3), Buffer.from(pattern(3, 4096)), "node 3 got the write");
  } finally {
    node3.fault = "ok";
    await volume.close();
  }
});
