/**
 * A token bucket over an injected clock: `take(bytes)` resolves when the bytes may be sent at
 * the configured rate. Waiters are served in FIFO order, so one large request cannot be
 * starved by small ones. A rate of 0 means unlimited.
 */
import { type Clock, checkInteger, systemClock } from "@hes/base";
import { RATE_BURST_SECONDS } from "./limits.js";

export class RateLimiter {
  private tokens: number;
  private lastMs: number;
  private tail: Promise<void> = Promise.resolve();
  readonly bytesPerSecond: number;
  private readonly burstBytes: number;

  constructor(
    bytesPerSecond: number,
    private readonly clock: Clock = systemClock,
  ) {
    this.bytesPerSecond = checkInteger(bytesPerSecond, "bytesPerSecond", { min: 0 });
    this.burstBytes = Math.max(1, Math.floor(bytesPerSecond * RATE_BURST_SECONDS));
    this.tokens = this.burstBytes;
    this.lastMs = clock.nowMs();
  }

  /** Waits until `bytes` may pass (HES_ABORTED if `signal` fires while waiting). */
  take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.bytesPerSecond === 0 || bytes <= 0) return Promise.resolve();
    const turn = this.tail.then(() => this.wait(bytes, signal));
    this.tail = turn.catch(() => {});
    return turn;
  }

  private async wait(bytes: number, signal: AbortSignal | undefined): Promise<void> {
    this.refill();
    // A request larger than the burst goes into debt; the next waits for it to be repaid.
    this.tokens -= bytes;
    if (this.tokens >= 0) return;
    const waitMs = Math.ceil((-this.tokens / this.bytesPerSecond) * 1000);
    await this.clock.sleep(waitMs, signal);
    this.refill();
  }

  private refill(): void {
    const now = this.clock.nowMs();
    const earned = ((now - this.lastMs) / 1000) * this.bytesPerSecond;
    this.lastMs = now;
    this.tokens = Math.min(this.burstBytes, this.tokens + earned);
  }
}
