/**
 * The group-commit queue: records wait here while the batch before them is written and synced;
 * the next batch takes as many as fit (one writev and one fdatasync for all of them).
 *
 * A plain state machine, no IO: the disk store drives it (`admit` → `push` → `take` → `settle`).
 * Bounded: at most COMMIT_QUEUE_ENTRIES_MAX records and COMMIT_QUEUE_BYTES_MAX data bytes are
 * admitted; later writers wait in FIFO order (backpressure), and past COMMIT_WAITERS_MAX waiting
 * writers a write fails with HES_BUSY. Compaction's records ("internal") skip admission (one
 * compaction append is in flight at a time) and go first, so compaction can always make room.
 */
import { HesError } from "@hes/base";
import { BATCH_HEADER_FIXED_BYTES, type StoreRecord } from "./format.js";
import {
  BLOCK_SIZE_BYTES,
  COMMIT_QUEUE_BYTES_MAX,
  COMMIT_QUEUE_ENTRIES_MAX,
  COMMIT_WAITERS_MAX,
} from "./limits.js";

/** A record waiting for its batch. */
export interface PendingRecord {
  /** The record; `dataIndex` is assigned when the batch is built. */
  readonly record: StoreRecord;
  /** Its data, `dataBlocks` × 4 KiB in total, as one or more buffers. */
  readonly data: readonly Uint8Array[];
  readonly dataBlocks: number;
  /** Bytes of its header entry. */
  readonly headerBytes: number;
  /** Compaction's records: not admitted, taken first, may use the reserved segments. */
  readonly internal: boolean;
  /** Settles the caller's promise: with the apply result, or with the batch's error. */
  readonly resolve: (applied: number) => void;
  readonly reject: (error: unknown) => void;
}

/** Bounds for one batch. */
export interface BatchBounds {
  /** Header plus data bytes that fit in the active segment. */
  readonly roomBytes: number;
  readonly dataBytesMax: number;
  readonly headerBytesMax: number;
  readonly entriesMax: number;
  /**
   * Which records may go: "all"; "no-data" (internal and data-less ones: they may use the
   * reserved segments); "internal" (compaction only: the last free segment is its own).
   */
  readonly admit: "all" | "no-data" | "internal";
}

interface Waiter {
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

function roundToBlock(bytes: number): number {
  return Math.ceil(bytes / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
}

/** The queue. */
export class CommitQueue {
  private readonly internal: PendingRecord[] = [];
  private readonly foreground: PendingRecord[] = [];
  private readonly waiters: Waiter[] = [];
  private admittedEntries = 0;
  private admittedBytes = 0;

  get length(): number {
    return this.internal.length + this.foreground.length;
  }

  get hasForeground(): boolean {
    return this.foreground.length > 0;
  }

  /**
   * Admits a foreground record of `dataBytes`: resolves at once when the queue has room, else
   * when earlier records have settled. Rejects HES_BUSY when too many writers already wait.
   */
  admit(dataBytes: number): Promise<void> {
    if (this.waiters.length === 0 && this.fits(dataBytes)) {
      this.admittedEntries++;
      this.admittedBytes += dataBytes;
      return Promise.resolve();
    }
    if (this.waiters.length >= COMMIT_WAITERS_MAX) {
      return Promise.reject(
        new HesError("HES_BUSY", `commit queue full: ${this.waiters.length} writers already wait`),
      );
    }
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ bytes: dataBytes, resolve, reject });
    });
  }

  push(pending: PendingRecord): void {
    (pending.internal ? this.internal : this.foreground).push(pending);
  }

  /** Takes the next batch within `bounds` (possibly empty). Internal records go first. */
  take(bounds: BatchBounds): PendingRecord[] {
    const batch: PendingRecord[] = [];
    let headerBytes = BATCH_HEADER_FIXED_BYTES;
    let dataBytes = 0;
    const fits = (pending: PendingRecord): boolean => {
      const header = roundToBlock(headerBytes + pending.headerBytes);
      const data = dataBytes + pending.dataBlocks * BLOCK_SIZE_BYTES;
      return (
        batch.length < bounds.entriesMax &&
        header <= bounds.headerBytesMax &&
        data <= bounds.dataBytesMax &&
        header + data <= bounds.roomBytes
      );
    };
    const drain = (list: PendingRecord[], skipData: boolean): void => {
      for (let i = 0; i < list.length; ) {
        const pending = list[i] as PendingRecord;
        if (skipData && pending.dataBlocks > 0) {
          i++;
          continue;
        }
        if (!fits(pending)) return;
        headerBytes += pending.headerBytes;
        dataBytes += pending.dataBlocks * BLOCK_SIZE_BYTES;
        batch.push(pending);
        list.splice(i, 1);
      }
    };
    drain(this.internal, false);
    if (bounds.admit !== "internal") drain(this.foreground, bounds.admit === "no-data");
    return batch;
  }

  /** Returns records to the front of the queue (a batch that could not be written yet). */
  putBack(batch: readonly PendingRecord[]): void {
    const internal = batch.filter((pending) => pending.internal);
    const foreground = batch.filter((pending) => !pending.internal);
    this.internal.unshift(...internal);
    this.foreground.unshift(...foreground);
  }

  /** Foreground records with data, removed (to fail them: no space). */
  takeDataRecords(): PendingRecord[] {
    const taken = this.foreground.filter((pending) => pending.dataBlocks > 0);
    const rest = this.foreground.filter((pending) => pending.dataBlocks === 0);
    this.foreground.length = 0;
    this.foreground.push(...rest);
    return taken;
  }

  /** Records of a batch are done (durable or failed): frees their admission, wakes waiters. */
  settle(batch: readonly PendingRecord[]): void {
    for (const pending of batch) {
      if (pending.internal) continue;
      this.admittedEntries--;
      this.admittedBytes -= pending.dataBlocks * BLOCK_SIZE_BYTES;
    }
    while (this.waiters.length > 0) {
      const waiter = this.waiters[0] as Waiter;
      if (!this.fits(waiter.bytes)) break;
      this.waiters.shift();
      this.admittedEntries++;
      this.admittedBytes += waiter.bytes;
      waiter.resolve();
    }
  }

  /** Fails everything queued and waiting (the disk left service, or the store closed). */
  failAll(error: unknown): void {
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    const all = [...this.internal, ...this.foreground];
    this.internal.length = 0;
    this.foreground.length = 0;
    this.settle(all);
    for (const pending of all) pending.reject(error);
  }

  private fits(dataBytes: number): boolean {
    return (
      this.admittedEntries < COMMIT_QUEUE_ENTRIES_MAX &&
      (this.admittedBytes + dataBytes <= COMMIT_QUEUE_BYTES_MAX || this.admittedEntries === 0)
    );
  }
}
