/**
 * A bounded pool of page-aligned buffers for direct (O_DIRECT) disk IO.
 *
 * JavaScript cannot ask for aligned memory, but the backing store of a `WebAssembly.Memory`
 * starts on a page boundary, so buffers carved from one at multiples of 4 KiB are aligned.
 * Each arena is one Memory (never grown: growing detaches its ArrayBuffer) managed by a buddy
 * allocator, so blocks of every size split and merge without fragmenting the pool for good.
 *
 * Bounded: at most `capacityBytes` are ever carved; `acquire` waits (FIFO) when the pool is
 * exhausted, which is backpressure on the writer, not growth.
 */
import { assert } from "./assert.js";
import { HesError } from "./errors.js";

/** Alignment and smallest block: one 4 KiB page, what O_DIRECT needs on every common device. */
export const BUFFER_ALIGNMENT_BYTES = 4096;
/** WebAssembly pages are 64 KiB. */
const WASM_PAGE_BYTES = 65536;
/** Default arena size: large enough for the biggest IO the store issues (8 MiB). */
export const BUFFER_ARENA_BYTES_DEFAULT = 8 * 1024 * 1024;
/** Default pool bound: 64 MiB of pinned IO memory per disk. */
export const BUFFER_POOL_CAPACITY_BYTES_DEFAULT = 64 * 1024 * 1024;
/** Waiters queued behind an exhausted pool; past this `acquire` fails with HES_BUSY. */
export const BUFFER_POOL_WAITERS_MAX = 4096;

assert(BUFFER_ARENA_BYTES_DEFAULT % WASM_PAGE_BYTES === 0, "arena must be whole wasm pages");
assert(BUFFER_POOL_CAPACITY_BYTES_DEFAULT % BUFFER_ARENA_BYTES_DEFAULT === 0, "whole arenas");

/** ArrayBuffers of every pool's arenas, so any pool buffer is recognised as aligned. */
const alignedBackingStores = new WeakSet<ArrayBufferLike>();

/**
 * True when `buffer` lies in page-aligned memory from a pool at an aligned offset, i.e. it can
 * be handed to O_DIRECT IO without a bounce copy (its length must still be a block multiple).
 */
export function isAlignedBuffer(buffer: Uint8Array): boolean {
  return (
    alignedBackingStores.has(buffer.buffer) && buffer.byteOffset % BUFFER_ALIGNMENT_BYTES === 0
  );
}

/** Options for {@link AlignedBufferPool}. */
export interface AlignedBufferPoolOptions {
  /** Most bytes the pool ever holds. A multiple of `arenaBytes`. */
  readonly capacityBytes?: number;
  /** Bytes per arena, a power of two multiple of 64 KiB; also the largest single buffer. */
  readonly arenaBytes?: number;
}

/** Counters for monitoring and tests. */
export interface BufferPoolStats {
  readonly capacityBytes: number;
  readonly arenaCount: number;
  readonly inUseBytes: number;
  readonly waiters: number;
}

interface Waiter {
  readonly order: number;
  readonly lengthBytes: number;
  readonly resolve: (buffer: Uint8Array) => void;
  readonly reject: (error: unknown) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
}

class Arena {
  readonly memory: ArrayBuffer;
  /** freeLists[order] holds offsets of free blocks of size 4 KiB << order. */
  readonly freeLists: Set<number>[];
  /** Offsets of blocks handed out, with their order. */
  readonly inUse = new Map<number, number>();

  constructor(arenaBytes: number, topOrder: number) {
    const memory = new WebAssembly.Memory({ initial: arenaBytes / WASM_PAGE_BYTES });
    this.memory = memory.buffer;
    alignedBackingStores.add(this.memory);
    this.freeLists = Array.from({ length: topOrder + 1 }, () => new Set<number>());
    this.freeLists[topOrder]?.add(0);
  }

  /** Takes a block of `order`, splitting larger ones; undefined when none fits. */
  take(order: number): number | undefined {
    let found = order;
    while (found < this.freeLists.length && this.freeLists[found]?.size === 0) found++;
    const list = this.freeLists[found];
    if (list === undefined) return undefined;
    const offset = list.values().next().value as number;
    list.delete(offset);
    while (found > order) {
      found--;
      this.freeLists[found]?.add(offset + (BUFFER_ALIGNMENT_BYTES << found));
    }
    this.inUse.set(offset, order);
    return offset;
  }

  /** Returns a block, merging it with its free buddies. */
  give(offset: number): number {
    const order = this.inUse.get(offset);
    assert(order !== undefined, `buffer at offset ${offset} released twice or not from the pool`);
    this.inUse.delete(offset);
    let current = offset;
    let currentOrder = order;
    while (currentOrder < this.freeLists.length - 1) {
      const buddy = current ^ (BUFFER_ALIGNMENT_BYTES << currentOrder);
      const list = this.freeLists[currentOrder] as Set<number>;
      if (!list.has(buddy)) break;
      list.delete(buddy);
      current = Math.min(current, buddy);
      currentOrder++;
    }
    this.freeLists[currentOrder]?.add(current);
    return BUFFER_ALIGNMENT_BYTES << order;
  }
}

/** A bounded pool of aligned buffers. One per disk is typical. */
export class AlignedBufferPool {
  readonly capacityBytes: number;
  readonly arenaBytes: number;
  private readonly topOrder: number;
  private readonly arenas: Arena[] = [];
  private readonly arenaByMemory = new Map<ArrayBufferLike, Arena>();
  private readonly waiters: Waiter[] = [];
  private inUseBytes = 0;

