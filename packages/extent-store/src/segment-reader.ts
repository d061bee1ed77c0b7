/**
 * Sequential reading of one segment through a window (one pool buffer), for replay and
 * compaction: they walk batches front to back, so one large read serves many small requests.
 */
import { assert, type Disk } from "@hes/base";
import { type BatchHeader, decodeBatchHeader, peekBatchHeader } from "./format.js";
import { BLOCK_SIZE_BYTES } from "./limits.js";

/** Reads a segment through a window of `windowBytes`. Call {@link release} when done. */
export class SegmentReader {
  private readonly disk: Disk;
  private readonly window: Uint8Array;
  private segmentStartBytes = 0;
  private segmentSizeBytes = 0;
  private windowOffset = 0;
  private windowLength = 0;
  private released = false;

  private constructor(disk: Disk, window: Uint8Array) {
    this.disk = disk;
    this.window = window;
  }

  /** A reader with a window from the disk's aligned pool. */
  static async create(disk: Disk, windowBytes: number): Promise<SegmentReader> {
    return new SegmentReader(disk, await disk.buffers.acquire(windowBytes));
  }

  /** Points the reader at a segment (drops the window). */
  moveTo(segmentStartBytes: number, segmentSizeBytes: number): void {
    this.segmentStartBytes = segmentStartBytes;
    this.segmentSizeBytes = segmentSizeBytes;
    this.windowLength = 0;
  }

  get windowBytes(): number {
    return this.window.byteLength;
  }

  /**
   * A view of `length` bytes at `offset` in the segment, valid until the next call. Reads a whole
   * window (clamped to the segment end) when the range is not already in it.
   */
  async read(offset: number, length: number): Promise<Uint8Array> {
    assert(!this.released, "segment reader used after release");
    assert(length <= this.window.byteLength, "read longer than the window");
    assert(offset % BLOCK_SIZE_BYTES === 0 && offset + length <= this.segmentSizeBytes, "range");
    const inside =
      offset >= this.windowOffset && offset + length <= this.windowOffset + this.windowLength;
    if (!inside) {
      const windowLength = Math.min(this.window.byteLength, this.segmentSizeBytes - offset);
      this.windowLength = 0;
      await this.disk.read(this.window.subarray(0, windowLength), this.segmentStartBytes + offset);
      this.windowOffset = offset;
      this.windowLength = windowLength;
    }
    const start = offset - this.windowOffset;
    return this.window.subarray(start, start + length);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.disk.buffers.release(this.window);
  }
}

/** Reads and decodes the batch header at `offset`; `invalid` when there is no valid one. */
export async function readHeaderAt(
  reader: SegmentReader,
  offset: number,
  segmentSizeBytes: number,
  crcSeed: number,
): Promise<BatchHeader | { readonly invalid: string }> {
  const first = await reader.read(offset, BLOCK_SIZE_BYTES);
  const peek = peekBatchHeader(first);
  if ("invalid" in peek) return peek;
  const batchBytes = (peek.headerBlocks + peek.dataBlocks) * BLOCK_SIZE_BYTES;
  if (offset + batchBytes > segmentSizeBytes) return { invalid: "batch past segment end" };
  const bytes = await reader.read(offset, peek.headerBlocks * BLOCK_SIZE_BYTES);
  return decodeBatchHeader(bytes, crcSeed);
}
