/**
 * The wire edge of Raft messages: core `Message` ⇄ protobuf `RaftMessage`. Everything that
 * arrives is checked here (types, node ids, safe integers, contiguous entries, decodable
 * membership changes) and refused with HES_PROTOCOL, so a malformed message never reaches
 * the core, whose assertions would stop the member.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { HesError, isNodeId, toSafeNumber } from "@hes/base";
import {
  type RaftEntry as ProtoEntry,
  type RaftMessage as ProtoMessage,
  type RaftSnapshot as ProtoSnapshot,
  RaftMessageSchema,
} from "@hes/proto";
import { decodeConfChange, makeConfState } from "../core/conf.js";
import { type Entry, EntryType, type Message, MessageType, type Snapshot } from "../core/types.js";

const MESSAGE_TYPES = new Set<number>(Object.values(MessageType));
const ENTRY_TYPES = new Set<number>(Object.values(EntryType));

function protocol(message: string): HesError {
  return new HesError("HES_PROTOCOL", `raft message: ${message}`);
}

/** The protobuf form of a core message. */
export function messageToWire(m: Message): MessageInitShape<typeof RaftMessageSchema> {
  return {
    type: m.type,
    from: m.from,
    to: m.to,
    term: BigInt(m.term),
    logTerm: BigInt(m.logTerm),
    index: BigInt(m.index),
    entries: m.entries.map((e) => ({
      term: BigInt(e.term),
      index: BigInt(e.index),
      type: e.type,
      data: e.data,
    })),
    commit: BigInt(m.commit),
    reject: m.reject,
    rejectHint: BigInt(m.rejectHint),
    ...(m.snapshot === undefined ? {} : { snapshot: snapshotToWire(m.snapshot) }),
    context: BigInt(m.context),
    force: m.force,
  };
}

function snapshotToWire(s: Snapshot): MessageInitShape<typeof RaftMessageSchema>["snapshot"] {
  return {
    meta: {
      index: BigInt(s.meta.index),
      term: BigInt(s.meta.term),
      confState: { voters: [...s.meta.confState.voters], learners: [...s.meta.confState.learners] },
    },
    data: s.data,
  };
}

/** Builds the protobuf message (for tests and size estimates). */
export function createWireMessage(m: Message): ProtoMessage {
  return create(RaftMessageSchema, messageToWire(m));
}

const num = (value: bigint, name: string): number => {
  try {
    return toSafeNumber(value, name);
  } catch (error) {
    throw protocol((error as Error).message);
  }
};

/** The core form of a received message; HES_PROTOCOL when it is malformed. */
export function messageFromWire(p: ProtoMessage): Message {
  if (!MESSAGE_TYPES.has(p.type)) throw protocol(`unknown type ${p.type}`);
  if (!isNodeId(p.from) || !isNodeId(p.to)) throw protocol("bad member id");
  const term = num(p.term, "term");
  const index = num(p.index, "index");
  const entries = p.entries.map((e, i) => entryFromWire(e, index + 1 + i, term));
  const snapshot = p.snapshot === undefined ? undefined : snapshotFromWire(p.snapshot);
  if (p.type === MessageType.Snapshot && snapshot === undefined) {
    throw protocol("snapshot message without a raftSnapshot");
  }
  return {
    type: p.type as MessageType,
    from: p.from,
    to: p.to,
    term,
    logTerm: num(p.logTerm, "logTerm"),
    index,
    entries,
    commit: num(p.commit, "commit"),
    reject: p.reject,
    rejectHint: num(p.rejectHint, "rejectHint"),
    snapshot,
    context: num(p.context, "context"),
    force: p.force,
  };
}

function entryFromWire(e: ProtoEntry, expectedIndex: number, messageTerm: number): Entry {
  const index = num(e.index, "entry index");
  const term = num(e.term, "entry term");
  if (index !== expectedIndex) throw protocol(`entry ${index} where ${expectedIndex} belongs`);
  if (term > messageTerm || term < 1) throw protocol(`entry term ${term} out of range`);
  if (!ENTRY_TYPES.has(e.type)) throw protocol(`entry of unknown type ${e.type}`);
  if (e.type === EntryType.ConfChange) {
    try {
      decodeConfChange(e.data);
    } catch {
      throw protocol(`undecodable membership change at ${index}`);
    }
  }
  return { index, term, type: e.type as EntryType, data: e.data };
}

function snapshotFromWire(s: ProtoSnapshot): Snapshot {
  const meta = s.meta;
  if (meta === undefined) throw protocol("raftSnapshot without metadata");
  const voters = meta.confState?.voters ?? [];
  const learners = meta.confState?.learners ?? [];
  if (![...voters, ...learners].every(isNodeId)) throw protocol("bad member id in raftSnapshot");
  return {
    meta: {
      index: num(meta.index, "snapshot index"),
      term: num(meta.term, "snapshot term"),
      confState: makeConfState(voters, learners),
    },
    data: s.data,
  };
}
