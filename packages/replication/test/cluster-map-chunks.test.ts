/**
 * Goal: every chunk-placement command does what its contract says when valid, and is rejected
 * with the documented code (changing nothing) when not: first placement (domains, locality,
 * degraded clusters, fencing), replica failure and catch-up, re-placement, progress reports,
 * and rebalance moves with their bounds. Method: the test harness, one command at a time.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { MOVES_PER_NODE_MAX, PROGRESS_ENTRIES_MAX, REBUILDS_INFLIGHT_MAX } from "@hes/replication";
import { clusterWith, GiB, type Harness, MiB, TiB } from "./harness.ts";

const CHUNK = 64 * MiB;

function domainsOf(h: Harness, nodeIds: readonly number[]): string[] {
  return nodeIds.map((id) => h.map.node(id)?.failureDomain ?? "?");
}

/** 3 domains × 2 nodes; volume "v" open on node 1 at epoch 1. */
function openCluster(): { h: Harness; v: number } {
  const h = clusterWith(3, 2);
  const v = h.createVolume("v", 4 * GiB);
  h.open(v, 1);
  return { h, v };
}

describe("placeChunk", () => {
  test("places on distinct domains with the writer first, all in sync; idempotent", () => {
    const { h, v } = openCluster();
    const chunk = h.place(v, 5, 1);
    const nodes = chunk.replicas.map((r) => r.nodeId);
    assert.equal(nodes[0], 1, "the writing host holds a replica");
    assert.equal(new Set(domainsOf(h, nodes)).size, 3);
    assert.ok(chunk.replicas.every((r) => r.state === "in-sync" && r.durableSeq === 0));
    assert.equal(chunk.placedAtIndex, h.index);
    const again = h.run("placeChunk", { volumeId: v, chunkIndex: 5, epoch: 1, preferredNodeId: 2 });
    assert.ok(again.ok && !again.changed);
    assert.deepEqual(again.value.chunk, chunk, "a second placement keeps the first");
    assert.equal(h.map.placedBytes(1), CHUNK);
    h.assertSound();
  });

  test("only the current owner places: closed or stale epochs are fenced", () => {
    const { h, v } = openCluster();
    h.open(v, 2, true);
    h.rejects("HES_FENCED", "placeChunk", { volumeId: v, chunkIndex: 0, epoch: 1 });
    h.ok("closeVolume", { volumeId: v, nodeId: 2, epoch: 2 });
    h.rejects("HES_FENCED", "placeChunk", { volumeId: v, chunkIndex: 0, epoch: 2 });
  });

  test("chunks past the end and unknown volumes are refused; an unknown writer is no hint", () => {
    const { h, v } = openCluster();
    h.rejects("HES_INVALID_ARGUMENT", "placeChunk", { volumeId: v, chunkIndex: 64, epoch: 1 });
    h.rejects("HES_NOT_FOUND", "placeChunk", { volumeId: 9, chunkIndex: 0, epoch: 1 });
    h.rejects("HES_INVALID_ARGUMENT", "placeChunk", { volumeId: 0, chunkIndex: 0, epoch: 1 });
    assert.equal(h.place(v, 63, 42).replicas.length, 3);
  });

  test("a degraded cluster places down to the write quorum, then says why it cannot", () => {
    const h = clusterWith(2, 1);
    const v = h.createVolume("v");
    h.open(v, 1);
    const chunk = h.place(v, 0, 1);
    assert.equal(chunk.replicas.length, 2, "two domains: two replicas, repair adds the third");
    h.nowMs += 30_000;
    h.ok("nodeHeartbeat", { nodeId: 1 });
    h.ok("markNodeDown", { nodeId: 2 });
    const message = h.rejects("HES_UNAVAILABLE", "placeChunk", {
      volumeId: v,
      chunkIndex: 1,
      epoch: 1,
    });
    assert.match(message, /needs 2 more failure domain\(s\).*1 available \(d0\)/);
  });

  test("full nodes are skipped; with no room left the error is HES_NO_SPACE", () => {
    const h = clusterWith(3, 1, 2 * CHUNK);
    const v = h.createVolume("v");
    h.open(v, 1);
    h.place(v, 0, 1);
    h.place(v, 1, 1);
    h.rejects("HES_NO_SPACE", "placeChunk", { volumeId: v, chunkIndex: 2, epoch: 1 });
    // Reported usage counts too: a node whose disks are full takes nothing, and the chunk
    // gets the write quorum's two replicas.
    const w = clusterWith(3, 1, TiB);
    const x = w.createVolume("x");
    w.open(x, 1);
    w.ok("nodeHeartbeat", { nodeId: 2, disks: [{ diskId: "disk-2", usedBytes: TiB }] });
    assert.deepEqual(
      w.place(x, 0, 1).replicas.map((r) => r.nodeId),
      [1, 3],
    );
    w.ok("nodeHeartbeat", { nodeId: 3, disks: [{ diskId: "disk-3", usedBytes: TiB - MiB }] });
    const message = w.rejects("HES_NO_SPACE", "placeChunk", {
      volumeId: x,
      chunkIndex: 1,
      epoch: 1,
    });
    assert.match(message, /room for a 67108864-byte chunk; only 1 have it/);
  });

  test("the writer is not preferred once it is fuller than the mean by the slack", () => {
    const h = clusterWith(3, 3, TiB);
    const v = h.createVolume("v", 64 * GiB);
    h.open(v, 1);
    let local = 0;
    for (let c = 0; c < 600; c++) {
      if (h.place(v, c, 1).replicas.some((r) => r.nodeId === 1)) local++;
    }
    // Node 1 would hold 600 replicas if locality were absolute; the cluster mean is 200.
    assert.ok(local < 260, `node 1 holds ${local} of 600 chunks`);
    assert.ok(local > 150, `node 1 still holds most of its share (${local})`);
  });
});

