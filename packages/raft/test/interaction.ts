/**
 * A scripted environment for the pure core, in the style of etcd's rafttest: members, a
 * message queue the script delivers (or drops) explicitly, durable state per member, and
 * a tiny state machine (the list of applied commands). Every command prints what happened,
 * so a transcript file records the exact sequence of Readys, messages and log lines.
 */
import { type Logger, type NodeId, Prng } from "@hes/base";
import {
  type ConfChangeType,
  type ConfState,
  describeEntry,
  describeMessage,
  describeReady,
  EMPTY_CONF,
  type Entry,
  type HardState,
  type Message,
  makeConfState,
  messageTypeName,
  RaftCore,
  type RaftOptions,
  type Snapshot,
} from "@hes/raft";

interface Stored {
  hardState: HardState;
  snapshot: Snapshot;
  entries: Entry[];
}

interface Member {
  core: RaftCore;
  stored: Stored;
  applied: string[];
  options: RaftOptions;
  /** The configuration it was created with (what a wiped node starts from again). */
  readonly initialConf: ConfState;
}

/** A logger that writes `LEVEL id: message` lines into the transcript output. */
class TranscriptLogger implements Logger {
  constructor(
    private readonly env: InteractionEnv,
    private readonly id: NodeId,
  ) {}
  private emit(level: string, a: object | string, b?: string): void {
    if (!this.env.logLevels.has(level)) return;
    this.env.out.push(`${level.toUpperCase()} ${this.id}: ${typeof a === "string" ? a : b}`);
  }
  trace = (a: object | string, b?: string): void => this.emit("trace", a, b);
  debug = (a: object | string, b?: string): void => this.emit("debug", a, b);
  info = (a: object | string, b?: string): void => this.emit("info", a, b);
  warn = (a: object | string, b?: string): void => this.emit("warn", a, b);
  error = (a: object | string, b?: string): void => this.emit("error", a, b);
  fatal = (a: object | string, b?: string): void => this.emit("fatal", a, b);
  child = (): Logger => this;
}

/** Parsed `key=value` arguments, and bare words. */
interface Args {
  readonly words: string[];
  readonly kv: Map<string, string>;
}

function parseArgs(text: string): Args {
  const words: string[] = [];
  const kv = new Map<string, string>();
  for (const token of text.match(/\S+=\([^)]*\)|\S+/g) ?? []) {
    const eq = token.indexOf("=");
    if (eq > 0) kv.set(token.slice(0, eq), token.slice(eq + 1));
    else words.push(token);
  }
  return { words, kv };
}

function idList(value: string | undefined): NodeId[] {
  if (value === undefined || value === "()") return [];
  return value
    .replace(/[()]/g, "")
    .split(",")
    .filter((s) => s !== "")
    .map(Number);
}

const CHANGE_TYPES: Record<string, ConfChangeType> = {
  "add-voter": 1,
  remove: 2,
  "add-learner": 3,
};

export class InteractionEnv {
  readonly members = new Map<NodeId, Member>();
  /** Messages sent and not yet delivered, in send order. */
  queue: Message[] = [];
  readonly isolated = new Set<NodeId>();
  readonly logLevels = new Set(["info", "warn", "error", "fatal"]);
  out: string[] = [];
  private rawArgs = "";

  /** Runs one command; returns its output. */
  run(command: string): string {
    this.out = [];
    const space = command.indexOf(" ");
    const name = space < 0 ? command : command.slice(0, space);
    const args = parseArgs(space < 0 ? "" : command.slice(space + 1));
    const handler = this.handlers[name];
    if (handler === undefined) throw new Error(`unknown command ${name}`);
    this.rawArgs = space < 0 ? "" : command.slice(space + 1);
    handler(args);
    return this.out.length === 0 ? "ok" : this.out.join("\n");
  }

