/**
 * Invariant checks. A failed assertion is a bug in this process: it throws `AssertionError`,
 * which no code catches, so the process stops rather than continue in a wrong state.
 * Assertions stay on in production.
 */

/** Thrown by {@link assert}. Never caught on purpose. */
export class AssertionError extends Error {
  override readonly name = "AssertionError";
}

/** Throws AssertionError when `condition` is false. `message` says which invariant broke. */
export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) {
    throw new AssertionError(typeof message === "function" ? message() : message);
  }
}

/** Marks a branch that the types say cannot happen (exhaustive switches). */
export function unreachable(value: never, what: string): never {
  throw new AssertionError(`unreachable: ${what}: ${String(value)}`);
}
