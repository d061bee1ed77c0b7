/**
 * The chunk-replica service: one node's ExtentStore served to other nodes over the data-plane
 * framing. Every request is decoded and checked (ids, ranges, sizes, flags, epochs) before it
 * reaches the store; the work itself is done by {@link LocalReplica}, so remote owners are
 * fenced by exactly the code that fences the in-process owner. Errors travel as HesErrors with
 * their codes (the framing turns RangeError/TypeError into HES_INVALID_ARGUMENT); a refused
 * request never closes the connection.
 */
import { HesError, type Logger, type NodeId, nullLogger } from "@hes/base";
import type { ChunkExportPiece, ExtentStore } from "@hes/extent-store";
import {
  type FrameAddress,
  type FrameRequest,
  type FrameResponse,
  FrameServer,
  type FrameServerOptions,
} from "@hes/proto";
import {
  REPLICA_BLOCK_BYTES,
  REPLICA_COPY_WINDOW_BYTES,
  REPLICA_IO_BYTES_MAX,
  REPLICA_RUNS_MAX,
} from "./limits.js";
import { LocalReplica } from "./local-replica.js";
import {
  chunkOf,
  decodeRequest,
  encodeChecksums,
  encodeRuns,
  encodeWords,
  opName,
  pieceWords,
  ReplicaFlag,
  readPieces,
  versionWords,
  writePieces,
} from "./wire.js";

/** Options of {@link ChunkReplicaService}. */
export interface ChunkReplicaServiceOptions {
  readonly nodeId: NodeId;
  readonly store: ExtentStore;
  readonly logger?: Logger;
  /** Passed to the FrameServer (TLS, connection and in-flight bounds). */
  readonly server?: Omit<FrameServerOptions, "handler" | "logger">;
}

const EMPTY: FrameResponse = {};

/** Serves one node's store; `handle` is the FrameServer handler (usable without a socket). */
export class ChunkReplicaService {
  readonly nodeId: NodeId;
  private readonly store: ExtentStore;
  private readonly replica: LocalReplica;
  private readonly logger: Logger;
  private readonly serverOptions: ChunkReplicaServiceOptions["server"];
  private server: FrameServer | undefined;

  constructor(options: ChunkReplicaServiceOptions) {
    this.nodeId = options.nodeId;
    this.store = options.store;
    this.replica = new LocalReplica(options.nodeId, options.store);
    this.logger = options.logger ?? nullLogger;
    this.serverOptions = options.server;
  }

  /** Starts serving on `address`; resolves with the bound address (port 0 → the real one). */
  async listen(address: FrameAddress): Promise<FrameAddress> {
    if (this.server !== undefined) throw new HesError("HES_INVALID_ARGUMENT", "already listening");
    this.server = new FrameServer({
      ...this.serverOptions,
      handler: (request) => this.handle(request),
      logger: this.logger,
    });
    return this.server.listen(address);
  }

