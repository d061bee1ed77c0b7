/**
 * Goal: prove FileDisk keeps the Disk contract on a real file (buffered, O_DIRECT, and O_DIRECT
 * with O_DSYNC), and on a raw block device when HES_TEST_BLOCK_DEVICE names one (its contents
 * are destroyed).
 * Method: the shared diskSuite from @hes/base/testing, plus FileDisk-specific cases: a failed
 * fdatasync (injected through the syscall seam) takes the disk out of service for good.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { type Disk, isHesError } from "@hes/base";
import { diskSuite, expectRejects } from "@hes/base/testing";
import { FileDisk, fileDiskSyscalls } from "@hes/extent-store";

const SIZE_BYTES = 128 * 1024 * 1024;
const root = mkdtempSync(join(tmpdir(), "hes-file-disk-"));
let counter = 0;

const modes = [
  { label: "file, buffered", direct: false, dsync: false },
  { label: "file, O_DIRECT", direct: true, dsync: false },
  { label: "file, O_DIRECT | O_DSYNC", direct: true, dsync: true },
];
for (const { label, direct, dsync } of modes) {
  describe(`FileDisk on a file (${label})`, () => {
    const cases = diskSuite({
      label,
      freshReadsZero: true,
      create: () =>
        FileDisk.open(join(root, `disk-${counter++}.img`), {
          direct,
          dsync,
          createSizeBytes: SIZE_BYTES,
        }),
      reopen: (closed: Disk) => FileDisk.open(closed.name, { direct, dsync }),
      destroy: async (disk: Disk) => rmSync(disk.name, { force: true }),
    });
    for (const c of cases) test(c.name, c.run);
  });
}

const blockDevice = process.env.HES_TEST_BLOCK_DEVICE;
describe("FileDisk on a raw block device (HES_TEST_BLOCK_DEVICE)", () => {
  if (blockDevice === undefined) {
    test("disk contract on a raw block device", {
      skip: "set HES_TEST_BLOCK_DEVICE=/dev/… to run (the device's contents are destroyed)",
    }, () => {});
    return;
  }
  const cases = diskSuite({
    label: `block device ${blockDevice}`,
    freshReadsZero: false,
    create: () => FileDisk.open(blockDevice, { direct: true }),
    reopen: () => FileDisk.open(blockDevice, { direct: true }),
    destroy: async () => {},
  });
  for (const c of cases) test(c.name, c.run);
});

describe("FileDisk failure handling", () => {
  test("a failed fdatasync fails the disk for good: no retry can report success", async () => {
    let failNext = true;
    const disk = await FileDisk.open(join(root, "fsyncgate.img"), {
      createSizeBytes: SIZE_BYTES,
      syscalls: {
        ...fileDiskSyscalls,
        fdatasync: (fd, callback) => {
          if (failNext) {
            failNext = false;
            const error = Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
            queueMicrotask(() => callback(error));
            return;
          }
          fileDiskSyscalls.fdatasync(fd, callback);
        },
      },
    });
    const failed = (error: unknown) => isHesError(error, "HES_DISK_FAILED");
    await disk.write(new Uint8Array(4096).fill(7), 0);
    await expectRejects(() => disk.sync(), failed, "first sync");
    // The underlying fdatasync would now succeed; the disk must still refuse.
    await expectRejects(() => disk.sync(), failed, "retried sync");
    await expectRejects(() => disk.write(new Uint8Array(4096), 0), failed, "write after failure");
    await expectRejects(() => disk.read(new Uint8Array(4096), 0), failed, "read after failure");
    await disk.close();
  });

  test("opening a missing file without createSizeBytes is HES_IO naming the path", async () => {
    const missing = join(root, "missing.img");
    const error = await expectRejects(
      () => FileDisk.open(missing),
      (e) => isHesError(e, "HES_IO"),
      "open missing",
    );
    if (!String((error as Error).message).includes(missing)) throw new Error("path not named");
  });

  test("a directory is refused with HES_INVALID_ARGUMENT", async () => {
    await expectRejects(
      () => FileDisk.open(root),
      (e) => isHesError(e, "HES_INVALID_ARGUMENT", "HES_IO"),
      "open a directory",
    );
  });
});

process.on("exit", () => rmSync(root, { recursive: true, force: true }));
