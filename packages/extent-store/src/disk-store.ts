/**
 * One disk of the store: its log (segments, group commit), its index (in memory, checkpointed to
 * level), replay at open, background compaction, and reads.
 *
 * Write path: a record is queued; the pump takes as many queued records as fit into one batch,
 * writes header and data with one writev, calls fdatasync once, then applies the batch to the
 * index and settles every record. Exactly one batch is in flight, so the log on disk is a
 * sequence of batches each of which was durable before the next was written (replay relies on
 * it). Failures:
 * - a failed write (EIO, ENOSPC) fails the batch's records and the next batch is written at the
 *   same position, over whatever part of it landed, so nothing acknowledged ever follows it;
 * - a failed fdatasync takes the disk out of service for good (HES_DISK_FAILED), as the Disk
 *   contract demands: nothing is retried.
 *
 * Segment sequence numbers are never reused, even across crashes: they come from a range
 * reserved durably in the index database before use (SEGMENT_SEQ_RESERVATION at a time).
 * That is what lets replay trust "a valid batch with the expected sequence" as part of the log.
 */

import {
  assert,
  type Clock,
  type Disk,
  HesError,
  isAlignedBuffer,
  isHesError,
  type Logger,
} from "@hes/base";
import { crc32c } from "@node-rs/crc32";
import { type ChunkIndex, DiskIndex, PAGE_BYTES, type PageArray } from "./chunk-index.js";
import { Compactor, type PlacedRun } from "./compaction.js";
import {
  decodeSuperblock,
  encodeBatchHeader,
  encodeSuperblock,
  FORMAT_VERSION,
  headerBlocksFor,
  headerCrcSeed,
  recordBytes,
  recordDataBlocks,
  type StoreRecord,
  type Superblock,
  superblockVersion,
} from "./format.js";
import { CommitQueue, type PendingRecord } from "./group-commit.js";
import {
  chunkOp,
  IndexDb,
  type IndexMeta,
  type IndexOp,
  type LogPosition,
  metaOp,
} from "./index-db.js";
import {
  ADDRESS_HOLE,
  ADDRESS_ZERO,
  BATCH_DATA_BYTES_MAX,
  BATCH_ENTRIES_MAX,
  BATCH_HEADER_BYTES_MAX,
  BATCHES_IN_FLIGHT_MAX,
  BLOCK_SIZE_BYTES,
  COMPACTION_RESERVE_SEGMENTS,
  DISK_BLOCKS_MAX,
  PAGE_BLOCKS,
  SEGMENTS_START_BYTES,
  SEQ_RESERVATION,
  WRITE_BYTES_MAX,
} from "./limits.js";
import { type ReplayReport, replayLog } from "./replay.js";
import { SEGMENT_ACTIVE, SEGMENT_SEALED, SegmentTable } from "./segments.js";

/** How to open one disk (built by ExtentStore from its options). */
export interface DiskStoreOptions {
  readonly disk: Disk;
  readonly indexPath: string;
  readonly clusterId: string;
  readonly format: boolean;
  /** Required to match the superblock; used when formatting. */
  readonly chunkSizeBytes: number;
  /** Used when formatting only. */
  readonly segmentSizeBytes: number;
  readonly checkpointLogBytes: number;
  readonly compactionBytesPerSecond: number;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly newDiskId: () => string;
}

/** Reads the superblock copies: the superblock, "blank" (no magic at all), or throws. */
async function readSuperblock(disk: Disk): Promise<Superblock | "blank"> {
  const block = await disk.buffers.acquire(BLOCK_SIZE_BYTES);
  try {
    const reasons: string[] = [];
    for (const position of [0, BLOCK_SIZE_BYTES]) {
      await disk.read(block, position);
      const decoded = decodeSuperblock(block);
      if (decoded.ok) return decoded.superblock;
      if (decoded.reason === "newer") {
        throw new HesError(
          "HES_BAD_FORMAT",
          `${disk.name}: written by a newer hes (extent-store format ${superblockVersion(block)}; ` +
            `this build reads up to ${FORMAT_VERSION}); upgrade hes to use it`,
        );
      }
      reasons.push(decoded.reason);
    }
    if (reasons.every((reason) => reason === "no-magic")) return "blank";
    throw new HesError(
      "HES_BAD_FORMAT",
      `${disk.name}: superblock unreadable (${reasons.join(", ")}); not a usable hes disk`,
    );
  } finally {
    disk.buffers.release(block);
  }
}

/** How a batch in flight ended. */
type FlightOutcome =
  | { readonly stage: "done" }
  | { readonly stage: "write" | "sync"; readonly error: unknown };

/** A batch written or syncing. */
interface Flight {
  readonly batch: PendingRecord[];
  /** The records as encoded (with their data indexes). */
  readonly records: StoreRecord[];
  readonly buffer: Uint8Array;
  readonly offset: number;
  readonly lengthBytes: number;
  /** Disk block address of the batch's first data block. */
  readonly dataStart: number;
  readonly lsn: number;
  /** Never rejects. */
  readonly done: Promise<FlightOutcome>;
}

/** One disk's store. Open with {@link DiskStore.open}. */
export class DiskStore {
  readonly disk: Disk;
  readonly superblock: Superblock;
  readonly crcSeed: number;
  readonly table: SegmentTable;
  readonly index: DiskIndex;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly bytesPerSecond: number;
  readonly writeBytesMax: number;
  readonly compactor: Compactor;
  /** What replay found at open. */
  replayReport: ReplayReport | undefined;
  lastForegroundMs = Number.NEGATIVE_INFINITY;
  checkpointSeq = 0;
  spaceBlocked = false;

