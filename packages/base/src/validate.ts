/**
 * Argument checks for public APIs and wire boundaries. Bad arguments are the caller's bug:
 * they throw `RangeError` / `TypeError` whose message names the argument and the bound.
 * Wire code converts these to HES_INVALID_ARGUMENT at its edge.
 */

/** Bounds for {@link checkInteger}. Both inclusive. */
export interface IntegerBounds {
  readonly min?: number;
  readonly max?: number;
  /** The value must be a multiple of this (alignment). */
  readonly multipleOf?: number;
}

/** Returns `value` when it is a safe integer within `bounds`; throws RangeError/TypeError. */
export function checkInteger(value: unknown, name: string, bounds: IntegerBounds = {}): number {
  if (typeof value !== "number") {
    throw new TypeError(`${name} must be a number, got ${typeof value}`);
  }
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(`${name} must be a safe integer, got ${value}`);
  }
  if (bounds.min !== undefined && value < bounds.min) {
    throw new RangeError(`${name} must be >= ${bounds.min}, got ${value}`);
  }
  if (bounds.max !== undefined && value > bounds.max) {
    throw new RangeError(`${name} must be <= ${bounds.max}, got ${value}`);
  }
  if (bounds.multipleOf !== undefined && value % bounds.multipleOf !== 0) {
    throw new RangeError(`${name} must be a multiple of ${bounds.multipleOf}, got ${value}`);
  }
  return value;
}

/** Returns `value` when it is a Uint8Array (a Buffer is one); throws TypeError otherwise. */
export function checkBytes(value: unknown, name: string, maxLengthBytes?: number): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`${name} must be a Uint8Array`);
  }
  if (maxLengthBytes !== undefined && value.byteLength > maxLengthBytes) {
    throw new RangeError(`${name} is ${value.byteLength} bytes, more than ${maxLengthBytes}`);
  }
  return value;
}

/**
 * Converts a protobuf 64-bit integer (bigint) to a number, refusing values that a number
 * cannot hold exactly. The one place wire integers become JavaScript numbers.
 */
export function toSafeNumber(value: bigint | number, name: string): number {
  const asNumber = Number(value);
  if (
    !Number.isSafeInteger(asNumber) ||
    (typeof value === "bigint" && BigInt(asNumber) !== value)
  ) {
    throw new RangeError(`${name} is not a safe integer: ${String(value)}`);
  }
  return asNumber;
}
