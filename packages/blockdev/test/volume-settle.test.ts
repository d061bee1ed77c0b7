/**
 * Goal: a write that failed after it was sent (its outcome unknown) is, once one read saw it,
 * seen by every later read; and a copy of it still on its way when the chunk is settled is
 * refused there, so it cannot surface on one replica later (found by the fault suite, crashes seed 958531746: a failed write
 * was seen by one read and not by the next). Method: the map refuses failure reports; a write
 * reaches only node 1 (nodes 2 and 3 fail it) and fails. The owner then reads block 0: it may
 * see the write or not. Then node 1 fails, and the next read (from node 2 or 3) must return
 * what the first read returned. Before the fix, the first read came from node 1 (the new data)
 * and the second from node 2 (the old).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { HesError, isHesError, type NodeId } from "@hes/base";
import { VolumeManager } from "../src/index.js";
import {
  aroundWrites,
  MiB,
  pattern,
  startCluster,
  type TestCluster,
  withPropose,
} from "./fixture.js";

let t: TestCluster;
before(async () => {
  t = await startCluster(3);
});
after(async () => {
  await t.close();
});

/** Node 1's control, refusing every failure report while `refuse.on`. */
function refusingReports() {
  const real = t.cluster.control(1);
  const refuse = { on: false, refused: 0 };
  const control = withPropose(real, async (proposal, options) => {
    if (refuse.on && proposal.kind === "reportReplicaFailure") {
      refuse.refused++;
      throw new HesError("HES_INVALID_ARGUMENT", "refused (test)");
    }
    return real.propose(proposal, options);
  });
  return { control, refuse };
}

test("what one read saw of a failed write, every later read sees", async () => {
  const { control, refuse } = refusingReports();
  const manager = new VolumeManager({ control, directory: t.directory });
  await manager.create({ name: "settle", sizeBytes: MiB, chunkSizeBytes: MiB });
  const volume = await manager.open({ name: "settle" });
  const [node1, node2, node3] = t.nodes;
  assert.ok(node1 !== undefined && node2 !== undefined && node3 !== undefined);
  try {
    await volume.write({ offsetBytes: 0, data: pattern(1, 4096) });
    const epochBefore = volume.epoch;
    refuse.on = true;
    node2.fault = "fail";
    node3.fault = "fail";
    await assert.rejects(volume.write({ offsetBytes: 0, data: pattern(2, 4096) }));
    assert.ok(refuse.refused > 0, "the failure reports were refused");
    const chunk = { volumeId: volume.volumeId, chunkIndex: 0 };
    const onNode1 = await node1.replica.read(chunk, 0, 4096, { epoch: epochBefore });
    assert.deepEqual(Buffer.from(onNode1), Buffer.from(pattern(2, 4096)), "node 1 has the write");
    node2.fault = "ok";
    node3.fault = "ok";
    const first = Buffer.from(await volume.read({ offsetBytes: 0, lengthBytes: 4096 }));
    // Refused, not lost on the way: nothing can still arrive, so no new epoch is spent.
    assert.equal(volume.epoch, epochBefore, "a refused write needs no new epoch");
    node1.fault = "fail";
    const second = Buffer.from(await volume.read({ offsetBytes: 0, lengthBytes: 4096 }));
    assert.deepEqual(second, first, "the second read went back on the first");
    // The replicas that missed the write take writes again.
    refuse.on = false;
    node1.fault = "ok";
    await volume.write({ offsetBytes: 4096, data: pattern(3, 4096) });
    for (const node of [node2, node3]) {
      const data = await node.replica.read(chunk, 4096, 4096, { epoch: volume.epoch });
      assert.deepEqual(Buffer.from(data), Buffer.from(pattern(3, 4096)), `node ${node.nodeId}`);
    }
  } finally {
    node1.fault = "ok";
    node2.fault = "ok";
    node3.fault = "ok";
    await volume.close();
  }
});

/** t.directory, with writes held (per node) while `hold.on`, each until `release(node)`. */
function holdingDirectory() {
  const hold = { on: false };
  const gates = new Map<NodeId, { open: () => void; opened: Promise<void> }>();
  const late = new Map<NodeId, Promise<unknown>[]>();
  const gate = (nodeId: NodeId) => {
    let entry = gates.get(nodeId);
    if (entry === undefined) {
      let open!: () => void;
      const opened = new Promise<void>((resolve) => {
        open = resolve;
      });
      entry = { open, opened };
      gates.set(nodeId, entry);
    }
    return entry;
  };
  const directory = aroundWrites(t.directory, (nodeId, write) => {
    if (!hold.on) return write();
    const call = gate(nodeId).opened.then(write);
    const calls = late.get(nodeId) ?? [];
    calls.push(call.catch((error: unknown) => error));
    late.set(nodeId, calls);
    return call;
  });
  return { directory, hold, release: (nodeId: NodeId) => gate(nodeId).open(), late };
}

test("a failed write still on its way is refused once the chunk is settled", async () => {
  const { directory, hold, release, late } = holdingDirectory();
  const manager = new VolumeManager({
    control: t.cluster.control(1),
    directory,
    replicaDeadlineMs: 200,
  });
  await manager.create({ name: "settle-late", sizeBytes: MiB, chunkSizeBytes: MiB });
  const volume = await manager.open({ name: "settle-late" });
  const [node1, node2, node3] = t.nodes;
  assert.ok(node1 !== undefined && node2 !== undefined && node3 !== undefined);
  try {
    await volume.write({ offsetBytes: 0, data: pattern(11, 4096) });
    const epochBefore = volume.epoch;
    // Every replica's copy is held past the deadline: the write fails, its outcome unknown.
    hold.on = true;
    await assert.rejects(volume.write({ offsetBytes: 0, data: pattern(12, 4096) }));
    hold.on = false;
    const first = Buffer.from(await volume.read({ offsetBytes: 0, lengthBytes: 4096 }));
    assert.deepEqual(first, Buffer.from(pattern(11, 4096)), "no replica had it when settled");
    assert.ok(volume.epoch > epochBefore, "a write that may still arrive needs a new epoch");
    // Node 2's copy arrives now, under the old epoch: refused.
    release(2);
    const outcomes = await Promise.all(late.get(2) ?? []);
    assert.ok(
      outcomes.length > 0 && outcomes.every((o) => isHesError(o, "HES_FENCED")),
      `the late copy was refused: ${outcomes.map(String).join(", ")}`,
    );
    node1.fault = "fail";
    node3.fault = "fail";
    const fromNode2 = Buffer.from(await volume.read({ offsetBytes: 0, lengthBytes: 4096 }));
    assert.deepEqual(fromNode2, first, "node 2 took the late copy");
  } finally {
    release(1);
    release(3);
    node1.fault = "ok";
    node3.fault = "ok";
    await volume.close();
  }
});