  /** Stops serving: closes the listener and every connection (the store stays open). */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    await server?.close();
  }

  /** Frame statistics (connections, requests, errors, protocol violations). */
  stats() {
    return this.server?.stats();
  }

  /** Decodes, checks and runs one request. */
  handle(request: FrameRequest): Promise<FrameResponse> {
    const name = opName(request.opcode);
    if (name === undefined) {
      return Promise.reject(
        new HesError("HES_UNSUPPORTED", `opcode 0x${request.opcode.toString(16)} is unknown`),
      );
    }
    if (name !== "write" && name !== "importWindow" && request.payload.byteLength !== 0) {
      return Promise.reject(new HesError("HES_INVALID_ARGUMENT", `${name}: unexpected payload`));
    }
    return this[name](request);
  }

  private checkRange(what: string, offsetBytes: number, lengthBytes: number, max: number): void {
    const chunkBytes = this.store.chunkSizeBytes;
    if (offsetBytes % REPLICA_BLOCK_BYTES !== 0 || offsetBytes >= chunkBytes) {
      throw new HesError(
        "HES_INVALID_ARGUMENT",
        `${what}: offsetBytes ${offsetBytes} must be a multiple of 4096 inside the ` +
          `${chunkBytes}-byte chunk`,
      );
    }
    if (lengthBytes === 0 || lengthBytes % REPLICA_BLOCK_BYTES !== 0 || lengthBytes > max) {
      throw new HesError(
        "HES_INVALID_ARGUMENT",
        `${what}: lengthBytes ${lengthBytes} must be a positive multiple of 4096, at most ${max}`,
      );
    }
    if (offsetBytes + lengthBytes > chunkBytes) {
      throw new HesError("HES_INVALID_ARGUMENT", `${what}: range runs past the chunk end`);
    }
  }

  private snapshotOf(fields: { flags: number; snapshotId: number }) {
    return (fields.flags & ReplicaFlag.snapshot) !== 0 ? { snapshotId: fields.snapshotId } : {};
  }

  private async write(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("write", request.meta);
    this.checkRange("write", f.offsetBytes, request.payload.byteLength, REPLICA_IO_BYTES_MAX);
    await this.replica.write(chunkOf(f), f.offsetBytes, request.payload, f);
    return EMPTY;
  }

  private async read(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("read", request.meta);
    this.checkRange("read", f.offsetBytes, f.lengthBytes, REPLICA_IO_BYTES_MAX);
    const data = await this.replica.read(chunkOf(f), f.offsetBytes, f.lengthBytes, {
      epoch: f.epoch,
      ...this.snapshotOf(f),
    });
    return { payload: data };
  }

  private async writeZeroes(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("writeZeroes", request.meta);
    this.checkRange("writeZeroes", f.offsetBytes, f.lengthBytes, this.store.chunkSizeBytes);
    const unmap = (f.flags & ReplicaFlag.unmap) !== 0;
    await this.replica.writeZeroes(chunkOf(f), f.offsetBytes, f.lengthBytes, { ...f, unmap });
    return EMPTY;
  }

  private async discard(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("discard", request.meta);
    this.checkRange("discard", f.offsetBytes, f.lengthBytes, this.store.chunkSizeBytes);
    await this.replica.discard(chunkOf(f), f.offsetBytes, f.lengthBytes, f);
    return EMPTY;
  }

  private async copyRange(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("copyRange", request.meta);
    const max = this.store.chunkSizeBytes;
    this.checkRange("copyRange source", f.offsetBytes, f.lengthBytes, max);
    this.checkRange("copyRange target", f.targetOffsetBytes, f.lengthBytes, max);
    await this.replica.copyRange(
      { chunk: chunkOf(f), offsetBytes: f.offsetBytes, ...this.snapshotOf(f) },
      {
        chunk: { volumeId: f.targetVolumeId, chunkIndex: f.targetChunkIndex },
        offsetBytes: f.targetOffsetBytes,
      },
      f.lengthBytes,
      f,
    );
    return EMPTY;
  }

  private async seal(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("seal", request.meta);
    const version = await this.replica.seal(chunkOf(f), f.epoch);
    return { meta: encodeWords(versionWords(version)) };
  }

  private async version(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("version", request.meta);
    return { meta: encodeWords(versionWords(await this.replica.version(chunkOf(f)))) };
  }

  private async allocation(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("allocation", request.meta);
    this.checkRange("allocation", f.offsetBytes, f.lengthBytes, this.store.chunkSizeBytes);
    const runs = await this.replica.allocation(
      chunkOf(f),
      f.offsetBytes,
      f.lengthBytes,
      this.snapshotOf(f),
    );
    return { payload: encodeRuns(runs) };
  }

  private async changedBlocks(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("changedBlocks", request.meta);
    const query =
      (f.flags & ReplicaFlag.between) !== 0
        ? {
            fromSnapshotId: f.fromSnapshotId,
            ...((f.flags & ReplicaFlag.toSnapshot) !== 0 ? { toSnapshotId: f.toSnapshotId } : {}),
          }
        : { sinceSeq: f.sinceSeq, ...this.snapshotOf(f) };
    const runs = await this.replica.changedBlocks(chunkOf(f), query);
    if (runs.length > REPLICA_RUNS_MAX) {
      throw new HesError("HES_TOO_LARGE", `changed-blocks answer of ${runs.length} runs`);
    }
    return { payload: encodeRuns(runs) };
  }

  private async blockChecksums(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("blockChecksums", request.meta);
    this.checkRange("blockChecksums", f.offsetBytes, f.lengthBytes, REPLICA_IO_BYTES_MAX);
    const crcs = await this.replica.blockChecksums(
      chunkOf(f),
      f.offsetBytes,
      f.lengthBytes,
      this.snapshotOf(f),
    );
    return { payload: encodeChecksums(crcs) };
  }

  /**
   * One window of an export: the chunk's version (as of the start of this window), then the
   * pieces inside [offsetBytes, offsetBytes + lengthBytes). Data goes in the payload.
   */
  private async exportWindow(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("exportWindow", request.meta);
    this.checkRange("exportWindow", f.offsetBytes, f.lengthBytes, REPLICA_COPY_WINDOW_BYTES);
    const chunk = chunkOf(f);
    const options = {
      sinceSeq: f.sinceSeq,
      offsetBytes: f.offsetBytes,
      lengthBytes: f.lengthBytes,
      ...this.snapshotOf(f),
      signal: request.signal,
    };
    let version: { epoch: number; durableSeq: number } | undefined;
    const body: Exclude<ChunkExportPiece, { kind: "version" }>[] = [];
    for await (const piece of this.store.exportChunk(chunk, options)) {
      if (piece.kind === "version") version = piece;
      else body.push(piece);
    }
    const head = versionWords(version);
    const meta = encodeWords([...head, body.length, ...new Array(pieceWords(body)).fill(0)]);
    const words: number[] = [];
    writePieces((value) => words.push(value), body);
    meta.set(encodeWords(words), (head.length + 1) * 8);
    const payload = body.flatMap((piece) => (piece.kind === "data" ? [piece.data] : []));
    return { meta, payload };
  }

  /**
   * One window of an import: its pieces are applied (each durable before the answer); the
   * version flag marks the last window of a copy, whose version is stored after everything.
   */
  private async importWindow(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f, rest } = decodeRequest("importWindow", request.meta, false);
    const pieces: ChunkExportPiece[] = readPieces(
      rest,
      f.pieceCount,
      request.payload,
      REPLICA_BLOCK_BYTES,
    );
    for (const piece of pieces) {
      if (piece.kind === "version") continue;
      const length = piece.kind === "data" ? piece.data.byteLength : piece.lengthBytes;
      this.checkRange("importWindow piece", piece.offsetBytes, length, this.store.chunkSizeBytes);
    }
    if ((f.flags & ReplicaFlag.version) !== 0) {
      pieces.push({ kind: "version", epoch: f.versionEpoch, durableSeq: f.versionDurableSeq });
    }
    const version = await this.replica.importChunk(chunkOf(f), iterate(pieces), {
      epoch: f.epoch,
      keepNewer: (f.flags & ReplicaFlag.keepNewer) !== 0,
      signal: request.signal,
    });
    return { meta: encodeWords(versionWords(version)) };
  }

  private async pinSnapshot(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("pinSnapshot", request.meta);
    await this.replica.pinSnapshot(chunkOf(f), f.snapshotId, f);
    return EMPTY;
  }

  private async releaseSnapshot(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("releaseSnapshot", request.meta);
    await this.replica.releaseSnapshot(chunkOf(f), f.snapshotId, f);
    return EMPTY;
  }

  private async deleteChunk(request: FrameRequest): Promise<FrameResponse> {
    const { fields: f } = decodeRequest("deleteChunk", request.meta);
    await this.replica.deleteChunk(chunkOf(f), f);
    return EMPTY;
  }
}

async function* iterate<T>(items: readonly T[]): AsyncGenerator<T> {
  yield* items;
}
