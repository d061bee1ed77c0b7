/**
 * The data-plane frame format (spec: this package's README, "Data-plane framing").
 *
 *   offset size field
 *        0    4 magic "HESF" (bytes 48 45 53 46)
 *        4    1 version (1)
 *        5    1 kind: 1 request, 2 response
 *        6    2 opcode (u16 LE; a response echoes its request's)
 *        8    4 request id (u32 LE; chosen by the client, unique among its in-flight requests)
 *       12    4 status (u32 LE; requests 0; responses 0 = ok, 1 = error with details in meta)
 *       16    4 meta length (u32 LE)
 *       20    4 payload length (u32 LE)
 *       24    4 body checksum: crc32c of the meta bytes followed by the payload bytes (0 if both empty)
 *       28    4 header checksum: crc32c of bytes 0..27
 *   then meta, then payload.
 *
 * A bad magic, version, kind or header checksum, or a length over the connection's bounds, is a
 * protocol violation: the decoder fails and the connection is closed (nothing after it can be
 * trusted). A body (meta or payload) whose checksum fails is delivered with `bodyCorrupt` set:
 * the lengths were intact, so the stream is still in step, and only that request fails
 * (HES_CORRUPTION) while the connection keeps serving.
 */

import { HesError } from "@hes/base";
import { crc32c } from "@node-rs/crc32";
import { FRAME_HEADER_BYTES, FRAME_META_BYTES_MAX, FRAME_PAYLOAD_BYTES_MAX } from "../limits.js";

/** "HESF" read as a little-endian u32. */
export const FRAME_MAGIC = 0x46534548;
export const FRAME_VERSION = 1;

/** Frame kinds. */
export const FrameKind = { request: 1, response: 2 } as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/** Response status values. */
export const FrameStatus = { ok: 0, error: 1 } as const;

/** A decoded frame. `meta` and `payload` may be views into the receive buffers. */
export interface Frame {
  readonly kind: FrameKind;
  readonly opcode: number;
  readonly requestId: number;
  readonly status: number;
  readonly meta: Uint8Array;
  readonly payload: Uint8Array;
  /** Meta or payload failed its checksum: fail this request, keep the connection. */
  readonly bodyCorrupt: boolean;
}

/** The fixed fields of a frame to encode. */
export interface FrameFields {
  readonly kind: FrameKind;
  readonly opcode: number;
  readonly requestId: number;
  readonly status: number;
}

const EMPTY = new Uint8Array(0);

/** Checksum of a frame body: the meta, then the payload parts, back to back. */
export function bodyChecksum(meta: Uint8Array, payload: readonly Uint8Array[]): number {
  let crc = meta.byteLength === 0 ? 0 : crc32c(meta);
  for (const part of payload) if (part.byteLength > 0) crc = crc32c(part, crc);
  return crc;
}

/** Reads a little-endian u32 without allocating a DataView per frame. */
function u32(bytes: Uint8Array, offset: number): number {
  return (
    ((bytes[offset] as number) |
      ((bytes[offset + 1] as number) << 8) |
      ((bytes[offset + 2] as number) << 16) |
      ((bytes[offset + 3] as number) << 24)) >>>
    0
  );
}

/**
 * Encodes a frame as buffers to write back to back: the header with the meta appended, then
 * the payload parts unchanged (never copied). Throws RangeError on out-of-range fields.
 */
