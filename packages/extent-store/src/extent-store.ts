/**
 * The extent store: one host's disks holding chunks of volumes, log-structured and checksummed.
 * This is the public face; each disk is a {@link DiskStore} (log, index, compaction).
 *
 * Contract in brief (README.md has the full text):
 * - Chunks are named by (volumeId, chunkIndex) and are `chunkSizeBytes` long (a power of two,
 *   1 MiB … 1 GiB, fixed per store and recorded on each disk). All offsets and lengths are
 *   multiples of 4096; anything else is a RangeError and changes nothing.
 * - A chunk lives on one disk, chosen at its first write (the disk with most free space).
 * - Every mutation resolves only once durable (fdatasync'd), batched with concurrent ones.
 *   Concurrent calls have no order among themselves; a call made after another resolved is
 *   ordered after it.
 * - Reads verify every block's crc32c; a mismatch is HES_CORRUPTION, never the bad bytes.
 * - Epochs and seqs are stored, not enforced: the replica service fences on them.
 */

import {
  type Clock,
  checkBytes,
  checkInteger,
  type Disk,
  HesError,
  type Logger,
  nullLogger,
  systemClock,
  throwIfAborted,
} from "@hes/base";
import { crc32c } from "@node-rs/crc32";
import {
  allocationRuns,
  type BlockRun,
  type BlockState,
  changedBetween,
  changedSinceSeq,
  nextExportRun,
} from "./block-maps.js";
import { type ChunkId, checkChunkId, chunkKey, chunkName } from "./chunk-id.js";
import type { ChunkIndex } from "./chunk-index.js";
import { DiskStore } from "./disk-store.js";
import type { StoreRecord } from "./format.js";
import {
  BLOCK_SIZE_BYTES,
  CHECKPOINT_LOG_BYTES_DEFAULT,
  CHECKPOINT_LOG_BYTES_MIN,
  CHUNK_SIZE_BYTES_DEFAULT,
  CHUNK_SIZE_BYTES_MAX,
  CHUNK_SIZE_BYTES_MIN,
  CLUSTER_ID_BYTES_MAX,
  COMPACTION_BYTES_PER_SECOND_DEFAULT,
  DISKS_MAX,
  EXPORT_PIECE_BYTES_MAX,
  SCAN_PIECE_BYTES,
  SEGMENT_SIZE_BYTES_DEFAULT,
  SEGMENT_SIZE_BYTES_MAX,
  SEGMENT_SIZE_BYTES_MIN,
} from "./limits.js";
import { SEGMENT_FREE } from "./segments.js";

/** One disk of the store and where its index database lives (a directory on the host). */
export interface StoreDisk {
  readonly disk: Disk;
  readonly indexPath: string;
}

/** Options for {@link ExtentStore.open}. */
export interface ExtentStoreOptions {
  /** The disks; the store owns them from here on: `close` closes them, so does a failed open. */
  readonly disks: readonly StoreDisk[];
  /** The cluster's id; a disk of another cluster is refused (HES_BAD_FORMAT). */
  readonly clusterId: string;
  /** Format disks that carry no hes superblock at all. Default false. */
  readonly format?: boolean;
  /** Chunk size, a power of two in [1 MiB, 1 GiB]; must match formatted disks. Default 64 MiB. */
  readonly chunkSizeBytes?: number;
  /** Segment size for disks formatted now, a power of two in [1 MiB, 1 GiB]. Default 64 MiB. */
  readonly segmentSizeBytes?: number;
  /** Log bytes between index checkpoints (bounds replay at open). Default 256 MiB. */
  readonly checkpointLogBytes?: number;
  /** Compaction's copy rate when not urgent. Default 64 MiB/s. */
  readonly compactionBytesPerSecond?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Disk ids for formatting (32 hex digits). Default: random UUIDs. */
  readonly newDiskId?: () => string;
}

/** Stamp of a mutation: the writer's epoch and its sequence number in the volume. */
export interface WriteStamp {
  /** Owner generation (≥ 0). Stored as the chunk's epoch when higher. */
  readonly epoch: number;
  /** Write sequence (≥ 1). Stored per block and as the chunk's durable seq when higher. */
  readonly seq: number;
  readonly signal?: AbortSignal;
}

/** Options of reads and maps. */
export interface ViewOptions {
  /** Read a pinned snapshot instead of the head. */
  readonly snapshotId?: number;
  readonly signal?: AbortSignal;
}

/** Options of {@link ExtentStore.exportChunk}. */
export interface ExportOptions extends ViewOptions {
  /** Only blocks changed after this seq (0: every written block). */
  readonly sinceSeq?: number;
  /** Start of the range to export (default 0). */
  readonly offsetBytes?: number;
  /** Length of the range (default: to the end of the chunk). */
  readonly lengthBytes?: number;
}