  private readonly db: IndexDb;
  private readonly options: DiskStoreOptions;
  private readonly queue = new CommitQueue();
  private readonly batchDataBytesMax: number;
  /** Header buffers for batches in flight (one each) and one block for end records. */
  private readonly headerBuffers: Uint8Array[] = [];
  private endBuffer: Uint8Array | undefined;
  /** Batches written or syncing, oldest first; applied strictly in this order. */
  private readonly flights: Flight[] = [];
  private active = 0;
  /** Where the next batch is written (past the batches in flight). */
  private appendOffset = 0;
  /** End of the last applied batch, and its LSN: what a checkpoint describes. */
  private appliedOffset = 0;
  private appliedLsn = 0;
  private activeSeq = 0;
  private seqCursor = 0;
  /** Sequence numbers up to this one are durably reserved (usable). */
  private seqReserved = 0;
  /** What meta writes record: at least `seqReserved`, ahead of it while a reservation is written. */
  private seqReservedTarget = 0;
  private reserving: Promise<void> | undefined;
  private checkpointPosition: LogPosition = { segment: 0, offsetBytes: 0, seq: 0, lsn: 0 };
  private logBytesSinceCheckpoint = 0;
  private pumping: Promise<void> | undefined;
  private spaceWaiters: Array<() => void> = [];
  private levelChain: Promise<void> = Promise.resolve();
  private checkpointQueued: Promise<void> | undefined;
  private failure: HesError | undefined;
  private closing: Promise<void> | undefined;

  private constructor(options: DiskStoreOptions, superblock: Superblock, db: IndexDb) {
    this.options = options;
    this.disk = options.disk;
    this.superblock = superblock;
    this.db = db;
    this.crcSeed = headerCrcSeed(superblock.diskId);
    this.clock = options.clock;
    this.logger = options.logger.child({ disk: options.disk.name });
    this.bytesPerSecond = options.compactionBytesPerSecond;
    this.table = new SegmentTable({
      segmentCount: superblock.segmentCount,
      segmentSizeBytes: superblock.segmentSizeBytes,
      segmentsStartBytes: superblock.segmentsStartBytes,
    });
    const chunkBlocks = superblock.chunkSizeBytes / BLOCK_SIZE_BYTES;
    this.index = new DiskIndex(chunkBlocks, (address, delta) => this.table.addLive(address, delta));
    this.writeBytesMax = Math.min(WRITE_BYTES_MAX, superblock.segmentSizeBytes / 4);
    this.batchDataBytesMax = Math.min(BATCH_DATA_BYTES_MAX, superblock.segmentSizeBytes / 2);
    this.compactor = new Compactor(this);
  }

  /** Opens (formatting when asked and the disk is blank), loads the index and replays. */
  static async open(options: DiskStoreOptions): Promise<DiskStore> {
    const found = await readSuperblock(options.disk);
    const db = await IndexDb.open(options.indexPath);
    try {
      let superblock: Superblock;
      if (found === "blank") {
        if (!options.format) {
          throw new HesError(
            "HES_BAD_FORMAT",
            `${options.disk.name}: no hes superblock (unformatted or another format); ` +
              "open with format: true to format it",
          );
        }
        superblock = await DiskStore.format(options, db);
      } else {
        superblock = DiskStore.checkSuperblock(options, found);
      }
      const store = new DiskStore(options, superblock, db);
      await store.load();
      return store;
    } catch (error) {
      await db.close();
      throw error;
    }
  }

  private static checkSuperblock(options: DiskStoreOptions, superblock: Superblock): Superblock {
    const name = options.disk.name;
    if (superblock.clusterId !== options.clusterId) {
      throw new HesError(
        "HES_BAD_FORMAT",
        `${name}: belongs to cluster "${superblock.clusterId}", not "${options.clusterId}"`,
      );
    }
    if (superblock.chunkSizeBytes !== options.chunkSizeBytes) {
      throw new HesError(
        "HES_BAD_FORMAT",
        `${name}: formatted for ${superblock.chunkSizeBytes}-byte chunks, ` +
          `not ${options.chunkSizeBytes}`,
      );
    }
    const end =
      superblock.segmentsStartBytes + superblock.segmentCount * superblock.segmentSizeBytes;
    if (end > options.disk.sizeBytes) {
      throw new HesError(
        "HES_BAD_FORMAT",
        `${name}: superblock describes ${end} bytes but the disk has ${options.disk.sizeBytes}`,
      );
    }
    return superblock;
  }

  /** Writes a fresh index, then the superblock (a crash in between leaves the disk blank). */
  private static async format(options: DiskStoreOptions, db: IndexDb): Promise<Superblock> {
    const { disk } = options;
    if (disk.sizeBytes / BLOCK_SIZE_BYTES > DISK_BLOCKS_MAX) {
      throw new RangeError(`${disk.name}: larger than the 16 TiB a disk may hold`);
    }
    const segmentCount = Math.floor(
      (disk.sizeBytes - SEGMENTS_START_BYTES) / options.segmentSizeBytes,
    );
    if (segmentCount < COMPACTION_RESERVE_SEGMENTS + 2) {
      throw new RangeError(
        `${disk.name}: ${disk.sizeBytes} bytes hold ${segmentCount} segments of ` +
          `${options.segmentSizeBytes} bytes; at least ${COMPACTION_RESERVE_SEGMENTS + 2} needed`,
      );
    }
    const superblock: Superblock = {
      formatVersion: FORMAT_VERSION,
      diskId: options.newDiskId(),
      clusterId: options.clusterId,
      segmentSizeBytes: options.segmentSizeBytes,
      segmentCount,
      segmentsStartBytes: SEGMENTS_START_BYTES,
      chunkSizeBytes: options.chunkSizeBytes,
      createdWallMs: Math.floor(options.clock.wallMs()),
    };
    const table = new SegmentTable(superblock);
    table.states[0] = SEGMENT_ACTIVE;
    table.seqs[0] = 1;
    const meta: IndexMeta = {
      formatVersion: FORMAT_VERSION,
      diskId: superblock.diskId,
      clusterId: superblock.clusterId,
      position: { segment: 0, offsetBytes: 0, seq: 1, lsn: 0 },
      nextPageId: 1,
      seqReserved: 1,
      clean: false,
    };
    await db.reset([metaOp(meta), { type: "put", key: "segments", value: table.encode() }]);
    const block = encodeSuperblock(superblock);
    await disk.write(block, 0);
    await disk.write(block, BLOCK_SIZE_BYTES);
    await disk.sync();
    options.logger.info({ disk: disk.name, diskId: superblock.diskId }, "formatted disk");
    return superblock;
  }

