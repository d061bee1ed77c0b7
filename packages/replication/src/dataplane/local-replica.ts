/**
 * The replica on this node: {@link ChunkReplica} by direct calls into the node's own
 * ExtentStore (no socket, no serialisation: the hypervisor-embedded half of the data path).
 *
 * Fencing lives here, so that the chunk-replica service (which serves remote owners from the
 * same store) and the in-process owner are fenced by the same code: a request whose epoch is
 * below the chunk's stored epoch fails with HES_FENCED before it is handed to the store. The
 * check and the store call happen in one synchronous step, so a seal at a newer epoch is
 * either logged after this mutation (the mutation predates the fence and the new owner's
 * reconcile sees it) or before it (and the mutation is refused).
 */
import { HesError, type NodeId } from "@hes/base";
import type {
  ChangeQuery,
  ChunkExportPiece,
  ChunkId,
  ChunkRun,
  ChunkVersion,
  ExtentStore,
} from "@hes/extent-store";
import { crc32c } from "@node-rs/crc32";
import type {
  ChunkReplica,
  CopyRangeSide,
  ReplicaCallOptions,
  ReplicaImportOptions,
  ReplicaReadOptions,
  ReplicaWriteStamp,
} from "../contracts.js";

const BLOCK_BYTES = 4096;

/** Throws HES_FENCED when `epoch` is below the chunk's stored epoch. */
export function checkEpoch(store: ExtentStore, chunk: ChunkId, epoch: number, what: string): void {
  if (!Number.isSafeInteger(epoch) || epoch < 0) {
    throw new RangeError(`epoch must be a safe integer >= 0, got ${epoch}`);
  }
  const version = store.version(chunk);
  if (version !== undefined && epoch < version.epoch) {
    throw new HesError(
      "HES_FENCED",
      `${what} of chunk ${chunk.volumeId}/${chunk.chunkIndex} at epoch ${epoch} refused: ` +
        `the chunk is sealed at epoch ${version.epoch} by a newer owner`,
      { details: { epoch: version.epoch } },
    );
  }
}

/** A {@link ChunkReplica} over this node's store. */
export class LocalReplica implements ChunkReplica {
  readonly local = true;

  constructor(
    readonly nodeId: NodeId,
    private readonly store: ExtentStore,
  ) {}

  async write(chunk: ChunkId, offsetBytes: number, data: Uint8Array, stamp: ReplicaWriteStamp) {
    checkEpoch(this.store, chunk, stamp.epoch, "write");
    return this.store.write(chunk, offsetBytes, data, stamp);
  }

  async read(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options: ReplicaReadOptions,
  ): Promise<Uint8Array> {
    checkEpoch(this.store, chunk, options.epoch, "read");
    return this.store.read(chunk, offsetBytes, lengthBytes, viewOf(options));
  }

  async writeZeroes(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    stamp: ReplicaWriteStamp & { readonly unmap?: boolean },
  ) {
    checkEpoch(this.store, chunk, stamp.epoch, "write-zeroes");
    return this.store.writeZeroes(chunk, offsetBytes, lengthBytes, stamp);
  }

  async discard(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    stamp: ReplicaWriteStamp,
  ) {
    checkEpoch(this.store, chunk, stamp.epoch, "discard");
    return this.store.discard(chunk, offsetBytes, lengthBytes, stamp);
  }

