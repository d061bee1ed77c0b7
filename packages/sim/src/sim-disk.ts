/**
 * SimDisk: a `Disk` in memory for deterministic simulation, keeping the Disk contract of
 * @hes/base (proved by the shared `diskSuite`) and adding the faults real disks have, all drawn
 * from a seeded `Prng` so a failing seed replays exactly:
 *
 * - latency: with a `Clock`, each call completes after a delay drawn from its range (calls
 *   finish out of order); without one, on the next microtask;
 * - EIO on read, write or sync (by rate, or `failNext`); a failed write may leave any subset of
 *   its blocks written; a failed sync takes the disk out of service (HES_DISK_FAILED) and drops
 *   a random subset of unsynced blocks, as Linux may after a writeback error;
 * - ENOSPC once more than `spaceBytes` distinct bytes were ever written (a full host file
 *   system under a sparse file);
 * - bit flips: transient ones in data returned by reads (by rate), and persistent ones on the
 *   medium (`flipBit`);
 * - crash (`crash()`): every block written since the last sync independently keeps its old
 *   content or any of its unsynced versions — torn and lost unsynced writes — then `restart()`
 *   gives a fresh handle over what survived.
 *
 * The medium (`SimMedium`) outlives handles: `close` + `reopen()` is a clean restart,
 * `crash` + `restart()` a power cut.
 */
import {
  AlignedBufferPool,
  type Clock,
  checkDiskRange,
  DISK_BLOCK_SIZE_BYTES,
  type Disk,
  HesError,
  Prng,
  totalLength,
} from "@hes/base";

const BLOCK = DISK_BLOCK_SIZE_BYTES;

/** A [min, max] latency range in milliseconds. */
export type LatencyRangeMs = readonly [number, number];

/** Fault rates (probabilities per call, or per block for bit flips). */
export interface SimDiskFaults {
  readonly readErrorRate?: number;
  readonly writeErrorRate?: number;
  readonly syncErrorRate?: number;
  /** Chance that a block returned by a read has one bit flipped (the medium is unchanged). */
  readonly readBitFlipRate?: number;
  /** Writes that would make the medium hold more than this many bytes fail with ENOSPC. */
  readonly spaceBytes?: number;
}

/** Options for {@link SimDisk}. */
export interface SimDiskOptions {
  readonly name?: string;
  /** A multiple of 4096. */
  readonly sizeBytes: number;
  /** Seed of the disk's own random stream (faults, crash outcomes, latencies). */
  readonly seed: number;
  /** Drives latencies; without it calls complete on the next microtask. */
  readonly clock?: Clock;
  readonly latencyMs?: {
    readonly read?: LatencyRangeMs;
    readonly write?: LatencyRangeMs;
    readonly sync?: LatencyRangeMs;
  };
  readonly faults?: SimDiskFaults;
  /** Reported as `direct`; SimDisk needs no aligned buffers either way. */
  readonly direct?: boolean;
}

/** Counters, for tests. */
export interface SimDiskCounters {
  reads: number;
  writes: number;
  syncs: number;
  bytesWritten: number;
}

/** The medium: what is stored, durable or not. Shared by successive handles. */
export class SimMedium {
  readonly sizeBytes: number;
  /** What reads see now. Missing block = zeros. */
  readonly current = new Map<number, Uint8Array>();
  /** What survives a crash. Missing block = zeros. */
  readonly durable = new Map<number, Uint8Array>();
  /** Versions written since the last sync, per block (undefined = zeros after a trim). */
  readonly unsynced = new Map<number, Array<Uint8Array | undefined>>();
  /** Blocks ever written (what a sparse file would allocate). */
  readonly allocated = new Set<number>();

  constructor(sizeBytes: number) {
    this.sizeBytes = sizeBytes;
  }

  /** Stores a block (the caller's copy) as the current, unsynced content. */
  put(block: number, data: Uint8Array | undefined): void {
    if (data === undefined) this.current.delete(block);
    else {
      this.current.set(block, data);
      this.allocated.add(block);
    }
    let versions = this.unsynced.get(block);
    if (versions === undefined) {
      versions = [];
      this.unsynced.set(block, versions);
    }
    versions.push(data);
  }

  /** Everything current becomes durable (a successful sync). */
  persist(): void {
    for (const block of this.unsynced.keys()) {
      const data = this.current.get(block);
      if (data === undefined) this.durable.delete(block);
      else this.durable.set(block, data);
    }
    this.unsynced.clear();
  }

  /**
   * A power cut: each unsynced block independently keeps its durable content or one of its
   * unsynced versions. Afterwards current = durable.
   */
  crash(prng: Prng): void {
    for (const [block, versions] of this.unsynced) {
      const choice = prng.int(versions.length + 1);
      if (choice < versions.length) {
        const data = versions[choice];
        if (data === undefined) this.durable.delete(block);
        else this.durable.set(block, data);
      }
    }
    this.unsynced.clear();
    this.current.clear();
    for (const [block, data] of this.durable) this.current.set(block, data);
  }
}

