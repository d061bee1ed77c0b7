/**
 * The Disk contract as executable cases (see `disk.ts` for the rules they check). Run by the
 * real FileDisk (on a file, and on a raw block device when one is named) and by SimDisk.
 */
import { assert } from "../assert.js";
import type { Disk } from "../disk.js";
import { isHesError } from "../errors.js";
import { Prng } from "../prng.js";
import { expectBytesEqual, expectRejects, type SuiteCase } from "./expect.js";

/** How the suite gets disks of the implementation under test. */
export interface DiskSuiteFactory {
  /** A label for case names ("file", "block device", "sim"). */
  readonly label: string;
  /** Opens a fresh disk of at least 64 MiB. */
  create(): Promise<Disk>;
  /** Opens the same storage again after `close` (what a restart sees). */
  reopen(closed: Disk): Promise<Disk>;
  /** True when a fresh disk reads as zeros (files do; a raw device holds old data). */
  readonly freshReadsZero: boolean;
  /** Releases the storage behind a disk (deletes its file). Called after each case. */
  destroy(disk: Disk): Promise<void>;
}

const BLOCK = 4096;

function pattern(seed: number, lengthBytes: number): Uint8Array {
  return new Prng(seed).fill(new Uint8Array(lengthBytes));
}

async function readBack(
  disk: Disk,
  positionBytes: number,
  lengthBytes: number,
): Promise<Uint8Array> {
  const target = new Uint8Array(lengthBytes);
  await disk.read(target, positionBytes);
  return target;
}

const isRangeError = (error: unknown): boolean => error instanceof RangeError;