  private readonly handlers: Record<string, (args: Args) => void> = {
    "add-nodes": (a) => this.addNodes(a),
    campaign: (a) => this.each(a, (id) => this.member(id).core.campaign()),
    tick: (a) => {
      const count = Number(a.kv.get("count") ?? 1);
      for (const id of this.ids(a)) for (let i = 0; i < count; i++) this.member(id).core.tick();
    },
    "tick-heartbeat": (a) => {
      for (const id of this.ids(a)) {
        const m = this.member(id);
        for (let i = 0; i < m.options.heartbeatTicks; i++) m.core.tick();
      }
    },
    "tick-election": (a) => this.each(a, (id) => this.tickElection(id)),
    propose: () => {
      const space = this.rawArgs.indexOf(" ");
      const id = Number(this.rawArgs.slice(0, space));
      const data = new TextEncoder().encode(this.rawArgs.slice(space + 1));
      const result = this.member(id).core.propose(data);
      if (!result.ok) this.out.push(`refused: ${result.code} hint=${result.leaderHint}`);
      else this.out.push(`proposed at ${result.index}`);
    },
    "propose-conf-change": (a) => {
      const [id, kind, node] = a.words;
      const type = CHANGE_TYPES[kind ?? ""];
      if (type === undefined) throw new Error(`unknown change ${kind}`);
      const result = this.member(Number(id)).core.proposeConfChange({
        type,
        nodeId: Number(node),
      });
      if (!result.ok) this.out.push(`refused: ${result.code} (${result.message})`);
      else this.out.push(`proposed at ${result.index}`);
    },
    "transfer-leadership": (a) => {
      const [from, to] = a.words.map(Number);
      const result = this.member(from ?? 0).core.transferLeadership(to ?? 0);
      if (!result.ok) this.out.push(`refused: ${result.code} (${result.message})`);
    },
    "read-index": (a) => {
      const [id, request] = a.words.map(Number);
      const result = this.member(id ?? 0).core.readIndex(request ?? 0);
      if (!result.ok) this.out.push(`refused: ${result.code} (${result.message})`);
    },
    compact: (a) => {
      const [id, index] = a.words.map(Number);
      const m = this.member(id ?? 0);
      const state = m.applied.slice(0, (index ?? 0) - m.core.snapshot().meta.index);
      m.core.compact(index ?? 0, new TextEncoder().encode(JSON.stringify(state)));
    },
    "process-ready": (a) => this.each(a, (id) => this.processReady(id)),
    "deliver-msgs": (a) => this.deliver(this.ids(a), a.kv.get("drop") === "true", a.kv.get("type")),
    stabilize: (a) => this.stabilize(a.words.length === 0 ? [...this.members.keys()] : this.ids(a)),
    isolate: (a) => this.each(a, (id) => this.isolated.add(id)),
    heal: (a) => {
      // Messages sent across the partition were lost in it.
      const healed = a.words.length === 0 ? [...this.isolated] : this.ids(a);
      const lost = (msg: Message): boolean =>
        (this.isolated.has(msg.from) || this.isolated.has(msg.to)) &&
        (healed.includes(msg.from) || healed.includes(msg.to));
      this.queue = this.queue.filter((msg) => !lost(msg));
      for (const id of healed) this.isolated.delete(id);
    },
    // restart N [wiped=true]: from its stored state, or from nothing (its disk lost).
    restart: (a) => this.each(a, (id) => this.restart(id, a.kv.get("wiped") === "true")),
    status: (a) => this.each(a, (id) => this.status(id)),
    "raft-log": (a) => this.each(a, (id) => this.raftLog(id)),
    "log-level": (a) => {
      this.logLevels.clear();
      const order = ["debug", "info", "warn", "error", "fatal"];
      const from = order.indexOf(a.words[0] ?? "info");
      if (from >= 0) for (const level of order.slice(from)) this.logLevels.add(level);
    },
  };

  private each(a: Args, fn: (id: NodeId) => unknown): void {
    for (const id of this.ids(a)) fn(id);
  }

  private ids(a: Args): NodeId[] {
    return a.words.map(Number);
  }

  private member(id: NodeId): Member {
    const m = this.members.get(id);
    if (m === undefined) throw new Error(`no member ${id}`);
    return m;
  }

