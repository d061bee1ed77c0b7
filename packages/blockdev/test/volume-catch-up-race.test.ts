/**
 * Goal: the mover's catch-up pass never undoes a write that reached the replica it copies to
 * before the copy's source (found by the fault suite, crashes seed 1390180299: an acknowledged
 * write read as zeros after a takeover had reconciled from a replica the mover had just
 * reported caught up). The volume writes to a stale replica too, and its write may land there
 * before it lands on the in-sync ones; the pass then sees a block only the stale replica
 * changed and, before the fix, copied the source's older content over it.
 * Method: node 3 is stale; a write is held at nodes 1 and 2 (the in-sync ones) while it has
 * landed on node 3; node 3's mover runs a whole catch-up (reported caught up); then the write
 * is released and acknowledged. Node 3 must hold it, and so must every read after nodes 1 and
 * 2 are gone. (That a block the source lacks from an older epoch is still replaced, the
 * mover tests and the data-plane simulation check.)
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { NodeId } from "@hes/base";
import { Mover } from "@hes/replication";
import { VolumeManager } from "../src/index.js";
import { aroundWrites, MiB, pattern, startCluster, type TestCluster, until } from "./fixture.js";

let t: TestCluster;
before(async () => {
  t = await startCluster(3);
});
after(async () => {
  await t.close();
});

const BLOCK = 4096;

/** t.directory, with writes to `held` nodes waiting for `release()` while `hold.on`. */
function holdingDirectory(held: readonly NodeId[]) {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const hold = { on: false, waiting: 0 };
  const directory = aroundWrites(t.directory, async (nodeId, write) => {
    if (hold.on && held.includes(nodeId)) {
      hold.waiting++;
      await gate;
    }
    return write();
  });
  return { directory, hold, release };
}

test("a catch-up pass keeps a write that reached the stale replica before its source", async () => {
  const { directory, hold, release } = holdingDirectory([1, 2]);
  const writer = new VolumeManager({ control: t.cluster.control(1), directory });
  await writer.create({ name: "race", sizeBytes: MiB, chunkSizeBytes: MiB });
  const volume = await writer.open({ name: "race" });
  const [node1, node2, node3] = t.nodes;
  assert.ok(node1 !== undefined && node2 !== undefined && node3 !== undefined);
  const chunk = { volumeId: volume.volumeId, chunkIndex: 0 };
  const state = () => t.cluster.map.chunk(volume.volumeId, 0)?.replicas.find((r) => r.nodeId === 3);
  try {
    await volume.write({ offsetBytes: 0, data: pattern(1, 4 * BLOCK) });
    // Node 3 misses a write (block 1): stale from now on, a follower of later writes.
    node3.fault = "fail";
    await volume.write({ offsetBytes: BLOCK, data: pattern(2, BLOCK) });
    assert.equal(state()?.state, "stale");
    node3.fault = "ok";
    // The write under test (block 2): on node 3 at once, held at nodes 1 and 2.
    hold.on = true;
    const write = volume.write({ offsetBytes: 2 * BLOCK, data: pattern(3, BLOCK) });
    await until(() => hold.waiting >= 2, "the write held at nodes 1 and 2");
    const landed = async () =>
      Buffer.from(await node3.replica.read(chunk, 2 * BLOCK, BLOCK, { epoch: volume.epoch }));
    for (let turn = 0; turn < 1000; turn++) {
      if (Buffer.compare(await landed(), Buffer.from(pattern(3, BLOCK))) === 0) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.deepEqual(await landed(), Buffer.from(pattern(3, BLOCK)), "the write is on node 3");
    // Node 3's mover catches it up meanwhile, from node 1 or 2 (which lack the write).
    const mover = new Mover({ nodeId: 3, control: t.cluster.control(3), replicas: t.directory });
    const results = await mover.runOnce();
    await mover.close();
    assert.deepEqual(
      results.map((r) => [r.kind, r.ok]),
      [["catch-up", true]],
    );
    assert.equal(state()?.state, "in-sync");
    hold.on = false;
    release();
    await write;
    // Nodes 1 and 2 are gone: node 3 alone must return every acknowledged write.
    const want = Buffer.concat([pattern(1, BLOCK), pattern(2, BLOCK), pattern(3, BLOCK)]);
    const onNode3 = await node3.replica.read(chunk, 0, 3 * BLOCK, { epoch: volume.epoch });
    assert.deepEqual(Buffer.from(onNode3), want, "node 3 lost an acknowledged write");
  } finally {
    hold.on = false;
    release();
    node3.fault = "ok";
    await volume.close();
  }
});
