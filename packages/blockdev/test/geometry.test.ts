/**
 * Goal: a takeover's reconcile groups changed ranges into spans without losing or adding a
 * block to compare. Method: compareSpans on hand-made cases (gaps, a range crossing the span
 * limit, one longer than a span) and on random ranges, checked against a per-block model.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Prng } from "@hes/base";
import { compareSpans, mergeRanges } from "../src/geometry.js";

const B = 4096;

function marked(spans: ReturnType<typeof compareSpans>): number[] {
  const blocks: number[] = [];
  for (const span of spans) {
    span.mask.forEach((m, i) => {
      if (m === 1) blocks.push(span.offsetBytes / B + i);
    });
  }
  return blocks;
}

test("small ranges with gaps share one span; only their blocks are marked", () => {
  const spans = compareSpans(
    [
      { offsetBytes: 0, lengthBytes: B },
      { offsetBytes: 10 * B, lengthBytes: 2 * B },
    ],
    B,
    16 * B,
  );
  assert.equal(spans.length, 1);
  assert.deepEqual(
    { offsetBytes: spans[0]?.offsetBytes, lengthBytes: spans[0]?.lengthBytes },
    {
      offsetBytes: 0,
      lengthBytes: 12 * B,
    },
  );
  assert.deepEqual(marked(spans), [0, 10, 11]);
});

test("a range longer than a span is split; no span exceeds the limit", () => {
  const spans = compareSpans([{ offsetBytes: 3 * B, lengthBytes: 40 * B }], B, 16 * B);
  assert.deepEqual(
    spans.map((s) => [s.offsetBytes / B, s.lengthBytes / B]),
    [
      [3, 16],
      [19, 16],
      [35, 8],
    ],
  );
  assert.equal(marked(spans).length, 40);
});

test("random ranges: every changed block is marked exactly once, spans ordered and bounded", () => {
  const prng = new Prng(20261122);
  for (let round = 0; round < 200; round++) {
    const ranges = Array.from({ length: prng.between(0, 60) }, () => ({
      offsetBytes: prng.between(0, 2000) * B,
      lengthBytes: prng.between(1, 40) * B,
    }));
    const limit = prng.between(1, 64) * B;
    const spans = compareSpans(mergeRanges(ranges), B, limit);
    const expected = new Set<number>();
    for (const r of ranges) {
      for (let b = r.offsetBytes / B; b < (r.offsetBytes + r.lengthBytes) / B; b++) expected.add(b);
    }
    const got = marked(spans);
    assert.deepEqual(
      got,
      [...expected].sort((a, b) => a - b),
      `round ${round}`,
    );
    for (let i = 0; i < spans.length; i++) {
      const s = spans[i] as (typeof spans)[number];
      assert.ok(s.lengthBytes <= limit && s.lengthBytes > 0, `round ${round} span ${i} size`);
      const prev = spans[i - 1];
      if (prev !== undefined) assert.ok(prev.offsetBytes + prev.lengthBytes <= s.offsetBytes);
    }
  }
});