export function encodeFrame(
  fields: FrameFields,
  meta: Uint8Array = EMPTY,
  payload: Uint8Array | readonly Uint8Array[] = EMPTY,
): Uint8Array[] {
  const parts = payload instanceof Uint8Array ? [payload] : payload;
  let payloadBytes = 0;
  for (const part of parts) payloadBytes += part.byteLength;
  if (!Number.isInteger(fields.opcode) || fields.opcode < 0 || fields.opcode > 0xffff) {
    throw new RangeError(`frame opcode must be a u16, got ${fields.opcode}`);
  }
  if (
    !Number.isInteger(fields.requestId) ||
    fields.requestId < 0 ||
    fields.requestId > 0xffff_ffff
  ) {
    throw new RangeError(`frame request id must be a u32, got ${fields.requestId}`);
  }
  if (meta.byteLength > FRAME_META_BYTES_MAX) {
    throw new RangeError(`frame meta is ${meta.byteLength} bytes, over ${FRAME_META_BYTES_MAX}`);
  }
  if (payloadBytes > FRAME_PAYLOAD_BYTES_MAX) {
    throw new RangeError(`frame payload is ${payloadBytes} bytes, over ${FRAME_PAYLOAD_BYTES_MAX}`);
  }
  const head = Buffer.allocUnsafe(FRAME_HEADER_BYTES + meta.byteLength);
  head.writeUInt32LE(FRAME_MAGIC, 0);
  head[4] = FRAME_VERSION;
  head[5] = fields.kind;
  head.writeUInt16LE(fields.opcode, 6);
  head.writeUInt32LE(fields.requestId, 8);
  head.writeUInt32LE(fields.status, 12);
  head.writeUInt32LE(meta.byteLength, 16);
  head.writeUInt32LE(payloadBytes, 20);
  head.writeUInt32LE(bodyChecksum(meta, parts), 24);
  head.writeUInt32LE(crc32c(head.subarray(0, 28)), 28);
  head.set(meta, FRAME_HEADER_BYTES);
  const out: Uint8Array[] = [head];
  for (const part of parts) if (part.byteLength > 0) out.push(part);
  return out;
}

/** Bounds one decoder enforces (a connection's limits). */
export interface FrameDecoderLimits {
  readonly metaBytesMax?: number;
  readonly payloadBytesMax?: number;
  /** Only this kind is accepted (a server takes requests, a client responses). */
  readonly expectKind: FrameKind;
}

/**
 * Incremental decoder for one connection. Feed it whatever the socket delivers; it calls back
 * once per complete frame. It buffers at most one frame's bytes beyond what it was fed.
 * After it throws (HES_PROTOCOL or HES_TOO_LARGE) it is dead: close the connection.
 */
export class FrameDecoder {
  private readonly metaBytesMax: number;
  private readonly payloadBytesMax: number;
  private readonly expectKind: FrameKind;
  private chunks: Uint8Array[] = [];
  private head = 0;
  private available = 0;
  private failed: HesError | undefined;

  constructor(limits: FrameDecoderLimits) {
    this.metaBytesMax = limits.metaBytesMax ?? FRAME_META_BYTES_MAX;
    this.payloadBytesMax = limits.payloadBytesMax ?? FRAME_PAYLOAD_BYTES_MAX;
    this.expectKind = limits.expectKind;
    if (
      this.payloadBytesMax > FRAME_PAYLOAD_BYTES_MAX ||
      this.metaBytesMax > FRAME_META_BYTES_MAX
    ) {
      throw new RangeError("decoder limits exceed the protocol's hard bounds");
    }
  }

  /** Bytes received but not yet part of a delivered frame. */
  get bufferedBytes(): number {
    return this.available;
  }

