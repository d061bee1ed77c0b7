/**
 * BlockDevice wrappers for server tests: a gate that holds chosen calls until released (to
 * prove out-of-order replies, window bounds and draining without sleeping), and a device
 * whose calls fail with a chosen error (to check the errno mapping on the wire).
 */
import type {
  AllocationExtent,
  BlockDevice,
  RangeRequest,
  WriteRequest,
  WriteZeroesRequest,
} from "@hes/blockdev";

/** Forwards to `inner`, but calls for which `holds` says true wait until `open()`. */
export class GatedDevice implements BlockDevice {
  private waiting: Array<() => void> = [];
  private changed: Array<() => void> = [];
  private isOpen = false;
  /** Calls currently held at the gate. */
  held = 0;
  /** Most calls ever held at once. */
  heldMax = 0;

  constructor(
    private readonly inner: BlockDevice,
    private readonly holds: (operation: string, offsetBytes: number) => boolean = () => true,
  ) {}

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  get logicalBlockBytes(): number {
    return this.inner.logicalBlockBytes;
  }
  get preferredBlockBytes(): number {
    return this.inner.preferredBlockBytes;
  }
  get maxRequestBytes(): number {
    return this.inner.maxRequestBytes;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get multiConnSafe(): boolean {
    return this.inner.multiConnSafe;
  }

  /** Lets every held call (and every later one) through. */
  open(): void {
    this.isOpen = true;
    for (const resolve of this.waiting.splice(0)) resolve();
  }

  /** Resolves once `count` calls are held at the gate. */
  async untilHeld(count: number): Promise<void> {
    while (this.held < count) await new Promise<void>((resolve) => this.changed.push(resolve));
  }

  private async gate(operation: string, offsetBytes: number): Promise<void> {
    if (this.isOpen || !this.holds(operation, offsetBytes)) return;
    this.held++;
    this.heldMax = Math.max(this.heldMax, this.held);
    for (const resolve of this.changed.splice(0)) resolve();
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.held--;
  }

  async read(request: RangeRequest): Promise<Uint8Array> {
    await this.gate("read", request.offsetBytes);
    return this.inner.read(request);
  }
  async write(request: WriteRequest): Promise<void> {
    await this.gate("write", request.offsetBytes);
    return this.inner.write(request);
  }
  async flush(options?: { readonly signal?: AbortSignal }): Promise<void> {
    await this.gate("flush", 0);
    return this.inner.flush(options);
  }
  async discard(request: RangeRequest & { readonly fua?: boolean }): Promise<void> {
    await this.gate("discard", request.offsetBytes);
    return this.inner.discard(request);
  }
  async writeZeroes(request: WriteZeroesRequest): Promise<void> {
    await this.gate("writeZeroes", request.offsetBytes);
    return this.inner.writeZeroes(request);
  }
  async allocation(request: RangeRequest): Promise<AllocationExtent[]> {
    await this.gate("allocation", request.offsetBytes);
    return this.inner.allocation(request);
  }
}

/** Every IO call rejects with whatever `error()` returns. */
export class FailingDevice implements BlockDevice {
  readonly logicalBlockBytes = 512;
  readonly preferredBlockBytes = 4096;
  readonly maxRequestBytes = 1 << 20;
  readonly readOnly = false;
  readonly multiConnSafe = false;
  constructor(
    readonly sizeBytes: number,
    public error: () => unknown,
  ) {}
  async read(): Promise<Uint8Array> {
    throw this.error();
  }
  async write(): Promise<void> {
    throw this.error();
  }
  async flush(): Promise<void> {
    throw this.error();
  }
  async discard(): Promise<void> {
    throw this.error();
  }
  async writeZeroes(): Promise<void> {
    throw this.error();
  }
  async allocation(): Promise<AllocationExtent[]> {
    throw this.error();
  }
}
