/**
 * The on-disk format (FORMAT.md, version 1), pure: encoding and decoding of the superblock, the
 * batch header and its records. No IO here; every decoder checks what it reads and reports a
 * problem as a value (an `invalid` string) so replay can tell a torn tail from corruption.
 */
import { crc32c } from "@node-rs/crc32";
import {
  BATCH_ENTRIES_MAX,
  BATCH_HEADER_BYTES_MAX,
  BLOCK_SIZE_BYTES,
  CLUSTER_ID_BYTES_MAX,
} from "./limits.js";

/** The format version this build writes and the newest it reads. */
export const FORMAT_VERSION = 1;

const SUPERBLOCK_MAGIC = "HESXSTOR";
const BATCH_MAGIC = 0x42534548; // "HESB" little-endian
const TWO_32 = 0x1_0000_0000;

/** Fields of the superblock (two copies, at byte 0 and 4096). */
export interface Superblock {
  readonly formatVersion: number;
  /** 32 lowercase hex digits (a UUID without dashes). */
  readonly diskId: string;
  readonly clusterId: string;
  readonly segmentSizeBytes: number;
  readonly segmentCount: number;
  readonly segmentsStartBytes: number;
  readonly chunkSizeBytes: number;
  readonly createdWallMs: number;
}

/** Result of decoding a superblock copy. */
export type SuperblockDecoded =
  | { readonly ok: true; readonly superblock: Superblock }
  | { readonly ok: false; readonly reason: "no-magic" | "bad-checksum" | "newer" | "invalid" };

function setU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value >>> 0, true);
  view.setUint32(offset + 4, Math.floor(value / TWO_32), true);
}

