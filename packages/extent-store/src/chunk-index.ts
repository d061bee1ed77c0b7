/**
 * The in-memory index of one disk: for every chunk, which disk block holds each of its blocks,
 * with the block's crc32c and the seq of the write that put it there; plus pinned snapshots.
 *
 * Shape: a chunk's head is an array of pages; a page covers PAGE_BLOCKS (256) blocks = 1 MiB of
 * the chunk and is one 4 KiB ArrayBuffer holding three arrays (address u32, crc u32, seq f64),
 * i.e. 16 bytes per block, whatever the write pattern. Pages never touched are absent.
 *
 * Snapshots are redirect-on-write: pinning copies the head's array of page references (no data,
 * no page copies); a page shared by several views is copied before the head changes it. So a
 * pinned view never changes except when compaction moves a block, which updates every view that
 * still refers to the old address, in place.
 *
 * Liveness: a disk block is live while at least one view (head or pin) of its chunk refers to it.
 * Every change reports the blocks that became live or dead through `onLive`, which keeps the
 * per-segment live counts that compaction uses.
 *
 * Pure: no IO, no time. Mutations happen only when the log applies a durable record (and at
 * replay, through the same functions), so the index always describes the durable log.
 */
import { assert } from "@hes/base";
import { type ChunkId, chunkKey } from "./chunk-id.js";
import { ADDRESS_HOLE, ADDRESS_ZERO, PAGE_BLOCKS } from "./limits.js";

/** Bytes of one page's buffer: address, crc and seq per block. */
export const PAGE_BYTES = PAGE_BLOCKS * 16;

/** One page of a chunk's index. Shared between views (refs > 1) it is read-only to the head. */
export class Page {
  readonly id: number;
  /** Views (head or pins) whose page array holds this page. */
  refs = 1;
  readonly bytes: Uint8Array;
  readonly addresses: Uint32Array;
  readonly crcs: Uint32Array;
  readonly seqs: Float64Array;

  constructor(id: number, from?: Uint8Array) {
    this.id = id;
    const buffer = new ArrayBuffer(PAGE_BYTES);
    this.bytes = new Uint8Array(buffer);
    if (from !== undefined) this.bytes.set(from);
    this.addresses = new Uint32Array(buffer, 0, PAGE_BLOCKS);
    this.crcs = new Uint32Array(buffer, 4 * PAGE_BLOCKS, PAGE_BLOCKS);
    this.seqs = new Float64Array(buffer, 8 * PAGE_BLOCKS, PAGE_BLOCKS);
  }
}

/** A chunk's view: the head or a pinned snapshot. `undefined` pages are all holes. */
export type PageArray = (Page | undefined)[];

/** A pinned snapshot of a chunk. */
export interface Pin {
  readonly snapshotId: number;
  readonly epoch: number;
  readonly durableSeq: number;
  readonly pages: PageArray;
}

/** Everything the index knows about one chunk. */
export class ChunkIndex implements ChunkId {
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly key: string;
  epoch = 0;
  durableSeq = 0;
  readonly head: PageArray;
  readonly pins = new Map<number, Pin>();

  constructor(volumeId: number, chunkIndex: number, pageCount: number) {
    this.volumeId = volumeId;
    this.chunkIndex = chunkIndex;
    this.key = chunkKey(volumeId, chunkIndex);
    this.head = new Array<Page | undefined>(pageCount).fill(undefined);
  }
}

/** One block's entry as a lookup returns it. */
export interface BlockEntry {
  readonly address: number;
  readonly crc: number;
  readonly seq: number;
}

/** Callback for liveness changes of a disk block address (>= 2). */
export type LiveCallback = (address: number, delta: 1 | -1) => void;

/** The index of one disk. */
export class DiskIndex {
  readonly chunks = new Map<string, ChunkIndex>();
  readonly pageCount: number;
  readonly chunkBlocks: number;
  /** Pages changed since the last checkpoint. */
  dirtyPages = new Set<Page>();
  /** Chunks whose metadata (version, page ids, pins) changed since the last checkpoint. */
  dirtyChunks = new Set<string>();
  /** Chunks deleted since the last checkpoint (key → true). */
  deletedChunks = new Set<string>();
  /** Ids of pages no view refers to any more, to delete from the checkpoint store. */
  droppedPageIds = new Set<number>();
  nextPageId = 1;
  onLive: LiveCallback;

  constructor(chunkBlocks: number, onLive: LiveCallback) {
    assert(chunkBlocks % PAGE_BLOCKS === 0, "chunks are whole pages");
    this.chunkBlocks = chunkBlocks;
    this.pageCount = chunkBlocks / PAGE_BLOCKS;
    this.onLive = onLive;
  }

  get(volumeId: number, chunkIndex: number): ChunkIndex | undefined {
    return this.chunks.get(chunkKey(volumeId, chunkIndex));
  }

