/**
 * Goal: every volume command does what its contract says when valid, and is rejected with the
 * documented code (changing nothing) when not: create, delete, resize, open/close (lease and
 * epoch), snapshots, linked clones, and the bounds of limits.ts. Method: the test harness, one
 * command at a time; `rejects` also checks that the map's content is unchanged.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  CHUNK_SIZE_BYTES_DEFAULT,
  CLONE_DEPTH_MAX,
  NAME_BYTES_MAX,
  SNAPSHOTS_PER_VOLUME_MAX,
  VOLUME_SIZE_BYTES_MAX,
  VOLUMES_MAX,
} from "@hes/replication";
import { clusterWith, GiB, MiB } from "./harness.ts";

describe("createVolume", () => {
  test("defaults: 64 MiB chunks, 3 replicas, majority write quorum; ids count up", () => {
    const h = clusterWith(3, 1);
    const a = h.createVolume("vm-1.root_disk-0", 10 * GiB);
    const b = h.createVolume("b", GiB, { replicationFactor: 5, chunkSizeBytes: 4 * MiB });
    assert.equal(b, a + 1);
    const volume = h.map.volumeByName("vm-1.root_disk-0");
    assert.equal(volume?.chunkSizeBytes, CHUNK_SIZE_BYTES_DEFAULT);
    assert.equal(volume?.replicationFactor, 3);
    assert.equal(volume?.writeQuorum, 2);
    assert.equal(volume?.ownerNodeId, 0);
    assert.equal(volume?.epoch, 0);
    assert.equal(h.map.volume(b)?.writeQuorum, 3);
    assert.equal(h.map.volume(b)?.chunkSizeBytes, 4 * MiB);
  });

  test("bad names, sizes, chunk sizes and replication are refused", () => {
    const h = clusterWith(3, 1);
    const bad = (fields: Parameters<typeof h.createVolume>[2], name = "v", size = GiB) =>
      h.rejects("HES_INVALID_ARGUMENT", "createVolume", { name, sizeBytes: size, ...fields });
    bad({}, "");
    bad({}, "-starts-with-dash");
    bad({}, "has space");
    bad({}, "x".repeat(NAME_BYTES_MAX + 1));
    bad({}, "v", 0);
    bad({}, "v", GiB + 512);
    bad({}, "v", VOLUME_SIZE_BYTES_MAX + 4096);
    bad({ chunkSizeBytes: 3 * MiB });
    bad({ chunkSizeBytes: 512 * 1024 });
    bad({ chunkSizeBytes: 2 * GiB });
    bad({ replicationFactor: 6 });
    bad({ replicationFactor: 2, writeQuorum: 3 });
    // 64 TiB in 1 MiB chunks is 2^26 chunks: more than a volume may have.
    bad({ chunkSizeBytes: MiB }, "v", VOLUME_SIZE_BYTES_MAX);
    h.createVolume("v");
    h.rejects("HES_ALREADY_EXISTS", "createVolume", { name: "v", sizeBytes: GiB });
  });

  test("the volume table is bounded by VOLUMES_MAX", () => {
    const h = clusterWith(3, 1);
    for (let i = 0; i < VOLUMES_MAX; i++) h.createVolume(`v${i}`, GiB);
    h.rejects("HES_BUSY", "createVolume", { name: "one-more", sizeBytes: GiB });
  });
});

describe("deleteVolume and resizeVolume", () => {
  test("delete frees the name, drops placements and never reuses the id", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v");
    h.open(v, 1);
    h.place(v, 0, 1);
    h.rejects("HES_LEASE_HELD", "deleteVolume", { volumeId: v });
    h.ok("closeVolume", { volumeId: v, nodeId: 1, epoch: 1 });
    h.ok("deleteVolume", { volumeId: v });
    assert.equal(h.map.volume(v), undefined);
    assert.equal(h.map.chunksPlaced, 0);
    assert.equal(h.map.placedBytes(1), 0);
    const again = h.createVolume("v");
    assert.equal(again, v + 1);
    h.rejects("HES_NOT_FOUND", "deleteVolume", { volumeId: v });
    h.rejects("HES_INVALID_ARGUMENT", "deleteVolume", { volumeId: 0 });
    h.assertSound();
  });

  test("grow is free; shrink needs allow_shrink, no snapshots, no lease, and drops chunks", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v", GiB);
    h.open(v, 1);
    for (let c = 0; c < 16; c++) h.place(v, c, 1);
    h.ok("resizeVolume", { volumeId: v, sizeBytes: 2 * GiB });
    const same = h.run("resizeVolume", { volumeId: v, sizeBytes: 2 * GiB });
    assert.ok(same.ok && !same.changed);
    h.rejects("HES_INVALID_ARGUMENT", "resizeVolume", { volumeId: v, sizeBytes: 256 * MiB });
    h.rejects("HES_LEASE_HELD", "resizeVolume", {
      volumeId: v,
      sizeBytes: 256 * MiB,
      allowShrink: true,
    });
    h.ok("closeVolume", { volumeId: v, nodeId: 1, epoch: 1 });
    h.ok("createSnapshot", { volumeId: v, name: "s" });
    h.rejects("HES_INVALID_ARGUMENT", "resizeVolume", {
      volumeId: v,
      sizeBytes: 256 * MiB,
      allowShrink: true,
    });
    h.ok("deleteSnapshot", { volumeId: v, snapshotId: 1 });
    h.ok("resizeVolume", { volumeId: v, sizeBytes: 256 * MiB + 4096, allowShrink: true });
    assert.deepEqual(
      h.map.chunksOfVolume(v).map((c) => c.chunkIndex),
      [0, 1, 2, 3, 4],
    );
    h.assertSound();
  });
});

describe("openVolume and closeVolume", () => {
  test("every grant raises the epoch; another holder needs takeover", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v");
    assert.equal(h.open(v, 1), 1);
    assert.equal(h.open(v, 1), 2, "a re-open by the owner fences its earlier incarnation");
    const message = h.rejects("HES_LEASE_HELD", "openVolume", { volumeId: v, nodeId: 2 });
    assert.match(message, /open on node 1 at epoch 2/);
    assert.equal(h.open(v, 2, true), 3);
    assert.equal(h.map.volume(v)?.ownerNodeId, 2);
    h.rejects("HES_NOT_FOUND", "openVolume", { volumeId: v, nodeId: 42 });
    h.rejects("HES_NOT_FOUND", "openVolume", { volumeId: 99, nodeId: 1 });
    h.rejects("HES_INVALID_ARGUMENT", "openVolume", { volumeId: v, nodeId: 0 });
  });

  test("close needs the current owner and epoch; a deposed owner is fenced", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v");
    h.open(v, 1);
    h.open(v, 2, true);
    h.rejects("HES_FENCED", "closeVolume", { volumeId: v, nodeId: 1, epoch: 1 });
    h.rejects("HES_FENCED", "closeVolume", { volumeId: v, nodeId: 1, epoch: 2 });
    h.ok("closeVolume", { volumeId: v, nodeId: 2, epoch: 2 });
    assert.equal(h.map.volume(v)?.ownerNodeId, 0);
    const retry = h.run("closeVolume", { volumeId: v, nodeId: 2, epoch: 2 });
    assert.ok(retry.ok && !retry.changed, "a retried close is a no-op");
  });

  test("a down node cannot open a volume", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v");
    h.nowMs += 30_000;
    h.ok("markNodeDown", { nodeId: 3 });
    h.rejects("HES_UNAVAILABLE", "openVolume", { volumeId: v, nodeId: 3 });
  });
});

describe("snapshots and clones", () => {
  test("snapshots get ids, the entry's index and time; names are unique per volume", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v");
    const w = h.createVolume("w");
    const { snapshotId } = h.ok("createSnapshot", { volumeId: v, name: "before" });
    const snapshot = h.map.volume(v)?.snapshots[0];
    assert.deepEqual(snapshot, {
      snapshotId,
      name: "before",
      createdAtIndex: h.index,
      createdAtMs: h.nowMs,
    });
    h.ok("createSnapshot", { volumeId: w, name: "before" });
    h.rejects("HES_ALREADY_EXISTS", "createSnapshot", { volumeId: v, name: "before" });
    h.rejects("HES_INVALID_ARGUMENT", "createSnapshot", { volumeId: v, name: "bad name" });
    h.rejects("HES_NOT_FOUND", "deleteSnapshot", { volumeId: w, snapshotId: snapshotId ?? 0 });
  });

  test("snapshots per volume are bounded", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("v");
    for (let i = 0; i < SNAPSHOTS_PER_VOLUME_MAX; i++) {
      h.ok("createSnapshot", { volumeId: v, name: `s${i}` });
    }
    h.rejects("HES_BUSY", "createSnapshot", { volumeId: v, name: "one-more" });
  });

  test("a clone reads through its parent snapshot, which then cannot go away", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("golden", 8 * GiB, { chunkSizeBytes: 32 * MiB });
    const { snapshotId = 0 } = h.ok("createSnapshot", { volumeId: v, name: "base" });
    const { volumeId: clone = 0 } = h.ok("cloneVolume", {
      sourceVolumeId: v,
      snapshotId,
      name: "vm-7",
    });
    const record = h.map.volume(clone);
    assert.equal(record?.parentVolumeId, v);
    assert.equal(record?.parentSnapshotId, snapshotId);
    assert.equal(record?.sizeBytes, 8 * GiB);
    assert.equal(record?.chunkSizeBytes, 32 * MiB);
    assert.deepEqual(record?.snapshots, []);
    h.rejects("HES_INVALID_ARGUMENT", "deleteSnapshot", { volumeId: v, snapshotId });
    h.rejects("HES_INVALID_ARGUMENT", "deleteVolume", { volumeId: v });
    h.rejects("HES_NOT_FOUND", "cloneVolume", { sourceVolumeId: v, snapshotId: 99, name: "x" });
    h.rejects("HES_ALREADY_EXISTS", "cloneVolume", { sourceVolumeId: v, snapshotId, name: "vm-7" });
    h.ok("deleteVolume", { volumeId: clone });
    h.ok("deleteSnapshot", { volumeId: v, snapshotId });
    h.ok("deleteVolume", { volumeId: v });
    h.assertSound();
  });

  test("a flattened clone is detached by its owner; then the parent snapshot can go", () => {
    const h = clusterWith(3, 1);
    const v = h.createVolume("golden");
    const { snapshotId = 0 } = h.ok("createSnapshot", { volumeId: v, name: "base" });
    const { volumeId: clone = 0 } = h.ok("cloneVolume", {
      sourceVolumeId: v,
      snapshotId,
      name: "vm-7",
    });
    const epoch = h.open(clone, 2);
    // Only the owner at its current epoch vouches that every block was copied.
    h.rejects("HES_FENCED", "detachClone", { volumeId: clone, nodeId: 2, epoch: epoch - 1 });
    h.rejects("HES_FENCED", "detachClone", { volumeId: clone, nodeId: 1, epoch });
    h.rejects("HES_NOT_FOUND", "detachClone", { volumeId: 99, nodeId: 2, epoch });
    h.rejects("HES_INVALID_ARGUMENT", "deleteSnapshot", { volumeId: v, snapshotId });
    const result = h.run("detachClone", { volumeId: clone, nodeId: 2, epoch });
    assert.ok(result.ok && result.changed, "the first detach changes the map");
    const record = h.map.volume(clone);
    assert.equal(record?.parentVolumeId, 0);
    assert.equal(record?.parentSnapshotId, 0);
    const again = h.run("detachClone", { volumeId: clone, nodeId: 2, epoch });
    assert.ok(again.ok && !again.changed, "a repeat is harmless");
    h.ok("deleteSnapshot", { volumeId: v, snapshotId });
    h.ok("deleteVolume", { volumeId: v });
    assert.equal(h.map.volume(clone)?.name, "vm-7");
    h.assertSound();
  });

  test("clone chains are bounded by CLONE_DEPTH_MAX", () => {
    const h = clusterWith(3, 1);
    let source = h.createVolume("c0");
    for (let depth = 1; depth <= CLONE_DEPTH_MAX; depth++) {
      const { snapshotId = 0 } = h.ok("createSnapshot", { volumeId: source, name: "s" });
      const { volumeId = 0 } = h.ok("cloneVolume", {
        sourceVolumeId: source,
        snapshotId,
        name: `c${depth}`,
      });
      source = volumeId;
    }
    const { snapshotId = 0 } = h.ok("createSnapshot", { volumeId: source, name: "s" });
    h.rejects("HES_INVALID_ARGUMENT", "cloneVolume", {
      sourceVolumeId: source,
      snapshotId,
      name: "too-deep",
    });
  });
});
