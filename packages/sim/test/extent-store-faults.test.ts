/**
 * Goal: prove the extent store's durability and integrity claims against the faults SimDisk
 * injects: a torn tail ends replay cleanly; a damaged record in the middle of the log is
 * reported, never skipped; bit flips in data or headers surface as HES_CORRUPTION, never as
 * data; EIO on write or fdatasync is never acknowledged, and a failed fdatasync takes the disk
 * out of service without a retry; ENOSPC is a clear error and loses nothing acknowledged.
 * Method: real ExtentStore code over SimDisk (seeded), a manual clock, byte-exact checks; a
 * seeded random crash model over many seeds (a failing seed is printed and replays exactly).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { isHesError, Prng, RecordingLogger } from "@hes/base";
import { expectRejects } from "@hes/base/testing";
import { type ChunkId, ExtentStore } from "@hes/extent-store";
import { SimDisk } from "@hes/sim";
import { ManualClock } from "./manual-clock.js";

const BLOCK = 4096;
const MiB = 1024 * 1024;
const root = mkdtempSync(join(tmpdir(), "hes-store-faults-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const chunk: ChunkId = { volumeId: 7, chunkIndex: 3 };

interface Rig {
  disk: SimDisk;
  indexPath: string;
  clock: ManualClock;
  logger: RecordingLogger;
}

function rig(seed: number, options: Partial<ConstructorParameters<typeof SimDisk>[0]> = {}): Rig {
  const clock = new ManualClock();
  return {
    disk: new SimDisk({ sizeBytes: 32 * MiB, seed, ...options }),
    indexPath: join(root, `index-${dirs++}`),
    clock,
    logger: new RecordingLogger(),
  };
}

function open(r: Rig, format = true): Promise<ExtentStore> {
  return ExtentStore.open({
    disks: [{ disk: r.disk, indexPath: r.indexPath }],
    clusterId: "sim-cluster",
    format,
    chunkSizeBytes: MiB,
    segmentSizeBytes: MiB,
    checkpointLogBytes: 64 * MiB,
    clock: r.clock,
    logger: r.logger,
    newDiskId: () => "0123456789abcdef0123456789abcdef",
  });
}

/** Block content that names itself: (seq, block) → 4 KiB. */
function content(seq: number, block: number): Uint8Array {
  return new Prng(seq * 100_000 + block).fill(new Uint8Array(BLOCK));
}

function contents(seq: number, firstBlock: number, count: number): Uint8Array {
  const data = new Uint8Array(count * BLOCK);
  for (let i = 0; i < count; i++) data.set(content(seq, firstBlock + i), i * BLOCK);
  return data;
}

/** Disk byte positions of batch headers on the medium ("HESB" at a block start), in order. */
function batchPositions(disk: SimDisk): number[] {
  const positions: number[] = [];
  for (const [block, data] of disk.medium.current) {
    if (data[0] === 0x48 && data[1] === 0x45 && data[2] === 0x53 && data[3] === 0x42) {
      positions.push(block * BLOCK);
    }
  }
  return positions.sort((a, b) => a - b);
}

/** Advances the manual clock until `promise` settles (bounded). */
async function drive<T>(clock: ManualClock, promise: Promise<T>): Promise<T> {
  let settled = false;
  promise.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  for (let i = 0; i < 100_000 && !settled; i++) {
    await new Promise((resolve) => setImmediate(resolve)); // let real IO (the index db) finish
    await clock.advance(1);
  }
  return promise;
}

const isCode =
  (...codes: Parameters<typeof isHesError>[1][]) =>
  (error: unknown): boolean =>
    isHesError(error, ...codes);

