/**
 * Goal: a write whose failed replica must be reported does not fail because the report met a
 * Raft leader change (issue 7: one NBD write after a node kill returned EIO when the volume's
 * report reached the dead leader). Method: the real map behind a control whose first failure
 * reports fail as a dead leader's would (HES_UNAVAILABLE, before or after the map took them);
 * the write must be acknowledged, the replica must be stale, and the data must read back. A
 * map that never takes the report fails the write with HES_TIMEOUT at the report deadline.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { HesError, isHesError, type NodeId } from "@hes/base";
import { VolumeManager } from "../src/index.js";
import { VOLUME_REPORT_DEADLINE_MS } from "../src/limits.js";
import { MiB, pattern, startCluster, type TestCluster, withPropose } from "./fixture.js";

let t: TestCluster;
before(async () => {
  t = await startCluster(3);
});
after(async () => {
  await t.close();
});

type Mode = "lost" | "applied-unknown" | "never";

/** The real control of `nodeId`, whose first `failures` failure reports fail as `mode` says. */
function flakyControl(nodeId: NodeId, mode: Mode, failures: number) {
  const real = t.cluster.control(nodeId);
  const seen = { reports: 0 };
  const control = withPropose(real, async (proposal, options) => {
    if (proposal.kind !== "reportReplicaFailure") return real.propose(proposal, options);
    seen.reports++;
    if (mode !== "never" && seen.reports > failures) return real.propose(proposal, options);
    if (mode === "applied-unknown") await real.propose(proposal, options);
    throw new HesError("HES_UNAVAILABLE", "forwarding to node 3 failed: connection refused");
  });
  return { control, seen };
}

async function writeWithFlakyReports(name: string, mode: Mode) {
  const { control, seen } = flakyControl(1, mode, 3);
  const manager = new VolumeManager({ control, directory: t.directory });
  await manager.create({ name, sizeBytes: 2 * MiB, chunkSizeBytes: MiB, replicationFactor: 3 });
  const volume = await manager.open({ name });
  await volume.write({ offsetBytes: 0, data: pattern(1, 4096) });
  const chunk = t.cluster.map.chunk(volume.volumeId, 0);
  const victim = t.nodes.find((n) => n.nodeId === chunk?.replicas.at(-1)?.nodeId);
  assert.ok(victim !== undefined && victim.nodeId !== 1);
  victim.fault = "fail";
  return { volume, victim, seen };
}

for (const mode of ["lost", "applied-unknown"] as const) {
  test(`a report meeting a leader change (${mode}) is retried; the write succeeds`, async () => {
    const { volume, victim, seen } = await writeWithFlakyReports(`retry-${mode}`, mode);
    try {
      await volume.write({ offsetBytes: 4096, data: pattern(2, 4096) });
      assert.ok(seen.reports >= 1, "the replica failure was reported");
      const replica = t.cluster.map
        .chunk(volume.volumeId, 0)
        ?.replicas.find((r) => r.nodeId === victim.nodeId);
      assert.equal(replica?.state, "stale");
      victim.fault = "ok";
      assert.deepEqual(
        Buffer.from(await volume.read({ offsetBytes: 0, lengthBytes: 8192 })),
        Buffer.concat([pattern(1, 4096), pattern(2, 4096)]),
      );
    } finally {
      victim.fault = "ok";
      await volume.close();
    }
  });
}

test("a map that never takes the report fails the write with HES_TIMEOUT", async () => {
  const { volume, victim } = await writeWithFlakyReports("retry-never", "never");
  try {
    const started = performance.now();
    await assert.rejects(volume.write({ offsetBytes: 4096, data: pattern(3, 4096) }), (e) =>
      isHesError(e, "HES_TIMEOUT"),
    );
    const elapsedMs = performance.now() - started;
    assert.ok(elapsedMs >= VOLUME_REPORT_DEADLINE_MS - 100, `failed after ${elapsedMs} ms`);
    assert.ok(elapsedMs < VOLUME_REPORT_DEADLINE_MS + 3000, `failed after ${elapsedMs} ms`);
  } finally {
    victim.fault = "ok";
    await volume.close();
  }
});
