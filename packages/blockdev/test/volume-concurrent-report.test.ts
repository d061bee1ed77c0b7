/**
 * Goal: no write is acknowledged while the map still counts in sync a replica that missed it
 * (the in-sync set always holds every acknowledged write), also when a concurrent write is the
 * one reporting that replica. Method: two writes to one chunk fail on the same replica; the
 * first failure report is held at the map. Once both writes have finished at the healthy
 * replicas, neither may be acknowledged; after the report lands, both are, and read back.
 * Before the fix, the write that found the replica already being reported was acknowledged at
 * once. A report that then fails (the map unreachable) fails both writes.
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
  until,
  withPropose,
} from "./fixture.js";

let t: TestCluster;
before(async () => {
  t = await startCluster(3);
});
after(async () => {
  await t.close();
});

/** Node 1's control, whose failure reports wait for `release` (then land, or fail). */
function heldReports(nodeId: NodeId) {
  const real = t.cluster.control(nodeId);
  let release!: (outcome: "land" | "fail") => void;
  const gate = new Promise<"land" | "fail">((resolve) => {
    release = resolve;
  });
  const seen = { reports: 0 };
  const control = withPropose(real, async (proposal, options) => {
    if (proposal.kind !== "reportReplicaFailure") return real.propose(proposal, options);
    seen.reports++;
    if ((await gate) === "fail") throw new HesError("HES_INVALID_ARGUMENT", "refused (test)");
    return real.propose(proposal, options);
  });
  return { control, seen, release };
}

/** t.directory, counting writes that settled at each node. */
function countingDirectory() {
  const settled = new Map<NodeId, number>();
  const directory = aroundWrites(t.directory, (nodeId, write) =>
    write().finally(() => {
      settled.set(nodeId, (settled.get(nodeId) ?? 0) + 1);
    }),
  );
  return { directory, settled };
}

async function twoWritesMissingOneReplica(name: string, outcome: "land" | "fail") {
  const { control, seen, release } = heldReports(1);
  const { directory, settled } = countingDirectory();
  const manager = new VolumeManager({ control, directory });
  await manager.create({ name, sizeBytes: 2 * MiB, chunkSizeBytes: MiB, replicationFactor: 3 });
  const volume = await manager.open({ name });
  await volume.write({ offsetBytes: 0, data: pattern(1, 4096) });
  const chunk = t.cluster.map.chunk(volume.volumeId, 0);
  const victim = t.nodes.find((n) => n.nodeId === chunk?.replicas.at(-1)?.nodeId);
  assert.ok(victim !== undefined && victim.nodeId !== 1);
  const healthy = (chunk?.replicas ?? []).map((r) => r.nodeId).filter((n) => n !== victim.nodeId);
  const before = new Map(healthy.map((n) => [n, settled.get(n) ?? 0]));
  victim.fault = "fail";
  const acked = [false, false];
  const writes = [1, 2].map((k, i) =>
    volume.write({ offsetBytes: k * 4096, data: pattern(10 + k, 4096) }).then(() => {
      acked[i] = true;
    }),
  );
  const outcomes = Promise.allSettled(writes);
  await until(() => {
    const done = healthy.every((n) => (settled.get(n) ?? 0) - (before.get(n) ?? 0) >= 2);
    return seen.reports === 1 && done && victim.faultedCalls >= 2;
  }, "the report and both writes at the healthy replicas");
  for (let turn = 0; turn < 50; turn++) await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(acked, [false, false], "a write was acknowledged before the report landed");
  release(outcome);
  const results = await outcomes;
  return { volume, victim, results };
}

test("a write waits for a concurrent write's report of the replica it missed", async () => {
  const { volume, victim, results } = await twoWritesMissingOneReplica("held-land", "land");
  try {
    assert.deepEqual(
      results.map((r) => r.status),
      ["fulfilled", "fulfilled"],
    );
    const replica = t.cluster.map
      .chunk(volume.volumeId, 0)
      ?.replicas.find((r) => r.nodeId === victim.nodeId);
    assert.equal(replica?.state, "stale");
    victim.fault = "ok";
    assert.deepEqual(
      Buffer.from(await volume.read({ offsetBytes: 0, lengthBytes: 3 * 4096 })),
      Buffer.concat([pattern(1, 4096), pattern(11, 4096), pattern(12, 4096)]),
    );
  } finally {
    victim.fault = "ok";
    await volume.close();
  }
});

test("when that report fails, both writes fail", async () => {
  const { volume, victim, results } = await twoWritesMissingOneReplica("held-fail", "fail");
  try {
    for (const r of results) {
      assert.equal(r.status, "rejected");
      const reason = (r as PromiseRejectedResult).reason;
      assert.ok(isHesError(reason, "HES_INVALID_ARGUMENT", "HES_UNAVAILABLE"), String(reason));
    }
  } finally {
    victim.fault = "ok";
    await volume.close().catch(() => undefined);
  }
});
