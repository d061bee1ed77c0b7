/**
 * Goal: prove that no acknowledged write is ever lost and no block ever holds a mix or garbage,
 * across real process deaths (kill -9) at random moments, including during open and replay.
 * Method: a child process (crash-child.ts) writes and discards random blocks of a store on a real
 * file, reporting each issued and each acknowledged operation over a pipe; the parent kills it
 * with SIGKILL after a random delay, then opens the store itself and checks every block of every
 * chunk byte for byte: it must hold its last acknowledged content or that of the one operation
 * in flight on it, and an operation in flight must be all there or all absent. The store carries
 * over from round to round (the next child opens what the last one left).
 * Rounds: 50 (HES_SOAK=1: 500; HES_CRASH_ROUNDS=N overrides). The seed is printed on failure.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { Prng } from "@hes/base";
import { blockContent, CRASH_STORE, openCrashStore } from "./crash-child.js";

const ROUNDS = Number(process.env.HES_CRASH_ROUNDS ?? (process.env.HES_SOAK === "1" ? 500 : 50));
const SEED = Number(process.env.HES_CRASH_SEED ?? Date.now() % 1_000_000);
const CHILD = new URL("./crash-child.ts", import.meta.url).pathname;

interface Op {
  readonly seq: number;
  readonly chunk: number;
  readonly first: number;
  readonly count: number;
  readonly kind: "W" | "D";
}

/** What each block may hold: its settled seq (0 = zeros) and the op in flight on it. */
class Model {
  readonly settled = Array.from({ length: CRASH_STORE.chunks }, () =>
    new Array<number>(CRASH_STORE.blocksPerChunk).fill(0),
  );
  readonly kinds = new Map<number, "W" | "D">([[0, "D"]]);
  readonly inflight = new Map<number, Op>();
  /** Per block, the ops issued on it (newest last, bounded): printed when a check fails. */
  readonly history = new Map<string, string[]>();
  round = 0;
  acks = 0;

  issue(op: Op): void {
    this.kinds.set(op.seq, op.kind);
    for (let b = op.first; b < op.first + op.count; b++) {
      const key = `${op.chunk}/${b}`;
      const list = this.history.get(key) ?? [];
      list.push(`${op.kind}${op.seq}@r${this.round}`);
      if (list.length > 8) list.shift();
      this.history.set(key, list);
    }
    this.inflight.set(op.seq, op);
  }

  ack(seq: number): void {
    const op = this.inflight.get(seq);
    assert.ok(op !== undefined, `ack of unknown seq ${seq}`);
    this.inflight.delete(seq);
    this.acks++;
    for (let b = op.first; b < op.first + op.count; b++) {
      (this.settled[op.chunk] as number[])[b] = seq;
    }
  }
}

/** What a block holds, for failure messages: zeros, a write's content, or garbage. */
function describe(got: Uint8Array, chunk: number, block: number): string {
  if (got.every((byte) => byte === 0)) return "zeros";
  const view = new DataView(got.buffer, got.byteOffset, got.byteLength);
  const seq = view.getUint32(0, true);
  const at = `${view.getUint32(4, true)}/${view.getUint32(8, true)}`;
  const exact = Buffer.from(got).equals(blockContent(seq, chunk, block));
  return `${exact ? "exact" : "garbage claiming"} seq ${seq} of block ${at}`;
}

function holds(got: Uint8Array, seq: number, kind: "W" | "D", chunk: number, block: number) {
  if (kind === "D") return got.every((byte) => byte === 0);
  return Buffer.from(got).equals(blockContent(seq, chunk, block));
}

