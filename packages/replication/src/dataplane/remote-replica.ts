/**
 * A {@link ChunkReplica} on another node, reached through its chunk-replica service over one
 * pipelined, reused FrameClient connection.
 *
 * - Deadlines per request: IO (read, write, zeroes, checksums) 2 s by default, so a hung node
 *   costs a volume at most that long; metadata 5 s; each export/import window 10 s.
 * - Retries: only idempotent requests (reads, version, maps, checksums, export windows), only
 *   when the connection failed (HES_UNAVAILABLE), at most once more. A mutation whose outcome
 *   is unknown (HES_TIMEOUT, HES_UNAVAILABLE) is reported to the caller, never resent.
 * - Bounded: the FrameClient keeps at most `inflightMax` requests in flight; a copy keeps at
 *   most REPLICA_COPY_WINDOWS_IN_FLIGHT_MAX windows (≤ 1 MiB each) in flight.
 * - Arguments are checked here first (RangeError/TypeError), the service checks them again.
 */
import type tls from "node:tls";
import { checkInteger, HesError, isHesError, type Logger, type NodeId } from "@hes/base";
import type {
  ChangeQuery,
  ChunkExportPiece,
  ChunkId,
  ChunkRun,
  ChunkVersion,
} from "@hes/extent-store";
import { type FrameAddress, type FrameCall, FrameClient, type FrameReply } from "@hes/proto";
import type {
  ChunkReplica,
  CopyRangeSide,
  ReplicaCallOptions,
  ReplicaImportOptions,
  ReplicaReadOptions,
  ReplicaWriteStamp,
} from "../contracts.js";
import {
  REPLICA_BLOCK_BYTES,
  REPLICA_CLIENT_INFLIGHT_MAX,
  REPLICA_CONTROL_DEADLINE_MS_DEFAULT,
  REPLICA_COPY_DEADLINE_MS_DEFAULT,
  REPLICA_COPY_WINDOW_BYTES,
  REPLICA_COPY_WINDOWS_IN_FLIGHT_MAX,
  REPLICA_IDEMPOTENT_ATTEMPTS_MAX,
  REPLICA_IO_BYTES_MAX,
  REPLICA_IO_DEADLINE_MS_DEFAULT,
} from "./limits.js";
import {
  decodeChecksums,
  decodeRuns,
  decodeWords,
  encodeRequest,
  pieceWords,
  ReplicaFlag,
  ReplicaOp,
  type ReplicaOpName,
  type RequestFields,
  readPieces,
  versionFromWords,
  wordReader,
  writePieces,
} from "./wire.js";

/** Options of {@link RemoteReplica}. */
export interface RemoteReplicaOptions {
  readonly nodeId: NodeId;
  readonly address: FrameAddress;
  /** Size of the chunks the peer stores (the volume's chunk size). */
  readonly chunkSizeBytes: number;
  readonly tls?: tls.ConnectionOptions;
  readonly ioDeadlineMs?: number;
  readonly controlDeadlineMs?: number;
  readonly copyDeadlineMs?: number;
  readonly inflightMax?: number;
  readonly logger?: Logger;
}

/** Counters of one remote replica's client. */
export interface RemoteReplicaStats {
  readonly requests: number;
  readonly retries: number;
  readonly failures: number;
  /** Payload bytes sent and received (data, not headers). */
  readonly bytesSent: number;
  readonly bytesReceived: number;
}

type Body = Exclude<ChunkExportPiece, { kind: "version" }>;
interface ExportWindow {
  readonly version: ChunkVersion | undefined;
  readonly pieces: Body[];
}

/** The replica on a peer node. */
export class RemoteReplica implements ChunkReplica {
  readonly local = false;
  readonly nodeId: NodeId;
  readonly chunkSizeBytes: number;
  private readonly client: FrameClient;
  private readonly ioDeadlineMs: number;
  private readonly controlDeadlineMs: number;
  private readonly copyDeadlineMs: number;
  private counters = { requests: 0, retries: 0, failures: 0, bytesSent: 0, bytesReceived: 0 };