describe("extent store over SimDisk: faults", () => {
  test("a torn tail ends replay cleanly; the unacknowledged write is all there or absent", async () => {
    const outcomes = new Set<string>();
    for (let seed = 1; seed <= 40; seed++) {
      const clock = new ManualClock();
      const r = rig(seed, { clock, latencyMs: { write: [1, 1], read: [0, 0], sync: [5, 5] } });
      r.clock = clock;
      const store = await drive(clock, open(r));
      for (let seq = 1; seq <= 5; seq++) {
        await drive(
          clock,
          store.write(chunk, seq * BLOCK, contents(seq, seq, 1), { epoch: 1, seq }),
        );
      }
      // Write 2 blocks, let the writev land, and cut power during its fdatasync: the crash keeps
      // any subset of the batch's 3 blocks (header + data).
      const pending = store.write(chunk, 32 * BLOCK, contents(6, 32, 2), { epoch: 1, seq: 6 });
      pending.catch(() => {});
      const writes = r.disk.counters.writes;
      while (r.disk.counters.writes === writes) {
        await new Promise((resolve) => setImmediate(resolve));
        await clock.advance(1);
      }
      if (process.env.DBG)
        console.log(
          "unsynced",
          [...r.disk.medium.unsynced.entries()].map(([b, v]) => [b, v.length]),
        );
      r.disk.crash();
      await store.close({ checkpoint: false }).catch(() => {});
      r.disk = r.disk.restart();
      const reopened = await drive(clock, open(r, false));
      for (let seq = 1; seq <= 5; seq++) {
        const got = await drive(clock, reopened.read(chunk, seq * BLOCK, BLOCK));
        assert.deepEqual(got, content(seq, seq), `seed ${seed}: acknowledged seq ${seq}`);
      }
      const tail = await drive(clock, reopened.read(chunk, 32 * BLOCK, 2 * BLOCK));
      const whole = Buffer.from(tail).equals(contents(6, 32, 2));
      const absent = tail.every((byte) => byte === 0);
      assert.ok(whole || absent, `seed ${seed}: the torn write is partly there`);
      outcomes.add(whole ? "whole" : "absent");
      const report = reopened.replayReports()[0];
      assert.ok(report !== undefined && report.corruptBlocks?.length === 0);
      await drive(clock, reopened.close());
    }
    assert.deepEqual([...outcomes].sort(), ["absent", "whole"], "both outcomes happen");
  });

  test("a damaged header in the middle of the log fails open with HES_CORRUPTION", async () => {
    const r = rig(11);
    const store = await open(r);
    for (let seq = 1; seq <= 6; seq++) {
      await store.write(chunk, seq * BLOCK, contents(seq, seq, 1), { epoch: 1, seq });
    }
    await store.close({ checkpoint: false });
    const batches = batchPositions(r.disk);
    assert.ok(batches.length >= 6, `found ${batches.length} batches`);
    r.disk = r.disk.reopen();
    r.disk.flipBit((batches[2] as number) + 60, 1); // inside the third batch's header
    const error = await expectRejects(() => open(r, false), isCode("HES_CORRUPTION"), "open");
    assert.match(String(error), /middle of the log/);
  });

  test("damaged data in the middle of the log is applied, reported, and fails reads", async () => {
    const r = rig(12);
    const store = await open(r);
    for (let seq = 1; seq <= 6; seq++) {
      await store.write(chunk, seq * BLOCK, contents(seq, seq, 1), { epoch: 1, seq });
    }
    await store.close({ checkpoint: false });
    const batches = batchPositions(r.disk);
    r.disk = r.disk.reopen();
    r.disk.flipBit((batches[2] as number) + BLOCK + 17, 4); // the data block after that header
    const reopened = await open(r, false);
    const report = reopened.replayReports()[0];
    assert.equal(report?.corruptBlocks?.length, 1, "replay lists the damaged block");
    assert.ok(
      r.logger.records.some((record) => record.level === "error"),
      "and logs it",
    );
    const damagedSeq = 3; // third write, block 3
    await expectRejects(
      () => reopened.read(chunk, damagedSeq * BLOCK, BLOCK),
      isCode("HES_CORRUPTION"),
      "read of the damaged block",
    );
    for (const seq of [1, 2, 4, 5, 6]) {
      assert.deepEqual(await reopened.read(chunk, seq * BLOCK, BLOCK), content(seq, seq));
    }
    await reopened.close();
  });

  test("bit flips in stored data, and on the way back, are HES_CORRUPTION, never data", async () => {
    const r = rig(13);
    const store = await open(r);
    await store.write(chunk, 0, contents(1, 0, 4), { epoch: 1, seq: 1 });
    await store.close(); // checkpointed: the data is found through the index, not replay
    const data = batchPositions(r.disk)[0] as number;
    r.disk = r.disk.reopen();
    r.disk.flipBit(data + 2 * BLOCK + 1000, 6); // block 1 of the write
    const reopened = await open(r, false);
    await expectRejects(() => reopened.read(chunk, 0, 4 * BLOCK), isCode("HES_CORRUPTION"), "read");
    assert.deepEqual(await reopened.read(chunk, 0, BLOCK), content(1, 0));
    const scrub = await reopened.scrub();
    assert.deepEqual(
      scrub.badBlocks.map((bad) => bad.offsetBytes),
      [BLOCK],
      "scrub reports exactly the flipped block",
    );
    r.disk.faults = { readBitFlipRate: 1 };
    await expectRejects(
      () => reopened.read(chunk, 0, BLOCK),
      isCode("HES_CORRUPTION"),
      "transient",
    );
    r.disk.faults = {};
    await reopened.close();
  });

  test("EIO on a write is not acknowledged; the log goes on at the same place", async () => {
    const r = rig(14);
    const store = await open(r);
    await store.write(chunk, 0, contents(1, 0, 1), { epoch: 1, seq: 1 });
    r.disk.failNext("write");
    await expectRejects(
      () => store.write(chunk, 8 * BLOCK, contents(2, 8, 8), { epoch: 1, seq: 2 }),
      isCode("HES_IO"),
      "failed write",
    );
    assert.deepEqual(await store.read(chunk, 8 * BLOCK, 8 * BLOCK), new Uint8Array(8 * BLOCK));
    await store.write(chunk, 2 * BLOCK, contents(3, 2, 1), { epoch: 1, seq: 3 });
    assert.equal(store.version(chunk)?.durableSeq, 3);
    await store.close({ checkpoint: false });
    r.disk = r.disk.reopen();
    const reopened = await open(r, false);
    assert.deepEqual(await reopened.read(chunk, 0, BLOCK), content(1, 0));
    assert.deepEqual(await reopened.read(chunk, 2 * BLOCK, BLOCK), content(3, 2));
    assert.deepEqual(await reopened.read(chunk, 8 * BLOCK, 8 * BLOCK), new Uint8Array(8 * BLOCK));
    await reopened.close();
  });

  test("EIO on fdatasync: not acknowledged, the disk leaves service, nothing is retried", async () => {
    const r = rig(15);
    const store = await open(r);
    await store.write(chunk, 0, contents(1, 0, 1), { epoch: 1, seq: 1 });
    r.disk.failNext("sync");
    const failed = isCode("HES_DISK_FAILED");
    await expectRejects(
      () => store.write(chunk, 8 * BLOCK, contents(2, 8, 4), { epoch: 1, seq: 2 }),
      failed,
      "write whose sync failed",
    );
    const syncs = r.disk.counters.syncs;
    await expectRejects(
      () => store.write(chunk, 0, contents(3, 0, 1), { epoch: 1, seq: 3 }),
      failed,
      "later write",
    );
    await expectRejects(() => store.read(chunk, 0, BLOCK), failed, "later read");
    assert.equal(r.disk.counters.syncs, syncs, "no fdatasync was retried");
    assert.equal(store.stats().disks[0]?.failed, true);
    await store.close();
    r.disk = r.disk.restart();
    const reopened = await open(r, false);
    assert.deepEqual(await reopened.read(chunk, 0, BLOCK), content(1, 0));
    const failedWrite = await reopened.read(chunk, 8 * BLOCK, 4 * BLOCK);
    assert.ok(
      failedWrite.every((b) => b === 0) || Buffer.from(failedWrite).equals(contents(2, 8, 4)),
      "the unacknowledged write is whole or absent",
    );
    await reopened.close();
  });

  test("ENOSPC from the disk: clear error, nothing acknowledged lost, the log goes on", async () => {
    const r = rig(16);
    const store = await open(r);
    for (let seq = 1; seq <= 4; seq++) {
      await store.write(chunk, seq * BLOCK, contents(seq, seq, 1), { epoch: 1, seq });
    }
    r.disk.faults = { spaceBytes: r.disk.medium.allocated.size * BLOCK + 2 * BLOCK };
    const error = await expectRejects(
      () => store.write(chunk, 16 * BLOCK, contents(5, 16, 4), { epoch: 1, seq: 5 }),
      isCode("HES_NO_SPACE"),
      "write past the file system's space",
    );
    assert.match(String(error), /no space/);
    r.disk.faults = {};
    await store.write(chunk, 20 * BLOCK, contents(6, 20, 1), { epoch: 1, seq: 6 });
    await store.close({ checkpoint: false });
    r.disk = r.disk.reopen();
    const reopened = await open(r, false);
    for (let seq = 1; seq <= 4; seq++) {
      assert.deepEqual(await reopened.read(chunk, seq * BLOCK, BLOCK), content(seq, seq));
    }
    assert.deepEqual(await reopened.read(chunk, 20 * BLOCK, BLOCK), content(6, 20));
    assert.deepEqual(await reopened.read(chunk, 16 * BLOCK, 4 * BLOCK), new Uint8Array(4 * BLOCK));
    await reopened.close();
  });

  test("a full store: HES_NO_SPACE naming the cause; acknowledged data intact; delete frees", async () => {
    const r = rig(17, { sizeBytes: 8 * MiB });
    const store = await open(r);
    const written: ChunkId[] = [];
    let error: unknown;
    for (let i = 0; i < 40 && error === undefined; i++) {
      const target = { volumeId: 1, chunkIndex: i };
      try {
        for (let piece = 0; piece < 4; piece++) {
          const offset = piece * 64 * BLOCK;
          await store.write(target, offset, contents(i + 1, piece * 64, 64), {
            epoch: 1,
            seq: i + 1,
          });
        }
        written.push(target);
      } catch (caught) {
        error = caught;
      }
    }
    assert.ok(isHesError(error, "HES_NO_SPACE"), `expected HES_NO_SPACE, got ${String(error)}`);
    assert.match(String(error), /full/);
    for (const [i, target] of written.entries()) {
      const got = await store.read(target, 64 * BLOCK, 64 * BLOCK);
      assert.deepEqual(got, contents(i + 1, 64, 64), `chunk ${i} intact`);
    }
    for (const target of written) await store.deleteChunk(target);
    await store.write({ volumeId: 2, chunkIndex: 0 }, 0, contents(99, 0, 64), { epoch: 1, seq: 1 });
    await store.close();
  });
});