describe("replica failure and catch-up", () => {
  test("a failed replica goes stale; the last in-sync one stays; stale epochs are fenced", () => {
    const { h, v } = openCluster();
    const [a, b, c] = h.place(v, 0, 1).replicas.map((r) => r.nodeId) as [number, number, number];
    const report = { volumeId: v, chunkIndex: 0, epoch: 1 };
    h.ok("reportReplicaFailure", { ...report, nodeId: b });
    assert.equal(h.map.chunk(v, 0)?.replicas[1]?.state, "stale");
    const again = h.run("reportReplicaFailure", { ...report, nodeId: b });
    assert.ok(again.ok && !again.changed);
    h.ok("reportReplicaFailure", { ...report, nodeId: c });
    h.rejects("HES_QUORUM_LOST", "reportReplicaFailure", { ...report, nodeId: a });
    h.rejects("HES_FENCED", "reportReplicaFailure", { ...report, epoch: 0, nodeId: a });
    h.rejects("HES_NOT_FOUND", "reportReplicaFailure", { ...report, nodeId: 42 });
    h.rejects("HES_NOT_FOUND", "reportReplicaFailure", { ...report, chunkIndex: 1, nodeId: a });
    h.assertSound();
  });

  test("a failure report records the owner's watermark, which never goes back", () => {
    const { h, v } = openCluster();
    const [, b] = h.place(v, 0, 1).replicas.map((r) => r.nodeId) as [number, number];
    h.ok("reportReplicaFailure", { volumeId: v, chunkIndex: 0, epoch: 1, nodeId: b, safeSeq: 77 });
    assert.equal(h.map.chunk(v, 0)?.replicas[1]?.durableSeq, 77);
    h.ok("reportReplicaCaughtUp", {
      volumeId: v,
      chunkIndex: 0,
      epoch: 1,
      nodeId: b,
      durableSeq: 90,
    });
    h.ok("reportReplicaFailure", { volumeId: v, chunkIndex: 0, epoch: 1, nodeId: b, safeSeq: 5 });
    assert.equal(h.map.chunk(v, 0)?.replicas[1]?.durableSeq, 90);
    h.assertSound();
  });

  test("catch-up needs the in-sync replicas' durable sequence and a live node", () => {
    const { h, v } = openCluster();
    const [a, b] = h.place(v, 0, 1).replicas.map((r) => r.nodeId) as [number, number];
    const report = { volumeId: v, chunkIndex: 0, epoch: 1 };
    h.ok("reportReplicaFailure", { ...report, nodeId: b });
    h.ok("reportReplicaProgress", {
      entries: [{ volumeId: v, chunkIndex: 0, nodeId: a, durableSeq: 100 }],
    });
    h.rejects("HES_INVALID_ARGUMENT", "reportReplicaCaughtUp", {
      ...report,
      nodeId: b,
      durableSeq: 99,
    });
    h.ok("reportReplicaCaughtUp", { ...report, nodeId: b, durableSeq: 100 });
    const replica = h.map.chunk(v, 0)?.replicas.find((r) => r.nodeId === b);
    assert.deepEqual([replica?.state, replica?.durableSeq], ["in-sync", 100]);
    h.ok("reportReplicaFailure", { ...report, nodeId: b });
    h.nowMs += 30_000;
    h.ok("nodeHeartbeat", { nodeId: a });
    for (const id of [1, 2, 3, 4, 5, 6]) if (id !== b) h.ok("nodeHeartbeat", { nodeId: id });
    h.ok("markNodeDown", { nodeId: b });
    h.rejects("HES_UNAVAILABLE", "reportReplicaCaughtUp", {
      ...report,
      nodeId: b,
      durableSeq: 100,
    });
  });
});

