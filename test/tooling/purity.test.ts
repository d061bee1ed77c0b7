/**
 * Goal: the purity check (STYLE §2) bites: each forbidden construct in deterministic code is
 * reported, and clean code passes. Method: check small sources with the script's own function.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkSource } from "../../scripts/check-purity.ts";

const bad: Record<string, string> = {
  "reads the wall clock": "export const now = () => Date.now();",
  "reads a monotonic clock": "export const now = () => performance.now();",
  "uses Math.random": "export const r = () => Math.random();",
  "sets a timer": "export function later(f: () => void) { setTimeout(f, 1); }",
  awaits: "export async function f(p: PromiseLike<number>) { return await p; }",
  "creates a promise": "export const p = () => Promise.resolve(1);",
  "imports node:fs": 'import { readFileSync } from "node:fs";',
  "imports a bare builtin": 'import * as net from "net";',
  "imports level": 'import { Level } from "level";',
  "touches process": "export const env = () => process.env.X;",
  "uses Buffer": "export const b = () => Buffer.alloc(1);",
};

for (const [what, source] of Object.entries(bad)) {
  test(`deterministic code that ${what} is reported`, () => {
    const violations = checkSource("fixture.ts", source, "deterministic");
    assert.ok(violations.length > 0, `no violation for: ${source}`);
  });
}

test("clean deterministic code passes, including names that merely look like globals", () => {
  const source = `
    import { assert, type Prng } from "@hes/base";
    import type { Level } from "level";
    interface Entry { term: number; Date: string }
    export function elect(prng: Prng, entry: Entry, ticks: { setTimeout: number }) {
      const timer = { random: 1 };
      assert(entry.term >= 0, "term");
      return prng.int(10) + ticks.setTimeout + timer.random + entry.Date.length;
    }
  `;
  assert.deepEqual(checkSource("clean.ts", source, "deterministic"), []);
});

test("platform-free code may use timers but not node modules or process", () => {
  assert.deepEqual(
    checkSource("a.ts", "export const t = () => setTimeout(() => {}, 1);", "platform-free"),
    [],
  );
  assert.ok(checkSource("b.ts", 'import "node:net";', "platform-free").length > 0);
  assert.ok(checkSource("c.ts", "export const p = () => process.pid;", "platform-free").length > 0);
});
