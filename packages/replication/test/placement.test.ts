/**
 * Goal: the placement policy's rules, one at a time, on small clusters: distinct failure
 * domains, weighting by free capacity, writer preference within its slack, determinism,
 * clear errors, and the rebalance planner (draining empties a node, a balanced cluster is
 * left alone, the move budget holds). Method: call the pure functions on maps built with the
 * harness, and apply what they propose through the map.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  chooseReplicas,
  MOVES_INFLIGHT_MAX,
  MOVES_PER_NODE_MAX,
  placementSeed,
  planRebalance,
  utilisationOf,
} from "@hes/replication";
import { clusterWith, GiB, Harness, MiB, TiB } from "./harness.ts";

const CHUNK = 64 * MiB;

function request(h: Harness, overrides: Partial<Parameters<typeof chooseReplicas>[0]> = {}) {
  return {
    view: h.map,
    chunkBytes: CHUNK,
    count: 3,
    minCount: 2,
    preferredNodeId: 0,
    excludeNodeIds: [],
    excludeDomains: [],
    seed: 1,
    ...overrides,
  };
}

describe("chooseReplicas", () => {
  test("replicas land in distinct domains, never more than there are domains", () => {
    const h = clusterWith(3, 4);
    for (let seed = 0; seed < 500; seed++) {
      const result = chooseReplicas(request(h, { seed, count: 5, minCount: 1 }));
      assert.ok(result.ok);
      const domains = result.nodeIds.map((id) => h.map.node(id)?.failureDomain);
      assert.equal(result.nodeIds.length, 3, "five wanted, three domains: three replicas");
      assert.equal(new Set(domains).size, 3);
    }
  });

  test("in a domain, nodes are drawn in proportion to capacity × (1 − utilisation)²", () => {
    const h = new Harness();
    h.init();
    h.addNode(1, "d0", 3 * TiB);
    h.addNode(2, "d0", TiB);
    h.addNode(3, "d1", TiB);
    h.addNode(4, "d2", TiB);
    const picks = new Map<number, number>();
    for (let seed = 0; seed < 4000; seed++) {
      const result = chooseReplicas(request(h, { seed }));
      assert.ok(result.ok);
      for (const id of result.nodeIds) picks.set(id, (picks.get(id) ?? 0) + 1);
    }
    const ratio = (picks.get(1) ?? 0) / (picks.get(2) ?? 1);
    assert.ok(ratio > 2.6 && ratio < 3.4, `3 TiB vs 1 TiB node picked ${ratio.toFixed(2)}:1`);
    assert.equal(picks.get(3), 4000);
  });

  test("the same request gives the same answer; the seed mixes index, volume and chunk", () => {
    const h = clusterWith(4, 4);
    const a = chooseReplicas(request(h, { seed: placementSeed(100, 7, 3) }));
    const b = chooseReplicas(request(h, { seed: placementSeed(100, 7, 3) }));
    assert.deepEqual(a, b);
    const seeds = new Set<number>();
    for (let i = 0; i < 1000; i++) seeds.add(placementSeed(i, i % 7, i % 13));
    assert.equal(seeds.size, 1000);
    for (const seed of seeds) assert.ok(Number.isSafeInteger(seed) && seed >= 0);
  });

  test("the writer is first while within its slack, skipped once fuller", () => {
    const h = clusterWith(3, 2, TiB);
    const first = chooseReplicas(request(h, { preferredNodeId: 4 }));
    assert.ok(first.ok && first.nodeIds[0] === 4);
    const v = h.createVolume("v", 64 * GiB);
    h.open(v, 4);
    for (let c = 0; c < 60; c++) h.place(v, c, 4);
    // Node 4's disk shrinks (a disk replaced by a smaller one): it is now the fullest.
    h.ok("updateNode", {
      nodeId: 4,
      controlAddress: "h4:1",
      dataAddress: "h4:2",
      failureDomain: "d1",
      disks: [{ diskId: "small", path: "/dev/sdc", capacityBytes: 256 * GiB }],
    });
    const { byNode, mean } = utilisationOf(h.map);
    assert.ok((byNode.get(4) ?? 0) > mean * 1.05);
    for (let seed = 0; seed < 50; seed++) {
      const result = chooseReplicas(request(h, { preferredNodeId: 4, seed }));
      assert.ok(result.ok && result.nodeIds[0] !== 4);
    }
  });

  test("excluded nodes and domains are respected; failures say what is missing", () => {
    const h = clusterWith(3, 1);
    const one = chooseReplicas(
      request(h, { count: 1, minCount: 1, excludeNodeIds: [1], excludeDomains: ["d1"] }),
    );
    assert.deepEqual(one, { ok: true, nodeIds: [3] });
    const none = chooseReplicas(
      request(h, { count: 1, minCount: 1, excludeDomains: ["d0", "d1", "d2"] }),
    );
    assert.ok(!none.ok && none.code === "HES_UNAVAILABLE");
    const full = chooseReplicas(request(h, { chunkBytes: 8 * TiB }));
    assert.ok(!full.ok && full.code === "HES_NO_SPACE");
  });
});

/** Runs the leader's rebalance loop (start, copy, finish) until the planner is done. */
function rebalanceAll(h: Harness): number {
  let moves = 0;
  for (let round = 0; round < 10_000; round++) {
    const plan = planRebalance(h.map);
    if (plan.length === 0) return moves;
    assert.ok(plan.length <= MOVES_INFLIGHT_MAX);
    for (const { bytes: _, ...move } of plan) h.ok("startMove", move);
    for (const move of plan) {
      const ends = { volumeId: move.volumeId, chunkIndex: move.chunkIndex };
      const epoch = h.map.volume(move.volumeId)?.epoch ?? 0;
      h.ok("reportReplicaCaughtUp", { ...ends, epoch, nodeId: move.toNodeId, durableSeq: 0 });
      h.ok("finishMove", ends);
      moves++;
    }
  }
  assert.fail("rebalance did not finish");
}

