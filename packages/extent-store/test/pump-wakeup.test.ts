/**
 * Goal: a record queued right as the commit pump winds down is still written (no lost wakeup).
 * Method: a disk whose calls complete on the microtask queue (like a simulator's, or any
 * disk that finishes without an event-loop turn); when a write's batch starts, an
 * independent chain queues the next record (a lone data-less `version` record, as importChunk
 * ends with) after k microtask hops, for every k up to 60, so one of them lands between the pump loop's exit and
 * the moment it clears its "pumping" mark. Before the fix that record was never written: its
 * promise stayed pending for ever. Each wait is bounded (no sleeps for timing).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { AlignedBufferPool, type Disk } from "@hes/base";
import { ExtentStore } from "@hes/extent-store";

const MiB = 1024 * 1024;
/** Microtask hops a disk write takes: room for the other chain to start before it completes. */
const WRITE_HOPS = 20;
const root = mkdtempSync(join(tmpdir(), "hes-pump-wakeup-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** In memory; every call completes on the microtask queue. */
class MicrotaskDisk implements Disk {
  readonly name = "microtask-disk";
  readonly blockSizeBytes = 4096;
  readonly direct = false;
  readonly buffers = new AlignedBufferPool();
  private readonly bytes: Uint8Array;
  constructor(readonly sizeBytes: number) {
    this.bytes = new Uint8Array(sizeBytes);
  }
  async read(target: Uint8Array, positionBytes: number): Promise<void> {
    target.set(this.bytes.subarray(positionBytes, positionBytes + target.byteLength));
  }
  async write(source: Uint8Array | readonly Uint8Array[], positionBytes: number): Promise<void> {
    const hook = this.onWrite;
    this.onWrite = undefined;
    hook?.();
    await hops(WRITE_HOPS);
    let offset = positionBytes;
    for (const part of source instanceof Uint8Array ? [source] : source) {
      this.bytes.set(part, offset);
      offset += part.byteLength;
    }
  }
  /** Called (once) when the next write starts. */
  onWrite: (() => void) | undefined;
  async sync(): Promise<void> {}
  async trim(): Promise<void> {}
  async close(): Promise<void> {}
}

async function hops(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await Promise.resolve();
}

/** Resolves with the promise's value, or rejects when it has not settled within `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

test("a record queued while the commit pump exits is still written (k microtask hops)", async () => {
  const disk = new MicrotaskDisk(16 * MiB);
  const store = await ExtentStore.open({
    disks: [{ disk, indexPath: join(root, "index") }],
    clusterId: "pump",
    format: true,
    chunkSizeBytes: MiB,
    segmentSizeBytes: MiB,
  });
  try {
    const chunk = { volumeId: 1, chunkIndex: 0 };
    const data = new Uint8Array(4096).fill(7);
    for (let k = 0; k <= 60; k++) {
      const seq = k + 1;
      // The version record starts on its own chain (like another chunk's import whose source
      // read completed), k hops after the write of the write's batch started: not behind the write.
      let imported: Promise<unknown> | undefined;
      disk.onWrite = () => {
        imported = hops(k).then(() =>
          // A lone version record, the last step of every importChunk.
          store.importChunk(chunk, [{ kind: "version", epoch: 1, durableSeq: seq }]),
        );
      };
      await store.write(chunk, 0, data, { epoch: 1, seq });
      assert.ok(imported !== undefined, "the write's batch was written");
      const version = await within(imported, 5_000, `version record after ${k} hops`);
      assert.deepEqual(version, { epoch: 1, durableSeq: seq });
    }
  } finally {
    await store.close();
  }
});
