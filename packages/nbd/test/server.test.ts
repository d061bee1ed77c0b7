/**
 * Goal: the server keeps the NBD protocol's promises where real clients never go: bad
 * requests get their error and the connection keeps serving, protocol violations close that
 * connection only, replies come out of order, windows and connection counts are bounded,
 * TLS is enforced, and close drains. Method: a byte-level client of our own (raw-client.ts)
 * against a real server on a unix socket, with gated devices instead of sleeps.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { HesError, RecordingLogger } from "@hes/base";
import { type BlockDevice, MemoryBlockDevice } from "@hes/blockdev";
import { NbdServer, type NbdServerOptions } from "@hes/nbd";
import { FailingDevice, GatedDevice } from "./devices.js";
import { infoData, metaContextData, NBD, RawClient } from "./raw-client.js";

const dir = mkdtempSync(join(tmpdir(), "hes-nbd-server-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let socketCounter = 0;
const MiB = 1024 * 1024;

interface Served {
  readonly server: NbdServer;
  readonly address: { path: string };
  readonly logger: RecordingLogger;
}

async function serve(
  exports: Array<{ name: string; device: BlockDevice; readOnly?: boolean }>,
  options: NbdServerOptions = {},
): Promise<Served> {
  const logger = new RecordingLogger();
  const server = new NbdServer({ logger, ...options });
  for (const entry of exports) server.addExport(entry);
  const address = { path: join(dir, `s${socketCounter++}.sock`) };
  await server.listen(address);
  return { server, address, logger };
}

async function connected(address: { path: string }, options = {}): Promise<RawClient> {
  const client = await RawClient.connect(address);
  await client.handshake(options);
  return client;
}

/** Waits for `condition`, checking every few milliseconds, for at most `boundMs`. */
async function waitFor(condition: () => boolean, what: string, boundMs = 5000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > boundMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const pattern = (length: number, seed: number): Buffer =>
  Buffer.from(Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff));

