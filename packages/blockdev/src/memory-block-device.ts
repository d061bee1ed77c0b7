/**
 * A sparse block device in memory: a legitimate `BlockDevice` for tests, demos and
 * benchmarks of exporters (the counterpart of nbdkit's memory plugin), not a stand-in for a
 * volume. It keeps every rule of the contract in `block-device.ts`, with real allocation
 * tracking: storage is handed out in 4 KiB blocks on first write, `discard` and
 * `writeZeroes({ mayUnmap: true })` turn whole blocks back into holes, and
 * `writeZeroes({ mayUnmap: false })` provisions blocks that read as zeros without storing them.
 *
 * Durability: the data lives as long as this object; `flush` and `fua` have nothing to wait
 * for, so every resolved write is as durable as the device will ever make it.
 *
 * Memory: block contents sit in 1 MiB slabs; a freed block's slot is reused by the next
 * allocation, but slabs are not returned to the runtime until the device is dropped.
 */
import { assert, checkBytes, checkInteger, HesError, throwIfAborted } from "@hes/base";
import type {
  AllocationExtent,
  BlockDevice,
  RangeRequest,
  WriteRequest,
  WriteZeroesRequest,
} from "./block-device.js";

/** Smallest addressable unit, as the contract requires. */
export const MEMORY_DEVICE_LOGICAL_BLOCK_BYTES = 512;
/** Allocation unit, and the preferred IO size (a partial block costs a read-modify-write). */
export const MEMORY_DEVICE_BLOCK_BYTES = 4096;
/**
 * Default largest read or write: 32 MiB, the payload NBD clients stay within for
 * interoperability (proto.md, "Size constraints").
 */
export const MEMORY_DEVICE_MAX_REQUEST_BYTES_DEFAULT = 32 * 1024 * 1024;
/** Largest device: 16 TiB, so the block table's top level stays small (64 Ki pages). */
export const MEMORY_DEVICE_SIZE_BYTES_MAX = 2 ** 44;
/** Slab size: few enough objects for the garbage collector at GiB sizes, small for tiny devices. */
const SLAB_BYTES = 1024 * 1024;
const BLOCKS_PER_SLAB = SLAB_BYTES / MEMORY_DEVICE_BLOCK_BYTES;
/** Slot value of a block that is provisioned and reads as zeros, with no storage behind it. */
const ZERO_SLOT = -1;
/** Blocks per page of the block table: 256 MiB of device in 256 KiB of index. */
const TABLE_PAGE_BLOCKS = 65536;

/**
 * Block index → slot, like a Map but in Int32Array pages allocated on first touch: a
 * JavaScript Map of a million entries lives in the garbage-collected heap and makes every
 * full collection walk it, which at GiB sizes cost more than the IO itself.
 * Stored values: 0 absent, -1 a zero block, slot + 1 otherwise.
 */
class BlockTable {
  private readonly pages: Array<Int32Array | undefined>;
  /** Blocks present (stored or zero). */
  size = 0;

  constructor(blocks: number) {
    this.pages = new Array(Math.ceil(blocks / TABLE_PAGE_BLOCKS)).fill(undefined);
  }

  get(block: number): number | undefined {
    const page = this.pages[Math.floor(block / TABLE_PAGE_BLOCKS)];
    const value = page === undefined ? 0 : (page[block % TABLE_PAGE_BLOCKS] as number);
    return value === 0 ? undefined : value === -1 ? ZERO_SLOT : value - 1;
  }

  has(block: number): boolean {
    return this.get(block) !== undefined;
  }

  set(block: number, slot: number): void {
    const index = Math.floor(block / TABLE_PAGE_BLOCKS);
    let page = this.pages[index];
    if (page === undefined) {
      page = new Int32Array(TABLE_PAGE_BLOCKS);
      this.pages[index] = page;
    }
    const at = block % TABLE_PAGE_BLOCKS;
    if (page[at] === 0) this.size++;
    page[at] = slot === ZERO_SLOT ? -1 : slot + 1;
  }

  delete(block: number): void {
    const page = this.pages[Math.floor(block / TABLE_PAGE_BLOCKS)];
    const at = block % TABLE_PAGE_BLOCKS;
    if (page === undefined || page[at] === 0) return;
    page[at] = 0;
    this.size--;
  }
}

/** A stack of free slot numbers in a growable Int32Array (kept out of the GC'd heap too). */
class SlotStack {
  private items = new Int32Array(1024);
  private count = 0;

