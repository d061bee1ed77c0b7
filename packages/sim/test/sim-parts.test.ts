/**
 * Goal: the simulator's parts behave as the runner assumes. Method: the scheduler runs events
 * in (time, insertion) order; SimClock drift scales timers and a reset drops them; SimNetwork
 * drops across a cut link and delivers otherwise; SimRaftStorage loses unsynced and
 * in-progress writes in a crash and keeps synced ones; RaftChecker reports two leaders in a
 * term, a double vote, and a committed entry overwritten.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Prng } from "@hes/base";
import {
  type Entry,
  MessageType,
  makeConfState,
  makeMessage,
  type RaftStorageWrite,
} from "@hes/raft";
import { RaftChecker, Scheduler, SimClock, SimNetwork, SimRaftStorage } from "@hes/sim";

test("scheduler order and virtual time", () => {
  const s = new Scheduler();
  const seen: string[] = [];
  s.after(20, () => seen.push("b"));
  s.after(10, () => seen.push("a"));
  s.after(20, () => seen.push("c"));
  const cancelled = s.after(15, () => seen.push("x"));
  cancelled.cancel();
  s.run(100, () => {});
  assert.deepEqual(seen, ["a", "b", "c"]);
  assert.equal(s.nowUs(), 100);
});

test("SimClock drift and reset", () => {
  const s = new Scheduler();
  const fast = new SimClock(s, 2);
  let firedAtUs = -1;
  fast.setTimer(10, () => {
    firedAtUs = s.nowUs();
  });
  let dropped = true;
  fast.setTimer(1000, () => {
    dropped = false;
  });
  s.run(6_000, () => {});
  assert.equal(firedAtUs, 5_000, "10 local ms at rate 2 are 5 real ms");
  fast.reset();
  s.run(10_000_000, () => {});
  assert.ok(dropped, "a reset drops pending timers");
});

test("SimNetwork cut links drop, others deliver", () => {
  const s = new Scheduler();
  const net = new SimNetwork<string>(s, new Prng(1));
  const got: string[] = [];
  net.transport(2).setHandler((from, m) => got.push(`${from}:${m}`));
  net.transport(1).send(2, "a");
  s.run(100_000, () => {});
  net.block(1, 2);
  net.transport(1).send(2, "b");
  net.heal();
  net.setUp(2, false);
  net.transport(1).send(2, "c");
  s.run(1_000_000, () => {});
  assert.deepEqual(got, ["1:a"]);
});

const entry = (index: number, term: number): Entry => ({
  index,
  term,
  type: 1,
  data: new Uint8Array([index]),
});
const write = (entries: Entry[], sync: boolean): RaftStorageWrite => ({
  hardState: { term: 1, vote: 1, commit: 0 },
  snapshot: undefined,
  truncateAfter: undefined,
  entries,
  sync,
});

test("SimRaftStorage: a crash keeps synced writes only", () => {
  const s = new Scheduler();
  const storage = new SimRaftStorage(
    1,
    s,
    new Prng(2),
    { minUs: 10, maxUs: 10, syncUs: 0 },
    undefined,
  );
  storage.bootstrapSync({
    hardState: { term: 0, vote: 0, commit: 0 },
    snapshot: {
      meta: { index: 0, term: 0, confState: makeConfState([1], []) },
      data: new Uint8Array(),
    },
    entries: [],
  });
  let done = 0;
  storage.write(write([entry(1, 1)], true), () => done++);
  s.run(100, () => {});
  storage.write(write([entry(2, 1)], false), () => done++);
  s.run(200, () => {});
  storage.write(write([entry(3, 1)], true), () => done++);
  storage.crash();
  s.run(1_000, () => {});
  assert.equal(done, 2, "the write in progress never completes");
  assert.deepEqual(
    storage.loadSync()?.entries.map((e) => e.index),
    [1],
  );
});

test("RaftChecker reports violations", () => {
  const checker = new RaftChecker(() => 0);
  checker.onSend(3, makeMessage({ type: MessageType.VoteResponse, from: 3, to: 1, term: 5 }));
  checker.onSend(3, makeMessage({ type: MessageType.VoteResponse, from: 3, to: 2, term: 5 }));
  assert.match(checker.violation ?? "", /voted for 1 and 2 in term 5/);

  const logs = new RaftChecker(() => 0);
  logs.onWrite(1, write([entry(1, 1)], true), 0);
  logs.onWrite(2, write([{ ...entry(1, 1), data: new Uint8Array([9]) }], true), 0);
  assert.match(logs.violation ?? "", /log matching/);

  const apply = new RaftChecker(() => 0);
  apply.onApply(1, entry(4, 2));
  apply.onApply(2, entry(4, 3));
  apply.onApply(3, { ...entry(4, 2), data: new Uint8Array([7]) });
  assert.match(apply.violation ?? "", /state-machine safety/);
});
