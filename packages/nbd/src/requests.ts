/**
 * Transmission-phase decisions that need no IO: whether a request is acceptable (and which
 * NBD error it gets when not), how a sparse READ is cut into data and hole chunks, and how an
 * allocation map becomes block-status descriptors. Pure, so each rule has a table test.
 */
import type { AllocationExtent } from "@hes/blockdev";
import type { BlockStatusDescriptor, RequestHeader } from "./codec.js";
import {
  CMD_BLOCK_STATUS,
  CMD_CACHE,
  CMD_DISC,
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
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_EPERM,
  STATE_HOLE,
  STATE_ZERO,
} from "./protocol.js";

/** What the server negotiated with one connection, and the export's geometry. */
export interface TransmissionContext {
  readonly sizeBytes: number;
  readonly minimumBlockBytes: number;
  readonly maximumPayloadBytes: number;
  readonly readOnly: boolean;
  readonly structuredReplies: boolean;
  /** `base:allocation` was selected for this export. */
  readonly blockStatus: boolean;
}

/** A refused request: the NBD error and a message for the client and the log. */
export interface Refusal {
  readonly errno: number;
  readonly message: string;
}

/** FUA is valid on every command once advertised (proto.md, "Command flags"). */
function allowedFlags(type: number, context: TransmissionContext): number {
  switch (type) {
    case CMD_READ:
      return CMD_FLAG_FUA | (context.structuredReplies ? CMD_FLAG_DF : 0);
    case CMD_WRITE_ZEROES:
      return CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO;
    case CMD_BLOCK_STATUS:
      return CMD_FLAG_FUA | CMD_FLAG_REQ_ONE;
    default:
      return CMD_FLAG_FUA;
  }
}

const NAMES: Record<number, string> = {
  [CMD_READ]: "READ",
  [CMD_WRITE]: "WRITE",
  [CMD_DISC]: "DISC",
  [CMD_FLUSH]: "FLUSH",
  [CMD_TRIM]: "TRIM",
  [CMD_CACHE]: "CACHE",
  [CMD_WRITE_ZEROES]: "WRITE_ZEROES",
  [CMD_BLOCK_STATUS]: "BLOCK_STATUS",
};

/** A command's name for messages and logs. */
export function commandName(type: number): string {
  return NAMES[type] ?? `command ${type}`;
}

/**
 * Checks a request against the negotiated context. Returns undefined when it may go to the
 * device, else the error proto.md prescribes: EINVAL for unknown commands or flags,
 * misalignment, reads and trims past the end; ENOSPC for writes past the end; EPERM for
 * changes to a read-only export; EOVERFLOW for a structured READ above the maximum payload.
 */
export function checkRequest(
  request: RequestHeader,
  context: TransmissionContext,
): Refusal | undefined {
  const { type, flags, offsetBytes, lengthBytes } = request;
  const name = commandName(type);
  if (NAMES[type] === undefined || type === CMD_DISC) {
    return { errno: NBD_EINVAL, message: `unknown command type ${type}` };
  }
  const unknownFlags = flags & ~allowedFlags(type, context);
  if (unknownFlags !== 0) {
    return {
      errno: NBD_EINVAL,
      message: `${name}: flags 0x${unknownFlags.toString(16)} not valid`,
    };
  }
  const changes = type === CMD_WRITE || type === CMD_TRIM || type === CMD_WRITE_ZEROES;
  if (changes && context.readOnly) {
    return { errno: NBD_EPERM, message: `${name}: the export is read-only` };
  }
  if (type === CMD_FLUSH) {
    return offsetBytes === 0 && lengthBytes === 0
      ? undefined
      : { errno: NBD_EINVAL, message: "FLUSH: offset and length must be zero" };
  }
  if ((type === CMD_READ || type === CMD_WRITE) && lengthBytes > context.maximumPayloadBytes) {
    const errno = type === CMD_READ && context.structuredReplies ? NBD_EOVERFLOW : NBD_EINVAL;
    const message =
      `${name}: ${lengthBytes} bytes is above the maximum payload ` +
      `of ${context.maximumPayloadBytes}`;
    return { errno, message };
  }
  if (type === CMD_BLOCK_STATUS) return checkBlockStatus(request, context);
  const block = context.minimumBlockBytes;
  if (offsetBytes % block !== 0 || lengthBytes % block !== 0) {
    return {
      errno: NBD_EINVAL,
      message:
        `${name}: offset ${offsetBytes} and length ${lengthBytes} ` +
        `must be multiples of ${block}`,
    };
  }
  if (offsetBytes + lengthBytes > context.sizeBytes) {
    const errno = type === CMD_WRITE || type === CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
    const message =
      `${name}: offset ${offsetBytes} + length ${lengthBytes} is past the end ` +
      `(${context.sizeBytes} bytes)`;
    return { errno, message };
  }
  return undefined;
}

