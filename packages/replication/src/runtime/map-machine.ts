/**
 * The cluster map as Raft's state machine. Applying an entry yields the map's outcome (an
 * accepted value or a refusal, identical on every member), remembered for a while so that a
 * follower whose forwarded proposal committed can answer its caller with its OWN outcome of
 * that index: no ApplyValue ever crosses the wire, and a refusal is the map's HesError with
 * the same code everywhere.
 *
 * Listeners hear of each applied batch once (after the batch, on a microtask), never in the
 * middle of Raft's apply loop.
 */
import type { Logger } from "@hes/base";
import type { AppliedEntry, StateMachine } from "@hes/raft";
import { ClusterMap } from "../cluster-map/cluster-map.js";
import type { ClusterMapView } from "../cluster-map/model.js";
import type { ApplyResult } from "../cluster-map/outcome.js";
import { APPLIED_OUTCOMES_KEPT } from "./limits.js";

/** One applied entry's outcome. */
export interface MapApplied {
  readonly index: number;
  readonly term: number;
  readonly result: ApplyResult;
}

type AppliedWaiter = (applied: MapApplied | undefined) => void;

export class MapMachine implements StateMachine<MapApplied> {
  readonly map = new ClusterMap();
  /** Highest index this machine has applied or restored past (Raft's applied index). */
  private lastIndex = 0;
  private readonly outcomes = new Map<number, MapApplied>();
  private readonly waiters = new Map<number, Set<AppliedWaiter>>();
  private readonly listeners = new Set<(view: ClusterMapView) => void>();
  private notifyScheduled = false;

  constructor(private readonly logger: Logger) {}

  apply(entry: AppliedEntry): MapApplied {
    const result = this.map.apply(entry.data, { index: entry.index, term: entry.term });
    const applied: MapApplied = { index: entry.index, term: entry.term, result };
    this.lastIndex = entry.index;
    this.outcomes.set(entry.index, applied);
    if (this.outcomes.size > APPLIED_OUTCOMES_KEPT) {
      // Map iteration is insertion order: the first key is the oldest outcome.
      const oldest = this.outcomes.keys().next().value;
      if (oldest !== undefined) this.outcomes.delete(oldest);
    }
    const waiting = this.waiters.get(entry.index);
    if (waiting !== undefined) {
      this.waiters.delete(entry.index);
      for (const waiter of waiting) waiter(applied);
    }
    this.scheduleNotify();
    return applied;
  }

  snapshot(): Uint8Array {
    return this.map.snapshot();
  }

  restore(data: Uint8Array, meta: { readonly index: number; readonly term: number }): void {
    this.map.restore(data);
    this.lastIndex = Math.max(this.lastIndex, meta.index);
    this.outcomes.clear();
    // Entries inside the raftSnapshot were never applied here one by one: their outcomes
    // are unknown to this member (the caller answers HES_UNAVAILABLE, outcome unknown).
    for (const [index, waiting] of this.waiters) {
      if (index > meta.index) continue;
      this.waiters.delete(index);
      for (const waiter of waiting) waiter(undefined);
    }
    this.scheduleNotify();
  }

  /**
   * Calls `waiter` once the entry at `index` is applied here, with its outcome, or with
   * undefined when that outcome is not known here (it arrived inside a raftSnapshot, or was
   * applied so long ago it was forgotten). Returns a cancel function.
   */
  whenApplied(index: number, waiter: AppliedWaiter): () => void {
    if (index <= this.lastIndex) {
      waiter(this.outcomes.get(index));
      return () => {};
    }
    let waiting = this.waiters.get(index);
    if (waiting === undefined) {
      waiting = new Set();
      this.waiters.set(index, waiting);
    }
    waiting.add(waiter);
    return () => {
      waiting.delete(waiter);
      if (waiting.size === 0 && this.waiters.get(index) === waiting) this.waiters.delete(index);
    };
  }

  subscribe(listener: (view: ClusterMapView) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Fails every waiter (the member is closing): they hear undefined, outcome unknown. */
  dropWaiters(): void {
    const all = [...this.waiters.values()];
    this.waiters.clear();
    for (const waiting of all) for (const waiter of waiting) waiter(undefined);
  }

  private scheduleNotify(): void {
    if (this.notifyScheduled || this.listeners.size === 0) return;
    this.notifyScheduled = true;
    queueMicrotask(() => {
      this.notifyScheduled = false;
      for (const listener of [...this.listeners]) {
        try {
          listener(this.map);
        } catch (error) {
          this.logger.error({ err: error }, "cluster map listener threw; it stays subscribed");
        }
      }
    });
  }
}
