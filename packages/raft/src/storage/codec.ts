/**
 * Binary records of the durable Raft state, each led by a crc32c of the rest: checked before
 * a record is written (it is computed from the bytes written) and after it is read (a
 * mismatch is HES_CORRUPTION, never a silently different log).
 *
 *   entry      crc u32 | type u8 | index u64 | term u64 | data
 *   hardState  crc u32 | term u64 | vote u32 | commit u64
 *   snapshot   crc u32 | index u64 | term u64 | voters u16 + u32… | learners u16 + u32… | data
 *
 * Integers are little-endian; u64 fields hold safe integers (checked on read).
 */

import { HesError, type NodeId } from "@hes/base";
import { crc32c } from "@node-rs/crc32";
import { makeConfState } from "../core/conf.js";
import { type Entry, EntryType, type HardState, type Snapshot } from "../core/types.js";

const CRC_BYTES = 4;

function writeU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value % 0x1_0000_0000, true);
  view.setUint32(at + 4, Math.floor(value / 0x1_0000_0000), true);
}

function readU64(view: DataView, at: number, what: string): number {
  const value = view.getUint32(at, true) + view.getUint32(at + 4, true) * 0x1_0000_0000;
  if (!Number.isSafeInteger(value)) throw corrupt(`${what}: not a safe integer`);
  return value;
}

function corrupt(message: string): HesError {
  return new HesError("HES_CORRUPTION", `raft storage: ${message}`);
}

function seal(record: Uint8Array): Uint8Array {
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
  view.setUint32(0, crc32c(record.subarray(CRC_BYTES)), true);
  return record;
}

function open(record: Uint8Array, minBytes: number, what: string): DataView {
  if (record.byteLength < minBytes) throw corrupt(`${what} record too short`);
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
  if (view.getUint32(0, true) !== crc32c(record.subarray(CRC_BYTES))) {
    throw corrupt(`${what} record checksum mismatch`);
  }
  return view;
}

const ENTRY_HEAD_BYTES = CRC_BYTES + 1 + 8 + 8;

export function encodeEntry(entry: Entry): Uint8Array {
  const out = new Uint8Array(ENTRY_HEAD_BYTES + entry.data.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(4, entry.type);
  writeU64(view, 5, entry.index);
  writeU64(view, 13, entry.term);
  out.set(entry.data, ENTRY_HEAD_BYTES);
  return seal(out);
}

export function decodeEntry(record: Uint8Array): Entry {
  const view = open(record, ENTRY_HEAD_BYTES, "entry");
  const type = view.getUint8(4) as EntryType;
  if (type !== EntryType.Normal && type !== EntryType.ConfChange && type !== EntryType.Noop) {
    throw corrupt(`entry of unknown type ${type}`);
  }
  return {
    type,
    index: readU64(view, 5, "entry index"),
    term: readU64(view, 13, "entry term"),
    data: record.subarray(ENTRY_HEAD_BYTES),
  };
}

export function encodeHardState(hardState: HardState): Uint8Array {
  const out = new Uint8Array(CRC_BYTES + 8 + 4 + 8);
  const view = new DataView(out.buffer);
  writeU64(view, 4, hardState.term);
  view.setUint32(12, hardState.vote, true);
  writeU64(view, 16, hardState.commit);
  return seal(out);
}

export function decodeHardState(record: Uint8Array): HardState {
  const view = open(record, 24, "hard state");
  return {
    term: readU64(view, 4, "term"),
    vote: view.getUint32(12, true),
    commit: readU64(view, 16, "commit"),
  };
}

export function encodeSnapshot(snapshot: Snapshot): Uint8Array {
  const { voters, learners } = snapshot.meta.confState;
  const headBytes = CRC_BYTES + 16 + 2 + 4 * voters.length + 2 + 4 * learners.length;
  const out = new Uint8Array(headBytes + snapshot.data.byteLength);
  const view = new DataView(out.buffer);
  writeU64(view, 4, snapshot.meta.index);
  writeU64(view, 12, snapshot.meta.term);
  let at = 20;
  for (const list of [voters, learners]) {
    view.setUint16(at, list.length, true);
    at += 2;
    for (const id of list) {
      view.setUint32(at, id, true);
      at += 4;
    }
  }
  out.set(snapshot.data, headBytes);
  return seal(out);
}

export function decodeSnapshot(record: Uint8Array): Snapshot {
  const view = open(record, CRC_BYTES + 20, "snapshot");
  const index = readU64(view, 4, "snapshot index");
  const term = readU64(view, 12, "snapshot term");
  let at = 20;
  const lists: NodeId[][] = [];
  for (let n = 0; n < 2; n++) {
    if (at + 2 > record.byteLength) throw corrupt("snapshot record truncated");
    const count = view.getUint16(at, true);
    at += 2;
    if (at + 4 * count > record.byteLength) throw corrupt("snapshot record truncated");
    const list: NodeId[] = [];
    for (let i = 0; i < count; i++) list.push(view.getUint32(at + 4 * i, true));
    at += 4 * count;
    lists.push(list);
  }
  return {
    meta: { index, term, confState: makeConfState(lists[0] ?? [], lists[1] ?? []) },
    data: record.subarray(at),
  };
}
