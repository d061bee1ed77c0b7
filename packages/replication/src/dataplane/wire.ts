/**
 * The chunk-replica service's operations on the data-plane framing (`@hes/proto`): opcodes and
 * the binary meta of each request and response (spec in the package README). Pure encoding and
 * decoding; every decoded field is checked here, so a malformed request is refused with
 * HES_INVALID_ARGUMENT naming the field before anything reaches a store.
 *
 * Meta is a sequence of unsigned 64-bit little-endian integers (each must be a safe integer);
 * export and import windows append a piece list. Data travels in the frame payload, never
 * inside the meta.
 */
import { HesError } from "@hes/base";
import type { ChunkExportPiece, ChunkId, ChunkRun, ChunkVersion } from "@hes/extent-store";
import { REPLICA_RUN_WIRE_BYTES, REPLICA_RUNS_MAX } from "./limits.js";

/** Opcodes of the chunk-replica service (0x01xx). */
export const ReplicaOp = {
  write: 0x0101,
  read: 0x0102,
  writeZeroes: 0x0103,
  discard: 0x0104,
  copyRange: 0x0105,
  seal: 0x0106,
  version: 0x0107,
  allocation: 0x0108,
  changedBlocks: 0x0109,
  blockChecksums: 0x010a,
  exportWindow: 0x010b,
  importWindow: 0x010c,
  pinSnapshot: 0x010d,
  releaseSnapshot: 0x010e,
  deleteChunk: 0x010f,
} as const;
export type ReplicaOpName = keyof typeof ReplicaOp;

/** Bits of a request's `flags` field. */
export const ReplicaFlag = {
  /** `snapshotId` is meaningful (read a pinned snapshot). */
  snapshot: 1,
  /** write-zeroes: leave a hole. */
  unmap: 2,
  /** changed-blocks between snapshots has a `toSnapshotId` (else: to the head). */
  toSnapshot: 4,
  /** an import window carries the chunk's version (the last window of a copy). */
  version: 8,
  /** changed-blocks: compare snapshots instead of `sinceSeq`. */
  between: 16,
  /** an import window is conditional: blocks newer than the piece's stay (ImportOptions). */
  keepNewer: 32,
} as const;
const FLAGS_ALL = 63;

/** Fixed request fields per opcode, in wire order (each a u64). */
export const REQUEST_FIELDS = {
  write: ["volumeId", "chunkIndex", "offsetBytes", "epoch", "seq"],
  read: ["volumeId", "chunkIndex", "offsetBytes", "lengthBytes", "epoch", "flags", "snapshotId"],
  writeZeroes: ["volumeId", "chunkIndex", "offsetBytes", "lengthBytes", "epoch", "seq", "flags"],
  discard: ["volumeId", "chunkIndex", "offsetBytes", "lengthBytes", "epoch", "seq"],
  copyRange: [
    "volumeId",
    "chunkIndex",
    "offsetBytes",
    "flags",
    "snapshotId",
    "targetVolumeId",
    "targetChunkIndex",
    "targetOffsetBytes",
    "lengthBytes",
    "epoch",
    "seq",
  ],
  seal: ["volumeId", "chunkIndex", "epoch"],
  version: ["volumeId", "chunkIndex"],
  allocation: ["volumeId", "chunkIndex", "offsetBytes", "lengthBytes", "flags", "snapshotId"],
  changedBlocks: [
    "volumeId",
    "chunkIndex",
    "flags",
    "sinceSeq",
    "snapshotId",
    "fromSnapshotId",
    "toSnapshotId",
  ],
  blockChecksums: ["volumeId", "chunkIndex", "offsetBytes", "lengthBytes", "flags", "snapshotId"],
  exportWindow: [
    "volumeId",
    "chunkIndex",
    "sinceSeq",
    "flags",
    "snapshotId",
    "offsetBytes",
    "lengthBytes",
  ],
  importWindow: [
    "volumeId",
    "chunkIndex",
    "epoch",
    "flags",
    "versionEpoch",
    "versionDurableSeq",
    "pieceCount",
  ],
  pinSnapshot: ["volumeId", "chunkIndex", "snapshotId", "epoch"],
  releaseSnapshot: ["volumeId", "chunkIndex", "snapshotId", "epoch"],
  deleteChunk: ["volumeId", "chunkIndex", "epoch"],
} as const satisfies Record<ReplicaOpName, readonly string[]>;

export type RequestFields<N extends ReplicaOpName> = {
  readonly [K in (typeof REQUEST_FIELDS)[N][number]]: number;
};

const OP_BY_CODE = new Map<number, ReplicaOpName>(
  Object.entries(ReplicaOp).map(([name, code]) => [code, name as ReplicaOpName]),
);

/** The operation an opcode names, or undefined. */
export function opName(opcode: number): ReplicaOpName | undefined {
  return OP_BY_CODE.get(opcode);
}

const TWO_32 = 2 ** 32;