  push(slot: number): void {
    if (this.count === this.items.length) {
      const grown = new Int32Array(this.items.length * 2);
      grown.set(this.items);
      this.items = grown;
    }
    this.items[this.count++] = slot;
  }

  pop(): number | undefined {
    return this.count === 0 ? undefined : this.items[--this.count];
  }
}

/** Options for {@link MemoryBlockDevice}. */
export interface MemoryBlockDeviceOptions {
  /** Device size; a multiple of 512. */
  readonly sizeBytes: number;
  /**
   * Space for allocated blocks (rounded up to 4 KiB blocks). A write or a provisioning
   * write-zeroes that needs more fails with HES_NO_SPACE and changes nothing. Default: the
   * device size (never full).
   */
  readonly capacityBytes?: number;
  /** Largest single read or write; larger ones are a RangeError. Default 32 MiB. */
  readonly maxRequestBytes?: number;
  /** Writes, discards and write-zeroes fail with HES_PERMISSION_DENIED. Default false. */
  readonly readOnly?: boolean;
  /**
   * Whether write-zeroes that must provision blocks (`mayUnmap: false`) counts as fast. This
   * device can do it without touching data, so the default is true; false makes such
   * requests with `fastOnly` fail with HES_UNSUPPORTED, as a device that has to write the
   * zeros would (exporters use this to test their NBD FAST_ZERO path).
   */
  readonly fastZeroes?: boolean;
}

/** Counters for tests and diagnostics. */
export interface MemoryBlockDeviceStats {
  /** Blocks that hold space: written ones and provisioned zero ones. */
  readonly allocatedBlocks: number;
  /** Of those, blocks provisioned as zeros with no storage behind them. */
  readonly zeroBlocks: number;
  /** Bytes of slab storage obtained so far (never shrinks). */
  readonly slabBytes: number;
  readonly flushes: number;
}

/** A sparse in-memory `BlockDevice`; see the file comment for its semantics. */
export class MemoryBlockDevice implements BlockDevice {
  readonly sizeBytes: number;
  readonly logicalBlockBytes = MEMORY_DEVICE_LOGICAL_BLOCK_BYTES;
  readonly preferredBlockBytes = MEMORY_DEVICE_BLOCK_BYTES;
  readonly maxRequestBytes: number;
  readonly readOnly: boolean;
  /** One store behind every caller: a write is visible everywhere as soon as it resolves. */
  readonly multiConnSafe = true;

  private readonly capacityBlocks: number;
  private readonly fastZeroes: boolean;
  /** Block index → slot in the slabs, or ZERO_SLOT. Absent = a hole. */
  private readonly blocks: BlockTable;
  private readonly slabs: Uint8Array[] = [];
  private readonly freeSlots = new SlotStack();
  private slotsUsed = 0;
  private zeroBlocks = 0;
  private flushes = 0;

  constructor(options: MemoryBlockDeviceOptions) {
    this.sizeBytes = checkInteger(options.sizeBytes, "sizeBytes", {
      min: 0,
      max: MEMORY_DEVICE_SIZE_BYTES_MAX,
      multipleOf: MEMORY_DEVICE_LOGICAL_BLOCK_BYTES,
    });
    const capacityBytes = checkInteger(options.capacityBytes ?? this.sizeBytes, "capacityBytes", {
      min: 0,
    });
    this.capacityBlocks = Math.ceil(capacityBytes / MEMORY_DEVICE_BLOCK_BYTES);
    this.maxRequestBytes = checkInteger(
      options.maxRequestBytes ?? MEMORY_DEVICE_MAX_REQUEST_BYTES_DEFAULT,
      "maxRequestBytes",
      {
        min: MEMORY_DEVICE_BLOCK_BYTES,
        max: 2 ** 31,
        multipleOf: MEMORY_DEVICE_LOGICAL_BLOCK_BYTES,
      },
    );
    this.readOnly = checkBoolean(options.readOnly ?? false, "readOnly");
    this.fastZeroes = checkBoolean(options.fastZeroes ?? true, "fastZeroes");
    this.blocks = new BlockTable(Math.ceil(this.sizeBytes / MEMORY_DEVICE_BLOCK_BYTES));
  }

  stats(): MemoryBlockDeviceStats {
    return {
      allocatedBlocks: this.blocks.size,
      zeroBlocks: this.zeroBlocks,
      slabBytes: this.slabs.length * SLAB_BYTES,
      flushes: this.flushes,
    };
  }

