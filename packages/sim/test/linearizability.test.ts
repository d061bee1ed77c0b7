/**
 * Goal: the linearizability checker accepts exactly the linearizable register histories.
 * Method: hand-written histories with known answers (stale read, lost write, concurrent
 * overlap, unknown outcomes), then a property: histories generated from a real sequential
 * register with random overlapping intervals are always accepted, and the same histories
 * with one read's value changed to a value never written are always refused.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkLinearizable, type RegisterOp } from "@hes/sim";
import fc from "fast-check";

let id = 0;
const w = (value: number, invoke: number, response: number, key = "k"): RegisterOp => ({
  id: ++id,
  key,
  kind: "write",
  value,
  invoke,
  response,
});
const r = (value: number | undefined, invoke: number, response: number, key = "k"): RegisterOp => ({
  id: ++id,
  key,
  kind: "read",
  value,
  invoke,
  response,
});
const INF = Number.POSITIVE_INFINITY;

test("sequential histories", () => {
  assert.ok(checkLinearizable([w(1, 1, 2), r(1, 3, 4), w(2, 5, 6), r(2, 7, 8)]).ok);
  assert.ok(checkLinearizable([r(undefined, 1, 2), w(1, 3, 4)]).ok);
  const stale = checkLinearizable([w(1, 1, 2), w(2, 3, 4), r(1, 5, 6)]);
  assert.equal(stale.ok, false, "a read of an overwritten value after the overwrite completed");
  assert.equal(stale.key, "k");
  assert.equal(checkLinearizable([w(1, 1, 2), r(undefined, 3, 4)]).ok, false, "lost write");
});

test("concurrent operations may take effect in either order", () => {
  assert.ok(checkLinearizable([w(1, 1, 4), r(1, 2, 3)]).ok);
  assert.ok(checkLinearizable([w(1, 1, 4), r(undefined, 2, 3)]).ok);
  assert.ok(checkLinearizable([w(1, 1, 5), w(2, 2, 6), r(2, 7, 8), r(2, 9, 10)]).ok);
  assert.equal(checkLinearizable([w(1, 1, 5), w(2, 2, 6), r(2, 7, 8), r(1, 9, 10)]).ok, false);
});

test("writes with an unknown outcome may apply late or never", () => {
  assert.ok(checkLinearizable([w(1, 1, INF), r(undefined, 2, 3), r(1, 4, 5)]).ok);
  assert.ok(checkLinearizable([w(1, 1, INF), r(undefined, 2, 3)]).ok);
  assert.equal(checkLinearizable([w(1, 3, INF), r(1, 1, 2)]).ok, false, "not before its call");
  assert.equal(
    checkLinearizable([w(1, 1, INF), r(1, 2, 3), r(undefined, 4, 5)]).ok,
    false,
    "once seen, it stays",
  );
});

test("keys are independent", () => {
  assert.ok(checkLinearizable([w(1, 1, 2, "a"), r(undefined, 3, 4, "b"), r(1, 5, 6, "a")]).ok);
});

test("property: histories of a real register are accepted, a forged read is refused", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ write: fc.boolean(), before: fc.nat(5), after: fc.nat(5) }), {
        minLength: 1,
        maxLength: 25,
      }),
      (steps) => {
        // Execute sequentially at positions 10, 20, …; widen each interval randomly while
        // keeping the linearization point inside it.
        let value: number | undefined;
        const ops: RegisterOp[] = steps.map((step, i) => {
          const point = (i + 1) * 10;
          const invoke = point - step.before;
          const response = point + step.after;
          if (step.write) {
            value = i + 1;
            return w(value, invoke, response);
          }
          return r(value, invoke, response);
        });
        assert.ok(checkLinearizable(ops).ok);
        const readAt = ops.findIndex((op) => op.kind === "read");
        if (readAt >= 0) {
          const forged = ops.map((op, i) => (i === readAt ? { ...op, value: 9999 } : op));
          assert.equal(checkLinearizable(forged).ok, false);
        }
      },
    ),
    { numRuns: 300 },
  );
});
