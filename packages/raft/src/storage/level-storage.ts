/**
 * Raft storage on `level` (LevelDB): one key per entry, one for the hard state, one for the
 * latest raftSnapshot (metadata and data), one for the format. A Ready becomes one LevelDB
 * write batch, synced (fdatasync of LevelDB's log) when it carries entries, a raftSnapshot,
 * a truncation, or a new term or vote.
 *
 * Keys: `meta`, `hard`, `snap`, and `e` + 16 hex digits of the index (so keys sort by index).
 */
import { HesError, type Logger, type NodeId, nullLogger } from "@hes/base";
import { Level } from "level";
import type { Entry, HardState } from "../core/types.js";
import {
  decodeEntry,
  decodeHardState,
  decodeSnapshot,
  encodeEntry,
  encodeHardState,
  encodeSnapshot,
} from "./codec.js";
import type { RaftStorage, RaftStorageWrite, StoredRaftState } from "./raft-storage.js";

const FORMAT_VERSION = 1;
const META_KEY = "meta";
const HARD_KEY = "hard";
const SNAP_KEY = "snap";

function entryKey(index: number): string {
  return `e${index.toString(16).padStart(16, "0")}`;
}

interface Meta {
  readonly format: number;
  readonly nodeId: NodeId;
}

export interface LevelRaftStorageOptions {
  readonly directory: string;
  /** The member this directory belongs to; a directory of another member is refused. */
  readonly nodeId: NodeId;
  readonly logger?: Logger;
}

export class LevelRaftStorage implements RaftStorage {
  private readonly db: Level<string, Uint8Array>;
  private readonly nodeId: NodeId;
  private readonly logger: Logger;
  /** Indices of the entries in the database (first..last), or last < first when none. */
  private firstStored = 1;
  private lastStored = 0;
  private closed = false;

  private constructor(options: LevelRaftStorageOptions) {
    this.db = new Level<string, Uint8Array>(options.directory, {
      keyEncoding: "utf8",
      valueEncoding: "view",
    });
    this.nodeId = options.nodeId;
    this.logger = options.logger ?? nullLogger;
  }

  /** Opens (creating if needed) the database in `directory`. */
  static async open(options: LevelRaftStorageOptions): Promise<LevelRaftStorage> {
    const storage = new LevelRaftStorage(options);
    try {
      await storage.db.open();
    } catch (error) {
      throw new HesError("HES_IO", `cannot open raft storage in ${options.directory}`, {
        cause: error,
      });
    }
    return storage;
  }

  async load(): Promise<StoredRaftState | undefined> {
    const metaBytes = await this.db.get(META_KEY);
    if (metaBytes === undefined) return undefined;
    const meta = JSON.parse(new TextDecoder().decode(metaBytes)) as Meta;
    if (meta.format !== FORMAT_VERSION || meta.nodeId !== this.nodeId) {
      throw new HesError(
        "HES_BAD_FORMAT",
        `raft storage holds format ${meta.format} of node ${meta.nodeId}; ` +
          `expected format ${FORMAT_VERSION} of node ${this.nodeId}`,
      );
    }
    const hardBytes = await this.db.get(HARD_KEY);
    const snapBytes = await this.db.get(SNAP_KEY);
    if (hardBytes === undefined || snapBytes === undefined) {
      throw new HesError("HES_CORRUPTION", "raft storage: hard state or raftSnapshot missing");
    }
    const hardState = decodeHardState(hardBytes);
    const snapshot = decodeSnapshot(snapBytes);
    const entries: Entry[] = [];
    for await (const [key, value] of this.db.iterator({ gt: "e", lt: "f" })) {
      const entry = decodeEntry(value);
      if (key !== entryKey(entry.index)) {
        throw new HesError("HES_CORRUPTION", `raft storage: entry ${entry.index} under ${key}`);
      }
      if (entry.index <= snapshot.meta.index) continue;
      const expected = snapshot.meta.index + 1 + entries.length;
      if (entry.index !== expected) {
        throw new HesError("HES_CORRUPTION", `raft storage: entry ${expected} missing`);
      }
      entries.push(entry);
    }
    this.firstStored = snapshot.meta.index + 1;
    this.lastStored = snapshot.meta.index + entries.length;
    this.logger.info(
      { snapshotIndex: snapshot.meta.index, entries: entries.length, term: hardState.term },
      "raft storage loaded",
    );
    return { hardState, snapshot, entries };
  }

  /** Writes the state of a brand-new member (called once, when `load` found nothing). */
  async bootstrap(state: StoredRaftState): Promise<void> {
    const meta: Meta = { format: FORMAT_VERSION, nodeId: this.nodeId };
    const batch = this.db.batch();
    batch.put(META_KEY, new TextEncoder().encode(JSON.stringify(meta)));
    batch.put(HARD_KEY, encodeHardState(state.hardState));
    batch.put(SNAP_KEY, encodeSnapshot(state.snapshot));
    for (const entry of state.entries) batch.put(entryKey(entry.index), encodeEntry(entry));
    await batch.write({ sync: true });
    this.firstStored = state.snapshot.meta.index + 1;
    this.lastStored = state.snapshot.meta.index + state.entries.length;
  }

  write(write: RaftStorageWrite, done: (error: Error | undefined) => void): void {
    if (this.closed) {
      done(new HesError("HES_CLOSED", "raft storage is closed"));
      return;
    }
    const batch = this.db.batch();
    let first = this.firstStored;
    let last = this.lastStored;
    if (write.snapshot !== undefined) {
      const through = write.snapshot.meta.index;
      batch.put(SNAP_KEY, encodeSnapshot(write.snapshot));
      for (let i = first; i <= Math.min(last, through); i++) batch.del(entryKey(i));
      first = through + 1;
      last = Math.max(last, through);
    }
    if (write.truncateAfter !== undefined) {
      for (let i = Math.max(first, write.truncateAfter + 1); i <= last; i++) batch.del(entryKey(i));
      last = Math.min(last, write.truncateAfter);
    }
    for (const entry of write.entries) {
      batch.put(entryKey(entry.index), encodeEntry(entry));
      last = entry.index;
    }
    if (write.hardState !== undefined) batch.put(HARD_KEY, encodeHardState(write.hardState));
    batch.write({ sync: write.sync }).then(
      () => {
        this.firstStored = first;
        this.lastStored = last;
        done(undefined);
      },
      (error: unknown) => {
        done(new HesError("HES_IO", "raft storage write failed", { cause: error }));
      },
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
  }
}

/** The hard state of a member that has never run. */
export const INITIAL_HARD_STATE: HardState = Object.freeze({ term: 0, vote: 0, commit: 0 });
