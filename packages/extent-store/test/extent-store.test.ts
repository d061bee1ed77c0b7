/**
 * Goal: prove the extent store's API contract on real files: data round trips, holes and
 * zeroes, versions and sealing, redirect-on-write snapshots, deletion, listing, changed blocks,
 * allocation maps, export and import, scrub, stats, persistence across clean and unclean
 * reopen, refusal of foreign or newer disks, argument checks that change nothing, group commit,
 * and several disks.
 * Method: ExtentStore over FileDisk on temporary files, byte-exact comparisons.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { isHesError, Prng } from "@hes/base";
import { expectRejects } from "@hes/base/testing";
import {
  type ChunkExportPiece,
  type ChunkId,
  ExtentStore,
  type ExtentStoreOptions,
  FileDisk,
  fileDiskSyscalls,
} from "@hes/extent-store";
import { crc32c } from "@node-rs/crc32";

const BLOCK = 4096;
const MiB = 1024 * 1024;
const root = mkdtempSync(join(tmpdir(), "hes-extent-store-"));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;

interface Place {
  readonly file: string;
  readonly indexPath: string;
}

function place(): Place {
  const n = counter++;
  return { file: join(root, `disk-${n}.img`), indexPath: join(root, `index-${n}`) };
}

async function open(
  at: Place | Place[],
  options: Partial<ExtentStoreOptions> = {},
  diskOptions: Parameters<typeof FileDisk.open>[1] = {},
): Promise<ExtentStore> {
  const places = Array.isArray(at) ? at : [at];
  const disks = [];
  for (const p of places) {
    disks.push({
      disk: await FileDisk.open(p.file, { createSizeBytes: 64 * MiB, ...diskOptions }),
      indexPath: p.indexPath,
    });
  }
  return ExtentStore.open({
    disks,
    clusterId: "test-cluster",
    format: true,
    chunkSizeBytes: 4 * MiB,
    segmentSizeBytes: 4 * MiB,
    ...options,
  });
}

function bytes(seed: number, blocks: number): Uint8Array {
  return new Prng(seed).fill(new Uint8Array(blocks * BLOCK));
}

const zeros = (blocks: number): Uint8Array => new Uint8Array(blocks * BLOCK);
const A: ChunkId = { volumeId: 1, chunkIndex: 0 };
const B: ChunkId = { volumeId: 1, chunkIndex: 1 };
const stamp = (seq: number, epoch = 1) => ({ epoch, seq });
const code =
  (...codes: Parameters<typeof isHesError>[1][]) =>
  (error: unknown) =>
    isHesError(error, ...codes);

describe("ExtentStore data path", () => {
  test("writes read back; holes and unwritten chunks read as zeros", async () => {
    const store = await open(place());
    const data = bytes(1, 3);
    await store.write(A, 5 * BLOCK, data, stamp(1));
    const read = await store.read(A, 4 * BLOCK, 5 * BLOCK);
    assert.deepEqual(read.subarray(0, BLOCK), zeros(1));
    assert.deepEqual(read.subarray(BLOCK, 4 * BLOCK), data);
    assert.deepEqual(read.subarray(4 * BLOCK), zeros(1));
    assert.deepEqual(await store.read(B, 0, 2 * BLOCK), zeros(2));
    assert.deepEqual(await store.read(A, 4 * MiB - BLOCK, BLOCK), zeros(1));
    await store.close();
  });

  test("overwrites replace; the last write wins per block", async () => {
    const store = await open(place());
    await store.write(A, 0, bytes(1, 8), stamp(1));
    await store.write(A, 2 * BLOCK, bytes(2, 2), stamp(2));
    const expected = bytes(1, 8);
    expected.set(bytes(2, 2), 2 * BLOCK);
    assert.deepEqual(await store.read(A, 0, 8 * BLOCK), expected);
    assert.deepEqual(store.version(A), { epoch: 1, durableSeq: 2 });
    await store.close();
  });

  test("writeZeroes and discard are metadata: zeros, with their state in the allocation map", async () => {
    const store = await open(place());
    await store.write(A, 0, bytes(3, 12), stamp(1));
    await store.writeZeroes(A, 2 * BLOCK, 2 * BLOCK, stamp(2));
    await store.discard(A, 6 * BLOCK, 2 * BLOCK, stamp(3));
    await store.writeZeroes(A, 9 * BLOCK, BLOCK, { ...stamp(4), unmap: true });
    const expected = bytes(3, 12);
    expected.fill(0, 2 * BLOCK, 4 * BLOCK);
    expected.fill(0, 6 * BLOCK, 8 * BLOCK);
    expected.fill(0, 9 * BLOCK, 10 * BLOCK);
    assert.deepEqual(await store.read(A, 0, 12 * BLOCK), expected);
    assert.deepEqual(store.allocationMap(A, 0, 16 * BLOCK), [
      { offsetBytes: 0, lengthBytes: 2 * BLOCK, state: "data" },
      { offsetBytes: 2 * BLOCK, lengthBytes: 2 * BLOCK, state: "zero" },
      { offsetBytes: 4 * BLOCK, lengthBytes: 2 * BLOCK, state: "data" },
      { offsetBytes: 6 * BLOCK, lengthBytes: 2 * BLOCK, state: "hole" },
      { offsetBytes: 8 * BLOCK, lengthBytes: BLOCK, state: "data" },
      { offsetBytes: 9 * BLOCK, lengthBytes: BLOCK, state: "hole" },
      { offsetBytes: 10 * BLOCK, lengthBytes: 2 * BLOCK, state: "data" },
      { offsetBytes: 12 * BLOCK, lengthBytes: 4 * BLOCK, state: "hole" },
    ]);
    assert.deepEqual(store.version(A), { epoch: 1, durableSeq: 4 });
    assert.equal(store.listChunks()[0]?.allocatedBytes, 7 * BLOCK);
    await store.close();
  });

  test("seal raises the epoch durably, never lowers it, and creates an empty chunk", async () => {
    const at = place();
    const store = await open(at);
    assert.equal(store.version(A), undefined);
    assert.deepEqual(await store.seal(A, 5), { epoch: 5, durableSeq: 0 });
    assert.deepEqual(await store.seal(A, 3), { epoch: 5, durableSeq: 0 });
    await store.write(A, 0, bytes(1, 1), stamp(7, 4)); // stored, not enforced: the epoch stays 5
    assert.deepEqual(store.version(A), { epoch: 5, durableSeq: 7 });
    await store.close({ checkpoint: false });
    const reopened = await open(at);
    assert.deepEqual(reopened.version(A), { epoch: 5, durableSeq: 7 });
    await reopened.close();
  });

  test("bad arguments throw RangeError/TypeError and change nothing", async () => {
    const store = await open(place());
    await store.write(A, 0, bytes(1, 1), stamp(1));
    const bad: Array<[string, () => Promise<unknown>]> = [
      ["unaligned offset", () => store.write(A, 100, bytes(2, 1), stamp(2))],
      ["partial block", () => store.write(A, 0, new Uint8Array(100), stamp(2))],
      ["empty", () => store.write(A, 0, new Uint8Array(0), stamp(2))],
      ["past the chunk", () => store.write(A, 4 * MiB - BLOCK, bytes(2, 2), stamp(2))],
      ["too large", () => store.write(A, 0, new Uint8Array(store.writeBytesMax + BLOCK), stamp(2))],
      ["seq 0", () => store.write(A, 0, bytes(2, 1), stamp(0))],
      ["negative epoch", () => store.write(A, 0, bytes(2, 1), stamp(2, -1))],
      ["bad chunk", () => store.write({ volumeId: -1, chunkIndex: 0 }, 0, bytes(2, 1), stamp(2))],
      ["float chunk", () => store.read({ volumeId: 1.5, chunkIndex: 0 }, 0, BLOCK)],
      ["not bytes", () => store.write(A, 0, "x" as unknown as Uint8Array, stamp(2))],
      ["read past end", () => store.read(A, 4 * MiB, BLOCK)],
      ["discard unaligned", () => store.discard(A, 0, 10, stamp(2))],
    ];
    for (const [what, call] of bad) {
      await expectRejects(call, (e) => e instanceof RangeError || e instanceof TypeError, what);
    }
    assert.deepEqual(await store.read(A, 0, BLOCK), bytes(1, 1));
    assert.deepEqual(store.version(A), { epoch: 1, durableSeq: 1 });
    await store.close();
  });

  test("concurrent writers share fdatasyncs (group commit)", async () => {
    let syncs = 0;
    const store = await open(
      place(),
      {},
      {
        syscalls: {
          ...fileDiskSyscalls,
          fdatasync: (fd, callback) => {
            syncs++;
            fileDiskSyscalls.fdatasync(fd, callback);
          },
        },
      },
    );
    const before = syncs;
    await Promise.all(
      Array.from({ length: 128 }, (_, i) => store.write(A, i * BLOCK, bytes(i, 1), stamp(i + 1))),
    );
    const used = syncs - before;
    assert.ok(used < 32, `128 concurrent writes used ${used} fdatasyncs`);
    for (let i = 0; i < 128; i += 17)
      assert.deepEqual(await store.read(A, i * BLOCK, BLOCK), bytes(i, 1));
    await store.close();
  });

  test("calls after close fail HES_CLOSED", async () => {
    const store = await open(place());
    await store.close();
    await store.close();
    await expectRejects(
      () => store.write(A, 0, bytes(1, 1), stamp(1)),
      code("HES_CLOSED"),
      "write",
    );
    await expectRejects(() => store.read(A, 0, BLOCK), code("HES_CLOSED"), "read");
  });
});

describe("ExtentStore snapshots, deletion, maps", () => {
  test("a pinned snapshot keeps its view while the head moves on (redirect-on-write)", async () => {
    const at = place();
    const store = await open(at);
    await store.write(A, 0, bytes(1, 8), stamp(1));
    const before = store.stats();
    await store.pinSnapshot(A, 100);
    const pinned = store.stats();
    assert.equal(pinned.usedBytes, before.usedBytes + BLOCK, "pinning writes one record header");
    assert.equal(pinned.liveBytes, before.liveBytes, "and no data");
    await store.write(A, 2 * BLOCK, bytes(2, 2), stamp(2));
    await store.discard(A, 6 * BLOCK, 2 * BLOCK, stamp(3));
    assert.deepEqual(await store.read(A, 0, 8 * BLOCK, { snapshotId: 100 }), bytes(1, 8));
    const head = bytes(1, 8);
    head.set(bytes(2, 2), 2 * BLOCK);
    head.fill(0, 6 * BLOCK);
    assert.deepEqual(await store.read(A, 0, 8 * BLOCK), head);
    assert.deepEqual(store.changedBlocks(A, { fromSnapshotId: 100 }), [
      { offsetBytes: 2 * BLOCK, lengthBytes: 2 * BLOCK, state: "data" },
      { offsetBytes: 6 * BLOCK, lengthBytes: 2 * BLOCK, state: "hole" },
    ]);
    assert.deepEqual(store.snapshots(A), [
      { snapshotId: 100, version: { epoch: 1, durableSeq: 1 } },
    ]);
    await expectRejects(() => store.pinSnapshot(A, 100), code("HES_ALREADY_EXISTS"), "pin twice");
    await store.close({ checkpoint: false });
    const reopened = await open(at);
    assert.deepEqual(await reopened.read(A, 0, 8 * BLOCK, { snapshotId: 100 }), bytes(1, 8));
    assert.deepEqual(await reopened.read(A, 0, 8 * BLOCK), head);
    const live = reopened.stats().liveBytes;
    await reopened.releaseSnapshot(A, 100);
    assert.equal(reopened.stats().liveBytes, live - 4 * BLOCK, "blocks only the snapshot held die");
    await expectRejects(
      () => reopened.read(A, 0, BLOCK, { snapshotId: 100 }),
      code("HES_NOT_FOUND"),
      "released",
    );
    await expectRejects(() => reopened.releaseSnapshot(A, 100), code("HES_NOT_FOUND"), "twice");
    await reopened.close();
  });

  test("changed blocks since a seq: every block written, zeroed or discarded after it", async () => {
    const store = await open(place());
    await store.write(A, 0, bytes(1, 4), stamp(10));
    await store.write(A, 8 * BLOCK, bytes(2, 2), stamp(11));
    await store.writeZeroes(A, BLOCK, BLOCK, stamp(12));
    await store.discard(A, 9 * BLOCK, BLOCK, stamp(13));
    assert.deepEqual(store.changedBlocks(A, { sinceSeq: 10 }), [
      { offsetBytes: BLOCK, lengthBytes: BLOCK, state: "zero" },
      { offsetBytes: 8 * BLOCK, lengthBytes: BLOCK, state: "data" },
      { offsetBytes: 9 * BLOCK, lengthBytes: BLOCK, state: "hole" },
    ]);
    assert.deepEqual(store.changedBlocks(A, { sinceSeq: 13 }), []);
    assert.equal(store.changedBlocks(A, { sinceSeq: 0 }).length, 5);
    assert.deepEqual(store.changedBlocks(B, { sinceSeq: 0 }), []);
    await store.close();
  });

  test("delete removes the chunk and its snapshots; listing follows", async () => {
    const store = await open(place());
    await store.write(A, 0, bytes(1, 4), stamp(1));
    await store.write(B, 0, bytes(2, 4), stamp(1));
    await store.pinSnapshot(B, 1);
    assert.deepEqual(
      store
        .listChunks()
        .map((info) => info.chunk.chunkIndex)
        .sort(),
      [0, 1],
    );
    await store.deleteChunk(B);
    await store.deleteChunk(B); // absent: nothing to do
    assert.deepEqual(
      store.listChunks().map((info) => info.chunk),
      [A],
    );
    assert.equal(store.version(B), undefined);
    assert.deepEqual(await store.read(B, 0, 4 * BLOCK), zeros(4));
    assert.equal(store.stats().liveBytes, 4 * BLOCK);
    await store.close();
  });

  test("export and import carry data, zeroes, holes, per-block seqs and the version", async () => {
    const source = await open(place());
    const target = await open(place());
    await source.write(A, 0, bytes(1, 200), stamp(1));
    await source.write(A, 200 * BLOCK, bytes(9, 100), stamp(1)); // crosses an index page
    await source.write(A, 1000 * BLOCK, bytes(2, 4), stamp(2, 3));
    await source.writeZeroes(A, 10 * BLOCK, 5 * BLOCK, stamp(3, 3));
    await source.discard(A, 20 * BLOCK, 5 * BLOCK, stamp(4, 3));
    const pieces: ChunkExportPiece[] = [];
    for await (const piece of source.exportChunk(A)) pieces.push(piece);
    assert.equal(pieces[0]?.kind, "version");
    assert.ok(pieces.every((piece) => piece.kind !== "data" || piece.data.byteLength <= MiB));
    const version = await target.importChunk(A, pieces);
    assert.deepEqual(version, { epoch: 3, durableSeq: 4 });
    const all = 1024 * BLOCK;
    assert.deepEqual(await target.read(A, 0, all), await source.read(A, 0, all));
    assert.deepEqual(target.allocationMap(A, 0, all), source.allocationMap(A, 0, all));
    assert.deepEqual(
      target.changedBlocks(A, { sinceSeq: 1 }),
      source.changedBlocks(A, { sinceSeq: 1 }),
    );
    // Incremental catch-up: only what changed after the version the target holds.
    await source.write(A, 50 * BLOCK, bytes(3, 1), stamp(5, 3));
    const delta: ChunkExportPiece[] = [];
    for await (const piece of source.exportChunk(A, { sinceSeq: 4 })) delta.push(piece);
    assert.equal(delta.filter((piece) => piece.kind === "data").length, 1);
    await target.importChunk(A, delta);
    assert.deepEqual(await target.read(A, 0, all), await source.read(A, 0, all));
    assert.deepEqual(target.version(A), { epoch: 3, durableSeq: 5 });
    await source.close();
    await target.close();
  });

  test("a conditional import keeps blocks newer than its pieces, also after replay", async () => {
    for (const checkpoint of [true, false]) {
      const at = place();
      const target = await open(at);
      // Block 0: older than the import; block 1: newer (a write that arrived first); block 2:
      // newer, against a zero piece; block 3: never written.
      await target.write(A, 0, bytes(1, 1), stamp(5));
      await target.write(A, BLOCK, bytes(2, 1), stamp(20));
      await target.write(A, 2 * BLOCK, bytes(3, 1), stamp(21));
      const pieces: ChunkExportPiece[] = [
        { kind: "data", offsetBytes: 0, data: bytes(7, 2), seqs: Float64Array.of(10, 10) },
        { kind: "zero", offsetBytes: 2 * BLOCK, lengthBytes: 2 * BLOCK, seq: 10 },
      ];
      await target.importChunk(A, pieces, { keepNewer: true });
      const expected = new Uint8Array(4 * BLOCK);
      expected.set(bytes(7, 1), 0);
      expected.set(bytes(2, 1), BLOCK);
      expected.set(bytes(3, 1), 2 * BLOCK);
      assert.deepEqual(await target.read(A, 0, 4 * BLOCK), expected);
      const live = target.stats().liveBytes;
      await target.close({ checkpoint });
      const reopened = await open(at);
      assert.deepEqual(await reopened.read(A, 0, 4 * BLOCK), expected, `checkpoint ${checkpoint}`);
      assert.equal(reopened.stats().liveBytes, live, "the skipped block is garbage");
      // Unconditional (the default), the same import replaces them all.
      await reopened.importChunk(A, pieces);
      const replaced = new Uint8Array(4 * BLOCK);
      replaced.set(bytes(7, 2), 0);
      assert.deepEqual(await reopened.read(A, 0, 4 * BLOCK), replaced);
      await reopened.close();
    }
  });

  test("scrub verifies every block and reports each bad one", async () => {
    const at = place();
    const store = await open(at);
    await store.write(A, 0, bytes(1, 4), stamp(1));
    await store.pinSnapshot(A, 1);
    await store.write(A, 0, bytes(2, 1), stamp(2));
    assert.deepEqual(await store.scrub(), { blocksChecked: 8, badBlocks: [] });
    await store.close();
    // Flip a byte of the data block that holds block 2 of the first write (shared by both views).
    const image = readFileSync(at.file);
    const target = bytes(1, 4).subarray(2 * BLOCK, 3 * BLOCK);
    const at2 = image.indexOf(Buffer.from(target.subarray(0, 64)));
    assert.ok(at2 > 0);
    image[at2 + 10] = (image[at2 + 10] as number) ^ 0xff;
    writeFileSync(at.file, image);
    const reopened = await open(at);
    const report = await reopened.scrub();
    assert.deepEqual(
      report.badBlocks.map((bad) => [bad.offsetBytes, bad.view]),
      [
        [2 * BLOCK, "head"],
        [2 * BLOCK, 1],
      ],
    );
    await expectRejects(() => reopened.read(A, 0, 4 * BLOCK), code("HES_CORRUPTION"), "read");
    await reopened.close();
  });

  test("stats: capacity, used, live, garbage, free, per-chunk allocated", async () => {
    const store = await open(place());
    await store.write(A, 0, bytes(1, 16), stamp(1));
    await store.write(A, 0, bytes(2, 8), stamp(2));
    const stats = store.stats();
    assert.equal(stats.capacityBytes, 15 * 4 * MiB);
    assert.equal(stats.liveBytes, 16 * BLOCK);
    assert.ok(stats.usedBytes >= 24 * BLOCK + 2 * BLOCK, "data plus headers");
    assert.equal(stats.garbageBytes, stats.usedBytes - stats.liveBytes);
    assert.equal(stats.freeBytes, 14 * 4 * MiB);
    assert.ok(stats.indexMemoryBytes > 4096);
    assert.equal(store.listChunks()[0]?.allocatedBytes, 16 * BLOCK);
    // stats() counts pages without walking blocks; the full walk must agree, snapshots included.
    await store.pinSnapshot(A, 7);
    await store.write(A, 2 * MiB, bytes(3, 8), stamp(3));
    assert.equal(store.stats().indexMemoryBytes, store.indexStats().indexBytes);
    await store.close();
  });
});

describe("ExtentStore on disk", () => {
  test("everything survives a clean reopen and an unclean one (replay of the log tail)", async () => {
    for (const checkpoint of [true, false]) {
      const at = place();
      const store = await open(at, { checkpointLogBytes: MiB });
      for (let i = 0; i < 200; i++) {
        await store.write(
          { volumeId: 2, chunkIndex: i % 3 },
          (i % 50) * BLOCK,
          bytes(i, 1),
          stamp(i + 1),
        );
      }
      await store.writeZeroes({ volumeId: 2, chunkIndex: 0 }, 0, BLOCK, stamp(300));
      await store.pinSnapshot({ volumeId: 2, chunkIndex: 1 }, 9);
      await store.discard({ volumeId: 2, chunkIndex: 1 }, 0, 50 * BLOCK, stamp(301));
      const expected = await Promise.all(
        [0, 1, 2].map((c) => store.read({ volumeId: 2, chunkIndex: c }, 0, 50 * BLOCK)),
      );
      const snapshot = await store.read({ volumeId: 2, chunkIndex: 1 }, 0, 50 * BLOCK, {
        snapshotId: 9,
      });
      const stats = store.stats();
      await store.close({ checkpoint });
      const reopened = await open(at, { checkpointLogBytes: MiB });
      for (const c of [0, 1, 2]) {
        assert.deepEqual(
          await reopened.read({ volumeId: 2, chunkIndex: c }, 0, 50 * BLOCK),
          expected[c],
          `chunk ${c} (checkpoint ${checkpoint})`,
        );
      }
      assert.deepEqual(
        await reopened.read({ volumeId: 2, chunkIndex: 1 }, 0, 50 * BLOCK, { snapshotId: 9 }),
        snapshot,
      );
      assert.equal(reopened.stats().liveBytes, stats.liveBytes);
      assert.deepEqual(reopened.version({ volumeId: 2, chunkIndex: 0 }), {
        epoch: 1,
        durableSeq: 300,
      });
      await reopened.close();
    }
  });

  test("a disk of another cluster, a blank one, a newer format, or without its index is refused", async () => {
    const at = place();
    const store = await open(at);
    await store.write(A, 0, bytes(1, 1), stamp(1));
    await store.close();
    const badFormat = code("HES_BAD_FORMAT");
    const other = await expectRejects(() => open(at, { clusterId: "other" }), badFormat, "cluster");
    assert.match(String(other), /belongs to cluster "test-cluster"/);
    await expectRejects(() => open(at, { chunkSizeBytes: 8 * MiB }), badFormat, "chunk size");
    const lost = await expectRejects(
      () => open({ file: at.file, indexPath: join(root, "elsewhere") }),
      badFormat,
      "index missing",
    );
    assert.match(String(lost), /no index/);
    const blank = place();
    await expectRejects(() => open(blank, { format: false }), badFormat, "blank without format");
    // A newer format version, with valid checksums, in both superblock copies.
    const image = readFileSync(at.file);
    for (const base of [0, BLOCK]) {
      image.writeUInt32LE(2, base + 8);
      image.writeUInt32LE(crc32c(image.subarray(base, base + BLOCK - 4)), base + BLOCK - 4);
    }
    writeFileSync(at.file, image);
    const newer = await expectRejects(() => open(at), badFormat, "newer");
    assert.match(String(newer), /newer hes/);
    // Unknown data (not zeros, no magic) is not mistaken for a blank disk only if asked to format.
    writeFileSync(at.file, Buffer.alloc(64 * MiB, 0x5a));
    await expectRejects(() => open(at, { format: false }), badFormat, "garbage");
  });

  test("several disks: chunks spread over them and are found again", async () => {
    const places = [place(), place()];
    const store = await open(places);
    for (let i = 0; i < 6; i++) {
      await store.write({ volumeId: 3, chunkIndex: i }, 0, bytes(i, 256), stamp(1));
    }
    const disks = new Set(store.listChunks().map((info) => info.diskName));
    assert.equal(disks.size, 2, "both disks hold chunks");
    await store.close();
    const reopened = await open(places);
    for (let i = 0; i < 6; i++) {
      assert.deepEqual(
        await reopened.read({ volumeId: 3, chunkIndex: i }, 0, 256 * BLOCK),
        bytes(i, 256),
      );
    }
    await reopened.close();
  });
});
