/**
 * The real `Disk`: a regular file or a raw block device, through `node:fs` positional IO on the
 * libuv threadpool, optionally with O_DIRECT.
 *
 * Contract: see `Disk` in @hes/base (checked by the shared `diskSuite`). Notes specific to files:
 * - With O_DIRECT every buffer must be page-aligned; buffers from `disk.buffers` are, anything
 *   else is copied through a pool buffer (a bounce), in pieces of at most the pool's arena size.
 * - With `dsync` (O_DSYNC) each write is durable when it resolves and `sync` is free.
 * - A failed fdatasync fails the disk for good (HES_DISK_FAILED): after a writeback error
 *   Linux may already have dropped the dirty pages and cleared the error, so a retried
 *   fdatasync can succeed over lost data (PostgreSQL's "fsyncgate", 2018).
 * - `trim` punches a hole (`fallocate --punch-hole`) in a file or discards (`blkdiscard`) on a
 *   device. Node has no fallocate binding; trims are rare and large (whole segments), so a
 *   short-lived helper process is an acceptable cost. Trim is advisory: a failure is ignored.
 * - The threadpool bounds parallel IO (`UV_THREADPOOL_SIZE`, default 4): set it to 16 in the
 *   process entry point before any IO for full device parallelism.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import { readFile } from "node:fs/promises";
import {
  AlignedBufferPool,
  checkDiskRange,
  DISK_BLOCK_SIZE_BYTES,
  type Disk,
  HesError,
  isAlignedBuffer,
  totalLength,
} from "@hes/base";

/** Buffers per writev call; Linux's IOV_MAX is 1024. */
const WRITEV_BUFFERS_MAX = 1024;

/** The few fs calls the disk makes, injectable so tests can make one fail (EIO on fdatasync). */
export interface FileDiskSyscalls {
  read(
    fd: number,
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number,
    callback: (error: NodeJS.ErrnoException | null, bytesRead: number) => void,
  ): void;
  write(
    fd: number,
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number,
    callback: (error: NodeJS.ErrnoException | null, bytesWritten: number) => void,
  ): void;
  writev(
    fd: number,
    buffers: readonly Uint8Array[],
    position: number,
    callback: (error: NodeJS.ErrnoException | null, bytesWritten: number) => void,
  ): void;
  fdatasync(fd: number, callback: (error: NodeJS.ErrnoException | null) => void): void;
}

const nodeSyscalls: FileDiskSyscalls = {
  read: (fd, buffer, offset, length, position, callback) =>
    fs.read(fd, buffer, offset, length, position, callback),
  write: (fd, buffer, offset, length, position, callback) =>
    fs.write(fd, buffer, offset, length, position, callback),
  writev: (fd, buffers, position, callback) => fs.writev(fd, buffers, position, callback),
  fdatasync: (fd, callback) => fs.fdatasync(fd, callback),
};

/** The real fs calls; tests wrap these to inject a failure. */
export const fileDiskSyscalls: FileDiskSyscalls = nodeSyscalls;

/** Options for {@link FileDisk.open}. */
export interface FileDiskOptions {
  /** Bypass the page cache (O_DIRECT). Default false. */
  readonly direct?: boolean;
  /**
   * Open with O_DSYNC: every write is durable when it resolves, so `sync` has nothing left to do
   * and resolves without a system call. Saves one thread-pool round trip per group commit (see
   * the extent store's README for measurements). Default false.
   */
  readonly dsync?: boolean;
  /** Create the file (sparse) of this size if it does not exist; extend it if smaller. */
  readonly createSizeBytes?: number;
  /** Pool for aligned buffers; default a new pool with the base defaults. */
  readonly buffers?: AlignedBufferPool;
  /** Replaces the fs calls (tests only). */
  readonly syscalls?: FileDiskSyscalls;
}

/** Maps an fs error to the Disk contract's codes. */
function ioError(error: unknown, what: string): Error {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new HesError("HES_NO_SPACE", `${what}: no space left on device`, { cause: error });
  }
  return new HesError("HES_IO", `${what}: ${code ?? String(error)}`, { cause: error });
}

function blockDeviceSizeBytes(rdev: number): Promise<number> {
  const dev = BigInt(rdev);
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return readFile(`/sys/dev/block/${major}:${minor}/size`, "utf8").then(
    (text) => Number.parseInt(text.trim(), 10) * 512,
  );
}

