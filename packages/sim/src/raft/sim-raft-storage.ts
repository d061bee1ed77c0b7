/**
 * Raft storage for the simulator with the failure model of a real disk under LevelDB: a
 * write completes after a random latency; a synced write makes it and every earlier write
 * durable; an unsynced write is lost in a crash unless a later synced write completed. A
 * crash also loses every write still in progress. Each batch is atomic (LevelDB batches are).
 */
import { assert, type NodeId, type Prng } from "@hes/base";
import type {
  Entry,
  HardState,
  RaftStorage,
  RaftStorageWrite,
  Snapshot,
  StoredRaftState,
} from "@hes/raft";
import type { Scheduler } from "../scheduler.js";

/** What storage holds (durably, or as the member sees it). */
interface Image {
  hardState: HardState | undefined;
  snapshot: Snapshot | undefined;
  /** Entries after the snapshot, contiguous. */
  entries: Entry[];
}

function cloneImage(image: Image): Image {
  return { hardState: image.hardState, snapshot: image.snapshot, entries: [...image.entries] };
}

function applyWrite(image: Image, write: RaftStorageWrite): void {
  if (write.snapshot !== undefined) {
    const through = write.snapshot.meta.index;
    image.snapshot = write.snapshot;
    image.entries = image.entries.filter((e) => e.index > through);
  }
  if (write.truncateAfter !== undefined) {
    const after = write.truncateAfter;
    image.entries = image.entries.filter((e) => e.index <= after);
  }
  const first = write.entries[0];
  if (first !== undefined) {
    image.entries = image.entries.filter((e) => e.index < first.index);
    image.entries.push(...write.entries);
  }
  if (write.hardState !== undefined) image.hardState = write.hardState;
  const base = image.snapshot?.meta.index ?? 0;
  image.entries.forEach((e, i) => {
    assert(e.index === base + 1 + i, () => `sim storage: log not contiguous at ${e.index}`);
  });
}

/** Sees every write as it is issued (the log-matching checker's hook). */
export interface StorageObserver {
  /** `prevTerm`: the term before the first written entry in the member's log. */
  onWrite(id: NodeId, write: RaftStorageWrite, prevTerm: number | undefined): void;
  /** A hard state became durable. */
  onDurableHardState(id: NodeId, hardState: HardState): void;
}

/** Disk latency model, microseconds. */
export interface DiskLatency {
  readonly minUs: number;
  readonly maxUs: number;
  /** Extra time of a synced write (the fdatasync). */
  readonly syncUs: number;
}

export class SimRaftStorage implements RaftStorage {
  private durable: Image = { hardState: undefined, snapshot: undefined, entries: [] };
  private view: Image = { hardState: undefined, snapshot: undefined, entries: [] };
  private unsynced: RaftStorageWrite[] = [];
  private generation = 0;
  writes = 0;
  syncs = 0;

  constructor(
    private readonly id: NodeId,
    private readonly scheduler: Scheduler,
    private readonly prng: Prng,
    private readonly latency: DiskLatency,
    private readonly observer: StorageObserver | undefined,
  ) {}

  /** The durable state, as a restart would load it. */
  loadSync(): StoredRaftState | undefined {
    const d = this.durable;
    if (d.hardState === undefined || d.snapshot === undefined) return undefined;
    return { hardState: d.hardState, snapshot: d.snapshot, entries: [...d.entries] };
  }

  async load(): Promise<StoredRaftState | undefined> {
    return this.loadSync();
  }

  /** Writes a new member's first state, durably, at once. */
  bootstrapSync(state: StoredRaftState): void {
    this.durable = {
      hardState: state.hardState,
      snapshot: state.snapshot,
      entries: [...state.entries],
    };
    this.view = cloneImage(this.durable);
    this.observer?.onDurableHardState(this.id, state.hardState);
  }

  async bootstrap(state: StoredRaftState): Promise<void> {
    this.bootstrapSync(state);
  }

  write(write: RaftStorageWrite, done: (error: Error | undefined) => void): void {
    this.writes++;
    applyWrite(this.view, write);
    const first = write.entries[0];
    if (first !== undefined) {
      const prev = first.index - 1;
      const snap = this.view.snapshot;
      const base = snap?.meta.index ?? 0;
      const prevTerm =
        snap !== undefined && prev === base
          ? snap.meta.term
          : this.view.entries[prev - base - 1]?.term;
      this.observer?.onWrite(this.id, write, prev === 0 ? 0 : prevTerm);
    } else {
      this.observer?.onWrite(this.id, write, undefined);
    }
    const generation = this.generation;
    const l = this.latency;
    const delayUs = this.prng.between(l.minUs, l.maxUs) + (write.sync ? l.syncUs : 0);
    this.scheduler.after(delayUs, () => {
      if (generation !== this.generation) return;
      if (write.sync) {
        this.syncs++;
        for (const earlier of this.unsynced) applyWrite(this.durable, earlier);
        this.unsynced = [];
        applyWrite(this.durable, write);
        if (write.hardState !== undefined)
          this.observer?.onDurableHardState(this.id, write.hardState);
      } else {
        this.unsynced.push(write);
      }
      done(undefined);
    });
  }

  /** A power loss: writes in progress and unsynced writes are gone. */
  crash(): void {
    this.generation++;
    this.unsynced = [];
    this.view = cloneImage(this.durable);
  }

  async close(): Promise<void> {}
}
