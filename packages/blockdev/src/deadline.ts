/**
 * Per-replica deadlines: a replica that neither answers nor fails (a paused host, a dead NIC)
 * must not stall the volume. The call gets an AbortSignal that fires at the deadline (or when
 * the caller's signal does), and the returned promise rejects with HES_TIMEOUT at the deadline
 * even if the replica ignores the signal.
 */
import { type Clock, HesError } from "@hes/base";

export function withDeadline<T>(
  clock: Clock,
  deadlineMs: number,
  what: string,
  signal: AbortSignal | undefined,
  call: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
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
      if (!finish()) return;
      controller.abort(signal?.reason);
      reject(new HesError("HES_ABORTED", `${what}: aborted by the caller`));
    };
    const timer = clock.setTimer(deadlineMs, () => {
      if (!finish()) return;
      controller.abort(new Error("deadline"));
      reject(new HesError("HES_TIMEOUT", `${what}: no answer within ${deadlineMs} ms`));
    });
    if (signal?.aborted === true) {
      onAbort();
      return;
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    let pending: Promise<T>;
    try {
      pending = call(controller.signal);
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