/** A Disk over a file or block device. Open with {@link FileDisk.open}. */
export class FileDisk implements Disk {
  readonly name: string;
  readonly sizeBytes: number;
  readonly blockSizeBytes = DISK_BLOCK_SIZE_BYTES;
  readonly direct: boolean;
  /** Writes are durable when they resolve (O_DSYNC). */
  readonly dsync: boolean;
  readonly buffers: AlignedBufferPool;
  readonly isBlockDevice: boolean;
  private readonly fd: number;
  private readonly syscalls: FileDiskSyscalls;
  private inflight = 0;
  private drained: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  private failure: HesError | undefined;

  private constructor(
    path: string,
    fd: number,
    sizeBytes: number,
    isBlockDevice: boolean,
    options: FileDiskOptions,
  ) {
    this.name = path;
    this.fd = fd;
    this.sizeBytes = sizeBytes;
    this.isBlockDevice = isBlockDevice;
    this.direct = options.direct ?? false;
    this.dsync = options.dsync ?? false;
    this.buffers = options.buffers ?? new AlignedBufferPool();
    this.syscalls = options.syscalls ?? nodeSyscalls;
  }

  /**
   * Opens `path`. A regular file is created (sparse) when `createSizeBytes` is given; its usable
   * size is its length rounded down to 4 KiB. A block device's size comes from sysfs.
   * Throws HES_IO (or HES_INVALID_ARGUMENT for a path that is neither file nor device).
   */
  static async open(path: string, options: FileDiskOptions = {}): Promise<FileDisk> {
    const create = options.createSizeBytes;
    if (create !== undefined && (!Number.isSafeInteger(create) || create <= 0)) {
      throw new RangeError(`createSizeBytes must be a positive safe integer, got ${create}`);
    }
    let flags = fs.constants.O_RDWR;
    if (options.direct === true) flags |= fs.constants.O_DIRECT;
    if (options.dsync === true) flags |= fs.constants.O_DSYNC;
    if (create !== undefined) flags |= fs.constants.O_CREAT;
    let fd: number;
    try {
      fd = await new Promise<number>((resolve, reject) =>
        fs.open(path, flags, 0o600, (error, opened) => (error ? reject(error) : resolve(opened))),
      );
    } catch (error) {
      throw ioError(error, `open ${path}`);
    }
    try {
      const stat = fs.fstatSync(fd);
      let sizeBytes: number;
      if (stat.isBlockDevice()) {
        sizeBytes = await blockDeviceSizeBytes(stat.rdev);
      } else if (stat.isFile()) {
        if (create !== undefined && stat.size < create) fs.ftruncateSync(fd, create);
        sizeBytes = Math.max(stat.size, create ?? 0);
      } else {
        throw new HesError("HES_INVALID_ARGUMENT", `${path} is neither a file nor a block device`);
      }
      sizeBytes -= sizeBytes % DISK_BLOCK_SIZE_BYTES;
      return new FileDisk(path, fd, sizeBytes, stat.isBlockDevice(), options);
    } catch (error) {
      fs.closeSync(fd);
      throw error instanceof HesError || error instanceof RangeError
        ? error
        : ioError(error, `open ${path}`);
    }
  }

  async read(target: Uint8Array, positionBytes: number): Promise<void> {
    checkDiskRange(this, positionBytes, target.byteLength);
    await this.run(`read ${this.name}@${positionBytes}`, async () => {
      if (!this.direct || isAlignedBuffer(target)) {
        await this.readFully(target, positionBytes);
        return;
      }
      await this.bounced(target.byteLength, async (bounce, doneBytes) => {
        await this.readFully(bounce, positionBytes + doneBytes);
        target.set(bounce, doneBytes);
      });
    });
  }

  async write(source: Uint8Array | readonly Uint8Array[], positionBytes: number): Promise<void> {
    const parts = source instanceof Uint8Array ? [source] : source;
    checkDiskRange(this, positionBytes, totalLength(parts));
    await this.run(`write ${this.name}@${positionBytes}`, async () => {
      const needsBounce =
        this.direct &&
        parts.some(
          (part) => !isAlignedBuffer(part) || part.byteLength % DISK_BLOCK_SIZE_BYTES !== 0,
        );
      if (!needsBounce) {
        await this.writeFully(parts, positionBytes);
        return;
      }
      const whole = parts.length === 1 ? (parts[0] as Uint8Array) : concat(parts);
      await this.bounced(whole.byteLength, async (bounce, doneBytes) => {
        bounce.set(whole.subarray(doneBytes, doneBytes + bounce.byteLength));
        await this.writeFully([bounce], positionBytes + doneBytes);
      });
    });
  }

