/**
 * Goal: the whole pipeline (seeded schedule, topology, faults on a real process, history and
 * fio workloads, checker, report) runs end to end today and can fail. Method: the stand-in
 * target (nbdkit in a namespace): with its file plugin (FUA writes are fdatasync'd) kill -9,
 * pauses and a slow disk lose nothing and the run must pass; with its memory plugin (acks from
 * RAM, a crash loses everything) the same schedule must fail with lost writes, fio verify
 * errors, and a report directory holding the seed, schedule, history and node logs.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { faultSuiteUnavailable } from "../lib/exec.js";
import { faultNamed } from "../lib/faults.js";
import { NbdkitTarget } from "../lib/nbdkit-target.js";
import { runScenario, type ScenarioOptions } from "../lib/scenario.js";

const skip = faultSuiteUnavailable();
let reportRoot: string;
before(() => {
  reportRoot = mkdtempSync(join(tmpdir(), "hesf-reports-"));
});
after(() => rmSync(reportRoot, { recursive: true, force: true }));

function options(broken: boolean, lines: string[]): ScenarioOptions {
  return {
    name: broken ? "standin-broken" : "standin",
    seed: 14, // a schedule with each of the three faults once
    rounds: 3,
    nodes: 1,
    faults: ["kill-exporter", "pause-leader", "disk-slow-fdatasync"].map(faultNamed),
    makeTarget: (env) => new NbdkitTarget({ ...env, sizeBytes: 256 << 20, broken }),
    reportRoot,
    holdMs: { min: 500, max: 1_000 },
    calmMs: { min: 800, max: 1_200 },
    connections: 3,
    hotBlocks: 16,
    prefix: broken ? "hesb" : "hess",
    print: (line) => lines.push(line),
  };
}

test("the stand-in with durable writes passes its schedule", { skip }, async () => {
  const lines: string[] = [];
  const result = await runScenario(options(false, lines));
  assert.deepEqual(result.problems, [], lines.join("\n"));
  assert.equal(result.ok, true);
  assert.match(lines[1] ?? "", /^seed 14: 3 rounds/, "the schedule is printed first");
  assert.ok(lines.some((l) => /kill -9 node 1/.test(l)) && lines.some((l) => /SIGSTOP/.test(l)));
  assert.ok(
    lines.some((l) => /disk-slow-fdatasync: [1-9]\d* injections/.test(l)),
    lines.join("\n"),
  );
  assert.ok((result.counts["write:ok"] ?? 0) > 100, JSON.stringify(result.counts));
  assert.ok(result.fio.length >= 1 && result.fio.every((f) => f.jobError === 0));
  assert.ok(result.rounds.every((r) => r.serviceBackMs !== undefined));
});

test("the stand-in that acknowledges from RAM is caught, with a report", { skip }, async () => {
  const lines: string[] = [];
  const result = await runScenario({
    ...options(true, lines),
    faults: [faultNamed("kill-exporter")],
  });
  assert.equal(result.ok, false, lines.join("\n"));
  const kinds = new Set(result.check?.violations.map((v) => v.kind));
  assert.ok(kinds.has("lost-write") || kinds.has("stale-read"), [...kinds].join());
  assert.ok(
    result.problems.some((p) => p.startsWith("fio phase")),
    result.problems.join("\n"),
  );
  const dir = result.reportDir as string;
  assert.ok(existsSync(join(dir, "history.json")) && existsSync(join(dir, "schedule.json")));
  assert.match(readFileSync(join(dir, "README.txt"), "utf8"), /pnpm faults --seed 14/);
  assert.ok(readdirSync(join(dir, "logs")).some((f) => f.startsWith("node1")));
});
