/**
 * The index checkpoint in `level`: one LevelDB per disk, written only as whole atomic batches
 * with `sync: true`, so after a crash it holds exactly one complete checkpoint. Keys:
 *
 *   meta              JSON {@link IndexMeta}: disk id, cluster id, log position, counters
 *   segments          the segment table (16 bytes per segment, see segments.ts)
 *   c/<vol>/<chunk>   JSON {@link ChunkRecordJson}: version, page ids of the head and of each pin
 *   p/<page id>       one index page, 4 KiB (address, crc, seq of 256 blocks)
 */
import { HesError } from "@hes/base";
import { Level } from "level";
import { ChunkIndex, type DiskIndex, PAGE_BYTES, Page, type PageArray } from "./chunk-index.js";

/** A place in the log: where replay starts (the first batch after the checkpoint). */
export interface LogPosition {
  readonly segment: number;
  readonly offsetBytes: number;
  /** The segment's sequence number. */
  readonly seq: number;
  /** LSN of the last batch before this position (0 at the start of a fresh log). */
  readonly lsn: number;
}

/** The checkpoint's header. */
export interface IndexMeta {
  readonly formatVersion: number;
  readonly diskId: string;
  readonly clusterId: string;
  readonly position: LogPosition;
  readonly nextPageId: number;
  /**
   * Segment sequence numbers and batch LSNs (one counter) up to this one may have been used by
   * some run: the next run starts above it, so neither is ever reused.
   */
  readonly seqReserved: number;
  /** True only when written by a clean close: nothing can follow `position` in the log. */
  readonly clean: boolean;
}

interface ChunkRecordJson {
  readonly v: number;
  readonly c: number;
  readonly e: number;
  readonly s: number;
  /** Page ids of the head, 0 for an absent page. */
  readonly h: number[];
  /** Pins: [snapshotId, epoch, durableSeq, page ids]. */
  readonly p: [number, number, number, number[]][];
}

/** One put or del of a checkpoint batch. */
export type IndexOp =
  | { readonly type: "put"; readonly key: string; readonly value: Uint8Array }
  | { readonly type: "del"; readonly key: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function json(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function pageIds(pages: PageArray): number[] {
  return pages.map((page) => page?.id ?? 0);
}

/** The put for a chunk's metadata. */
export function chunkOp(chunk: ChunkIndex): IndexOp {
  const record: ChunkRecordJson = {
    v: chunk.volumeId,
    c: chunk.chunkIndex,
    e: chunk.epoch,
    s: chunk.durableSeq,
    h: pageIds(chunk.head),
    p: [...chunk.pins.values()].map((pin) => [
      pin.snapshotId,
      pin.epoch,
      pin.durableSeq,
      pageIds(pin.pages),
    ]),
  };
  return { type: "put", key: `c/${chunk.key}`, value: json(record) };
}

export function metaOp(meta: IndexMeta): IndexOp {
  return { type: "put", key: "meta", value: json(meta) };
}

/** A LevelDB holding one disk's index checkpoint. */
export class IndexDb {
  readonly path: string;
  private readonly db: Level<string, Uint8Array>;

  private constructor(path: string, db: Level<string, Uint8Array>) {
    this.path = path;
    this.db = db;
  }

  /** Opens (creating) the database at `path`. Throws HES_IO when level cannot. */
  static async open(path: string): Promise<IndexDb> {
    const db = new Level<string, Uint8Array>(path, { keyEncoding: "utf8", valueEncoding: "view" });
    try {
      await db.open();
    } catch (error) {
      throw new HesError("HES_IO", `index database ${path}: cannot open`, { cause: error });
    }
    return new IndexDb(path, db);
  }

  async readMeta(): Promise<IndexMeta | undefined> {
    const bytes = await this.db.get("meta");
    if (bytes === undefined) return undefined;
    return JSON.parse(decoder.decode(bytes)) as IndexMeta;
  }

  async readSegments(): Promise<Uint8Array | undefined> {
    return this.db.get("segments");
  }

  /** Applies one checkpoint atomically and durably. */
  async write(ops: readonly IndexOp[]): Promise<void> {
    try {
      await this.db.batch(ops as IndexOp[], { sync: true });
    } catch (error) {
      throw new HesError("HES_IO", `index database ${this.path}: write failed`, { cause: error });
    }
  }

  /** Empties the database (formatting a disk) and writes `ops`. */
  async reset(ops: readonly IndexOp[]): Promise<void> {
    await this.db.clear();
    await this.write(ops);
  }

  /** Loads every chunk and page into `index`; page reference counts are rebuilt. */
  async loadInto(index: DiskIndex): Promise<void> {
    const pages = new Map<number, Page>();
    for await (const [key, value] of this.db.iterator({ gte: "p/", lt: "p0" })) {
      const id = Number(key.slice(2));
      if (value.byteLength !== PAGE_BYTES) {
        throw new HesError("HES_CORRUPTION", `index database ${this.path}: page ${id} malformed`);
      }
      const page = new Page(id, value);
      page.refs = 0;
      pages.set(id, page);
    }
    const resolve = (ids: number[]): PageArray =>
      ids.map((id) => {
        if (id === 0) return undefined;
        const page = pages.get(id);
        if (page === undefined) {
          throw new HesError("HES_CORRUPTION", `index database ${this.path}: page ${id} missing`);
        }
        page.refs++;
        return page;
      });
    for await (const [, value] of this.db.iterator({ gte: "c/", lt: "c0" })) {
      const record = JSON.parse(decoder.decode(value)) as ChunkRecordJson;
      const chunk = new ChunkIndex(record.v, record.c, index.pageCount);
      chunk.epoch = record.e;
      chunk.durableSeq = record.s;
      resolve(record.h).forEach((page, i) => {
        chunk.head[i] = page;
      });
      for (const [snapshotId, epoch, durableSeq, ids] of record.p) {
        chunk.pins.set(snapshotId, { snapshotId, epoch, durableSeq, pages: resolve(ids) });
      }
      index.chunks.set(chunk.key, chunk);
    }
    for (const page of pages.values()) {
      if (page.refs === 0) index.droppedPageIds.add(page.id); // unreferenced: clean up next time
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