describe("handshake", () => {
  test("GO reports size, block sizes and flags; multi-conn only when the device allows", async () => {
    const { server, address } = await serve([
      { name: "mem", device: new MemoryBlockDevice({ sizeBytes: 8 * MiB }) },
      { name: "single", device: new FailingDevice(MiB, () => new Error("x")) },
    ]);
    const client = await RawClient.connect(address);
    await client.greet();
    assert.equal(client.handshakeFlags, 3, "fixed newstyle + no zeroes; never oldstyle");
    const replies = await client.option(NBD.OPT_INFO, infoData("mem", [3, 1]));
    const infos = new Map(
      replies.filter((r) => r.type === NBD.REP_INFO).map((r) => [r.data.readUInt16BE(0), r.data]),
    );
    assert.equal(Number(infos.get(0)?.readBigUInt64BE(2)), 8 * MiB);
    const flags = infos.get(0)?.readUInt16BE(10) ?? 0;
    assert.equal(flags & 0x100, 0x100, "CAN_MULTI_CONN for a multi-conn-safe device");
    assert.equal(flags & (1 | 4 | 8 | 32 | 64 | 1024 | 2048), 1 | 4 | 8 | 32 | 64 | 1024 | 2048);
    assert.equal(flags & 2, 0, "not read-only");
    assert.deepEqual(
      [
        infos.get(3)?.readUInt32BE(2),
        infos.get(3)?.readUInt32BE(6),
        infos.get(3)?.readUInt32BE(10),
      ],
      [512, 4096, 32 * MiB],
    );
    assert.equal(infos.get(1)?.subarray(2).toString(), "mem");
    const single = await client.option(NBD.OPT_INFO, infoData("single", []));
    assert.equal((single[0]?.data.readUInt16BE(10) ?? 0) & 0x100, 0, "no multi-conn when unsafe");
    assert.equal(single.at(-1)?.type, NBD.REP_ACK);
    const unknown = await client.option(NBD.OPT_GO, infoData("nope", []));
    assert.equal(unknown[0]?.type, NBD.REP_ERR_UNKNOWN);
    client.destroy();
    await server.close();
  });

  test("LIST, unknown options, malformed options, ABORT", async () => {
    const { server, address } = await serve([
      { name: "a", device: new MemoryBlockDevice({ sizeBytes: MiB }) },
      { name: "b", device: new MemoryBlockDevice({ sizeBytes: MiB }) },
    ]);
    const client = await RawClient.connect(address);
    await client.greet();
    const list = await client.option(NBD.OPT_LIST);
    assert.deepEqual(
      list
        .filter((r) => r.type === NBD.REP_SERVER)
        .map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString()),
      ["a", "b"],
    );
    assert.equal(
      (await client.option(NBD.OPT_LIST, Buffer.from("x")))[0]?.type,
      NBD.REP_ERR_INVALID,
    );
    assert.equal((await client.option(4242))[0]?.type, NBD.REP_ERR_UNSUP);
    assert.equal(
      (await client.option(11))[0]?.type,
      NBD.REP_ERR_UNSUP,
      "extended headers not offered",
    );
    assert.equal(
      (await client.option(NBD.OPT_GO, Buffer.from("00", "hex")))[0]?.type,
      NBD.REP_ERR_INVALID,
    );
    assert.equal(
      (await client.option(NBD.OPT_STARTTLS))[0]?.type,
      NBD.REP_ERR_POLICY,
      "no TLS here",
    );
    assert.equal(
      (await client.option(NBD.OPT_SET_META_CONTEXT, metaContextData("a", ["base:allocation"])))[0]
        ?.type,
      NBD.REP_ERR_INVALID,
      "meta contexts need structured replies first",
    );
    assert.equal((await client.option(NBD.OPT_STRUCTURED_REPLY))[0]?.type, NBD.REP_ACK);
    const listed = await client.option(NBD.OPT_LIST_META_CONTEXT, metaContextData("a", []));
    assert.equal(listed[0]?.type, NBD.REP_META_CONTEXT);
    assert.equal(listed[0]?.data.subarray(4).toString(), "base:allocation");
    const ignored = await client.option(
      NBD.OPT_SET_META_CONTEXT,
      metaContextData("a", ["qemu:dirty-bitmap:x"]),
    );
    assert.deepEqual(
      ignored.map((r) => r.type),
      [NBD.REP_ACK],
      "unknown contexts are ignored",
    );
    assert.equal((await client.option(NBD.OPT_ABORT))[0]?.type, NBD.REP_ACK);
    await client.closed;
    await server.close();
  });

  test("an oversize option is skipped and refused; the handshake goes on", async () => {
    const { server, address } = await serve([
      { name: "", device: new MemoryBlockDevice({ sizeBytes: MiB }) },
    ]);
    const client = await RawClient.connect(address);
    await client.greet();
    assert.equal(
      (await client.option(NBD.OPT_INFO, Buffer.alloc(200_000)))[0]?.type,
      NBD.REP_ERR_TOO_BIG,
    );
    await client.option(NBD.OPT_GO, infoData("", []));
    assert.equal((await client.read(0, 512)).length, 512);
    client.destroy();
    await server.close();
  });

  test("NBD_OPT_EXPORT_NAME, with and without the 124 zero bytes; default export", async () => {
    const { server, address } = await serve([
      { name: "only", device: new MemoryBlockDevice({ sizeBytes: MiB }) },
    ]);
    for (const noZeroes of [true, false]) {
      const client = await connected(address, {
        exportNameOption: true,
        noZeroes,
        structured: false,
      });
      assert.equal(client.sizeBytes, MiB);
      assert.equal(await client.write(0, pattern(512, 1)), 0);
      assert.deepEqual(await client.read(0, 512), pattern(512, 1));
      client.disconnect();
      await client.closed;
    }
    const unknown = await RawClient.connect(address);
    await unknown.greet();
    unknown.sendOption(NBD.OPT_EXPORT_NAME, Buffer.from("missing"));
    await unknown.closed;
    await server.close();
  });

  test("unknown client flags and a bad option magic close that connection only", async () => {
    const { server, address } = await serve([
      { name: "", device: new MemoryBlockDevice({ sizeBytes: MiB }) },
    ]);
    const good = await connected(address);
    const badFlags = await RawClient.connect(address);
    await badFlags.greet(1 | 0x80);
    await badFlags.closed;
    const badMagic = await RawClient.connect(address);
    await badMagic.greet();
    badMagic.socket.write(Buffer.alloc(16, 0x41));
    await badMagic.closed;
    assert.equal(await good.write(0, pattern(4096, 2)), 0);
    assert.equal(server.stats().protocolViolations, 2);
    good.destroy();
    await server.close();
  });

  test("a client that never finishes the handshake is dropped after the timeout", async () => {
    const { server, address, logger } = await serve(
      [{ name: "", device: new MemoryBlockDevice({ sizeBytes: MiB }) }],
      { handshakeTimeoutMs: 50 },
    );
    const client = await RawClient.connect(address);
    await client.closed;
    assert.ok(logger.records.some((r) => r.message === "nbd: handshake timed out"));
    await server.close();
  });
});