/** Seeds of the random crash model: 40 (HES_SOAK=1: 1000; HES_SIM_SEEDS=N overrides). */
const CRASH_SEEDS = Number(process.env.HES_SIM_SEEDS ?? (process.env.HES_SOAK === "1" ? 1000 : 40));
const FIRST_SEED = Number(process.env.HES_SIM_FIRST_SEED ?? 1);

describe("extent store over SimDisk: random crashes", () => {
  test(`every acknowledged write survives; each write is whole or absent (${CRASH_SEEDS} seeds)`, async () => {
    let tornCrashes = 0;
    let ackedBlocks = 0;
    for (let seed = FIRST_SEED; seed < FIRST_SEED + CRASH_SEEDS; seed++) {
      try {
        const round = await crashRound(seed);
        ackedBlocks += round.ackedBlocks;
        if (round.unsyncedAtCrash > 0) tornCrashes++;
      } catch (error) {
        throw new Error(
          `seed ${seed} failed (replay: HES_SIM_FIRST_SEED=${seed} HES_SIM_SEEDS=1): ${String(error)}`,
          {
            cause: error,
          },
        );
      }
    }
    assert.ok(ackedBlocks > CRASH_SEEDS * 20, `only ${ackedBlocks} blocks acknowledged`);
    assert.ok(tornCrashes >= CRASH_SEEDS / 4, `only ${tornCrashes} crashes hit unsynced writes`);
  });
});

