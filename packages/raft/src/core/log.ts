/**
 * The Raft log as one member holds it: the latest raftSnapshot, then every entry after it, in
 * memory. The cluster map's log is compacted every few thousand entries, so holding it whole
 * is cheap and keeps every read synchronous (the core never waits on storage).
 *
 * Besides the entries it tracks three boundaries the driver cares about:
 * - `stableLast`: entries up to here are durable and equal to what is in memory;
 * - `persistedLast`: the last index in storage, which may exceed `stableLast` after a
 *   truncation (those stale entries must be deleted before the new ones count as stable);
 * - `applying` / `applied`: committed entries handed to the state machine / acknowledged.
 */
import { assert } from "@hes/base";
import { decodeConfChange } from "./conf.js";
import { type ConfState, type Entry, EntryType, type Snapshot } from "./types.js";

interface ConfPoint {
  readonly index: number;
  readonly confState: ConfState;
}

export class RaftLog {
  private snap: Snapshot;
  private entries: Entry[];
  /** Membership-change entries in `entries`, ascending by index. */
  private confs: ConfPoint[] = [];
  committed: number;
  applied: number;
  applying: number;
  stableLast: number;
  persistedLast: number;
  /** The raftSnapshot must be persisted (it came from the leader or from compaction). */
  snapshotUnstable = false;
  /** The raftSnapshot came from the leader: the state machine must be restored from it. */
  restorePending = false;

  constructor(snapshot: Snapshot, entries: readonly Entry[], committed: number) {
    this.snap = snapshot;
    const first = snapshot.meta.index + 1;
    entries.forEach((entry, i) => {
      assert(entry.index === first + i, () => `stored log not contiguous at ${entry.index}`);
      assert(entry.term >= snapshot.meta.term, "stored entry older than the raftSnapshot");
      if (i > 0) assert(entry.term >= (entries[i - 1] as Entry).term, "stored terms decrease");
    });
    this.entries = [...entries];
    this.trackConfs(this.entries);
    this.committed = Math.max(committed, snapshot.meta.index);
    assert(this.committed <= this.lastIndex(), "stored commit index beyond the stored log");
    this.applied = snapshot.meta.index;
    this.applying = snapshot.meta.index;
    this.stableLast = this.lastIndex();
    this.persistedLast = this.lastIndex();
  }

  get snapshot(): Snapshot {
    return this.snap;
  }

  snapshotIndex(): number {
    return this.snap.meta.index;
  }

  firstIndex(): number {
    return this.snap.meta.index + 1;
  }

  lastIndex(): number {
    return this.snap.meta.index + this.entries.length;
  }

  lastTerm(): number {
    return this.entries.length === 0
      ? this.snap.meta.term
      : (this.entries[this.entries.length - 1] as Entry).term;
  }

  /** The term of the entry at `index`, or undefined when compacted away or not yet present. */
  term(index: number): number | undefined {
    const offset = this.snap.meta.index;
    if (index === offset) return this.snap.meta.term;
    if (index < offset || index > offset + this.entries.length) return undefined;
    return (this.entries[index - offset - 1] as Entry).term;
  }