describe("replaceReplica", () => {
  /** Node `down` marked down; volume open on node 1 (if alive) at a fresh epoch. */
  function withDownNode(h: Harness, down: number): void {
    h.nowMs += 30_000;
    for (const node of h.map.nodes()) {
      if (node.nodeId !== down) h.ok("nodeHeartbeat", { nodeId: node.nodeId });
    }
    h.ok("markNodeDown", { nodeId: down });
  }

  test("a down node's replica is re-placed in a free domain, as a filling replica", () => {
    const { h, v } = openCluster();
    const chunk = h.place(v, 0, 1);
    const victim = chunk.replicas[1]?.nodeId ?? 0;
    h.rejects("HES_INVALID_ARGUMENT", "replaceReplica", {
      volumeId: v,
      chunkIndex: 0,
      oldNodeId: victim,
    });
    withDownNode(h, victim);
    const { chunk: after } = h.ok("replaceReplica", {
      volumeId: v,
      chunkIndex: 0,
      oldNodeId: victim,
    });
    assert.ok(after !== undefined);
    const added = after.replicas[2];
    assert.equal(after.replicas.length, 3);
    assert.ok(!after.replicas.some((r) => r.nodeId === victim));
    assert.deepEqual([added?.state, added?.bytesDone, added?.bytesTotal], ["filling", 0, CHUNK]);
    assert.equal(
      new Set(
        domainsOf(
          h,
          after.replicas.map((r) => r.nodeId),
        ),
      ).size,
      3,
    );
    assert.equal(h.map.rebuildsInFlight, 1);
    h.assertSound();
  });

  test("an explicit target must keep domains distinct; the last in-sync copy is kept", () => {
    const { h, v } = openCluster();
    const chunk = h.place(v, 0, 1);
    const [a, b, c] = chunk.replicas.map((r) => r.nodeId) as [number, number, number];
    const report = { volumeId: v, chunkIndex: 0, epoch: 1 };
    h.ok("reportReplicaFailure", { ...report, nodeId: c });
    const sameDomainAsA = h.map
      .nodes()
      .find((n) => n.failureDomain === h.map.node(a)?.failureDomain && n.nodeId !== a);
    assert.ok(sameDomainAsA !== undefined);
    h.rejects("HES_INVALID_ARGUMENT", "replaceReplica", {
      volumeId: v,
      chunkIndex: 0,
      oldNodeId: c,
      newNodeId: sameDomainAsA.nodeId,
    });
    const sameDomainAsC = h.map
      .nodes()
      .find((n) => n.failureDomain === h.map.node(c)?.failureDomain && n.nodeId !== c);
    assert.ok(sameDomainAsC !== undefined);
    h.ok("replaceReplica", {
      volumeId: v,
      chunkIndex: 0,
      oldNodeId: c,
      newNodeId: sameDomainAsC.nodeId,
    });
    h.ok("reportReplicaFailure", { ...report, nodeId: b });
    withDownNode(h, a);
    h.rejects("HES_QUORUM_LOST", "replaceReplica", { volumeId: v, chunkIndex: 0, oldNodeId: a });
    h.assertSound();
  });

  test("adding a replica to an under-replicated chunk, and not to a full one", () => {
    const h = clusterWith(2, 1);
    const v = h.createVolume("v");
    h.open(v, 1);
    h.place(v, 0, 1);
    h.rejects("HES_UNAVAILABLE", "replaceReplica", { volumeId: v, chunkIndex: 0 });
    h.addNode(3, "d2");
    h.ok("replaceReplica", { volumeId: v, chunkIndex: 0 });
    assert.equal(h.map.chunk(v, 0)?.replicas[2]?.nodeId, 3);
    h.rejects("HES_INVALID_ARGUMENT", "replaceReplica", { volumeId: v, chunkIndex: 0 });
  });

  test("rebuilds in flight are bounded", () => {
    const h = clusterWith(4, 1, 64 * TiB);
    const v = h.createVolume("v", 1024 * GiB, { replicationFactor: 2 });
    h.open(v, 1);
    for (let c = 0; c <= REBUILDS_INFLIGHT_MAX; c++) {
      h.place(v, c, 1);
      h.ok("reportReplicaFailure", {
        volumeId: v,
        chunkIndex: c,
        epoch: 1,
        nodeId: h.map.chunk(v, c)?.replicas[1]?.nodeId ?? 0,
      });
    }
    for (let c = 0; c < REBUILDS_INFLIGHT_MAX; c++) {
      const old = h.map.chunk(v, c)?.replicas[1]?.nodeId ?? 0;
      h.ok("replaceReplica", { volumeId: v, chunkIndex: c, oldNodeId: old });
    }
    const old = h.map.chunk(v, REBUILDS_INFLIGHT_MAX)?.replicas[1]?.nodeId ?? 0;
    h.rejects("HES_BUSY", "replaceReplica", {
      volumeId: v,
      chunkIndex: REBUILDS_INFLIGHT_MAX,
      oldNodeId: old,
    });
    h.assertSound();
  });
});

