/**
 * A simulated network between members: per message it may drop, duplicate and delay (random
 * delays reorder), and links can be cut one way or both, so any partition shape can be made
 * (symmetric halves, one-way, a bridge member that sees both sides). Messages to a member
 * that is down are lost. All randomness comes from the run's Prng.
 */
import type { NodeId, Prng, Transport, TransportHandler } from "@hes/base";
import type { Scheduler } from "./scheduler.js";

/** Fault levels of the network; change them at any time with `setFaults`. */
export interface NetworkFaults {
  /** Probability that a message is lost. */
  readonly dropRate: number;
  /** Probability that a message is delivered twice (with independent delays). */
  readonly duplicateRate: number;
  /** Uniform delay range of a delivery, microseconds. */
  readonly delayUsMin: number;
  readonly delayUsMax: number;
  /** Probability of a long delay instead (reordering far past later messages). */
  readonly longDelayRate: number;
  readonly longDelayUsMax: number;
}

/** A reliable, fast network (the liveness phase). */
export const CALM_NETWORK: NetworkFaults = {
  dropRate: 0,
  duplicateRate: 0,
  delayUsMin: 100,
  delayUsMax: 2_000,
  longDelayRate: 0,
  longDelayUsMax: 0,
};

/** Messages in flight on one directed link before it drops (a transport's bounded queue). */
export const SIM_LINK_INFLIGHT_MAX = 4096;

export class SimNetwork<M> {
  private readonly handlers = new Map<NodeId, TransportHandler<M>>();
  private readonly blocked = new Set<string>();
  private readonly down = new Set<NodeId>();
  private readonly inflight = new Map<string, number>();
  private faults: NetworkFaults;
  /** Called for every message a member sends (before faults), for checkers. */
  onSend: ((from: NodeId, to: NodeId, message: M) => void) | undefined;
  readonly stats = { sent: 0, delivered: 0, dropped: 0, duplicated: 0 };

  constructor(
    private readonly scheduler: Scheduler,
    private readonly prng: Prng,
    faults: NetworkFaults = CALM_NETWORK,
  ) {
    this.faults = faults;
  }

  setFaults(faults: NetworkFaults): void {
    this.faults = faults;
  }

  /** The transport of member `id`; it survives the member's crashes and restarts. */
  transport(id: NodeId): Transport<M> {
    return {
      send: (to, message) => this.send(id, to, message),
      setHandler: (handler) => {
        this.handlers.set(id, handler);
      },
      close: async () => {},
    };
  }

  /** Cuts the link `from` → `to`. */
  block(from: NodeId, to: NodeId): void {
    this.blocked.add(`${from}>${to}`);
  }

  /** Cuts both directions between every member of `a` and every member of `b`. */
  split(a: readonly NodeId[], b: readonly NodeId[]): void {
    for (const x of a) {
      for (const y of b) {
        this.block(x, y);
        this.block(y, x);
      }
    }
  }

  /** Restores every link. */
  heal(): void {
    this.blocked.clear();
  }

  isBlocked(from: NodeId, to: NodeId): boolean {
    return this.blocked.has(`${from}>${to}`);
  }

  /** Marks a member down (crashed: it neither sends nor receives) or up again. */
  setUp(id: NodeId, up: boolean): void {
    if (up) this.down.delete(id);
    else this.down.add(id);
  }

  private send(from: NodeId, to: NodeId, message: M): void {
    this.stats.sent++;
    this.onSend?.(from, to, message);
    if (this.down.has(from) || this.blocked.has(`${from}>${to}`)) {
      this.stats.dropped++;
      return;
    }
    if (this.prng.chance(this.faults.dropRate)) {
      this.stats.dropped++;
      return;
    }
    this.schedule(from, to, message);
    if (this.prng.chance(this.faults.duplicateRate)) {
      this.stats.duplicated++;
      this.schedule(from, to, message);
    }
  }

  private schedule(from: NodeId, to: NodeId, message: M): void {
    const key = `${from}>${to}`;
    const count = this.inflight.get(key) ?? 0;
    if (count >= SIM_LINK_INFLIGHT_MAX) {
      this.stats.dropped++;
      return;
    }
    this.inflight.set(key, count + 1);
    const f = this.faults;
    const delayUs = this.prng.chance(f.longDelayRate)
      ? this.prng.between(f.delayUsMax, Math.max(f.delayUsMax, f.longDelayUsMax))
      : this.prng.between(f.delayUsMin, f.delayUsMax);
    this.scheduler.after(delayUs, () => {
      this.inflight.set(key, (this.inflight.get(key) ?? 1) - 1);
      // A link cut while the message was in flight loses it, as would a real partition.
      if (this.down.has(to) || this.blocked.has(key)) {
        this.stats.dropped++;
        return;
      }
      const handler = this.handlers.get(to);
      if (handler === undefined) return;
      this.stats.delivered++;
      handler(from, message);
    });
  }
}