/** Reads a u64 that must be a safe integer; NaN when it is not (the caller rejects it). */
function getU64(view: DataView, offset: number): number {
  const high = view.getUint32(offset + 4, true);
  if (high >= 0x20_0000) return Number.NaN;
  return high * TWO_32 + view.getUint32(offset, true);
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Disk id (hex) to its 16 bytes. */
export function diskIdBytes(diskId: string): Uint8Array {
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i++) bytes[i] = Number.parseInt(diskId.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

/** The seed for every header checksum: records of another disk (or forged ones) never verify. */
export function headerCrcSeed(diskId: string): number {
  return crc32c(diskIdBytes(diskId));
}

/** Encodes a superblock into one 4 KiB block. */
export function encodeSuperblock(superblock: Superblock): Uint8Array {
  const block = new Uint8Array(BLOCK_SIZE_BYTES);
  const view = viewOf(block);
  block.set(new TextEncoder().encode(SUPERBLOCK_MAGIC), 0);
  view.setUint32(8, superblock.formatVersion, true);
  view.setUint32(12, BLOCK_SIZE_BYTES, true);
  block.set(diskIdBytes(superblock.diskId), 16);
  const cluster = new TextEncoder().encode(superblock.clusterId);
  view.setUint32(32, cluster.byteLength, true);
  block.set(cluster, 36);
  view.setUint32(100, superblock.segmentSizeBytes, true);
  view.setUint32(104, superblock.segmentCount, true);
  view.setUint32(108, superblock.segmentsStartBytes, true);
  view.setUint32(112, superblock.chunkSizeBytes, true);
  setU64(view, 116, superblock.createdWallMs);
  view.setUint32(BLOCK_SIZE_BYTES - 4, crc32c(block.subarray(0, BLOCK_SIZE_BYTES - 4)), true);
  return block;
}

/** Decodes one superblock copy, checking magic, checksum and version. */
export function decodeSuperblock(block: Uint8Array): SuperblockDecoded {
  const magic = new TextDecoder().decode(block.subarray(0, 8));
  if (magic !== SUPERBLOCK_MAGIC) return { ok: false, reason: "no-magic" };
  const view = viewOf(block);
  const stored = view.getUint32(BLOCK_SIZE_BYTES - 4, true);
  if (crc32c(block.subarray(0, BLOCK_SIZE_BYTES - 4)) !== stored) {
    return { ok: false, reason: "bad-checksum" };
  }
  const formatVersion = view.getUint32(8, true);
  if (formatVersion > FORMAT_VERSION) return { ok: false, reason: "newer" };
  const clusterLength = view.getUint32(32, true);
  if (formatVersion < 1 || clusterLength > CLUSTER_ID_BYTES_MAX) {
    return { ok: false, reason: "invalid" };
  }
  if (view.getUint32(12, true) !== BLOCK_SIZE_BYTES) return { ok: false, reason: "invalid" };
  let diskId = "";
  for (const byte of block.subarray(16, 32)) diskId += byte.toString(16).padStart(2, "0");
  return {
    ok: true,
    superblock: {
      formatVersion,
      diskId,
      clusterId: new TextDecoder().decode(block.subarray(36, 36 + clusterLength)),
      segmentSizeBytes: view.getUint32(100, true),
      segmentCount: view.getUint32(104, true),
      segmentsStartBytes: view.getUint32(108, true),
      chunkSizeBytes: view.getUint32(112, true),
      createdWallMs: getU64(view, 116),
    },
  };
}

/** Which version a superblock with a newer format claims (for the error message). */
export function superblockVersion(block: Uint8Array): number {
  return viewOf(block).getUint32(8, true);
}

// ---------------------------------------------------------------------------------------------
// Records

/** Record kinds as stored (a byte). */
export const RECORD_KIND = {
  write: 1,
  zero: 2,
  discard: 3,
  place: 4,
  seal: 5,
  delete: 6,
  pin: 7,
  unpin: 8,
  version: 9,
  end: 10,
} as const;

/** Data written by a client: `blockCount` blocks at `dataIndex` in the batch's data area. */
export interface WriteRecord {
  readonly kind: "write";
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly firstBlock: number;
  readonly blockCount: number;
  readonly dataIndex: number;
  readonly epoch: number;
  readonly seq: number;
  /** crc32c of each data block. */
  readonly crcs: Uint32Array;
}

/** Blocks that read as zeroes ("zero") or are unallocated ("discard"); no data. */
export interface RangeRecord {
  readonly kind: "zero" | "discard";
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly firstBlock: number;
  readonly blockCount: number;
  readonly epoch: number;
  readonly seq: number;
  /** Set by import: the chunk's version is set at the end of the import instead. */
  readonly keepVersion: boolean;
  /** Set by a conditional import: a block whose seq is above `seq` when applied is kept. */
  readonly keepNewer?: boolean;
}

/**
 * Blocks placed with their own seqs: by compaction (conditional on the block still living at
 * `sources[i]`) and by import (`sources[i] === 0`: unconditional). Never changes the version.
 */
export interface PlaceRecord {
  readonly kind: "place";
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly blockCount: number;
  readonly dataIndex: number;
  readonly blocks: Uint32Array;
  readonly crcs: Uint32Array;
  readonly sources: Uint32Array;
  readonly seqs: Float64Array;
  /** Import only: a block whose seq is above the placed one's when applied is kept. */
  readonly keepNewer?: boolean;
}

/** Chunk-level records without data. */
export interface ChunkRecord {
  readonly kind: "seal" | "delete" | "pin" | "unpin" | "version";
  readonly volumeId: number;
  readonly chunkIndex: number;
  /** seal, version: the epoch; pin, unpin: the snapshot id; delete: 0. */
  readonly value: number;
  /** version: the durable seq; otherwise 0. */
  readonly durableSeq: number;
}

/** The last record of a segment: where the log continues. */
export interface EndRecord {
  readonly kind: "end";
  readonly nextSegment: number;
  readonly nextSeq: number;
}

/** Any record of a batch. */
export type StoreRecord = WriteRecord | RangeRecord | PlaceRecord | ChunkRecord | EndRecord;

const COMMON_BYTES = 24;

/** Bytes a record takes in a batch header. */
export function recordBytes(record: StoreRecord): number {
  switch (record.kind) {
    case "write":
      return COMMON_BYTES + 24 + 4 * record.blockCount;
    case "zero":
    case "discard":
      return COMMON_BYTES + 24;
    case "place":
      return COMMON_BYTES + 8 + 24 * record.blockCount;
    case "version":
      return COMMON_BYTES + 16;
    case "delete":
      return COMMON_BYTES;
    case "end":
      return COMMON_BYTES + 16;
    default:
      return COMMON_BYTES + 8;
  }
}

/** Data blocks a record carries in the batch's data area. */
export function recordDataBlocks(record: StoreRecord): number {
  return record.kind === "write" || record.kind === "place" ? record.blockCount : 0;
}

/** Fixed part of a batch header before the records. */
export const BATCH_HEADER_FIXED_BYTES = 64;

/** Where a batch sits, how big it is, and where it stands in the log. */
export interface BatchPlacement {
  readonly segmentSeq: number;
  readonly segmentIndex: number;
  readonly offsetBlocks: number;
  readonly headerBlocks: number;
  readonly dataBlocks: number;
  /** Log sequence number: grows from batch to batch, never reused (gaps allowed). */
  readonly lsn: number;
  /**
   * The highest LSN that was durable (it and every batch before it synced) when this batch was
   * written. A valid batch with `durableLsn` beyond a damaged one proves the damaged one had
   * been synced: corruption, not a torn tail.
   */
  readonly durableLsn: number;
}

/** A decoded batch header. */
export interface BatchHeader extends BatchPlacement {
  readonly records: StoreRecord[];
}

/** Header blocks needed for records of `recordBytesTotal` bytes. */
export function headerBlocksFor(recordBytesTotal: number): number {
  return Math.ceil((BATCH_HEADER_FIXED_BYTES + recordBytesTotal) / BLOCK_SIZE_BYTES);
}

/**
 * Encodes a batch header into `target` (headerBlocks × 4 KiB; the unused tail is zeroed), with
 * its checksum seeded by the disk's key. Records are written in order.
 */
export function encodeBatchHeader(
  target: Uint8Array,
  placement: BatchPlacement,
  records: readonly StoreRecord[],
  crcSeed: number,
): void {
  const view = viewOf(target);
  view.setUint32(0, BATCH_MAGIC, true);
  view.setUint16(4, FORMAT_VERSION, true);
  view.setUint16(6, 0, true);
  view.setUint32(8, placement.headerBlocks, true);
  view.setUint32(12, placement.dataBlocks, true);
  setU64(view, 16, placement.segmentSeq);
  view.setUint32(24, placement.segmentIndex, true);
  view.setUint32(28, placement.offsetBlocks, true);
  view.setUint32(32, records.length, true);
  view.setUint32(40, 0, true);
  view.setUint32(44, 0, true);
  setU64(view, 48, placement.lsn);
  setU64(view, 56, placement.durableLsn);
  let offset = BATCH_HEADER_FIXED_BYTES;
  for (const record of records) offset = encodeRecord(view, offset, record);
  view.setUint32(36, offset, true);
  target.fill(0, offset);
  view.setUint32(40, crc32c(target.subarray(0, offset), crcSeed), true);
}

/** The flags byte: bit 0 keepVersion (range records), bit 1 keepNewer (range, place). */
function recordFlags(r: StoreRecord): number {
  if (r.kind === "zero" || r.kind === "discard") {
    return Number(r.keepVersion) | (r.keepNewer === true ? 2 : 0);
  }
  return r.kind === "place" && r.keepNewer === true ? 2 : 0;
}

function encodeCommon(view: DataView, offset: number, kind: number, r: StoreRecord): void {
  view.setUint8(offset, kind);
  view.setUint8(offset + 1, recordFlags(r));
  view.setUint16(offset + 2, 0, true);
  const blockCount =
    r.kind === "write" || r.kind === "zero" || r.kind === "discard" || r.kind === "place"
      ? r.blockCount
      : 0;
  view.setUint32(offset + 4, blockCount, true);
  setU64(view, offset + 8, r.kind === "end" ? 0 : r.volumeId);
  setU64(view, offset + 16, r.kind === "end" ? 0 : r.chunkIndex);
}

function encodeRecord(view: DataView, start: number, record: StoreRecord): number {
  encodeCommon(view, start, RECORD_KIND[record.kind], record);
  let offset = start + COMMON_BYTES;
  switch (record.kind) {
    case "write":
      view.setUint32(offset, record.firstBlock, true);
      view.setUint32(offset + 4, record.dataIndex, true);
      setU64(view, offset + 8, record.epoch);
      setU64(view, offset + 16, record.seq);
      offset += 24;
      for (let i = 0; i < record.blockCount; i++, offset += 4) {
        view.setUint32(offset, record.crcs[i] as number, true);
      }
      return offset;
    case "zero":
    case "discard":
      view.setUint32(offset, record.firstBlock, true);
      view.setUint32(offset + 4, 0, true);
      setU64(view, offset + 8, record.epoch);
      setU64(view, offset + 16, record.seq);
      return offset + 24;
    case "place":
      return encodePlace(view, offset, record);
    case "version":
      setU64(view, offset, record.value);
      setU64(view, offset + 8, record.durableSeq);
      return offset + 16;
    case "delete":
      return offset;
    case "end":
      view.setUint32(offset, record.nextSegment, true);
      view.setUint32(offset + 4, 0, true);
      setU64(view, offset + 8, record.nextSeq);
      return offset + 16;
    default:
      setU64(view, offset, record.value);
      return offset + 8;
  }
}

function encodePlace(view: DataView, start: number, record: PlaceRecord): number {
  view.setUint32(start, record.dataIndex, true);
  view.setUint32(start + 4, 0, true);
  let offset = start + 8;
  for (let i = 0; i < record.blockCount; i++, offset += 24) {
    view.setUint32(offset, record.blocks[i] as number, true);
    view.setUint32(offset + 4, record.crcs[i] as number, true);
    view.setUint32(offset + 8, record.sources[i] as number, true);
    view.setUint32(offset + 12, 0, true);
    setU64(view, offset + 16, record.seqs[i] as number);
  }
  return offset;
}

/** What the first block of a batch says about its size; `invalid` when it is not a batch. */
export function peekBatchHeader(
  firstBlock: Uint8Array,
): { readonly headerBlocks: number; readonly dataBlocks: number } | { readonly invalid: string } {
  const view = viewOf(firstBlock);
  if (view.getUint32(0, true) !== BATCH_MAGIC) return { invalid: "no batch magic" };
  const version = view.getUint16(4, true);
  if (version !== FORMAT_VERSION) return { invalid: `batch format version ${version}` };
  const headerBlocks = view.getUint32(8, true);
  if (headerBlocks < 1 || headerBlocks * BLOCK_SIZE_BYTES > BATCH_HEADER_BYTES_MAX) {
    return { invalid: `header of ${headerBlocks} blocks` };
  }
  return { headerBlocks, dataBlocks: view.getUint32(12, true) };
}

/**
 * Decodes and verifies a whole batch header (`bytes` holds all its header blocks). Returns the
 * header, or `invalid` with the reason: bad magic or checksum, or records that do not parse.
 */
export function decodeBatchHeader(
  bytes: Uint8Array,
  crcSeed: number,
): BatchHeader | { readonly invalid: string } {
  const peek = peekBatchHeader(bytes);
  if ("invalid" in peek) return peek;
  if (bytes.byteLength < peek.headerBlocks * BLOCK_SIZE_BYTES) return { invalid: "short header" };
  const view = viewOf(bytes);
  const usedBytes = view.getUint32(36, true);
  if (usedBytes < BATCH_HEADER_FIXED_BYTES || usedBytes > peek.headerBlocks * BLOCK_SIZE_BYTES) {
    return { invalid: `header used bytes ${usedBytes}` };
  }
  const stored = view.getUint32(40, true);
  view.setUint32(40, 0, true);
  const actual = crc32c(bytes.subarray(0, usedBytes), crcSeed);
  view.setUint32(40, stored, true);
  if (actual !== stored) return { invalid: "header checksum mismatch" };
  const count = view.getUint32(32, true);
  const segmentSeq = getU64(view, 16);
  const lsn = getU64(view, 48);
  const durableLsn = getU64(view, 56);
  if (count > BATCH_ENTRIES_MAX || Number.isNaN(segmentSeq + lsn + durableLsn)) {
    return { invalid: "bad fields" };
  }
  const records: StoreRecord[] = [];
  let offset = BATCH_HEADER_FIXED_BYTES;
  for (let i = 0; i < count; i++) {
    const decoded = decodeRecord(view, offset, usedBytes, peek.dataBlocks);
    if ("invalid" in decoded) return decoded;
    records.push(decoded.record);
    offset = decoded.next;
  }
  if (offset !== usedBytes) return { invalid: "records do not fill the header" };
  return {
    segmentSeq,
    segmentIndex: view.getUint32(24, true),
    offsetBlocks: view.getUint32(28, true),
    headerBlocks: peek.headerBlocks,
    dataBlocks: peek.dataBlocks,
    lsn,
    durableLsn,
    records,
  };
}

type Decoded =
  | { readonly record: StoreRecord; readonly next: number }
  | { readonly invalid: string };

function decodeRecord(view: DataView, start: number, end: number, dataBlocks: number): Decoded {
  if (start + COMMON_BYTES > end) return { invalid: "record past header end" };
  const kindByte = view.getUint8(start);
  const flags = view.getUint8(start + 1);
  const blockCount = view.getUint32(start + 4, true);
  const volumeId = getU64(view, start + 8);
  const chunkIndex = getU64(view, start + 16);
  if (Number.isNaN(volumeId) || Number.isNaN(chunkIndex)) return { invalid: "bad chunk id" };
  const kind = (Object.keys(RECORD_KIND) as StoreRecord["kind"][]).find(
    (name) => RECORD_KIND[name] === kindByte,
  );
  if (kind === undefined) return { invalid: `unknown record kind ${kindByte}` };
  const offset = start + COMMON_BYTES;
  const need = (bytes: number): boolean => offset + bytes <= end;
  switch (kind) {
    case "write": {
      if (!need(24 + 4 * blockCount)) return { invalid: "write record past header end" };
      const dataIndex = view.getUint32(offset + 4, true);
      if (blockCount === 0 || dataIndex + blockCount > dataBlocks) {
        return { invalid: "write data outside the batch" };
      }
      const crcs = new Uint32Array(blockCount);
      for (let i = 0; i < blockCount; i++) crcs[i] = view.getUint32(offset + 24 + 4 * i, true);
      const record: WriteRecord = {
        kind,
        volumeId,
        chunkIndex,
        firstBlock: view.getUint32(offset, true),
        blockCount,
        dataIndex,
        epoch: getU64(view, offset + 8),
        seq: getU64(view, offset + 16),
        crcs,
      };
      return { record, next: offset + 24 + 4 * blockCount };
    }
    case "zero":
    case "discard": {
      if (!need(24)) return { invalid: "range record past header end" };
      const record: RangeRecord = {
        kind,
        volumeId,
        chunkIndex,
        firstBlock: view.getUint32(offset, true),
        blockCount,
        epoch: getU64(view, offset + 8),
        seq: getU64(view, offset + 16),
        keepVersion: (flags & 1) === 1,
        ...((flags & 2) === 2 ? { keepNewer: true } : {}),
      };
      return { record, next: offset + 24 };
    }
    case "place":
      return decodePlace(view, offset, end, dataBlocks, volumeId, chunkIndex, blockCount, flags);
    case "end":
      if (!need(16)) return { invalid: "end record past header end" };
      return {
        record: {
          kind,
          nextSegment: view.getUint32(offset, true),
          nextSeq: getU64(view, offset + 8),
        },
        next: offset + 16,
      };
    case "version":
      if (!need(16)) return { invalid: "version record past header end" };
      return {
        record: {
          kind,
          volumeId,
          chunkIndex,
          value: getU64(view, offset),
          durableSeq: getU64(view, offset + 8),
        },
        next: offset + 16,
      };
    case "delete":
      return { record: { kind, volumeId, chunkIndex, value: 0, durableSeq: 0 }, next: offset };
    default:
      if (!need(8)) return { invalid: `${kind} record past header end` };
      return {
        record: { kind, volumeId, chunkIndex, value: getU64(view, offset), durableSeq: 0 },
        next: offset + 8,
      };
  }
}

function decodePlace(
  view: DataView,
  offset: number,
  end: number,
  dataBlocks: number,
  volumeId: number,
  chunkIndex: number,
  blockCount: number,
  flags: number,
): Decoded {
  if (offset + 8 + 24 * blockCount > end) return { invalid: "place record past header end" };
  const dataIndex = view.getUint32(offset, true);
  if (blockCount === 0 || dataIndex + blockCount > dataBlocks) {
    return { invalid: "place data outside the batch" };
  }
  const blocks = new Uint32Array(blockCount);
  const crcs = new Uint32Array(blockCount);
  const sources = new Uint32Array(blockCount);
  const seqs = new Float64Array(blockCount);
  let at = offset + 8;
  for (let i = 0; i < blockCount; i++, at += 24) {
    blocks[i] = view.getUint32(at, true);
    crcs[i] = view.getUint32(at + 4, true);
    sources[i] = view.getUint32(at + 8, true);
    seqs[i] = getU64(view, at + 16);
  }
  const record: PlaceRecord = {
    kind: "place",
    volumeId,
    chunkIndex,
    blockCount,
    dataIndex,
    blocks,
    crcs,
    sources,
    seqs,
    ...((flags & 2) === 2 ? { keepNewer: true } : {}),
  };
  return { record, next: at };
}
