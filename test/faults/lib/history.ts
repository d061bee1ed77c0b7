/**
 * The recorded history of a workload: one entry per operation with its monotonic invoke and
 * completion times and its outcome. "ok" is a definite result; "fail" is an error reply (for a
 * write the checker still lets it take effect or not, since a failed block write may have
 * landed on some copies); "unknown" is a timeout or a lost connection (may or may not take
 * effect, at any time after its invocation).
 */
import { HISTORY_OPS_MAX } from "./limits.js";

export type Outcome = "ok" | "fail" | "unknown";

export interface HistoryOp {
  readonly id: number;
  /** Which client connection issued it (operations of one connection never overlap). */
  readonly process: number;
  readonly kind: "read" | "write" | "cas";
  readonly block: number;
  /** write/cas: the value written (cas: if the comparison held). */
  readonly value?: string;
  /** cas: the value the block must hold; null = never written (zeros). */
  readonly expected?: string | null;
  readonly invokeMs: number;
  completeMs?: number;
  outcome?: Outcome;
  /** read ok: the value read, null = zeros. cas ok: whether the comparison held. */
  readValue?: string | null;
  casMatched?: boolean;
  /** read ok but the data was not a valid block of this history (see blocks.ts). */
  corrupt?: string;
  error?: string;
  /** A read taken after every fault healed and every writer stopped. */
  final?: boolean;
}

export class History {
  readonly ops: HistoryOp[] = [];
  private readonly origin = performance.now();

  /** Milliseconds since the history began (monotonic). */
  now(): number {
    return performance.now() - this.origin;
  }

  get full(): boolean {
    return this.ops.length >= HISTORY_OPS_MAX;
  }

  invoke(op: Omit<HistoryOp, "id" | "invokeMs">): HistoryOp {
    if (this.full) throw new RangeError(`history is full (${HISTORY_OPS_MAX} operations)`);
    const entry: HistoryOp = { ...op, id: this.ops.length, invokeMs: this.now() };
    this.ops.push(entry);
    return entry;
  }

  complete(op: HistoryOp, outcome: Outcome, result: Partial<HistoryOp> = {}): void {
    if (op.outcome !== undefined) throw new Error(`op ${op.id} completed twice`);
    Object.assign(op, result);
    op.outcome = outcome;
    if (outcome !== "unknown") op.completeMs = this.now();
  }

  /** Ops still without an outcome become unknown (the run ended under them). */
  closeOpen(): void {
    for (const op of this.ops) if (op.outcome === undefined) op.outcome = "unknown";
  }

  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const op of this.ops) {
      const key = `${op.kind}:${op.outcome ?? "open"}`;
      out[key] = (out[key] ?? 0) + 1;
    }
    return out;
  }
}