  constructor(options: RemoteReplicaOptions) {
    this.nodeId = options.nodeId;
    this.chunkSizeBytes = checkInteger(options.chunkSizeBytes, "chunkSizeBytes", {
      min: REPLICA_BLOCK_BYTES,
      multipleOf: REPLICA_BLOCK_BYTES,
    });
    this.ioDeadlineMs = options.ioDeadlineMs ?? REPLICA_IO_DEADLINE_MS_DEFAULT;
    this.controlDeadlineMs = options.controlDeadlineMs ?? REPLICA_CONTROL_DEADLINE_MS_DEFAULT;
    this.copyDeadlineMs = options.copyDeadlineMs ?? REPLICA_COPY_DEADLINE_MS_DEFAULT;
    for (const [name, value] of Object.entries({
      ioDeadlineMs: this.ioDeadlineMs,
      controlDeadlineMs: this.controlDeadlineMs,
      copyDeadlineMs: this.copyDeadlineMs,
    })) {
      checkInteger(value, name, { min: 1 });
    }
    this.client = new FrameClient({
      address: options.address,
      ...(options.tls === undefined ? {} : { tls: options.tls }),
      inflightMax: options.inflightMax ?? REPLICA_CLIENT_INFLIGHT_MAX,
      deadlineMsDefault: this.controlDeadlineMs,
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    });
  }

  /** Where the peer's service is. */
  get address(): FrameAddress {
    return this.client.address;
  }

  stats(): RemoteReplicaStats {
    return { ...this.counters };
  }

  /** Closes the connection; pending calls fail with HES_CLOSED. */
  close(): Promise<void> {
    return this.client.close();
  }

  // ---- calls ----------------------------------------------------------------------------

  private async call(
    name: ReplicaOpName,
    request: FrameCall,
    idempotent: boolean,
  ): Promise<FrameReply> {
    const attempts = idempotent ? REPLICA_IDEMPOTENT_ATTEMPTS_MAX : 1;
    for (let attempt = 1; ; attempt++) {
      this.counters.requests++;
      try {
        const reply = await this.client.call(ReplicaOp[name], request);
        this.counters.bytesReceived += reply.payload.byteLength;
        return reply;
      } catch (error) {
        if (attempt < attempts && isHesError(error, "HES_UNAVAILABLE")) {
          this.counters.retries++;
          continue;
        }
        this.counters.failures++;
        throw error;
      }
    }
  }

  private request<N extends ReplicaOpName>(
    name: N,
    fields: Partial<RequestFields<N>>,
    deadlineMs: number,
    signal: AbortSignal | undefined,
    payload?: Uint8Array,
  ): FrameCall {
    const { meta } = encodeRequest(name, fields);
    if (payload !== undefined) this.counters.bytesSent += payload.byteLength;
    return {
      meta,
      deadlineMs,
      ...(payload === undefined ? {} : { payload }),
      ...(signal === undefined ? {} : { signal }),
    };
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    checkInteger(offsetBytes, "offsetBytes", {
      min: 0,
      max: this.chunkSizeBytes - REPLICA_BLOCK_BYTES,
      multipleOf: REPLICA_BLOCK_BYTES,
    });
    checkInteger(lengthBytes, "lengthBytes", {
      min: REPLICA_BLOCK_BYTES,
      max: this.chunkSizeBytes - offsetBytes,
      multipleOf: REPLICA_BLOCK_BYTES,
    });
  }

