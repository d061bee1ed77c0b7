/**
 * Goal: the placement test of issue 5, end to end through the state machine. 16 nodes in 4
 * failure domains (mixed disk sizes), 2,000 volumes of random sizes, each written (thin:
 * only written chunks are placed) by an owner on a random node. Checks: never two replicas of
 * a chunk in one domain; per-node utilisation within ±10% of the mean after rebalancing; the
 * data moved after adding one node is at most 1.2 × the minimum needed (the new node's fair
 * share at the mean utilisation).
 *
 * Method: every placement, move and catch-up is a real encoded command applied to a
 * ClusterMap; rebalancing runs the leader's loop (plan, StartMove, copy reported as caught up,
 * FinishMove) until the planner has nothing left. Seeded, so the figures replay exactly; they
 * are printed for the record.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Prng } from "@hes/base";
import { ClusterMap, nodeCapacityBytes, planRebalance, utilisationOf } from "@hes/replication";
import { GiB, Harness, MiB, TiB } from "./harness.ts";

const SEED = 20_240_505;
const DOMAINS = 4;
const NODES_PER_DOMAIN = 4;
const VOLUMES = 2000;

function spread(h: Harness): { mean: number; worst: number; min: number; max: number } {
  const { byNode, mean } = utilisationOf(h.map);
  let worst = 0;
  let min = Number.POSITIVE_INFINITY;
  let max = 0;
  for (const u of byNode.values()) {
    worst = Math.max(worst, Math.abs(u - mean) / mean);
    min = Math.min(min, u);
    max = Math.max(max, u);
  }
  return { mean, worst, min, max };
}

/** Runs the leader's rebalance loop to completion; returns bytes moved and rounds. */
function rebalance(h: Harness): { bytes: number; moves: number; rounds: number } {
  let bytes = 0;
  let moves = 0;
  let rounds = 0;
  for (;;) {
    const plan = planRebalance(h.map);
    if (plan.length === 0) return { bytes, moves, rounds };
    rounds++;
    for (const move of plan) h.ok("startMove", move);
    for (const move of plan) {
      const chunk = h.map.chunk(move.volumeId, move.chunkIndex);
      const volume = h.map.volume(move.volumeId);
      assert.ok(chunk !== undefined && volume !== undefined);
      const newest = Math.max(...chunk.replicas.map((r) => r.durableSeq));
      h.ok("reportReplicaCaughtUp", {
        volumeId: move.volumeId,
        chunkIndex: move.chunkIndex,
        epoch: volume.epoch,
        nodeId: move.toNodeId,
        durableSeq: newest,
      });
      h.ok("finishMove", { volumeId: move.volumeId, chunkIndex: move.chunkIndex });
      bytes += move.bytes;
      moves++;
    }
    assert.ok(rounds < 100_000, "rebalance does not converge");
  }
}

function assertDistinctDomains(h: Harness): number {
  let chunks = 0;
  for (const volume of h.map.volumes()) {
    for (const chunk of h.map.chunksOfVolume(volume.volumeId)) {
      chunks++;
      const domains = chunk.replicas.map((r) => h.map.node(r.nodeId)?.failureDomain);
      assert.equal(
        new Set(domains).size,
        domains.length,
        `chunk ${volume.volumeId}/${chunk.chunkIndex}`,
      );
      assert.equal(chunk.replicas.length, volume.replicationFactor);
    }
  }
  return chunks;
}

