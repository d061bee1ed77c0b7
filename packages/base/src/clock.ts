/**
 * Time, injected. Production code reads time and sets timers only through a `Clock`, so the
 * simulator can run it against a fake clock (drift, jumps, no real waiting).
 */
import { HesError } from "./errors.js";

/** A cancellable timer. Cancelling twice, or after it fired, does nothing. */
export interface Timer {
  cancel(): void;
}

/** The source of time and timers. */
export interface Clock {
  /** Monotonic milliseconds from an arbitrary origin. Never goes backwards; use for timeouts. */
  nowMs(): number;
  /** Wall-clock milliseconds since the Unix epoch. May jump; use for display only. */
  wallMs(): number;
  /** Calls `callback` once, `delayMs` from now (0 = as soon as possible). */
  setTimer(delayMs: number, callback: () => void): Timer;
  /** Resolves after `delayMs`; rejects with HES_ABORTED when `signal` fires first. */
  sleep(delayMs: number, signal?: AbortSignal): Promise<void>;
}

/** Builds `sleep` from `setTimer`, shared by every Clock implementation. */
export function sleepWithTimer(
  clock: Pick<Clock, "setTimer">,
  delayMs: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new HesError("HES_ABORTED", "sleep aborted", { cause: signal.reason }));
      return;
    }
    const onAbort = (): void => {
      timer.cancel();
      reject(new HesError("HES_ABORTED", "sleep aborted", { cause: signal?.reason }));
    };
    const timer = clock.setTimer(delayMs, () => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The real clock: `performance.now()`, `Date.now()` and the platform's timers. */
export const systemClock: Clock = {
  nowMs: () => performance.now(),
  wallMs: () => Date.now(),
  setTimer(delayMs, callback) {
    const handle = setTimeout(callback, Math.max(0, delayMs));
    return { cancel: () => clearTimeout(handle) };
  },
  sleep(delayMs, signal) {
    return sleepWithTimer(systemClock, delayMs, signal);
  },
};
