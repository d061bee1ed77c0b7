/**
 * Goal: liveness works in command-carried time only. The leader's policy names nodes silent
 * for the grace period (never right after an election), the map agrees or refuses using the
 * stamps alone, a down node's replicas are re-placed by the repair plan and rebuilt, and a
 * node that comes back is told what it missed. Method: the harness with an explicit leader
 * clock; nothing reads a real clock.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { nodesToMarkDown, planRepairs, REBUILDS_INFLIGHT_MAX } from "@hes/replication";
import { clusterWith, GiB, type Harness, MiB } from "./harness.ts";

/** The leader's loop: propose MarkNodeDown for what the policy names, stamped with `nowMs`. */
function leaderTick(h: Harness, leaderSinceMs = 0): number[] {
  const down = nodesToMarkDown(h.map, { nowMs: h.nowMs, leaderSinceMs });
  for (const nodeId of down) h.ok("markNodeDown", { nodeId });
  return down;
}

/** The leader's repair loop, with the data movers reporting each rebuild done. */
function repairAll(h: Harness): number {
  let replaced = 0;
  for (let round = 0; round < 100; round++) {
    const actions = planRepairs(h.map);
    if (actions.length === 0) return replaced;
    for (const action of actions) {
      const { kind, ...fields } = action;
      const { chunk } = h.ok(kind, fields);
      if (kind !== "replaceReplica" || chunk === undefined) continue;
      replaced++;
      const added = chunk.replicas[chunk.replicas.length - 1];
      const volume = h.map.volume(chunk.volumeId);
      assert.ok(added !== undefined && volume !== undefined);
      const newest = Math.max(...chunk.replicas.map((r) => r.durableSeq));
      h.ok("reportReplicaProgress", {
        entries: [
          {
            volumeId: chunk.volumeId,
            chunkIndex: chunk.chunkIndex,
            nodeId: added.nodeId,
            bytesDone: added.bytesTotal,
            bytesTotal: added.bytesTotal,
          },
        ],
      });
      h.ok("reportReplicaCaughtUp", {
        volumeId: chunk.volumeId,
        chunkIndex: chunk.chunkIndex,
        epoch: volume.epoch,
        nodeId: added.nodeId,
        durableSeq: newest,
      });
    }
  }
  assert.fail("repair did not finish in 100 rounds");
}

describe("nodesToMarkDown", () => {
  test("names nodes silent for the grace period, by command-carried heartbeat time", () => {
    const h = clusterWith(3, 2);
    h.ok("setConfig", { gracePeriodMs: 10_000 });
    h.nowMs += 4_000;
    h.ok("nodeHeartbeat", { nodeId: 2 });
    h.nowMs += 5_999;
    assert.deepEqual(leaderTick(h), []);
    h.nowMs += 1;
    assert.deepEqual(nodesToMarkDown(h.map, { nowMs: h.nowMs, leaderSinceMs: 0 }), [1, 3, 4, 5, 6]);
    h.nowMs += 4_000;
    assert.deepEqual(
      nodesToMarkDown(h.map, { nowMs: h.nowMs, leaderSinceMs: 0 }),
      [1, 2, 3, 4, 5, 6],
    );
  });

  test("a new leader waits a full grace period before marking anyone down", () => {
    const h = clusterWith(3, 1);
    h.nowMs += 120_000;
    const electedMs = h.nowMs - 1_000;
    assert.deepEqual(leaderTick(h, electedMs), []);
    h.nowMs = electedMs + 30_000;
    assert.deepEqual(leaderTick(h, electedMs), [1, 2, 3]);
  });

  test("skips nodes already down or removed", () => {
    const h = clusterWith(3, 1);
    h.ok("removeNode", { nodeId: 3 });
    h.nowMs += 30_000;
    assert.deepEqual(leaderTick(h), [1, 2]);
    assert.deepEqual(leaderTick(h), []);
  });

  test("a leader whose clock is behind map time cannot mark a live node down early", () => {
    const h = clusterWith(3, 1);
    h.nowMs += 60_000;
    h.ok("nodeHeartbeat", { nodeId: 1 }); // map time is now +60 s
    // An old leader, 40 s behind, still thinks node 1 was silent: the map says otherwise.
    h.rejects("HES_INVALID_ARGUMENT", "markNodeDown", { nodeId: 1 }, { timeMs: h.nowMs + 1 });
    h.rejects("HES_INVALID_ARGUMENT", "markNodeDown", { nodeId: 1 }, { timeMs: h.nowMs - 40_000 });
  });
});

