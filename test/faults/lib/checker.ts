/**
 * The history checker: per block (blocks are independent registers, so a history is
 * linearizable iff each block's is), a Wing & Gong search with memoisation (the idea of
 * packages/sim's checker, written here for a register with compare-and-write and for
 * outcomes that may or may not have happened). Also reported on their own, because they name
 * the failure better than "not linearizable": corrupt data returned, and lost acknowledged
 * writes (a read after every writer stopped returns something older than an acknowledged write).
 *
 * Semantics: a write or cas whose outcome is "unknown" or "fail" may take effect at any point
 * after its invocation, or never. Reads that failed or timed out carry no information and are
 * left out. Zeros (never written) are the value null.
 */
import type { HistoryOp } from "./history.js";
import { CHECKER_STEPS_PER_BLOCK_MAX } from "./limits.js";

export type ViolationKind = "corrupt" | "lost-write" | "stale-read" | "not-linearizable";

export interface Violation {
  readonly kind: ViolationKind;
  readonly block: number;
  readonly opIds: readonly number[];
  readonly detail: string;
}

export interface CheckResult {
  readonly ok: boolean;
  readonly violations: readonly Violation[];
  readonly blocksChecked: number;
  /** Blocks whose search hit the step budget: neither proved nor refuted. */
  readonly inconclusiveBlocks: readonly number[];
}

/** One operation as the search sees it. */
interface SearchOp {
  readonly op: HistoryOp;
  readonly invokeMs: number;
  /** Infinity when the op may or may not have taken effect. */
  readonly completeMs: number;
}

export function checkHistory(
  ops: readonly HistoryOp[],
  stepsPerBlockMax = CHECKER_STEPS_PER_BLOCK_MAX,
): CheckResult {
  const violations: Violation[] = [];
  const byBlock = new Map<number, HistoryOp[]>();
  for (const op of ops) {
    const list = byBlock.get(op.block);
    if (list === undefined) byBlock.set(op.block, [op]);
    else list.push(op);
  }
  const inconclusiveBlocks: number[] = [];
  for (const [block, list] of [...byBlock].sort(([a], [b]) => a - b)) {
    for (const op of list) {
      if (op.kind === "read" && op.outcome === "ok" && op.corrupt !== undefined) {
        violations.push({ kind: "corrupt", block, opIds: [op.id], detail: op.corrupt });
      }
    }
    violations.push(...collapse(staleReads(block, list)));
    const result = linearizable(toSearchOps(list), stepsPerBlockMax);
    if (result === "inconclusive") inconclusiveBlocks.push(block);
    else if (result !== "ok") {
      violations.push({ kind: "not-linearizable", block, opIds: [], detail: result });
    }
  }
  return {
    ok: violations.length === 0,
    violations,
    blocksChecked: byBlock.size,
    inconclusiveBlocks,
  };
}

/** One violation per kind per block, saying how many more there were (reports stay readable). */
function collapse(found: readonly Violation[]): Violation[] {
  const first = new Map<ViolationKind, Violation & { more: number }>();
  for (const v of found) {
    const seen = first.get(v.kind);
    if (seen === undefined) first.set(v.kind, { ...v, more: 0 });
    else seen.more++;
  }
  return [...first.values()].map(({ more, ...v }) =>
    more === 0 ? v : { ...v, detail: `${v.detail} (and ${more} more like it on this block)` },
  );
}

function toSearchOps(list: readonly HistoryOp[]): SearchOp[] {
  const out: SearchOp[] = [];
  for (const op of list) {
    if (op.kind === "read") {
      if (op.outcome !== "ok" || op.corrupt !== undefined) continue;
      out.push({ op, invokeMs: op.invokeMs, completeMs: op.completeMs as number });
    } else {
      const known = op.outcome === "ok";
      out.push({
        op,
        invokeMs: op.invokeMs,
        completeMs: known ? (op.completeMs as number) : Number.POSITIVE_INFINITY,
      });
    }
  }
  return out.sort((a, b) => a.invokeMs - b.invokeMs);
}

/**
 * Reads that return a value already overwritten, for certain: the write they saw completed
 * before another acknowledged write (or, for zeros, any acknowledged write) began, and that
 * one completed before the read began. After the writers stopped, that is a lost write.
 */
