/**
 * Takeover with 2 of 3 nodes up, over real chunk-replica services on loopback sockets: one
 * node's service is stopped and restarted on the same port (its replica goes stale, the new
 * owner's pooled client to it is in reconnect backoff), then the owner's node is stopped and
 * another node takes the volume over. The seal must reach the restarted replica.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  CHUNK_BYTES,
  pattern,
  startNodes,
  type TestCluster,
} from "../../replication/test/dataplane-harness.ts";
import { VolumeManager } from "../src/index.js";

let t: TestCluster;
before(async () => {
  t = await startNodes(3);
});
after(async () => {
  await t.close();
});

const manager = (nodeId: number) =>
  new VolumeManager({ control: t.cluster.control(nodeId), directory: t.node(nodeId).pool });

test("takeover seals a restarted (stale) replica when the old owner's node is gone", async () => {
  await manager(1).create({
    name: "take",
    sizeBytes: 2 * CHUNK_BYTES,
    chunkSizeBytes: CHUNK_BYTES,
  });
  const first = await manager(1).open({ name: "take" });
  const before = pattern(64 * 1024, 1);
  await first.write({ offsetBytes: 0, data: before });
  const volumeId = t.cluster.map.volumeByName("take")?.volumeId as number;
  const chunk = { volumeId, chunkIndex: 0 };
  // Node 2 has a pooled connection to node 3, which dies with node 3's service.
  await t.node(2).pool.replica(3).version(chunk);
  await t.stop(3);
  await assert.rejects(t.node(2).pool.replica(3).version(chunk));
  // A write while node 3 is away makes its replica stale.
  const during = pattern(64 * 1024, 2);
  await first.write({ offsetBytes: 64 * 1024, data: during });
  const state = (nodeId: number) =>
    t.cluster.map.chunk(volumeId, 0)?.replicas.find((r) => r.nodeId === nodeId)?.state;
  assert.equal(state(3), "stale");
  await t.restart(3);
  // The owner's node dies; node 2 takes over at once (node 3 was just restarted).
  await t.stop(1);
  const second = await manager(2).open({ name: "take", takeover: true });
  assert.equal(state(1), "stale", "the dead in-sync replica was reported");
  assert.equal(state(2), "in-sync");
  const got = await second.read({ offsetBytes: 0, lengthBytes: 128 * 1024 });
  assert.deepEqual(got.subarray(0, 64 * 1024), before);
  assert.deepEqual(got.subarray(64 * 1024), during);
  // Node 3's replica is sealed with the new epoch: the old owner is fenced there too.
  const version = await t.node(2).pool.replica(3).version(chunk);
  assert.equal(version?.epoch, second.epoch);
});

test("takeover does not wait out seal retries on a dead node once the others sealed", async () => {
  await t.restart(1);
  await manager(2).create({
    name: "dead-owner",
    sizeBytes: CHUNK_BYTES,
    chunkSizeBytes: CHUNK_BYTES,
  });
  const first = await manager(2).open({ name: "dead-owner" });
  await first.write({ offsetBytes: 0, data: pattern(64 * 1024, 3) });
  // Node 1 dies without the map marking it down (no liveness loop here): its seal fails at
  // once with a refused connection, which is retryable, and nodes 2 and 3 seal without it.
  await t.stop(1);
  const sealsAtNode1: number[] = [];
  const directory = {
    replica(nodeId: number) {
      const replica = t.node(3).pool.replica(nodeId);
      if (nodeId !== 1) return replica;
      return new Proxy(replica, {
        get(target, key, receiver) {
          const value = Reflect.get(target, key, receiver);
          if (key !== "seal" || typeof value !== "function") return value;
          return (...args: unknown[]) => {
            sealsAtNode1.push(Date.now());
            return value.apply(target, args);
          };
        },
      });
    },
  };
  const takeover = new VolumeManager({ control: t.cluster.control(3), directory });
  const second = await takeover.open({ name: "dead-owner", takeover: true });
  assert.equal(sealsAtNode1.length, 1, "no retry once a quorum had sealed");
  const volumeId = t.cluster.map.volumeByName("dead-owner")?.volumeId as number;
  const state = t.cluster.map.chunk(volumeId, 0)?.replicas.find((r) => r.nodeId === 1)?.state;
  assert.equal(state, "stale", "the unsealed in-sync replica was reported");
  assert.deepEqual(
    await second.read({ offsetBytes: 0, lengthBytes: 64 * 1024 }),
    pattern(64 * 1024, 3),
  );
});
