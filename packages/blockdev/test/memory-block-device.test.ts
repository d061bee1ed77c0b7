/**
 * Goal: prove MemoryBlockDevice keeps the BlockDevice contract (block-device.ts) with real
 * allocation tracking, and refuses bad requests without changing anything.
 * Method: a model-based property test (fast-check) runs random sequences of writes, discards,
 * write-zeroes and reads against a flat byte array plus a per-4-KiB-block allocation model,
 * checking every read and every allocation map; focused cases cover validation, capacity,
 * read-only, FAST_ZERO refusal, aborts and a size that is not a multiple of 4 KiB.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isHesError } from "@hes/base";
import { expectRejects } from "@hes/base/testing";
import { type AllocationExtent, MemoryBlockDevice } from "@hes/blockdev";
import fc from "fast-check";

const SECTOR = 512;
const BLOCK = 4096;

type Op =
  | { kind: "write"; offset: number; length: number; fill: number; fua: boolean }
  | { kind: "discard"; offset: number; length: number }
  | { kind: "zero"; offset: number; length: number; mayUnmap: boolean }
  | { kind: "read"; offset: number; length: number }
  | { kind: "map"; offset: number; length: number };

/** The reference: bytes, plus which 4 KiB blocks hold space (per the allocation rules). */
class Model {
  readonly bytes: Uint8Array;
  readonly allocated: boolean[];
  constructor(readonly sizeBytes: number) {
    this.bytes = new Uint8Array(sizeBytes);
    this.allocated = new Array(Math.ceil(sizeBytes / BLOCK)).fill(false);
  }
  touched(offset: number, length: number, whole: boolean): number[] {
    const blocks: number[] = [];
    if (length === 0) return blocks;
    for (let b = Math.floor(offset / BLOCK); b * BLOCK < offset + length; b++) {
      const start = b * BLOCK;
      const end = Math.min(start + BLOCK, this.sizeBytes);
      if (!whole || (start >= offset && end <= offset + length)) blocks.push(b);
    }
    return blocks;
  }
}

function rangeArb(sizeBytes: number): fc.Arbitrary<{ offset: number; length: number }> {
  const sectors = sizeBytes / SECTOR;
  return fc
    .tuple(fc.integer({ min: 0, max: sectors }), fc.integer({ min: 0, max: sectors }))
    .map(([a, b]) => ({ offset: Math.min(a, b) * SECTOR, length: Math.abs(a - b) * SECTOR }));
}

function opArb(sizeBytes: number): fc.Arbitrary<Op> {
  const range = rangeArb(sizeBytes);
  return fc.oneof(
    fc
      .tuple(range, fc.integer({ min: 1, max: 255 }), fc.boolean())
      .map(([r, fill, fua]) => ({ kind: "write" as const, ...r, fill, fua })),
    range.map((r) => ({ kind: "discard" as const, ...r })),
    fc
      .tuple(range, fc.boolean())
      .map(([r, mayUnmap]) => ({ kind: "zero" as const, ...r, mayUnmap })),
    range.map((r) => ({ kind: "read" as const, ...r })),
    range.map((r) => ({ kind: "map" as const, ...r })),
  );
}

function checkMap(model: Model, extents: AllocationExtent[], offset: number, length: number): void {
  let position = offset;
  for (const extent of extents) {
    assert.equal(extent.offsetBytes, position, "extents are contiguous and in order");
    assert.ok(extent.lengthBytes > 0, "no empty extent");
    if (extent.hole) assert.ok(extent.zero, "a hole reads as zeros");
    const end = position + extent.lengthBytes;
    for (const block of model.touched(position, extent.lengthBytes, false)) {
      assert.equal(
        model.allocated[block],
        !extent.hole,
        `block ${block}: allocated=${model.allocated[block]} but hole=${extent.hole}`,
      );
    }
    if (extent.zero) {
      assert.ok(
        model.bytes.subarray(position, end).every((b) => b === 0),
        `extent at ${position} marked zero holds data`,
      );
    }
    position = end;
  }
  assert.equal(position, offset + length, "extents cover the range exactly");
}

