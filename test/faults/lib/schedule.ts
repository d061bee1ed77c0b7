/**
 * The seeded schedule: which fault each round injects, how long it is held and how long the
 * system then runs calm. Everything random in a run comes from the seed (the schedule here, and
 * the Prng forks handed to faults and workloads), so `pnpm faults --seed N` replays it; what
 * cannot be replayed exactly (thread timing, which node is leader) is logged as it happens.
 */
import { Prng } from "@hes/base";
import type { Fault } from "./faults.js";

export interface Round {
  readonly index: number;
  readonly fault: string;
  readonly holdMs: number;
  readonly calmMs: number;
}

export interface ScheduleOptions {
  readonly rounds: number;
  readonly faults: readonly Fault[];
  readonly holdMs: { readonly min: number; readonly max: number };
  readonly calmMs: { readonly min: number; readonly max: number };
}

export function planSchedule(seed: number, options: ScheduleOptions): Round[] {
  if (!Number.isInteger(options.rounds) || options.rounds < 1) {
    throw new RangeError(`rounds must be a positive integer, got ${options.rounds}`);
  }
  if (options.faults.length === 0) throw new RangeError("no faults to schedule");
  const prng = new Prng(seed);
  return Array.from({ length: options.rounds }, (_, index) => ({
    index,
    fault: prng.pick(options.faults).name,
    holdMs: prng.between(options.holdMs.min, options.holdMs.max),
    calmMs: prng.between(options.calmMs.min, options.calmMs.max),
  }));
}

/** The schedule as the lines printed before a run starts. */
export function formatSchedule(seed: number, rounds: readonly Round[]): string[] {
  return [
    `seed ${seed}: ${rounds.length} rounds (replay: pnpm faults --seed ${seed} …same flags)`,
    ...rounds.map(
      (r) =>
        `  round ${String(r.index).padStart(3)}: ${r.fault.padEnd(28)} hold ${r.holdMs} ms, ` +
        `calm ${r.calmMs} ms`,
    ),
  ];
}