interface Inflight {
  readonly reject: (error: unknown) => void;
  readonly cancel: () => void;
}

/** A simulated disk. See the module comment. */
export class SimDisk implements Disk {
  readonly name: string;
  readonly sizeBytes: number;
  readonly blockSizeBytes = BLOCK;
  readonly direct: boolean;
  readonly buffers: AlignedBufferPool;
  readonly medium: SimMedium;
  readonly counters: SimDiskCounters = { reads: 0, writes: 0, syncs: 0, bytesWritten: 0 };
  faults: SimDiskFaults;
  private readonly options: SimDiskOptions;
  private readonly prng: Prng;
  private readonly inflight = new Set<Inflight>();
  private readonly failNextQueue: Array<{ op: "read" | "write" | "sync"; code: string }> = [];
  private closing: Promise<void> | undefined;
  private crashed = false;
  private failure: HesError | undefined;
  private drained: (() => void) | undefined;

  constructor(options: SimDiskOptions, medium?: SimMedium, prng?: Prng) {
    if (!Number.isSafeInteger(options.sizeBytes) || options.sizeBytes <= 0) {
      throw new RangeError(`sizeBytes must be a positive safe integer, got ${options.sizeBytes}`);
    }
    if (options.sizeBytes % BLOCK !== 0) {
      throw new RangeError(`sizeBytes must be a multiple of ${BLOCK}, got ${options.sizeBytes}`);
    }
    this.options = options;
    this.name = options.name ?? "sim-disk";
    this.sizeBytes = options.sizeBytes;
    this.direct = options.direct ?? false;
    this.buffers = new AlignedBufferPool();
    this.medium = medium ?? new SimMedium(options.sizeBytes);
    this.prng = prng ?? new Prng(options.seed);
    this.faults = options.faults ?? {};
  }

  /** The next call of `op` fails with `code` (EIO, or ENOSPC for writes). */
  failNext(op: "read" | "write" | "sync", code: "EIO" | "ENOSPC" = "EIO"): void {
    this.failNextQueue.push({ op, code });
  }

  /** Flips one bit of the stored block at `positionBytes` (current and durable content). */
  flipBit(positionBytes: number, bitIndex: number): void {
    checkDiskRange(this, positionBytes - (positionBytes % BLOCK), BLOCK);
    const block = Math.floor(positionBytes / BLOCK);
    const byte = positionBytes % BLOCK;
    for (const map of [this.medium.current, this.medium.durable]) {
      const copy = new Uint8Array(map.get(block) ?? new Uint8Array(BLOCK));
      copy[byte] = (copy[byte] as number) ^ (1 << (bitIndex & 7));
      map.set(block, copy);
    }
  }

  /** Blocks written since the last successful sync. */
  unsyncedBlocks(): number {
    return this.medium.unsynced.size;
  }

  async read(target: Uint8Array, positionBytes: number): Promise<void> {
    checkDiskRange(this, positionBytes, target.byteLength);
    await this.operate("read", this.options.latencyMs?.read, () => {
      this.counters.reads++;
      this.maybeFail("read", this.faults.readErrorRate);
      const first = positionBytes / BLOCK;
      for (let i = 0; i < target.byteLength / BLOCK; i++) {
        const data = this.medium.current.get(first + i);
        const slice = target.subarray(i * BLOCK, (i + 1) * BLOCK);
        if (data === undefined) slice.fill(0);
        else slice.set(data);
        if (this.prng.chance(this.faults.readBitFlipRate ?? 0)) {
          const bit = this.prng.int(BLOCK * 8);
          slice[bit >> 3] = (slice[bit >> 3] as number) ^ (1 << (bit & 7));
        }
      }
    });
  }

  async write(source: Uint8Array | readonly Uint8Array[], positionBytes: number): Promise<void> {
    const parts = source instanceof Uint8Array ? [source] : source;
    const lengthBytes = totalLength(parts);
    checkDiskRange(this, positionBytes, lengthBytes);
    // Copy now: the caller may reuse its buffers once this resolves, and the content written is
    // what the buffers held when the call was made.
    const whole = new Uint8Array(lengthBytes);
    let offset = 0;
    for (const part of parts) {
      whole.set(part, offset);
      offset += part.byteLength;
    }
    await this.operate("write", this.options.latencyMs?.write, () => {
      this.counters.writes++;
      const first = positionBytes / BLOCK;
      const blocks = lengthBytes / BLOCK;
      const injected = this.takeFailNext("write");
      if (injected === "ENOSPC" || this.exceedsSpace(first, blocks)) {
        throw this.errorFor("write", "ENOSPC"); // nothing written, like a full file system
      }
      const failing = injected ?? this.rateFailure(this.faults.writeErrorRate);
      for (let i = 0; i < blocks; i++) {
        // A failed write leaves any subset of its blocks behind.
        if (failing !== undefined && !this.prng.chance(0.5)) continue;
        this.medium.put(first + i, whole.slice(i * BLOCK, (i + 1) * BLOCK));
      }
      if (failing !== undefined) throw this.errorFor("write", failing);
      this.counters.bytesWritten += lengthBytes;
    });
  }

