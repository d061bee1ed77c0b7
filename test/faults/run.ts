/**
 * `pnpm faults`: the fault-injection suite's entry point.
 *
 *   pnpm faults --self-test          the machinery's own tests (topology, faults, clients, checker)
 *   (scenarios are added below as they land)
 */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

const here = new URL(".", import.meta.url).pathname;

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

const argv = process.argv.slice(2);
if (argv[0] === "--self-test") process.exitCode = selfTest(argv.slice(1));