  /** Feeds `chunk`; calls `onFrame` for each complete frame in order. */
  push(chunk: Uint8Array, onFrame: (frame: Frame) => void): void {
    if (this.failed !== undefined) throw this.failed;
    if (chunk.byteLength === 0) return;
    // Plain Uint8Array views: Buffer's subarray does extra work per frame on the hot path.
    this.chunks.push(
      Object.getPrototypeOf(chunk) === Uint8Array.prototype
        ? chunk
        : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength),
    );
    this.available += chunk.byteLength;
    try {
      for (;;) {
        const frame = this.next();
        if (frame === undefined) return;
        onFrame(frame);
      }
    } catch (error) {
      if (error instanceof HesError) this.failed = error;
      throw error;
    }
  }

  private next(): Frame | undefined {
    if (this.available < FRAME_HEADER_BYTES) return undefined;
    const header = this.peek(FRAME_HEADER_BYTES);
    if (crc32c(header.subarray(0, 28)) !== u32(header, 28)) {
      throw new HesError(
        "HES_PROTOCOL",
        u32(header, 0) === FRAME_MAGIC
          ? "frame: header checksum mismatch"
          : "frame: bad magic (not a hes data-plane peer?)",
      );
    }
    if (u32(header, 0) !== FRAME_MAGIC) {
      throw new HesError("HES_PROTOCOL", "frame: bad magic (not a hes data-plane peer?)");
    }
    const version = header[4] as number;
    if (version !== FRAME_VERSION) {
      throw new HesError("HES_PROTOCOL", `frame: unsupported version ${version}`);
    }
    const kind = header[5] as number;
    if (kind !== this.expectKind) {
      throw new HesError(
        "HES_PROTOCOL",
        `frame: kind ${kind} where ${this.expectKind} was expected`,
      );
    }
    const metaBytes = u32(header, 16);
    const payloadBytes = u32(header, 20);
    if (metaBytes > this.metaBytesMax) {
      throw new HesError(
        "HES_TOO_LARGE",
        `frame: meta of ${metaBytes} bytes over ${this.metaBytesMax}`,
      );
    }
    if (payloadBytes > this.payloadBytesMax) {
      throw new HesError(
        "HES_TOO_LARGE",
        `frame: payload of ${payloadBytes} bytes over ${this.payloadBytesMax}`,
      );
    }
    const total = FRAME_HEADER_BYTES + metaBytes + payloadBytes;
    if (this.available < total) return undefined;
    const whole = this.peek(total);
    this.consume(total);
    const bodyStart = FRAME_HEADER_BYTES;
    const payloadStart = bodyStart + metaBytes;
    const body = whole.subarray(bodyStart);
    const bodyCorrupt = (body.byteLength === 0 ? 0 : crc32c(body)) !== u32(header, 24);
    return {
      kind: kind as FrameKind,
      opcode: (header[6] as number) | ((header[7] as number) << 8),
      requestId: u32(header, 8),
      status: u32(header, 12),
      meta: whole.subarray(bodyStart, payloadStart),
      payload: whole.subarray(payloadStart),
      bodyCorrupt,
    };
  }

  /** The next `length` bytes as one contiguous view (copied only when they span chunks). */
  private peek(length: number): Uint8Array {
    const first = this.chunks[0] as Uint8Array;
    if (first.byteLength - this.head >= length) {
      return first.subarray(this.head, this.head + length);
    }
    // Not zero-filled (every byte is copied over below) and not from Node's shared pool.
    const backing = Buffer.allocUnsafeSlow(length);
    const out = new Uint8Array(backing.buffer, backing.byteOffset, length);
    let copied = 0;
    let offset = this.head;
    for (const chunk of this.chunks) {
      const take = Math.min(chunk.byteLength - offset, length - copied);
      out.set(chunk.subarray(offset, offset + take), copied);
      copied += take;
      offset = 0;
      if (copied === length) break;
    }
    // Keep the gathered copy as the new first chunk, so the next peek does not gather again.
    this.replacePrefix(out, length);
    return out;
  }

  private replacePrefix(gathered: Uint8Array, length: number): void {
    let skip = length;
    let offset = this.head;
    while (skip > 0) {
      const chunk = this.chunks[0] as Uint8Array;
      const left = chunk.byteLength - offset;
      if (left <= skip) {
        this.chunks.shift();
        skip -= left;
        offset = 0;
      } else {
        this.chunks[0] = chunk.subarray(offset + skip);
        skip = 0;
        offset = 0;
      }
    }
    this.chunks.unshift(gathered);
    this.head = 0;
  }

  private consume(length: number): void {
    this.available -= length;
    let skip = length;
    while (skip > 0) {
      const chunk = this.chunks[0] as Uint8Array;
      const left = chunk.byteLength - this.head;
      if (left <= skip) {
        this.chunks.shift();
        skip -= left;
        this.head = 0;
      } else {
        this.head += skip;
        skip = 0;
      }
    }
  }
}