  /** The chunk, created (empty, version 0) when absent. */
  ensure(volumeId: number, chunkIndex: number): ChunkIndex {
    const key = chunkKey(volumeId, chunkIndex);
    let chunk = this.chunks.get(key);
    if (chunk === undefined) {
      chunk = new ChunkIndex(volumeId, chunkIndex, this.pageCount);
      this.chunks.set(key, chunk);
      this.deletedChunks.delete(key);
    }
    this.dirtyChunks.add(key);
    return chunk;
  }

  /** Raises the chunk's version (epoch and durable seq only grow). */
  bumpVersion(chunk: ChunkIndex, epoch: number, seq: number): void {
    if (epoch > chunk.epoch) chunk.epoch = epoch;
    if (seq > chunk.durableSeq) chunk.durableSeq = seq;
    this.dirtyChunks.add(chunk.key);
  }

  /**
   * Points head blocks [firstBlock, firstBlock + count) at `address + i` (data) or at a fixed
   * ADDRESS_HOLE / ADDRESS_ZERO, with crcs and one seq or a seq per block.
   */
  setHead(
    chunk: ChunkIndex,
    firstBlock: number,
    count: number,
    address: number,
    crcs: Uint32Array | undefined,
    seq: number | Float64Array,
  ): void {
    assert(firstBlock + count <= this.chunkBlocks, "range inside the chunk");
    const data = address > ADDRESS_ZERO;
    for (let i = 0; i < count; ) {
      const block = firstBlock + i;
      const pageIndex = Math.floor(block / PAGE_BLOCKS);
      const page = this.writablePage(chunk, pageIndex, address === ADDRESS_HOLE);
      const end = Math.min(count, i + PAGE_BLOCKS - (block % PAGE_BLOCKS));
      if (page === undefined) {
        i = end; // discarding blocks of a page that was never written: nothing to do
        continue;
      }
      for (; i < end; i++) {
        const slot = (firstBlock + i) % PAGE_BLOCKS;
        const old = page.addresses[slot] as number;
        if (old > ADDRESS_ZERO) this.releaseFromHead(chunk, pageIndex, slot, old);
        const next = data ? address + i : address;
        page.addresses[slot] = next;
        page.crcs[slot] = crcs === undefined ? 0 : (crcs[i] as number);
        page.seqs[slot] = typeof seq === "number" ? seq : (seq[i] as number);
        if (data) this.onLive(next, 1);
      }
    }
  }

  /** The seq of head block `block` (0 when never written). */
  headSeq(chunk: ChunkIndex, block: number): number {
    const page = chunk.head[Math.floor(block / PAGE_BLOCKS)];
    return page === undefined ? 0 : (page.seqs[block % PAGE_BLOCKS] as number);
  }

  /**
   * Compaction moved a block from `source` to `target`: every view still referring to `source`
   * (with checksum `crc`) at this block now refers to `target`. Returns false when no view did
   * (the copy is dead).
   */
  relocate(chunk: ChunkIndex, block: number, source: number, target: number, crc: number): boolean {
    const pageIndex = Math.floor(block / PAGE_BLOCKS);
    const slot = block % PAGE_BLOCKS;
    let moved = false;
    // Same address and same checksum: the copy holds exactly what the view refers to.
    const visit = (page: Page | undefined): void => {
      if (page === undefined || page.addresses[slot] !== source || page.crcs[slot] !== crc) {
        return;
      }
      page.addresses[slot] = target;
      this.dirtyPages.add(page);
      moved = true;
    };
    visit(chunk.head[pageIndex]);
    for (const pin of chunk.pins.values()) visit(pin.pages[pageIndex]);
    if (moved) {
      this.onLive(source, -1);
      this.onLive(target, 1);
    }
    return moved;
  }

  /** Pins the head as snapshot `snapshotId` (shares every page). */
  pin(chunk: ChunkIndex, snapshotId: number): void {
    assert(!chunk.pins.has(snapshotId), `snapshot ${snapshotId} pinned twice`);
    const pages = chunk.head.slice();
    for (const page of pages) if (page !== undefined) page.refs++;
    chunk.pins.set(snapshotId, {
      snapshotId,
      epoch: chunk.epoch,
      durableSeq: chunk.durableSeq,
      pages,
    });
    this.dirtyChunks.add(chunk.key);
  }

  /** Drops snapshot `snapshotId`; blocks only it referred to become dead. */
  unpin(chunk: ChunkIndex, snapshotId: number): void {
    const pin = chunk.pins.get(snapshotId);
    assert(pin !== undefined, `unpin of unknown snapshot ${snapshotId}`);
    chunk.pins.delete(snapshotId);
    this.dropView(chunk, pin.pages);
    this.dirtyChunks.add(chunk.key);
  }

