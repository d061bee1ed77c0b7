/**
 * The segment table of one disk: each segment's state, sequence number (its generation in the
 * log), fill and live block count, plus readers in flight. Pure bookkeeping.
 *
 * Life of a segment: FREE → ACTIVE (the log appends to it; exactly one at a time) → SEALED (the
 * log moved on) → FREE again once no view refers to any of its blocks, no reader is in it, and
 * the last durable index checkpoint lies after it, so replay never needs its records again.
 */
import { assert } from "@hes/base";
import { BLOCK_SIZE_BYTES } from "./limits.js";

export const SEGMENT_FREE = 0;
export const SEGMENT_ACTIVE = 1;
export const SEGMENT_SEALED = 2;

/** Bytes per segment in the checkpointed table: state u8, pad, fill u32, seq u64. */
export const SEGMENT_TABLE_ENTRY_BYTES = 16;

/** Geometry shared by the table and the log. */
export interface SegmentGeometry {
  readonly segmentCount: number;
  readonly segmentSizeBytes: number;
  readonly segmentsStartBytes: number;
}

/** The table. Arrays are indexed by segment number. */
export class SegmentTable {
  readonly geometry: SegmentGeometry;
  readonly states: Uint8Array;
  readonly seqs: Float64Array;
  readonly fillBytes: Float64Array;
  readonly liveBlocks: Int32Array;
  readonly readers: Uint32Array;
  private readonly blocksPerSegment: number;
  private readonly firstBlock: number;

  constructor(geometry: SegmentGeometry) {
    this.geometry = geometry;
    const n = geometry.segmentCount;
    this.states = new Uint8Array(n);
    this.seqs = new Float64Array(n);
    this.fillBytes = new Float64Array(n);
    this.liveBlocks = new Int32Array(n);
    this.readers = new Uint32Array(n);
    this.blocksPerSegment = geometry.segmentSizeBytes / BLOCK_SIZE_BYTES;
    this.firstBlock = geometry.segmentsStartBytes / BLOCK_SIZE_BYTES;
  }

  /** Byte position of a segment's start on the disk. */
  startBytes(segment: number): number {
    return this.geometry.segmentsStartBytes + segment * this.geometry.segmentSizeBytes;
  }

  /** The segment holding disk block `address`. */
  segmentOf(address: number): number {
    return Math.floor((address - this.firstBlock) / this.blocksPerSegment);
  }

  /** Liveness change of one data block (from the index). */
  addLive(address: number, delta: number): void {
    const segment = this.segmentOf(address);
    const live = (this.liveBlocks[segment] as number) + delta;
    assert(live >= 0, `segment ${segment} live count went negative`);
    this.liveBlocks[segment] = live;
  }

  /** A reader starts reading blocks of `segment` (it will not be freed until released). */
  addReader(segment: number): void {
    this.readers[segment] = (this.readers[segment] as number) + 1;
  }

  /** A reader is done; returns how many remain. */
  removeReader(segment: number): number {
    const readers = (this.readers[segment] as number) - 1;
    assert(readers >= 0, `segment ${segment} reader count went negative`);
    this.readers[segment] = readers;
    return readers;
  }

  /** True when some sealed segment holds nothing live (a checkpoint or reader will free it). */
  hasEmptySealed(): boolean {
    for (let i = 0; i < this.states.length; i++) {
      if (this.states[i] === SEGMENT_SEALED && this.liveBlocks[i] === 0) return true;
    }
    return false;
  }

  /** Free segments, lowest number first. */
  freeSegments(): number[] {
    const free: number[] = [];
    for (let i = 0; i < this.states.length; i++) if (this.states[i] === SEGMENT_FREE) free.push(i);
    return free;
  }

  freeCount(): number {
    let count = 0;
    for (const state of this.states) if (state === SEGMENT_FREE) count++;
    return count;
  }

  /**
   * Sealed segments nothing refers to, wholly before the checkpointed log position (sequence
   * `checkpointSeq`), and with no reader: these become FREE. Returns how many.
   */
  reclaim(checkpointSeq: number): number {
    let count = 0;
    for (let i = 0; i < this.states.length; i++) {
      if (
        this.states[i] === SEGMENT_SEALED &&
        this.liveBlocks[i] === 0 &&
        (this.seqs[i] as number) < checkpointSeq &&
        this.readers[i] === 0
      ) {
        this.states[i] = SEGMENT_FREE;
        this.fillBytes[i] = 0;
        count++;
      }
    }
    return count;
  }

  /** Bytes of sealed and active segments up to their fill (live data, garbage and headers). */
  usedBytes(): number {
    let used = 0;
    for (let i = 0; i < this.states.length; i++) {
      if (this.states[i] !== SEGMENT_FREE) used += this.fillBytes[i] as number;
    }
    return used;
  }

  liveBytes(): number {
    let live = 0;
    for (const blocks of this.liveBlocks) live += blocks;
    return live * BLOCK_SIZE_BYTES;
  }

  /** Bytes compaction could win back from sealed segments (their fill minus live data). */
  reclaimableBytes(): number {
    let bytes = 0;
    for (let i = 0; i < this.states.length; i++) {
      if (this.states[i] === SEGMENT_SEALED) {
        bytes += (this.fillBytes[i] as number) - (this.liveBlocks[i] as number) * BLOCK_SIZE_BYTES;
      }
    }
    return bytes;
  }

  /** Live fraction of a sealed segment's size (0 = all garbage). */
  liveRatio(segment: number): number {
    return (
      ((this.liveBlocks[segment] as number) * BLOCK_SIZE_BYTES) / this.geometry.segmentSizeBytes
    );
  }

  /** The table as bytes, for the checkpoint. Live counts are not stored: they are recomputed. */
  encode(): Uint8Array {
    const bytes = new Uint8Array(this.states.length * SEGMENT_TABLE_ENTRY_BYTES);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < this.states.length; i++) {
      const at = i * SEGMENT_TABLE_ENTRY_BYTES;
      view.setUint8(at, this.states[i] as number);
      view.setUint32(at + 4, this.fillBytes[i] as number, true);
      view.setFloat64(at + 8, this.seqs[i] as number, true);
    }
    return bytes;
  }

  /** Loads states, fills and seqs from {@link encode}'s bytes. */
  decodeInto(bytes: Uint8Array): void {
    assert(bytes.byteLength === this.states.length * SEGMENT_TABLE_ENTRY_BYTES, "table size");
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < this.states.length; i++) {
      const at = i * SEGMENT_TABLE_ENTRY_BYTES;
      this.states[i] = view.getUint8(at);
      this.fillBytes[i] = view.getUint32(at + 4, true);
      this.seqs[i] = view.getFloat64(at + 8, true);
    }
  }
}