/** A chunk's version: the highest epoch seen and the highest durable seq. */
export interface ChunkVersion {
  readonly epoch: number;
  readonly durableSeq: number;
}

/** A run of bytes of a chunk in one state. */
export interface ChunkRun {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly state: BlockState;
}

/** Options of {@link ExtentStore.importChunk}. */
export interface ImportOptions {
  readonly signal?: AbortSignal;
  /**
   * Conditional import: a block whose seq, when the piece is applied (in log order, so also
   * after a crash and replay), is above the piece's seq keeps its content. For a copy into a
   * replica that takes writes meanwhile: a write that reached it before the copy's source
   * is not undone by the copy.
   */
  readonly keepNewer?: boolean;
}

/** Which changes {@link ExtentStore.changedBlocks} reports. */
export type ChangeQuery =
  | { readonly sinceSeq: number; readonly snapshotId?: number }
  | { readonly fromSnapshotId: number; readonly toSnapshotId?: number };

/** A pinned snapshot of a chunk. */
export interface SnapshotInfo {
  readonly snapshotId: number;
  /** The chunk's version when it was pinned. */
  readonly version: ChunkVersion;
}

/** One chunk as listed. */
export interface ChunkInfo {
  readonly chunk: ChunkId;
  readonly version: ChunkVersion;
  readonly diskName: string;
  readonly snapshotIds: readonly number[];
  /** Bytes of data blocks in the head. */
  readonly allocatedBytes: number;
}

/** A piece of a chunk export (see {@link ExtentStore.exportChunk}). */
export type ChunkExportPiece =
  | { readonly kind: "version"; readonly epoch: number; readonly durableSeq: number }
  | {
      readonly kind: "data";
      readonly offsetBytes: number;
      /** Its own buffer (the consumer may keep it). */
      readonly data: Uint8Array;
      /** Seq of each 4 KiB block of `data`. */
      readonly seqs: Float64Array;
    }
  | {
      readonly kind: "zero" | "hole";
      readonly offsetBytes: number;
      readonly lengthBytes: number;
      readonly seq: number;
    };

/** Space figures of one disk. */
export interface DiskStats {
  readonly name: string;
  readonly failed: boolean;
  readonly capacityBytes: number;
  readonly usedBytes: number;
  readonly liveBytes: number;
  readonly garbageBytes: number;
  readonly freeBytes: number;
  readonly chunks: number;
  readonly indexMemoryBytes: number;
  /** Bytes compaction copied since open. */
  readonly compactedBytes: number;
  /** True while compaction is copying a segment. */
  readonly compacting: boolean;
}

/** Space figures of the store (sums over its disks, failed ones excluded). */
export interface StoreStats {
  readonly capacityBytes: number;
  /** Bytes of the log in use: live data, garbage and record headers. */
  readonly usedBytes: number;
  /** Bytes of data blocks some view (head or snapshot) refers to. */
  readonly liveBytes: number;
  /** usedBytes − liveBytes: what compaction can win back. */
  readonly garbageBytes: number;
  /** Bytes of free segments. */
  readonly freeBytes: number;
  readonly indexMemoryBytes: number;
  readonly disks: readonly DiskStats[];
}

/** A block that failed verification. */
export interface BadBlock {
  readonly chunk: ChunkId;
  readonly offsetBytes: number;
  /** "head" or the snapshot id whose view holds it. */
  readonly view: "head" | number;
  readonly diskName: string;
}

/** Result of {@link ExtentStore.scrub}. */
export interface ScrubReport {
  readonly blocksChecked: number;
  readonly badBlocks: readonly BadBlock[];
}

function checkPowerOfTwo(value: number, name: string, min: number, max: number): number {
  checkInteger(value, name, { min, max });
  if ((value & (value - 1)) !== 0) throw new RangeError(`${name} must be a power of two`);
  return value;
}

function randomDiskId(): string {
  return globalThis.crypto.randomUUID().replaceAll("-", "");
}

/** The store. Open with {@link ExtentStore.open}; close with {@link close}. */
export class ExtentStore {
  readonly chunkSizeBytes: number;
  readonly blockSizeBytes = BLOCK_SIZE_BYTES;
  /** Largest single write (the smallest over the disks; 4 MiB with default segments). */
  readonly writeBytesMax: number;
  private readonly stores: readonly DiskStore[];
  private readonly placement = new Map<string, DiskStore>();
  private closing: Promise<void> | undefined;

  private constructor(stores: DiskStore[], chunkSizeBytes: number) {
    this.stores = stores;
    this.chunkSizeBytes = chunkSizeBytes;
    this.writeBytesMax = Math.min(...stores.map((store) => store.writeBytesMax));
    for (const store of stores) {
      for (const chunk of store.index.chunks.values()) {
        const other = this.placement.get(chunk.key);
        if (other !== undefined) {
          throw new HesError(
            "HES_CORRUPTION",
            `chunk ${chunk.key} is on both ${other.disk.name} and ${store.disk.name}`,
          );
        }
        this.placement.set(chunk.key, store);
      }
    }
  }

