/**
 * Encoding and decoding of NBD wire structures. Pure functions over Buffers: no sockets, no
 * state, so every layout is unit-tested on its own. Integers are big-endian (network order).
 */
import {
  CMD_READ,
  EXPORT_NAME_PADDING_BYTES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT_HIGH,
  IHAVEOPT_LOW,
  INFO_BLOCK_SIZE,
  INFO_EXPORT,
  NBDMAGIC_HIGH,
  NBDMAGIC_LOW,
  OPTION_REPLY_HEADER_BYTES,
  OPTION_REPLY_MAGIC_HIGH,
  OPTION_REPLY_MAGIC_LOW,
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_ERROR,
  REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_BYTES,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_MAGIC,
} from "./protocol.js";

const TWO_POW_32 = 2 ** 32;
/** High halves above this make a u64 larger than Number.MAX_SAFE_INTEGER. */
const SAFE_HIGH_MAX = 0x1fffff;

/** Writes a safe non-negative integer as a u64. */
export function writeU64(buffer: Buffer, value: number, at: number): void {
  buffer.writeUInt32BE(Math.floor(value / TWO_POW_32), at);
  buffer.writeUInt32BE(value >>> 0, at + 4);
}

/** Reads a u64; values beyond Number.MAX_SAFE_INTEGER come back as Infinity (past any end). */
export function readU64(buffer: Buffer, at: number): number {
  const high = buffer.readUInt32BE(at);
  if (high > SAFE_HIGH_MAX) return Number.POSITIVE_INFINITY;
  return high * TWO_POW_32 + buffer.readUInt32BE(at + 4);
}

/** The server's first 18 bytes: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(): Buffer {
  const out = Buffer.allocUnsafe(18);
  out.writeUInt32BE(NBDMAGIC_HIGH, 0);
  out.writeUInt32BE(NBDMAGIC_LOW, 4);
  out.writeUInt32BE(IHAVEOPT_HIGH, 8);
  out.writeUInt32BE(IHAVEOPT_LOW, 12);
  out.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  return out;
}

/** True when 8 bytes at `at` are IHAVEOPT. */
export function isOptionMagic(buffer: Buffer, at: number): boolean {
  return buffer.readUInt32BE(at) === IHAVEOPT_HIGH && buffer.readUInt32BE(at + 4) === IHAVEOPT_LOW;
}

/** One option reply: header, then `data`. */
export function encodeOptionReply(option: number, type: number, data?: Uint8Array): Buffer {
  const dataBytes = data?.byteLength ?? 0;
  const out = Buffer.allocUnsafe(OPTION_REPLY_HEADER_BYTES + dataBytes);
  out.writeUInt32BE(OPTION_REPLY_MAGIC_HIGH, 0);
  out.writeUInt32BE(OPTION_REPLY_MAGIC_LOW, 4);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(type >>> 0, 12);
  out.writeUInt32BE(dataBytes, 16);
  if (data !== undefined) out.set(data, OPTION_REPLY_HEADER_BYTES);
  return out;
}

/** NBD_INFO_EXPORT: size and transmission flags. */
export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const out = Buffer.allocUnsafe(12);
  out.writeUInt16BE(INFO_EXPORT, 0);
  writeU64(out, sizeBytes, 2);
  out.writeUInt16BE(transmissionFlags, 10);
  return out;
}

/** NBD_INFO_BLOCK_SIZE: minimum, preferred and maximum payload. */
export function encodeInfoBlockSize(
  minimumBytes: number,
  preferredBytes: number,
  maximumPayloadBytes: number,
): Buffer {
  const out = Buffer.allocUnsafe(14);
  out.writeUInt16BE(INFO_BLOCK_SIZE, 0);
  out.writeUInt32BE(minimumBytes, 2);
  out.writeUInt32BE(preferredBytes, 6);
  out.writeUInt32BE(maximumPayloadBytes, 10);
  return out;
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION: a type followed by a string. */
export function encodeInfoString(infoType: number, text: string): Buffer {
  const body = Buffer.from(text, "utf8");
  const out = Buffer.allocUnsafe(2 + body.length);
  out.writeUInt16BE(infoType, 0);
  body.copy(out, 2);
  return out;
}

/** NBD_REP_SERVER data: name length, name, then an optional human-readable description. */
export function encodeServerReply(name: string, description: string): Buffer {
  const nameBytes = Buffer.from(name, "utf8");
  const out = Buffer.allocUnsafe(4 + nameBytes.length + Buffer.byteLength(description));
  out.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(out, 4);
  out.write(description, 4 + nameBytes.length, "utf8");
  return out;
}

/** NBD_REP_META_CONTEXT data: context id and name. */
export function encodeMetaContextReply(contextId: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, "utf8");
  const out = Buffer.allocUnsafe(4 + nameBytes.length);
  out.writeUInt32BE(contextId, 0);
  nameBytes.copy(out, 4);
  return out;
}