  /**
   * Copies at this node: the bytes pass through this process's memory, never the network.
   * Holes and zeroes of the source stay metadata (no data is written for them).
   */
  async copyRange(
    source: CopyRangeSide & { readonly snapshotId?: number },
    target: CopyRangeSide,
    lengthBytes: number,
    stamp: ReplicaWriteStamp,
  ): Promise<void> {
    checkEpoch(this.store, target.chunk, stamp.epoch, "copy-range");
    const view = source.snapshotId === undefined ? {} : { snapshotId: source.snapshotId };
    const runs = this.store.allocationMap(source.chunk, source.offsetBytes, lengthBytes, view);
    const pieceMax = this.store.writeBytesMax;
    for (const run of runs) {
      const delta = run.offsetBytes - source.offsetBytes;
      if (run.state !== "data") {
        checkEpoch(this.store, target.chunk, stamp.epoch, "copy-range");
        await this.store.writeZeroes(target.chunk, target.offsetBytes + delta, run.lengthBytes, {
          ...stamp,
          unmap: run.state === "hole",
        });
        continue;
      }
      for (let done = 0; done < run.lengthBytes; done += pieceMax) {
        const n = Math.min(pieceMax, run.lengthBytes - done);
        const data = await this.store.read(source.chunk, run.offsetBytes + done, n, view);
        checkEpoch(this.store, target.chunk, stamp.epoch, "copy-range");
        await this.store.write(target.chunk, target.offsetBytes + delta + done, data, stamp);
      }
    }
  }

  async seal(chunk: ChunkId, epoch: number): Promise<ChunkVersion> {
    checkEpoch(this.store, chunk, epoch, "seal");
    return this.store.seal(chunk, epoch);
  }

  async version(chunk: ChunkId): Promise<ChunkVersion | undefined> {
    return this.store.version(chunk);
  }

  async allocation(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options: { readonly snapshotId?: number } = {},
  ): Promise<ChunkRun[]> {
    return this.store.allocationMap(chunk, offsetBytes, lengthBytes, viewOf(options));
  }

  async changedBlocks(chunk: ChunkId, query: ChangeQuery): Promise<ChunkRun[]> {
    return this.store.changedBlocks(chunk, query);
  }

  /** Reads (verifying the stored checksums) and returns crc32c per 4 KiB block. */
  async blockChecksums(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options: { readonly snapshotId?: number; readonly signal?: AbortSignal } = {},
  ): Promise<Uint32Array> {
    const data = await this.store.read(chunk, offsetBytes, lengthBytes, viewOf(options));
    const crcs = new Uint32Array(lengthBytes / BLOCK_BYTES);
    for (let i = 0; i < crcs.length; i++) {
      crcs[i] = crc32c(data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES));
    }
    return crcs;
  }

  exportChunk(
    chunk: ChunkId,
    options: {
      readonly sinceSeq?: number;
      readonly snapshotId?: number;
      readonly signal?: AbortSignal;
    } = {},
  ): AsyncIterable<ChunkExportPiece> {
    return this.store.exportChunk(chunk, options);
  }

  async importChunk(
    chunk: ChunkId,
    pieces: AsyncIterable<ChunkExportPiece>,
    options: ReplicaImportOptions,
  ): Promise<ChunkVersion | undefined> {
    checkEpoch(this.store, chunk, options.epoch, "import");
    const { signal, keepNewer = false } = options;
    return this.store.importChunk(
      chunk,
      pieces,
      signal === undefined ? { keepNewer } : { signal, keepNewer },
    );
  }

  async pinSnapshot(chunk: ChunkId, snapshotId: number, options: { readonly epoch: number }) {
    checkEpoch(this.store, chunk, options.epoch, "snapshot");
    await this.store.pinSnapshot(chunk, snapshotId);
  }

  async releaseSnapshot(chunk: ChunkId, snapshotId: number, options: { readonly epoch: number }) {
    checkEpoch(this.store, chunk, options.epoch, "snapshot release");
    await this.store.releaseSnapshot(chunk, snapshotId);
  }

  async deleteChunk(chunk: ChunkId, options: { readonly epoch: number }) {
    checkEpoch(this.store, chunk, options.epoch, "delete");
    await this.store.deleteChunk(chunk);
  }
}

function viewOf(options: ReplicaCallOptions & { readonly snapshotId?: number }) {
  return {
    ...(options.snapshotId === undefined ? {} : { snapshotId: options.snapshotId }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  };
}