async function apply(device: MemoryBlockDevice, model: Model, op: Op): Promise<void> {
  switch (op.kind) {
    case "write": {
      const data = new Uint8Array(op.length).fill(op.fill);
      await device.write({ offsetBytes: op.offset, data, fua: op.fua });
      model.bytes.set(data, op.offset);
      for (const b of model.touched(op.offset, op.length, false)) model.allocated[b] = true;
      return;
    }
    case "discard":
    case "zero": {
      const unmap = op.kind === "discard" || op.mayUnmap;
      if (op.kind === "discard")
        await device.discard({ offsetBytes: op.offset, lengthBytes: op.length });
      else
        await device.writeZeroes({
          offsetBytes: op.offset,
          lengthBytes: op.length,
          mayUnmap: op.mayUnmap,
        });
      model.bytes.fill(0, op.offset, op.offset + op.length);
      for (const b of model.touched(op.offset, op.length, unmap)) model.allocated[b] = !unmap;
      return;
    }
    case "read": {
      const data = await device.read({ offsetBytes: op.offset, lengthBytes: op.length });
      assert.deepEqual(data, model.bytes.subarray(op.offset, op.offset + op.length));
      return;
    }
    case "map": {
      const extents = await device.allocation({ offsetBytes: op.offset, lengthBytes: op.length });
      checkMap(model, extents, op.offset, op.length);
      return;
    }
  }
}