  async read(request: RangeRequest): Promise<Uint8Array> {
    const { offsetBytes, lengthBytes } = this.checkRange(request, "read", true);
    const block = Math.floor(offsetBytes / MEMORY_DEVICE_BLOCK_BYTES);
    const startInBlock = offsetBytes - block * MEMORY_DEVICE_BLOCK_BYTES;
    if (startInBlock + lengthBytes <= MEMORY_DEVICE_BLOCK_BYTES) {
      // The common small read: one block, one copy, no zero-fill of a buffer we overwrite.
      const slot = this.blocks.get(block);
      if (slot === undefined || slot === ZERO_SLOT) return new Uint8Array(lengthBytes);
      const at = this.slotByteOffset(slot) + startInBlock;
      return this.slabOf(slot).slice(at, at + lengthBytes);
    }
    const result = new Uint8Array(lengthBytes);
    this.forEachRun(offsetBytes, lengthBytes, false, (slab, slabAt, resultAt, length) => {
      if (slab !== undefined) result.set(slab.subarray(slabAt, slabAt + length), resultAt);
    });
    return result;
  }

  async write(request: WriteRequest): Promise<void> {
    if (typeof request !== "object" || request === null) {
      throw new TypeError("write: request must be an object");
    }
    const data = checkBytes(request.data, "data", this.maxRequestBytes);
    const { offsetBytes } = this.checkRange(
      {
        offsetBytes: request.offsetBytes,
        lengthBytes: data.byteLength,
        ...(request.signal === undefined ? {} : { signal: request.signal }),
      },
      "write",
      true,
    );
    checkBoolean(request.fua ?? false, "fua");
    this.checkWritable("write");
    this.reserve(this.holesIn(offsetBytes, data.byteLength), "write", data.byteLength);
    this.forEachRun(offsetBytes, data.byteLength, true, (slab, slabAt, dataAt, length) => {
      assert(slab !== undefined, "materialized blocks have storage");
      slab.set(data.subarray(dataAt, dataAt + length), slabAt);
    });
  }

  async flush(options?: { readonly signal?: AbortSignal }): Promise<void> {
    throwIfAborted(options?.signal, "flush");
    this.flushes++;
  }

  async discard(request: RangeRequest & { readonly fua?: boolean }): Promise<void> {
    const { offsetBytes, lengthBytes } = this.checkRange(request, "discard", false);
    checkBoolean(request.fua ?? false, "fua");
    this.checkWritable("discard");
    this.unmap(offsetBytes, lengthBytes);
  }

  async writeZeroes(request: WriteZeroesRequest): Promise<void> {
    const { offsetBytes, lengthBytes } = this.checkRange(request, "writeZeroes", false);
    const mayUnmap = checkBoolean(request.mayUnmap, "mayUnmap");
    const fastOnly = checkBoolean(request.fastOnly ?? false, "fastOnly");
    checkBoolean(request.fua ?? false, "fua");
    this.checkWritable("writeZeroes");
    if (mayUnmap) {
      this.unmap(offsetBytes, lengthBytes);
      return;
    }
    if (fastOnly && !this.fastZeroes) {
      throw new HesError(
        "HES_UNSUPPORTED",
        "writeZeroes: provisioning zeros is not fast on this device (fastZeroes: false)",
      );
    }
    this.reserve(this.holesIn(offsetBytes, lengthBytes), "writeZeroes", lengthBytes);
    this.forEachBlock(offsetBytes, lengthBytes, (block, startInBlock, length) => {
      const slot = this.blocks.get(block);
      if (slot === ZERO_SLOT) return;
      if (slot === undefined || length === this.blockLength(block)) {
        // The whole block reads as zeros afterwards (a hole already did): no storage needed.
        if (slot !== undefined) this.releaseSlot(slot);
        this.blocks.set(block, ZERO_SLOT);
        this.zeroBlocks++;
        return;
      }
      const at = this.slotByteOffset(slot) + startInBlock;
      this.slabOf(slot).fill(0, at, at + length);
    });
  }

