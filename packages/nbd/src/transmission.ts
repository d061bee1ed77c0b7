/**
 * Serving one admitted transmission request against the device: the device call, then the
 * reply. Requests reaching here passed `checkRequest`; a device failure rejects and the
 * connection turns it into the NBD error reply.
 */
import { HesError } from "@hes/base";
import type { AllocationExtent, BlockDevice } from "@hes/blockdev";
import {
  encodeBlockStatus,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeSimpleReply,
  encodeStructuredDone,
  type RequestHeader,
} from "./codec.js";
import {
  NBD_BLOCK_STATUS_DESCRIPTORS_MAX,
  NBD_HOLE_CHUNK_BYTES_MIN,
  NBD_SPARSE_READ_BYTES_MIN,
} from "./limits.js";
import {
  BASE_ALLOCATION_CONTEXT_ID,
  CMD_BLOCK_STATUS,
  CMD_CACHE,
  CMD_FLAG_DF,
  CMD_FLAG_FAST_ZERO,
  CMD_FLAG_FUA,
  CMD_FLAG_NO_HOLE,
  CMD_FLAG_REQ_ONE,
  CMD_FLUSH,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  CMD_WRITE_ZEROES,
} from "./protocol.js";
import { blockStatusDescriptors, planSparseRead, type TransmissionContext } from "./requests.js";

/** What serving a request needs from its connection. */
export interface Executor {
  readonly device: BlockDevice;
  readonly context: TransmissionContext;
  readonly controller: AbortController;
  send(parts: readonly Uint8Array[]): void;
}

/** Runs one request and sends its successful reply; rejects when the device fails. */
export async function executeRequest(
  executor: Executor,
  header: RequestHeader,
  payload: Buffer | undefined,
): Promise<void> {
  const { device, controller } = executor;
  const signal = controller.signal;
  const fua = (header.flags & CMD_FLAG_FUA) !== 0;
  switch (header.type) {
    case CMD_READ:
      return serveRead(executor, header);
    case CMD_WRITE:
      if (payload !== undefined && payload.length > 0) {
        await device.write({ offsetBytes: header.offsetBytes, data: payload, fua, signal });
      }
      break;
    case CMD_FLUSH:
      await device.flush({ signal });
      break;
    case CMD_TRIM:
      await inPieces(executor, header, (offsetBytes, lengthBytes) =>
        device.discard({ offsetBytes, lengthBytes, fua, signal }),
      );
      break;
    case CMD_WRITE_ZEROES: {
      const mayUnmap = (header.flags & CMD_FLAG_NO_HOLE) === 0;
      const fastOnly = (header.flags & CMD_FLAG_FAST_ZERO) !== 0;
      await inPieces(executor, header, (offsetBytes, lengthBytes) =>
        device.writeZeroes({ offsetBytes, lengthBytes, mayUnmap, fastOnly, fua, signal }),
      );
      break;
    }
    case CMD_CACHE:
      // A hint with no semantics (proto.md); the BlockDevice contract has no cache to warm.
      break;
    case CMD_BLOCK_STATUS:
      return serveBlockStatus(executor, header);
    default:
      throw new HesError("HES_INTERNAL", `command ${header.type} reached the executor`);
  }
  executor.send([encodeSimpleReply(0, header)]);
}

/**
 * TRIM and WRITE_ZEROES carry no payload, so clients may cover more than the device takes
 * in one call: split into `maxRequestBytes` pieces, one after another.
 */
async function inPieces(
  executor: Executor,
  header: RequestHeader,
  run: (offsetBytes: number, lengthBytes: number) => Promise<void>,
): Promise<void> {
  const { device, context } = executor;
  const pieceMax =
    Math.floor(device.maxRequestBytes / context.minimumBlockBytes) * context.minimumBlockBytes;
  const end = header.offsetBytes + header.lengthBytes;
  for (let at = header.offsetBytes; at < end; at += pieceMax) {
    await run(at, Math.min(pieceMax, end - at));
  }
}

async function serveRead(executor: Executor, header: RequestHeader): Promise<void> {
  const { device, context, controller } = executor;
  const { offsetBytes, lengthBytes } = header;
  const range = { offsetBytes, lengthBytes, signal: controller.signal };
  if (!context.structuredReplies) {
    const data = lengthBytes === 0 ? undefined : checkedData(await device.read(range), header);
    executor.send(
      data === undefined ? [encodeSimpleReply(0, header)] : [encodeSimpleReply(0, header), data],
    );
    return;
  }
  if (lengthBytes === 0) {
    executor.send([encodeStructuredDone(header)]);
    return;
  }
  const sparse = lengthBytes >= NBD_SPARSE_READ_BYTES_MIN && (header.flags & CMD_FLAG_DF) === 0;
  if (!sparse) {
    const data = checkedData(await device.read(range), header);
    executor.send([encodeOffsetDataHeader(header, offsetBytes, lengthBytes, true), data]);
    return;
  }
  // The map is a hint for saving bytes on the wire: if it fails, send everything as data.
  const [read, extents] = await Promise.all([
    device.read(range),
    device.allocation(range).catch((): AllocationExtent[] => []),
  ]);
  const data = checkedData(read, header);
  const pieces = planSparseRead(offsetBytes, lengthBytes, extents, NBD_HOLE_CHUNK_BYTES_MIN);
  const parts: Uint8Array[] = [];
  pieces.forEach((piece, index) => {
    const done = index === pieces.length - 1;
    if (piece.hole) {
      parts.push(encodeOffsetHole(header, piece.offsetBytes, piece.lengthBytes, done));
      return;
    }
    const start = piece.offsetBytes - offsetBytes;
    parts.push(encodeOffsetDataHeader(header, piece.offsetBytes, piece.lengthBytes, done));
    parts.push(data.subarray(start, start + piece.lengthBytes));
  });
  executor.send(parts);
}

/** A device returning the wrong length would desynchronise the stream: fail the request. */
function checkedData(data: Uint8Array, header: RequestHeader): Uint8Array {
  if (data.byteLength !== header.lengthBytes) {
    throw new HesError(
      "HES_INTERNAL",
      `device returned ${data.byteLength} bytes for a read of ${header.lengthBytes}`,
    );
  }
  return data;
}

async function serveBlockStatus(executor: Executor, header: RequestHeader): Promise<void> {
  const { device, context, controller } = executor;
  const block = context.minimumBlockBytes;
  const requestEnd = header.offsetBytes + header.lengthBytes;
  // Ask the device for whole logical blocks, no more than one request's worth.
  const start = Math.floor(header.offsetBytes / block) * block;
  const spanMax = Math.floor(device.maxRequestBytes / block) * block;
  const end = Math.min(Math.ceil(requestEnd / block) * block, context.sizeBytes, start + spanMax);
  const extents = await device.allocation({
    offsetBytes: start,
    lengthBytes: end - start,
    signal: controller.signal,
  });
  const lengthBytes = Math.min(requestEnd, end) - header.offsetBytes;
  let descriptors = blockStatusDescriptors(
    header.offsetBytes,
    lengthBytes,
    extents,
    (header.flags & CMD_FLAG_REQ_ONE) !== 0,
    NBD_BLOCK_STATUS_DESCRIPTORS_MAX,
  );
  // Status 0 ("allocated, contents unknown") is always a truthful answer (proto.md).
  if (descriptors.length === 0) descriptors = [{ lengthBytes, flags: 0 }];
  executor.send([encodeBlockStatus(header, BASE_ALLOCATION_CONTEXT_ID, descriptors)]);
}
