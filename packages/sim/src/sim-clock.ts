/**
 * A simulated member's clock: a `Clock` over the scheduler's virtual time that runs at its
 * own rate (drift: 1.1 means this member's milliseconds pass 10% faster than real ones) and
 * can be reset by a crash, which drops every timer it set.
 */
import { assert, type Clock, sleepWithTimer, type Timer } from "@hes/base";
import type { Scheduler } from "./scheduler.js";

export class SimClock implements Clock {
  private rate: number;
  /** Local time at the last rate change, and the global time it happened. */
  private baseLocalMs = 0;
  private baseGlobalUs: number;
  private generation = 0;

  constructor(
    private readonly scheduler: Scheduler,
    rate = 1,
    private readonly wallOffsetMs = 1_700_000_000_000,
  ) {
    assert(rate > 0, "clock rate must be positive");
    this.rate = rate;
    this.baseGlobalUs = scheduler.nowUs();
  }

  /** This member's monotonic milliseconds. */
  nowMs(): number {
    return this.baseLocalMs + ((this.scheduler.nowUs() - this.baseGlobalUs) / 1000) * this.rate;
  }

  wallMs(): number {
    return this.wallOffsetMs + this.nowMs();
  }

  /** Changes the drift from now on (timers already set keep their global deadline). */
  setRate(rate: number): void {
    assert(rate > 0, "clock rate must be positive");
    this.baseLocalMs = this.nowMs();
    this.baseGlobalUs = this.scheduler.nowUs();
    this.rate = rate;
  }

  setTimer(delayMs: number, callback: () => void): Timer {
    const generation = this.generation;
    const event = this.scheduler.after((Math.max(0, delayMs) * 1000) / this.rate, () => {
      if (generation === this.generation) callback();
    });
    return { cancel: () => event.cancel() };
  }

  sleep(delayMs: number, signal?: AbortSignal): Promise<void> {
    return sleepWithTimer(this, delayMs, signal);
  }

  /** A crash: every timer set so far never fires. */
  reset(): void {
    this.generation++;
  }
}