describe("planRebalance", () => {
  test("a draining node is emptied onto the others, then it can be removed", () => {
    const h = clusterWith(3, 2);
    const v = h.createVolume("v", 16 * GiB);
    h.open(v, 1);
    for (let c = 0; c < 100; c++) h.place(v, c, 1);
    const hosted = h.map.replicaCountOnNode(2);
    assert.ok(hosted > 0);
    h.ok("drainNode", { nodeId: 2 });
    const moves = rebalanceAll(h);
    assert.ok(moves >= hosted);
    assert.equal(h.map.replicaCountOnNode(2), 0);
    h.ok("removeNode", { nodeId: 2 });
    h.assertSound();
  });

  test("a balanced cluster is left alone; a skewed one is evened out", () => {
    const h = clusterWith(4, 2, TiB);
    const v = h.createVolume("v", 256 * GiB);
    h.open(v, 1);
    for (let c = 0; c < 1200; c++) h.place(v, c, 0);
    rebalanceAll(h);
    assert.deepEqual(planRebalance(h.map), [], "balanced: nothing to do");
    h.addNode(9, "d0", 512 * GiB);
    const moves = rebalanceAll(h);
    assert.ok(moves > 0);
    const { byNode, mean } = utilisationOf(h.map);
    for (const [nodeId, u] of byNode) {
      assert.ok(Math.abs(u - mean) <= 0.05 * mean + 1e-9, `node ${nodeId} at ${u} vs ${mean}`);
    }
    h.assertSound();
  });

  test("balance that domains forbid is not chased: the planner stops", () => {
    // Three domains, three replicas: every domain holds every chunk once, so the domain
    // with twice the capacity ends half as full whatever moves are made.
    const h = new Harness();
    h.init();
    for (const [id, domain] of [
      [1, "d0"],
      [2, "d0"],
      [3, "d1"],
      [4, "d2"],
    ] as const) {
      h.addNode(id, domain, TiB);
    }
    const v = h.createVolume("v", 64 * GiB);
    h.open(v, 1);
    for (let c = 0; c < 300; c++) h.place(v, c, 0);
    rebalanceAll(h);
    const { byNode } = utilisationOf(h.map);
    assert.ok(Math.abs((byNode.get(1) ?? 0) - (byNode.get(2) ?? 0)) < 0.001, "d0 evened out");
    assert.equal(h.map.replicaCountOnNode(3), 300);
  });

  test("the plan stays within the free move budget", () => {
    const h = clusterWith(3, 2, TiB);
    const v = h.createVolume("v", 256 * GiB);
    h.open(v, 1);
    for (let c = 0; c < 600; c++) h.place(v, c, 0);
    for (const nodeId of [7, 8, 9]) h.addNode(nodeId, `d${nodeId % 3}`, TiB);
    const plan = planRebalance(h.map, { movesMax: 3 });
    assert.equal(plan.length, 3);
    for (const { bytes: _, ...move } of plan) h.ok("startMove", move);
    const next = planRebalance(h.map);
    assert.ok(next.length > 0 && next.length <= MOVES_INFLIGHT_MAX - 3);
    // The map takes every planned move: the per-node and cluster bounds were respected.
    for (const { bytes: _, ...move } of next) h.ok("startMove", move);
    for (const node of h.map.nodes())
      assert.ok(h.map.movesOnNode(node.nodeId) <= MOVES_PER_NODE_MAX);
    assert.ok(planRebalance(h.map).length <= MOVES_INFLIGHT_MAX - h.map.movesInFlight);
    h.assertSound();
  });
});