  /**
   * Opens the store over `options.disks`: reads each superblock (refusing unknown formats,
   * newer versions and other clusters with HES_BAD_FORMAT), loads each index checkpoint and
   * replays each log's tail (a damaged record in the middle of a log fails with
   * HES_CORRUPTION). Formats blank disks when `format` is set.
   */
  static async open(options: ExtentStoreOptions): Promise<ExtentStore> {
    const disks = options.disks;
    if (!Array.isArray(disks) || disks.length === 0 || disks.length > DISKS_MAX) {
      throw new RangeError(`disks must list 1..${DISKS_MAX} disks`);
    }
    const clusterId = options.clusterId;
    if (typeof clusterId !== "string" || clusterId.length === 0) {
      throw new TypeError("clusterId must be a non-empty string");
    }
    if (new TextEncoder().encode(clusterId).byteLength > CLUSTER_ID_BYTES_MAX) {
      throw new RangeError(`clusterId must be at most ${CLUSTER_ID_BYTES_MAX} bytes`);
    }
    const chunkSizeBytes = checkPowerOfTwo(
      options.chunkSizeBytes ?? CHUNK_SIZE_BYTES_DEFAULT,
      "chunkSizeBytes",
      CHUNK_SIZE_BYTES_MIN,
      CHUNK_SIZE_BYTES_MAX,
    );
    const segmentSizeBytes = checkPowerOfTwo(
      options.segmentSizeBytes ?? SEGMENT_SIZE_BYTES_DEFAULT,
      "segmentSizeBytes",
      SEGMENT_SIZE_BYTES_MIN,
      SEGMENT_SIZE_BYTES_MAX,
    );
    const checkpointLogBytes = checkInteger(
      options.checkpointLogBytes ?? CHECKPOINT_LOG_BYTES_DEFAULT,
      "checkpointLogBytes",
      { min: CHECKPOINT_LOG_BYTES_MIN },
    );
    const compactionBytesPerSecond = checkInteger(
      options.compactionBytesPerSecond ?? COMPACTION_BYTES_PER_SECOND_DEFAULT,
      "compactionBytesPerSecond",
      { min: 1 },
    );
    const stores: DiskStore[] = [];
    try {
      for (const { disk, indexPath } of disks) {
        stores.push(
          await DiskStore.open({
            disk,
            indexPath,
            clusterId,
            format: options.format ?? false,
            chunkSizeBytes,
            segmentSizeBytes,
            checkpointLogBytes,
            compactionBytesPerSecond,
            clock: options.clock ?? systemClock,
            logger: options.logger ?? nullLogger,
            newDiskId: options.newDiskId ?? randomDiskId,
          }),
        );
      }
      return new ExtentStore(stores, chunkSizeBytes);
    } catch (error) {
      // The store owns the disks it was given: on failure every one of them is closed.
      await Promise.all(stores.map((store) => store.close(false)));
      await Promise.all(disks.map(({ disk }) => disk.close().catch(() => {})));
      throw error;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Argument checks

  private checkOpen(): void {
    if (this.closing !== undefined) throw new HesError("HES_CLOSED", "extent store is closed");
  }

  private checkRange(offsetBytes: number, lengthBytes: number, lengthMax: number): void {
    checkInteger(offsetBytes, "offsetBytes", {
      min: 0,
      max: this.chunkSizeBytes - BLOCK_SIZE_BYTES,
      multipleOf: BLOCK_SIZE_BYTES,
    });
    checkInteger(lengthBytes, "lengthBytes", {
      min: BLOCK_SIZE_BYTES,
      max: lengthMax,
      multipleOf: BLOCK_SIZE_BYTES,
    });
    if (offsetBytes + lengthBytes > this.chunkSizeBytes) {
      throw new RangeError(
        `range ${offsetBytes}+${lengthBytes} ends past the chunk's ${this.chunkSizeBytes} bytes`,
      );
    }
  }

  private checkStamp(stamp: WriteStamp): void {
    if (typeof stamp !== "object" || stamp === null) {
      throw new TypeError("the stamp must be { epoch, seq }");
    }
    checkInteger(stamp.epoch, "epoch", { min: 0 });
    checkInteger(stamp.seq, "seq", { min: 1 });
    throwIfAborted(stamp.signal, "extent store write");
  }

  /** The disk holding `chunk`, or (when `place`) the one it is placed on now. */
  private diskFor(chunk: ChunkId, place: true): DiskStore;
  private diskFor(chunk: ChunkId, place: false): DiskStore | undefined;
  private diskFor(chunk: ChunkId, place: boolean): DiskStore | undefined {
    const key = chunkKey(chunk.volumeId, chunk.chunkIndex);
    const found = this.placement.get(key);
    if (found !== undefined || !place) return found;
    let best: DiskStore | undefined;
    let bestFree = -1;
    for (const store of this.stores) {
      if (store.failed !== undefined) continue;
      const free = store.table.freeCount();
      if (free > bestFree) {
        best = store;
        bestFree = free;
      }
    }
    if (best === undefined) {
      throw new HesError("HES_DISK_FAILED", `no disk in service to place ${chunkName(chunk)}`);
    }
    this.placement.set(key, best);
    return best;
  }

  private chunkOf(chunk: ChunkId): { store: DiskStore; index: ChunkIndex } | undefined {
    const store = this.diskFor(chunk, false);
    const index = store?.index.get(chunk.volumeId, chunk.chunkIndex);
    return store === undefined || index === undefined ? undefined : { store, index };
  }

  private async mutate(chunk: ChunkId, record: StoreRecord, data: Uint8Array[] = []) {
    this.checkOpen();
    const store = this.diskFor(chunk, true);
    return store.append(record, data);
  }

  // -------------------------------------------------------------------------------------------
  // Data

  /**
   * Writes `data` (a multiple of 4 KiB, at most `writeBytesMax`) at `offsetBytes` of the chunk,
   * creating the chunk on first write. Resolves once durable. The caller must not change
   * `data` until then. Atomic: after a crash either all of it or none of it is there.
   */
  async write(
    chunk: ChunkId,
    offsetBytes: number,
    data: Uint8Array,
    stamp: WriteStamp,
  ): Promise<void> {
    checkChunkId(chunk);
    checkBytes(data, "data");
    this.checkRange(offsetBytes, data.byteLength, this.writeBytesMax);
    this.checkStamp(stamp);
    const blockCount = data.byteLength / BLOCK_SIZE_BYTES;
    const crcs = new Uint32Array(blockCount);
    for (let i = 0; i < blockCount; i++) {
      crcs[i] = crc32c(data.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES));
    }
    const record: StoreRecord = {
      kind: "write",
      volumeId: chunk.volumeId,
      chunkIndex: chunk.chunkIndex,
      firstBlock: offsetBytes / BLOCK_SIZE_BYTES,
      blockCount,
      dataIndex: 0,
      epoch: stamp.epoch,
      seq: stamp.seq,
      crcs,
    };
    await this.mutate(chunk, record, [data]);
  }

  /**
   * Reads `lengthBytes` at `offsetBytes` of the chunk's head (or of a pinned snapshot). Holes,
   * zeroed blocks and chunks never written read as zeros. HES_CORRUPTION when a block fails its
   * checksum (no bytes are returned); HES_NOT_FOUND for a snapshot that is not pinned.
   */
  async read(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options: ViewOptions = {},
  ): Promise<Uint8Array> {
    checkChunkId(chunk);
    this.checkRange(offsetBytes, lengthBytes, this.chunkSizeBytes);
    const target = new Uint8Array(lengthBytes);
    await this.readInto(chunk, offsetBytes, target, options);
    return target;
  }

  /** Like {@link read}, into the caller's buffer (use the disk's pool buffers to avoid copies). */
  async readInto(
    chunk: ChunkId,
    offsetBytes: number,
    target: Uint8Array,
    options: ViewOptions = {},
  ): Promise<void> {
    checkChunkId(chunk);
    checkBytes(target, "target");
    this.checkRange(offsetBytes, target.byteLength, this.chunkSizeBytes);
    throwIfAborted(options.signal, "extent store read");
    this.checkOpen();
    const found = this.chunkOf(chunk);
    if (options.snapshotId !== undefined) this.checkPinned(chunk, found, options.snapshotId);
    if (found === undefined) {
      this.diskFor(chunk, false)?.checkUsable();
      target.fill(0);
      return;
    }
    const blocks = target.byteLength / BLOCK_SIZE_BYTES;
    await found.store.readBlocks(
      found.index,
      offsetBytes / BLOCK_SIZE_BYTES,
      blocks,
      target,
      options.snapshotId,
    );
  }

  private checkPinned(
    chunk: ChunkId,
    found: { index: ChunkIndex } | undefined,
    snapshotId: number,
  ): void {
    checkInteger(snapshotId, "snapshotId", { min: 0 });
    if (found?.index.pins.has(snapshotId) !== true) {
      throw new HesError(
        "HES_NOT_FOUND",
        `${chunkName(chunk)} has no pinned snapshot ${snapshotId}`,
      );
    }
  }

  /**
   * Makes a range read as zeros, as metadata only (no data is written). With `unmap` the range
   * becomes a hole (unallocated) instead of allocated zeroes. Durable when it resolves.
   */
  async writeZeroes(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    stamp: WriteStamp & { readonly unmap?: boolean },
  ): Promise<void> {
    await this.rangeRecord(
      stamp.unmap === true ? "discard" : "zero",
      chunk,
      offsetBytes,
      lengthBytes,
      stamp,
    );
  }

  /** Unallocates a range (it reads as zeros); its space is reclaimed by compaction. */
  async discard(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    stamp: WriteStamp,
  ): Promise<void> {
    await this.rangeRecord("discard", chunk, offsetBytes, lengthBytes, stamp);
  }

  private async rangeRecord(
    kind: "zero" | "discard",
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    stamp: WriteStamp,
    keepVersion = false,
    keepNewer = false,
  ): Promise<void> {
    checkChunkId(chunk);
    this.checkRange(offsetBytes, lengthBytes, this.chunkSizeBytes);
    this.checkStamp(stamp);
    await this.mutate(chunk, {
      kind,
      volumeId: chunk.volumeId,
      chunkIndex: chunk.chunkIndex,
      firstBlock: offsetBytes / BLOCK_SIZE_BYTES,
      blockCount: lengthBytes / BLOCK_SIZE_BYTES,
      epoch: stamp.epoch,
      seq: stamp.seq,
      keepVersion,
      keepNewer,
    });
  }

  // -------------------------------------------------------------------------------------------
  // Versions, fencing, snapshots, deletion

  /** The chunk's version; undefined when the chunk does not exist. */
  version(chunk: ChunkId): ChunkVersion | undefined {
    checkChunkId(chunk);
    const found = this.chunkOf(chunk);
    if (found === undefined) return undefined;
    return { epoch: found.index.epoch, durableSeq: found.index.durableSeq };
  }

  /**
   * Raises the chunk's epoch to at least `epoch`, durably (creating an empty chunk when absent).
   * Used to fence old owners: the replica service refuses writes below the stored epoch.
   */
  async seal(chunk: ChunkId, epoch: number): Promise<ChunkVersion> {
    checkChunkId(chunk);
    checkInteger(epoch, "epoch", { min: 0 });
    await this.chunkRecord("seal", chunk, epoch);
    return this.version(chunk) as ChunkVersion;
  }

  private async chunkRecord(
    kind: "seal" | "delete" | "pin" | "unpin" | "version",
    chunk: ChunkId,
    value: number,
    durableSeq = 0,
  ): Promise<number> {
    return this.mutate(chunk, {
      kind,
      volumeId: chunk.volumeId,
      chunkIndex: chunk.chunkIndex,
      value,
      durableSeq,
    });
  }

  /**
   * Pins the chunk's current head as snapshot `snapshotId` (redirect-on-write: no data is
   * copied; later writes leave the pinned view intact). HES_ALREADY_EXISTS if already pinned.
   */
  async pinSnapshot(chunk: ChunkId, snapshotId: number): Promise<void> {
    checkChunkId(chunk);
    checkInteger(snapshotId, "snapshotId", { min: 0 });
    if (this.chunkOf(chunk)?.index.pins.has(snapshotId) === true) {
      throw new HesError(
        "HES_ALREADY_EXISTS",
        `${chunkName(chunk)}: snapshot ${snapshotId} exists`,
      );
    }
    const applied = await this.chunkRecord("pin", chunk, snapshotId);
    if (applied === 0) {
      throw new HesError(
        "HES_ALREADY_EXISTS",
        `${chunkName(chunk)}: snapshot ${snapshotId} exists`,
      );
    }
  }

  /** Releases a pinned snapshot; blocks only it kept become garbage. HES_NOT_FOUND if absent. */
  async releaseSnapshot(chunk: ChunkId, snapshotId: number): Promise<void> {
    checkChunkId(chunk);
    checkInteger(snapshotId, "snapshotId", { min: 0 });
    this.checkPinned(chunk, this.chunkOf(chunk), snapshotId);
    const applied = await this.chunkRecord("unpin", chunk, snapshotId);
    if (applied === 0) {
      throw new HesError("HES_NOT_FOUND", `${chunkName(chunk)}: snapshot ${snapshotId} is gone`);
    }
  }

  /** The chunk's pinned snapshots. */
  snapshots(chunk: ChunkId): SnapshotInfo[] {
    checkChunkId(chunk);
    const found = this.chunkOf(chunk);
    if (found === undefined) return [];
    return [...found.index.pins.values()].map((pin) => ({
      snapshotId: pin.snapshotId,
      version: { epoch: pin.epoch, durableSeq: pin.durableSeq },
    }));
  }

  /** Deletes the chunk with its snapshots, durably. Deleting an absent chunk does nothing. */
  async deleteChunk(chunk: ChunkId): Promise<void> {
    checkChunkId(chunk);
    this.checkOpen();
    const store = this.diskFor(chunk, false);
    if (store === undefined) return;
    await store.append(
      {
        kind: "delete",
        volumeId: chunk.volumeId,
        chunkIndex: chunk.chunkIndex,
        value: 0,
        durableSeq: 0,
      },
      [],
    );
    const key = chunkKey(chunk.volumeId, chunk.chunkIndex);
    if (!store.index.chunks.has(key)) this.placement.delete(key);
  }

  /** Every chunk on every disk in service. */
  listChunks(): ChunkInfo[] {
    const list: ChunkInfo[] = [];
    for (const store of this.stores) {
      for (const chunk of store.index.chunks.values()) {
        let allocated = 0;
        for (const run of allocationRuns(chunk.head, 0, store.chunkBlocks)) {
          if (run.state === "data") allocated += run.blockCount * BLOCK_SIZE_BYTES;
        }
        list.push({
          chunk: { volumeId: chunk.volumeId, chunkIndex: chunk.chunkIndex },
          version: { epoch: chunk.epoch, durableSeq: chunk.durableSeq },
          diskName: store.disk.name,
          snapshotIds: [...chunk.pins.keys()],
          allocatedBytes: allocated,
        });
      }
    }
    return list;
  }

  // -------------------------------------------------------------------------------------------
  // Maps

  /** What each part of a range holds (for NBD block status): data, zero or hole. */
  allocationMap(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options: ViewOptions = {},
  ): ChunkRun[] {
    checkChunkId(chunk);
    this.checkRange(offsetBytes, lengthBytes, this.chunkSizeBytes);
    const found = this.chunkOf(chunk);
    if (options.snapshotId !== undefined) this.checkPinned(chunk, found, options.snapshotId);
    const first = offsetBytes / BLOCK_SIZE_BYTES;
    const count = lengthBytes / BLOCK_SIZE_BYTES;
    if (found === undefined) return [{ offsetBytes, lengthBytes, state: "hole" }];
    const pages = found.store.index.view(found.index, options.snapshotId);
    return toBytes(allocationRuns(pages ?? [], first, count));
  }

  /**
   * Changed blocks of a chunk, with their current state:
   * - `{ sinceSeq }`: every block written, zeroed or discarded by a mutation with a higher seq
   *   (in the head, or in snapshot `snapshotId`) — "give me every block written after S";
   * - `{ fromSnapshotId, toSnapshotId? }`: blocks that differ between a pinned snapshot and
   *   another one (or the head).
   */
  changedBlocks(chunk: ChunkId, query: ChangeQuery): ChunkRun[] {
    checkChunkId(chunk);
    const found = this.chunkOf(chunk);
    if ("sinceSeq" in query) {
      checkInteger(query.sinceSeq, "sinceSeq", { min: 0 });
      if (query.snapshotId !== undefined) this.checkPinned(chunk, found, query.snapshotId);
      if (found === undefined) return [];
      const pages = found.store.index.view(found.index, query.snapshotId) ?? [];
      return toBytes(changedSinceSeq(pages, query.sinceSeq));
    }
    this.checkPinned(chunk, found, query.fromSnapshotId);
    if (query.toSnapshotId !== undefined) this.checkPinned(chunk, found, query.toSnapshotId);
    const { store, index } = found as { store: DiskStore; index: ChunkIndex };
    const from = store.index.view(index, query.fromSnapshotId) ?? [];
    const to = store.index.view(index, query.toSnapshotId) ?? [];
    return toBytes(changedBetween(from, to));
  }

  // -------------------------------------------------------------------------------------------
  // Export and import (rebuild, catch-up)

  /**
   * Streams a chunk for rebuild or catch-up: first its version, then runs of data (each at most
   * 1 MiB, with per-block seqs), zeroes and holes, in block order. With `sinceSeq`, only blocks
   * changed after that seq. Memory is bounded by one piece; reads are verified (a bad block
   * ends the stream with HES_CORRUPTION). Reads the live head unless `snapshotId` is given:
   * blocks written meanwhile may appear with their new content, which a later catch-up from
   * the reported version sends again. `offsetBytes`/`lengthBytes` limit it to a range (a remote
   * copy asks for the chunk window by window, each its own request).
   */
  async *exportChunk(
    chunk: ChunkId,
    options: ExportOptions = {},
  ): AsyncGenerator<ChunkExportPiece> {
    checkChunkId(chunk);
    const sinceSeq = checkInteger(options.sinceSeq ?? 0, "sinceSeq", { min: 0 });
    const startBytes = options.offsetBytes ?? 0;
    const rangeBytes = options.lengthBytes ?? this.chunkSizeBytes - startBytes;
    this.checkRange(startBytes, rangeBytes, this.chunkSizeBytes);
    const found = this.chunkOf(chunk);
    if (options.snapshotId !== undefined) this.checkPinned(chunk, found, options.snapshotId);
    if (found === undefined) return;
    const { store, index } = found;
    const pin = options.snapshotId === undefined ? undefined : index.pins.get(options.snapshotId);
    yield {
      kind: "version",
      epoch: pin?.epoch ?? index.epoch,
      durableSeq: pin?.durableSeq ?? index.durableSeq,
    };
    const blocksMax = EXPORT_PIECE_BYTES_MAX / BLOCK_SIZE_BYTES;
    const endBlock = (startBytes + rangeBytes) / BLOCK_SIZE_BYTES;
    for (let block = startBytes / BLOCK_SIZE_BYTES; block < endBlock; ) {
      throwIfAborted(options.signal, "chunk export");
      this.checkOpen();
      const pages = store.index.view(index, options.snapshotId);
      if (pages === undefined) return; // the snapshot or chunk went away
      const run = nextExportRun(pages, block, endBlock, sinceSeq, blocksMax);
      if (run === undefined) return;
      const offsetBytes = run.firstBlock * BLOCK_SIZE_BYTES;
      const lengthBytes = run.blockCount * BLOCK_SIZE_BYTES;
      if (run.state === "data") {
        const data = new Uint8Array(lengthBytes);
        await store.readBlocks(index, run.firstBlock, run.blockCount, data, options.snapshotId);
        yield { kind: "data", offsetBytes, data, seqs: run.seqs };
      } else {
        yield { kind: run.state, offsetBytes, lengthBytes, seq: run.seqs[0] as number };
      }
      block = run.firstBlock + run.blockCount;
    }
  }

  /**
   * Applies an export (from {@link exportChunk}, possibly on another host) to a chunk: data with
   * its original per-block seqs, zeroes and holes; the version last, so an interrupted import
   * never claims a version it does not hold. Each piece is durable before the next is read.
   * Resolves with the chunk's version afterwards.
   */
  async importChunk(
    chunk: ChunkId,
    pieces: AsyncIterable<ChunkExportPiece> | Iterable<ChunkExportPiece>,
    options: ImportOptions = {},
  ): Promise<ChunkVersion | undefined> {
    const keepNewer = options.keepNewer === true;
    checkChunkId(chunk);
    let version: ChunkVersion | undefined;
    for await (const piece of pieces) {
      throwIfAborted(options.signal, "chunk import");
      if (piece.kind === "version") {
        checkInteger(piece.epoch, "piece.epoch", { min: 0 });
        checkInteger(piece.durableSeq, "piece.durableSeq", { min: 0 });
        version = { epoch: piece.epoch, durableSeq: piece.durableSeq };
      } else if (piece.kind === "data") {
        await this.importData(chunk, piece.offsetBytes, piece.data, piece.seqs, keepNewer);
      } else {
        checkInteger(piece.seq, "piece.seq", { min: 0 });
        await this.rangeRecord(
          piece.kind === "zero" ? "zero" : "discard",
          chunk,
          piece.offsetBytes,
          piece.lengthBytes,
          { epoch: 0, seq: Math.max(1, piece.seq) },
          true,
          keepNewer,
        );
      }
    }
    if (version !== undefined) {
      await this.chunkRecord("version", chunk, version.epoch, version.durableSeq);
    }
    return this.version(chunk);
  }

  private async importData(
    chunk: ChunkId,
    offsetBytes: number,
    data: Uint8Array,
    seqs: Float64Array,
    keepNewer: boolean,
  ): Promise<void> {
    checkBytes(data, "piece.data");
    this.checkRange(offsetBytes, data.byteLength, this.chunkSizeBytes);
    const blocks = data.byteLength / BLOCK_SIZE_BYTES;
    if (!(seqs instanceof Float64Array) || seqs.length !== blocks) {
      throw new RangeError("piece.seqs must hold one seq per 4 KiB block of piece.data");
    }
    for (const seq of seqs) checkInteger(seq, "piece.seqs[]", { min: 0 });
    const step = this.writeBytesMax / BLOCK_SIZE_BYTES;
    for (let first = 0; first < blocks; first += step) {
      const n = Math.min(step, blocks - first);
      const part = data.subarray(first * BLOCK_SIZE_BYTES, (first + n) * BLOCK_SIZE_BYTES);
      const crcs = new Uint32Array(n);
      for (let i = 0; i < n; i++) {
        crcs[i] = crc32c(part.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES));
      }
      const firstBlock = offsetBytes / BLOCK_SIZE_BYTES + first;
      await this.mutate(
        chunk,
        {
          kind: "place",
          volumeId: chunk.volumeId,
          chunkIndex: chunk.chunkIndex,
          blockCount: n,
          dataIndex: 0,
          blocks: Uint32Array.from({ length: n }, (_, i) => firstBlock + i),
          crcs,
          sources: new Uint32Array(n),
          seqs: seqs.subarray(first, first + n),
          keepNewer,
        },
        [part],
      );
    }
  }