describe("transmission errors keep the connection serving", () => {
  test("past-end, misaligned, oversize, unknown: each its error, then the next request works", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: MiB, maxRequestBytes: 64 * 1024 });
    const { server, address } = await serve([{ name: "", device }]);
    for (const structured of [true, false]) {
      const client = await connected(address, { structured });
      const check = async (what: string, errno: number, call: () => Promise<number>) => {
        assert.equal(await call(), errno, what);
        assert.equal(await client.write(4096, pattern(4096, 3)), 0, `${what}: still serving`);
      };
      const readErrno = async (offset: number, length: number, flags = 0) => {
        const cookie = client.request(NBD.CMD_READ, offset, length, { flags });
        const reply = await client.readReply();
        assert.equal(reply.cookie, cookie);
        assert.equal(
          reply.structured,
          structured,
          "READ errors use structured replies when negotiated",
        );
        return reply.errno;
      };
      await check("read past end", NBD.EINVAL, () => readErrno(MiB - 512, 1024));
      await check("read at 2^63", NBD.EINVAL, () => readErrno(2 ** 63, 512));
      await check("read misaligned", NBD.EINVAL, () => readErrno(100, 512));
      await check("read oversize", structured ? NBD.EOVERFLOW : NBD.EINVAL, () =>
        readErrno(0, 128 * 1024),
      );
      await check("write past end (payload consumed)", NBD.ENOSPC, () =>
        client.write(MiB, pattern(512, 4)),
      );
      await check("write misaligned (payload consumed)", NBD.EINVAL, () =>
        client.write(0, pattern(700, 5)),
      );
      await check("write oversize (payload consumed)", NBD.EINVAL, () =>
        client.write(0, pattern(128 * 1024, 6)),
      );
      await check("unknown command", NBD.EINVAL, () => client.call(42, 0, 512));
      await check("unknown flag", NBD.EINVAL, () => client.call(NBD.CMD_FLUSH, 0, 0, 0x4000));
      await check("trim past end", NBD.EINVAL, () => client.call(NBD.CMD_TRIM, MiB - 512, 1024));
      await check("zeroes past end", NBD.ENOSPC, () =>
        client.call(NBD.CMD_WRITE_ZEROES, MiB - 512, 1024),
      );
      assert.ok(pattern(4096, 3).equals(await client.read(4096, 4096)));
      assert.ok(
        (await client.read(0, 4096)).every((b) => b === 0),
        "refused writes changed nothing",
      );
      client.disconnect();
      await client.closed;
    }
    await server.close();
  });

  test("garbage after the handshake closes that connection; another keeps working", async () => {
    const { server, address, logger } = await serve([
      { name: "", device: new MemoryBlockDevice({ sizeBytes: MiB }) },
    ]);
    const victim = await connected(address);
    const bystander = await connected(address);
    victim.socket.write(Buffer.from("this is not an NBD request header at all"));
    await victim.closed;
    assert.equal(await bystander.write(0, pattern(4096, 7)), 0);
    assert.ok(pattern(4096, 7).equals(await bystander.read(0, 4096)));
    assert.ok(
      logger.records.some((r) => r.level === "warn" && r.fields.reason === "bad request magic"),
    );
    bystander.destroy();
    await server.close();
  });

  test("read-only exports refuse changes with EPERM and advertise READ_ONLY", async () => {
    const { server, address } = await serve([
      { name: "", device: new MemoryBlockDevice({ sizeBytes: MiB }), readOnly: true },
    ]);
    const client = await connected(address);
    assert.equal(client.transmissionFlags & 2, 2);
    assert.equal(await client.write(0, pattern(512, 1)), NBD.EPERM);
    assert.equal(await client.call(NBD.CMD_TRIM, 0, 512), NBD.EPERM);
    assert.equal(await client.call(NBD.CMD_WRITE_ZEROES, 0, 512), NBD.EPERM);
    assert.equal(await client.call(NBD.CMD_FLUSH, 0, 0), 0);
    client.destroy();
    await server.close();
  });

  test("device errors reach the client as the mapped errno, with the message", async () => {
    let error: unknown = new Error("x");
    const device = new FailingDevice(MiB, () => error);
    const { server, address, logger } = await serve([{ name: "", device }]);
    const client = await connected(address);
    const table: Array<[unknown, number]> = [
      [new HesError("HES_INVALID_ARGUMENT", "bad"), NBD.EINVAL],
      [new HesError("HES_NO_SPACE", "full"), NBD.ENOSPC],
      [new HesError("HES_FENCED", "fenced"), NBD.EPERM],
      [new HesError("HES_PERMISSION_DENIED", "no"), NBD.EPERM],
      [new HesError("HES_UNSUPPORTED", "no"), NBD.ENOTSUP],
      [new HesError("HES_QUORUM_LOST", "lost"), NBD.EIO],
      [new HesError("HES_CORRUPTION", "crc"), NBD.EIO],
      [new Error("plain"), NBD.EIO],
    ];
    for (const [thrown, errno] of table) {
      error = thrown;
      assert.equal(await client.write(0, pattern(512, 1)), errno);
      const cookie = client.request(NBD.CMD_READ, 0, 512);
      const [chunk] = await client.readStructured();
      assert.equal(chunk?.cookie, cookie);
      assert.equal(chunk?.chunkType, NBD.TYPE_ERROR);
      assert.equal(chunk?.errno, errno);
      const text = chunk?.payload.subarray(6).toString() ?? "";
      assert.ok(text.includes((thrown as Error).message), text);
    }
    assert.ok(
      logger.records.some((r) => r.message === "nbd: device error"),
      "EIO is logged",
    );
    client.destroy();
    await server.close();
  });
});