  /**
   * add-nodes N voters=(…) [learners=(…)] [joining=true] [log=(t,t,…)] [term=T]
   * [prevote=false] [checkquorum=false] [election=E] [heartbeat=H] [max-entries=K]
   */
  private addNodes(a: Args): void {
    const count = Number(a.words[0] ?? 1);
    const conf =
      a.kv.get("joining") === "true"
        ? EMPTY_CONF
        : makeConfState(idList(a.kv.get("voters")), idList(a.kv.get("learners")));
    const terms = idList(a.kv.get("log"));
    const entries: Entry[] = terms.map((term, i) => ({
      index: i + 1,
      term,
      type: 1,
      data: new TextEncoder().encode(`init ${term}/${i + 1}`),
    }));
    const term = Number(a.kv.get("term") ?? terms[terms.length - 1] ?? 0);
    for (let n = 0; n < count; n++) {
      const id = Number(a.kv.get("id") ?? this.members.size + 1) + (a.kv.has("id") ? n : 0);
      const options: RaftOptions = {
        id,
        electionTicks: Number(a.kv.get("election") ?? 10),
        heartbeatTicks: Number(a.kv.get("heartbeat") ?? 1),
        prng: new Prng(id),
        logger: new TranscriptLogger(this, id),
        preVote: a.kv.get("prevote") !== "false",
        checkQuorum: a.kv.get("checkquorum") !== "false",
        appendEntriesMax: Number(a.kv.get("max-entries") ?? 64),
        unsafe: { commitPreviousTermByCount: a.kv.get("unsafe-commit-by-count") === "true" },
      };
      const stored: Stored = {
        hardState: { term, vote: 0, commit: 0 },
        snapshot: { meta: { index: 0, term: 0, confState: conf }, data: new Uint8Array(0) },
        entries: [...entries],
      };
      this.members.set(id, {
        core: new RaftCore(options, stored),
        stored,
        applied: [],
        options,
        initialConf: conf,
      });
    }
  }

  private restart(id: NodeId, wiped: boolean): void {
    const m = this.member(id);
    this.queue = this.queue.filter((msg) => msg.to !== id && msg.from !== id);
    if (wiped) {
      m.stored = {
        hardState: { term: 0, vote: 0, commit: 0 },
        snapshot: {
          meta: { index: 0, term: 0, confState: m.initialConf },
          data: new Uint8Array(0),
        },
        entries: [],
      };
    }
    m.core = new RaftCore(m.options, {
      hardState: m.stored.hardState,
      snapshot: m.stored.snapshot,
      entries: [...m.stored.entries],
    });
    m.applied = JSON.parse(new TextDecoder().decode(m.stored.snapshot.data) || "[]") as string[];
  }

  private tickElection(id: NodeId): void {
    const m = this.member(id);
    const before = m.core.status();
    const limit = m.options.electionTicks * 2;
    for (let i = 0; i < limit; i++) {
      m.core.tick();
      const now = m.core.status();
      if (before.role === "leader") {
        if (i + 1 >= m.options.electionTicks || now.role !== "leader") return;
      } else if (now.role !== before.role || now.term !== before.term) {
        return;
      }
    }
  }

  private processReady(id: NodeId): boolean {
    const m = this.member(id);
    if (!m.core.hasReady()) return false;
    const rd = m.core.ready();
    this.out.push(`> ${id} handling Ready`);
    this.out.push(...describeReady(rd, "  "));
    const stored = m.stored;
    if (rd.snapshot !== undefined) {
      const through = rd.snapshot.meta.index;
      stored.snapshot = rd.snapshot;
      stored.entries = stored.entries.filter((e) => e.index > through);
    }
    if (rd.truncateAfter !== undefined) {
      const after = rd.truncateAfter;
      stored.entries = stored.entries.filter((e) => e.index <= after);
    }
    for (const entry of rd.entries) {
      stored.entries = stored.entries.filter((e) => e.index < entry.index);
      stored.entries.push(entry);
    }
    if (rd.hardState !== undefined) stored.hardState = rd.hardState;
    this.queue.push(...rd.messages);
    if (rd.restore !== undefined) {
      m.applied = JSON.parse(new TextDecoder().decode(rd.restore.data) || "[]") as string[];
    }
    for (const entry of rd.committedEntries) m.applied.push(describeEntry(entry));
    m.core.advance(rd);
    return true;
  }