async function runChild(dir: string, seed: number, firstSeq: number, model: Model, prng: Prng) {
  const child = spawn(
    process.execPath,
    ["--conditions=hes-source", "--import", "tsx", CHILD, dir, String(seed), String(firstSeq)],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  let lastSeq = firstSeq - 1;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const lines = createInterface({ input: child.stdout });
  const linesClosed = new Promise<void>((resolve) => lines.once("close", () => resolve()));
  let ready: () => void = () => {};
  const isReady = new Promise<void>((resolve) => {
    ready = resolve;
  });
  lines.on("line", (line) => {
    const [tag, ...rest] = line.split(" ");
    if (tag === "READY") ready();
    else if (tag === "I") {
      const [seq, chunk, first, count] = rest.slice(0, 4).map(Number) as number[];
      model.issue({
        seq: seq as number,
        chunk: chunk as number,
        first: first as number,
        count: count as number,
        kind: rest[4] as "W" | "D",
      });
      lastSeq = Math.max(lastSeq, seq as number);
    } else if (tag === "A") model.ack(Number(rest[0]));
  });
  // Most rounds kill during writing; some kill during open/replay.
  if (prng.chance(0.15)) {
    await new Promise((resolve) => setTimeout(resolve, prng.between(0, 400)));
  } else {
    await Promise.race([isReady, exited]);
    await new Promise((resolve) => setTimeout(resolve, prng.between(20, 500)));
  }
  child.kill("SIGKILL");
  await exited;
  await linesClosed;
  assert.ok(child.signalCode === "SIGKILL", `child exited by itself: ${stderr}`);
  return lastSeq;
}

/** Checks every block against the model, then settles what was found. */
async function verify(dir: string, model: Model): Promise<void> {
  const store = await openCrashStore(dir);
  try {
    for (let chunk = 0; chunk < CRASH_STORE.chunks; chunk++) {
      const all = await store.read(
        { volumeId: 1, chunkIndex: chunk },
        0,
        CRASH_STORE.blocksPerChunk * 4096,
      );
      const settled = model.settled[chunk] as number[];
      for (let block = 0; block < CRASH_STORE.blocksPerChunk; block++) {
        const got = all.subarray(block * 4096, (block + 1) * 4096);
        const old = settled[block] as number;
        if (holds(got, old, model.kinds.get(old) ?? "D", chunk, block)) continue;
        const candidate = [...model.inflight.values()].find(
          (op) => op.chunk === chunk && block >= op.first && block < op.first + op.count,
        );
        assert.ok(
          candidate !== undefined && holds(got, candidate.seq, candidate.kind, chunk, block),
          `chunk ${chunk} block ${block}: neither seq ${old} nor the in-flight op; it holds ` +
            `${describe(got, chunk, block)}; ops on it: ` +
            `${(model.history.get(`${chunk}/${block}`) ?? []).join(" ")} (round ${model.round})`,
        );
      }
    }
    // Each in-flight op is all there or all absent; what is there is now settled.
    for (const op of model.inflight.values()) {
      const data = await store.read(
        { volumeId: 1, chunkIndex: op.chunk },
        op.first * 4096,
        op.count * 4096,
      );
      const present = Array.from({ length: op.count }, (_, i) =>
        holds(data.subarray(i * 4096, (i + 1) * 4096), op.seq, op.kind, op.chunk, op.first + i),
      );
      const olds = Array.from({ length: op.count }, (_, i) => {
        const old = model.settled[op.chunk]?.[op.first + i] as number;
        return holds(
          data.subarray(i * 4096, (i + 1) * 4096),
          old,
          model.kinds.get(old) ?? "D",
          op.chunk,
          op.first + i,
        );
      });
      const whole = present.every(Boolean);
      assert.ok(whole || olds.every(Boolean), `op ${op.seq} is partly there: ${present}`);
      if (whole) model.ack(op.seq);
    }
    model.inflight.clear();
  } finally {
    await store.close();
  }
}

test(`kill -9 at random moments loses no acknowledged write (${ROUNDS} rounds)`, async () => {
  const dir = mkdtempSync(join(tmpdir(), "hes-crash-"));
  const prng = new Prng(SEED);
  let nextSeq = 1;
  const model = new Model();
  try {
    for (let round = 0; round < ROUNDS; round++) {
      try {
        model.round = round;
        nextSeq = (await runChild(dir, prng.int(1_000_000), nextSeq, model, prng)) + 1;
        await verify(dir, model);
      } catch (error) {
        throw new Error(`crash test seed ${SEED} round ${round}: ${String(error)}`, {
          cause: error,
        });
      }
    }
    assert.ok(model.acks > ROUNDS * 20, `only ${model.acks} operations acknowledged`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