describe("MemoryBlockDevice", () => {
  test("matches a byte-and-allocation model under random operation sequences", async () => {
    // 9 blocks and a half: covers a short last block and partial-block edges everywhere.
    const sizeBytes = 9 * BLOCK + 5 * SECTOR;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb(sizeBytes), { maxLength: 40 }), async (ops) => {
        const device = new MemoryBlockDevice({ sizeBytes });
        const model = new Model(sizeBytes);
        for (const op of ops) await apply(device, model, op);
        await apply(device, model, { kind: "read", offset: 0, length: sizeBytes });
        await apply(device, model, { kind: "map", offset: 0, length: sizeBytes });
        const allocated = model.allocated.filter(Boolean).length;
        assert.equal(device.stats().allocatedBlocks, allocated);
      }),
      { numRuns: 300 },
    );
  });

  test("large IO across slabs and reused slots reads back exactly", async () => {
    const sizeBytes = 4 * 1024 * 1024;
    const device = new MemoryBlockDevice({ sizeBytes });
    const model = new Uint8Array(sizeBytes);
    const fill = (offset: number, length: number, seed: number): Uint8Array => {
      const data = Uint8Array.from({ length }, (_, i) => (i * 7 + seed + (i >> 12)) & 0xff);
      model.set(data, offset);
      return data;
    };
    // Scattered small writes first, then discards, so later slots come back out of order.
    for (let i = 0; i < 64; i++) {
      const offset = ((i * 37) % 1000) * BLOCK;
      await device.write({ offsetBytes: offset, data: fill(offset, BLOCK, i) });
    }
    await device.discard({ offsetBytes: 0, lengthBytes: 512 * BLOCK });
    model.fill(0, 0, 512 * BLOCK);
    await device.write({ offsetBytes: 3 * SECTOR, data: fill(3 * SECTOR, 2 * 1024 * 1024, 99) });
    await device.write({
      offsetBytes: 2 * 1024 * 1024,
      data: fill(2 * 1024 * 1024, 1536 * 1024, 5),
    });
    for (const [offset, length] of [
      [0, sizeBytes],
      [SECTOR, 3 * 1024 * 1024],
      [1024 * 1024 - SECTOR, 2 * SECTOR],
    ] as const) {
      assert.deepEqual(
        await device.read({ offsetBytes: offset, lengthBytes: length }),
        model.subarray(offset, offset + length),
      );
    }
  });

  test("the block table spans its 256 MiB pages: IO across a page edge, far sparse blocks", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 2 ** 40 });
    const edge = 65536 * BLOCK; // first block of the block table's second page
    const data = Uint8Array.from({ length: 4 * BLOCK }, (_, i) => (i >> 9) + 1);
    await device.write({ offsetBytes: edge - 2 * BLOCK, data });
    await device.write({ offsetBytes: 2 ** 40 - BLOCK, data: data.subarray(0, BLOCK) });
    assert.deepEqual(
      await device.read({ offsetBytes: edge - 2 * BLOCK, lengthBytes: 4 * BLOCK }),
      data,
    );
    assert.deepEqual(
      await device.allocation({ offsetBytes: edge - 4 * BLOCK, lengthBytes: 8 * BLOCK }),
      [
        { offsetBytes: edge - 4 * BLOCK, lengthBytes: 2 * BLOCK, hole: true, zero: true },
        { offsetBytes: edge - 2 * BLOCK, lengthBytes: 4 * BLOCK, hole: false, zero: false },
        { offsetBytes: edge + 2 * BLOCK, lengthBytes: 2 * BLOCK, hole: true, zero: true },
      ],
    );
    await device.discard({ offsetBytes: edge - BLOCK, lengthBytes: 2 * BLOCK });
    assert.equal(device.stats().allocatedBlocks, 3);
    assert.deepEqual(
      await device.read({ offsetBytes: 2 ** 40 - BLOCK, lengthBytes: BLOCK }),
      data.subarray(0, BLOCK),
    );
    assert.throws(() => new MemoryBlockDevice({ sizeBytes: 2 ** 45 }), /sizeBytes/);
  });

  test("reports the contract's geometry", () => {
    const device = new MemoryBlockDevice({ sizeBytes: 1 << 20 });
    assert.equal(device.logicalBlockBytes, 512);
    assert.equal(device.preferredBlockBytes, 4096);
    assert.equal(device.maxRequestBytes, 32 * 1024 * 1024);
    assert.equal(device.multiConnSafe, true);
    assert.equal(device.readOnly, false);
  });

  test("unwritten ranges read as zeros and map as one hole", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 1 << 20 });
    const data = await device.read({ offsetBytes: 4096, lengthBytes: 8192 });
    assert.ok(data.every((b) => b === 0));
    assert.deepEqual(await device.allocation({ offsetBytes: 0, lengthBytes: 1 << 20 }), [
      { offsetBytes: 0, lengthBytes: 1 << 20, hole: true, zero: true },
    ]);
    assert.equal(device.stats().slabBytes, 0, "nothing stored for holes");
  });

  test("writeZeroes without mayUnmap provisions zero blocks without storing them", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 1 << 20 });
    await device.write({ offsetBytes: 0, data: new Uint8Array(BLOCK).fill(7) });
    await device.writeZeroes({ offsetBytes: 0, lengthBytes: 4 * BLOCK, mayUnmap: false });
    assert.deepEqual(await device.allocation({ offsetBytes: 0, lengthBytes: 8 * BLOCK }), [
      { offsetBytes: 0, lengthBytes: 4 * BLOCK, hole: false, zero: true },
      { offsetBytes: 4 * BLOCK, lengthBytes: 4 * BLOCK, hole: true, zero: true },
    ]);
    assert.deepEqual(device.stats().allocatedBlocks, 4);
    assert.deepEqual(device.stats().zeroBlocks, 4);
  });

  test("refuses bad requests with RangeError/TypeError naming the argument, changing nothing", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 64 * 1024, maxRequestBytes: 8192 });
    await device.write({ offsetBytes: 0, data: new Uint8Array(BLOCK).fill(9) });
    const bad: Array<[string, () => Promise<unknown>, RegExp]> = [
      [
        "misaligned offset",
        () => device.read({ offsetBytes: 100, lengthBytes: 512 }),
        /offsetBytes/,
      ],
      ["misaligned length", () => device.read({ offsetBytes: 0, lengthBytes: 100 }), /lengthBytes/],
      [
        "negative offset",
        () => device.discard({ offsetBytes: -512, lengthBytes: 512 }),
        /offsetBytes/,
      ],
      [
        "past the end",
        () => device.read({ offsetBytes: 61440, lengthBytes: 8192 }),
        /past the end/,
      ],
      ["oversize read", () => device.read({ offsetBytes: 0, lengthBytes: 16384 }), /lengthBytes/],
      [
        "oversize write",
        () => device.write({ offsetBytes: 0, data: new Uint8Array(16384) }),
        /data is 16384 bytes/,
      ],
      [
        "unaligned write",
        () => device.write({ offsetBytes: 0, data: new Uint8Array(10) }),
        /lengthBytes/,
      ],
      [
        "data not bytes",
        () => device.write({ offsetBytes: 0, data: "x" as unknown as Uint8Array }),
        /data must be a Uint8Array/,
      ],
      [
        "mayUnmap missing",
        () =>
          device.writeZeroes({ offsetBytes: 0, lengthBytes: 512 } as unknown as {
            offsetBytes: number;
            lengthBytes: number;
            mayUnmap: boolean;
          }),
        /mayUnmap/,
      ],
      [
        "non-integer offset",
        () => device.allocation({ offsetBytes: 0.5, lengthBytes: 512 }),
        /offsetBytes/,
      ],
      [
        "zeroes past end",
        () => device.writeZeroes({ offsetBytes: 65024, lengthBytes: 1024, mayUnmap: true }),
        /past the end/,
      ],
    ];
    for (const [what, call, message] of bad) {
      const error = await expectRejects(
        call,
        (e) => (e instanceof RangeError || e instanceof TypeError) && message.test(e.message),
        what,
      );
      assert.ok(error !== undefined);
    }
    assert.ok((await device.read({ offsetBytes: 0, lengthBytes: BLOCK })).every((b) => b === 9));
    assert.equal(device.stats().allocatedBlocks, 1);
  });

  test("constructor validates its options", () => {
    assert.throws(() => new MemoryBlockDevice({ sizeBytes: 1000 }), /sizeBytes/);
    assert.throws(() => new MemoryBlockDevice({ sizeBytes: -512 }), /sizeBytes/);
    assert.throws(
      () => new MemoryBlockDevice({ sizeBytes: 4096, maxRequestBytes: 100 }),
      /maxRequestBytes/,
    );
    assert.throws(
      () => new MemoryBlockDevice({ sizeBytes: 4096, readOnly: "yes" as unknown as boolean }),
      /readOnly/,
    );
  });

  test("a full device fails with HES_NO_SPACE and stores nothing of the request", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 1 << 20, capacityBytes: 3 * BLOCK });
    await device.write({ offsetBytes: 0, data: new Uint8Array(2 * BLOCK).fill(1) });
    await expectRejects(
      device.write({ offsetBytes: 4 * BLOCK, data: new Uint8Array(2 * BLOCK).fill(2) }),
      (e) => isHesError(e, "HES_NO_SPACE"),
      "write beyond capacity",
    );
    await expectRejects(
      device.writeZeroes({ offsetBytes: 8 * BLOCK, lengthBytes: 2 * BLOCK, mayUnmap: false }),
      (e) => isHesError(e, "HES_NO_SPACE"),
      "provisioning beyond capacity",
    );
    assert.ok(
      (await device.read({ offsetBytes: 4 * BLOCK, lengthBytes: 2 * BLOCK })).every((b) => b === 0),
    );
    assert.equal(device.stats().allocatedBlocks, 2);
    // Overwriting allocated blocks needs no space; discarding frees it for others.
    await device.write({ offsetBytes: 0, data: new Uint8Array(2 * BLOCK).fill(3) });
    await device.discard({ offsetBytes: 0, lengthBytes: 2 * BLOCK });
    await device.write({ offsetBytes: 4 * BLOCK, data: new Uint8Array(3 * BLOCK).fill(4) });
    assert.equal(device.stats().allocatedBlocks, 3);
  });

  test("a read-only device refuses changes with HES_PERMISSION_DENIED", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 1 << 20, readOnly: true });
    for (const call of [
      () => device.write({ offsetBytes: 0, data: new Uint8Array(512) }),
      () => device.discard({ offsetBytes: 0, lengthBytes: 512 }),
      () => device.writeZeroes({ offsetBytes: 0, lengthBytes: 512, mayUnmap: true }),
    ]) {
      await expectRejects(call, (e) => isHesError(e, "HES_PERMISSION_DENIED"), "read-only");
    }
    assert.equal((await device.read({ offsetBytes: 0, lengthBytes: 512 })).length, 512);
  });

  test("fastOnly provisioning fails with HES_UNSUPPORTED when zeroing is not fast", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 1 << 20, fastZeroes: false });
    await device.write({ offsetBytes: 0, data: new Uint8Array(BLOCK).fill(5) });
    await expectRejects(
      device.writeZeroes({ offsetBytes: 0, lengthBytes: BLOCK, mayUnmap: false, fastOnly: true }),
      (e) => isHesError(e, "HES_UNSUPPORTED"),
      "slow zeroing with fastOnly",
    );
    assert.ok((await device.read({ offsetBytes: 0, lengthBytes: BLOCK })).every((b) => b === 5));
    // Punching a hole is always fast.
    await device.writeZeroes({
      offsetBytes: 0,
      lengthBytes: BLOCK,
      mayUnmap: true,
      fastOnly: true,
    });
    assert.equal(device.stats().allocatedBlocks, 0);
  });

  test("an aborted signal fails with HES_ABORTED before any change", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 1 << 20 });
    const signal = AbortSignal.abort();
    await expectRejects(
      device.write({ offsetBytes: 0, data: new Uint8Array(512).fill(1), signal }),
      (e) => isHesError(e, "HES_ABORTED"),
      "aborted write",
    );
    await expectRejects(device.flush({ signal }), (e) => isHesError(e, "HES_ABORTED"), "flush");
    assert.equal(device.stats().allocatedBlocks, 0);
  });

  test("an empty device and zero-length requests are fine", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 0 });
    assert.equal((await device.read({ offsetBytes: 0, lengthBytes: 0 })).length, 0);
    assert.deepEqual(await device.allocation({ offsetBytes: 0, lengthBytes: 0 }), []);
  });
});