function invalid(message: string): HesError {
  return new HesError("HES_INVALID_ARGUMENT", message);
}

/** Appends u64 values to a byte array (little-endian). */
class U64Writer {
  private readonly view: DataView;
  readonly bytes: Uint8Array;
  private at = 0;
  constructor(count: number) {
    this.bytes = new Uint8Array(count * 8);
    this.view = new DataView(this.bytes.buffer);
  }
  put(value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`wire field must be a safe integer >= 0, got ${value}`);
    }
    this.view.setUint32(this.at, value % TWO_32, true);
    this.view.setUint32(this.at + 4, Math.floor(value / TWO_32), true);
    this.at += 8;
  }
}

/** Reads u64 values, refusing any above 2^53 − 1 (named in the error). */
export class U64Reader {
  private readonly view: DataView;
  private at = 0;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get remaining(): number {
    return (this.bytes.byteLength - this.at) / 8;
  }
  take(field: string): number {
    if (this.at + 8 > this.bytes.byteLength) {
      throw invalid(`${this.what}: meta ends before field ${field}`);
    }
    const lo = this.view.getUint32(this.at, true);
    const hi = this.view.getUint32(this.at + 4, true);
    this.at += 8;
    if (hi >= 2 ** 21) throw invalid(`${this.what}: field ${field} exceeds 2^53 - 1`);
    return hi * TWO_32 + lo;
  }
}

/** Encodes a request's fixed fields (missing fields are 0). */
export function encodeRequest<N extends ReplicaOpName>(
  name: N,
  fields: Partial<RequestFields<N>>,
  extraWords = 0,
): { meta: Uint8Array; writer: (value: number) => void } {
  const names = REQUEST_FIELDS[name] as readonly string[];
  const writer = new U64Writer(names.length + extraWords);
  for (const field of names) writer.put((fields as Record<string, number>)[field] ?? 0);
  return { meta: writer.bytes, writer: (value) => writer.put(value) };
}

/**
 * Decodes a request's fixed fields; with `exact`, the meta must hold nothing else. Unknown flag
 * bits are refused (a newer peer asking for something this one cannot do).
 */
export function decodeRequest<N extends ReplicaOpName>(
  name: N,
  meta: Uint8Array,
  exact = true,
): { fields: RequestFields<N>; rest: U64Reader } {
  const names = REQUEST_FIELDS[name] as readonly string[];
  if (meta.byteLength % 8 !== 0 || (exact && meta.byteLength !== names.length * 8)) {
    throw invalid(`${name}: meta must be ${names.length} u64 fields, got ${meta.byteLength} bytes`);
  }
  const reader = new U64Reader(meta, name);
  const fields: Record<string, number> = {};
  for (const field of names) fields[field] = reader.take(field);
  if (fields.flags !== undefined && (fields.flags & ~FLAGS_ALL) !== 0) {
    throw invalid(`${name}: unknown flags ${fields.flags}`);
  }
  return { fields: fields as RequestFields<N>, rest: reader };
}

/** A reader over u64 words (responses with a trailing piece list). */
export function wordReader(meta: Uint8Array, what: string): U64Reader {
  if (meta.byteLength % 8 !== 0) {
    throw new HesError("HES_PROTOCOL", `${what}: meta is not a whole number of u64 fields`);
  }
  return new U64Reader(meta, what);
}

/** Encodes plain u64 values (responses). */
export function encodeWords(values: readonly number[]): Uint8Array {
  const writer = new U64Writer(values.length);
  for (const value of values) writer.put(value);
  return writer.bytes;
}

/** Decodes exactly `count` u64 values (responses). */
export function decodeWords(meta: Uint8Array, count: number, what: string): number[] {
  if (meta.byteLength !== count * 8) {
    throw new HesError("HES_PROTOCOL", `${what}: response meta must be ${count} u64 fields`);
  }
  const reader = new U64Reader(meta, what);
  return Array.from({ length: count }, (_, i) => reader.take(`#${i}`));
}

/** A version as 3 words: present, epoch, durableSeq. */
export function versionWords(version: ChunkVersion | undefined): number[] {
  return version === undefined ? [0, 0, 0] : [1, version.epoch, version.durableSeq];
}

export function versionFromWords(words: readonly number[]): ChunkVersion | undefined {
  return words[0] === 0 ? undefined : { epoch: words[1] as number, durableSeq: words[2] as number };
}

const STATE_CODES = { data: 0, zero: 1, hole: 2 } as const;
const STATES = ["data", "zero", "hole"] as const;

/** Runs as 3 × u32 each (offset, length, state): chunks are ≤ 1 GiB. */
export function encodeRuns(runs: readonly ChunkRun[]): Uint8Array {
  if (runs.length > REPLICA_RUNS_MAX) throw new RangeError(`more than ${REPLICA_RUNS_MAX} runs`);
  const bytes = new Uint8Array(runs.length * REPLICA_RUN_WIRE_BYTES);
  const view = new DataView(bytes.buffer);
  runs.forEach((run, i) => {
    view.setUint32(i * 12, run.offsetBytes, true);
    view.setUint32(i * 12 + 4, run.lengthBytes, true);
    view.setUint32(i * 12 + 8, STATE_CODES[run.state], true);
  });
  return bytes;
}