  /** Loads the checkpoint, replays the log tail, and checkpoints the result. */
  private async load(): Promise<void> {
    const meta = await this.db.readMeta();
    const name = this.disk.name;
    if (meta === undefined) {
      throw new HesError(
        "HES_BAD_FORMAT",
        `${name}: no index at ${this.db.path} (the index database of this disk is lost; ` +
          "the disk must be rebuilt from replicas or reformatted)",
      );
    }
    if (meta.diskId !== this.superblock.diskId || meta.formatVersion > FORMAT_VERSION) {
      throw new HesError(
        "HES_BAD_FORMAT",
        `${name}: the index at ${this.db.path} belongs to disk ${meta.diskId}, ` +
          `not ${this.superblock.diskId}`,
      );
    }
    const segments = await this.db.readSegments();
    assert(segments !== undefined, "index meta without a segment table");
    this.table.decodeInto(segments);
    await this.db.loadInto(this.index);
    this.index.nextPageId = meta.nextPageId;
    this.index.forEachLiveAddress((address) => this.table.addLive(address, 1));
    for (let i = 0; i < BATCHES_IN_FLIGHT_MAX; i++) {
      this.headerBuffers.push(await this.disk.buffers.acquire(BATCH_HEADER_BYTES_MAX));
    }
    this.endBuffer = await this.disk.buffers.acquire(BLOCK_SIZE_BYTES);
    const report = await replayLog(this, meta.position, meta.clean);
    this.replayReport = report;
    const { position } = report;
    this.active = position.segment;
    this.appendOffset = position.offsetBytes;
    this.appliedOffset = position.offsetBytes;
    this.appliedLsn = position.lsn;
    this.activeSeq = position.seq;
    // Above everything any earlier run may have used, even in batches replay did not accept.
    this.seqCursor = Math.max(position.seq, position.lsn, meta.seqReserved) + 1;
    this.checkpointPosition = meta.position;
    this.checkpointSeq = meta.position.seq;
    this.logger.info(
      { batches: report.batches, bytes: report.bytes, stopped: report.stoppedBecause },
      "replayed log tail",
    );
    this.seqReservedTarget = this.seqCursor + SEQ_RESERVATION - 1;
    await this.requestCheckpoint(); // writes the reservation with the replayed state
    this.seqReserved = this.seqReservedTarget;
    this.compactor.start();
  }

  // -------------------------------------------------------------------------------------------
  // Appending

  /** Usable or not: throws the reason this disk takes no more calls. */
  checkUsable(): void {
    if (this.closing !== undefined) throw new HesError("HES_CLOSED", `${this.disk.name}: closed`);
    if (this.failure !== undefined) throw this.failure;
  }

  get chunkBlocks(): number {
    return this.index.chunkBlocks;
  }

  get failed(): HesError | undefined {
    return this.failure;
  }

  /**
   * Appends one foreground record with its data (block-aligned buffers, `dataBlocks` × 4 KiB);
   * resolves once durable and applied, with the apply result.
   */
  async append(record: StoreRecord, data: readonly Uint8Array[]): Promise<number> {
    this.checkUsable();
    const dataBlocks = recordDataBlocks(record);
    const owned = this.disk.direct ? await this.alignedCopy(data, dataBlocks) : undefined;
    try {
      await this.queue.admit(dataBlocks * BLOCK_SIZE_BYTES);
      this.checkUsable();
      this.lastForegroundMs = this.clock.nowMs();
      return await new Promise<number>((resolve, reject) => {
        this.queue.push({
          record,
          data: owned === undefined ? data : [owned],
          dataBlocks,
          headerBytes: recordBytes(record),
          internal: false,
          resolve,
          reject,
        });
        this.pump();
      });
    } finally {
      if (owned !== undefined) this.disk.buffers.release(owned);
    }
  }

  /** For direct disks: the data in one pool buffer (no copy when it already is one). */
  private async alignedCopy(
    data: readonly Uint8Array[],
    dataBlocks: number,
  ): Promise<Uint8Array | undefined> {
    if (dataBlocks === 0) return undefined;
    if (data.every((part) => isAlignedBuffer(part))) return undefined;
    const owned = await this.disk.buffers.acquire(dataBlocks * BLOCK_SIZE_BYTES);
    let offset = 0;
    for (const part of data) {
      owned.set(part, offset);
      offset += part.byteLength;
    }
    return owned;
  }

