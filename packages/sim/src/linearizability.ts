/**
 * A linearizability checker for registers (one per key), after Wing & Gong with Lowe's
 * memoisation (WGL): search for an order of the operations that respects real time (an
 * operation that returned before another was invoked comes first) and register semantics
 * (a read returns the latest write). Operations whose outcome is unknown (a write that timed
 * out or whose member crashed) may take effect at any point after their invocation, or never.
 */

/** One operation on one key. `invoke`/`response` are positions in one global order. */
export interface RegisterOp {
  readonly id: number;
  readonly key: string;
  readonly kind: "write" | "read";
  /** The value written, or the value the read returned (undefined: key absent). */
  readonly value: number | undefined;
  readonly invoke: number;
  /** Infinity when the outcome is unknown (writes only: unknown reads are left out). */
  readonly response: number;
}

export interface LinearizabilityResult {
  readonly ok: boolean;
  /** The search hit its step budget: neither proved nor refuted. */
  readonly inconclusive: boolean;
  readonly key?: string;
  readonly detail?: string;
}

interface Event {
  readonly op: RegisterOp;
  readonly opIndex: number;
  readonly isCall: boolean;
  readonly at: number;
  match: Event | undefined;
  prev: Event | undefined;
  next: Event | undefined;
}

/** Checks every key's history; stops at the first key that is not linearizable. */
export function checkLinearizable(
  ops: readonly RegisterOp[],
  stepBudget = 2_000_000,
): LinearizabilityResult {
  const byKey = new Map<string, RegisterOp[]>();
  for (const op of ops) {
    const list = byKey.get(op.key);
    if (list === undefined) byKey.set(op.key, [op]);
    else list.push(op);
  }
  let inconclusive = false;
  for (const [key, list] of [...byKey].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const result = checkKey(list, stepBudget);
    if (result === "inconclusive") inconclusive = true;
    else if (result !== "ok") return { ok: false, inconclusive, key, detail: result };
  }
  return { ok: true, inconclusive };
}

function buildList(ops: readonly RegisterOp[]): Event {
  const events: Event[] = [];
  ops.forEach((op, opIndex) => {
    const call: Event = {
      op,
      opIndex,
      isCall: true,
      at: op.invoke,
      match: undefined,
      prev: undefined,
      next: undefined,
    };
    const ret: Event = {
      op,
      opIndex,
      isCall: false,
      at: op.response,
      match: call,
      prev: undefined,
      next: undefined,
    };
    call.match = ret;
    events.push(call, ret);
  });
  // Returns sort before calls at the same position only if positions tie (they never do
  // for known ops); unknown returns (Infinity) sort last, in op order.
  events.sort((a, b) => a.at - b.at || a.opIndex - b.opIndex || (a.isCall ? -1 : 1));
  const head: Event = {
    op: ops[0] as RegisterOp,
    opIndex: -1,
    isCall: true,
    at: -Infinity,
    match: undefined,
    prev: undefined,
    next: undefined,
  };
  let last = head;
  for (const e of events) {
    last.next = e;
    e.prev = last;
    last = e;
  }
  return head;
}

function lift(call: Event): void {
  const ret = call.match as Event;
  (call.prev as Event).next = call.next;
  if (call.next !== undefined) call.next.prev = call.prev;
  (ret.prev as Event).next = ret.next;
  if (ret.next !== undefined) ret.next.prev = ret.prev;
}

function unlift(call: Event): void {
  const ret = call.match as Event;
  (ret.prev as Event).next = ret;
  if (ret.next !== undefined) ret.next.prev = ret;
  (call.prev as Event).next = call;
  if (call.next !== undefined) call.next.prev = call;
}

/** "ok", "inconclusive", or a description of why the history is not linearizable. */
function checkKey(ops: readonly RegisterOp[], stepBudget: number): string {
  if (ops.length === 0) return "ok";
  const head = buildList(ops);
  const words = new Uint32Array(Math.ceil(ops.length / 32));
  const cache = new Set<string>();
  const stack: Array<{ call: Event; state: number | undefined }> = [];
  let state: number | undefined;
  let entry = head.next;
  let steps = 0;
  let deepest = 0;
  while (entry !== undefined) {
    if (++steps > stepBudget) return "inconclusive";
    const op = entry.op;
    if (entry.isCall) {
      const allowed = op.kind === "write" || op.value === state;
      if (allowed) {
        const next = op.kind === "write" ? op.value : state;
        words[entry.opIndex >> 5] =
          (words[entry.opIndex >> 5] as number) | (1 << (entry.opIndex & 31));
        const key = `${words.join(",")}|${next}`;
        if (!cache.has(key)) {
          cache.add(key);
          stack.push({ call: entry, state });
          deepest = Math.max(deepest, stack.length);
          state = next;
          lift(entry);
          entry = head.next;
          continue;
        }
        words[entry.opIndex >> 5] =
          (words[entry.opIndex >> 5] as number) & ~(1 << (entry.opIndex & 31));
      }
      entry = entry.next;
      continue;
    }
    // A return reached before its call could be placed. If it is an unknown write's, every
    // known operation is already placed: the rest may simply never have happened.
    if (op.response === Number.POSITIVE_INFINITY) return "ok";
    const top = stack.pop();
    if (top === undefined) {
      return (
        `no order explains op ${op.id} (${op.kind} ${String(op.value)}); ` +
        `at most ${deepest} of ${ops.length} operations could be ordered`
      );
    }
    state = top.state;
    const i = top.call.opIndex;
    words[i >> 5] = (words[i >> 5] as number) & ~(1 << (i & 31));
    unlift(top.call);
    entry = top.call.next;
  }
  return "ok";
}
