#!/usr/bin/env node
// Runs performance suites (never part of `pnpm test`): test/perf/<name>.bench.ts.
//   pnpm bench                 lists the suites
//   pnpm bench framing raft    runs those, one after another, each in its own process
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const perf = join(root, "test", "perf");
const suites = readdirSync(perf)
  .filter((f) => f.endsWith(".bench.ts"))
  .map((f) => f.slice(0, -".bench.ts".length))
  .sort();
const asked = process.argv.slice(2);
// Benchmarks measure the built packages (tsc output), not tsx's on-the-fly transform of the
// sources: tsx keeps function names with a wrapper that costs a few percent on hot paths.
function build() {
  const result = spawnSync(
    process.execPath,
    [join(root, "node_modules", "typescript", "bin", "tsc"), "-b"],
    {
      cwd: root,
      stdio: "inherit",
    },
  );
  if (result.status !== 0) process.exit(result.status ?? 1);
}
if (asked.length === 0) {
  console.log(`benchmarks: ${suites.join(", ")}\nrun: pnpm bench <name> [...]`);
  process.exit(0);
}
if (asked.length > 0) build();
for (const name of asked) {
  if (!suites.includes(name)) {
    console.error(`unknown benchmark ${name}; known: ${suites.join(", ")}`);
    process.exit(2);
  }
  // The heap flag every hes node runs with (packages/host README); children inherit execArgv.
  const flags = ["--initial-old-space-size=256", "--import", "tsx"];
  const result = spawnSync(process.execPath, [...flags, join(perf, `${name}.bench.ts`)], {
    cwd: root,
    stdio: "inherit",
    env: { UV_THREADPOOL_SIZE: "16", ...process.env },
  });
  if (result.status !== 0) process.exit(result.status ?? 1);
}