describe("a node that dies and comes back", () => {
  test("its replicas are re-placed and rebuilt; on return it learns what it missed", () => {
    const h = clusterWith(4, 2);
    const v = h.createVolume("vm-a", 2 * GiB);
    const w = h.createVolume("vm-b", 2 * GiB);
    h.open(v, 1);
    h.open(w, 3);
    for (let c = 0; c < 32; c++) {
      h.place(v, c, 1);
      h.place(w, c, 3);
    }
    const victim = 3;
    const hosted = h.map.replicaCountOnNode(victim);
    // vm-b's writer, so most of vm-b's chunks have a replica there (locality, within slack).
    assert.ok(hosted > 24, `node 3 hosts ${hosted} replicas`);
    // Writes go on: node 3 misses some, and the owner of vm-a reports it.
    const missed = h.map
      .chunksOfVolume(v)
      .filter((c) => c.replicas.some((r) => r.nodeId === victim));
    const first = missed[0];
    assert.ok(first !== undefined);
    h.ok("reportReplicaProgress", {
      entries: first.replicas
        .filter((r) => r.nodeId !== victim)
        .map((r) => ({
          volumeId: v,
          chunkIndex: first.chunkIndex,
          nodeId: r.nodeId,
          durableSeq: 7,
        })),
    });
    h.ok("reportReplicaFailure", {
      volumeId: v,
      chunkIndex: first.chunkIndex,
      epoch: 1,
      nodeId: victim,
    });
    // Everyone but node 3 keeps heartbeating; after the grace period the leader acts.
    for (let t = 0; t < 4; t++) {
      h.nowMs += 10_000;
      for (const node of h.map.nodes()) {
        if (node.nodeId !== victim) h.ok("nodeHeartbeat", { nodeId: node.nodeId });
      }
      assert.deepEqual(leaderTick(h), t < 2 ? [] : t === 2 ? [victim] : []);
    }
    assert.equal(h.map.node(victim)?.state, "down");
    assert.equal(h.map.volume(w)?.ownerNodeId, 0, "its lease was revoked");
    assert.ok((h.map.status().placement?.chunksDegraded ?? 0n) > 0n);

    // vm-b moves to node 5 (a new epoch) while repair runs.
    h.open(w, 5);
    const replaced = repairAll(h);
    assert.equal(replaced, hosted, "every replica of the down node was re-placed");
    assert.equal(h.map.replicaCountOnNode(victim), 0);
    assert.equal(h.map.status().placement?.chunksDegraded, 0n);
    assert.equal(h.map.rebuildsInFlight, 0);
    h.assertSound();

    // It comes back: told which leases it lost and that it hosts nothing any more.
    h.nowMs += 5_000;
    const { rejoin } = h.ok("nodeHeartbeat", { nodeId: victim });
    assert.deepEqual(rejoin?.revokedVolumeIds, [w]);
    assert.equal(rejoin?.replicas, 0);
    assert.deepEqual(h.map.assignments(victim), []);
    assert.equal(h.map.node(victim)?.state, "up");
  });

  test("back before re-placement: stale replicas are listed with what to catch up from", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v", GiB);
    h.open(v, 1);
    for (let c = 0; c < 4; c++) h.place(v, c, 1);
    h.ok("reportReplicaProgress", {
      entries: [0, 1, 2, 3].flatMap((c) => [
        { volumeId: v, chunkIndex: c, nodeId: 1, durableSeq: 100 + c },
        { volumeId: v, chunkIndex: c, nodeId: 2, durableSeq: 100 + c },
        { volumeId: v, chunkIndex: c, nodeId: 3, durableSeq: 90 },
      ]),
    });
    for (const c of [1, 3]) {
      h.ok("reportReplicaFailure", { volumeId: v, chunkIndex: c, epoch: 1, nodeId: 3 });
    }
    h.nowMs += 30_000;
    h.ok("nodeHeartbeat", { nodeId: 1 });
    h.ok("nodeHeartbeat", { nodeId: 2 });
    assert.deepEqual(leaderTick(h), [3]);
    // Three domains, three nodes: nowhere to re-place, so the repair plan waits.
    assert.deepEqual(planRepairs(h.map), []);
    const { rejoin } = h.ok("nodeHeartbeat", { nodeId: 3 });
    assert.equal(rejoin?.replicasNotInSync, 2);
    assert.deepEqual(
      h.map.assignments(3).map((a) => [a.chunkIndex, a.state, a.durableSeq, a.inSyncDurableSeq]),
      [
        [0, "in-sync", 90, 100],
        [1, "stale", 90, 101],
        [2, "in-sync", 90, 102],
        [3, "stale", 90, 103],
      ],
    );
    for (const c of [1, 3]) {
      h.ok("reportReplicaCaughtUp", {
        volumeId: v,
        chunkIndex: c,
        epoch: 1,
        nodeId: 3,
        durableSeq: 100 + c,
      });
    }
    assert.ok(h.map.assignments(3).every((a) => a.state === "in-sync"));
  });

  test("the repair plan respects the rebuild budget", () => {
    const h = clusterWith(4, 1);
    const v = h.createVolume("v", 64 * GiB, { chunkSizeBytes: 16 * MiB });
    h.open(v, 1);
    for (let c = 0; c < 2 * REBUILDS_INFLIGHT_MAX; c++) h.place(v, c, 1);
    const victim = 2;
    assert.ok(h.map.replicaCountOnNode(victim) > REBUILDS_INFLIGHT_MAX);
    h.nowMs += 30_000;
    for (const id of [1, 3, 4]) h.ok("nodeHeartbeat", { nodeId: id });
    assert.deepEqual(leaderTick(h), [victim]);
    const plan = planRepairs(h.map);
    assert.equal(plan.length, REBUILDS_INFLIGHT_MAX);
    for (const action of plan) {
      const { kind, ...fields } = action;
      assert.equal(kind, "replaceReplica");
      h.ok(kind, fields);
    }
    assert.equal(h.map.rebuildsInFlight, REBUILDS_INFLIGHT_MAX);
    assert.deepEqual(planRepairs(h.map), [], "no budget left: nothing more is proposed");
    h.assertSound();
  });
});