  private deliver(ids: NodeId[], drop: boolean, type: string | undefined): boolean {
    let any = false;
    const keep: Message[] = [];
    const deliverNow: Message[] = [];
    for (const msg of this.queue) {
      const matches =
        ids.includes(msg.to) && (type === undefined || messageTypeName(msg.type) === type);
      if (matches) deliverNow.push(msg);
      else keep.push(msg);
    }
    this.queue = keep;
    for (const msg of deliverNow) {
      any = true;
      const cut = this.isolated.has(msg.from) || this.isolated.has(msg.to);
      if (drop || cut) {
        this.out.push(`dropped: ${describeMessage(msg)}`);
        continue;
      }
      this.out.push(describeMessage(msg));
      this.member(msg.to).core.step(msg);
    }
    return any;
  }

  private stabilize(ids: NodeId[]): void {
    for (let round = 0; round < 1000; round++) {
      let progress = false;
      for (const id of ids) progress = this.processReady(id) || progress;
      for (const id of ids) {
        if (this.queue.some((msg) => msg.to === id)) {
          this.out.push(`> ${id} receiving messages`);
          progress = this.deliver([id], false, undefined) || progress;
        }
      }
      if (!progress) return;
    }
    throw new Error("stabilize did not converge");
  }

  private status(id: NodeId): void {
    const s = this.member(id).core.status();
    this.out.push(
      `${id}: ${s.role} term=${s.term} lead=${s.leaderId} commit=${s.commitIndex} ` +
        `applied=${s.appliedIndex} last=${s.lastIndex} snapshot=${s.snapshotIndex} ` +
        `voters=(${s.confState.voters.join(",")}) learners=(${s.confState.learners.join(",")})`,
    );
    if (s.role === "leader") {
      for (const peer of [...s.confState.voters, ...s.confState.learners]) {
        if (peer === id) continue;
        this.out.push(`  ${peer}: match=${this.member(id).core.matchOf(peer)}`);
      }
    }
  }

  private raftLog(id: NodeId): void {
    const core = this.member(id).core;
    const s = core.status();
    const entries: string[] = [];
    for (let i = s.firstIndex; i <= s.lastIndex; i++) {
      entries.push(describeEntry(core.entryAt(i) as Entry));
    }
    const head = s.snapshotIndex > 0 ? `snapshot ${s.snapshotIndex}; ` : "";
    this.out.push(`${id}: ${head}${entries.length === 0 ? "(empty)" : entries.join(", ")}`);
  }
}

/** One command block of a transcript file. */
export interface TranscriptBlock {
  readonly comments: string[];
  readonly command: string;
  readonly expected: string;
}

/** Parses `# comments`, `command`, `----`, expected output, blank line, repeated. */
export function parseTranscript(text: string): TranscriptBlock[] {
  const blocks: TranscriptBlock[] = [];
  const lines = text.split("\n");
  let i = 0;
  while (i < lines.length) {
    const comments: string[] = [];
    while (i < lines.length && ((lines[i] as string).startsWith("#") || lines[i] === "")) {
      comments.push(lines[i] as string);
      i++;
    }
    if (i >= lines.length) break;
    const command = lines[i++] as string;
    if (lines[i] !== "----") throw new Error(`line ${i + 1}: expected ---- after "${command}"`);
    i++;
    const expected: string[] = [];
    while (i < lines.length && lines[i] !== "") expected.push(lines[i++] as string);
    blocks.push({ comments, command, expected: expected.join("\n") });
  }
  return blocks;
}

/** Renders blocks back to a transcript file (used to rewrite expectations). */
export function renderTranscript(blocks: readonly TranscriptBlock[], outputs: string[]): string {
  const parts = blocks.map((block, i) =>
    [...block.comments, block.command, "----", outputs[i] ?? ""].join("\n"),
  );
  return `${parts.join("\n")}\n`;
}
