/**
 * Checks of command fields. A command comes from the replicated log, so a bad field is not a
 * bug here: it is rejected with a HesError (the same on every member) and changes nothing.
 */
import { HesError, type HesErrorCode, isNodeId, type NodeId } from "@hes/base";
import { NAME_BYTES_MAX } from "../limits.js";

/** Rejects the command being applied. Handlers call this before they change anything. */
export function reject(
  code: HesErrorCode,
  message: string,
  details: Readonly<Record<string, unknown>> = {},
): never {
  throw new HesError(code, message, { details });
}

/** Bounds for {@link u64}; both inclusive. */
export interface U64Bounds {
  readonly min?: number;
  readonly max?: number;
}

/** A uint64 field as a safe integer within bounds. */
export function u64(value: bigint, what: string, bounds: U64Bounds = {}): number {
  const min = bounds.min ?? 0;
  const max = bounds.max ?? Number.MAX_SAFE_INTEGER;
  if (value < BigInt(min) || value > BigInt(max)) {
    reject("HES_INVALID_ARGUMENT", `${what} must be within [${min}, ${max}], got ${value}`);
  }
  return Number(value);
}

/** A node id field (1 ≤ id < 2^32). */
export function nodeIdArg(value: number, what: string): NodeId {
  if (!isNodeId(value)) reject("HES_INVALID_ARGUMENT", `${what} must be a node id, got ${value}`);
  return value;
}

/** An optional node id field: 0 means none. */
export function optionalNodeIdArg(value: number, what: string): NodeId | 0 {
  return value === 0 ? 0 : nodeIdArg(value, what);
}

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** A volume or snapshot name: [A-Za-z0-9][A-Za-z0-9._-]*, at most NAME_BYTES_MAX. */
export function nameArg(value: string, what: string): string {
  if (value.length === 0 || value.length > NAME_BYTES_MAX || !NAME_PATTERN.test(value)) {
    reject(
      "HES_INVALID_ARGUMENT",
      `${what} must be 1 to ${NAME_BYTES_MAX} characters of [A-Za-z0-9._-] starting with a ` +
        `letter or digit, got ${JSON.stringify(value.slice(0, NAME_BYTES_MAX + 1))}`,
    );
  }
  return value;
}

const PRINTABLE_PATTERN = /^[\x20-\x7e]*$/;

/** A label, address or path: printable ASCII (so characters are bytes), non-empty, bounded. */
export function textArg(value: string, what: string, maxBytes: number): string {
  if (value.length === 0 || value.length > maxBytes || !PRINTABLE_PATTERN.test(value)) {
    reject(
      "HES_INVALID_ARGUMENT",
      `${what} must be 1 to ${maxBytes} printable ASCII characters, got ` +
        JSON.stringify(value.slice(0, maxBytes + 1)),
    );
  }
  return value;
}

/** True when `value` is a power of two (a positive safe integer). */
export function isPowerOfTwo(value: number): boolean {
  if (!Number.isSafeInteger(value) || value <= 0) return false;
  let rest = value;
  while (rest % 2 === 0) rest /= 2;
  return rest === 1;
}
