/**
 * Goal: pin the pure parts of the NBD server to the protocol text: wire layouts, the error
 * each bad request gets, the device-error → errno table, sparse-read planning and
 * block-status descriptors. Method: table tests with literal expected bytes and values.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HES_ERROR_CODES, HesError } from "@hes/base";
import {
  decodeRequestHeader,
  encodeBlockStatus,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeOptionReply,
  encodeRequestHeader,
  encodeSimpleReply,
  encodeStructuredError,
  parseInfoRequest,
  parseMetaContextRequest,
  readU64,
  writeU64,
} from "../src/codec.js";
import { nbdErrnoOf } from "../src/errno.js";
import {
  blockStatusDescriptors,
  checkRequest,
  planSparseRead,
  type TransmissionContext,
} from "../src/requests.js";

const hex = (b: Buffer): string => b.toString("hex");
const header = decodeRequestHeader(
  encodeRequestHeader({ flags: 0, type: 0, cookie: 0x0102030405, offsetBytes: 0, lengthBytes: 0 }),
);
assert.ok(header !== undefined);

describe("wire layouts", () => {
  test("greeting: NBDMAGIC IHAVEOPT, fixed newstyle + no zeroes", () => {
    assert.equal(hex(encodeGreeting()), "4e42444d4147494349484156454f50540003");
  });

  test("u64 round trip, and values past 2^53 read as Infinity", () => {
    const b = Buffer.alloc(8);
    writeU64(b, 2 ** 40 + 7, 0);
    assert.equal(hex(b), "0000010000000007");
    assert.equal(readU64(b, 0), 2 ** 40 + 7);
    assert.equal(readU64(Buffer.from("ffffffffffffffff", "hex"), 0), Number.POSITIVE_INFINITY);
  });

  test("option reply, INFO_EXPORT, INFO_BLOCK_SIZE, EXPORT_NAME reply", () => {
    assert.equal(
      hex(encodeOptionReply(7, 0x80000001, Buffer.from("x"))),
      "0003e889045565a9000000078000000100000001" + "78",
    );
    assert.equal(
      hex(encodeInfoExport(2 ** 32 + 512, 0x0d4d)),
      "0000" + "0000000100000200" + "0d4d",
    );
    assert.equal(
      hex(encodeInfoBlockSize(512, 4096, 32 << 20)),
      "0003" + "00000200" + "00001000" + "02000000",
    );
    assert.equal(encodeExportNameReply(1024, 1, false).length, 10 + 124);
    assert.equal(hex(encodeExportNameReply(1024, 1, true)), "00000000000004000001");
  });

  test("request header decode; bad magic is undefined", () => {
    const raw = encodeRequestHeader({
      flags: 3,
      type: 6,
      cookie: 9,
      offsetBytes: 4096,
      lengthBytes: 512,
    });
    assert.deepEqual(decodeRequestHeader(raw), {
      flags: 3,
      type: 6,
      cookieHigh: 0,
      cookieLow: 9,
      offsetBytes: 4096,
      lengthBytes: 512,
    });
    raw[0] = 0;
    assert.equal(decodeRequestHeader(raw), undefined);
  });

  test("simple and structured replies echo the cookie", () => {
    assert.equal(hex(encodeSimpleReply(22, header)), "67446698" + "00000016" + "0000000102030405");
    assert.equal(
      hex(encodeOffsetDataHeader(header, 4096, 512, true)),
      "668e33ef" + "0001" + "0001" + "0000000102030405" + "00000208" + "0000000000001000",
    );
    assert.equal(
      hex(encodeOffsetHole(header, 8192, 65536, false)),
      "668e33ef" +
        "0000" +
        "0002" +
        "0000000102030405" +
        "0000000c" +
        "0000000000002000" +
        "00010000",
    );
    assert.equal(
      hex(encodeBlockStatus(header, 1, [{ lengthBytes: 4096, flags: 3 }])),
      "668e33ef" +
        "0001" +
        "0005" +
        "0000000102030405" +
        "0000000c" +
        "00000001" +
        "00001000" +
        "00000003",
    );
    const error = encodeStructuredError(header, 22, "abcdef", 3);
    assert.equal(
      hex(error),
      "668e33ef" +
        "0001" +
        "8001" +
        "0000000102030405" +
        "00000009" +
        "00000016" +
        "0003" +
        "616263",
    );
  });

  test("INFO/GO and meta-context option data parse, malformed data is refused", () => {
    const go = Buffer.from("00000003" + "6d656d" + "0002" + "0003" + "0001", "hex");
    assert.deepEqual(parseInfoRequest(go), { name: "mem", infoTypes: [3, 1] });
    assert.equal(parseInfoRequest(go.subarray(0, go.length - 1)), undefined);
    assert.equal(parseInfoRequest(Buffer.from("000000ff0000", "hex")), undefined);
    const meta = Buffer.concat([
      Buffer.from("00000000" + "00000001" + "0000000f", "hex"),
      Buffer.from("base:allocation"),
    ]);
    assert.deepEqual(parseMetaContextRequest(meta), { name: "", queries: ["base:allocation"] });
    assert.equal(parseMetaContextRequest(meta.subarray(0, 12)), undefined);
    assert.equal(parseMetaContextRequest(Buffer.from("0000000200ff0000000000", "hex")), undefined);
  });
});

describe("request checks (proto.md error values)", () => {
  const context: TransmissionContext = {
    sizeBytes: 1 << 20,
    minimumBlockBytes: 512,
    maximumPayloadBytes: 65536,
    readOnly: false,
    structuredReplies: true,
    blockStatus: true,
  };
  const req = (type: number, offsetBytes: number, lengthBytes: number, flags = 0) => ({
    type,
    flags,
    offsetBytes,
    lengthBytes,
    cookieHigh: 0,
    cookieLow: 1,
  });
  const cases: Array<
    [string, ReturnType<typeof req>, Partial<TransmissionContext>, number | undefined]
  > = [
    ["read ok", req(0, 0, 4096), {}, undefined],
    ["read past end", req(0, (1 << 20) - 512, 1024), {}, 22],
    ["read offset past 2^53", req(0, Number.POSITIVE_INFINITY, 512), {}, 22],
    ["read misaligned", req(0, 100, 512), {}, 22],
    ["read oversize, structured", req(0, 0, 131072), {}, 75],
    ["read oversize, simple", req(0, 0, 131072), { structuredReplies: false }, 22],
    ["read with DF", req(0, 0, 512, 4), {}, undefined],
    ["read with DF, simple replies", req(0, 0, 512, 4), { structuredReplies: false }, 22],
    ["write past end", req(1, 1 << 20, 512), {}, 28],
    ["write oversize", req(1, 0, 131072), {}, 22],
    ["write read-only", req(1, 0, 512), { readOnly: true }, 1],
    ["write FUA", req(1, 0, 512, 1), {}, undefined],
    ["write with NO_HOLE flag", req(1, 0, 512, 2), {}, 22],
    ["trim read-only", req(4, 0, 512), { readOnly: true }, 1],
    ["trim past end", req(4, 0, (1 << 20) + 512), {}, 22],
    ["trim larger than a payload is fine", req(4, 0, 1 << 20), {}, undefined],
    ["zeroes past end", req(6, 512, 1 << 20), {}, 28],
    ["zeroes NO_HOLE|FAST_ZERO|FUA", req(6, 0, 4096, 2 | 16 | 1), {}, undefined],
    ["flush", req(3, 0, 0), {}, undefined],
    ["flush with a range", req(3, 0, 512), {}, 22],
    ["cache", req(5, 0, 4096), {}, undefined],
    ["block status unaligned is fine", req(7, 100, 1000), {}, undefined],
    ["block status REQ_ONE", req(7, 0, 1000, 8), {}, undefined],
    ["block status without context", req(7, 0, 512), { blockStatus: false }, 22],
    ["block status past end", req(7, 0, (1 << 20) + 1), {}, 22],
    ["block status empty", req(7, 0, 0), {}, 22],
    ["unknown command", req(42, 0, 0), {}, 22],
    ["unknown flag", req(0, 0, 512, 0x8000), {}, 22],
  ];
  for (const [name, request, overrides, errno] of cases) {
    test(name, () => {
      assert.equal(checkRequest(request, { ...context, ...overrides })?.errno, errno);
    });
  }
});

describe("device errors → NBD errno", () => {
  const expected: Record<string, number> = {
    HES_INVALID_ARGUMENT: 22,
    HES_NO_SPACE: 28,
    HES_FENCED: 1,
    HES_PERMISSION_DENIED: 1,
    HES_UNSUPPORTED: 95,
  };
  test("every stable code maps once: the five listed, everything else EIO", () => {
    for (const code of HES_ERROR_CODES) {
      assert.equal(nbdErrnoOf(new HesError(code, "x")), expected[code] ?? 5, code);
    }
  });
  test("argument errors are EINVAL, anything else EIO", () => {
    assert.equal(nbdErrnoOf(new RangeError("offsetBytes")), 22);
    assert.equal(nbdErrnoOf(new TypeError("data")), 22);
    assert.equal(nbdErrnoOf(new Error("boom")), 5);
    assert.equal(nbdErrnoOf("a string"), 5);
  });
});

describe("sparse reads and block status", () => {
  const ext = (offsetBytes: number, lengthBytes: number, hole: boolean, zero: boolean) => ({
    offsetBytes,
    lengthBytes,
    hole,
    zero,
  });
  test("zero extents become holes, short zero runs stay data, neighbours merge", () => {
    const pieces = planSparseRead(
      0,
      65536,
      [
        ext(0, 4096, false, false),
        ext(4096, 512, true, true),
        ext(4608, 3584, false, false),
        ext(8192, 57344, true, true),
      ],
      4096,
    );
    assert.deepEqual(pieces, [
      { hole: false, offsetBytes: 0, lengthBytes: 8192 },
      { hole: true, offsetBytes: 8192, lengthBytes: 57344 },
    ]);
  });
  test("a map that does not cover the read is not trusted", () => {
    const whole = [{ hole: false, offsetBytes: 0, lengthBytes: 8192 }];
    assert.deepEqual(planSparseRead(0, 8192, [ext(0, 4096, true, true)], 512), whole);
    assert.deepEqual(planSparseRead(0, 8192, [ext(512, 7680, true, true)], 512), whole);
    assert.deepEqual(planSparseRead(0, 8192, [], 512), whole);
  });
  test("descriptors start at the request, clip to its length, merge, and honour REQ_ONE", () => {
    const map = [
      ext(0, 4096, false, false),
      ext(4096, 4096, false, false),
      ext(8192, 8192, true, true),
    ];
    assert.deepEqual(blockStatusDescriptors(1000, 10000, map, false, 100), [
      { lengthBytes: 7192, flags: 0 },
      { lengthBytes: 2808, flags: 3 },
    ]);
    assert.deepEqual(blockStatusDescriptors(1000, 10000, map, true, 100), [
      { lengthBytes: 7192, flags: 0 },
    ]);
    assert.deepEqual(blockStatusDescriptors(0, 16384, map, false, 1), [
      { lengthBytes: 8192, flags: 0 },
    ]);
    assert.deepEqual(
      blockStatusDescriptors(
        0,
        16384,
        [ext(0, 4096, false, true), ext(8192, 4096, true, true)],
        false,
        9,
      ),
      [{ lengthBytes: 4096, flags: 2 }],
    );
  });
});
