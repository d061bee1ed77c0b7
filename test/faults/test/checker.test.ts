/**
 * Goal: the checker accepts every history a correct register can produce and refuses forged
 * ones. Method: fast-check generates operations (reads, writes, compare-and-writes, some with
 * unknown outcomes) over a few blocks with random, overlapping time windows; a reference
 * register applies them at random points inside their windows to produce a real history. The
 * checker must accept it. Then one forgery (a stale read, a lost write, a phantom value, a
 * cas that claims a comparison that could not hold) must be refused.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { checkHistory } from "../lib/checker.js";
import type { HistoryOp } from "../lib/history.js";

interface Spec {
  kind: "read" | "write" | "cas";
  block: number;
  invokeMs: number;
  durationMs: number;
  /** Where inside its window the op takes effect (0..1). */
  at: number;
  unknown: boolean;
  /** An unknown write/cas: did it happen? */
  happened: boolean;
  /** cas: compare against the current value (true) or a value it surely is not (false). */
  casHit: boolean;
}

const specArb = fc.record({
  kind: fc.constantFrom("read", "write", "write", "cas") as fc.Arbitrary<Spec["kind"]>,
  block: fc.integer({ min: 0, max: 2 }),
  invokeMs: fc.integer({ min: 0, max: 200 }),
  durationMs: fc.integer({ min: 1, max: 40 }),
  at: fc.double({ min: 0, max: 1, noNaN: true }),
  unknown: fc.boolean(),
  happened: fc.boolean(),
  casHit: fc.boolean(),
});

/** Runs the specs against a real register at their effect points; returns the history. */
function realHistory(specs: readonly Spec[]): HistoryOp[] {
  const ops = specs.map((s, id) => ({ s, id, effectMs: s.invokeMs + s.at * s.durationMs }));
  const state = new Map<number, string | null>();
  const out: HistoryOp[] = [];
  for (const { s, id } of [...ops].sort((a, b) => a.effectMs - b.effectMs)) {
    const current = state.get(s.block) ?? null;
    const base = {
      id,
      process: id,
      kind: s.kind,
      block: s.block,
      invokeMs: s.invokeMs,
    };
    const unknown = s.unknown && s.kind !== "read";
    const done = unknown
      ? { outcome: "unknown" as const }
      : { outcome: "ok" as const, completeMs: s.invokeMs + s.durationMs };
    if (s.kind === "read") {
      out.push({ ...base, ...done, readValue: current });
      continue;
    }
    const value = `w:${id}`;
    const applies = !unknown || s.happened;
    if (s.kind === "write") {
      if (applies) state.set(s.block, value);
      out.push({ ...base, ...done, value });
      continue;
    }
    const expected = s.casHit ? current : `never:${id}`;
    const matched = expected === current;
    if (applies && matched) state.set(s.block, value);
    out.push({ ...base, ...done, value, expected, casMatched: matched });
  }
  return out.sort((a, b) => a.id - b.id);
}

test("every history a real register produces is accepted", () => {
  fc.assert(
    fc.property(fc.array(specArb, { minLength: 1, maxLength: 30 }), (specs) => {
      const result = checkHistory(realHistory(specs));
      assert.deepEqual(result.violations, []);
      assert.deepEqual(result.inconclusiveBlocks, []);
    }),
    { numRuns: 300 },
  );
});

function op(partial: Partial<HistoryOp> & Pick<HistoryOp, "id" | "kind" | "invokeMs">): HistoryOp {
  return { process: partial.id, block: 0, outcome: "ok", ...partial };
}

test("a stale read, a lost write, a phantom and a forged cas are refused", () => {
  const w1 = op({ id: 0, kind: "write", value: "a", invokeMs: 0, completeMs: 1 });
  const w2 = op({ id: 1, kind: "write", value: "b", invokeMs: 2, completeMs: 3 });
  const stale = op({ id: 2, kind: "read", readValue: "a", invokeMs: 4, completeMs: 5 });
  const staleResult = checkHistory([w1, w2, stale]);
  assert.deepEqual(staleResult.violations.map((v) => v.kind).sort(), [
    "not-linearizable",
    "stale-read",
  ]);

  const lost = op({
    id: 2,
    kind: "read",
    readValue: "a",
    invokeMs: 9,
    completeMs: 10,
    final: true,
  });
  assert.ok(checkHistory([w1, w2, lost]).violations.some((v) => v.kind === "lost-write"));
  const gone = op({
    id: 2,
    kind: "read",
    readValue: null,
    invokeMs: 9,
    completeMs: 10,
    final: true,
  });
  assert.ok(checkHistory([w1, w2, gone]).violations.some((v) => v.kind === "lost-write"));

  const phantom = op({ id: 2, kind: "read", readValue: "z", invokeMs: 4, completeMs: 5 });
  assert.ok(checkHistory([w1, phantom]).violations.some((v) => v.kind === "corrupt"));

  const cas = op({
    ...{ id: 2, kind: "cas", value: "c", expected: "a", casMatched: true },
    ...{ invokeMs: 4, completeMs: 5 },
  });
  assert.equal(checkHistory([w1, w2, cas]).ok, false, "block held b, not a");

  // The same shapes with overlapping windows are fine: the read may precede the write.
  const overlapping = op({ id: 2, kind: "read", readValue: "a", invokeMs: 2.5, completeMs: 5 });
  assert.equal(checkHistory([w1, w2, overlapping]).ok, true);
  // And an unknown write may land any time after its invocation, or never.
  const unknown = op({ id: 1, kind: "write", value: "b", invokeMs: 2, outcome: "unknown" });
  const late = op({ id: 3, kind: "read", readValue: "b", invokeMs: 50, completeMs: 51 });
  assert.equal(checkHistory([w1, unknown, stale, late]).ok, true);
});

test("a forged final read of zeros after an acknowledged write is refused", () => {
  fc.assert(
    fc.property(fc.array(specArb, { minLength: 2, maxLength: 25 }), fc.nat(), (specs, pick) => {
      const history = realHistory(specs.map((s) => ({ ...s, unknown: false })));
      // Forge: after everything, a read of a block that an acknowledged write (or matched
      // cas) changed, returning zeros: the write was lost.
      const changed = history.filter(
        (o) => o.outcome === "ok" && (o.kind === "write" || o.casMatched === true),
      );
      fc.pre(changed.length > 0);
      const target = changed[pick % changed.length] as HistoryOp;
      const endMs = Math.max(...history.map((o) => o.completeMs ?? 0)) + 1;
      const forged = op({
        ...{ id: history.length, kind: "read", block: target.block, readValue: null },
        ...{ invokeMs: endMs, completeMs: endMs + 1, final: true },
      });
      const result = checkHistory([...history, forged]);
      assert.equal(result.ok, false);
      assert.ok(result.violations.some((v) => v.kind === "lost-write"));
    }),
    { numRuns: 200 },
  );
});