  /** Removes the chunk with its head and every pin. */
  deleteChunk(chunk: ChunkIndex): void {
    // One pin at a time, each removed before its view is dropped, so a block shared by two pins
    // (in different page objects) dies once, with the last view that refers to it.
    for (const pin of [...chunk.pins.values()]) {
      chunk.pins.delete(pin.snapshotId);
      this.dropView(chunk, pin.pages);
    }
    const head = chunk.head.slice();
    chunk.head.fill(undefined);
    this.dropView(chunk, head);
    this.chunks.delete(chunk.key);
    this.dirtyChunks.delete(chunk.key);
    this.deletedChunks.add(chunk.key);
  }

  /** The page array of the head or of a pin; undefined when that snapshot is not pinned. */
  view(chunk: ChunkIndex, snapshotId?: number): PageArray | undefined {
    if (snapshotId === undefined) return chunk.head;
    return chunk.pins.get(snapshotId)?.pages;
  }

  /** True when some view of the chunk refers to `address` at `block`. */
  isLive(chunk: ChunkIndex, block: number, address: number): boolean {
    const pageIndex = Math.floor(block / PAGE_BLOCKS);
    const slot = block % PAGE_BLOCKS;
    if (chunk.head[pageIndex]?.addresses[slot] === address) return true;
    for (const pin of chunk.pins.values()) {
      if (pin.pages[pageIndex]?.addresses[slot] === address) return true;
    }
    return false;
  }

  /** The crc and seq of `block` in a view that still refers to `address`; undefined if none. */
  liveEntry(chunk: ChunkIndex, block: number, address: number): BlockEntry | undefined {
    const pageIndex = Math.floor(block / PAGE_BLOCKS);
    const slot = block % PAGE_BLOCKS;
    const entry = (page: Page | undefined): BlockEntry | undefined =>
      page?.addresses[slot] === address
        ? { address, crc: page.crcs[slot] as number, seq: page.seqs[slot] as number }
        : undefined;
    let found = entry(chunk.head[pageIndex]);
    for (const pin of chunk.pins.values()) found ??= entry(pin.pages[pageIndex]);
    return found;
  }

  /** Visits every distinct live data address once (for recomputing live counts). */
  forEachLiveAddress(visit: (address: number) => void): void {
    for (const chunk of this.chunks.values()) {
      for (let p = 0; p < this.pageCount; p++) {
        const pages = new Set<Page>();
        const head = chunk.head[p];
        if (head !== undefined) pages.add(head);
        for (const pin of chunk.pins.values()) {
          const page = pin.pages[p];
          if (page !== undefined) pages.add(page);
        }
        if (pages.size === 0) continue;
        const list = [...pages];
        for (let slot = 0; slot < PAGE_BLOCKS; slot++) {
          for (let k = 0; k < list.length; k++) {
            const address = (list[k] as Page).addresses[slot] as number;
            if (address <= ADDRESS_ZERO) continue;
            let seen = false;
            for (let j = 0; j < k && !seen; j++) seen = list[j]?.addresses[slot] === address;
            if (!seen) visit(address);
          }
        }
      }
    }
  }

  /** A page the head may change: created when absent (unless `skipIfAbsent`), copied if shared. */
  private writablePage(
    chunk: ChunkIndex,
    pageIndex: number,
    skipIfAbsent: boolean,
  ): Page | undefined {
    let page = chunk.head[pageIndex];
    if (page === undefined) {
      if (skipIfAbsent) return undefined;
      page = new Page(this.nextPageId++);
      chunk.head[pageIndex] = page;
      this.dirtyChunks.add(chunk.key);
    } else if (page.refs > 1) {
      page.refs--;
      page = new Page(this.nextPageId++, page.bytes);
      chunk.head[pageIndex] = page;
      this.dirtyChunks.add(chunk.key);
    }
    this.dirtyPages.add(page);
    return page;
  }

  /** The head stops referring to `address`; it dies unless a pin still refers to it. */
  private releaseFromHead(chunk: ChunkIndex, pageIndex: number, slot: number, address: number) {
    for (const pin of chunk.pins.values()) {
      if (pin.pages[pageIndex]?.addresses[slot] === address) return;
    }
    this.onLive(address, -1);
  }

  /** A view goes away: pages only it held are dropped, their exclusive blocks die. */
  private dropView(chunk: ChunkIndex, pages: PageArray): void {
    for (let p = 0; p < pages.length; p++) {
      const page = pages[p];
      if (page === undefined) continue;
      page.refs--;
      if (page.refs > 0) continue; // another view holds this very page: all its blocks live on
      for (let slot = 0; slot < PAGE_BLOCKS; slot++) {
        const address = page.addresses[slot] as number;
        if (address > ADDRESS_ZERO && !this.isLive(chunk, p * PAGE_BLOCKS + slot, address)) {
          this.onLive(address, -1);
        }
      }
      this.dirtyPages.delete(page);
      this.droppedPageIds.add(page.id);
    }
  }
}
