/**
 * `pnpm faults`: the fault-injection suite (issue 8).
 *
 *   pnpm faults [--quick]               the quick tier: every scenario in scenarios/catalog
 *   pnpm faults --seed N                replay: the same seed gives the same schedule
 *   pnpm faults --scenario crashes      one scenario (crashes | partitions | disks | soak)
 *   pnpm faults --soak [--rounds 200]   the soak: every fault on five nodes, R rounds
 *   pnpm faults --soak --minutes 60     soak runs with successive seeds until the time is up
 *   pnpm faults --broken                nodes get HES_FAULT_ACK_BEFORE_WRITE=1: must FAIL
 *   pnpm faults --expect-fail           exit 0 only if violations were found (with --broken)
 *   pnpm faults --stand-in              the same machinery against nbdkit (runs today)
 *   pnpm faults --self-test [filter]    the machinery's own tests
 *   pnpm faults --timing report         timing targets printed, not failing (CI: safety only)
 *
 * Needs root (namespaces, iptables, mounts, ptrace) and a `hes` with `node start`: without
 * either it prints SKIP with the reason and exits 0, so CI shows the skip instead of failing.
 * Reports of failed runs go to $HES_FAULTS_REPORT_DIR (default test/faults/reports).
 */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { detectHes, HesCluster } from "./lib/cluster.js";
import { faultSuiteUnavailable } from "./lib/exec.js";
import { faultNamed } from "./lib/faults.js";
import { NbdkitTarget } from "./lib/nbdkit-target.js";
import { runScenario, type ScenarioResult } from "./lib/scenario.js";
import { QUICK_SCENARIOS, type ScenarioSpec, soakScenario } from "./scenarios/catalog.js";

const here = new URL(".", import.meta.url).pathname;
const repoRoot = join(here, "../..");

function selfTest(filters: readonly string[]): number {
  const dir = join(here, "test");
  const files = readdirSync(dir)
    .filter((name) => name.endsWith(".test.ts"))
    .filter((name) => filters.length === 0 || filters.some((f) => name.includes(f)))
    .map((name) => join(dir, name));
  const result = spawnSync(
    process.execPath,
    ["--conditions=hes-source", "--import", "tsx", "--test", "--test-concurrency=1", ...files],
    { stdio: "inherit" },
  );
  return result.status ?? 1;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    "self-test": { type: "boolean" },
    seed: { type: "string" },
    rounds: { type: "string" },
    scenario: { type: "string" },
    faults: { type: "string" },
    nodes: { type: "string" },
    soak: { type: "boolean" },
    // The default already: named so that CI and people can say what they run.
    quick: { type: "boolean" },
    minutes: { type: "string" },
    broken: { type: "boolean" },
    "expect-fail": { type: "boolean" },
    "stand-in": { type: "boolean" },
    timing: { type: "string" },
  },
});

const timing = ((raw = values.timing ?? "enforce"): "enforce" | "report" => {
  if (raw === "enforce" || raw === "report") return raw;
  console.error(`--timing must be 'enforce' or 'report', got '${raw}'`);
  process.exit(2);
})();

function integer(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) {
    console.error(`--${name} must be a non-negative integer, got '${raw}'`);
    process.exit(2);
  }
  return value;
}

function chosenScenarios(rounds: number | undefined): ScenarioSpec[] {
  if (values.quick === true && (values.soak === true || values.scenario !== undefined)) {
    console.error("--quick runs the quick tier: it takes no --soak or --scenario");
    process.exit(2);
  }
  let specs: ScenarioSpec[];
  if (values.soak === true || values.scenario === "soak") specs = [soakScenario(rounds ?? 200)];
  else if (values.scenario !== undefined) {
    const spec = QUICK_SCENARIOS.find((s) => s.name === values.scenario);
    if (spec === undefined) {
      console.error(
        `unknown scenario '${values.scenario}'; known: ${QUICK_SCENARIOS.map((s) => s.name)}, soak`,
      );
      process.exit(2);
    }
    specs = [spec];
  } else specs = [...QUICK_SCENARIOS];
  return specs.map((spec) => ({
    ...spec,
    ...(rounds === undefined ? {} : { rounds }),
    ...(values.faults === undefined ? {} : { faults: values.faults.split(",").map(faultNamed) }),
    ...(values.nodes === undefined ? {} : { nodes: integer("nodes", values.nodes, 3) }),
  }));
}

async function main(): Promise<number> {
  if (values["self-test"] === true) return selfTest(positionals);
  const unavailable = faultSuiteUnavailable();
  if (unavailable !== undefined) {
    console.log(`SKIP fault suite: ${unavailable}`);
    return 0;
  }
  const standIn = values["stand-in"] === true;
  const detected = standIn ? undefined : detectHes(repoRoot);
  if (detected !== undefined && "missing" in detected) {
    console.log(`SKIP fault suite: ${detected.missing}`);
    console.log("(the machinery runs today: pnpm faults --stand-in, pnpm faults --self-test)");
    return 0;
  }
  const rounds = values.rounds === undefined ? undefined : integer("rounds", values.rounds, 1);
  const deadline = performance.now() + integer("minutes", values.minutes, 0) * 60_000;
  let seed = integer("seed", values.seed, Math.floor(Math.random() * 2 ** 31));
  const reportRoot = process.env.HES_FAULTS_REPORT_DIR ?? join(here, "reports");
  const results: ScenarioResult[] = [];
  do {
    for (const spec of chosenScenarios(rounds)) {
      results.push(
        await runScenario({
          name: spec.name,
          seed,
          rounds: spec.rounds,
          nodes: standIn ? 1 : spec.nodes,
          faults: spec.faults,
          reportRoot,
          killAfterRebuild: standIn ? 0 : spec.killAfterRebuild,
          timing,
          print: (line) => console.log(line),
          makeTarget: (env) =>
            standIn
              ? new NbdkitTarget({ ...env, sizeBytes: 512 << 20, broken: values.broken === true })
              : new HesCluster({
                  ...env,
                  hes: (detected as { hes: never }).hes,
                  ...(values.broken === true
                    ? { nodeEnv: { HES_FAULT_ACK_BEFORE_WRITE: "1" } }
                    : {}),
                }),
        }),
      );
    }
    seed = (seed + 1) % 2 ** 31;
  } while (values.minutes !== undefined && performance.now() < deadline);
  const failed = results.filter((r) => !r.ok);
  const skipped = results.filter((r) => r.skipped !== undefined);
  console.log(
    `\n${results.length} runs: ${results.length - failed.length - skipped.length} passed, ` +
      `${failed.length} failed, ${skipped.length} skipped`,
  );
  if (values["expect-fail"] === true) {
    // Only safety counts: a broken build that merely ran slowly (or a suite that could not
    // start it) must not pass for "caught".
    const violations = results.reduce((n, r) => n + (r.check?.violations.length ?? 0), 0);
    const fioFailed = results.reduce((n, r) => n + r.fio.filter((f) => f.jobError !== 0).length, 0);
    const caught = violations + fioFailed > 0;
    console.log(
      `expected failure: ${caught ? "caught" : "NOT caught"} (${violations} history ` +
        `violations, ${fioFailed} fio phases failed to verify)`,
    );
    return caught ? 0 : 1;
  }
  return failed.length === 0 ? 0 : 1;
}

process.exitCode = await main();
