/**
 * What a leader knows about one follower's log, and the flow control of appends to it.
 *
 * - probe: the match point is unknown; at most one append is in flight (it may be rejected),
 *   and another is sent only after a response or a heartbeat response.
 * - replicate: the follower is keeping up; appends are pipelined optimistically (`next`
 *   advances as they are sent), bounded by a window of in-flight appends and bytes.
 * - snapshot: the follower needs entries that were compacted away; a raftSnapshot is on its
 *   way and nothing else is sent until it is acknowledged (or a retry timer fires).
 */
import { assert } from "@hes/base";

export type ProgressState = "probe" | "replicate" | "snapshot";

interface Inflight {
  readonly lastIndex: number;
  readonly bytes: number;
}

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  /** Probe state: an append is out and unanswered. */
  probeSent = false;
  /** Snapshot state: index of the raftSnapshot sent, and ticks since it was sent. */
  pendingSnapshot = 0;
  snapshotTicks = 0;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  /** The commit index last sent in an append, so a stale follower gets the news. */
  sentCommit = 0;
  private readonly inflights: Inflight[] = [];
  private inflightHead = 0;
  private inflightBytes = 0;

  constructor(
    next: number,
    private readonly inflightMax: number,
    private readonly inflightBytesMax: number,
  ) {
    this.next = next;
  }

  /** True when nothing more may be sent now. */
  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflightFull();
      case "snapshot":
        return true;
    }
  }

  inflightCount(): number {
    return this.inflights.length - this.inflightHead;
  }

  inflightFull(): boolean {
    return this.inflightCount() >= this.inflightMax || this.inflightBytes >= this.inflightBytesMax;
  }

  becomeProbe(): void {
    // Coming back from a raftSnapshot, the follower holds at least the snapshot's entries.
    if (this.state === "snapshot") {
      this.next = Math.max(this.match + 1, this.pendingSnapshot + 1);
    } else {
      this.next = this.match + 1;
    }
    this.reset("probe");
  }

  becomeReplicate(): void {
    this.next = this.match + 1;
    this.reset("replicate");
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.reset("snapshot");
    this.pendingSnapshot = snapshotIndex;
  }

  private reset(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.snapshotTicks = 0;
    this.inflights.length = 0;
    this.inflightHead = 0;
    this.inflightBytes = 0;
  }

  /** Records that an append ending at `lastIndex` with `bytes` of data was sent. */
  sentEntries(lastIndex: number, count: number, bytes: number): void {
    if (this.state === "replicate") {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.push({ lastIndex, bytes });
        this.inflightBytes += bytes;
      }
    } else if (this.state === "probe") {
      this.probeSent = true;
    }
  }

  /** A positive acknowledgement through `index`. Returns false when it tells nothing new. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (index > this.match) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    this.freeThrough(index);
    return updated;
  }

  /**
   * A rejection of the append after `rejected`; `probeHint` is where the logs may match.
   * Returns false when the rejection is stale (an answer to an older append).
   */
  maybeDecreaseTo(rejected: number, probeHint: number): boolean {
    const lostLog =
      rejected === this.match &&
      probeHint < this.match &&
      (this.state === "replicate" || (this.state === "probe" && this.next - 1 === rejected));
    if (lostLog) {
      // The follower refused the very entry it had acknowledged: its log was lost (a node
      // whose disk was wiped restarts empty). Probe from where it says it is; the entries it
      // lost come back by append or snapshot. A stale refusal only costs one more probe,
      // since a lower match never lowers the commit index.
      if (this.state === "replicate") this.becomeProbe();
      this.match = probeHint;
      this.next = probeHint + 1;
      this.probeSent = false;
      return true;
    }
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.becomeProbe();
      this.next = Math.max(this.match + 1, Math.min(rejected, probeHint + 1));
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(this.match + 1, Math.min(rejected, probeHint + 1));
    this.probeSent = false;
    return true;
  }

  /** Frees in-flight slots for appends acknowledged through `index`. */
  private freeThrough(index: number): void {
    while (this.inflightHead < this.inflights.length) {
      const first = this.inflights[this.inflightHead] as Inflight;
      if (first.lastIndex > index) break;
      this.inflightBytes -= first.bytes;
      this.inflightHead++;
    }
    if (this.inflightHead === this.inflights.length) {
      this.inflights.length = 0;
      this.inflightHead = 0;
    } else if (this.inflightHead > 1024) {
      this.inflights.splice(0, this.inflightHead);
      this.inflightHead = 0;
    }
    assert(this.inflightBytes >= 0, "in-flight bytes went negative");
  }

  /**
   * Frees the oldest in-flight slot. Called on a heartbeat response when the window is full,
   * so that a window whose appends were all lost sends again (and is then corrected by the
   * follower's rejection).
   */
  freeFirst(): void {
    const first = this.inflights[this.inflightHead];
    if (first !== undefined) this.freeThrough(first.lastIndex);
  }
}