  async allocation(request: RangeRequest): Promise<AllocationExtent[]> {
    const { offsetBytes, lengthBytes } = this.checkRange(request, "allocation", false);
    const extents: AllocationExtent[] = [];
    let runStart = offsetBytes;
    let runKind = -1; // 0 hole, 1 zero data, 2 data
    let position = offsetBytes;
    this.forEachBlock(offsetBytes, lengthBytes, (block, _start, length) => {
      const slot = this.blocks.get(block);
      const kind = slot === undefined ? 0 : slot === ZERO_SLOT ? 1 : 2;
      if (kind !== runKind && runKind !== -1) {
        extents.push(extentOf(runStart, position - runStart, runKind));
        runStart = position;
      }
      runKind = kind;
      position += length;
    });
    if (runKind !== -1) extents.push(extentOf(runStart, position - runStart, runKind));
    return extents;
  }

  /** Validates a range request; `dataRequest` applies `maxRequestBytes` (reads and writes). */
  private checkRange(
    request: RangeRequest,
    what: string,
    dataRequest: boolean,
  ): { offsetBytes: number; lengthBytes: number } {
    if (typeof request !== "object" || request === null) {
      throw new TypeError(`${what}: request must be an object`);
    }
    const { offsetBytes, lengthBytes } = request;
    const lengthMax = dataRequest ? this.maxRequestBytes : MEMORY_DEVICE_SIZE_BYTES_MAX;
    // Checked inline on the hot path; checkInteger runs only to throw the precise error.
    if (!isAligned(offsetBytes, MEMORY_DEVICE_SIZE_BYTES_MAX)) {
      checkInteger(offsetBytes, "offsetBytes", { ...ALIGNED, max: MEMORY_DEVICE_SIZE_BYTES_MAX });
    }
    if (!isAligned(lengthBytes, lengthMax)) {
      checkInteger(lengthBytes, "lengthBytes", { ...ALIGNED, max: lengthMax });
    }
    if (offsetBytes + lengthBytes > this.sizeBytes) {
      throw new RangeError(
        `${what}: offsetBytes ${offsetBytes} + lengthBytes ${lengthBytes} is past the end ` +
          `of the device (${this.sizeBytes} bytes)`,
      );
    }
    throwIfAborted(request.signal, what);
    return { offsetBytes, lengthBytes };
  }

  private checkWritable(what: string): void {
    if (this.readOnly) {
      throw new HesError("HES_PERMISSION_DENIED", `${what}: the device is read-only`);
    }
  }

  /** Fails with HES_NO_SPACE, before anything changes, when `needed` blocks do not fit. */
  private reserve(needed: number, what: string, lengthBytes: number): void {
    if (this.blocks.size + needed > this.capacityBlocks) {
      throw new HesError(
        "HES_NO_SPACE",
        `${what} of ${lengthBytes} bytes needs ${needed} more 4 KiB blocks; ` +
          `${this.capacityBlocks - this.blocks.size} of ${this.capacityBlocks} are free`,
        { details: { neededBlocks: needed, capacityBlocks: this.capacityBlocks } },
      );
    }
  }