export function decodeRuns(payload: Uint8Array): ChunkRun[] {
  if (payload.byteLength % REPLICA_RUN_WIRE_BYTES !== 0) {
    throw new HesError("HES_PROTOCOL", "run list is not a whole number of runs");
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const runs: ChunkRun[] = [];
  for (let at = 0; at < payload.byteLength; at += REPLICA_RUN_WIRE_BYTES) {
    const state = STATES[view.getUint32(at + 8, true)];
    if (state === undefined) throw new HesError("HES_PROTOCOL", "run with an unknown state");
    runs.push({
      offsetBytes: view.getUint32(at, true),
      lengthBytes: view.getUint32(at + 4, true),
      state,
    });
  }
  return runs;
}

/** crc32c values as u32 little-endian. */
export function encodeChecksums(crcs: Uint32Array): Uint8Array {
  const bytes = new Uint8Array(crcs.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < crcs.length; i++) view.setUint32(i * 4, crcs[i] as number, true);
  return bytes;
}

export function decodeChecksums(payload: Uint8Array, count: number): Uint32Array {
  if (payload.byteLength !== count * 4) {
    throw new HesError("HES_PROTOCOL", `expected ${count} checksums, got ${payload.byteLength} B`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return Uint32Array.from({ length: count }, (_, i) => view.getUint32(i * 4, true));
}

type BodyPiece = Exclude<ChunkExportPiece, { kind: "version" }>;
const PIECE_CODES = { data: 1, zero: 2, hole: 3 } as const;
const PIECE_KINDS = [undefined, "data", "zero", "hole"] as const;

/** Words a piece list takes: 4 per piece plus one seq per data block. */
export function pieceWords(pieces: readonly BodyPiece[]): number {
  let words = 0;
  for (const p of pieces) words += 4 + (p.kind === "data" ? p.seqs.length : 0);
  return words;
}

/** Appends pieces (kind, offset, length, seq | per-block seqs) to a writer; data to payload. */
export function writePieces(put: (value: number) => void, pieces: readonly BodyPiece[]): void {
  for (const piece of pieces) {
    put(PIECE_CODES[piece.kind]);
    put(piece.offsetBytes);
    if (piece.kind === "data") {
      put(piece.data.byteLength);
      put(0);
      for (const seq of piece.seqs) put(seq);
    } else {
      put(piece.lengthBytes);
      put(piece.seq);
    }
  }
}

/**
 * Reads `count` pieces from the rest of a meta, slicing data from `payload` in order. The
 * payload must be consumed exactly; every piece is checked for shape (the store checks ranges).
 */
export function readPieces(
  rest: { take(field: string): number; readonly remaining: number },
  count: number,
  payload: Uint8Array,
  blockBytes: number,
): BodyPiece[] {
  const pieces: BodyPiece[] = [];
  let used = 0;
  for (let i = 0; i < count; i++) {
    const kind = PIECE_KINDS[rest.take(`pieces[${i}].kind`)];
    if (kind === undefined) throw invalid(`pieces[${i}].kind is unknown`);
    const offsetBytes = rest.take(`pieces[${i}].offsetBytes`);
    const lengthBytes = rest.take(`pieces[${i}].lengthBytes`);
    const seq = rest.take(`pieces[${i}].seq`);
    if (lengthBytes === 0 || lengthBytes % blockBytes !== 0) {
      throw invalid(`pieces[${i}].lengthBytes must be a positive multiple of ${blockBytes}`);
    }
    if (kind !== "data") {
      pieces.push({ kind, offsetBytes, lengthBytes, seq });
      continue;
    }
    const blocks = lengthBytes / blockBytes;
    if (blocks > rest.remaining) throw invalid(`pieces[${i}].seqs run past the meta`);
    const seqs = new Float64Array(blocks);
    for (let b = 0; b < blocks; b++) seqs[b] = rest.take(`pieces[${i}].seqs[${b}]`);
    if (used + lengthBytes > payload.byteLength) {
      throw invalid(`pieces[${i}] runs past the payload (${payload.byteLength} bytes)`);
    }
    pieces.push({ kind, offsetBytes, data: payload.subarray(used, used + lengthBytes), seqs });
    used += lengthBytes;
  }
  if (rest.remaining !== 0) throw invalid("meta holds more than the piece list");
  if (used !== payload.byteLength) {
    throw invalid(`payload holds ${payload.byteLength - used} bytes no piece refers to`);
  }
  return pieces;
}

/** The chunk a request names. */
export function chunkOf(fields: { volumeId: number; chunkIndex: number }): ChunkId {
  return { volumeId: fields.volumeId, chunkIndex: fields.chunkIndex };
}