describe("reportReplicaProgress", () => {
  test("durable sequences only rise; fill progress is recorded; gone replicas are skipped", () => {
    const { h, v } = openCluster();
    const [a, , c] = h.place(v, 0, 1).replicas.map((r) => r.nodeId) as [number, number, number];
    h.ok("reportReplicaFailure", { volumeId: v, chunkIndex: 0, epoch: 1, nodeId: c });
    h.nowMs += 30_000;
    for (const node of h.map.nodes())
      if (node.nodeId !== c) h.ok("nodeHeartbeat", { nodeId: node.nodeId });
    h.ok("markNodeDown", { nodeId: c });
    const { chunk } = h.ok("replaceReplica", { volumeId: v, chunkIndex: 0, oldNodeId: c });
    const filling = chunk?.replicas[2]?.nodeId ?? 0;
    const { progress } = h.ok("reportReplicaProgress", {
      entries: [
        { volumeId: v, chunkIndex: 0, nodeId: a, durableSeq: 50 },
        { volumeId: v, chunkIndex: 0, nodeId: a, durableSeq: 40 },
        { volumeId: v, chunkIndex: 0, nodeId: filling, bytesDone: 10 * MiB, bytesTotal: CHUNK },
        { volumeId: v, chunkIndex: 0, nodeId: c, durableSeq: 9 },
        { volumeId: v, chunkIndex: 7, nodeId: a, durableSeq: 9 },
      ],
    });
    assert.deepEqual(progress, { applied: 3, skipped: 2 });
    const after = h.map.chunk(v, 0);
    assert.equal(after?.replicas.find((r) => r.nodeId === a)?.durableSeq, 50);
    assert.equal(after?.replicas.find((r) => r.nodeId === filling)?.bytesDone, 10 * MiB);
    const entry = { volumeId: v, chunkIndex: 0, nodeId: a };
    h.rejects("HES_INVALID_ARGUMENT", "reportReplicaProgress", { entries: [] });
    h.rejects("HES_INVALID_ARGUMENT", "reportReplicaProgress", {
      entries: [{ ...entry, bytesDone: 2, bytesTotal: 1 }],
    });
    h.rejects("HES_TOO_LARGE", "reportReplicaProgress", {
      entries: Array.from({ length: PROGRESS_ENTRIES_MAX + 1 }, () => entry),
    });
  });
});