  /** Compaction's place records: no admission, first in the next batch. */
  appendInternal(items: readonly PlacedRun[]): Promise<void> {
    this.checkUsable();
    const settled = items.map(
      (item) =>
        new Promise<number>((resolve, reject) => {
          this.queue.push({
            record: item.record,
            data: item.data,
            dataBlocks: item.record.blockCount,
            headerBytes: recordBytes(item.record),
            internal: true,
            resolve,
            reject,
          });
        }),
    );
    this.pump();
    this.wakeSpaceWaiters();
    return Promise.all(settled).then(() => undefined);
  }

  private pump(): void {
    this.pumping ??= this.pumpLoop().finally(() => {
      this.pumping = undefined;
      // A record pushed after the loop's last check but before this callback ran found
      // `pumping` still set and started nothing: without this re-check it would wait for the
      // next write to come along (for ever, when none does: a lost wakeup).
      if (this.failure === undefined && this.queue.length > 0) this.pump();
    });
  }

  /**
   * Keeps up to BATCHES_IN_FLIGHT_MAX batches written or syncing, and completes them in log
   * order. A new segment is opened only with nothing in flight.
   */
  private async pumpLoop(): Promise<void> {
    while (this.failure === undefined && (this.queue.length > 0 || this.flights.length > 0)) {
      if (this.flights.length >= BATCHES_IN_FLIGHT_MAX || this.queue.length === 0) {
        await this.completeOldest();
        continue;
      }
      const plan = this.planBatch();
      if (plan === "blocked") {
        if (this.flights.length > 0) await this.completeOldest();
        else await this.waitForSpace();
        continue;
      }
      this.spaceBlocked = false;
      if (plan.roll) {
        if (this.flights.length > 0) {
          this.queue.putBack(plan.records);
          await this.completeOldest();
          continue;
        }
        try {
          await this.roll();
        } catch (error) {
          this.queue.settle(plan.records);
          const mapped = this.noteFailure(error);
          for (const pending of plan.records) pending.reject(mapped);
          continue;
        }
      }
      if (this.seqCursor + 2 > this.seqReserved) await this.reserveSeqs();
      this.launch(plan.records);
    }
  }

  /** The next batch, whether the log must first move to a new segment, or "blocked". */
  private planBatch(): { records: PendingRecord[]; roll: boolean } | "blocked" {
    const segmentSize = this.table.geometry.segmentSizeBytes;
    const bounds = (roomBytes: number, admit: "all" | "no-data" | "internal") => ({
      roomBytes,
      dataBytesMax: this.batchDataBytesMax,
      headerBytesMax: BATCH_HEADER_BYTES_MAX,
      entriesMax: BATCH_ENTRIES_MAX,
      admit,
    });
    // One block at the end of every segment stays free for its end record.
    const room = segmentSize - this.appendOffset - BLOCK_SIZE_BYTES;
    let records = this.queue.take(bounds(room, "all"));
    if (records.length > 0) return { records, roll: false };
    // The active segment is full: the next batch opens a new one. Foreground data may not take
    // the reserved segments, data-less records may (they free space), the last is compaction's.
    const free = this.table.freeCount();
    const fresh = segmentSize - BLOCK_SIZE_BYTES;
    const admit = free > COMPACTION_RESERVE_SEGMENTS ? "all" : free > 1 ? "no-data" : "internal";
    if (free > 0) {
      records = this.queue.take(bounds(fresh, admit));
      if (records.length > 0) return { records, roll: true };
    }
    return "blocked";
  }

  /**
   * Foreground data waits for compaction to free segments, or fails HES_NO_SPACE at once when
   * compaction cannot win back a segment.
   */
  private async waitForSpace(): Promise<void> {
    if (this.closing !== undefined) {
      this.queue.failAll(new HesError("HES_CLOSED", `${this.disk.name}: closed while waiting`));
      return;
    }
    if (this.table.freeCount() === 0 && !this.table.hasEmptySealed()) {
      // Not even compaction can write: only freeing an emptied segment could help, and none is.
      this.queue.failAll(
        new HesError("HES_NO_SPACE", `${this.disk.name}: no free segment left; nothing written`),
      );
      return;
    }
    if (!this.compactor.running && !this.compactor.canFreeSpace()) {
      const segmentSize = this.table.geometry.segmentSizeBytes;
      const error = new HesError(
        "HES_NO_SPACE",
        `${this.disk.name}: full: ${this.table.liveBytes()} bytes live in ` +
          `${this.table.geometry.segmentCount} segments of ${segmentSize} bytes, ` +
          "and compaction cannot free a segment; nothing was written",
      );
      const failed = this.queue.takeDataRecords();
      this.queue.settle(failed);
      for (const pending of failed) pending.reject(error);
      if (this.table.freeCount() === 0) this.queue.failAll(error);
      return;
    }
    this.spaceBlocked = true;
    const waited = new Promise<void>((resolve) => this.spaceWaiters.push(resolve));
    this.compactor.kick();
    await waited;
  }

  /** Wakes a pump waiting for space (segments were freed, or compaction finished a pass). */
  private wakeSpaceWaiters(): void {
    for (const wake of this.spaceWaiters.splice(0)) wake();
  }

  /** Compaction ran out of work: let blocked writers re-check (and maybe fail HES_NO_SPACE). */
  compactionIdle(): void {
    if (this.spaceBlocked) this.wakeSpaceWaiters();
  }