  // -------------------------------------------------------------------------------------------
  // Stats, scrub, close

  /** Space and memory figures. */
  stats(): StoreStats {
    const disks = this.stores.map((store): DiskStats => {
      const { table } = store;
      const segmentSize = table.geometry.segmentSizeBytes;
      const used = table.usedBytes();
      const live = table.liveBytes();
      let free = 0;
      for (const state of table.states) if (state === SEGMENT_FREE) free += segmentSize;
      return {
        name: store.disk.name,
        failed: store.failed !== undefined,
        capacityBytes: table.geometry.segmentCount * segmentSize,
        usedBytes: used,
        liveBytes: live,
        garbageBytes: used - live,
        freeBytes: free,
        chunks: store.index.chunks.size,
        indexMemoryBytes: store.indexMemoryBytes(),
        compactedBytes: store.compactor.copiedBytes,
        compacting: store.compactor.running,
      };
    });
    const sum = (pick: (disk: DiskStats) => number): number =>
      disks.filter((disk) => !disk.failed).reduce((total, disk) => total + pick(disk), 0);
    return {
      capacityBytes: sum((disk) => disk.capacityBytes),
      usedBytes: sum((disk) => disk.usedBytes),
      liveBytes: sum((disk) => disk.liveBytes),
      garbageBytes: sum((disk) => disk.garbageBytes),
      freeBytes: sum((disk) => disk.freeBytes),
      indexMemoryBytes: sum((disk) => disk.indexMemoryBytes),
      disks,
    };
  }

