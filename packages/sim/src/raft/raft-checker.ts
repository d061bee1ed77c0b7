/**
 * Raft's safety properties, checked while the simulation runs (after every event, and on
 * every write, send and apply as it happens):
 *
 * - election safety: at most one leader per term;
 * - one vote per term: a member never grants its vote to two candidates in one term (the
 *   promise persist-before-send protects);
 * - durable hard state: a member's stored term never decreases, nor its stored vote change
 *   within a term;
 * - log matching: two entries with the same index and term hold the same data and follow the
 *   same term (by induction, the logs are identical up to there);
 * - leader completeness: every committed entry is in the log of every later leader, and a
 *   committed index never holds two different entries;
 * - state-machine safety: no two members apply different entries at one index;
 * - the commitment rule (§5.4.2, Figure 8), directly: a leader moves its commit index only
 *   onto an entry of its own term (optional: see the constructor).
 *
 * The first violation is kept (with the virtual time); the run stops there.
 */
import type { NodeId } from "@hes/base";
import {
  type Entry,
  type HardState,
  type Message,
  MessageType,
  type RaftCore,
  type RaftStorageWrite,
} from "@hes/raft";

/** FNV-1a of an entry's type and data, cached per entry object. */
const hashes = new WeakMap<Entry, number>();
export function entryHash(entry: Entry): number {
  let h = hashes.get(entry);
  if (h !== undefined) return h;
  h = 0x811c9dc5 ^ entry.type;
  const data = entry.data;
  for (let i = 0; i < data.length; i++) {
    h ^= data[i] as number;
    h = Math.imul(h, 0x01000193);
  }
  h >>>= 0;
  hashes.set(entry, h);
  return h;
}

interface Fingerprint {
  readonly hash: number;
  readonly prevTerm: number | undefined;
}

export class RaftChecker {
  violation: string | undefined;
  private readonly leaders = new Map<number, NodeId>();
  private readonly fingerprints = new Map<string, Fingerprint>();
  private readonly committed: Array<{ term: number; hash: number } | undefined> = [];
  private readonly votes = new Map<string, NodeId>();
  private readonly durable = new Map<NodeId, HardState>();
  private readonly applied: Array<number | undefined> = [];
  private readonly seen = new Map<NodeId, { role: string; term: number; commit: number }>();
  /** Counters for the run summary. */
  readonly counts = { elections: 0, commits: 0, applies: 0, writesChecked: 0 };

  /**
   * @param checkCommitRule also check §5.4.2 directly: a leader's commit index moves only
   *   onto an entry of its own term. The end-to-end properties above catch a breach of it
   *   only in rare schedules (Figure 8), so this makes the rule itself observable.
   */
  constructor(
    private readonly now: () => number,
    private readonly checkCommitRule = true,
  ) {}

  private fail(message: string): void {
    if (this.violation === undefined) {
      this.violation = `t=${this.now().toFixed(3)}ms: ${message}`;
    }
  }

  onSend(from: NodeId, message: Message): void {
    if (message.type !== MessageType.VoteResponse || message.reject) return;
    const key = `${from}:${message.term}`;
    const earlier = this.votes.get(key);
    if (earlier === undefined) this.votes.set(key, message.to);
    else if (earlier !== message.to) {
      this.fail(`member ${from} voted for ${earlier} and ${message.to} in term ${message.term}`);
    }
  }

  onDurableHardState(id: NodeId, hard: HardState): void {
    const before = this.durable.get(id);
    if (before !== undefined) {
      if (hard.term < before.term) {
        this.fail(`member ${id}: stored term went from ${before.term} to ${hard.term}`);
      } else if (hard.term === before.term && before.vote !== 0 && hard.vote !== before.vote) {
        this.fail(
          `member ${id}: stored vote in term ${hard.term} changed ${before.vote}→${hard.vote}`,
        );
      }
    }
    this.durable.set(id, hard);
  }