describe("transmission features", () => {
  test("replies come back out of order, matched by cookie", async () => {
    const inner = new MemoryBlockDevice({ sizeBytes: MiB });
    const device = new GatedDevice(
      inner,
      (operation, offset) => operation === "read" && offset === 0,
    );
    const { server, address } = await serve([{ name: "", device }]);
    const client = await connected(address);
    await inner.write({ offsetBytes: 8192, data: pattern(4096, 9) });
    const slow = client.request(NBD.CMD_READ, 0, 4096);
    const fast = client.request(NBD.CMD_READ, 8192, 4096);
    await device.untilHeld(1);
    const first = await client.readStructured();
    assert.equal(first[0]?.cookie, fast);
    assert.ok(pattern(4096, 9).equals(first[0]?.payload.subarray(8) ?? Buffer.alloc(0)));
    device.open();
    const second = await client.readStructured();
    assert.equal(second[0]?.cookie, slow);
    client.destroy();
    await server.close();
  });

  test("a half-close is answered in full; DISC lets in-flight work finish, then closes", async () => {
    const device = new GatedDevice(
      new MemoryBlockDevice({ sizeBytes: MiB }),
      (op) => op === "write",
    );
    const { server, address } = await serve([{ name: "", device }]);
    const halfClosed = await connected(address);
    const cookies = [0, 1, 2].map((i) =>
      halfClosed.request(NBD.CMD_WRITE, i * 4096, 4096, { payload: pattern(4096, i) }),
    );
    // A truncated header after the requests can never complete: it must not stall the close.
    halfClosed.socket.end(Buffer.from([0x25, 0x60]));
    await device.untilHeld(3);
    device.open();
    const answered = [];
    for (const _ of cookies) answered.push((await halfClosed.readReply()).cookie);
    assert.deepEqual(answered.sort(), cookies);
    await halfClosed.closed;

    const gate = new GatedDevice(new MemoryBlockDevice({ sizeBytes: MiB }), (op) => op === "write");
    server.addExport({ name: "disc", device: gate });
    const client = await connected(address, { exportName: "disc" });
    const cookie = client.request(NBD.CMD_WRITE, 0, 4096, { payload: pattern(4096, 9) });
    client.disconnect();
    client.socket.write(Buffer.alloc(1 << 20, 0x55)); // forbidden after DISC: ignored
    await gate.untilHeld(1);
    gate.open();
    const reply = await client.readReply();
    assert.deepEqual([reply.cookie, reply.errno], [cookie, 0]);
    await client.closed;
    await server.close();
  });

  test("the in-flight window is bounded: the server stops reading past it", async () => {
    const device = new GatedDevice(new MemoryBlockDevice({ sizeBytes: MiB }));
    const { server, address } = await serve([{ name: "", device }], {
      inflightRequestsPerConnectionMax: 4,
    });
    const client = await connected(address);
    const cookies = Array.from({ length: 12 }, (_, i) =>
      client.request(NBD.CMD_WRITE, i * 4096, 4096, { payload: pattern(4096, i) }),
    );
    await device.untilHeld(4);
    // A full round trip on another connection lets the server's event loop run many turns.
    const other = await connected(address, { structured: false });
    other.disconnect();
    await other.closed;
    assert.equal(device.held, 4);
    device.open();
    const seen = new Set<number>();
    for (let i = 0; i < cookies.length; i++) {
      const reply = await client.readReply();
      assert.equal(reply.errno, 0);
      seen.add(reply.cookie);
    }
    assert.deepEqual(
      [...seen].sort((a, b) => a - b),
      cookies,
    );
    assert.equal(device.heldMax, 4);
    for (let i = 0; i < 12; i++)
      assert.ok(pattern(4096, i).equals(await client.read(i * 4096, 4096)));
    client.destroy();
    await server.close();
  });

  test("the in-flight byte window admits one large request at a time", async () => {
    const device = new GatedDevice(
      new MemoryBlockDevice({ sizeBytes: 8 * MiB }),
      (op) => op === "write",
    );
    const { server, address } = await serve([{ name: "", device }], {
      inflightBytesPerConnectionMax: MiB,
    });
    const client = await connected(address);
    for (let i = 0; i < 3; i++)
      client.request(NBD.CMD_WRITE, i * MiB, 768 * 1024, { payload: pattern(768 * 1024, i) });
    await device.untilHeld(1);
    const other = await connected(address, { structured: false });
    other.disconnect();
    await other.closed;
    assert.equal(device.held, 1);
    device.open();
    for (let i = 0; i < 3; i++) assert.equal((await client.readReply()).errno, 0);
    client.destroy();
    await server.close();
  });

  test("sparse READs send holes as OFFSET_HOLE; DF and small reads send one data chunk", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: 4 * MiB });
    await device.write({ offsetBytes: 65536, data: pattern(8192, 1) });
    const { server, address } = await serve([{ name: "", device }]);
    const client = await connected(address);
    const cookie = client.request(NBD.CMD_READ, 0, 256 * 1024);
    const chunks = await client.readStructured();
    assert.deepEqual(
      chunks.map((c) => [c.cookie, c.chunkType, Number(c.payload.readBigUInt64BE(0)), c.done]),
      [
        [cookie, NBD.TYPE_OFFSET_HOLE, 0, false],
        [cookie, NBD.TYPE_OFFSET_DATA, 65536, false],
        [cookie, NBD.TYPE_OFFSET_HOLE, 65536 + 8192, true],
      ],
    );
    assert.equal(chunks[0]?.payload.readUInt32BE(8), 65536);
    assert.ok(pattern(8192, 1).equals(chunks[1]?.payload.subarray(8) ?? Buffer.alloc(0)));
    client.request(NBD.CMD_READ, 0, 256 * 1024, { flags: NBD.FLAG_DF });
    const whole = await client.readStructured();
    assert.deepEqual(
      whole.map((c) => [c.chunkType, c.payload.length]),
      [[NBD.TYPE_OFFSET_DATA, 8 + 256 * 1024]],
    );
    client.destroy();
    await server.close();
  });

  test("block status reports holes, zeros and data; REQ_ONE gives one extent", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: MiB });
    await device.write({ offsetBytes: 0, data: pattern(8192, 1) });
    await device.writeZeroes({ offsetBytes: 8192, lengthBytes: 8192, mayUnmap: false });
    const { server, address } = await serve([{ name: "", device }]);
    const client = await connected(address);
    const status = async (offset: number, length: number, flags = 0) => {
      client.request(NBD.CMD_BLOCK_STATUS, offset, length, { flags });
      const [chunk] = await client.readStructured();
      assert.equal(chunk?.chunkType, NBD.TYPE_BLOCK_STATUS);
      assert.equal(chunk?.payload.readUInt32BE(0), 1, "context id");
      const out: Array<[number, number]> = [];
      for (let at = 4; at < (chunk?.payload.length ?? 0); at += 8) {
        out.push([chunk?.payload.readUInt32BE(at) ?? 0, chunk?.payload.readUInt32BE(at + 4) ?? 0]);
      }
      return out;
    };
    assert.deepEqual(await status(0, MiB), [
      [8192, 0],
      [8192, 2],
      [MiB - 16384, 3],
    ]);
    assert.deepEqual(await status(0, MiB, NBD.FLAG_REQ_ONE), [[8192, 0]]);
    assert.deepEqual(
      await status(1000, 8000),
      [
        [7192, 0],
        [808, 2],
      ],
      "unaligned requests are clipped exactly",
    );
    client.destroy();
    const plain = await connected(address, { metaContext: false });
    assert.equal(await plain.call(NBD.CMD_BLOCK_STATUS, 0, 512), NBD.EINVAL);
    plain.destroy();
    await server.close();
  });

  test("write-zeroes: NO_HOLE provisions, FAST_ZERO refuses slow zeroing with ENOTSUP", async () => {
    const device = new MemoryBlockDevice({ sizeBytes: MiB, fastZeroes: false });
    await device.write({ offsetBytes: 0, data: pattern(65536, 1) });
    const { server, address } = await serve([{ name: "", device }]);
    const client = await connected(address);
    assert.equal(
      await client.call(NBD.CMD_WRITE_ZEROES, 0, 65536, NBD.FLAG_NO_HOLE | NBD.FLAG_FAST_ZERO),
      NBD.ENOTSUP,
    );
    assert.ok(pattern(65536, 1).equals(await client.read(0, 65536)), "nothing changed");
    assert.equal(await client.call(NBD.CMD_WRITE_ZEROES, 0, 32768, NBD.FLAG_NO_HOLE), 0);
    assert.equal(await client.call(NBD.CMD_WRITE_ZEROES, 32768, 32768, NBD.FLAG_FAST_ZERO), 0);
    assert.deepEqual(await device.allocation({ offsetBytes: 0, lengthBytes: 65536 }), [
      { offsetBytes: 0, lengthBytes: 32768, hole: false, zero: true },
      { offsetBytes: 32768, lengthBytes: 32768, hole: true, zero: true },
    ]);
    assert.equal(await client.call(NBD.CMD_TRIM, 0, 8192, NBD.FLAG_FUA), 0);
    assert.equal(await client.call(NBD.CMD_CACHE, 0, 65536), 0);
    assert.equal(await client.call(NBD.CMD_FLUSH, 0, 0), 0);
    assert.equal(device.stats().flushes, 1);
    client.destroy();
    await server.close();
  });
});