/** The reply to NBD_OPT_EXPORT_NAME: size, flags and (unless NO_ZEROES) 124 zero bytes. */
export function encodeExportNameReply(
  sizeBytes: number,
  transmissionFlags: number,
  noZeroes: boolean,
): Buffer {
  const out = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PADDING_BYTES));
  writeU64(out, sizeBytes, 0);
  out.writeUInt16BE(transmissionFlags, 8);
  return out;
}

/** A request header, as received. */
export interface RequestHeader {
  readonly flags: number;
  readonly type: number;
  /** The client's cookie, kept as two halves and echoed verbatim. */
  readonly cookieHigh: number;
  readonly cookieLow: number;
  /** Infinity when the u64 offset is beyond exact integers (then it is past any end). */
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** Decodes a 28-byte request header; undefined when the magic is wrong (a violation). */
export function decodeRequestHeader(buffer: Buffer, at = 0): RequestHeader | undefined {
  if (buffer.readUInt32BE(at) !== REQUEST_MAGIC) return undefined;
  return {
    flags: buffer.readUInt16BE(at + 4),
    type: buffer.readUInt16BE(at + 6),
    cookieHigh: buffer.readUInt32BE(at + 8),
    cookieLow: buffer.readUInt32BE(at + 12),
    offsetBytes: readU64(buffer, at + 16),
    lengthBytes: buffer.readUInt32BE(at + 24),
  };
}

/** Encodes a request header (for clients and tests). */
export function encodeRequestHeader(
  request: Omit<RequestHeader, "cookieHigh" | "cookieLow"> & { cookie: number },
): Buffer {
  const out = Buffer.allocUnsafe(28);
  out.writeUInt32BE(REQUEST_MAGIC, 0);
  out.writeUInt16BE(request.flags, 4);
  out.writeUInt16BE(request.type ?? CMD_READ, 6);
  writeU64(out, request.cookie, 8);
  writeU64(out, request.offsetBytes, 16);
  out.writeUInt32BE(request.lengthBytes, 24);
  return out;
}

/** A simple reply header (followed by the data of a successful simple READ). */
export function encodeSimpleReply(errno: number, header: RequestHeader): Buffer {
  const out = Buffer.allocUnsafe(SIMPLE_REPLY_BYTES);
  out.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(errno, 4);
  out.writeUInt32BE(header.cookieHigh, 8);
  out.writeUInt32BE(header.cookieLow, 12);
  return out;
}

function structuredHeader(
  out: Buffer,
  header: RequestHeader,
  done: boolean,
  type: number,
  payloadBytes: number,
): void {
  out.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(done ? REPLY_FLAG_DONE : 0, 4);
  out.writeUInt16BE(type, 6);
  out.writeUInt32BE(header.cookieHigh, 8);
  out.writeUInt32BE(header.cookieLow, 12);
  out.writeUInt32BE(payloadBytes, 16);
}

/** The 28 bytes before an OFFSET_DATA chunk's data: chunk header and offset. */
export function encodeOffsetDataHeader(
  header: RequestHeader,
  offsetBytes: number,
  dataBytes: number,
  done: boolean,
): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 8);
  structuredHeader(out, header, done, REPLY_TYPE_OFFSET_DATA, 8 + dataBytes);
  writeU64(out, offsetBytes, STRUCTURED_REPLY_HEADER_BYTES);
  return out;
}