  onWrite(id: NodeId, write: RaftStorageWrite, prevTerm: number | undefined): void {
    let prev = prevTerm;
    for (const entry of write.entries) {
      this.counts.writesChecked++;
      const key = `${entry.index}:${entry.term}`;
      const fingerprint: Fingerprint = { hash: entryHash(entry), prevTerm: prev };
      const known = this.fingerprints.get(key);
      if (known === undefined) this.fingerprints.set(key, fingerprint);
      else if (known.hash !== fingerprint.hash) {
        this.fail(`log matching: member ${id} holds a different entry at ${key}`);
      } else if (known.prevTerm !== undefined && prev !== undefined && known.prevTerm !== prev) {
        this.fail(
          `log matching: member ${id}: entry ${key} follows term ${prev}, elsewhere ${known.prevTerm}`,
        );
      }
      prev = entry.term;
    }
  }

  onApply(id: NodeId, entry: Entry): void {
    this.counts.applies++;
    const hash = entryHash(entry);
    const earlier = this.applied[entry.index];
    if (earlier === undefined) this.applied[entry.index] = hash;
    else if (earlier !== hash) {
      this.fail(`state-machine safety: member ${id} applied a different entry at ${entry.index}`);
    }
  }

  /** A member restarted: its volatile commit index starts over. */
  onRestart(id: NodeId): void {
    this.seen.delete(id);
  }

  /** Checks the live members after an event. */
  afterEvent(members: Iterable<{ readonly id: NodeId; readonly core: RaftCore }>): void {
    for (const { id, core } of members) {
      const s = core.status();
      const before = this.seen.get(id);
      if (s.role === "leader") {
        const leader = this.leaders.get(s.term);
        if (leader === undefined) {
          this.leaders.set(s.term, id);
          this.counts.elections++;
        } else if (leader !== id) {
          this.fail(`election safety: ${leader} and ${id} both lead term ${s.term}`);
        }
        if (before === undefined || before.role !== "leader" || before.term !== s.term) {
          this.checkLeaderCompleteness(id, core);
        }
      }
      if (before !== undefined && s.commitIndex < before.commit) {
        this.fail(`member ${id}: commit index went back from ${before.commit} to ${s.commitIndex}`);
      }
      if (
        this.checkCommitRule &&
        s.role === "leader" &&
        before?.role === "leader" &&
        before.term === s.term &&
        s.commitIndex > before.commit &&
        core.termAt(s.commitIndex) !== s.term
      ) {
        this.fail(
          `commitment rule: leader ${id} of term ${s.term} committed through ` +
            `${core.termAt(s.commitIndex)}/${s.commitIndex}, an entry of an earlier term`,
        );
      }
      if (before === undefined || s.commitIndex > before.commit) {
        this.recordCommitted(id, core, before?.commit ?? s.snapshotIndex, s.commitIndex);
      }
      this.seen.set(id, { role: s.role, term: s.term, commit: s.commitIndex });
    }
  }

  private recordCommitted(id: NodeId, core: RaftCore, from: number, through: number): void {
    for (let i = Math.max(from + 1, core.status().firstIndex); i <= through; i++) {
      const entry = core.entryAt(i);
      if (entry === undefined) continue;
      const known = this.committed[i];
      if (known === undefined) {
        this.committed[i] = { term: entry.term, hash: entryHash(entry) };
        this.counts.commits++;
      } else if (known.term !== entry.term || known.hash !== entryHash(entry)) {
        this.fail(
          `committed entry changed: member ${id} commits ${entry.term}/${i}, was ${known.term}/${i}`,
        );
      }
    }
  }

  private checkLeaderCompleteness(id: NodeId, core: RaftCore): void {
    const s = core.status();
    const maxCommitted = this.committed.length - 1;
    if (maxCommitted > s.lastIndex) {
      this.fail(
        `leader completeness: leader ${id} of term ${s.term} lacks committed entry ${maxCommitted}`,
      );
      return;
    }
    for (let i = s.firstIndex; i <= maxCommitted; i++) {
      const known = this.committed[i];
      if (known !== undefined && core.termAt(i) !== known.term) {
        this.fail(
          `leader completeness: leader ${id} of term ${s.term} holds ${core.termAt(i)}/${i}, ` +
            `committed ${known.term}/${i}`,
        );
        return;
      }
    }
  }
}
