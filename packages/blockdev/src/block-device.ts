/**
 * The block-device contract between a volume and whatever exports it (NBD today; iSCSI or
 * vhost-user-blk later). `Volume` implements it; so does `MemoryBlockDevice` for tests.
 *
 * Rules every implementation keeps:
 * 1. Offsets and lengths are multiples of `logicalBlockBytes` (512) and lie inside
 *    `[0, sizeBytes)`; anything else is a RangeError and changes nothing.
 * 2. A resolved `write` (or `writeZeroes` / `discard`) is visible to every later `read` on any
 *    connection. It is durable once a later `flush` resolves, or at once when `fua` was set.
 * 3. `read` of a range never written (or discarded) returns zeros.
 * 4. `allocation` describes a range as extents that are holes (unallocated, read as zeros) or
 *    data, and marks data known to read as zeros; it never calls data a hole.
 * 5. Errors are HesErrors with stable codes (see @hes/base); the exporter maps them to its
 *    protocol once (NBD: EINVAL, ENOSPC, EPERM, ENOTSUP, EIO).
 */

/** A range request. */
export interface RangeRequest {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly signal?: AbortSignal;
}

/** A write request. */
export interface WriteRequest {
  readonly offsetBytes: number;
  readonly data: Uint8Array;
  /** Force unit access: durable before the promise resolves. */
  readonly fua?: boolean;
  readonly signal?: AbortSignal;
}

/** A write-zeroes request. */
export interface WriteZeroesRequest extends RangeRequest {
  /** The range may be deallocated (become a hole) rather than written with zeros. */
  readonly mayUnmap: boolean;
  /** Fail with HES_UNSUPPORTED rather than fall back to writing zeros slowly (NBD FAST_ZERO). */
  readonly fastOnly?: boolean;
  readonly fua?: boolean;
}

/** One run of blocks in an allocation map. */
export interface AllocationExtent {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  /** Not allocated: reads as zeros and holds no space. */
  readonly hole: boolean;
  /** Reads as zeros (always true for a hole). */
  readonly zero: boolean;
}

/** What an exporter needs from a volume. */
export interface BlockDevice {
  /** Device size; a multiple of `logicalBlockBytes`. May grow while open (online resize). */
  readonly sizeBytes: number;
  /** Smallest addressable unit: 512, so guests with 512-byte sectors work. */
  readonly logicalBlockBytes: number;
  /** IO at this granularity and alignment avoids read-modify-write: 4096. */
  readonly preferredBlockBytes: number;
  /** Largest single request accepted; larger ones are a RangeError. */
  readonly maxRequestBytes: number;
  readonly readOnly: boolean;
  /**
   * True when writes completed on one connection are seen by reads on every other and a
   * flush on any connection covers writes completed on all of them: NBD may then advertise
   * multi-conn.
   */
  readonly multiConnSafe: boolean;

  read(request: RangeRequest): Promise<Uint8Array>;
  write(request: WriteRequest): Promise<void>;
  /** Makes every write that resolved before this call durable. */
  flush(options?: { readonly signal?: AbortSignal }): Promise<void>;
  /** The range reads as zeros afterwards and its space may be reclaimed. */
  discard(request: RangeRequest & { readonly fua?: boolean }): Promise<void>;
  writeZeroes(request: WriteZeroesRequest): Promise<void>;
  /** Holes and zeros over the range, in order, covering it exactly. */
  allocation(request: RangeRequest): Promise<AllocationExtent[]>;
}