test("placement: 16 nodes, 4 domains, 2,000 volumes: domains, balance, data moved", () => {
  const prng = new Prng(SEED);
  const h = new Harness();
  h.init();
  let nodeId = 1;
  for (let d = 0; d < DOMAINS; d++) {
    for (let n = 0; n < NODES_PER_DOMAIN; n++) {
      // Mixed disk sizes, 1 to 2 TiB in 128 GiB steps.
      h.addNode(nodeId++, `rack-${d}`, TiB + prng.int(9) * 128 * GiB);
    }
  }
  let written = 0;
  const t0 = Date.now();
  for (let i = 0; i < VOLUMES; i++) {
    // Log-uniform sizes from 128 MiB to 16 GiB, 20–100% written.
    const sizeBytes = Math.round(2 ** (27 + prng.float() * 7) / (4 * MiB)) * 4 * MiB;
    const volumeId = h.createVolume(`vm-${i}`, sizeBytes);
    const owner = 1 + prng.int(16);
    h.open(volumeId, owner);
    const chunks = Math.ceil(sizeBytes / (64 * MiB));
    const writtenChunks = Math.max(1, Math.round(chunks * (0.2 + 0.8 * prng.float())));
    for (let c = 0; c < writtenChunks; c++) h.place(volumeId, c, owner);
    written += writtenChunks;
  }
  const placeMs = Date.now() - t0;
  const chunks = assertDistinctDomains(h);
  assert.equal(chunks, written);
  const placed = spread(h);

  const first = rebalance(h);
  const balanced = spread(h);
  assertDistinctDomains(h);

  const newNodeCapacity = 1536 * GiB;
  h.addNode(17, "rack-0", newNodeCapacity);
  const totalPlaced = h.map.nodes().reduce((sum, n) => sum + h.map.placedBytes(n.nodeId), 0);
  const totalCapacity = h.map.nodes().reduce((sum, n) => sum + nodeCapacityBytes(n), 0);
  const minimumBytes = (newNodeCapacity * totalPlaced) / totalCapacity;
  const second = rebalance(h);
  const after = spread(h);
  assertDistinctDomains(h);
  assert.deepEqual(h.map.checkInvariants(), []);
  // The Raft snapshot of this map: size, and time to encode and to decode with every check.
  let t = performance.now();
  const snapshot = h.map.snapshot();
  const encodeMs = performance.now() - t;
  t = performance.now();
  const restored = ClusterMap.fromSnapshot(snapshot);
  const decodeMs = performance.now() - t;
  assert.deepEqual(restored.snapshot(), snapshot);
  const ratio = second.bytes / minimumBytes;
  // The least that reaches the ±10% target: the new node at 90% of the mean.
  const strictRatio = second.bytes / (0.9 * minimumBytes);
  const totalMs = Date.now() - t0;

  const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
  const tib = (x: number) => `${(x / TiB).toFixed(3)} TiB`;
  console.log(
    [
      `placement: ${VOLUMES} volumes, ${chunks} chunks placed (${tib(totalPlaced)} with ` +
        `replicas) in ${placeMs} ms; whole test ${totalMs} ms`,
      `  after placement: mean utilisation ${pct(placed.mean)}, worst ${pct(placed.worst)} off`,
      `  first rebalance: ${first.moves} moves (${tib(first.bytes)}) in ${first.rounds} rounds;` +
        ` worst ${pct(balanced.worst)} off the mean`,
      `  node 17 added: ${second.moves} moves, ${tib(second.bytes)} moved; minimum needed ` +
        `${tib(minimumBytes)} (its fair share); ratio ${ratio.toFixed(3)} (vs 90% of the fair ` +
        `share, the least that meets ±10%: ${strictRatio.toFixed(3)}); worst ` +
        `${pct(after.worst)} off the mean`,
      `  snapshot: ${snapshot.length} bytes (${(snapshot.length / chunks).toFixed(1)} per chunk), ` +
        `encoded in ${encodeMs.toFixed(0)} ms, decoded and checked in ${decodeMs.toFixed(0)} ms`,
    ].join("\n"),
  );
  assert.ok(balanced.worst <= 0.1, `after rebalance: ${(balanced.worst * 100).toFixed(2)}% off`);
  assert.ok(after.worst <= 0.1, `after adding a node: ${pct(after.worst)} off the mean`);
  assert.ok(ratio <= 1.2, `moved ${ratio.toFixed(3)} × the fair share`);
  assert.ok(strictRatio <= 1.2, `moved ${strictRatio.toFixed(3)} × the least that meets ±10%`);
  assert.ok(second.bytes > 0, "the new node received data");
});