  /**
   * Figures of the in-memory index, summed over the disks: pages (4 KiB each, 1 MiB of chunk),
   * extents (runs of blocks at consecutive disk addresses), data blocks, and estimated bytes.
   * Walks the whole index: for monitoring and benchmarks, not for hot paths.
   */
  indexStats(): { pages: number; extents: number; dataBlocks: number; indexBytes: number } {
    const total = { pages: 0, extents: 0, dataBlocks: 0, indexBytes: 0 };
    for (const store of this.stores) {
      const figures = store.indexFigures();
      total.pages += figures.pages;
      total.extents += figures.extents;
      total.dataBlocks += figures.dataBlocks;
      total.indexBytes += figures.indexBytes;
    }
    return total;
  }

  /**
   * Reads and verifies every data block of every view (head and snapshots) of one chunk or of
   * all chunks, reporting each block that fails its checksum. Reads go in 1 MiB pieces.
   */
  async scrub(options: { readonly chunk?: ChunkId; readonly signal?: AbortSignal } = {}) {
    const targets: Array<{ store: DiskStore; index: ChunkIndex }> = [];
    if (options.chunk !== undefined) {
      checkChunkId(options.chunk, "options.chunk");
      const found = this.chunkOf(options.chunk);
      if (found !== undefined) targets.push(found);
    } else {
      for (const store of this.stores) {
        if (store.failed !== undefined) continue;
        for (const index of store.index.chunks.values()) targets.push({ store, index });
      }
    }
    const badBlocks: BadBlock[] = [];
    let blocksChecked = 0;
    const buffer = new Uint8Array(SCAN_PIECE_BYTES);
    const pieceBlocks = SCAN_PIECE_BYTES / BLOCK_SIZE_BYTES;
    for (const { store, index } of targets) {
      const views: Array<"head" | number> = ["head", ...index.pins.keys()];
      for (const view of views) {
        for (let first = 0; first < store.chunkBlocks; first += pieceBlocks) {
          throwIfAborted(options.signal, "scrub");
          this.checkOpen();
          const pages = store.index.view(index, view === "head" ? undefined : view);
          if (pages === undefined) break;
          const bad = await store.readVerified(pages, first, pieceBlocks, buffer, false);
          blocksChecked += allocationRuns(pages, first, pieceBlocks)
            .filter((run) => run.state === "data")
            .reduce((sum, run) => sum + run.blockCount, 0);
          for (const i of bad) {
            badBlocks.push({
              chunk: { volumeId: index.volumeId, chunkIndex: index.chunkIndex },
              offsetBytes: (first + i) * BLOCK_SIZE_BYTES,
              view,
              diskName: store.disk.name,
            });
          }
        }
      }
    }
    return { blocksChecked, badBlocks } satisfies ScrubReport;
  }

  /**
   * Finishes queued work, checkpoints every index (unless `checkpoint: false`, which leaves the
   * next open to replay the log tail as after a crash) and closes the disks. Idempotent.
   */
  close(options: { readonly checkpoint?: boolean } = {}): Promise<void> {
    this.closing ??= Promise.all(
      this.stores.map((store) => store.close(options.checkpoint ?? true)),
    ).then(() => undefined);
    return this.closing;
  }

  /** What replay found at open, per disk (torn tails, corrupt blocks in the middle). */
  replayReports() {
    return this.stores.map((store) => ({ diskName: store.disk.name, ...store.replayReport }));
  }
}

function toBytes(runs: readonly BlockRun[]): ChunkRun[] {
  return runs.map((run) => ({
    offsetBytes: run.firstBlock * BLOCK_SIZE_BYTES,
    lengthBytes: run.blockCount * BLOCK_SIZE_BYTES,
    state: run.state,
  }));
}
