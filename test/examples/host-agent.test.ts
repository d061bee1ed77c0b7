/**
 * Goal: the host-agent example keeps working: it embeds @hes/host (a one-node cluster it lays
 * out itself), writes and reads its volume in-process, exports it on a unix socket, and stops
 * cleanly. Method: run examples/host-agent/agent.mjs on the build in a scratch directory with
 * the exit-after-start switch.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

test("the host agent serves a volume in-process and over a unix socket, then stops", () => {
  const cwd = mkdtempSync(join(tmpdir(), "hes-agent-"));
  try {
    const entry = new URL("../../examples/host-agent/agent.mjs", import.meta.url).pathname;
    const result = spawnSync(process.execPath, [entry], {
      cwd,
      env: {
        ...process.env,
        HES_AGENT_EXIT_AFTER_START: "1",
        HES_AGENT_BASE_PORT: String(21_000 + Math.floor(Math.random() * 15_000)),
      },
      encoding: "utf8",
      timeout: 120_000,
    });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /serving vm-1-root \(in-process write\/read: OK\)/);
    assert.match(result.stdout, /nbd\+unix:\/\/\/vm-1-root\?socket=/);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});