describe("limits, TLS policy and shutdown", () => {
  test("connections beyond the limit are refused; freed slots are reused", async () => {
    const { server, address } = await serve(
      [{ name: "", device: new MemoryBlockDevice({ sizeBytes: MiB }) }],
      {
        connectionsMax: 2,
      },
    );
    const a = await connected(address);
    const b = await connected(address);
    const refused = await RawClient.connect(address);
    await refused.closed;
    assert.equal(server.stats().connectionsRefused, 1);
    a.disconnect();
    await a.closed;
    await waitFor(() => server.stats().connections === 1, "the server to release the slot");
    const c = await connected(address);
    assert.equal(await c.write(0, pattern(512, 1)), 0);
    b.destroy();
    c.destroy();
    await server.close();
  });

  test("TCP off loopback without TLS is refused at listen; loopback is allowed", async () => {
    const server = new NbdServer();
    await assert.rejects(
      server.listen({ host: "0.0.0.0", port: 0 }),
      /not a loopback address.*tls/,
    );
    await assert.rejects(server.listen({ host: "192.0.2.1", port: 0 }), RangeError);
    const bound = await server.listen({ host: "127.0.0.1", port: 0 });
    assert.ok("port" in bound && bound.port > 0);
    await server.close();
  });

  test("close drains in-flight requests, answers new ones with ESHUTDOWN, then closes", async () => {
    const device = new GatedDevice(
      new MemoryBlockDevice({ sizeBytes: MiB }),
      (op) => op === "write",
    );
    const { server, address } = await serve([{ name: "", device }]);
    const client = await connected(address);
    const inflight = client.request(NBD.CMD_WRITE, 0, 4096, { payload: pattern(4096, 1) });
    await device.untilHeld(1);
    const closing = server.close({ drainMs: 30_000 });
    const late = client.request(NBD.CMD_READ, 0, 512);
    const lateReply = await client.readReply();
    assert.deepEqual([lateReply.cookie, lateReply.errno], [late, NBD.ESHUTDOWN]);
    device.open();
    const reply = await client.readReply();
    assert.deepEqual([reply.cookie, reply.errno], [inflight, 0], "the in-flight write completed");
    await closing;
    await client.closed;
    assert.equal(server.stats().connections, 0);
  });

  test("close after the drain deadline drops connections with work still held", async () => {
    const device = new GatedDevice(
      new MemoryBlockDevice({ sizeBytes: MiB }),
      (op) => op === "read",
    );
    const { server, address } = await serve([{ name: "", device }]);
    const client = await connected(address);
    client.request(NBD.CMD_READ, 0, 512);
    await device.untilHeld(1);
    await server.close({ drainMs: 10 });
    await client.closed;
    device.open();
  });

  test("removeExport closes its connections and hides it from new clients", async () => {
    const { server, address } = await serve([
      { name: "a", device: new MemoryBlockDevice({ sizeBytes: MiB }) },
      { name: "b", device: new MemoryBlockDevice({ sizeBytes: MiB }) },
    ]);
    const onA = await connected(address, { exportName: "a" });
    const onB = await connected(address, { exportName: "b" });
    await server.removeExport("a");
    await onA.closed;
    assert.equal(await onB.write(0, pattern(512, 1)), 0);
    const again = await RawClient.connect(address);
    await again.greet();
    assert.equal((await again.option(NBD.OPT_GO, infoData("a", [])))[0]?.type, NBD.REP_ERR_UNKNOWN);
    again.destroy();
    onB.destroy();
    await server.close();
  });

  test("addExport validates names and device geometry", () => {
    const server = new NbdServer();
    const device = new MemoryBlockDevice({ sizeBytes: MiB });
    server.addExport({ name: "x", device });
    assert.throws(() => server.addExport({ name: "x", device }), /already exists/);
    assert.throws(() => server.addExport({ name: "a\0b", device }), /NUL/);
    assert.throws(() => server.addExport({ name: "y".repeat(5000), device }), /4096/);
    const odd = { ...device, logicalBlockBytes: 3 } as unknown as BlockDevice;
    assert.throws(() => server.addExport({ name: "odd", device: odd }), /logicalBlockBytes/);
    assert.throws(() => new NbdServer({ connectionsMax: 0 }), /connectionsMax/);
  });
});
