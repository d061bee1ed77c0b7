/**
 * Goal: the frame decoder turns any byte stream into either the exact frames that were encoded
 * or a clean HesError (HES_PROTOCOL / HES_TOO_LARGE), never another exception, never a frame
 * that was not sent. Method: fast-check properties over random frames, random chunkings,
 * garbage, truncation, bit flips and oversize length fields.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isHesError } from "@hes/base";
import {
  encodeFrame,
  FRAME_HEADER_BYTES,
  type Frame,
  FrameDecoder,
  FrameKind,
  type FrameKind as FrameKindType,
} from "@hes/proto";
import fc from "fast-check";

interface Spec {
  opcode: number;
  requestId: number;
  status: number;
  meta: Uint8Array;
  payload: Uint8Array;
}

const specArb: fc.Arbitrary<Spec> = fc.record({
  opcode: fc.integer({ min: 0, max: 0xffff }),
  requestId: fc.integer({ min: 0, max: 0xffff_ffff }),
  status: fc.constantFrom(0, 1),
  meta: fc.uint8Array({ maxLength: 300 }),
  payload: fc.uint8Array({ maxLength: 9000 }),
});

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

function encode(spec: Spec, kind: FrameKindType = FrameKind.request): Uint8Array {
  return concat(
    encodeFrame(
      { kind, opcode: spec.opcode, requestId: spec.requestId, status: spec.status },
      spec.meta,
      spec.payload,
    ),
  );
}

/** Splits `bytes` at the given cut points. */
function chunk(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.byteLength + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let last = 0;
  for (const point of points) {
    out.push(bytes.slice(last, point));
    last = point;
  }
  out.push(bytes.slice(last));
  return out;
}

function decodeAll(
  chunks: Uint8Array[],
  kind: FrameKindType = FrameKind.request,
): { frames: Frame[]; error: unknown } {
  const decoder = new FrameDecoder({ expectKind: kind });
  const frames: Frame[] = [];
  try {
    for (const c of chunks) decoder.push(c, (f) => frames.push(f));
  } catch (error) {
    return { frames, error };
  }
  return { frames, error: undefined };
}

describe("frame codec properties", () => {
  test("any frames, any chunking: decoded exactly, in order", () => {
    fc.assert(
      fc.property(
        fc.array(specArb, { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (specs, cuts) => {
          const stream = concat(specs.map((s) => encode(s)));
          const { frames, error } = decodeAll(chunk(stream, cuts));
          assert.equal(error, undefined);
          assert.equal(frames.length, specs.length);
          frames.forEach((frame, i) => {
            const spec = specs[i] as Spec;
            assert.equal(frame.opcode, spec.opcode);
            assert.equal(frame.requestId, spec.requestId);
            assert.equal(frame.status, spec.status);
            assert.equal(frame.bodyCorrupt, false);
            assert.deepEqual([...frame.meta], [...spec.meta]);
            assert.deepEqual(Buffer.from(frame.payload), Buffer.from(spec.payload));
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  test("truncated frames yield nothing and no error (the decoder waits for more)", () => {
    fc.assert(
      fc.property(specArb, fc.nat(), (spec, cut) => {
        const bytes = encode(spec);
        const length = cut % bytes.byteLength;
        const { frames, error } = decodeAll([bytes.subarray(0, length)]);
        assert.equal(error, undefined);
        assert.equal(frames.length, 0);
      }),
      { numRuns: 300 },
    );
  });

  test("garbage gives a HesError or waits; it never throws anything else or invents a frame", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 4096 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (garbage, cuts) => {
          const { frames, error } = decodeAll(chunk(garbage, cuts));
          assert.equal(frames.length, 0);
          if (error !== undefined)
            assert.ok(isHesError(error, "HES_PROTOCOL", "HES_TOO_LARGE"), String(error));
        },
      ),
      { numRuns: 500 },
    );
  });

  test("a flipped bit in the header is a protocol error, never a wrong frame", () => {
    fc.assert(
      fc.property(specArb, fc.nat(), fc.integer({ min: 0, max: 7 }), (spec, at, bit) => {
        const bytes = encode(spec);
        const index = at % FRAME_HEADER_BYTES;
        bytes[index] = (bytes[index] as number) ^ (1 << bit);
        const { frames, error } = decodeAll([bytes]);
        assert.equal(frames.length, 0);
        assert.ok(isHesError(error, "HES_PROTOCOL"), String(error));
      }),
      { numRuns: 500 },
    );
  });

  test("a flipped bit in meta or payload marks only that frame corrupt; the next one is intact", () => {
    fc.assert(
      fc.property(
        specArb,
        specArb,
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        (first, second, at, bit) => {
          const bodyBytes = first.meta.byteLength + first.payload.byteLength;
          fc.pre(bodyBytes > 0);
          const bytes = encode(first);
          const index = FRAME_HEADER_BYTES + (at % bodyBytes);
          bytes[index] = (bytes[index] as number) ^ (1 << bit);
          const { frames, error } = decodeAll([bytes, encode(second)]);
          assert.equal(error, undefined);
          assert.equal(frames.length, 2);
          assert.equal(frames[0]?.bodyCorrupt, true);
          assert.equal(frames[1]?.bodyCorrupt, false);
          assert.equal(frames[1]?.requestId, second.requestId);
        },
      ),
      { numRuns: 300 },
    );
  });

  test("an oversize length is refused from the header alone, before any payload arrives", () => {
    const decoder = new FrameDecoder({ expectKind: FrameKind.request, payloadBytesMax: 1024 });
    const bytes = encode({
      opcode: 1,
      requestId: 1,
      status: 0,
      meta: new Uint8Array(0),
      payload: new Uint8Array(2048),
    });
    assert.throws(
      () =>
        decoder.push(bytes.subarray(0, FRAME_HEADER_BYTES), () => assert.fail("no frame expected")),
      (error: unknown) => isHesError(error, "HES_TOO_LARGE"),
    );
    // A failed decoder stays failed.
    assert.throws(
      () => decoder.push(new Uint8Array(1), () => {}),
      (error: unknown) => isHesError(error),
    );
  });

  test("a frame of the wrong kind is a protocol error", () => {
    const bytes = encode(
      { opcode: 1, requestId: 1, status: 0, meta: new Uint8Array(0), payload: new Uint8Array(0) },
      FrameKind.response,
    );
    const { error } = decodeAll([bytes], FrameKind.request);
    assert.ok(isHesError(error, "HES_PROTOCOL"));
  });

  test("encoding refuses out-of-range fields", () => {
    assert.throws(
      () => encodeFrame({ kind: FrameKind.request, opcode: 0x10000, requestId: 1, status: 0 }),
      RangeError,
    );
    assert.throws(
      () => encodeFrame({ kind: FrameKind.request, opcode: 1, requestId: -1, status: 0 }),
      RangeError,
    );
    assert.throws(
      () =>
        encodeFrame(
          { kind: FrameKind.request, opcode: 1, requestId: 1, status: 0 },
          new Uint8Array(70_000),
        ),
      RangeError,
    );
  });
});