  async sync(): Promise<void> {
    await this.operate("sync", this.options.latencyMs?.sync, () => {
      this.counters.syncs++;
      const failing = this.takeFailNext("sync") ?? this.rateFailure(this.faults.syncErrorRate);
      if (failing === undefined) {
        this.medium.persist();
        return;
      }
      // Writeback failed: the kernel may have dropped any of the dirty pages (fsyncgate).
      this.medium.crash(this.prng);
      this.failure = new HesError(
        "HES_DISK_FAILED",
        `${this.name}: fdatasync failed (${failing}); the disk is out of service`,
      );
      throw this.failure;
    });
  }

  async trim(positionBytes: number, lengthBytes: number): Promise<void> {
    checkDiskRange(this, positionBytes, lengthBytes);
    await this.operate("trim", undefined, () => {
      // Advisory: each block reads as zeros afterwards, or keeps its content.
      if (!this.prng.chance(0.5)) return;
      const first = positionBytes / BLOCK;
      for (let i = 0; i < lengthBytes / BLOCK; i++) this.medium.put(first + i, undefined);
    });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.inflight.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    })();
    return this.closing;
  }

  /**
   * A power cut: in-flight calls fail (HES_CLOSED), later calls too, and the medium keeps a
   * random mix of its unsynced writes. Use {@link restart} for the disk after the reboot.
   */
  crash(): void {
    if (this.crashed) return;
    this.crashed = true;
    this.closing ??= Promise.resolve();
    const error = new HesError("HES_CLOSED", `${this.name}: crashed`);
    for (const op of this.inflight) {
      op.cancel();
      op.reject(error);
    }
    this.inflight.clear();
    this.medium.crash(this.prng);
  }

  /** A fresh handle over the same medium (after `crash`, or after `close` for a clean reopen). */
  restart(): SimDisk {
    if (!this.crashed && this.closing === undefined) {
      throw new Error(`${this.name}: restart needs close() or crash() first`);
    }
    return new SimDisk(this.options, this.medium, this.prng);
  }

  /** Same as {@link restart}; reads better after a clean close. */
  reopen(): SimDisk {
    return this.restart();
  }

  // -------------------------------------------------------------------------------------------

  private operate(
    what: string,
    latency: LatencyRangeMs | undefined,
    effect: () => void,
  ): Promise<void> {
    if (this.closing !== undefined) {
      return Promise.reject(new HesError("HES_CLOSED", `${this.name}: ${what} after close`));
    }
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const clock = this.options.clock;
    const delayMs =
      clock !== undefined && latency !== undefined
        ? latency[0] + this.prng.float() * (latency[1] - latency[0])
        : 0;
    return new Promise<void>((resolve, reject) => {
      let timer: { cancel(): void } | undefined;
      const op: Inflight = { reject, cancel: () => timer?.cancel() };
      this.inflight.add(op);
      const run = (): void => {
        if (!this.inflight.delete(op)) return; // crashed meanwhile: already rejected
        try {
          effect();
          resolve();
        } catch (error) {
          reject(error);
        } finally {
          if (this.inflight.size === 0) this.drained?.();
        }
      };
      if (clock !== undefined) timer = clock.setTimer(delayMs, run);
      else queueMicrotask(run);
    });
  }

  private takeFailNext(op: "read" | "write" | "sync"): string | undefined {
    const index = this.failNextQueue.findIndex((entry) => entry.op === op);
    if (index < 0) return undefined;
    return this.failNextQueue.splice(index, 1)[0]?.code;
  }

  private rateFailure(rate: number | undefined): string | undefined {
    return rate !== undefined && rate > 0 && this.prng.chance(rate) ? "EIO" : undefined;
  }

  private maybeFail(op: "read", rate: number | undefined): void {
    const failing = this.takeFailNext(op) ?? this.rateFailure(rate);
    if (failing !== undefined) throw this.errorFor(op, failing);
  }

  private errorFor(op: string, code: string): HesError {
    if (code === "ENOSPC") {
      return new HesError("HES_NO_SPACE", `${this.name}: ${op}: no space left on device`);
    }
    return new HesError("HES_IO", `${this.name}: ${op}: ${code}`);
  }

  private exceedsSpace(first: number, blocks: number): boolean {
    const space = this.faults.spaceBytes;
    if (space === undefined) return false;
    let fresh = 0;
    for (let i = 0; i < blocks; i++) if (!this.medium.allocated.has(first + i)) fresh++;
    return (this.medium.allocated.size + fresh) * BLOCK > space;
  }
}
