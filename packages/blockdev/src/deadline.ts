/**
 * Per-replica deadlines: a replica that neither answers nor fails (a paused host, a dead NIC)
 * must not stall the volume. The returned promise rejects with HES_TIMEOUT at the deadline even
 * if the replica never settles, and with HES_ABORTED when the caller's signal fires.
 *
 * The call gets the caller's signal, not one of its own: an AbortController per replica call
 * (three per write) cost 4–5% of the owner's main thread at 4 KiB. Giving up at the deadline
 * therefore only stops waiting; the request itself ends at the replica's own deadline
 * (RemoteReplica: 2 s for IO, 5 s for control requests), which bounds what it holds.
 */
import { type Clock, HesError } from "@hes/base";

/** What a deadline-bounded call passes on to the replica: the caller's signal, if any. */
export interface DeadlineCallOptions {
  readonly signal?: AbortSignal;
}

const NO_SIGNAL: DeadlineCallOptions = Object.freeze({});

export function withDeadline<T>(
  clock: Clock,
  deadlineMs: number,
  what: string,
  signal: AbortSignal | undefined,
  call: (options: DeadlineCallOptions) => Promise<T>,
): Promise<T> {
  if (signal?.aborted === true) {
    return Promise.reject(new HesError("HES_ABORTED", `${what}: aborted by the caller`));
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      timer.cancel();
      signal?.removeEventListener("abort", onAbort);
      return true;
    };
    const onAbort = (): void => {
      if (finish()) reject(new HesError("HES_ABORTED", `${what}: aborted by the caller`));
    };
    const timer = clock.setTimer(deadlineMs, () => {
      if (finish()) {
        reject(new HesError("HES_TIMEOUT", `${what}: no answer within ${deadlineMs} ms`));
      }
    });
    signal?.addEventListener("abort", onAbort, { once: true });
    let pending: Promise<T>;
    try {
      pending = call(signal === undefined ? NO_SIGNAL : { signal });
    } catch (error) {
      pending = Promise.reject(error);
    }
    pending.then(
      (value) => {
        if (finish()) resolve(value);
      },
      (error: unknown) => {
        if (finish()) reject(error);
      },
    );
  });
}
