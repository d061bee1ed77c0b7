#!/usr/bin/env node
// Runs the test suite with node:test (Node 20's --test does not expand globs, so this finds
// the files). Tests run from TypeScript sources: tsx loads them and the "hes-source" export
// condition points @hes/* imports at src/, so no build is needed first.
//
//   node scripts/run-tests.mjs                 every *.test.ts under packages/ and test/
//   node scripts/run-tests.mjs raft nbd        only files whose path contains "raft" or "nbd"
//
// Env: TEST_CONCURRENCY (files run in parallel, default 2 = the cores here), TEST_TIMEOUT_MS
// (per test, default 10 minutes).
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const skipDirs = new Set(["node_modules", "dist", ".git", "perf", "faults"]);

function find(dir, out) {
  for (const name of readdirSync(dir)) {
    if (skipDirs.has(name)) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) find(path, out);
    else if (name.endsWith(".test.ts")) out.push(relative(root, path));
  }
  return out;
}

const filters = process.argv.slice(2);
const files = [...find(join(root, "packages"), []), ...find(join(root, "test"), [])]
  .filter((file) => filters.length === 0 || filters.some((f) => file.includes(f)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(" ")}`);
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  [
    "--conditions=hes-source",
    "--import",
    "tsx",
    "--test",
    `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 2}`,
    // A hung test fails after 10 minutes instead of holding CI to its 90-minute limit.
    `--test-timeout=${process.env.TEST_TIMEOUT_MS ?? 600_000}`,
    ...files,
  ],
  { cwd: root, stdio: "inherit", env: { UV_THREADPOOL_SIZE: "16", ...process.env } },
);
process.exit(result.status ?? 1);
