/**
 * Goal: the building blocks every package relies on behave as documented: stable error codes
 * and duck-typed matching, a PRNG that replays exactly and is unbiased, a buffer pool that is
 * aligned, bounded and fair, and argument checks that name what was wrong.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  AlignedBufferPool,
  AssertionError,
  checkInteger,
  HES_ERROR_CODES,
  HesError,
  assert as hesAssert,
  isAlignedBuffer,
  isHesError,
  isNodeId,
  Prng,
  RecordingLogger,
  systemClock,
  toSafeNumber,
} from "@hes/base";

describe("errors", () => {
  test("codes are unique and prefixed", () => {
    assert.equal(new Set(HES_ERROR_CODES).size, HES_ERROR_CODES.length);
    for (const code of HES_ERROR_CODES) assert.match(code, /^HES_[A-Z_]+$/);
  });

  test("message carries the code; text does not; details and cause are kept", () => {
    const cause = new Error("EIO");
    const error = new HesError("HES_FENCED", "volume vm-1: epoch 4 superseded by 5", {
      cause,
      details: { current: 5 },
    });
    assert.equal(error.message, "[HES_FENCED] volume vm-1: epoch 4 superseded by 5");
    assert.equal(error.text, "volume vm-1: epoch 4 superseded by 5");
    assert.equal(error.details.current, 5);
    assert.equal(error.cause, cause);
  });

  test("isHesError matches by name and code, also for plain objects from another copy", () => {
    const error = new HesError("HES_NOT_FOUND", "x");
    assert.ok(isHesError(error));
    assert.ok(isHesError(error, "HES_NOT_FOUND", "HES_IO"));
    assert.ok(!isHesError(error, "HES_IO"));
    assert.ok(isHesError({ name: "HesError", code: "HES_IO", message: "m" }, "HES_IO"));
    assert.ok(!isHesError({ name: "HesError", code: "NOT_A_CODE" }));
    assert.ok(!isHesError(new Error("x")));
    assert.ok(!isHesError(null));
  });

  test("assert throws AssertionError with the message", () => {
    assert.throws(
      () => hesAssert(false, "commit index went backwards"),
      (e: unknown) => e instanceof AssertionError && e.message === "commit index went backwards",
    );
    hesAssert(true, "fine");
  });
});

describe("Prng", () => {
  test("the same seed replays the same sequence; different seeds differ", () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const c = new Prng(43);
    const seqA = Array.from({ length: 100 }, () => a.nextU32());
    assert.deepEqual(
      seqA,
      Array.from({ length: 100 }, () => b.nextU32()),
    );
    assert.notDeepEqual(
      seqA,
      Array.from({ length: 100 }, () => c.nextU32()),
    );
  });

  test("seeds above 2^32 are distinct from their low bits", () => {
    assert.notEqual(new Prng(2 ** 32 + 5).nextU32(), new Prng(5).nextU32());
  });

  test("int is within bounds and roughly uniform", () => {
    const prng = new Prng(7);
    const counts = new Array(10).fill(0);
    for (let i = 0; i < 100_000; i++) counts[prng.int(10)]++;
    for (const count of counts) assert.ok(count > 9_000 && count < 11_000, `bucket ${count}`);
  });

  test("float is in [0, 1), between and pick stay in range, shuffle permutes", () => {
    const prng = new Prng(1);
    for (let i = 0; i < 10_000; i++) {
      const f = prng.float();
      assert.ok(f >= 0 && f < 1);
      const v = prng.between(-3, 3);
      assert.ok(v >= -3 && v <= 3);
    }
    const items = Array.from({ length: 50 }, (_, i) => i);
    const shuffled = prng.shuffle([...items]);
    assert.deepEqual(
      [...shuffled].sort((x, y) => x - y),
      items,
    );
    assert.notDeepEqual(shuffled, items);
  });

  test("fork gives an independent, reproducible stream", () => {
    const a = new Prng(9).fork();
    const b = new Prng(9).fork();
    assert.equal(a.nextU32(), b.nextU32());
  });

  test("invalid seeds are refused", () => {
    assert.throws(() => new Prng(-1), AssertionError);
    assert.throws(() => new Prng(1.5), AssertionError);
  });
});

describe("AlignedBufferPool", () => {
  test("buffers are aligned, rounded to 4 KiB, and recognised as aligned", () => {
    const pool = new AlignedBufferPool({ arenaBytes: 1024 * 1024, capacityBytes: 2 * 1024 * 1024 });
    const buffer = pool.tryAcquire(5000);
    assert.ok(buffer !== undefined);
    assert.equal(buffer.byteLength, 8192);
    assert.equal(buffer.byteOffset % 4096, 0);
    assert.ok(isAlignedBuffer(buffer));
    assert.ok(!isAlignedBuffer(new Uint8Array(4096)));
    assert.ok(!isAlignedBuffer(buffer.subarray(1)));
    pool.release(buffer);
    assert.equal(pool.stats().inUseBytes, 0);
  });

  test("the pool is bounded: when full, acquire waits and is served in order on release", async () => {
    const pool = new AlignedBufferPool({ arenaBytes: 64 * 1024, capacityBytes: 128 * 1024 });
    const held = [pool.tryAcquire(64 * 1024), pool.tryAcquire(64 * 1024)];
    assert.ok(held.every((b) => b !== undefined));
    assert.equal(pool.tryAcquire(4096), undefined);
    const order: string[] = [];
    const first = pool.acquire(4096).then((b) => {
      order.push("first");
      return b;
    });
    const second = pool.acquire(4096).then((b) => {
      order.push("second");
      return b;
    });
    assert.equal(pool.stats().waiters, 2);
    pool.release(held[0] as Uint8Array);
    const [a, b] = await Promise.all([first, second]);
    assert.deepEqual(order, ["first", "second"]);
    pool.release(a);
    pool.release(b);
    pool.release(held[1] as Uint8Array);
    assert.equal(pool.stats().inUseBytes, 0);
  });

  test("freed blocks merge back: a full-arena buffer fits again after many small ones", () => {
    const pool = new AlignedBufferPool({ arenaBytes: 64 * 1024, capacityBytes: 64 * 1024 });
    const small = Array.from({ length: 16 }, () => pool.tryAcquire(4096));
    assert.ok(small.every((b) => b !== undefined));
    for (const b of new Prng(3).shuffle(small)) pool.release(b as Uint8Array);
    const whole = pool.tryAcquire(64 * 1024);
    assert.ok(whole !== undefined);
    pool.release(whole);
  });

  test("a waiting acquire can be aborted; bad sizes and double release are refused", async () => {
    const pool = new AlignedBufferPool({ arenaBytes: 64 * 1024, capacityBytes: 64 * 1024 });
    const all = pool.tryAcquire(64 * 1024) as Uint8Array;
    const controller = new AbortController();
    const waiting = pool.acquire(4096, controller.signal);
    controller.abort();
    await assert.rejects(waiting, (e: unknown) => isHesError(e, "HES_ABORTED"));
    assert.equal(pool.stats().waiters, 0);
    assert.throws(() => pool.tryAcquire(0), RangeError);
    assert.throws(() => pool.tryAcquire(128 * 1024), RangeError);
    pool.release(all);
    assert.throws(() => pool.release(all), AssertionError);
  });

  test("capacity must be whole arenas", () => {
    assert.throws(
      () => new AlignedBufferPool({ arenaBytes: 64 * 1024, capacityBytes: 100 * 1024 }),
      RangeError,
    );
    assert.throws(() => new AlignedBufferPool({ arenaBytes: 3 * 64 * 1024 }), RangeError);
  });
});

describe("validation", () => {
  test("checkInteger names the argument and the bound", () => {
    assert.equal(checkInteger(4096, "offsetBytes", { min: 0, multipleOf: 512 }), 4096);
    assert.throws(
      () => checkInteger(-1, "offsetBytes", { min: 0 }),
      /offsetBytes must be >= 0, got -1/,
    );
    assert.throws(() => checkInteger(513, "offsetBytes", { multipleOf: 512 }), /multiple of 512/);
    assert.throws(() => checkInteger("1", "offsetBytes"), TypeError);
    assert.throws(() => checkInteger(2 ** 60, "offsetBytes"), /safe integer/);
  });

  test("toSafeNumber refuses what a number cannot hold", () => {
    assert.equal(toSafeNumber(123n, "index"), 123);
    assert.throws(() => toSafeNumber(2n ** 60n, "index"), RangeError);
  });

  test("node ids are positive u32", () => {
    assert.ok(isNodeId(1));
    assert.ok(!isNodeId(0));
    assert.ok(!isNodeId(2 ** 32));
    assert.ok(!isNodeId(1.5));
  });
});

describe("clock and logger", () => {
  test("systemClock.sleep resolves, and rejects with HES_ABORTED when aborted", async () => {
    const start = systemClock.nowMs();
    await systemClock.sleep(5);
    assert.ok(systemClock.nowMs() - start >= 4);
    const controller = new AbortController();
    const sleeping = systemClock.sleep(10_000, controller.signal);
    controller.abort();
    await assert.rejects(sleeping, (e: unknown) => isHesError(e, "HES_ABORTED"));
  });

  test("RecordingLogger keeps bounded records with child bindings", () => {
    const logger = new RecordingLogger(2);
    logger.child({ volume: "vm-1" }).warn({ epoch: 3 }, "fenced");
    logger.info("a");
    logger.info("b");
    assert.equal(logger.records.length, 2);
    assert.deepEqual(
      logger.records.map((r) => r.message),
      ["a", "b"],
    );
  });
});