  /** Blocks of the range that are holes (a write or provisioning must allocate them). */
  private holesIn(offsetBytes: number, lengthBytes: number): number {
    if (lengthBytes === 0) return 0;
    const first = Math.floor(offsetBytes / MEMORY_DEVICE_BLOCK_BYTES);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / MEMORY_DEVICE_BLOCK_BYTES);
    let holes = 0;
    for (let block = first; block <= last; block++) if (!this.blocks.has(block)) holes++;
    return holes;
  }

  /** Whole blocks in the range become holes; partial ones are zero-filled where stored. */
  private unmap(offsetBytes: number, lengthBytes: number): void {
    this.forEachBlock(offsetBytes, lengthBytes, (block, startInBlock, length) => {
      const slot = this.blocks.get(block);
      if (slot === undefined) return;
      if (length === this.blockLength(block)) {
        this.blocks.delete(block);
        if (slot === ZERO_SLOT) this.zeroBlocks--;
        else this.releaseSlot(slot);
        return;
      }
      if (slot === ZERO_SLOT) return;
      const at = this.slotByteOffset(slot) + startInBlock;
      this.slabOf(slot).fill(0, at, at + length);
    });
  }

  /** The block's storage slot, allocating a zeroed one for a hole or a zero block. */
  private materialize(block: number): number {
    const slot = this.blocks.get(block);
    if (slot !== undefined && slot !== ZERO_SLOT) return slot;
    if (slot === ZERO_SLOT) this.zeroBlocks--;
    const fresh = this.takeSlot();
    this.blocks.set(block, fresh);
    return fresh;
  }

  private takeSlot(): number {
    const reused = this.freeSlots.pop();
    if (reused !== undefined) {
      const at = this.slotByteOffset(reused);
      this.slabOf(reused).fill(0, at, at + MEMORY_DEVICE_BLOCK_BYTES);
      return reused;
    }
    const slot = this.slotsUsed++;
    if (slot % BLOCKS_PER_SLAB === 0) this.slabs.push(new Uint8Array(SLAB_BYTES));
    return slot;
  }

  private releaseSlot(slot: number): void {
    this.freeSlots.push(slot);
  }

  private slabOf(slot: number): Uint8Array {
    return this.slabs[Math.floor(slot / BLOCKS_PER_SLAB)] as Uint8Array;
  }

  private slotByteOffset(slot: number): number {
    return (slot % BLOCKS_PER_SLAB) * MEMORY_DEVICE_BLOCK_BYTES;
  }

  /** Bytes of `block` inside the device (the last block may be short). */
  private blockLength(block: number): number {
    return Math.min(MEMORY_DEVICE_BLOCK_BYTES, this.sizeBytes - block * MEMORY_DEVICE_BLOCK_BYTES);
  }

  /**
   * Calls `visit` for each run of the range whose blocks sit in consecutive slots of one slab
   * (with `slab` and the byte offset in it), or that is holes and zero blocks (`slab`
   * undefined). A region written sequentially is one run per slab, so large IO is a few large
   * copies. With `materialize`, every block gets storage first (writes).
   */
  private forEachRun(
    offsetBytes: number,
    lengthBytes: number,
    materialize: boolean,
    visit: (slab: Uint8Array | undefined, slabAt: number, rangeAt: number, length: number) => void,
  ): void {
    const end = offsetBytes + lengthBytes;
    let position = offsetBytes;
    while (position < end) {
      const first = Math.floor(position / MEMORY_DEVICE_BLOCK_BYTES);
      const slot = materialize ? this.materialize(first) : this.blocks.get(first);
      const stored = slot !== undefined && slot !== ZERO_SLOT;
      let block = first;
      let runEnd = Math.min((block + 1) * MEMORY_DEVICE_BLOCK_BYTES, end);
      while (runEnd < end) {
        const next = materialize ? this.materialize(block + 1) : this.blocks.get(block + 1);
        const nextStored = next !== undefined && next !== ZERO_SLOT;
        const follows = stored
          ? next === slot + (block + 1 - first) && (next as number) % BLOCKS_PER_SLAB !== 0
          : !nextStored;
        if (!follows) break;
        block++;
        runEnd = Math.min((block + 1) * MEMORY_DEVICE_BLOCK_BYTES, end);
      }
      const slabAt = stored
        ? this.slotByteOffset(slot) + (position - first * MEMORY_DEVICE_BLOCK_BYTES)
        : 0;
      visit(
        stored ? this.slabOf(slot) : undefined,
        slabAt,
        position - offsetBytes,
        runEnd - position,
      );
      position = runEnd;
    }
  }

  /** Calls `visit` for each block the range touches, with the piece inside it. */
  private forEachBlock(
    offsetBytes: number,
    lengthBytes: number,
    visit: (block: number, startInBlock: number, length: number, rangeAt: number) => void,
  ): void {
    let position = offsetBytes;
    const end = offsetBytes + lengthBytes;
    while (position < end) {
      const block = Math.floor(position / MEMORY_DEVICE_BLOCK_BYTES);
      const startInBlock = position - block * MEMORY_DEVICE_BLOCK_BYTES;
      const length = Math.min(MEMORY_DEVICE_BLOCK_BYTES - startInBlock, end - position);
      visit(block, startInBlock, length, position - offsetBytes);
      position += length;
    }
  }
}

const ALIGNED = { min: 0, multipleOf: MEMORY_DEVICE_LOGICAL_BLOCK_BYTES } as const;

/** A safe integer in [0, max] and a multiple of the logical block. */
function isAligned(value: unknown, max: number): value is number {
  return (
    typeof value === "number" &&
    Number.isSafeInteger(value) &&
    value >= 0 &&
    value <= max &&
    value % MEMORY_DEVICE_LOGICAL_BLOCK_BYTES === 0
  );
}

function extentOf(offsetBytes: number, lengthBytes: number, kind: number): AllocationExtent {
  return { offsetBytes, lengthBytes, hole: kind === 0, zero: kind !== 2 };
}

function checkBoolean(value: unknown, name: string): boolean {
  if (typeof value !== "boolean") throw new TypeError(`${name} must be a boolean`);
  return value;
}