  async sync(): Promise<void> {
    // With O_DSYNC every resolved write is already durable: nothing to flush.
    if (this.dsync) return this.run(`sync ${this.name}`, async () => {});
    await this.run(`fdatasync ${this.name}`, async () => {
      try {
        await new Promise<void>((resolve, reject) =>
          this.syscalls.fdatasync(this.fd, (error) => (error ? reject(error) : resolve())),
        );
      } catch (error) {
        this.failure = new HesError(
          "HES_DISK_FAILED",
          `${this.name}: fdatasync failed (${(error as NodeJS.ErrnoException).code ?? error}); ` +
            "the disk is out of service: unsynced writes may be lost and must not be retried",
          { cause: error },
        );
        throw this.failure;
      }
    });
  }

  async trim(positionBytes: number, lengthBytes: number): Promise<void> {
    checkDiskRange(this, positionBytes, lengthBytes);
    await this.run(`trim ${this.name}`, async () => {
      const [command, args] = this.isBlockDevice
        ? ["blkdiscard", ["--offset", `${positionBytes}`, "--length", `${lengthBytes}`, this.name]]
        : [
            "fallocate",
            [
              "--punch-hole",
              "--keep-size",
              "--offset",
              `${positionBytes}`,
              "--length",
              `${lengthBytes}`,
              this.name,
            ],
          ];
      // Advisory: a device without discard support, or a missing tool, leaves old data in place.
      await new Promise<void>((resolve) => execFile(command, args, () => resolve()));
    });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
      await new Promise<void>((resolve) => fs.close(this.fd, () => resolve()));
    })();
    return this.closing;
  }

  /** Admits one call: refuses after close or failure, and counts it for close to wait on. */
  private async run(what: string, body: () => Promise<void>): Promise<void> {
    if (this.closing !== undefined) throw new HesError("HES_CLOSED", `${what}: disk is closed`);
    if (this.failure !== undefined) throw this.failure;
    this.inflight++;
    try {
      await body();
    } catch (error) {
      if (error instanceof HesError || error instanceof RangeError) throw error;
      throw ioError(error, what);
    } finally {
      this.inflight--;
      if (this.inflight === 0) this.drained?.();
    }
  }

  /** Runs `step` over pool buffers of at most one arena, covering `lengthBytes`. */
  private async bounced(
    lengthBytes: number,
    step: (bounce: Uint8Array, doneBytes: number) => Promise<void>,
  ): Promise<void> {
    const pieceBytes = Math.min(lengthBytes, this.buffers.bufferBytesMax);
    const bounce = await this.buffers.acquire(pieceBytes);
    try {
      for (let done = 0; done < lengthBytes; done += pieceBytes) {
        await step(bounce.subarray(0, Math.min(pieceBytes, lengthBytes - done)), done);
      }
    } finally {
      this.buffers.release(bounce);
    }
  }

  private async readFully(target: Uint8Array, positionBytes: number): Promise<void> {
    let done = 0;
    while (done < target.byteLength) {
      const got = await new Promise<number>((resolve, reject) =>
        this.syscalls.read(
          this.fd,
          target,
          done,
          target.byteLength - done,
          positionBytes + done,
          (error, bytes) => (error ? reject(error) : resolve(bytes)),
        ),
      );
      if (got === 0) {
        // Past the end of a file that is shorter than its declared size: a hole, read as zeros.
        target.fill(0, done);
        return;
      }
      done += got;
    }
  }

  private async writeFully(parts: readonly Uint8Array[], positionBytes: number): Promise<void> {
    let position = positionBytes;
    let pending = parts.filter((part) => part.byteLength > 0);
    while (pending.length > 0) {
      const batch = pending.slice(0, WRITEV_BUFFERS_MAX);
      const written = await new Promise<number>((resolve, reject) => {
        const done = (error: NodeJS.ErrnoException | null, bytes: number): void =>
          error ? reject(error) : resolve(bytes);
        if (batch.length === 1) {
          const only = batch[0] as Uint8Array;
          this.syscalls.write(this.fd, only, 0, only.byteLength, position, done);
        } else {
          this.syscalls.writev(this.fd, batch, position, done);
        }
      });
      position += written;
      pending = advance(pending, written);
    }
  }
}

/** Drops `bytes` from the front of a buffer list (after a short write). */
function advance(parts: readonly Uint8Array[], bytes: number): Uint8Array[] {
  const rest: Uint8Array[] = [];
  let skip = bytes;
  for (const part of parts) {
    if (skip >= part.byteLength) {
      skip -= part.byteLength;
      continue;
    }
    rest.push(skip > 0 ? part.subarray(skip) : part);
    skip = 0;
  }
  return rest;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const whole = new Uint8Array(totalLength(parts));
  let offset = 0;
  for (const part of parts) {
    whole.set(part, offset);
    offset += part.byteLength;
  }
  return whole;
}
