/**
 * Goal: real NBD clients work against the server exactly as they do against qemu-nbd or
 * nbdkit: qemu-img (info, convert, compare), qemu-io (pattern IO, 512-byte and sub-block IO,
 * discard, write -z, aio), nbdcopy both ways, nbdinfo --map, fio's nbd engine with crc32c
 * verification, and libnbd's nbdsh for simple replies, multi-conn, FAST_ZERO and strict-mode
 * bypass. Method: a server in this process exporting MemoryBlockDevices on a unix socket; the
 * clients run as child processes; results are checked through the client and through the
 * device itself.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { nullLogger } from "@hes/base";
import { MemoryBlockDevice } from "@hes/blockdev";
import { NbdServer } from "@hes/nbd";
import { run, runAny, skipWithout } from "./tools.js";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "hes-nbd-clients-"));
const socketPath = join(dir, "nbd.sock");
const server = new NbdServer({ logger: nullLogger });
let exportCounter = 0;
let tcpPort = 0;

before(async () => {
  await server.listen({ path: socketPath });
  const bound = await server.listen({ host: "127.0.0.1", port: 0 });
  tcpPort = "port" in bound ? bound.port : 0;
});
after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A fresh export of its own for one test. */
function freshExport(
  sizeBytes: number,
  options: { fastZeroes?: boolean } = {},
): { uri: string; device: MemoryBlockDevice; name: string } {
  const name = `disk${exportCounter++}`;
  const device = new MemoryBlockDevice({ sizeBytes, ...options });
  server.addExport({ name, device });
  return { uri: `nbd+unix:///${name}?socket=${socketPath}`, device, name };
}

/** An 8 MiB raw image: random data in the first 2 MiB and at 6 MiB, zeros elsewhere. */
function sourceImage(path: string): Buffer {
  const image = Buffer.alloc(8 * MiB);
  randomBytes(2 * MiB).copy(image, 0);
  randomBytes(64 * 1024).copy(image, 6 * MiB);
  writeFileSync(path, image);
  return image;
}

async function deviceBytes(device: MemoryBlockDevice): Promise<Buffer> {
  return Buffer.from(await device.read({ offsetBytes: 0, lengthBytes: device.sizeBytes }));
}

