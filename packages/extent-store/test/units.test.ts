/**
 * Goal: pin down the pure parts of the store: the format codecs (round trips, refusals, the
 * disk-keyed header checksum), the segment table's freeing rule, the group-commit queue's bounds,
 * compaction's policy, and the index's liveness accounting under snapshots.
 * Method: direct calls with exact expectations; a fast-check model for the index (live counts
 * kept incrementally must equal a recount after any sequence of writes, pins, unpins, deletes).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isHesError } from "@hes/base";
import fc from "fast-check";
import { DiskIndex } from "../src/chunk-index.js";
import { chooseVictim, compactionMode } from "../src/compaction.js";
import {
  decodeBatchHeader,
  decodeSuperblock,
  encodeBatchHeader,
  encodeSuperblock,
  headerBlocksFor,
  headerCrcSeed,
  recordBytes,
  type StoreRecord,
  type Superblock,
} from "../src/format.js";
import { CommitQueue, type PendingRecord } from "../src/group-commit.js";
import { COMMIT_QUEUE_ENTRIES_MAX, COMMIT_WAITERS_MAX } from "../src/limits.js";
import { SEGMENT_ACTIVE, SEGMENT_FREE, SEGMENT_SEALED, SegmentTable } from "../src/segments.js";

const DISK_ID = "00112233445566778899aabbccddeeff";
const superblock: Superblock = {
  formatVersion: 1,
  diskId: DISK_ID,
  clusterId: "cluster-α",
  segmentSizeBytes: 1 << 20,
  segmentCount: 10,
  segmentsStartBytes: 1 << 20,
  chunkSizeBytes: 1 << 20,
  createdWallMs: 1_700_000_000_123,
};

describe("format", () => {
  test("superblock round trip; damage and newer versions are reported", () => {
    const block = encodeSuperblock(superblock);
    assert.deepEqual(decodeSuperblock(block), { ok: true, superblock });
    const damaged = block.slice();
    damaged[50] = (damaged[50] as number) ^ 1;
    assert.deepEqual(decodeSuperblock(damaged), { ok: false, reason: "bad-checksum" });
    assert.deepEqual(decodeSuperblock(new Uint8Array(4096)), { ok: false, reason: "no-magic" });
    const newer = encodeSuperblock({ ...superblock, formatVersion: 2 });
    assert.deepEqual(decodeSuperblock(newer), { ok: false, reason: "newer" });
  });

  test("batch header round trip for every record kind; keyed by the disk id", () => {
    const records: StoreRecord[] = [
      {
        kind: "write",
        volumeId: 2 ** 40,
        chunkIndex: 7,
        firstBlock: 3,
        blockCount: 2,
        dataIndex: 0,
        epoch: 9,
        seq: 2 ** 50,
        crcs: Uint32Array.of(1, 0xffffffff),
      },
      {
        kind: "zero",
        volumeId: 1,
        chunkIndex: 2,
        firstBlock: 0,
        blockCount: 5,
        epoch: 1,
        seq: 3,
        keepVersion: true,
        keepNewer: true,
      },
      {
        kind: "discard",
        volumeId: 1,
        chunkIndex: 2,
        firstBlock: 5,
        blockCount: 1,
        epoch: 1,
        seq: 4,
        keepVersion: false,
      },
      {
        kind: "place",
        volumeId: 1,
        chunkIndex: 2,
        blockCount: 2,
        dataIndex: 2,
        blocks: Uint32Array.of(10, 200),
        crcs: Uint32Array.of(5, 6),
        sources: Uint32Array.of(300, 0),
        seqs: Float64Array.of(11, 12),
      },
      {
        kind: "place",
        volumeId: 1,
        chunkIndex: 2,
        blockCount: 1,
        dataIndex: 1,
        blocks: Uint32Array.of(11),
        crcs: Uint32Array.of(7),
        sources: Uint32Array.of(0),
        seqs: Float64Array.of(13),
        keepNewer: true,
      },
      { kind: "seal", volumeId: 1, chunkIndex: 2, value: 8, durableSeq: 0 },
      { kind: "delete", volumeId: 1, chunkIndex: 3, value: 0, durableSeq: 0 },
      { kind: "pin", volumeId: 1, chunkIndex: 2, value: 77, durableSeq: 0 },
      { kind: "unpin", volumeId: 1, chunkIndex: 2, value: 77, durableSeq: 0 },
      { kind: "version", volumeId: 1, chunkIndex: 2, value: 8, durableSeq: 99 },
      { kind: "end", nextSegment: 4, nextSeq: 1234 },
    ];
    const bytes = records.reduce((sum, record) => sum + recordBytes(record), 0);
    const headerBlocks = headerBlocksFor(bytes);
    const placement = {
      segmentSeq: 17,
      segmentIndex: 3,
      offsetBlocks: 12,
      headerBlocks,
      dataBlocks: 4,
      lsn: 555,
      durableLsn: 554,
    };
    const header = new Uint8Array(headerBlocks * 4096).fill(0xee);
    encodeBatchHeader(header, placement, records, headerCrcSeed(DISK_ID));
    const decoded = decodeBatchHeader(header, headerCrcSeed(DISK_ID));
    assert.deepEqual(decoded, { ...placement, records });
    const otherDisk = decodeBatchHeader(header, headerCrcSeed("ff112233445566778899aabbccddeeff"));
    assert.deepEqual(otherDisk, { invalid: "header checksum mismatch" });
    header[100] = (header[100] as number) ^ 4;
    assert.deepEqual(decodeBatchHeader(header, headerCrcSeed(DISK_ID)), {
      invalid: "header checksum mismatch",
    });
    assert.deepEqual(decodeBatchHeader(new Uint8Array(4096), 0), { invalid: "no batch magic" });
  });
});

describe("segment table", () => {
  test("a sealed segment is freed only when empty, unread, and before the checkpoint", () => {
    const table = new SegmentTable({
      segmentCount: 4,
      segmentSizeBytes: 1 << 20,
      segmentsStartBytes: 1 << 20,
    });
    table.states.set([SEGMENT_SEALED, SEGMENT_SEALED, SEGMENT_SEALED, SEGMENT_ACTIVE]);
    table.seqs.set([1, 2, 5, 6]);
    table.fillBytes.set([1 << 19, 1 << 19, 1 << 19, 4096]);
    const firstBlockOf = (segment: number) => (1 << 20) / 4096 + segment * 256;
    table.addLive(firstBlockOf(1), 1);
    table.addReader(0);
    assert.equal(table.reclaim(5), 0, "0 is being read, 1 is live, 2 is past the checkpoint");
    assert.equal(table.removeReader(0), 0);
    assert.equal(table.reclaim(5), 1);
    assert.equal(table.states[0], SEGMENT_FREE);
    assert.equal(table.reclaim(6), 1, "segment 2 once the checkpoint passed it");
    assert.deepEqual(
      [...table.states],
      [SEGMENT_FREE, SEGMENT_SEALED, SEGMENT_FREE, SEGMENT_ACTIVE],
    );
    assert.equal(table.liveBytes(), 4096);
  });
});

function pending(dataBlocks: number, internal = false): PendingRecord {
  return {
    record: { kind: "seal", volumeId: 0, chunkIndex: 0, value: 0, durableSeq: 0 },
    data: [],
    dataBlocks,
    headerBytes: 64,
    internal,
    resolve: () => {},
    reject: () => {},
  };
}

describe("group commit queue", () => {
  const bounds = {
    roomBytes: 1 << 20,
    dataBytesMax: 64 * 4096,
    headerBytesMax: 65536,
    entriesMax: 3,
    admit: "all" as const,
  };

  test("a batch respects entries, data, header and room bounds; internal records go first", () => {
    const queue = new CommitQueue();
    for (const p of [pending(1), pending(2), pending(0, true), pending(1), pending(1)])
      queue.push(p);
    const first = queue.take(bounds);
    assert.deepEqual(
      first.map((p) => [p.internal, p.dataBlocks]),
      [
        [true, 0],
        [false, 1],
        [false, 2],
      ],
    );
    assert.deepEqual(queue.take({ ...bounds, roomBytes: 4096 + 4096 }).length, 1, "room: 1 block");
    assert.deepEqual(queue.take({ ...bounds, admit: "no-data" }).length, 0, "data must wait");
    queue.push(pending(0));
    assert.deepEqual(queue.take({ ...bounds, admit: "no-data" }).length, 1, "data-less may go");
    queue.push(pending(0, true));
    assert.equal(queue.take({ ...bounds, admit: "internal" })[0]?.internal, true);
    assert.equal(queue.length, 1);
  });

  test("admission is bounded: writers wait in order, then HES_BUSY", async () => {
    const queue = new CommitQueue();
    for (let i = 0; i < COMMIT_QUEUE_ENTRIES_MAX; i++) await queue.admit(0);
    const order: number[] = [];
    const waiting = Array.from({ length: COMMIT_WAITERS_MAX }, (_, i) =>
      queue.admit(0).then(() => order.push(i)),
    );
    await assert.rejects(queue.admit(0), (error: unknown) => isHesError(error, "HES_BUSY"));
    queue.settle([pending(0), pending(0)]);
    await Promise.all(waiting.slice(0, 2));
    assert.deepEqual(order, [0, 1]);
    queue.failAll(new Error("closing"));
    const results = await Promise.allSettled(waiting.slice(2));
    assert.ok(results.every((result) => result.status === "rejected"));
  });
});

describe("compaction policy", () => {
  test("modes follow free space and used/live; victims are the emptiest sealed segments", () => {
    const table = new SegmentTable({
      segmentCount: 20,
      segmentSizeBytes: 1 << 20,
      segmentsStartBytes: 1 << 20,
    });
    const blocksOf = (segment: number) => (1 << 20) / 4096 + segment * 256;
    const seal = (segment: number, liveBlocks: number) => {
      table.states[segment] = SEGMENT_SEALED;
      table.fillBytes[segment] = 1 << 20;
      for (let i = 0; i < liveBlocks; i++) table.addLive(blocksOf(segment) + i, 1);
    };
    seal(0, 100);
    seal(1, 50);
    seal(2, 120);
    assert.equal(compactionMode(table, false, false), "catch-up", "used 3 MiB vs live 1.05 MiB");
    assert.equal(chooseVictim(table, 0.9, new Set()), 1);
    assert.equal(chooseVictim(table, 0.9, new Set([1])), 0);
    assert.equal(chooseVictim(table, 0.3, new Set([1])), undefined, "others are too full");
    assert.equal(compactionMode(table, true, false), "urgent", "writers are blocked");
    for (let i = 3; i < 18; i++) seal(i, 256);
    assert.equal(compactionMode(table, false, false), "urgent", "only the reserve is free");
  });
});

describe("index liveness under snapshots (model-based)", () => {
  test("incremental live counts equal a recount after any sequence of operations", () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant("write" as const),
        block: fc.nat(511),
        count: fc.integer({ min: 1, max: 40 }),
      }),
      fc.record({
        kind: fc.constant("discard" as const),
        block: fc.nat(511),
        count: fc.integer({ min: 1, max: 40 }),
      }),
      fc.record({ kind: fc.constant("pin" as const), id: fc.nat(3) }),
      fc.record({ kind: fc.constant("unpin" as const), id: fc.nat(3) }),
      fc.record({ kind: fc.constant("relocate" as const), block: fc.nat(511) }),
      fc.record({ kind: fc.constant("delete" as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const live = new Map<number, number>();
        const index = new DiskIndex(512, (address, delta) => {
          const next = (live.get(address) ?? 0) + delta;
          assert.ok(next === 0 || next === 1, `address ${address} counted ${next} times`);
          if (next === 0) live.delete(address);
          else live.set(address, next);
        });
        let nextAddress = 100;
        for (const o of ops) {
          const chunk = index.ensure(1, 1);
          if (o.kind === "write") {
            const count = Math.min(o.count, 512 - o.block);
            index.setHead(chunk, o.block, count, nextAddress, new Uint32Array(count), 1);
            nextAddress += count;
          } else if (o.kind === "discard") {
            index.setHead(chunk, o.block, Math.min(o.count, 512 - o.block), 0, undefined, 2);
          } else if (o.kind === "pin" && !chunk.pins.has(o.id)) {
            index.pin(chunk, o.id);
          } else if (o.kind === "unpin" && chunk.pins.has(o.id)) {
            index.unpin(chunk, o.id);
          } else if (o.kind === "relocate") {
            const source = chunk.head[Math.floor(o.block / 256)]?.addresses[o.block % 256] ?? 0;
            if (source > 1) index.relocate(chunk, o.block, source, nextAddress++, 0);
          } else if (o.kind === "delete") {
            index.deleteChunk(chunk);
          }
        }
        const recount = new Set<number>();
        index.forEachLiveAddress((address) => {
          assert.ok(!recount.has(address), "recount visits each address once");
          recount.add(address);
        });
        assert.deepEqual(
          [...live.keys()].sort((a, b) => a - b),
          [...recount].sort((a, b) => a - b),
        );
      }),
      { numRuns: 300 },
    );
  });
});
