/**
 * Per-volume QoS: two token buckets (operations per second and bytes per second), changeable
 * while the volume is open. A bucket holds at most QOS_BURST_SECONDS of credit, so a volume
 * that idled cannot then burst without bound. Waiters are served in arrival order (a large
 * request is not overtaken forever by small ones).
 */
import type { Clock } from "@hes/base";
import { QOS_BURST_SECONDS } from "./limits.js";

/** Limits of one volume; 0 or undefined = unlimited. */
export interface QosLimits {
  readonly iops?: number;
  readonly bytesPerSecond?: number;
}

function checkRate(value: number | undefined, name: string): number {
  if (value === undefined) return 0;
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  }
  return value;
}

/** One bucket: `rate` tokens per second, capacity rate × burst seconds (at least one request). */
class Bucket {
  private tokens = 0;
  private lastMs: number;

  constructor(
    private rate: number,
    nowMs: number,
  ) {
    this.lastMs = nowMs;
    this.tokens = rate * QOS_BURST_SECONDS;
  }

  setRate(rate: number, nowMs: number): void {
    this.refill(nowMs);
    this.rate = rate;
    this.tokens = Math.min(this.tokens, rate * QOS_BURST_SECONDS);
  }

  private refill(nowMs: number): void {
    const elapsedMs = Math.max(0, nowMs - this.lastMs);
    this.lastMs = nowMs;
    this.tokens = Math.min(
      this.rate * QOS_BURST_SECONDS,
      this.tokens + (this.rate * elapsedMs) / 1000,
    );
  }

  /** Milliseconds until `amount` tokens are there (0: take them now). */
  waitMs(amount: number, nowMs: number): number {
    if (this.rate === 0) return 0;
    this.refill(nowMs);
    // A request larger than the whole bucket may go once the bucket is full.
    const need = Math.min(amount, this.rate * QOS_BURST_SECONDS);
    if (this.tokens >= need) return 0;
    return Math.ceil(((need - this.tokens) * 1000) / this.rate);
  }

  take(amount: number): void {
    if (this.rate !== 0) this.tokens -= amount;
  }
}

/** The QoS gate of one volume. */
export class TokenBuckets {
  private readonly ops: Bucket;
  private readonly bytes: Bucket;
  private current: QosLimits;
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly clock: Clock,
    limits: QosLimits = {},
  ) {
    const iops = checkRate(limits.iops, "iops");
    const bytesPerSecond = checkRate(limits.bytesPerSecond, "bytesPerSecond");
    this.ops = new Bucket(iops, clock.nowMs());
    this.bytes = new Bucket(bytesPerSecond, clock.nowMs());
    this.current = { iops, bytesPerSecond };
  }

  get limits(): QosLimits {
    return this.current;
  }

  /** Changes the limits online; waiters see the new rates at their next check. */
  set(limits: QosLimits): void {
    const iops = checkRate(limits.iops, "iops");
    const bytesPerSecond = checkRate(limits.bytesPerSecond, "bytesPerSecond");
    const nowMs = this.clock.nowMs();
    this.ops.setRate(iops, nowMs);
    this.bytes.setRate(bytesPerSecond, nowMs);
    this.current = { iops, bytesPerSecond };
  }

  get unlimited(): boolean {
    return !this.current.iops && !this.current.bytesPerSecond;
  }

  /** Waits (in arrival order) for one operation of `lengthBytes`. */
  admit(lengthBytes: number, signal?: AbortSignal): Promise<void> {
    if (this.unlimited) return Promise.resolve();
    const turn = this.tail.then(() => this.wait(lengthBytes, signal));
    this.tail = turn.catch(() => undefined);
    return turn;
  }

  private async wait(lengthBytes: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      const nowMs = this.clock.nowMs();
      const waitMs = Math.max(this.ops.waitMs(1, nowMs), this.bytes.waitMs(lengthBytes, nowMs));
      if (waitMs === 0) break;
      await this.clock.sleep(waitMs, signal);
    }
    this.ops.take(1);
    this.bytes.take(lengthBytes);
  }
}