/** The cases of the Disk contract for one implementation. */
export function diskSuite(factory: DiskSuiteFactory): SuiteCase[] {
  const withDisk = (body: (disk: Disk) => Promise<void>) => async (): Promise<void> => {
    const disk = await factory.create();
    try {
      await body(disk);
    } finally {
      await disk.close();
      await factory.destroy(disk);
    }
  };
  const name = (text: string): string => `disk contract (${factory.label}): ${text}`;

  return [
    {
      name: name("geometry is block-aligned and at least 64 MiB"),
      run: withDisk(async (disk) => {
        assert(disk.blockSizeBytes === BLOCK, `blockSizeBytes ${disk.blockSizeBytes} != 4096`);
        assert(disk.sizeBytes % BLOCK === 0, `sizeBytes ${disk.sizeBytes} not block-aligned`);
        assert(disk.sizeBytes >= 64 * 1024 * 1024, `sizeBytes ${disk.sizeBytes} < 64 MiB`);
      }),
    },
    {
      name: name("a written block reads back; a fresh disk reads zeros where declared"),
      run: withDisk(async (disk) => {
        if (factory.freshReadsZero) {
          expectBytesEqual(await readBack(disk, 8 * BLOCK, BLOCK), new Uint8Array(BLOCK), "fresh");
        }
        const data = pattern(1, BLOCK);
        await disk.write(data, 8 * BLOCK);
        expectBytesEqual(await readBack(disk, 8 * BLOCK, BLOCK), data, "block 8");
      }),
    },
    {
      name: name("the last block of the disk is usable; one past it is refused"),
      run: withDisk(async (disk) => {
        const last = disk.sizeBytes - BLOCK;
        const data = pattern(2, BLOCK);
        await disk.write(data, last);
        expectBytesEqual(await readBack(disk, last, BLOCK), data, "last block");
        await expectRejects(() => disk.write(data, disk.sizeBytes), isRangeError, "write past end");
        await expectRejects(
          () => disk.read(new Uint8Array(2 * BLOCK), last),
          isRangeError,
          "read across end",
        );
      }),
    },
    {
      name: name("unaligned or invalid ranges are refused and change nothing"),
      run: withDisk(async (disk) => {
        const before = pattern(3, 2 * BLOCK);
        await disk.write(before, 0);
        const bad: Array<[number, number]> = [
          [512, BLOCK],
          [0, 512],
          [-BLOCK, BLOCK],
          [1.5, BLOCK],
          [Number.MAX_SAFE_INTEGER, BLOCK],
        ];
        for (const [position, length] of bad) {
          await expectRejects(
            () => disk.write(new Uint8Array(length), position),
            isRangeError,
            `write at ${position} length ${length}`,
          );
          await expectRejects(
            () => disk.read(new Uint8Array(length), position),
            isRangeError,
            `read at ${position} length ${length}`,
          );
        }
        await expectRejects(() => disk.write(new Uint8Array(0), 0), isRangeError, "empty write");
        expectBytesEqual(await readBack(disk, 0, 2 * BLOCK), before, "untouched");
      }),
    },
    {
      name: name("a list of buffers writes back to back, like one buffer"),
      run: withDisk(async (disk) => {
        const parts = [pattern(4, BLOCK), pattern(5, 3 * BLOCK), pattern(6, BLOCK)];
        await disk.write(parts, 16 * BLOCK);
        const whole = await readBack(disk, 16 * BLOCK, 5 * BLOCK);
        expectBytesEqual(whole.subarray(0, BLOCK), parts[0] as Uint8Array, "part 0");
        expectBytesEqual(whole.subarray(BLOCK, 4 * BLOCK), parts[1] as Uint8Array, "part 1");
        expectBytesEqual(whole.subarray(4 * BLOCK), parts[2] as Uint8Array, "part 2");
      }),
    },
    {
      name: name("pool buffers and unaligned views both work"),
      run: withDisk(async (disk) => {
        const aligned = await disk.buffers.acquire(4 * BLOCK);
        try {
          aligned.set(pattern(7, 4 * BLOCK));
          await disk.write(aligned, 32 * BLOCK);
          // A view at an odd offset of a plain buffer: direct disks must bounce it.
          const backing = new Uint8Array(4 * BLOCK + 3);
          const odd = backing.subarray(3);
          await disk.read(odd, 32 * BLOCK);
          expectBytesEqual(odd, aligned, "unaligned read of aligned write");
          odd.set(pattern(8, 4 * BLOCK));
          await disk.write(odd, 40 * BLOCK);
          aligned.fill(0);
          await disk.read(aligned, 40 * BLOCK);
          expectBytesEqual(aligned, odd, "aligned read of unaligned write");
        } finally {
          disk.buffers.release(aligned);
        }
      }),
    },
    {
      name: name("64 concurrent writes to distinct blocks all land"),
      run: withDisk(async (disk) => {
        const blocks = Array.from({ length: 64 }, (_, i) => pattern(100 + i, BLOCK));
        await Promise.all(blocks.map((data, i) => disk.write(data, (1000 + 3 * i) * BLOCK)));
        const reads = await Promise.all(
          blocks.map((_, i) => readBack(disk, (1000 + 3 * i) * BLOCK, BLOCK)),
        );
        reads.forEach((data, i) => {
          expectBytesEqual(data, blocks[i] as Uint8Array, `block ${i}`);
        });
      }),
    },
    {
      name: name("large IO: 1 MiB and 8 MiB round trips"),
      run: withDisk(async (disk) => {
        for (const size of [1024 * 1024, 8 * 1024 * 1024]) {
          const data = pattern(size, size);
          await disk.write(data, 4 * 1024 * 1024);
          expectBytesEqual(await readBack(disk, 4 * 1024 * 1024, size), data, `${size} bytes`);
        }
      }),
    },
    {
      name: name("synced data survives close and reopen"),
      run: async () => {
        let disk = await factory.create();
        const data = pattern(9, 2 * BLOCK);
        try {
          await disk.write(data, 64 * BLOCK);
          await disk.sync();
          await disk.close();
          disk = await factory.reopen(disk);
          expectBytesEqual(await readBack(disk, 64 * BLOCK, 2 * BLOCK), data, "after reopen");
        } finally {
          await disk.close();
          await factory.destroy(disk);
        }
      },
    },
    {
      name: name("trim leaves zeros or old data in range and neighbours intact"),
      run: withDisk(async (disk) => {
        const data = pattern(10, 12 * BLOCK);
        await disk.write(data, 128 * BLOCK);
        await disk.trim(132 * BLOCK, 4 * BLOCK);
        const after = await readBack(disk, 128 * BLOCK, 12 * BLOCK);
        expectBytesEqual(after.subarray(0, 4 * BLOCK), data.subarray(0, 4 * BLOCK), "before range");
        expectBytesEqual(after.subarray(8 * BLOCK), data.subarray(8 * BLOCK), "after range");
        const middle = after.subarray(4 * BLOCK, 8 * BLOCK);
        const old = data.subarray(4 * BLOCK, 8 * BLOCK);
        const zeros = middle.every((byte) => byte === 0);
        const unchanged = middle.every((byte, i) => byte === old[i]);
        assert(zeros || unchanged, "trimmed range holds neither zeros nor the old data");
        await expectRejects(() => disk.trim(100, BLOCK), isRangeError, "unaligned trim");
      }),
    },
    {
      name: name("calls after close fail with HES_CLOSED; close is idempotent"),
      run: async () => {
        const disk = await factory.create();
        await disk.close();
        await disk.close();
        const closed = (error: unknown): boolean => isHesError(error, "HES_CLOSED");
        await expectRejects(() => disk.read(new Uint8Array(BLOCK), 0), closed, "read");
        await expectRejects(() => disk.write(new Uint8Array(BLOCK), 0), closed, "write");
        await expectRejects(() => disk.sync(), closed, "sync");
        await factory.destroy(disk);
      },
    },
  ];
}