describe("real NBD clients", { timeout: 120_000 }, () => {
  test("qemu-img info sees the size and raw format", {
    skip: skipWithout("qemu-img"),
  }, async () => {
    const { uri } = freshExport(64 * MiB);
    const info = JSON.parse(await run("qemu-img", ["info", "--output=json", uri])) as {
      "virtual-size": number;
      format: string;
    };
    assert.equal(info["virtual-size"], 64 * MiB);
    assert.equal(info.format, "raw");
  });

  test("plaintext TCP on loopback: qemu-io and nbdinfo", {
    skip: skipWithout("qemu-io", "nbdinfo"),
  }, async () => {
    const { name, device } = freshExport(8 * MiB);
    const uri = `nbd://127.0.0.1:${tcpPort}/${name}`;
    await run("qemu-io", ["-f", "raw", "-c", "write -P 0x7e 1M 64k", uri]);
    assert.ok((await deviceBytes(device)).subarray(MiB, MiB + 65536).every((b) => b === 0x7e));
    const info = JSON.parse(await run("nbdinfo", ["--json", uri])) as { TLS: boolean };
    assert.equal(info.TLS, false);
  });

  test("qemu-io: pattern, 512-byte, sub-block, discard, write -z, aio", {
    skip: skipWithout("qemu-io"),
  }, async () => {
    const { uri, device } = freshExport(16 * MiB);
    const commands = [
      "write -P 0xa5 0 1M",
      "read -P 0xa5 0 1M",
      "write -P 0x11 1536 512",
      "read -P 0x11 1536 512",
      "write -P 0x22 100 300",
      "read -P 0x22 100 300",
      "read -P 0xa5 0 100",
      "read -P 0xa5 400 1136",
      "write -P 0x5c 2M 1M",
      "discard 2M 1M",
      "read -P 0 2M 1M",
      "write -P 0x5d 4M 2M",
      "write -z 4M 1M",
      "write -z -u 5M 1M",
      "read -P 0 4M 2M",
      "aio_write -P 0x33 8M 64k",
      "aio_write -P 0x44 9M 64k",
      "aio_flush",
      "aio_read -P 0x33 8M 64k",
      "aio_read -P 0x44 9M 64k",
      "aio_flush",
      "flush",
    ];
    const result = await runAny("qemu-io", [
      "-f",
      "raw",
      ...commands.flatMap((c) => ["-c", c]),
      uri,
    ]);
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.doesNotMatch(result.stdout + result.stderr, /fail|error/i);
    const bytes = await deviceBytes(device);
    assert.ok(bytes.subarray(100, 400).every((b) => b === 0x22));
    assert.ok(bytes.subarray(1536, 2048).every((b) => b === 0x11));
    assert.ok(bytes.subarray(2048, MiB).every((b) => b === 0xa5));
    assert.ok(bytes.subarray(8 * MiB, 8 * MiB + 65536).every((b) => b === 0x33));
    assert.deepEqual(await device.allocation({ offsetBytes: 2 * MiB, lengthBytes: 4 * MiB }), [
      { offsetBytes: 2 * MiB, lengthBytes: 2 * MiB, hole: true, zero: true },
      { offsetBytes: 4 * MiB, lengthBytes: MiB, hole: false, zero: true },
      { offsetBytes: 5 * MiB, lengthBytes: MiB, hole: true, zero: true },
    ]);
  });

  test("qemu-io reports a pattern mismatch (the check above can fail)", {
    skip: skipWithout("qemu-io"),
  }, async () => {
    const { uri } = freshExport(MiB);
    const result = await runAny("qemu-io", [
      "-f",
      "raw",
      "-c",
      "write -P 0x01 0 4k",
      "-c",
      "read -P 0x02 0 4k",
      uri,
    ]);
    assert.match(result.stdout + result.stderr, /Pattern verification failed/);
  });

  test("qemu-img convert and compare, both directions", {
    skip: skipWithout("qemu-img"),
  }, async () => {
    const source = join(dir, "convert-src.img");
    const image = sourceImage(source);
    const { uri, device } = freshExport(8 * MiB);
    await run("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", source, uri]);
    assert.ok(image.equals(await deviceBytes(device)));
    await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, uri]);
    await device.write({ offsetBytes: 7 * MiB, data: Buffer.alloc(512, 1) });
    const differs = await runAny("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, uri]);
    assert.equal(differs.status, 1, "compare notices a changed sector");
    const back = join(dir, "convert-back.img");
    await run("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri, back]);
    const expected = Buffer.from(image);
    expected.fill(1, 7 * MiB, 7 * MiB + 512);
    assert.ok(expected.equals(readFileSync(back)));
  });

  test("nbdcopy into the export and back out", { skip: skipWithout("nbdcopy") }, async () => {
    const source = join(dir, "copy-src.img");
    const image = sourceImage(source);
    const { uri, device } = freshExport(8 * MiB);
    await run("nbdcopy", ["--flush", source, uri]);
    assert.ok(image.equals(await deviceBytes(device)));
    const out = join(dir, "copy-out.img");
    writeFileSync(out, Buffer.alloc(0));
    await run("nbdcopy", [uri, out]);
    assert.ok(image.equals(readFileSync(out)));
  });

  test("nbdinfo --map shows data, zero and hole extents", {
    skip: skipWithout("nbdinfo"),
  }, async () => {
    const { uri, device } = freshExport(16 * MiB);
    await device.write({ offsetBytes: 0, data: randomBytes(MiB) });
    await device.writeZeroes({ offsetBytes: 4 * MiB, lengthBytes: 4 * MiB, mayUnmap: false });
    await device.write({ offsetBytes: 12 * MiB, data: randomBytes(8192) });
    const map = (await run("nbdinfo", ["--map", uri]))
      .trim()
      .split("\n")
      .map((line) => line.trim().split(/\s+/));
    assert.deepEqual(map, [
      ["0", String(MiB), "0", "data"],
      [String(MiB), String(3 * MiB), "3", "hole,zero"],
      [String(4 * MiB), String(4 * MiB), "2", "zero"],
      [String(8 * MiB), String(4 * MiB), "3", "hole,zero"],
      [String(12 * MiB), "8192", "0", "data"],
      [String(12 * MiB + 8192), String(4 * MiB - 8192), "3", "hole,zero"],
    ]);
  });

  test("fio's nbd engine writes and verifies with crc32c", {
    skip: skipWithout("fio"),
  }, async () => {
    const { uri } = freshExport(64 * MiB);
    const jobs: Array<[string, string, string, string]> = [
      ["randwrite-4k-qd32", "randwrite", "4k", "32"],
      ["write-1m-qd8", "write", "1M", "8"],
      ["randwrite-512-qd8", "randwrite", "512", "8"],
    ];
    for (const [name, rw, bs, depth] of jobs) {
      const output = await run("fio", [
        `--name=${name}`,
        "--ioengine=nbd",
        `--uri=${uri}`,
        `--rw=${rw}`,
        `--bs=${bs}`,
        `--iodepth=${depth}`,
        "--size=16M",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
        "--verify_state_save=0",
        "--output-format=json",
      ]);
      const report = JSON.parse(output.slice(output.indexOf("{"))) as {
        jobs: Array<{ error: number; write: { io_bytes: number }; read: { io_bytes: number } }>;
      };
      const job = report.jobs[0];
      assert.equal(job?.error, 0, `${name}: fio error`);
      assert.equal(job?.write.io_bytes, 16 * MiB, `${name}: wrote everything`);
      assert.equal(job?.read.io_bytes, 16 * MiB, `${name}: read everything back to verify`);
    }
  });

  test("nbdsh: simple replies, multi-conn visibility, FAST_ZERO refusal, past-end EINVAL", {
    skip: skipWithout("nbdsh"),
  }, async () => {
    const { uri } = freshExport(4 * MiB);
    const slow = freshExport(4 * MiB, { fastZeroes: false });
    const script = `
import errno
h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(${JSON.stringify(uri)})
assert not h.get_structured_replies_negotiated()
h.pwrite(b"\\x5a" * 4096, 4096)
assert h.pread(4096, 4096) == b"\\x5a" * 4096
assert h.pread(8192, 0) == bytes(4096) + b"\\x5a" * 4096
h.cache(65536, 0)
assert h.can_multi_conn() and h.can_fast_zero() and h.can_cache()
h2 = nbd.NBD()
h2.connect_uri(${JSON.stringify(uri)})
assert h2.get_structured_replies_negotiated()
h2.pwrite(b"\\x6b" * 512, 0, nbd.CMD_FLAG_FUA)
assert h.pread(512, 0) == b"\\x6b" * 512
h.set_strict_mode(0)
try:
    h.pread(1024, 4 * 1024 * 1024 - 512)
    raise SystemExit("past-end read succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
assert h.pread(512, 0) == b"\\x6b" * 512
s = nbd.NBD()
s.connect_uri(${JSON.stringify(slow.uri)})
s.pwrite(b"\\x01" * 8192, 0)
try:
    s.zero(8192, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
    raise SystemExit("fast zero succeeded on a slow device")
except nbd.Error as e:
    assert e.errnum == errno.ENOTSUP, e
assert s.pread(8192, 0) == b"\\x01" * 8192
s.zero(8192, 0, nbd.CMD_FLAG_NO_HOLE)
assert s.pread(8192, 0) == bytes(8192)
for x in (h, h2, s):
    x.shutdown()
print("nbdsh-ok")
`;
    const output = await run("nbdsh", ["-c", script]);
    assert.match(output, /nbdsh-ok/);
  });
});
