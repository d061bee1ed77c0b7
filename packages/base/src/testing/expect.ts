/** Small assertion helpers for the shared suites (runner-agnostic, no `node:` imports). */
import { AssertionError } from "../assert.js";

/** One named test case of a shared suite. */
export interface SuiteCase {
  readonly name: string;
  readonly run: () => Promise<void>;
}

/** Throws when `actual` and `expected` differ, naming the first differing byte. */
export function expectBytesEqual(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.byteLength !== expected.byteLength) {
    throw new AssertionError(
      `${what}: length ${actual.byteLength}, expected ${expected.byteLength}`,
    );
  }
  for (let i = 0; i < actual.byteLength; i++) {
    if (actual[i] !== expected[i]) {
      throw new AssertionError(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

/** Awaits `promise` and requires it to reject with an error that `matches` accepts. */
export async function expectRejects(
  promise: Promise<unknown> | (() => Promise<unknown>),
  matches: (error: unknown) => boolean,
  what: string,
): Promise<unknown> {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (error) {
    if (!matches(error)) {
      throw new AssertionError(`${what}: rejected with an unexpected error: ${String(error)}`);
    }
    return error;
  }
  throw new AssertionError(`${what}: resolved, expected a rejection`);
}