/** Block status needs a selected context; alignment is not required (its length is a hint). */
function checkBlockStatus(
  request: RequestHeader,
  context: TransmissionContext,
): Refusal | undefined {
  if (!context.blockStatus) {
    return { errno: NBD_EINVAL, message: "BLOCK_STATUS: no metadata context was selected" };
  }
  if (request.lengthBytes === 0 || request.offsetBytes + request.lengthBytes > context.sizeBytes) {
    return {
      errno: NBD_EINVAL,
      message:
        `BLOCK_STATUS: offset ${request.offsetBytes} + length ${request.lengthBytes} ` +
        "is empty or past the end",
    };
  }
  return undefined;
}

/** One piece of a structured READ reply. */
export interface ReadPiece {
  readonly hole: boolean;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/**
 * Cuts a READ of [offset, offset+length) into data and hole pieces from the device's
 * allocation map: zero extents of at least `holeBytesMin` become holes, everything else
 * (adjacent pieces merged) is data. A map that does not cover the range exactly is not
 * trusted: the whole range is then one data piece.
 */
export function planSparseRead(
  offsetBytes: number,
  lengthBytes: number,
  extents: readonly AllocationExtent[],
  holeBytesMin: number,
): ReadPiece[] {
  const whole: ReadPiece[] = [{ hole: false, offsetBytes, lengthBytes }];
  const pieces: ReadPiece[] = [];
  let position = offsetBytes;
  for (const extent of extents) {
    if (extent.offsetBytes !== position || extent.lengthBytes <= 0) return whole;
    const hole = extent.zero && extent.lengthBytes >= holeBytesMin;
    const last = pieces[pieces.length - 1];
    if (last !== undefined && last.hole === hole) {
      pieces[pieces.length - 1] = { ...last, lengthBytes: last.lengthBytes + extent.lengthBytes };
    } else {
      pieces.push({ hole, offsetBytes: position, lengthBytes: extent.lengthBytes });
    }
    position += extent.lengthBytes;
  }
  return position === offsetBytes + lengthBytes ? pieces : whole;
}

/**
 * Turns an allocation map (which may start before `offsetBytes` after alignment) into
 * `base:allocation` descriptors starting exactly at `offsetBytes`, merging equal neighbours,
 * never covering more than `lengthBytes`, and at most `descriptorsMax` of them (one with
 * REQ_ONE). Returns an empty list when the map does not cover `offsetBytes`.
 */
export function blockStatusDescriptors(
  offsetBytes: number,
  lengthBytes: number,
  extents: readonly AllocationExtent[],
  requestOne: boolean,
  descriptorsMax: number,
): BlockStatusDescriptor[] {
  const limit = requestOne ? 1 : descriptorsMax;
  const end = offsetBytes + lengthBytes;
  const out: Array<{ lengthBytes: number; flags: number }> = [];
  let position = offsetBytes;
  for (const extent of extents) {
    const start = Math.max(extent.offsetBytes, offsetBytes);
    const stop = Math.min(extent.offsetBytes + extent.lengthBytes, end);
    if (stop <= start) continue;
    // A gap or overlap in the map ends the reply there: the client asks again from its end.
    if (start !== position) break;
    position = stop;
    const flags = (extent.hole ? STATE_HOLE : 0) | (extent.zero ? STATE_ZERO : 0);
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === flags) {
      last.lengthBytes += stop - start;
    } else {
      if (out.length === limit) break;
      out.push({ lengthBytes: stop - start, flags });
    }
  }
  return out;
}