function staleReads(block: number, list: readonly HistoryOp[]): Violation[] {
  const acked = list.filter((op) => op.outcome === "ok" && effective(op));
  const writers = new Map<string, HistoryOp>();
  for (const op of list) if (op.value !== undefined) writers.set(op.value, op);
  const out: Violation[] = [];
  for (const read of list) {
    if (read.kind !== "read" || read.outcome !== "ok" || read.corrupt !== undefined) continue;
    const seen = read.readValue === null ? undefined : writers.get(read.readValue as string);
    if (read.readValue !== null && seen === undefined) {
      out.push({
        kind: "corrupt",
        block,
        opIds: [read.id],
        detail: `read ${read.readValue}, which no operation in this history wrote`,
      });
      continue;
    }
    // A write without a definite acknowledgement may have landed at any time: no claim.
    if (seen !== undefined && seen.outcome !== "ok") continue;
    const seenDoneMs = seen === undefined ? Number.NEGATIVE_INFINITY : seen.completeMs;
    const newer = acked.find(
      (w) =>
        w !== seen &&
        (seenDoneMs as number) < w.invokeMs &&
        (w.completeMs as number) < read.invokeMs,
    );
    if (newer === undefined) continue;
    out.push({
      kind: read.final === true ? "lost-write" : "stale-read",
      block,
      opIds: [read.id, newer.id, ...(seen === undefined ? [] : [seen.id])],
      detail:
        `read ${read.readValue ?? "zeros"} after ${newer.value} was acknowledged ` +
        `(op ${newer.id}, done at ${(newer.completeMs as number).toFixed(1)} ms)`,
    });
  }
  return out;
}

/** A write, or a cas that succeeded: an op that certainly changed the block when acked. */
function effective(op: HistoryOp): boolean {
  return op.kind === "write" || (op.kind === "cas" && op.casMatched === true);
}

type State = string | null;

/** Applies `op` to the register; undefined if the op's result is impossible in `state`. */
function step(op: HistoryOp, state: State, known: boolean): State | undefined {
  if (op.kind === "write") return op.value as string;
  if (op.kind === "read") return op.readValue === state ? state : undefined;
  const matches = state === (op.expected ?? null);
  // An unknown cas that did nothing is the same as one that never happened.
  if (!known) return matches ? (op.value as string) : undefined;
  if (op.casMatched === true) return matches ? (op.value as string) : undefined;
  return matches ? undefined : state;
}

/**
 * Depth-first search for a linearization. At each step the candidates are the ops not yet
 * placed whose invocation is no later than the earliest completion among the known ops not yet
 * placed (anything invoked after that completion must come after it). Success when every
 * known op is placed: unknown ones may never have happened.
 */
function linearizable(ops: readonly SearchOp[], stepsMax: number): string {
  const n = ops.length;
  const placed = new Uint8Array(n);
  const seen = new Set<string>();
  const path: Array<{ index: number; before: State }> = [];
  let state: State = null;
  let steps = 0;
  let deepest = 0;
  let knownLeft = ops.filter((o) => o.completeMs !== Number.POSITIVE_INFINITY).length;
  let resumeFrom = 0;
  for (;;) {
    if (knownLeft === 0) return "ok";
    if (++steps > stepsMax) return "inconclusive";
    let horizonMs = Number.POSITIVE_INFINITY;
    for (let i = 0; i < n; i++) {
      if (placed[i] === 0) horizonMs = Math.min(horizonMs, (ops[i] as SearchOp).completeMs);
    }
    let advanced = false;
    for (let i = resumeFrom; i < n; i++) {
      const candidate = ops[i] as SearchOp;
      if (candidate.invokeMs > horizonMs) break; // sorted by invocation
      if (placed[i] === 1) continue;
      const known = candidate.completeMs !== Number.POSITIVE_INFINITY;
      const next = step(candidate.op, state, known);
      if (next === undefined) continue;
      placed[i] = 1;
      const key = `${placed.join("")}|${next}`;
      if (seen.has(key)) {
        placed[i] = 0;
        continue;
      }
      seen.add(key);
      path.push({ index: i, before: state });
      deepest = Math.max(deepest, path.length);
      state = next;
      if (known) knownLeft--;
      resumeFrom = 0;
      advanced = true;
      break;
    }
    if (advanced) continue;
    const back = path.pop();
    if (back === undefined) {
      return `no order explains the ${n} operations (at most ${deepest} could be ordered)`;
    }
    placed[back.index] = 0;
    state = back.before;
    if ((ops[back.index] as SearchOp).completeMs !== Number.POSITIVE_INFINITY) knownLeft++;
    resumeFrom = back.index + 1;
  }
}