/**
 * One seeded round: random multi-block writes, zeroes and discards on two chunks, several in
 * flight, with latencies; power is cut at a random moment; after restart every block must hold
 * the content of its last acknowledged mutation or of a later unacknowledged one, and every
 * unacknowledged write must be all there or all absent.
 */
async function crashRound(seed: number): Promise<{ ackedBlocks: number; unsyncedAtCrash: number }> {
  const prng = new Prng(seed);
  const clock = new ManualClock();
  const r = rig(seed, { clock, latencyMs: { write: [0, 2], read: [0, 1], sync: [1, 4] } });
  r.clock = clock;
  const store = await drive(clock, open(r));
  const chunks: ChunkId[] = [
    { volumeId: 1, chunkIndex: 0 },
    { volumeId: 1, chunkIndex: 1 },
  ];
  const blocks = 64;
  /** Per chunk and block: acknowledged seq (0 = zeros), and seqs issued but not acknowledged. */
  const acked = chunks.map(() => new Array<number>(blocks).fill(0));
  const unacked = chunks.map(() => Array.from({ length: blocks }, () => new Set<number>()));
  const busy = chunks.map(() => new Array<boolean>(blocks).fill(false));
  const kinds = new Map<number, "write" | "zero">();
  let seq = 0;
  let crashed = false;
  const issue = (): Promise<void> => {
    const c = prng.int(chunks.length);
    const count = prng.between(1, 8);
    const first = prng.int(blocks - count);
    for (let b = first; b < first + count; b++) if (busy[c]?.[b]) return Promise.resolve();
    const s = ++seq;
    const kind = prng.chance(0.8) ? "write" : "zero";
    kinds.set(s, kind);
    for (let b = first; b < first + count; b++) {
      (busy[c] as boolean[])[b] = true;
      unacked[c]?.[b]?.add(s);
    }
    const target = chunks[c] as ChunkId;
    const stamp = { epoch: 1, seq: s };
    const op =
      kind === "write"
        ? store.write(target, first * BLOCK, contents(s, first, count), stamp)
        : store.discard(target, first * BLOCK, count * BLOCK, stamp);
    return op.then(
      () => {
        if (crashed) return;
        for (let b = first; b < first + count; b++) {
          (acked[c] as number[])[b] = kind === "write" ? s : 0;
          unacked[c]?.[b]?.delete(s);
          (busy[c] as boolean[])[b] = false;
        }
      },
      () => {},
    );
  };
  const crashAtMs = clock.nowMs() + prng.between(5, 400);
  const inflight = new Set<Promise<void>>();
  while (clock.nowMs() < crashAtMs) {
    while (inflight.size < 6) {
      const op = issue().finally(() => inflight.delete(op));
      inflight.add(op);
    }
    await new Promise((resolve) => setImmediate(resolve));
    await clock.advance(1);
  }
  crashed = true;
  const unsyncedAtCrash = r.disk.unsyncedBlocks();
  r.disk.crash();
  await store.close({ checkpoint: false }).catch(() => {});
  r.disk = r.disk.restart();
  const reopened = await drive(clock, open(r, false));
  for (const [c, target] of chunks.entries()) {
    const all = await drive(clock, reopened.read(target, 0, blocks * BLOCK));
    for (let b = 0; b < blocks; b++) {
      const got = all.subarray(b * BLOCK, (b + 1) * BLOCK);
      const allowed = [acked[c]?.[b] as number, ...(unacked[c]?.[b] ?? [])];
      const matches = allowed.some((s) =>
        s === 0 || kinds.get(s) === "zero"
          ? got.every((byte) => byte === 0)
          : Buffer.from(got).equals(content(s, b)),
      );
      assert.ok(matches, `chunk ${c} block ${b}: not one of seqs ${allowed.join(",")}`);
    }
  }
  await drive(clock, reopened.close());
  const ackedCount = acked.flat().filter((s) => s > 0).length;
  return { ackedBlocks: ackedCount, unsyncedAtCrash };
}
