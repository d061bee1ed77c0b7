/**
 * Goal: every node command does what its contract says when valid, and is rejected with the
 * documented code (changing nothing) when not: add, update, heartbeat, mark down (in
 * command-carried time), drain, remove. Method: the test harness, one command at a time;
 * `rejects` also checks that the map's content is unchanged.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DISKS_PER_NODE_MAX, NODES_MAX } from "@hes/replication";
import { clusterWith, GiB, TiB } from "./harness.ts";

const disk = (diskId: string, capacityBytes = TiB, usedBytes = 0) => ({
  diskId,
  path: `/dev/${diskId}`,
  capacityBytes,
  usedBytes,
});

describe("addNode", () => {
  test("a node joins up, with its heartbeat at the command's time", () => {
    const h = clusterWith(1, 0);
    h.ok("addNode", {
      nodeId: 7,
      controlAddress: "h7:7100",
      dataAddress: "h7:7200",
      failureDomain: "rack-a",
      disks: [disk("a"), disk("b", 2 * TiB, GiB)],
    });
    const node = h.map.node(7);
    assert.equal(node?.state, "up");
    assert.equal(node?.lastHeartbeatMs, h.nowMs);
    assert.equal(node?.joinedAtIndex, h.index);
    assert.equal(node?.disks.length, 2);
    assert.equal(node?.disks[1]?.usedBytes, GiB);
  });

  test("bad fields are refused", () => {
    const h = clusterWith(1, 0);
    const good = {
      nodeId: 1,
      controlAddress: "h:1",
      dataAddress: "h:2",
      failureDomain: "r",
      disks: [disk("a")],
    };
    h.rejects("HES_INVALID_ARGUMENT", "addNode", { ...good, nodeId: 0 });
    h.rejects("HES_INVALID_ARGUMENT", "addNode", { ...good, controlAddress: "" });
    h.rejects("HES_INVALID_ARGUMENT", "addNode", { ...good, dataAddress: "h\n:2" });
    h.rejects("HES_INVALID_ARGUMENT", "addNode", { ...good, failureDomain: "r".repeat(65) });
    h.rejects("HES_INVALID_ARGUMENT", "addNode", { ...good, disks: [disk("a"), disk("a")] });
    h.rejects("HES_INVALID_ARGUMENT", "addNode", { ...good, disks: [disk("a", 0)] });
    h.rejects("HES_INVALID_ARGUMENT", "addNode", { ...good, disks: [disk("a", GiB, 2 * GiB)] });
    const many = Array.from({ length: DISKS_PER_NODE_MAX + 1 }, (_, i) => disk(`d${i}`));
    h.rejects("HES_INVALID_ARGUMENT", "addNode", { ...good, disks: many });
    h.ok("addNode", good);
    h.rejects("HES_ALREADY_EXISTS", "addNode", good);
  });

  test("the node table is bounded by NODES_MAX", () => {
    const h = clusterWith(1, 0);
    for (let id = 1; id <= NODES_MAX; id++) h.addNode(id, `d${id % 4}`);
    h.rejects("HES_BUSY", "addNode", {
      nodeId: NODES_MAX + 1,
      controlAddress: "h:1",
      dataAddress: "h:2",
      failureDomain: "d0",
    });
  });
});

describe("updateNode", () => {
  test("addresses and disks change; the domain only while the node hosts nothing", () => {
    const h = clusterWith(3, 1);
    const update = {
      nodeId: 1,
      controlAddress: "new:7100",
      dataAddress: "new:7200",
      failureDomain: "d0",
      disks: [disk("x", 8 * TiB)],
    };
    h.ok("updateNode", update);
    assert.equal(h.map.node(1)?.controlAddress, "new:7100");
    assert.equal(h.map.node(1)?.disks[0]?.capacityBytes, 8 * TiB);
    h.ok("updateNode", { ...update, failureDomain: "elsewhere" });
    h.ok("updateNode", { ...update, failureDomain: "d0" });
    const v = h.createVolume("v");
    h.open(v, 1);
    h.place(v, 0, 1);
    h.rejects("HES_INVALID_ARGUMENT", "updateNode", { ...update, failureDomain: "moved" });
    h.rejects("HES_NOT_FOUND", "updateNode", { ...update, nodeId: 99 });
  });
});

describe("nodeHeartbeat", () => {
  test("records time and disk usage; a failed disk stays failed", () => {
    const h = clusterWith(3, 1);
    h.nowMs += 5_000;
    h.ok("nodeHeartbeat", {
      nodeId: 2,
      disks: [{ diskId: "disk-2", usedBytes: 3 * GiB, failed: true }],
    });
    let node = h.map.node(2);
    assert.equal(node?.lastHeartbeatMs, h.nowMs);
    assert.equal(node?.disks[0]?.usedBytes, 3 * GiB);
    assert.equal(node?.disks[0]?.failed, true);
    h.ok("nodeHeartbeat", { nodeId: 2, disks: [{ diskId: "disk-2", usedBytes: 0 }] });
    node = h.map.node(2);
    assert.equal(node?.disks[0]?.failed, true, "failure is sticky until UpdateNode");
  });

  test("unknown nodes and disks, over-full disks and removed nodes are refused", () => {
    const h = clusterWith(3, 1);
    h.rejects("HES_NOT_FOUND", "nodeHeartbeat", { nodeId: 9 });
    h.rejects("HES_NOT_FOUND", "nodeHeartbeat", { nodeId: 1, disks: [{ diskId: "nope" }] });
    h.rejects("HES_INVALID_ARGUMENT", "nodeHeartbeat", {
      nodeId: 1,
      disks: [{ diskId: "disk-1", usedBytes: 5 * TiB }],
    });
    h.rejects("HES_INVALID_ARGUMENT", "nodeHeartbeat", {
      nodeId: 1,
      disks: [{ diskId: "disk-1" }, { diskId: "disk-1" }],
    });
    h.ok("removeNode", { nodeId: 3 });
    h.rejects("HES_PERMISSION_DENIED", "nodeHeartbeat", { nodeId: 3 });
  });
});

describe("markNodeDown", () => {
  test("refused within the grace period (command time), accepted after; leases revoked", () => {
    const h = clusterWith(3, 1, TiB);
    const v = h.createVolume("v");
    const w = h.createVolume("w");
    h.open(v, 2);
    h.open(w, 2);
    h.nowMs += 29_999;
    const message = h.rejects("HES_INVALID_ARGUMENT", "markNodeDown", { nodeId: 2 });
    assert.match(message, /29999 ms ago/);
    h.nowMs += 1;
    const { revokedVolumeIds } = h.ok("markNodeDown", { nodeId: 2 });
    assert.deepEqual(revokedVolumeIds, [v, w]);
    const node = h.map.node(2);
    assert.equal(node?.state, "down");
    assert.equal(node?.downSinceMs, h.nowMs);
    assert.equal(h.map.volume(v)?.ownerNodeId, 0);
    assert.equal(h.map.volume(v)?.epoch, 1, "the epoch stays; the next open raises it");
    const again = h.run("markNodeDown", { nodeId: 2 });
    assert.ok(again.ok && !again.changed);
    h.assertSound();
  });

  test("a heartbeat that lands first wins the race with the leader's proposal", () => {
    const h = clusterWith(3, 1);
    h.nowMs += 40_000;
    h.ok("nodeHeartbeat", { nodeId: 1 });
    h.rejects("HES_INVALID_ARGUMENT", "markNodeDown", { nodeId: 1 });
    assert.equal(h.map.node(1)?.state, "up");
  });

  test("a down node that heartbeats is up again and is told what it missed", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v");
    h.open(v, 1);
    h.place(v, 0, 1);
    h.place(v, 1, 1);
    h.nowMs += 30_000;
    h.ok("markNodeDown", { nodeId: 1 });
    h.open(v, 2);
    h.ok("reportReplicaFailure", { volumeId: v, chunkIndex: 1, epoch: 2, nodeId: 1 });
    h.nowMs += 5_000;
    const { rejoin } = h.ok("nodeHeartbeat", { nodeId: 1 });
    assert.deepEqual(rejoin, {
      downSinceMs: h.nowMs - 5_000,
      revokedVolumeIds: [v],
      replicas: 2,
      replicasNotInSync: 1,
    });
    assert.equal(h.map.node(1)?.state, "up");
    const assignments = h.map.assignments(1);
    assert.deepEqual(
      assignments.map((a) => [a.chunkIndex, a.state, a.epoch]),
      [
        [0, "in-sync", 2],
        [1, "stale", 2],
      ],
    );
  });
});

describe("drainNode and removeNode", () => {
  test("drain takes a node out of placement; cancel puts it back; it survives being down", () => {
    const h = clusterWith(3, 1);
    h.ok("drainNode", { nodeId: 3 });
    assert.equal(h.map.node(3)?.state, "draining");
    const same = h.run("drainNode", { nodeId: 3 });
    assert.ok(same.ok && !same.changed);
    h.ok("drainNode", { nodeId: 3, cancel: true });
    assert.equal(h.map.node(3)?.state, "up");
    h.ok("drainNode", { nodeId: 3 });
    h.nowMs += 60_000;
    h.ok("markNodeDown", { nodeId: 3 });
    h.ok("nodeHeartbeat", { nodeId: 3 });
    assert.equal(h.map.node(3)?.state, "draining");
  });

  test("remove needs an empty node with no lease; the id is never reused", () => {
    const h = clusterWith(4, 1);
    const v = h.createVolume("v");
    h.open(v, 4);
    const chunk = h.place(v, 0, 4);
    assert.ok(chunk.replicas.some((r) => r.nodeId === 4));
    h.rejects("HES_INVALID_ARGUMENT", "removeNode", { nodeId: 4 });
    const empty = [1, 2, 3].find((id) => !chunk.replicas.some((r) => r.nodeId === id)) ?? 0;
    h.open(v, empty, true);
    h.ok("closeVolume", { volumeId: v, nodeId: empty, epoch: 2 });
    h.open(v, empty);
    h.rejects("HES_LEASE_HELD", "removeNode", { nodeId: empty });
    h.ok("closeVolume", { volumeId: v, nodeId: empty, epoch: 3 });
    h.ok("removeNode", { nodeId: empty });
    assert.equal(h.map.node(empty)?.state, "removed");
    h.rejects("HES_PERMISSION_DENIED", "removeNode", { nodeId: empty });
    h.rejects("HES_ALREADY_EXISTS", "addNode", {
      nodeId: empty,
      controlAddress: "h:1",
      dataAddress: "h:2",
      failureDomain: "d9",
    });
    h.rejects("HES_UNAVAILABLE", "openVolume", { volumeId: v, nodeId: empty });
    h.assertSound();
  });
});
