/**
 * Shared body of the fresh-seed shards: each shard runs its share of random seeds (new ones
 * every run, so CI keeps exploring) and fails with the replay command of the first seed that
 * breaks an invariant. Seeds per run: HES_SIM_SEEDS (default 1,000 in total), or 10,000 with
 * HES_SOAK=1. The shards are separate test files so the runner spreads them over the cores.
 */
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { test } from "node:test";
import { runRaftSim } from "@hes/sim";

export const SHARDS = 4;

export function freshSeedShard(shard: number): void {
  const total = Number(
    process.env.HES_SIM_SEEDS ?? (process.env.HES_SOAK === "1" ? 10_000 : 1_000),
  );
  const count = Math.ceil(total / SHARDS);
  const base = randomInt(0, 2 ** 47 - count);
  test(`raft simulator: ${count} fresh seeds from ${base} (shard ${shard + 1}/${SHARDS})`, (t) => {
    let inconclusive = 0;
    let events = 0;
    for (let i = 0; i < count; i++) {
      const seed = base + i;
      const result = runRaftSim({ seed });
      events += result.events;
      if (result.inconclusive) inconclusive++;
      assert.ok(
        result.ok,
        `seed=${seed}: ${result.failure}\n  replay: pnpm sim --seed ${seed} --trace\n` +
          `  params ${result.params}`,
      );
    }
    t.diagnostic(
      `${count} seeds, ${events} events, ${inconclusive} linearizability checks inconclusive`,
    );
  });
}