  /** Encodes a batch at the append position and starts its write and fdatasync. */
  private launch(batch: PendingRecord[]): void {
    let dataIndex = 0;
    let headerBytes = 0;
    const records = batch.map((pending) => {
      headerBytes += pending.headerBytes;
      const record = pending.record;
      if (record.kind !== "write" && record.kind !== "place") return record;
      const placed = { ...record, dataIndex };
      dataIndex += pending.dataBlocks;
      return placed;
    });
    const headerBlocks = headerBlocksFor(headerBytes);
    const buffer = this.headerBuffers.pop();
    assert(buffer !== undefined, "a header buffer per batch in flight");
    const header = buffer.subarray(0, headerBlocks * BLOCK_SIZE_BYTES);
    const lsn = this.takeSeq();
    const placement = {
      segmentSeq: this.activeSeq,
      segmentIndex: this.active,
      offsetBlocks: this.appendOffset / BLOCK_SIZE_BYTES,
      headerBlocks,
      dataBlocks: dataIndex,
      lsn,
      durableLsn: this.appliedLsn,
    };
    encodeBatchHeader(header, placement, records, this.crcSeed);
    const parts: Uint8Array[] = [header];
    for (const pending of batch) parts.push(...pending.data);
    const positionBytes = this.table.startBytes(this.active) + this.appendOffset;
    const lengthBytes = (headerBlocks + dataIndex) * BLOCK_SIZE_BYTES;
    const done = (async (): Promise<FlightOutcome> => {
      try {
        await this.disk.write(parts, positionBytes);
      } catch (error) {
        return { stage: "write", error };
      }
      try {
        await this.disk.sync();
      } catch (error) {
        return { stage: "sync", error };
      }
      return { stage: "done" };
    })();
    this.flights.push({
      batch,
      records,
      buffer,
      offset: this.appendOffset,
      lengthBytes,
      dataStart: positionBytes / BLOCK_SIZE_BYTES + headerBlocks,
      lsn,
      done,
    });
    this.appendOffset += lengthBytes;
  }

  /** Waits for the oldest batch in flight and applies it (or handles its failure). */
  private async completeOldest(): Promise<void> {
    const flight = this.flights[0];
    if (flight === undefined) return;
    const outcome = await flight.done;
    this.flights.shift();
    this.headerBuffers.push(flight.buffer);
    if (outcome.stage === "done" && this.failure === undefined) {
      this.applyFlight(flight);
      return;
    }
    // Batches after a failed one sit past a region of unknown content: undo them (their
    // records go back to the queue, unacknowledged) and write again from the failed offset.
    const later = this.flights.splice(0);
    const outcomes = await Promise.all(later.map((next) => next.done));
    for (const next of later) this.headerBuffers.push(next.buffer);
    this.appendOffset = flight.offset;
    this.queue.settle(flight.batch);
    let error: unknown = this.failure;
    if (outcome.stage === "sync") error = this.fail(outcome.error);
    else if (outcome.stage === "write") error = this.noteFailure(outcome.error);
    for (const pending of flight.batch) pending.reject(error);
    for (const next of outcomes) if (next.stage === "sync") this.fail(next.error);
    for (let i = later.length - 1; i >= 0; i--) {
      const next = later[i] as Flight;
      if (this.failure !== undefined) {
        this.queue.settle(next.batch);
        for (const pending of next.batch) pending.reject(this.failure);
      } else {
        this.queue.putBack(next.batch);
      }
    }
  }

  /** A batch is durable: apply its records in order and settle its callers. */
  private applyFlight(flight: Flight): void {
    const results = flight.records.map((record) => this.apply(record, flight.dataStart));
    this.appliedOffset = flight.offset + flight.lengthBytes;
    this.appliedLsn = flight.lsn;
    this.table.fillBytes[this.active] = this.appliedOffset;
    this.logBytesSinceCheckpoint += flight.lengthBytes;
    this.queue.settle(flight.batch);
    flight.batch.forEach((pending, i) => {
      pending.resolve(results[i] as number);
    });
    if (this.logBytesSinceCheckpoint >= this.options.checkpointLogBytes) {
      this.requestCheckpoint().catch(() => {});
    }
    this.compactor.kick();
  }

  /** Ends the active segment with an end record (synced) and makes the next one active. */
  private async roll(): Promise<void> {
    assert(this.flights.length === 0, "roll with batches in flight");
    const next = this.table.freeSegments()[0];
    assert(next !== undefined, "roll without a free segment");
    if (this.seqCursor + 2 > this.seqReserved) await this.reserveSeqs();
    const nextSeq = this.takeSeq();
    const lsn = this.takeSeq();
    const header = this.endBuffer as Uint8Array;
    const placement = {
      segmentSeq: this.activeSeq,
      segmentIndex: this.active,
      offsetBlocks: this.appendOffset / BLOCK_SIZE_BYTES,
      headerBlocks: 1,
      dataBlocks: 0,
      lsn,
      durableLsn: this.appliedLsn,
    };
    encodeBatchHeader(
      header,
      placement,
      [{ kind: "end", nextSegment: next, nextSeq }],
      this.crcSeed,
    );
    await this.disk.write(header, this.table.startBytes(this.active) + this.appendOffset);
    try {
      await this.disk.sync();
    } catch (error) {
      throw this.fail(error);
    }
    this.table.states[this.active] = SEGMENT_SEALED;
    this.table.fillBytes[this.active] = this.appendOffset + BLOCK_SIZE_BYTES;
    this.table.states[next] = SEGMENT_ACTIVE;
    this.table.seqs[next] = nextSeq;
    this.table.fillBytes[next] = 0;
    this.logBytesSinceCheckpoint += BLOCK_SIZE_BYTES;
    this.active = next;
    this.appendOffset = 0;
    this.appliedOffset = 0;
    this.appliedLsn = lsn;
    this.activeSeq = nextSeq;
  }

