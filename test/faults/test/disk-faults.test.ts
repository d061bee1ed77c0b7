/**
 * Goal: each disk fault really reaches a running process's data file, and only it. Method: a
 * real target process writes 4 KiB + fdatasync in a loop and logs every outcome; strace
 * injects EIO into fdatasync, ENOSPC into writes, and a 200 ms fdatasync delay, and we read
 * the target's own log to see them take effect and stop on detach. Disk full, bit flips, stale
 * copies and a wipe are checked on real files and mounts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Prng } from "@hes/base";
import {
  flipBits,
  restoreCopy,
  SmallFilesystem,
  SyscallFault,
  type SyscallFaultOptions,
  saveCopy,
  wipe,
} from "../lib/disk-faults.js";
import { faultSuiteUnavailable, waitFor } from "../lib/exec.js";
import { ManagedProcess } from "../lib/process.js";

const skip = faultSuiteUnavailable();
const targets = new URL("../targets/", import.meta.url).pathname;
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "hesf-disk-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function lines(target: ManagedProcess): string[] {
  return readFileSync(target.stdoutPath, "utf8").split("\n").filter(Boolean);
}

/** Waits for `count` new lines after `from` and returns them. */
async function nextLines(target: ManagedProcess, from: number, count: number): Promise<string[]> {
  return waitFor(
    `${count} lines from ${target.name}`,
    () => {
      const all = lines(target);
      return all.length >= from + count ? all.slice(from, from + count) : undefined;
    },
    20_000,
  );
}

function startLoop(name: string, file: string, mode = ""): ManagedProcess {
  const args = [join(targets, "fsync-loop.mjs"), file, ...(mode === "" ? [] : [mode])];
  return ManagedProcess.spawn({ command: process.execPath, args, logDir: dir, name });
}

test("strace injects EIO, ENOSPC and delay into a running process, and detaches", {
  skip,
}, async () => {
  const file = join(dir, "data.bin");
  const target = startLoop("loop", file);
  try {
    await nextLines(target, 0, 3);
    const inject = async (fault: SyscallFaultOptions["fault"], syscalls: string[]) =>
      SyscallFault.attach({
        pid: target.pid,
        syscalls,
        fault,
        paths: [file],
        logDir: dir,
        name: "st",
      });

    const eio = await inject({ error: "EIO" }, ["fdatasync"]);
    let mark = lines(target).length + 2; // lines in flight when strace attached may be ok
    assert.ok((await nextLines(target, mark, 5)).every((l) => l.startsWith("err EIO")));
    await eio.detach();
    assert.ok(eio.injectedCount() >= 5);
    mark = lines(target).length + 2;
    assert.ok((await nextLines(target, mark, 3)).every((l) => l.startsWith("ok")));

    const full = await inject({ error: "ENOSPC" }, ["write", "pwrite64", "pwritev"]);
    mark = lines(target).length + 2;
    // stdout is not under -P, so the target can still tell us about the failed data writes.
    assert.ok((await nextLines(target, mark, 5)).every((l) => l.startsWith("err ENOSPC")));
    await full.detach();

    const slow = await inject({ delayUs: 200_000 }, ["fdatasync"]);
    mark = lines(target).length + 2;
    const slowLines = await nextLines(target, mark, 3);
    assert.ok(
      slowLines.every((l) => Number(l.split(" ")[2]) >= 190),
      slowLines.join("|"),
    );
    await slow.detach();
    mark = lines(target).length + 2;
    const fastLines = await nextLines(target, mark, 5);
    assert.ok(
      fastLines.some((l) => Number(l.split(" ")[2]) < 100),
      fastLines.join("|"),
    );
  } finally {
    await target.kill9();
  }
});

for (const kind of ["tmpfs", "ext4"] as const) {
  test(`a full ${kind} makes the target's writes fail with ENOSPC until space returns`, {
    skip,
  }, async () => {
    const fs = await SmallFilesystem.mount(join(dir, `small-${kind}`), 8 * 1024 * 1024, kind);
    const target = startLoop(`full-${kind}`, join(fs.dir, "grow.bin"), "append");
    try {
      await nextLines(target, 0, 2);
      assert.ok(fs.fill() > 0);
      let mark = lines(target).length + 1;
      const full = await waitFor(
        "ENOSPC",
        async () => {
          const got = await nextLines(target, mark, 1);
          mark++;
          return got[0]?.startsWith("err ENOSPC") ? true : undefined;
        },
        20_000,
      );
      assert.equal(full, true);
      fs.unfill();
      mark = lines(target).length + 2;
      assert.ok((await nextLines(target, mark, 3)).every((l) => l.startsWith("ok")));
    } finally {
      await target.kill9();
      await fs.unmount();
    }
  });
}

test("bit flips, stale copies and a wipe change exactly what they say", () => {
  const data = join(dir, "node-data");
  const file = join(data, "chunks", "c1.dat");
  wipe(data);
  const original = Buffer.alloc(64 * 1024, 0x11);
  writeFileSync(join(data, "chunks", "..", "meta"), "v1");
  rmSync(join(data, "chunks"), { recursive: true, force: true });
  wipe(join(data, "chunks"));
  writeFileSync(file, original);
  saveCopy(data, join(dir, "saved"));

  const flips = flipBits(file, new Prng(7), 9, { fromBytes: 4096, toBytes: 8192 });
  assert.equal(flips.length, 9);
  const after = readFileSync(file);
  let differingBits = 0;
  for (let i = 0; i < after.length; i++) {
    let x = (after[i] as number) ^ (original[i] as number);
    if (x !== 0) assert.ok(i >= 4096 && i < 8192, `flip outside range at ${i}`);
    for (; x !== 0; x >>= 1) differingBits += x & 1;
  }
  assert.equal(differingBits, 9);
  assert.throws(() => flipBits(file, new Prng(1), 0), RangeError);

  writeFileSync(join(data, "meta"), "v2");
  restoreCopy(join(dir, "saved"), data);
  assert.equal(readFileSync(join(data, "meta"), "utf8"), "v1");
  assert.deepEqual(readFileSync(file), original);

  wipe(data);
  assert.throws(() => readFileSync(file), /ENOENT/);
});
