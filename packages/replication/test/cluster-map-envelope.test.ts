/**
 * Goal: the state machine's contract with the Raft driver holds: the envelope (version, time
 * stamp, size, well-formedness) is checked and a bad one rejected without change; map time
 * only moves forward; the applied index must increase; snapshots round-trip to the same bytes
 * and a bad snapshot is refused without touching the map; the status view reports the map.
 * Method: drive a ClusterMap through the test harness with encoded commands.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AssertionError, isHesError } from "@hes/base";
import { ClusterCommandSchema, ClusterMapStateSchema, NodeState } from "@hes/proto";
import {
  ClusterMap,
  COMMAND_BYTES_MAX,
  decodeChunkTable,
  decodeCommand,
  encodeChunkTable,
  encodeCommand,
  GRACE_PERIOD_MS_DEFAULT,
  stampCommand,
} from "@hes/replication";
import { clusterWith, contentOf, GiB, Harness } from "./harness.ts";

describe("envelope", () => {
  test("a command from an unknown version is rejected as unsupported and changes nothing", () => {
    const h = clusterWith(3, 1);
    h.rejects("HES_UNSUPPORTED", "createVolume", { name: "v", sizeBytes: GiB }, { version: 2 });
    h.rejects("HES_UNSUPPORTED", "createVolume", { name: "v", sizeBytes: GiB }, { version: 0 });
    assert.equal(h.map.volumeByName("v"), undefined);
  });

  test("an unstamped command is rejected", () => {
    const h = clusterWith(3, 1);
    const message = h.rejects("HES_INVALID_ARGUMENT", "createVolume", { name: "v" }, { timeMs: 0 });
    assert.match(message, /not stamped/);
  });

  test("malformed and oversized bytes are rejected with no command kind", () => {
    const h = clusterWith(3, 1);
    const before = contentOf(h.map);
    const garbage = h.applyBytes(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f]));
    assert.ok(!garbage.ok && garbage.error.code === "HES_INVALID_ARGUMENT");
    assert.equal(garbage.kind, undefined);
    const huge = h.applyBytes(new Uint8Array(COMMAND_BYTES_MAX + 1));
    assert.ok(!huge.ok && huge.error.code === "HES_TOO_LARGE");
    assert.deepEqual(contentOf(h.map), before);
    assert.equal(h.map.appliedIndex, h.index, "rejected entries still advance the applied index");
  });

  test("an envelope with no command is unsupported", () => {
    const h = clusterWith(3, 1);
    const data = toBinary(
      ClusterCommandSchema,
      create(ClusterCommandSchema, { version: 1, timeMs: 5n }),
    );
    const result = h.applyBytes(data);
    assert.ok(!result.ok && result.error.code === "HES_UNSUPPORTED");
  });

  test("nothing but InitCluster is accepted before the cluster is initialised", () => {
    const h = new Harness();
    h.rejects("HES_UNAVAILABLE", "createVolume", { name: "v", sizeBytes: GiB });
    h.init();
    h.createVolume("v");
  });

  test("the applied index must increase: a repeated entry is a driver bug", () => {
    const h = clusterWith(3, 1);
    const data = encodeCommand("createVolume", { name: "v", sizeBytes: GiB }, { timeMs: 1 });
    assert.throws(() => h.map.apply(data, { index: h.index, term: 1 }), AssertionError);
    assert.throws(() => h.map.apply(data, { index: h.index + 1, term: 0 }), AssertionError);
  });

  test("map time is the highest stamp so far: an earlier stamp does not turn it back", () => {
    const h = clusterWith(3, 1);
    const later = h.nowMs + 60_000;
    h.ok("nodeHeartbeat", { nodeId: 1 }, { timeMs: later });
    h.ok("nodeHeartbeat", { nodeId: 2 }, { timeMs: later - 50_000 });
    assert.equal(h.map.timeMs, later);
    assert.equal(h.map.node(2)?.lastHeartbeatMs, later, "stamped with map time, not the stamp");
  });

  test("stampCommand sets the leader's time and refuses malformed bytes", () => {
    const data = encodeCommand("removeNode", { nodeId: 3 });
    assert.equal(decodeCommand(data).timeMs, 0n);
    assert.equal(decodeCommand(stampCommand(data, 1234)).timeMs, 1234n);
    assert.throws(
      () => stampCommand(new Uint8Array([0xff]), 1),
      (e) => isHesError(e),
    );
    assert.throws(() => stampCommand(data, 0), RangeError);
    assert.throws(() => encodeCommand("removeNode", { nodeId: 3 }, { timeMs: -1 }), RangeError);
  });
});

describe("cluster and config", () => {
  test("InitCluster sets the id once; the same id again is a no-op, another is refused", () => {
    const h = new Harness();
    const first = h.run("initCluster", { clusterId: "c1" });
    assert.ok(first.ok && first.changed);
    assert.equal(h.map.clusterId, "c1");
    assert.equal(h.map.config.gracePeriodMs, GRACE_PERIOD_MS_DEFAULT);
    const again = h.run("initCluster", { clusterId: "c1" });
    assert.ok(again.ok && !again.changed);
    h.rejects("HES_ALREADY_EXISTS", "initCluster", { clusterId: "c2" });
  });

  test("bad cluster ids and grace periods are refused", () => {
    const h = new Harness();
    h.rejects("HES_INVALID_ARGUMENT", "initCluster", { clusterId: "" });
    h.rejects("HES_INVALID_ARGUMENT", "initCluster", { clusterId: "ünïcode" });
    h.rejects("HES_INVALID_ARGUMENT", "initCluster", { clusterId: "c", gracePeriodMs: 10 });
    h.rejects("HES_INVALID_ARGUMENT", "initCluster", { clusterId: "x".repeat(65) });
  });

  test("SetConfig changes the grace period within bounds; 0 leaves it", () => {
    const h = clusterWith(3, 1);
    h.ok("setConfig", { gracePeriodMs: 10_000 });
    assert.equal(h.map.config.gracePeriodMs, 10_000);
    const noop = h.run("setConfig", { gracePeriodMs: 0 });
    assert.ok(noop.ok && !noop.changed);
    h.rejects("HES_INVALID_ARGUMENT", "setConfig", { gracePeriodMs: 999 });
    h.rejects("HES_INVALID_ARGUMENT", "setConfig", { gracePeriodMs: 3_600_001 });
  });
});

describe("snapshot and restore", () => {
  function busyCluster(): Harness {
    const h = clusterWith(4, 2);
    const a = h.createVolume("a", 4 * GiB);
    h.createVolume("b", GiB, { replicationFactor: 2, chunkSizeBytes: 16 * 1024 * 1024 });
    h.open(a, 1);
    for (let c = 0; c < 10; c++) h.place(a, c, 1);
    const { snapshotId } = h.ok("createSnapshot", { volumeId: a, name: "s1" });
    h.ok("cloneVolume", { sourceVolumeId: a, snapshotId: snapshotId ?? 0, name: "a-clone" });
    h.ok("drainNode", { nodeId: 8 });
    return h;
  }

  test("a snapshot restores to a map that encodes to the same bytes and answers the same", () => {
    const h = busyCluster();
    const bytes = h.map.snapshot();
    const restored = ClusterMap.fromSnapshot(bytes);
    assert.deepEqual(restored.snapshot(), bytes);
    assert.deepEqual(restored.checkInvariants(), []);
    assert.equal(restored.appliedIndex, h.map.appliedIndex);
    assert.equal(restored.timeMs, h.map.timeMs);
    assert.deepEqual(restored.volumeByName("a-clone"), h.map.volumeByName("a-clone"));
    assert.deepEqual(restored.chunk(1, 3), h.map.chunk(1, 3));
    assert.deepEqual(restored.assignments(1), h.map.assignments(1));
    assert.deepEqual(restored.status(), h.map.status());
  });

  test("a bad snapshot is refused with HES_BAD_FORMAT and the map is unchanged", () => {
    const h = busyCluster();
    const before = h.map.snapshot();
    const refuse = (bytes: Uint8Array, why: RegExp) =>
      assert.throws(
        () => h.map.restore(bytes),
        (e) => isHesError(e, "HES_BAD_FORMAT") && why.test(e.message),
      );
    refuse(new Uint8Array([0xff, 0xff, 0xff]), /not a ClusterMapState/);
    refuse(
      toBinary(ClusterMapStateSchema, create(ClusterMapStateSchema, { format: 99 })),
      /format 99/,
    );
    // Two replicas of a chunk in one failure domain: decodes, but breaks an invariant.
    const message = fromBinary(ClusterMapStateSchema, before);
    const chunks = decodeChunkTable(message.chunkTable, 6);
    const chunk = chunks[0];
    assert.ok(chunk !== undefined && chunk.replicas[0]?.nodeId === 1);
    assert.ok(!chunk.replicas.some((r) => r.nodeId === 2));
    // Node 2 shares domain d0 with node 1.
    const replicas = chunk.replicas.map((r, i) => (i === 1 ? { ...r, nodeId: 2 } : r));
    message.chunkTable = encodeChunkTable([{ ...chunk, replicas }, ...chunks.slice(1)]);
    refuse(toBinary(ClusterMapStateSchema, message), /share domain d0/);
    // Nodes out of order.
    const unsorted = fromBinary(ClusterMapStateSchema, before);
    unsorted.nodes.reverse();
    refuse(toBinary(ClusterMapStateSchema, unsorted), /not sorted/);
    assert.deepEqual(h.map.snapshot(), before);
  });
});

describe("chunk table", () => {
  const chunk = {
    volumeId: 0xffff_ffff,
    chunkIndex: (1 << 20) - 1,
    placedAtIndex: Number.MAX_SAFE_INTEGER,
    moveFromNodeId: 7,
    moveToNodeId: 0xffff_ffff,
    replicas: [
      {
        nodeId: 7,
        state: "in-sync" as const,
        durableSeq: 2 ** 53 - 1,
        bytesDone: 0,
        bytesTotal: 0,
      },
      {
        nodeId: 0xffff_ffff,
        state: "filling" as const,
        durableSeq: 0,
        bytesDone: 5,
        bytesTotal: 9,
      },
      { nodeId: 1, state: "stale" as const, durableSeq: 128, bytesDone: 127, bytesTotal: 16384 },
    ],
  };

  test("round-trips records with extreme values", () => {
    const bytes = encodeChunkTable([chunk, { ...chunk, volumeId: 1, replicas: [] }]);
    assert.deepEqual(decodeChunkTable(bytes, 6), [chunk, { ...chunk, volumeId: 1, replicas: [] }]);
    assert.deepEqual(decodeChunkTable(new Uint8Array(0), 6), []);
  });

  test("truncated, overlong or unknown input is HES_BAD_FORMAT", () => {
    const bytes = encodeChunkTable([chunk]);
    const refuse = (input: Uint8Array, why: RegExp) =>
      assert.throws(
        () => decodeChunkTable(input, 6),
        (e) => isHesError(e, "HES_BAD_FORMAT") && why.test(e.message),
      );
    for (let cut = 1; cut < bytes.length; cut++) refuse(bytes.subarray(0, cut), /truncated/);
    refuse(new Uint8Array(9).fill(0xff), /too long/);
    refuse(new Uint8Array([1, 0, 0, 0, 0, 1, 1, 9, 0, 0, 0]), /unknown replica state/);
    refuse(new Uint8Array([1, 0, 0, 0, 0, 7]), /7 replicas/);
    refuse(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), /out of range/);
  });
});

describe("status", () => {
  test("reports nodes, volumes and placement progress", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v", 2 * GiB);
    h.open(v, 1);
    h.place(v, 0, 1);
    const status = h.map.status();
    assert.equal(status.clusterId, "test-cluster");
    assert.equal(status.nodes.length, 3);
    assert.equal(status.nodes[0]?.state, NodeState.UP);
    assert.equal(status.nodes[0]?.replicas, 1n);
    assert.equal(status.nodes[0]?.placedBytes, 64n * 1024n * 1024n);
    assert.equal(status.volumes[0]?.name, "v");
    assert.equal(status.volumes[0]?.chunksPlaced, 1n);
    assert.equal(status.volumes[0]?.ownerNodeId, 1);
    assert.equal(status.placement?.chunksPlaced, 1n);
    assert.equal(status.placement?.chunksDegraded, 0n);
  });
});
