/**
 * Goal: prove SimDisk is a faithful Disk (the shared diskSuite, exactly as FileDisk runs it) and
 * that each fault it models behaves as documented and replays from its seed.
 * Method: the shared suite, then one case per fault, checking contents byte by byte.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Disk, isHesError, Prng } from "@hes/base";
import { diskSuite, expectRejects } from "@hes/base/testing";
import { SimDisk } from "@hes/sim";
import { ManualClock } from "./manual-clock.js";

const BLOCK = 4096;
const SIZE = 128 * 1024 * 1024;
let seed = 1;

function pattern(value: number, length = BLOCK): Uint8Array {
  return new Prng(value).fill(new Uint8Array(length));
}

async function readBlock(disk: Disk, block: number, count = 1): Promise<Uint8Array> {
  const target = new Uint8Array(count * BLOCK);
  await disk.read(target, block * BLOCK);
  return target;
}

describe("SimDisk keeps the Disk contract", () => {
  const cases = diskSuite({
    label: "sim",
    freshReadsZero: true,
    create: async () => new SimDisk({ sizeBytes: SIZE, seed: seed++ }),
    reopen: async (closed: Disk) => (closed as SimDisk).reopen(),
    destroy: async () => {},
  });
  for (const c of cases) test(c.name, c.run);
});

describe("SimDisk faults", () => {
  test("latency: calls complete only as the clock advances, possibly out of order", async () => {
    const clock = new ManualClock();
    const disk = new SimDisk({
      sizeBytes: SIZE,
      seed: 7,
      clock,
      latencyMs: { write: [1, 10], read: [1, 10], sync: [5, 5] },
    });
    const done: number[] = [];
    const writes = Array.from({ length: 8 }, (_, i) =>
      disk.write(pattern(i), i * BLOCK).then(() => done.push(i)),
    );
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(done.length, 0, "nothing completes before time passes");
    await clock.advance(10);
    await Promise.all(writes);
    assert.equal(done.length, 8);
    assert.notDeepEqual(
      done,
      [...done].sort((a, b) => a - b),
      "seed 7 completes out of order",
    );
    const read = readBlock(disk, 3);
    await clock.advance(10);
    assert.deepEqual(await read, pattern(3));
  });

  test("crash keeps synced data and, per block, old or new unsynced content (torn writes)", async () => {
    let sawTorn = false;
    for (let s = 1; s <= 40; s++) {
      const disk = new SimDisk({ sizeBytes: SIZE, seed: s });
      const old = pattern(1, 8 * BLOCK);
      const fresh = pattern(2, 8 * BLOCK);
      await disk.write(old, 0);
      await disk.sync();
      await disk.write(fresh, 0);
      disk.crash();
      await expectRejects(
        () => disk.read(new Uint8Array(BLOCK), 0),
        (e) => isHesError(e, "HES_CLOSED"),
        "after crash",
      );
      const after = await readBlock(disk.restart(), 0, 8);
      let news = 0;
      for (let b = 0; b < 8; b++) {
        const got = after.subarray(b * BLOCK, (b + 1) * BLOCK);
        const isOld = Buffer.from(got).equals(old.subarray(b * BLOCK, (b + 1) * BLOCK));
        const isNew = Buffer.from(got).equals(fresh.subarray(b * BLOCK, (b + 1) * BLOCK));
        assert.ok(isOld || isNew, `seed ${s} block ${b}: neither old nor new`);
        if (isNew) news++;
      }
      if (news > 0 && news < 8) sawTorn = true;
    }
    assert.ok(sawTorn, "some seed tore the 8-block write");
  });

  test("crash outcomes replay from the seed", async () => {
    const outcome = async (): Promise<string> => {
      const disk = new SimDisk({ sizeBytes: SIZE, seed: 99 });
      for (let i = 0; i < 16; i++) await disk.write(pattern(i), i * BLOCK);
      disk.crash();
      const after = await readBlock(disk.restart(), 0, 16);
      return Buffer.from(after).toString("base64").slice(0, 64) + after.reduce((a, b) => a + b, 0);
    };
    assert.equal(await outcome(), await outcome());
  });

  test("a failed sync takes the disk out of service for good; synced data survives", async () => {
    const disk = new SimDisk({ sizeBytes: SIZE, seed: 3 });
    await disk.write(pattern(1), 0);
    await disk.sync();
    await disk.write(pattern(2), BLOCK);
    disk.failNext("sync");
    const failed = (e: unknown) => isHesError(e, "HES_DISK_FAILED");
    await expectRejects(() => disk.sync(), failed, "sync");
    await expectRejects(() => disk.sync(), failed, "retried sync");
    await expectRejects(() => disk.write(pattern(3), 0), failed, "write after");
    await expectRejects(() => disk.read(new Uint8Array(BLOCK), 0), failed, "read after");
    await disk.close();
    assert.deepEqual(await readBlock(disk.reopen(), 0), pattern(1));
  });

  test("a failed write is HES_IO, leaves any subset of its blocks, and the disk goes on", async () => {
    const disk = new SimDisk({ sizeBytes: SIZE, seed: 5 });
    disk.failNext("write");
    await expectRejects(
      () => disk.write(pattern(1, 16 * BLOCK), 0),
      (e) => isHesError(e, "HES_IO"),
      "write",
    );
    await disk.write(pattern(2), 0);
    await disk.sync();
    assert.deepEqual(await readBlock(disk, 0), pattern(2));
    disk.failNext("read");
    await expectRejects(
      () => disk.read(new Uint8Array(BLOCK), 0),
      (e) => isHesError(e, "HES_IO"),
      "read",
    );
    assert.deepEqual(await readBlock(disk, 0), pattern(2));
  });

  test("ENOSPC: writes past the space bound fail HES_NO_SPACE and write nothing", async () => {
    const disk = new SimDisk({ sizeBytes: SIZE, seed: 6, faults: { spaceBytes: 4 * BLOCK } });
    await disk.write(pattern(1, 4 * BLOCK), 0);
    const noSpace = (e: unknown) => isHesError(e, "HES_NO_SPACE");
    await expectRejects(() => disk.write(pattern(2), 10 * BLOCK), noSpace, "fifth block");
    assert.deepEqual(await readBlock(disk, 10), new Uint8Array(BLOCK));
    await disk.write(pattern(3), 0); // overwriting allocated blocks needs no space
    disk.failNext("write", "ENOSPC");
    await expectRejects(() => disk.write(pattern(4), 0), noSpace, "injected");
    assert.deepEqual(await readBlock(disk, 0), pattern(3));
  });

  test("bit flips: persistent ones survive a crash, transient ones leave the medium alone", async () => {
    const disk = new SimDisk({ sizeBytes: SIZE, seed: 8 });
    await disk.write(pattern(1), 0);
    await disk.sync();
    disk.flipBit(100, 3);
    const expected = pattern(1);
    expected[100] = (expected[100] as number) ^ 8;
    assert.deepEqual(await readBlock(disk, 0), expected);
    disk.crash();
    const again = disk.restart();
    assert.deepEqual(await readBlock(again, 0), expected);
    again.faults = { readBitFlipRate: 1 };
    const flipped = await readBlock(again, 0);
    let differing = 0;
    for (let i = 0; i < BLOCK; i++) if (flipped[i] !== expected[i]) differing++;
    assert.equal(differing, 1, "exactly one byte differs");
    again.faults = {};
    assert.deepEqual(await readBlock(again, 0), expected);
  });
});
