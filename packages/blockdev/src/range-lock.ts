/**
 * The volume's write order: a FIFO lock over block ranges. An operation holds its blocks from
 * before it takes a seq until its replicas answered, so overlapping writes reach every replica
 * in the order they were issued (and with increasing seqs), a partial-block read-modify-write
 * is atomic with respect to every other write, and compare-and-write sees no write between its
 * compare and its write. Non-overlapping operations run in parallel.
 *
 * Grants are in arrival order among conflicting requests: a waiting writer blocks later
 * overlapping readers, so writers never starve and two overlapping writes never swap.
 * Shared (read) holds do not conflict with each other.
 */

interface Entry {
  readonly firstBlock: number;
  readonly endBlock: number;
  readonly exclusive: boolean;
  granted: boolean;
  readonly grant: () => void;
}

/** Releases a hold; idempotent. */
export type Release = () => void;

export class RangeLock {
  /** Holders and waiters, in arrival order. Bounded by the volume's admission window. */
  private readonly entries: Entry[] = [];

  /** Holders plus waiters (for tests and stats). */
  get size(): number {
    return this.entries.length;
  }

  /** Waits until `[firstBlock, endBlock)` is free of conflicting earlier requests. */
  acquire(firstBlock: number, endBlock: number, exclusive: boolean): Promise<Release> {
    return new Promise<Release>((resolve) => {
      const entry: Entry = {
        firstBlock,
        endBlock,
        exclusive,
        granted: false,
        grant: () => resolve(() => this.release(entry)),
      };
      this.entries.push(entry);
      this.grantReady();
    });
  }

  private release(entry: Entry): void {
    const at = this.entries.indexOf(entry);
    if (at < 0) return;
    this.entries.splice(at, 1);
    this.grantReady();
  }

  private grantReady(): void {
    for (let i = 0; i < this.entries.length; i++) {
      const entry = this.entries[i] as Entry;
      if (entry.granted) continue;
      let blocked = false;
      for (let j = 0; j < i && !blocked; j++) {
        const earlier = this.entries[j] as Entry;
        blocked =
          (earlier.exclusive || entry.exclusive) &&
          earlier.firstBlock < entry.endBlock &&
          entry.firstBlock < earlier.endBlock;
      }
      if (!blocked) {
        entry.granted = true;
        entry.grant();
      }
    }
  }
}
