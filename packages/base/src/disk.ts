/**
 * A disk, injected: the extent store does all its IO through this interface so that the same
 * code runs on a file, a raw block device (`FileDisk` in @hes/extent-store) and the simulator's
 * `SimDisk` (latency, EIO, torn and lost unsynced writes, bit flips, crash).
 *
 * The contract every implementation keeps (checked by `diskSuite` in `@hes/base/testing`):
 *
 * 1. Positions and lengths are multiples of `blockSizeBytes` (4096) and lie inside
 *    `[0, sizeBytes)`; anything else is a RangeError and touches nothing.
 * 2. A resolved `write` is visible to later `read`s but not durable: a crash may lose it, or,
 *    for a multi-block write, keep any subset of its blocks (blocks are never torn inside).
 * 3. A resolved `sync` makes every write that resolved before `sync` was called durable.
 * 4. A failed `sync` is final (the fsyncgate lesson: the kernel may already have dropped the
 *    dirty pages, so retrying can "succeed" over lost data). The disk fails every later call
 *    with HES_DISK_FAILED; its owner takes it out of service.
 * 5. Errors: EIO → HES_IO, ENOSPC → HES_NO_SPACE, after `close` → HES_CLOSED.
 * 6. `trim` is advisory: afterwards the range reads as zeros or as its old contents.
 */
import type { AlignedBufferPool } from "./buffer-pool.js";

/** The disk's sector size as the store uses it; all IO is in whole blocks. */
export const DISK_BLOCK_SIZE_BYTES = 4096;

/** A block device or file. See the module comment for the full contract. */
export interface Disk {
  /** Where it lives (a path or a simulator name), for messages. */
  readonly name: string;
  /** Usable bytes; a multiple of `blockSizeBytes`. */
  readonly sizeBytes: number;
  /** IO granularity and alignment: 4096. */
  readonly blockSizeBytes: number;
  /** True when IO bypasses the page cache (O_DIRECT). */
  readonly direct: boolean;
  /**
   * Buffers that need no bounce copy for this disk. Using them is optional: any Uint8Array
   * works, at the cost of a copy on direct disks.
   */
  readonly buffers: AlignedBufferPool;

  /** Fills `target` from `positionBytes`. */
  read(target: Uint8Array, positionBytes: number): Promise<void>;
  /** Writes `source` (one buffer or several, back to back) at `positionBytes`. */
  write(source: Uint8Array | readonly Uint8Array[], positionBytes: number): Promise<void>;
  /** Makes every previously resolved write durable (fdatasync). See rule 4 on failure. */
  sync(): Promise<void>;
  /** Tells the device a range is unused. Advisory (rule 6). */
  trim(positionBytes: number, lengthBytes: number): Promise<void>;
  /** Releases the device. In-flight calls finish first. Idempotent. */
  close(): Promise<void>;
}

/**
 * Checks an IO range against rule 1; throws RangeError naming the bad value.
 * Shared by every Disk implementation so they refuse exactly the same requests.
 */
export function checkDiskRange(
  disk: Pick<Disk, "name" | "sizeBytes" | "blockSizeBytes">,
  positionBytes: number,
  lengthBytes: number,
): void {
  const block = disk.blockSizeBytes;
  if (!Number.isSafeInteger(positionBytes) || positionBytes < 0 || positionBytes % block !== 0) {
    throw new RangeError(
      `${disk.name}: position ${positionBytes} is not a non-negative multiple of ${block}`,
    );
  }
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes <= 0 || lengthBytes % block !== 0) {
    throw new RangeError(
      `${disk.name}: length ${lengthBytes} is not a positive multiple of ${block}`,
    );
  }
  if (positionBytes + lengthBytes > disk.sizeBytes) {
    throw new RangeError(
      `${disk.name}: range ${positionBytes}+${lengthBytes} ends past the disk's ${disk.sizeBytes} bytes`,
    );
  }
}

/** Total length of one buffer or a list of them. */
export function totalLength(source: Uint8Array | readonly Uint8Array[]): number {
  if (source instanceof Uint8Array) return source.byteLength;
  let total = 0;
  for (const part of source) total += part.byteLength;
  return total;
}