  constructor(options: AlignedBufferPoolOptions = {}) {
    this.arenaBytes = options.arenaBytes ?? BUFFER_ARENA_BYTES_DEFAULT;
    this.capacityBytes = options.capacityBytes ?? BUFFER_POOL_CAPACITY_BYTES_DEFAULT;
    const pages = this.arenaBytes / BUFFER_ALIGNMENT_BYTES;
    if (!Number.isSafeInteger(pages) || pages < 16 || (pages & (pages - 1)) !== 0) {
      throw new RangeError(`arenaBytes must be a power of two >= 64 KiB, got ${this.arenaBytes}`);
    }
    if (this.capacityBytes < this.arenaBytes || this.capacityBytes % this.arenaBytes !== 0) {
      throw new RangeError(
        `capacityBytes must be a positive multiple of arenaBytes (${this.arenaBytes}), ` +
          `got ${this.capacityBytes}`,
      );
    }
    this.topOrder = Math.log2(pages);
  }

  /** Largest buffer one call can get. */
  get bufferBytesMax(): number {
    return this.arenaBytes;
  }

  /**
   * A buffer of `lengthBytes` (rounded up to 4 KiB; contents unspecified). Waits, in FIFO
   * order, while the pool is exhausted; rejects HES_ABORTED when `signal` fires first and
   * HES_BUSY when too many callers already wait. Give it back with {@link release}.
   */
  acquire(lengthBytes: number, signal?: AbortSignal): Promise<Uint8Array> {
    const order = this.orderFor(lengthBytes);
    if (this.waiters.length === 0) {
      const buffer = this.takeBlock(order, lengthBytes);
      if (buffer !== undefined) return Promise.resolve(buffer);
    }
    if (signal?.aborted === true) {
      return Promise.reject(new HesError("HES_ABORTED", "buffer acquire aborted"));
    }
    if (this.waiters.length >= BUFFER_POOL_WAITERS_MAX) {
      return Promise.reject(
        new HesError("HES_BUSY", `buffer pool: ${this.waiters.length} callers already wait`),
      );
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      const waiter: Waiter = {
        order,
        lengthBytes,
        resolve,
        reject,
        signal,
        onAbort: () => {
          const index = this.waiters.indexOf(waiter);
          if (index >= 0) this.waiters.splice(index, 1);
          reject(new HesError("HES_ABORTED", "buffer acquire aborted", { cause: signal?.reason }));
        },
      };
      signal?.addEventListener("abort", waiter.onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** A buffer now, or undefined when the pool is exhausted (or others already wait). */
  tryAcquire(lengthBytes: number): Uint8Array | undefined {
    const order = this.orderFor(lengthBytes);
    return this.waiters.length === 0 ? this.takeBlock(order, lengthBytes) : undefined;
  }

  /** Returns a buffer from {@link acquire}. The caller must not touch it afterwards. */
  release(buffer: Uint8Array): void {
    const arena = this.arenaByMemory.get(buffer.buffer);
    assert(arena !== undefined, "release of a buffer that is not from this pool");
    this.inUseBytes -= arena.give(buffer.byteOffset);
    this.serveWaiters();
  }

  stats(): BufferPoolStats {
    return {
      capacityBytes: this.capacityBytes,
      arenaCount: this.arenas.length,
      inUseBytes: this.inUseBytes,
      waiters: this.waiters.length,
    };
  }

  private orderFor(lengthBytes: number): number {
    if (!Number.isSafeInteger(lengthBytes) || lengthBytes <= 0 || lengthBytes > this.arenaBytes) {
      throw new RangeError(`buffer length must be 1..${this.arenaBytes} bytes, got ${lengthBytes}`);
    }
    const pages = Math.ceil(lengthBytes / BUFFER_ALIGNMENT_BYTES);
    return Math.ceil(Math.log2(pages));
  }

  private takeBlock(order: number, lengthBytes: number): Uint8Array | undefined {
    for (const arena of this.arenas) {
      const offset = arena.take(order);
      if (offset !== undefined) return this.view(arena, offset, order, lengthBytes);
    }
    if ((this.arenas.length + 1) * this.arenaBytes > this.capacityBytes) return undefined;
    const arena = new Arena(this.arenaBytes, this.topOrder);
    this.arenas.push(arena);
    this.arenaByMemory.set(arena.memory, arena);
    const offset = arena.take(order);
    assert(offset !== undefined, "a fresh arena must satisfy any order up to its size");
    return this.view(arena, offset, order, lengthBytes);
  }

  private view(arena: Arena, offset: number, order: number, lengthBytes: number): Uint8Array {
    this.inUseBytes += BUFFER_ALIGNMENT_BYTES << order;
    const rounded = Math.ceil(lengthBytes / BUFFER_ALIGNMENT_BYTES) * BUFFER_ALIGNMENT_BYTES;
    return new Uint8Array(arena.memory, offset, rounded);
  }

  private serveWaiters(): void {
    while (this.waiters.length > 0) {
      const waiter = this.waiters[0] as Waiter;
      const buffer = this.takeBlock(waiter.order, waiter.lengthBytes);
      if (buffer === undefined) return;
      this.waiters.shift();
      waiter.signal?.removeEventListener("abort", waiter.onAbort);
      waiter.resolve(buffer);
    }
  }
}
