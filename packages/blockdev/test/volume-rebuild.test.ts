/**
 * Write fan-out vs rebuild: the mover's last catch-up pass relies on the Volume sending live
 * writes to a filling replica too. A writer keeps writing while a replica is rebuilt; the
 * mover's `reportReplicaCaughtUp` is held until more writes were acknowledged after its last
 * pass; then the original replicas are dropped and every acknowledged write must be on the
 * rebuilt one.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { NodeId } from "@hes/base";
import { Mover, type ReplicaDirectory } from "@hes/replication";
import { MiB, pattern, startCluster, type TestCluster, until, withPropose } from "./fixture.js";

let t: TestCluster;
before(async () => {
  t = await startCluster(4);
});
after(async () => {
  await t.close();
});

const BLOCK = 4096;

test("a rebuild racing a writer holds every acknowledged write once the originals are gone", async () => {
  const manager = t.manager(1);
  await manager.create({ name: "race", sizeBytes: 2 * MiB, chunkSizeBytes: MiB });
  const volume = await manager.open({ name: "race" });
  const blocks = MiB / BLOCK;
  const expected = new Map<number, number>();
  for (let b = 0; b < blocks; b += 16) {
    await volume.write({ offsetBytes: b * BLOCK, data: pattern(b + 1, 16 * BLOCK) });
  }
  const initial = async (b: number) => pattern(Math.floor(b / 16) * 16 + 1, 16 * BLOCK);
  const map = t.cluster.map;
  const volumeId = map.volumeByName("race")?.volumeId as number;
  const original = (map.chunk(volumeId, 0)?.replicas ?? []).map((r) => r.nodeId);
  const spare = t.nodes.map((n) => n.nodeId).find((n) => !original.includes(n)) as NodeId;
  const victim = original.find((n) => n !== 1) as NodeId;
  // The victim misses a write: the volume reports it stale, and it is replaced by the spare.
  const victimNode = t.nodes[victim - 1] as (typeof t.nodes)[number];
  victimNode.fault = "fail";
  await volume.write({ offsetBytes: 0, data: pattern(7, BLOCK) });
  assert.equal(map.chunk(volumeId, 0)?.replicas.find((r) => r.nodeId === victim)?.state, "stale");
  t.cluster.apply({
    kind: "replaceReplica",
    fields: { volumeId, chunkIndex: 0, oldNodeId: victim, newNodeId: spare },
  });
  assert.equal(map.chunk(volumeId, 0)?.replicas.find((r) => r.nodeId === spare)?.state, "filling");

  // The writer: one 4 KiB block at a time, recording only acknowledged writes.
  let acked = 0;
  let stop = false;
  const writer = (async () => {
    for (let i = 0; !stop; i++) {
      const block = (i * 37) % blocks;
      await volume.write({ offsetBytes: block * BLOCK, data: pattern(10_000 + i, BLOCK) });
      expected.set(block, 10_000 + i);
      acked++;
    }
  })();
  // The mover's control: the caught-up report waits until more writes were acknowledged.
  const inner = t.cluster.control(spare);
  let held = 0;
  const control = withPropose(inner, async (proposal, options) => {
    if (proposal.kind === "reportReplicaCaughtUp") {
      const target = acked + 8;
      await until(() => acked >= target, "writes after the last pass", 20_000);
      held++;
    }
    return inner.propose(proposal, options);
  });
  const replicas: ReplicaDirectory = {
    replica: (nodeId) => (t.nodes[nodeId - 1] as (typeof t.nodes)[number]).replica,
  };
  const mover = new Mover({ nodeId: spare, control, replicas });
  const results = await mover.runOnce();
  stop = true;
  await writer;
  await mover.close();
  assert.deepEqual(
    results.map((r) => [r.kind, r.ok]),
    [["rebuild", true]],
  );
  assert.equal(held, 1);
  const record = map.chunk(volumeId, 0);
  assert.equal(record?.replicas.find((r) => r.nodeId === spare)?.state, "in-sync");

  // The originals are gone: every acknowledged write must be on the rebuilt replica.
  const rebuilt = (t.nodes[spare - 1] as (typeof t.nodes)[number]).replica;
  const chunk = { volumeId, chunkIndex: 0 };
  const content = await rebuilt.read(chunk, 0, MiB, { epoch: volume.epoch });
  let missing = 0;
  for (let b = 0; b < blocks; b++) {
    const seed = expected.get(b);
    const want =
      seed !== undefined
        ? pattern(seed, BLOCK)
        : b === 0
          ? pattern(7, BLOCK)
          : (await initial(b)).subarray((b % 16) * BLOCK, ((b % 16) + 1) * BLOCK);
    const got = content.subarray(b * BLOCK, (b + 1) * BLOCK);
    if (Buffer.compare(got, want) !== 0) missing++;
  }
  assert.equal(missing, 0, `${missing} acknowledged blocks missing on the rebuilt replica`);
  victimNode.fault = "ok";
  await volume.close();
});