  async write(chunk: ChunkId, offsetBytes: number, data: Uint8Array, stamp: ReplicaWriteStamp) {
    checkChunk(chunk);
    if (!(data instanceof Uint8Array)) throw new TypeError("data must be a Uint8Array");
    this.checkRange(offsetBytes, data.byteLength);
    if (data.byteLength > REPLICA_IO_BYTES_MAX) {
      throw new RangeError(`a write is at most ${REPLICA_IO_BYTES_MAX} bytes (atomic)`);
    }
    checkStamp(stamp);
    const fields = { ...chunk, offsetBytes, epoch: stamp.epoch, seq: stamp.seq };
    await this.call(
      "write",
      this.request("write", fields, this.ioDeadlineMs, stamp.signal, data),
      false,
    );
  }

  /** Reads in pieces of ≤ 4 MiB, all in flight together (pipelined on one connection). */
  async read(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options: ReplicaReadOptions,
  ): Promise<Uint8Array> {
    checkChunk(chunk);
    this.checkRange(offsetBytes, lengthBytes);
    checkInteger(options.epoch, "epoch", { min: 0 });
    const out = new Uint8Array(lengthBytes);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < lengthBytes; done += REPLICA_IO_BYTES_MAX) {
      const n = Math.min(REPLICA_IO_BYTES_MAX, lengthBytes - done);
      const fields = {
        ...chunk,
        offsetBytes: offsetBytes + done,
        lengthBytes: n,
        epoch: options.epoch,
        ...snapshotFields(options.snapshotId),
      };
      const call = this.request("read", fields, this.ioDeadlineMs, options.signal);
      parts.push(
        this.call("read", call, true).then((reply) => {
          if (reply.payload.byteLength !== n) {
            throw new HesError("HES_PROTOCOL", `read answered ${reply.payload.byteLength} of ${n}`);
          }
          out.set(reply.payload, done);
        }),
      );
    }
    await Promise.all(parts);
    return out;
  }

  async writeZeroes(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    stamp: ReplicaWriteStamp & { readonly unmap?: boolean },
  ) {
    checkChunk(chunk);
    this.checkRange(offsetBytes, lengthBytes);
    checkStamp(stamp);
    const fields = {
      ...chunk,
      offsetBytes,
      lengthBytes,
      epoch: stamp.epoch,
      seq: stamp.seq,
      flags: stamp.unmap === true ? ReplicaFlag.unmap : 0,
    };
    const call = this.request("writeZeroes", fields, this.ioDeadlineMs, stamp.signal);
    await this.call("writeZeroes", call, false);
  }

  async discard(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    stamp: ReplicaWriteStamp,
  ) {
    checkChunk(chunk);
    this.checkRange(offsetBytes, lengthBytes);
    checkStamp(stamp);
    const fields = { ...chunk, offsetBytes, lengthBytes, epoch: stamp.epoch, seq: stamp.seq };
    await this.call(
      "discard",
      this.request("discard", fields, this.ioDeadlineMs, stamp.signal),
      false,
    );
  }

  async copyRange(
    source: CopyRangeSide & { readonly snapshotId?: number },
    target: CopyRangeSide,
    lengthBytes: number,
    stamp: ReplicaWriteStamp,
  ): Promise<void> {
    checkChunk(source.chunk);
    checkChunk(target.chunk);
    this.checkRange(source.offsetBytes, lengthBytes);
    this.checkRange(target.offsetBytes, lengthBytes);
    checkStamp(stamp);
    const fields = {
      ...source.chunk,
      offsetBytes: source.offsetBytes,
      ...snapshotFields(source.snapshotId),
      targetVolumeId: target.chunk.volumeId,
      targetChunkIndex: target.chunk.chunkIndex,
      targetOffsetBytes: target.offsetBytes,
      lengthBytes,
      epoch: stamp.epoch,
      seq: stamp.seq,
    };
    const call = this.request("copyRange", fields, this.copyDeadlineMs, stamp.signal);
    await this.call("copyRange", call, false);
  }

  async seal(chunk: ChunkId, epoch: number, options: ReplicaCallOptions = {}) {
    checkChunk(chunk);
    checkInteger(epoch, "epoch", { min: 0 });
    const call = this.request("seal", { ...chunk, epoch }, this.controlDeadlineMs, options.signal);
    const reply = await this.call("seal", call, false);
    const version = versionFromWords(decodeWords(reply.meta, 3, "seal"));
    if (version === undefined) throw new HesError("HES_PROTOCOL", "seal answered no version");
    return version;
  }

  async version(chunk: ChunkId, options: ReplicaCallOptions = {}) {
    checkChunk(chunk);
    const call = this.request("version", chunk, this.controlDeadlineMs, options.signal);
    const reply = await this.call("version", call, true);
    return versionFromWords(decodeWords(reply.meta, 3, "version"));
  }

  async allocation(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options: { readonly snapshotId?: number; readonly signal?: AbortSignal } = {},
  ): Promise<ChunkRun[]> {
    checkChunk(chunk);
    this.checkRange(offsetBytes, lengthBytes);
    const fields = { ...chunk, offsetBytes, lengthBytes, ...snapshotFields(options.snapshotId) };
    const call = this.request("allocation", fields, this.controlDeadlineMs, options.signal);
    return decodeRuns((await this.call("allocation", call, true)).payload);
  }

  async changedBlocks(
    chunk: ChunkId,
    query: ChangeQuery,
    options: ReplicaCallOptions = {},
  ): Promise<ChunkRun[]> {
    checkChunk(chunk);
    let fields: Partial<RequestFields<"changedBlocks">>;
    if ("sinceSeq" in query) {
      checkInteger(query.sinceSeq, "sinceSeq", { min: 0 });
      fields = { ...chunk, sinceSeq: query.sinceSeq, ...snapshotFields(query.snapshotId) };
    } else {
      checkInteger(query.fromSnapshotId, "fromSnapshotId", { min: 0 });
      const to = query.toSnapshotId;
      if (to !== undefined) checkInteger(to, "toSnapshotId", { min: 0 });
      fields = {
        ...chunk,
        fromSnapshotId: query.fromSnapshotId,
        toSnapshotId: to ?? 0,
        flags: ReplicaFlag.between | (to === undefined ? 0 : ReplicaFlag.toSnapshot),
      };
    }
    const call = this.request("changedBlocks", fields, this.controlDeadlineMs, options.signal);
    return decodeRuns((await this.call("changedBlocks", call, true)).payload);
  }

  async blockChecksums(
    chunk: ChunkId,
    offsetBytes: number,
    lengthBytes: number,
    options: { readonly snapshotId?: number; readonly signal?: AbortSignal } = {},
  ): Promise<Uint32Array> {
    checkChunk(chunk);
    this.checkRange(offsetBytes, lengthBytes);
    const out = new Uint32Array(lengthBytes / REPLICA_BLOCK_BYTES);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < lengthBytes; done += REPLICA_IO_BYTES_MAX) {
      const n = Math.min(REPLICA_IO_BYTES_MAX, lengthBytes - done);
      const fields = {
        ...chunk,
        offsetBytes: offsetBytes + done,
        lengthBytes: n,
        ...snapshotFields(options.snapshotId),
      };
      const call = this.request("blockChecksums", fields, this.ioDeadlineMs, options.signal);
      parts.push(
        this.call("blockChecksums", call, true).then((reply) => {
          const crcs = decodeChecksums(reply.payload, n / REPLICA_BLOCK_BYTES);
          out.set(crcs, done / REPLICA_BLOCK_BYTES);
        }),
      );
    }
    await Promise.all(parts);
    return out;
  }

  /**
   * Streams the chunk window by window (≤ 1 MiB of chunk address space each, a few in flight),
   * in block order, and the version LAST: the lowest any window reported, so that a catch-up
   * from it resends every block that changed while the export ran. (Importers store the
   * version after everything else wherever it comes in the stream.)
   */
  async *exportChunk(
    chunk: ChunkId,
    options: {
      readonly sinceSeq?: number;
      readonly snapshotId?: number;
      readonly signal?: AbortSignal;
    } = {},
  ): AsyncGenerator<ChunkExportPiece> {
    checkChunk(chunk);
    const sinceSeq = checkInteger(options.sinceSeq ?? 0, "sinceSeq", { min: 0 });
    const windows = Math.ceil(this.chunkSizeBytes / REPLICA_COPY_WINDOW_BYTES);
    const inFlight: Promise<ExportWindow>[] = [];
    let next = 0;
    const fill = () => {
      while (next < windows && inFlight.length < REPLICA_COPY_WINDOWS_IN_FLIGHT_MAX) {
        const p = this.exportWindow(chunk, next++, sinceSeq, options.snapshotId, options.signal);
        p.catch(() => {}); // awaited in order below; no unhandled rejection meanwhile
        inFlight.push(p);
      }
    };
    let lowest: ChunkVersion | undefined;
    fill();
    while (inFlight.length > 0) {
      const window = await (inFlight.shift() as Promise<ExportWindow>);
      fill();
      if (window.version === undefined) continue; // absent (or deleted meanwhile)
      if (lowest === undefined || window.version.durableSeq < lowest.durableSeq) {
        lowest = window.version;
      }
      yield* window.pieces;
    }
    if (lowest !== undefined) yield { kind: "version", ...lowest };
  }

  private async exportWindow(
    chunk: ChunkId,
    index: number,
    sinceSeq: number,
    snapshotId: number | undefined,
    signal: AbortSignal | undefined,
  ): Promise<ExportWindow> {
    const offsetBytes = index * REPLICA_COPY_WINDOW_BYTES;
    const lengthBytes = Math.min(REPLICA_COPY_WINDOW_BYTES, this.chunkSizeBytes - offsetBytes);
    const fields = { ...chunk, sinceSeq, ...snapshotFields(snapshotId), offsetBytes, lengthBytes };
    const call = this.request("exportWindow", fields, this.copyDeadlineMs, signal);
    const reply = await this.call("exportWindow", call, true);
    try {
      const rest = wordReader(reply.meta, "exportWindow");
      const head = [rest.take("present"), rest.take("epoch"), rest.take("durableSeq")];
      const count = rest.take("pieceCount");
      const pieces = readPieces(rest, count, reply.payload, REPLICA_BLOCK_BYTES);
      return { version: versionFromWords(head), pieces };
    } catch (error) {
      throw new HesError("HES_PROTOCOL", "export window answer is malformed", { cause: error });
    }
  }

  /**
   * Applies an export: pieces are sent in windows (≤ 1 MiB payload, a few in flight), and the
   * version last, after every window is durable, so an interrupted import never claims it.
   */
  async importChunk(
    chunk: ChunkId,
    pieces: AsyncIterable<ChunkExportPiece>,
    options: ReplicaImportOptions,
  ): Promise<ChunkVersion | undefined> {
    checkChunk(chunk);
    checkInteger(options.epoch, "epoch", { min: 0 });
    let version: ChunkVersion | undefined;
    let batch: Body[] = [];
    let batchBytes = 0;
    const inFlight = new Set<Promise<unknown>>();
    let failure: unknown;
    const send = async (body: Body[], last: ChunkVersion | undefined) => {
      const p = this.importWindow(chunk, body, last, options);
      inFlight.add(p);
      p.then(
        () => inFlight.delete(p),
        (error: unknown) => {
          inFlight.delete(p);
          failure ??= error;
        },
      );
      while (inFlight.size >= REPLICA_COPY_WINDOWS_IN_FLIGHT_MAX) await Promise.race(inFlight);
      if (failure !== undefined) throw failure;
    };
    for await (const piece of pieces) {
      if (failure !== undefined) break;
      if (piece.kind === "version") {
        version = { epoch: piece.epoch, durableSeq: piece.durableSeq };
        continue;
      }
      const bytes = piece.kind === "data" ? piece.data.byteLength : 0;
      if (batch.length > 0 && batchBytes + bytes > REPLICA_COPY_WINDOW_BYTES) {
        await send(batch, undefined);
        batch = [];
        batchBytes = 0;
      }
      batch.push(piece);
      batchBytes += bytes;
    }
    if (batch.length > 0) await send(batch, undefined);
    await Promise.allSettled([...inFlight]);
    if (failure !== undefined) throw failure;
    // Always a last window, even empty: it is fenced like every import, and stores the version.
    return this.importWindow(chunk, [], version, options);
  }

  private async importWindow(
    chunk: ChunkId,
    pieces: readonly Body[],
    version: ChunkVersion | undefined,
    options: ReplicaImportOptions,
  ): Promise<ChunkVersion | undefined> {
    const words = pieceWords(pieces);
    const { meta, writer } = encodeRequest(
      "importWindow",
      {
        ...chunk,
        epoch: options.epoch,
        flags:
          (version === undefined ? 0 : ReplicaFlag.version) |
          (options.keepNewer === true ? ReplicaFlag.keepNewer : 0),
        versionEpoch: version?.epoch ?? 0,
        versionDurableSeq: version?.durableSeq ?? 0,
        pieceCount: pieces.length,
      },
      words,
    );
    writePieces(writer, pieces);
    const payload = pieces.flatMap((p) => (p.kind === "data" ? [p.data] : []));
    for (const part of payload) this.counters.bytesSent += part.byteLength;
    const call: FrameCall = {
      meta,
      payload,
      deadlineMs: this.copyDeadlineMs,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    };
    const reply = await this.call("importWindow", call, false);
    return versionFromWords(decodeWords(reply.meta, 3, "importWindow"));
  }

  async pinSnapshot(chunk: ChunkId, snapshotId: number, options: { readonly epoch: number }) {
    checkChunk(chunk);
    checkInteger(snapshotId, "snapshotId", { min: 0 });
    checkInteger(options.epoch, "epoch", { min: 0 });
    const fields = { ...chunk, snapshotId, epoch: options.epoch };
    const call = this.request("pinSnapshot", fields, this.controlDeadlineMs, undefined);
    await this.call("pinSnapshot", call, false);
  }

  async releaseSnapshot(chunk: ChunkId, snapshotId: number, options: { readonly epoch: number }) {
    checkChunk(chunk);
    checkInteger(snapshotId, "snapshotId", { min: 0 });
    checkInteger(options.epoch, "epoch", { min: 0 });
    const fields = { ...chunk, snapshotId, epoch: options.epoch };
    const call = this.request("releaseSnapshot", fields, this.controlDeadlineMs, undefined);
    await this.call("releaseSnapshot", call, false);
  }

  async deleteChunk(chunk: ChunkId, options: { readonly epoch: number }) {
    checkChunk(chunk);
    checkInteger(options.epoch, "epoch", { min: 0 });
    const fields = { ...chunk, epoch: options.epoch };
    const call = this.request("deleteChunk", fields, this.controlDeadlineMs, undefined);
    await this.call("deleteChunk", call, false);
  }
}

function checkChunk(chunk: ChunkId): void {
  if (typeof chunk !== "object" || chunk === null) {
    throw new TypeError("chunk must be { volumeId, chunkIndex }");
  }
  checkInteger(chunk.volumeId, "chunk.volumeId", { min: 0 });
  checkInteger(chunk.chunkIndex, "chunk.chunkIndex", { min: 0 });
}

function checkStamp(stamp: ReplicaWriteStamp): void {
  checkInteger(stamp.epoch, "epoch", { min: 0 });
  checkInteger(stamp.seq, "seq", { min: 1 });
}

function snapshotFields(snapshotId: number | undefined) {
  if (snapshotId === undefined) return {};
  checkInteger(snapshotId, "snapshotId", { min: 0 });
  return { flags: ReplicaFlag.snapshot, snapshotId };
}