/** An OFFSET_HOLE chunk: `lengthBytes` of zeros at `offsetBytes`. */
export function encodeOffsetHole(
  header: RequestHeader,
  offsetBytes: number,
  lengthBytes: number,
  done: boolean,
): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 12);
  structuredHeader(out, header, done, REPLY_TYPE_OFFSET_HOLE, 12);
  writeU64(out, offsetBytes, STRUCTURED_REPLY_HEADER_BYTES);
  out.writeUInt32BE(lengthBytes, STRUCTURED_REPLY_HEADER_BYTES + 8);
  return out;
}

/** The final NONE chunk of a structured reply. */
export function encodeStructuredDone(header: RequestHeader): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
  structuredHeader(out, header, true, REPLY_TYPE_NONE, 0);
  return out;
}

/** One block-status descriptor. */
export interface BlockStatusDescriptor {
  readonly lengthBytes: number;
  readonly flags: number;
}

/** A BLOCK_STATUS chunk (always final here: one context per reply). */
export function encodeBlockStatus(
  header: RequestHeader,
  contextId: number,
  descriptors: readonly BlockStatusDescriptor[],
): Buffer {
  const payloadBytes = 4 + 8 * descriptors.length;
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
  structuredHeader(out, header, true, REPLY_TYPE_BLOCK_STATUS, payloadBytes);
  let at = STRUCTURED_REPLY_HEADER_BYTES;
  out.writeUInt32BE(contextId, at);
  at += 4;
  for (const descriptor of descriptors) {
    out.writeUInt32BE(descriptor.lengthBytes, at);
    out.writeUInt32BE(descriptor.flags, at + 4);
    at += 8;
  }
  return out;
}

/** A final ERROR chunk with a human-readable message (truncated to `messageBytesMax`). */
export function encodeStructuredError(
  header: RequestHeader,
  errno: number,
  message: string,
  messageBytesMax: number,
): Buffer {
  let text = Buffer.from(message, "utf8");
  if (text.length > messageBytesMax) text = text.subarray(0, messageBytesMax);
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 6 + text.length);
  structuredHeader(out, header, true, REPLY_TYPE_ERROR, 6 + text.length);
  out.writeUInt32BE(errno, STRUCTURED_REPLY_HEADER_BYTES);
  out.writeUInt16BE(text.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  text.copy(out, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return out;
}

/** The data of NBD_OPT_INFO / NBD_OPT_GO. */
export interface InfoRequest {
  readonly name: string;
  readonly infoTypes: readonly number[];
}

/** Parses NBD_OPT_INFO / NBD_OPT_GO data; undefined when malformed (NBD_REP_ERR_INVALID). */
export function parseInfoRequest(data: Buffer): InfoRequest | undefined {
  if (data.length < 6) return undefined;
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 6) return undefined;
  const name = decodeString(data.subarray(4, 4 + nameBytes));
  if (name === undefined) return undefined;
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 6 + nameBytes + 2 * count) return undefined;
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(data.readUInt16BE(6 + nameBytes + 2 * i));
  return { name, infoTypes };
}

/** The data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export interface MetaContextRequest {
  readonly name: string;
  readonly queries: readonly string[];
}

/** Parses meta-context option data; undefined when malformed (NBD_REP_ERR_INVALID). */
export function parseMetaContextRequest(data: Buffer): MetaContextRequest | undefined {
  if (data.length < 8) return undefined;
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 8) return undefined;
  const name = decodeString(data.subarray(4, 4 + nameBytes));
  if (name === undefined) return undefined;
  let at = 4 + nameBytes;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (data.length - at < 4) return undefined;
    const queryBytes = data.readUInt32BE(at);
    at += 4;
    if (queryBytes > data.length - at) return undefined;
    const query = decodeString(data.subarray(at, at + queryBytes));
    if (query === undefined) return undefined;
    queries.push(query);
    at += queryBytes;
  }
  return at === data.length ? { name, queries } : undefined;
}

/** Decodes a protocol string: valid UTF-8 without NUL, else undefined. */
export function decodeString(bytes: Buffer): string | undefined {
  if (bytes.includes(0)) return undefined;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}
