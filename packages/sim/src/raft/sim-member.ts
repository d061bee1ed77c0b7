/**
 * One simulated Raft member: the production `RaftLoop` (the driver's logic, not a model of
 * it) over `SimRaftStorage`, a `SimClock` and the `SimNetwork`, applying to a key-value state
 * machine. A crash is a power loss: the loop is killed mid-whatever, unsynced writes vanish,
 * timers die; a restart builds a new loop from what storage kept.
 */
import { type Logger, type NodeId, nullLogger, type Prng } from "@hes/base";
import {
  type AppliedEntry,
  type Message,
  RaftLoop,
  type RaftOptions,
  type StateMachine,
  type StoredRaftState,
} from "@hes/raft";
import type { Scheduler } from "../scheduler.js";
import { SimClock } from "../sim-clock.js";
import type { SimNetwork } from "../sim-network.js";
import { type DiskLatency, SimRaftStorage, type StorageObserver } from "./sim-raft-storage.js";

/** A key-value state machine: commands are `key=value`; values are numbers. */
export class SimKv implements StateMachine<number | undefined> {
  map = new Map<string, number>();
  constructor(private readonly onApply: (entry: AppliedEntry) => void) {}

  apply(entry: AppliedEntry): number | undefined {
    const text = new TextDecoder().decode(entry.data);
    const eq = text.indexOf("=");
    const key = text.slice(0, eq);
    const previous = this.map.get(key);
    this.map.set(key, Number(text.slice(eq + 1)));
    this.onApply(entry);
    return previous;
  }

  snapshot(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify([...this.map]));
  }

  restore(data: Uint8Array): void {
    this.map = new Map(JSON.parse(new TextDecoder().decode(data)) as Array<[string, number]>);
  }
}

export interface SimMemberOptions {
  readonly id: NodeId;
  readonly scheduler: Scheduler;
  readonly network: SimNetwork<Message>;
  readonly prng: Prng;
  readonly clockRate: number;
  readonly disk: DiskLatency;
  readonly observer: StorageObserver;
  readonly raft: Omit<RaftOptions, "id" | "prng" | "logger">;
  readonly tickMs: number;
  readonly snapshotEntriesInterval: number;
  readonly onApply: (id: NodeId, entry: AppliedEntry) => void;
  readonly unsafeSendBeforePersist: boolean;
  readonly leaderAppendsBeforePersist: boolean;
  readonly logger?: Logger;
}

export class SimMember {
  readonly id: NodeId;
  readonly clock: SimClock;
  readonly storage: SimRaftStorage;
  loop: RaftLoop<number | undefined> | undefined;
  kv: SimKv;
  restarts = 0;
  private readonly options: SimMemberOptions;

  constructor(options: SimMemberOptions) {
    this.options = options;
    this.id = options.id;
    this.clock = new SimClock(options.scheduler, options.clockRate);
    this.storage = new SimRaftStorage(
      options.id,
      options.scheduler,
      options.prng.fork(),
      options.disk,
      options.observer,
    );
    this.kv = this.newKv();
  }

  get up(): boolean {
    return this.loop !== undefined;
  }

  private newKv(): SimKv {
    return new SimKv((entry) => this.options.onApply(this.id, entry));
  }

  /** Starts (or restarts) from what storage holds, bootstrapping `initial` if it is empty. */
  start(initial: StoredRaftState): void {
    let state = this.storage.loadSync();
    if (state === undefined) {
      this.storage.bootstrapSync(initial);
      state = initial;
    }
    const o = this.options;
    this.kv = this.newKv();
    o.network.setUp(this.id, true);
    const scheduler = o.scheduler;
    this.loop = new RaftLoop<number | undefined>({
      raft: { ...o.raft, id: this.id, prng: o.prng.fork(), logger: o.logger ?? nullLogger },
      initial: state,
      storage: this.storage,
      transport: o.network.transport(this.id),
      stateMachine: this.kv,
      clock: this.clock,
      defer: (fn) => {
        scheduler.after(0, fn);
      },
      tickMs: o.tickMs,
      snapshotEntriesInterval: o.snapshotEntriesInterval,
      requestTimeoutTicks: 3 * o.raft.electionTicks,
      logger: o.logger ?? nullLogger,
      leaderAppendsBeforePersist: o.leaderAppendsBeforePersist,
      unsafe: { sendBeforePersist: o.unsafeSendBeforePersist },
    });
  }

  /** A power loss. */
  crash(): void {
    this.loop?.kill();
    this.loop = undefined;
    this.storage.crash();
    this.clock.reset();
    this.options.network.setUp(this.id, false);
  }
}
