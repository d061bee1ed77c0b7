/**
 * Goal: the README's first command keeps working: the three-node example starts three real
 * nodes (mutual TLS), creates and exports a volume, round-trips data through NBD, prints
 * `hes status`, and exits cleanly. Method: run the example's entry point (as `pnpm example`
 * does after building) in a real process with the exit-after-start switch, in a scratch
 * directory and on a random port range.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

test("the three-node example starts, checks its round trips and exits on request", () => {
  const cwd = mkdtempSync(join(tmpdir(), "hes-example-"));
  try {
    const entry = new URL("../../examples/three-node-cluster/start.mjs", import.meta.url).pathname;
    const result = spawnSync(process.execPath, [entry], {
      cwd,
      env: {
        ...process.env,
        HES_EXAMPLE_EXIT_AFTER_START: "1",
        HES_EXAMPLE_BASE_PORT: String(21_000 + Math.floor(Math.random() * 15_000)),
      },
      encoding: "utf8",
      timeout: 120_000,
    });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /up in \d+ ms/);
    assert.match(result.stdout, /read it back: OK/);
    assert.match(result.stdout, /nodes 3\/3 up/);
    assert.match(result.stdout, /demo\s+1 GiB\s+×3\s+open on node 1\s+in sync/);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});
