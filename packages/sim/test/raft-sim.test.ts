/**
 * Goal: the Raft simulator is trustworthy: the regression seeds pass, a seed replays exactly,
 * and the checkers catch a deliberately broken rule. Method: run the regression list; run one
 * seed twice and compare everything observable; run a fixed range of seeds with the driver
 * sending a Ready's messages before its write is durable and require a violation within it
 * (the figure quoted in the README); same for commitment by counting replicas of an earlier
 * term's entry, which the core's Figure 8 rule forbids.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { RAFT_REGRESSION_SEEDS, runRaftSim, type UnsafeMode } from "@hes/sim";

test("regression seeds pass", () => {
  for (const { seed, reason } of RAFT_REGRESSION_SEEDS) {
    const result = runRaftSim({ seed });
    assert.ok(result.ok, `regression seed=${seed} (${reason}): ${result.failure}`);
  }
});

test("a seed replays exactly", () => {
  const a = runRaftSim({ seed: 424242, trace: true });
  const b = runRaftSim({ seed: 424242, trace: true });
  assert.equal(a.ok, true, a.failure);
  assert.deepEqual(b, a);
  assert.ok(a.events > 1000, "the run did something");
  assert.ok((a.stats.commits ?? 0) > 10, "entries committed");
});

/** Runs seeds FIRST..FIRST+limit-1 with a bug switched on; returns the first that fails. */
function firstFailure(
  unsafe: UnsafeMode,
  first: number,
  limit: number,
): { seed: number; failure: string } | undefined {
  for (let seed = first; seed < first + limit; seed++) {
    const result = runRaftSim({ seed, unsafe });
    if (!result.ok) return { seed, failure: result.failure ?? "" };
  }
  return undefined;
}

test("the checkers catch sending before persisting", (t) => {
  const found = firstFailure("send-before-persist", 1, 100);
  assert.ok(found !== undefined, "no violation in seeds 1..100 with send-before-persist");
  t.diagnostic(`first violation at seed ${found.seed}: ${found.failure}`);
});

test("the checkers catch commitment by counting replicas of an earlier term", (t) => {
  const found = firstFailure("commit-previous-term", 1, 30);
  assert.ok(found !== undefined, "no violation in seeds 1..30 with commit-previous-term");
  t.diagnostic(`first violation at seed ${found.seed}: ${found.failure}`);
});