describe("moves", () => {
  test("start adds a filling target; finish needs it in sync and drops the source", () => {
    const { h, v } = openCluster();
    const chunk = h.place(v, 0, 1);
    const from = chunk.replicas[1]?.nodeId ?? 0;
    const to =
      h.map
        .nodes()
        .find(
          (n) =>
            n.failureDomain === h.map.node(from)?.failureDomain &&
            !chunk.replicas.some((r) => r.nodeId === n.nodeId),
        )?.nodeId ?? 0;
    const other = chunk.replicas[2]?.nodeId ?? 0;
    const sameDomainAsOther =
      h.map
        .nodes()
        .find((n) => n.failureDomain === h.map.node(other)?.failureDomain && n.nodeId !== other)
        ?.nodeId ?? 0;
    const move = { volumeId: v, chunkIndex: 0, fromNodeId: from };
    h.rejects("HES_INVALID_ARGUMENT", "startMove", { ...move, toNodeId: sameDomainAsOther });
    h.rejects("HES_ALREADY_EXISTS", "startMove", { ...move, toNodeId: other });
    h.rejects("HES_NOT_FOUND", "startMove", { ...move, fromNodeId: to, toNodeId: from });
    h.ok("startMove", { ...move, toNodeId: to });
    assert.equal(h.map.movesInFlight, 1);
    assert.equal(h.map.chunk(v, 0)?.replicas.length, 4);
    h.rejects("HES_BUSY", "startMove", { ...move, toNodeId: to });
    h.rejects("HES_BUSY", "replaceReplica", { volumeId: v, chunkIndex: 0 });
    const ends = { volumeId: v, chunkIndex: 0 };
    h.rejects("HES_INVALID_ARGUMENT", "finishMove", ends);
    h.ok("reportReplicaCaughtUp", { ...ends, epoch: 1, nodeId: to, durableSeq: 0 });
    h.ok("finishMove", ends);
    const after = h.map.chunk(v, 0);
    const kept = chunk.replicas.filter((r) => r.nodeId !== from).map((r) => r.nodeId);
    assert.deepEqual(
      after?.replicas.map((r) => r.nodeId),
      [...kept, to],
    );
    assert.equal(after?.replicas[2]?.state, "in-sync");
    assert.equal(h.map.movesInFlight, 0);
    h.rejects("HES_INVALID_ARGUMENT", "finishMove", ends);
    h.rejects("HES_INVALID_ARGUMENT", "cancelMove", ends);
    h.assertSound();
  });

  test("cancel drops the target, unless it is the only in-sync copy left", () => {
    const { h, v } = openCluster();
    const chunk = h.place(v, 0, 1);
    const [a, b, c] = chunk.replicas.map((r) => r.nodeId) as [number, number, number];
    const to =
      h.map.nodes().find((n) => n.failureDomain === h.map.node(a)?.failureDomain && n.nodeId !== a)
        ?.nodeId ?? 0;
    const ends = { volumeId: v, chunkIndex: 0 };
    h.ok("startMove", { ...ends, fromNodeId: a, toNodeId: to });
    h.ok("cancelMove", ends);
    assert.equal(h.map.chunk(v, 0)?.replicas.length, 3);
    h.ok("startMove", { ...ends, fromNodeId: a, toNodeId: to });
    h.ok("reportReplicaCaughtUp", { ...ends, epoch: 1, nodeId: to, durableSeq: 0 });
    for (const n of [a, b, c]) h.ok("reportReplicaFailure", { ...ends, epoch: 1, nodeId: n });
    h.rejects("HES_QUORUM_LOST", "cancelMove", ends);
    h.ok("finishMove", ends);
    h.assertSound();
  });

  test("moves per node are bounded", () => {
    const h = clusterWith(4, 1, 64 * TiB);
    const v = h.createVolume("v", 64 * GiB);
    h.open(v, 1);
    let started = 0;
    for (let c = 0; started <= MOVES_PER_NODE_MAX; c++) {
      const chunk = h.place(v, c, 1);
      const free = [1, 2, 3, 4].find((id) => !chunk.replicas.some((r) => r.nodeId === id));
      // Move node 1's replica to the one node that holds none.
      const move = { volumeId: v, chunkIndex: c, fromNodeId: 1, toNodeId: free ?? 0 };
      if (free === undefined || chunk.replicas[0]?.nodeId !== 1) continue;
      if (started < MOVES_PER_NODE_MAX) h.ok("startMove", move);
      else h.rejects("HES_BUSY", "startMove", move);
      started++;
    }
    assert.equal(h.map.movesOnNode(1), MOVES_PER_NODE_MAX);
  });
});
