/**
 * The simulator's only queue of timed events. Everything that would happen "later" in a real
 * process (timers, message deliveries, disk completions, deferred work) is an event here, in
 * one global virtual time, run in (time, insertion order): the same seed gives the same run.
 */
import { assert } from "@hes/base";

/** A scheduled event; cancelling after it ran does nothing. */
export interface ScheduledEvent {
  cancel(): void;
}

interface Item {
  readonly atUs: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

export class Scheduler {
  private heap: Item[] = [];
  private seq = 0;
  private nowUsValue = 0;
  /** Events run so far. */
  eventsRun = 0;

  /** Virtual time in microseconds since the start of the run. */
  nowUs(): number {
    return this.nowUsValue;
  }

  nowMs(): number {
    return this.nowUsValue / 1000;
  }

  /** Runs `fn` `delayUs` from now (0: after everything already due now). */
  after(delayUs: number, fn: () => void): ScheduledEvent {
    assert(delayUs >= 0 && Number.isFinite(delayUs), `bad delay ${delayUs}`);
    const item: Item = {
      atUs: this.nowUsValue + Math.round(delayUs),
      seq: this.seq++,
      fn,
      cancelled: false,
    };
    this.push(item);
    return {
      cancel: () => {
        item.cancelled = true;
      },
    };
  }

  /** Number of events waiting. */
  pending(): number {
    return this.heap.length;
  }

  /**
   * Runs events in order until the queue is empty, virtual time passes `untilUs`, or
   * `stop()` returns true (checked after every event). `afterEach` runs after every event.
   */
  run(untilUs: number, afterEach: () => void, stop: () => boolean = () => false): void {
    for (;;) {
      const top = this.heap[0];
      if (top === undefined || top.atUs > untilUs) break;
      this.pop();
      if (top.cancelled) continue;
      this.nowUsValue = top.atUs;
      top.fn();
      this.eventsRun++;
      afterEach();
      if (stop()) return;
    }
    if (this.nowUsValue < untilUs) this.nowUsValue = untilUs;
  }

  private less(a: Item, b: Item): boolean {
    return a.atUs < b.atUs || (a.atUs === b.atUs && a.seq < b.seq);
  }

  private push(item: Item): void {
    const heap = this.heap;
    heap.push(item);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(item, heap[parent] as Item)) break;
      heap[i] = heap[parent] as Item;
      i = parent;
    }
    heap[i] = item;
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop() as Item;
    if (heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child =
        right < heap.length && this.less(heap[right] as Item, heap[left] as Item) ? right : left;
      if (!this.less(heap[child] as Item, last)) break;
      heap[i] = heap[child] as Item;
      i = child;
    }
    heap[i] = last;
  }
}
