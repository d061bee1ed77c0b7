/**
 * Goal: the core's bounds and refusals hold, and the storage records detect damage. Method:
 * a leader elected in a three-member core cluster driven by hand; count what one Ready sends
 * under flow control; fill the uncommitted budget; check the refusals' codes and hints; round
 * trip membership-change and storage records, then flip a byte and expect HES_CORRUPTION.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { isHesError, nullLogger, Prng } from "@hes/base";
import {
  ConfChangeType,
  decodeConfChange,
  decodeEntry,
  decodeHardState,
  decodeSnapshot,
  encodeConfChange,
  encodeEntry,
  encodeHardState,
  encodeSnapshot,
  type Message,
  MessageType,
  makeConfState,
  makeMessage,
  RaftCore,
  type RaftOptions,
} from "@hes/raft";

function cluster(extra: Partial<RaftOptions> = {}): Map<number, RaftCore> {
  const cores = new Map<number, RaftCore>();
  for (const id of [1, 2, 3]) {
    cores.set(
      id,
      new RaftCore(
        {
          id,
          electionTicks: 10,
          heartbeatTicks: 1,
          prng: new Prng(id),
          logger: nullLogger,
          ...extra,
        },
        {
          hardState: { term: 0, vote: 0, commit: 0 },
          snapshot: {
            meta: { index: 0, term: 0, confState: makeConfState([1, 2, 3], []) },
            data: new Uint8Array(),
          },
          entries: [],
        },
      ),
    );
  }
  return cores;
}

/** Processes Readys and delivers messages until quiet; returns the messages sent. */
function stabilize(cores: Map<number, RaftCore>): Message[] {
  const sent: Message[] = [];
  for (let round = 0; round < 100; round++) {
    const queue: Message[] = [];
    for (const core of cores.values()) {
      if (!core.hasReady()) continue;
      const rd = core.ready();
      queue.push(...rd.messages);
      core.advance(rd);
    }
    if (queue.length === 0) return sent;
    sent.push(...queue);
    for (const m of queue) cores.get(m.to)?.step(m);
  }
  throw new Error("did not stabilize");
}

function elect(cores: Map<number, RaftCore>): RaftCore {
  const leader = cores.get(1) as RaftCore;
  leader.campaign();
  stabilize(cores);
  assert.equal(leader.status().role, "leader");
  return leader;
}

test("flow control: appends in flight to one follower are bounded", () => {
  const cores = cluster({ appendEntriesMax: 1, inflightAppendsMax: 3 });
  const leader = elect(cores);
  for (let i = 0; i < 20; i++) assert.ok(leader.propose(new Uint8Array([i])).ok);
  const rd = leader.ready();
  const appendsTo2 = rd.messages.filter((m) => m.to === 2 && m.type === MessageType.Append);
  assert.equal(appendsTo2.length, 3, "three one-entry appends, then the window is full");
  leader.advance(rd);
  assert.equal(leader.hasReady(), false, "nothing more is sent before an acknowledgement");
});

test("a leader refuses proposals past the uncommitted budget, and followers refuse with a hint", () => {
  const cores = cluster({ uncommittedBytesMax: 1000 });
  const leader = elect(cores);
  assert.ok(leader.propose(new Uint8Array(600)).ok);
  const refused = leader.propose(new Uint8Array(600));
  assert.equal(refused.ok, false);
  if (!refused.ok) assert.equal(refused.code, "HES_BUSY");
  const follower = cores.get(2) as RaftCore;
  const hint = follower.propose(new Uint8Array(1));
  assert.equal(hint.ok, false);
  if (!hint.ok) {
    assert.equal(hint.code, "HES_NOT_LEADER");
    assert.equal(hint.leaderHint, 1);
  }
  assert.equal(follower.readIndex(1).ok, true, "a follower forwards reads to its leader");
});

test("misaddressed messages are dropped without effect", () => {
  const cores = cluster();
  const core = cores.get(2) as RaftCore;
  const before = core.status();
  core.step(makeMessage({ type: MessageType.Vote, from: 1, to: 3, term: 9 }));
  core.step(makeMessage({ type: MessageType.Vote, from: 2, to: 2, term: 9 }));
  assert.deepEqual(core.status(), before);
  assert.equal(core.hasReady(), false);
});

test("membership records round-trip; invalid changes are refused with codes", () => {
  const record = {
    change: { type: ConfChangeType.AddLearner, nodeId: 7, context: new Uint8Array([1, 2, 3]) },
    confState: makeConfState([1, 2, 3], [7]),
  };
  assert.deepEqual(decodeConfChange(encodeConfChange(record)), record);
  const cores = cluster();
  const leader = elect(cores);
  const code = (r: ReturnType<RaftCore["proposeConfChange"]>): string => (r.ok ? "ok" : r.code);
  assert.equal(
    code(leader.proposeConfChange({ type: ConfChangeType.AddVoter, nodeId: 9 })),
    "HES_INVALID_ARGUMENT",
  );
  assert.equal(
    code(leader.proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: 2 })),
    "HES_ALREADY_EXISTS",
  );
  assert.equal(
    code(leader.proposeConfChange({ type: ConfChangeType.Remove, nodeId: 9 })),
    "HES_NOT_FOUND",
  );
  assert.equal(
    code(leader.proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: 4 })),
    "ok",
  );
  assert.equal(
    code(leader.proposeConfChange({ type: ConfChangeType.Remove, nodeId: 3 })),
    "HES_BUSY",
  );
});

test("storage records round-trip and detect a flipped byte", () => {
  const entry = { index: 2 ** 40, term: 7, type: 1 as const, data: new Uint8Array([5, 6, 7]) };
  assert.deepEqual(decodeEntry(encodeEntry(entry)), entry);
  const hard = { term: 2 ** 45, vote: 3, commit: 99 };
  assert.deepEqual(decodeHardState(encodeHardState(hard)), hard);
  const snapshot = {
    meta: { index: 10, term: 2, confState: makeConfState([1, 2], [3]) },
    data: new Uint8Array([1]),
  };
  assert.deepEqual(decodeSnapshot(encodeSnapshot(snapshot)), snapshot);
  const cases: Array<[Uint8Array, (record: Uint8Array) => unknown]> = [
    [encodeEntry(entry), decodeEntry],
    [encodeHardState(hard), decodeHardState],
    [encodeSnapshot(snapshot), decodeSnapshot],
  ];
  for (const [record, decode] of cases) {
    for (const at of [0, 5, record.length - 1]) {
      const damaged = new Uint8Array(record);
      damaged[at] = (damaged[at] as number) ^ 0x10;
      assert.throws(
        () => decode(damaged),
        (e) => isHesError(e, "HES_CORRUPTION"),
      );
    }
  }
});