  /** The next sequence number (segment seq or batch LSN); reserved before use. */
  private takeSeq(): number {
    const seq = this.seqCursor++;
    assert(seq <= this.seqReserved, "sequence numbers are reserved before use");
    if (this.seqReserved - this.seqCursor < SEQ_RESERVATION / 2) {
      this.reserveSeqs().catch(() => {});
    }
    return seq;
  }

  /** Durably raises the reservation (through the index database's write chain). */
  private reserveSeqs(): Promise<void> {
    this.reserving ??= (async () => {
      const target = this.seqCursor + SEQ_RESERVATION - 1;
      this.seqReservedTarget = Math.max(this.seqReservedTarget, target);
      try {
        await this.enqueueLevel(() => this.metaOnlyOps());
        this.seqReserved = Math.max(this.seqReserved, target);
      } finally {
        this.reserving = undefined;
      }
    })();
    return this.reserving;
  }

  /** Applies one durable record to the index; returns blocks moved (place) or 0. */
  apply(record: StoreRecord, dataStart: number): number {
    const { index } = this;
    switch (record.kind) {
      case "write": {
        const chunk = index.ensure(record.volumeId, record.chunkIndex);
        index.setHead(
          chunk,
          record.firstBlock,
          record.blockCount,
          dataStart + record.dataIndex,
          record.crcs,
          record.seq,
        );
        index.bumpVersion(chunk, record.epoch, record.seq);
        return 0;
      }
      case "zero":
      case "discard": {
        const chunk = index.ensure(record.volumeId, record.chunkIndex);
        const address = record.kind === "zero" ? ADDRESS_ZERO : ADDRESS_HOLE;
        if (record.keepNewer === true) {
          // A conditional import: blocks written meanwhile with a newer seq stay.
          const end = record.firstBlock + record.blockCount;
          for (let block = record.firstBlock; block < end; block++) {
            if (index.headSeq(chunk, block) > record.seq) continue;
            index.setHead(chunk, block, 1, address, undefined, record.seq);
          }
        } else {
          index.setHead(
            chunk,
            record.firstBlock,
            record.blockCount,
            address,
            undefined,
            record.seq,
          );
        }
        if (!record.keepVersion) index.bumpVersion(chunk, record.epoch, record.seq);
        return 0;
      }
      case "place":
        return this.applyPlace(record, dataStart);
      case "end":
        assert(false, "end records are applied by roll and replay");
        return 0;
      default:
        return this.applyChunkRecord(record);
    }
  }

  private applyPlace(record: StoreRecord & { kind: "place" }, dataStart: number): number {
    const { index } = this;
    const conditional = record.sources[0] !== 0;
    const chunk = conditional
      ? index.get(record.volumeId, record.chunkIndex)
      : index.ensure(record.volumeId, record.chunkIndex);
    if (chunk === undefined) return 0;
    let moved = 0;
    for (let i = 0; i < record.blockCount; i++) {
      const address = dataStart + record.dataIndex + i;
      const block = record.blocks[i] as number;
      const source = record.sources[i] as number;
      if (source !== 0) {
        if (index.relocate(chunk, block, source, address, record.crcs[i] as number)) moved++;
      } else if (
        !(record.keepNewer === true && index.headSeq(chunk, block) > (record.seqs[i] as number))
      ) {
        index.setHead(
          chunk,
          block,
          1,
          address,
          record.crcs.subarray(i, i + 1),
          record.seqs[i] as number,
        );
        moved++;
      }
    }
    return moved;
  }

  private applyChunkRecord(
    record: StoreRecord & { kind: "seal" | "delete" | "pin" | "unpin" | "version" },
  ): number {
    const { index } = this;
    if (record.kind === "delete") {
      const chunk = index.get(record.volumeId, record.chunkIndex);
      if (chunk !== undefined) index.deleteChunk(chunk);
      return 0;
    }
    if (record.kind === "unpin") {
      const chunk = index.get(record.volumeId, record.chunkIndex);
      if (chunk === undefined || !chunk.pins.has(record.value)) return 0;
      index.unpin(chunk, record.value);
      return 1;
    }
    const chunk = index.ensure(record.volumeId, record.chunkIndex);
    if (record.kind === "pin") {
      if (chunk.pins.has(record.value)) return 0; // a concurrent duplicate: the first one won
      index.pin(chunk, record.value);
      return 1;
    }
    if (record.kind === "seal") index.bumpVersion(chunk, record.value, 0);
    else index.bumpVersion(chunk, record.value, record.durableSeq);
    return 0;
  }

  /** Maps a write-stage error; disk-level failures take the disk out of service. */
  private noteFailure(error: unknown): unknown {
    if (isHesError(error, "HES_DISK_FAILED", "HES_CLOSED")) return this.fail(error);
    if (isHesError(error) || error instanceof RangeError) return error;
    return new HesError("HES_IO", `${this.disk.name}: write failed: ${String(error)}`, {
      cause: error,
    });
  }

  /** Takes the disk out of service: every queued and later call fails with the returned error. */
  private fail(error: unknown): HesError {
    if (this.failure === undefined) {
      this.failure = isHesError(error, "HES_DISK_FAILED")
        ? error
        : new HesError(
            "HES_DISK_FAILED",
            `${this.disk.name}: fdatasync failed; the disk is out of service ` +
              "(unsynced writes may be lost and are never retried)",
            { cause: error },
          );
      this.logger.error({ err: error }, "disk taken out of service");
      this.queue.failAll(this.failure);
      this.wakeSpaceWaiters();
      this.compactor.kick();
    }
    return this.failure;
  }

  // -------------------------------------------------------------------------------------------
  // Reading