  entry(index: number): Entry | undefined {
    const offset = this.snap.meta.index;
    if (index <= offset) return undefined;
    return this.entries[index - offset - 1];
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** Entries `low..high` (inclusive), stopping at `countMax` or past `bytesMax` (≥ 1 entry). */
  slice(low: number, high: number, bytesMax = Number.POSITIVE_INFINITY, countMax = 1e9): Entry[] {
    assert(low > this.snap.meta.index, () => `slice from ${low} below the raftSnapshot`);
    const offset = this.snap.meta.index;
    const end = Math.min(high, this.lastIndex());
    const out: Entry[] = [];
    let bytes = 0;
    for (let index = low; index <= end && out.length < countMax; index++) {
      const entry = this.entries[index - offset - 1] as Entry;
      bytes += entry.data.byteLength;
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(entry);
    }
    return out;
  }

  /** True when a log ending at (`lastIndex`, `lastTerm`) is at least as up to date as this. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /**
   * The largest index at or below `index` whose term is at most `term` (the snapshot index
   * when none is known): where a leader should probe next after a rejection.
   */
  findConflictByTerm(index: number, term: number): number {
    // Below the raftSnapshot nothing is known: the caller must probe (or snapshot) there.
    if (index < this.snap.meta.index) return index;
    let at = Math.min(index, this.lastIndex());
    for (; at > this.snap.meta.index; at--) {
      if ((this.term(at) as number) <= term) return at;
    }
    return this.snap.meta.index;
  }

  /**
   * Appends the leader's entries that follow (`prevIndex`, `prevTerm`), truncating from the
   * first conflict. Returns the index of the last entry now known to match the leader, or
   * undefined when the logs do not match at `prevIndex`. Matching entries are never rewritten,
   * so a duplicated or reordered old append cannot truncate newer entries.
   */
  maybeAppend(prevIndex: number, prevTerm: number, entries: readonly Entry[]): number | undefined {
    if (!this.matchTerm(prevIndex, prevTerm)) return undefined;
    const lastNew = prevIndex + entries.length;
    let firstNew = -1;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i] as Entry;
      assert(entry.index === prevIndex + 1 + i, "append entries not contiguous");
      if (!this.matchTerm(entry.index, entry.term)) {
        firstNew = i;
        break;
      }
    }
    if (firstNew >= 0) {
      const first = (entries[firstNew] as Entry).index;
      assert(first > this.committed, () => `append would truncate committed entry ${first}`);
      this.append(entries.slice(firstNew));
    }
    return lastNew;
  }

  /** Appends `entries`, truncating anything from `entries[0].index` on. */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = (entries[0] as Entry).index;
    const offset = this.snap.meta.index;
    assert(first > offset && first <= this.lastIndex() + 1, () => `append gap at ${first}`);
    if (first <= this.lastIndex()) {
      this.entries.length = first - offset - 1;
      while (
        this.confs.length > 0 &&
        (this.confs[this.confs.length - 1] as ConfPoint).index >= first
      )
        this.confs.pop();
      this.stableLast = Math.min(this.stableLast, first - 1);
    }
    for (const entry of entries) this.entries.push(entry);
    this.trackConfs(entries);
  }

  private trackConfs(entries: readonly Entry[]): void {
    for (const entry of entries) {
      if (entry.type === EntryType.ConfChange) {
        this.confs.push({ index: entry.index, confState: decodeConfChange(entry.data).confState });
      }
    }
  }

  /** The configuration in force after the whole log (config-on-append). */
  latestConf(): ConfState {
    const last = this.confs[this.confs.length - 1];
    return last === undefined ? this.snap.meta.confState : last.confState;
  }

  /** Index of the latest membership-change entry (or the raftSnapshot's index). */
  latestConfIndex(): number {
    const last = this.confs[this.confs.length - 1];
    return last === undefined ? this.snap.meta.index : last.index;
  }

  /** The configuration in force at `index` (at or after the raftSnapshot). */
  confAt(index: number): ConfState {
    assert(index >= this.snap.meta.index, "configuration asked below the raftSnapshot");
    let found = this.snap.meta.confState;
    for (const point of this.confs) {
      if (point.index > index) break;
      found = point.confState;
    }
    return found;
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    assert(index <= this.lastIndex(), () => `commit ${index} beyond last ${this.lastIndex()}`);
    this.committed = index;
    return true;
  }

  /** Replaces the whole log by a raftSnapshot from the leader. */
  restore(snapshot: Snapshot): void {
    assert(snapshot.meta.index > this.committed, "restore of a snapshot at or below commit");
    this.snap = snapshot;
    this.entries = [];
    this.confs = [];
    this.committed = snapshot.meta.index;
    this.stableLast = snapshot.meta.index;
    this.snapshotUnstable = true;
    this.restorePending = true;
  }

  /** Drops entries up to the raftSnapshot's index (taken by this member at an applied index). */
  compact(snapshot: Snapshot): void {
    const index = snapshot.meta.index;
    assert(index > this.snap.meta.index, "compaction must move forward");
    assert(index <= this.applied, "compaction past the applied index");
    assert(this.term(index) === snapshot.meta.term, "compaction raftSnapshot term mismatch");
    this.entries = this.entries.slice(index - this.snap.meta.index);
    while (this.confs.length > 0 && (this.confs[0] as ConfPoint).index <= index) this.confs.shift();
    this.snap = snapshot;
    this.snapshotUnstable = true;
  }

  hasUnstable(): boolean {
    return this.lastIndex() > this.stableLast || this.persistedLast > this.stableLast;
  }

  unstableEntries(): Entry[] {
    if (this.lastIndex() <= this.stableLast) return [];
    return this.entries.slice(this.stableLast - this.snap.meta.index);
  }

  hasNextCommitted(): boolean {
    return this.committed > this.applying;
  }

  nextCommitted(bytesMax: number): Entry[] {
    if (this.committed <= this.applying) return [];
    return this.slice(this.applying + 1, this.committed, bytesMax);
  }
}
