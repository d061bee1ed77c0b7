/**
 * The simulator's command line.
 *
 *   pnpm sim                      one random seed; prints seed=N and the outcome
 *   pnpm sim --seed N             replays seed N exactly (add --trace for the fault trace)
 *   pnpm sim --seeds N            N random seeds (stops at the first failure)
 *   pnpm sim --members 5          forces the cluster size
 *   pnpm sim --unsafe send-before-persist|commit-previous-term
 *                                 switches a deliberate bug on (proves the checkers bite)
 *   pnpm sim --end-to-end-only    checks end-to-end properties only (not the commit rule)
 *   pnpm sim --regressions        replays the regression list
 */
import { randomInt } from "node:crypto";
import { runRaftSim, type UnsafeMode } from "./raft/raft-sim.js";
import { RAFT_REGRESSION_SEEDS } from "./raft/regressions.js";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}
const flag = (name: string): boolean => process.argv.includes(`--${name}`);
const print = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

const unsafe = arg("unsafe") as UnsafeMode | undefined;
if (unsafe !== undefined && unsafe !== "send-before-persist" && unsafe !== "commit-previous-term") {
  print(`unknown --unsafe ${unsafe}`);
  process.exit(2);
}
const members = arg("members") === undefined ? undefined : Number(arg("members"));
const seeds: number[] = [];
if (arg("seed") !== undefined) seeds.push(Number(arg("seed")));
else if (flag("regressions")) seeds.push(...RAFT_REGRESSION_SEEDS.map((r) => r.seed));
else {
  const count = Number(arg("seeds") ?? 1);
  for (let i = 0; i < count; i++) seeds.push(randomInt(0, 2 ** 47));
}
let failures = 0;
let firstFailureAt = 0;
let ran = 0;
const quiet = flag("quiet") && seeds.length > 1;
const started = performance.now();
for (const seed of seeds) {
  const t0 = performance.now();
  ran++;
  const result = runRaftSim({
    seed,
    trace: flag("trace"),
    endToEndOnly: flag("end-to-end-only"),
    ...(unsafe === undefined ? {} : { unsafe }),
    ...(members === undefined ? {} : { members }),
  });
  const ms = (performance.now() - t0).toFixed(0);
  if (seeds.length === 1 || (!result.ok && !quiet) || flag("verbose")) {
    const virtualS = (result.virtualMs / 1000).toFixed(1);
    print(`seed=${seed} ${result.ok ? "ok" : "FAILED"} (${ms} ms, ${virtualS} s virtual)`);
    print(`  params ${result.params}`);
    print(`  stats ${JSON.stringify(result.stats)}`);
  }
  if (flag("trace")) for (const line of result.trace) print(`  ${line}`);
  if (!result.ok) {
    failures++;
    if (failures === 1) firstFailureAt = ran;
    print(`seed=${seed} failure: ${result.failure}`);
    const unsafeArg = unsafe === undefined ? "" : ` --unsafe ${unsafe}`;
    const extra = `${unsafeArg}${members === undefined ? "" : ` --members ${members}`}`;
    if (!quiet) print(`  replay: pnpm sim --seed ${seed}${extra} --trace`);
    if (!flag("keep-going")) break;
  }
}
if (seeds.length > 1) {
  const first = failures === 0 ? "" : ` (first at seed #${firstFailureAt})`;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  print(`${ran} seeds run, ${failures} failed${first}, ${seconds} s`);
}
process.exit(failures === 0 ? 0 : 1);