  /**
   * Reads `count` blocks of a chunk's head (or of pinned snapshot `snapshotId`) from
   * `firstBlock` into `target`; holes and zeroed blocks read as zeros. Every data block's crc32c
   * is verified: a mismatch is HES_CORRUPTION and the bytes must not be used.
   */
  async readBlocks(
    chunk: ChunkIndex | undefined,
    firstBlock: number,
    count: number,
    target: Uint8Array,
    snapshotId?: number,
  ): Promise<void> {
    this.checkUsable();
    const pages = chunk === undefined ? undefined : this.index.view(chunk, snapshotId);
    const bad = await this.readVerified(pages, firstBlock, count, target, true);
    if (bad.length > 0) {
      const block = firstBlock + (bad[0] as number);
      throw new HesError(
        "HES_CORRUPTION",
        `${this.disk.name}: chunk ${chunk?.key} block ${block} failed its checksum; ` +
          "the data was not returned",
        { details: { block } },
      );
    }
  }

  /**
   * Reads blocks of a view into `target` and verifies them; returns the indexes (relative to
   * `firstBlock`) of blocks whose crc32c does not match (only the first when `firstOnly`).
   */
  async readVerified(
    pages: PageArray | undefined,
    firstBlock: number,
    count: number,
    target: Uint8Array,
    firstOnly: boolean,
  ): Promise<number[]> {
    const addresses = new Uint32Array(count);
    const crcs = new Uint32Array(count);
    if (pages !== undefined) lookup(pages, firstBlock, count, addresses, crcs);
    const runs: Array<{ readonly first: number; readonly length: number }> = [];
    for (let i = 0; i < count; ) {
      const address = addresses[i] as number;
      if (address <= ADDRESS_ZERO) {
        target.fill(0, i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES);
        i++;
        continue;
      }
      let end = i + 1;
      while (end < count && addresses[end] === address + (end - i)) end++;
      runs.push({ first: i, length: end - i });
      i = end;
    }
    if (runs.length === 0) return [];
    const segments = runs.map((run) => this.table.segmentOf(addresses[run.first] as number));
    for (const segment of segments) this.table.addReader(segment);
    try {
      await Promise.all(
        runs.map((run) =>
          this.disk.read(
            target.subarray(
              run.first * BLOCK_SIZE_BYTES,
              (run.first + run.length) * BLOCK_SIZE_BYTES,
            ),
            (addresses[run.first] as number) * BLOCK_SIZE_BYTES,
          ),
        ),
      );
    } finally {
      for (const segment of segments) this.releaseReader(segment);
    }
    const bad: number[] = [];
    for (const run of runs) {
      for (let i = run.first; i < run.first + run.length; i++) {
        const block = target.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES);
        if (crc32c(block) !== crcs[i]) {
          bad.push(i);
          if (firstOnly) return bad;
        }
      }
    }
    return bad;
  }

  private releaseReader(segment: number): void {
    const { table } = this;
    const readers = table.removeReader(segment);
    // A reader may have held back the freeing of an emptied segment: free it now.
    if (
      readers === 0 &&
      table.states[segment] === SEGMENT_SEALED &&
      table.liveBlocks[segment] === 0 &&
      (table.seqs[segment] as number) < this.checkpointSeq
    ) {
      if (table.reclaim(this.checkpointSeq) > 0) this.wakeSpaceWaiters();
    }
  }

  /** Registers a reader of `segment` (it is not freed until released); returns the release. */
  pinSegment(segment: number): () => void {
    this.table.addReader(segment);
    return () => this.releaseReader(segment);
  }

  // -------------------------------------------------------------------------------------------
  // Checkpoints

  /** Checkpoints the index; resolves when durable. Concurrent requests share one run. */
  requestCheckpoint(): Promise<void> {
    if (this.checkpointQueued !== undefined) return this.checkpointQueued;
    const run = this.enqueueLevel(() => this.captureCheckpoint(false), true);
    this.checkpointQueued = run;
    return run;
  }

  /**
   * Serializes every index database write. `capture` runs when the write starts (so it sees
   * the latest state); `isCheckpoint` marks runs whose success moves the checkpoint position.
   */
  private enqueueLevel(
    capture: () => { ops: IndexOp[]; position: LogPosition; restore: () => void },
    isCheckpoint = false,
  ): Promise<void> {
    const run = this.levelChain.then(async () => {
      if (isCheckpoint) this.checkpointQueued = undefined;
      const { ops, position, restore } = capture();
      try {
        await this.db.write(ops);
      } catch (error) {
        restore();
        this.logger.error({ err: error }, "index checkpoint failed; replay will be longer");
        throw error;
      }
      if (isCheckpoint) this.checkpointDone(position);
    });
    this.levelChain = run.catch(() => {});
    return run;
  }

  private checkpointDone(position: LogPosition): void {
    this.checkpointPosition = position;
    this.checkpointSeq = position.seq;
    if (this.table.reclaim(position.seq) > 0) this.wakeSpaceWaiters();
    this.compactor.kick();
  }

  private meta(position: LogPosition, clean: boolean): IndexMeta {
    return {
      formatVersion: FORMAT_VERSION,
      diskId: this.superblock.diskId,
      clusterId: this.superblock.clusterId,
      position,
      nextPageId: this.index.nextPageId,
      seqReserved: this.seqReservedTarget,
      clean,
    };
  }

  private metaOnlyOps() {
    return {
      ops: [metaOp(this.meta(this.checkpointPosition, false))],
      position: this.checkpointPosition,
      restore: () => {},
    };
  }

  /** Takes the index state at this instant (between batches) as checkpoint operations. */
  private captureCheckpoint(clean: boolean) {
    const { index } = this;
    // The applied position: batches in flight are not in the index yet, replay will apply them.
    const position: LogPosition = {
      segment: this.active,
      offsetBytes: this.appliedOffset,
      seq: this.activeSeq,
      lsn: this.appliedLsn,
    };
    const pages = index.dirtyPages;
    const chunks = index.dirtyChunks;
    const deleted = index.deletedChunks;
    const dropped = index.droppedPageIds;
    index.dirtyPages = new Set();
    index.dirtyChunks = new Set();
    index.deletedChunks = new Set();
    index.droppedPageIds = new Set();
    const logBytes = this.logBytesSinceCheckpoint;
    this.logBytesSinceCheckpoint = 0;
    const ops: IndexOp[] = [];
    for (const page of pages) {
      if (page.refs > 0) ops.push({ type: "put", key: `p/${page.id}`, value: page.bytes.slice() });
    }
    for (const id of dropped) ops.push({ type: "del", key: `p/${id}` });
    for (const key of chunks) {
      const chunk = index.chunks.get(key);
      if (chunk !== undefined) ops.push(chunkOp(chunk));
    }
    for (const key of deleted)
      if (!index.chunks.has(key)) ops.push({ type: "del", key: `c/${key}` });
    ops.push({ type: "put", key: "segments", value: this.table.encode() });
    ops.push(metaOp(this.meta(position, clean)));
    const restore = () => {
      for (const page of pages) if (page.refs > 0) index.dirtyPages.add(page);
      for (const key of chunks) index.dirtyChunks.add(key);
      for (const key of deleted) index.deletedChunks.add(key);
      for (const id of dropped) index.droppedPageIds.add(id);
      this.logBytesSinceCheckpoint += logBytes;
    };
    return { ops, position, restore };
  }

  // -------------------------------------------------------------------------------------------
  // Closing

  /**
   * Stops compaction, lets queued records finish, writes a final (clean) checkpoint unless
   * `checkpoint` is false or the disk failed, and closes the index database and the disk.
   */
  close(checkpoint = true): Promise<void> {
    this.closing ??= (async () => {
      await this.compactor.close();
      this.wakeSpaceWaiters();
      while (this.pumping !== undefined) await this.pumping;
      if (checkpoint && this.failure === undefined) {
        await this.enqueueLevel(() => this.captureCheckpoint(true), true).catch(() => {});
      }
      await this.levelChain;
      for (const buffer of this.headerBuffers.splice(0)) this.disk.buffers.release(buffer);
      if (this.endBuffer !== undefined) this.disk.buffers.release(this.endBuffer);
      this.endBuffer = undefined;
      await this.db.close();
      await this.disk.close();
    })();
    return this.closing;
  }

  // -------------------------------------------------------------------------------------------
  // Figures

  /**
   * Index memory estimate: page buffers plus per-page and per-chunk object overhead. Counts
   * distinct pages without looking inside them (O(pages), 1/256 of the blocks): `stats()` calls
   * it, and the host's heartbeat calls `stats()`, so it must not walk every block.
   */
  indexMemoryBytes(): number {
    const seen = new Set<number>();
    for (const chunk of this.index.chunks.values()) {
      for (const page of chunk.head) if (page !== undefined) seen.add(page.id);
      for (const pin of chunk.pins.values()) {
        for (const page of pin.pages) if (page !== undefined) seen.add(page.id);
      }
    }
    return indexBytesOf(seen.size, this.index.chunks.size);
  }

  /**
   * Figures of the in-memory index: distinct pages, extents (runs of blocks at consecutive disk
   * addresses, over every view), data blocks, and the estimated bytes it takes.
   */
  indexFigures(): { pages: number; extents: number; dataBlocks: number; indexBytes: number } {
    const seen = new Set<number>();
    let pages = 0;
    let extents = 0;
    let dataBlocks = 0;
    for (const chunk of this.index.chunks.values()) {
      const views = [chunk.head, ...[...chunk.pins.values()].map((pin) => pin.pages)];
      for (const view of views) {
        let previous = -1;
        for (const page of view) {
          if (page === undefined || seen.has(page.id)) {
            previous = -1;
            continue;
          }
          seen.add(page.id);
          pages++;
          for (const address of page.addresses) {
            if (address > ADDRESS_ZERO) {
              dataBlocks++;
              if (address !== previous + 1) extents++;
            }
            previous = address > ADDRESS_ZERO ? address : -1;
          }
        }
      }
    }
    return { pages, extents, dataBlocks, indexBytes: indexBytesOf(pages, this.index.chunks.size) };
  }
}

function indexBytesOf(pages: number, chunks: number): number {
  return pages * (PAGE_BYTES + PAGE_OBJECT_OVERHEAD_BYTES) + chunks * CHUNK_OVERHEAD_BYTES;
}

/** V8 cost of a Page object: the object, an ArrayBuffer and three typed-array views. */
export const PAGE_OBJECT_OVERHEAD_BYTES = 400;
/** V8 cost of a ChunkIndex: object, key string, page array, pin map. */
export const CHUNK_OVERHEAD_BYTES = 600;

function lookup(
  pages: PageArray,
  firstBlock: number,
  count: number,
  addresses: Uint32Array,
  crcs: Uint32Array,
): void {
  for (let i = 0; i < count; ) {
    const block = firstBlock + i;
    const page = pages[Math.floor(block / PAGE_BLOCKS)];
    const slot = block % PAGE_BLOCKS;
    const n = Math.min(count - i, PAGE_BLOCKS - slot);
    if (page !== undefined) {
      addresses.set(page.addresses.subarray(slot, slot + n), i);
      crcs.set(page.crcs.subarray(slot, slot + n), i);
    }
    i += n;
  }
}
