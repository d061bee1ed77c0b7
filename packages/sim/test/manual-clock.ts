/**
 * A tiny manual clock for SimDisk's own tests (the simulator's SimClock lives elsewhere): time
 * moves only when the test calls `advance`, which fires due timers in time order.
 */
import { type Clock, sleepWithTimer, type Timer } from "@hes/base";

interface Pending {
  readonly atMs: number;
  readonly order: number;
  readonly callback: () => void;
  cancelled: boolean;
}

export class ManualClock implements Clock {
  private now = 0;
  private order = 0;
  private readonly timers: Pending[] = [];

  nowMs(): number {
    return this.now;
  }

  wallMs(): number {
    return 1_700_000_000_000 + this.now;
  }

  setTimer(delayMs: number, callback: () => void): Timer {
    const pending: Pending = {
      atMs: this.now + Math.max(0, delayMs),
      order: this.order++,
      callback,
      cancelled: false,
    };
    this.timers.push(pending);
    return {
      cancel: () => {
        pending.cancelled = true;
      },
    };
  }

  sleep(delayMs: number, signal?: AbortSignal): Promise<void> {
    return sleepWithTimer(this, delayMs, signal);
  }

  /** Timers not yet fired or cancelled. */
  get pendingTimers(): number {
    return this.timers.filter((timer) => !timer.cancelled).length;
  }

  /** Moves time forward by `ms`, firing due timers in order (microtasks run between them). */
  async advance(ms: number): Promise<void> {
    const until = this.now + ms;
    for (;;) {
      this.timers.sort((a, b) => a.atMs - b.atMs || a.order - b.order);
      const next = this.timers.find((timer) => !timer.cancelled && timer.atMs <= until);
      if (next === undefined) break;
      this.timers.splice(this.timers.indexOf(next), 1);
      this.now = next.atMs;
      next.callback();
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    this.now = until;
  }
}
