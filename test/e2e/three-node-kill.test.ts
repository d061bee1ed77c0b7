/**
 * Goal: issue 7's end-to-end check. Start the example cluster exactly as the README says
 * (examples/three-node-cluster/start.mjs: three `hes node start` processes with mutual TLS, a
 * volume exported over NBD), write through NBD, kill -9 one node while writing, keep writing
 * (a 2-of-3 quorum acknowledges), restart the node with `hes node start`, write more, and check
 * that every acknowledged block reads back and that `hes status` shows three nodes up and the
 * volume back in sync; then read every acknowledged block from each node's own replica over
 * its data-plane service, so full redundancy (not just one good copy) is proved. Method: real
 * processes, sockets and files; bounded waits, no sleeps for timing. Runs on the build (like
 * `pnpm example`); `pnpm test` builds first.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { dataPlaneClientTls, loadHostConfig, loadTlsMaterial } from "@hes/host";
import { RemoteReplica } from "@hes/replication";
import { NbdClient } from "../../examples/three-node-cluster/nbd-client.mjs";

const example = new URL("../../examples/three-node-cluster/start.mjs", import.meta.url).pathname;
const bin = new URL("../../packages/cli/bin/hes.mjs", import.meta.url).pathname;
const BLOCK = 4096;

/** Resolves with everything printed once `pattern` has appeared (bounded). */
function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = "";
    let errors = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      errors = (errors + chunk.toString()).slice(-2000);
    });
    const timer = setTimeout(
      () => reject(new Error(`timeout waiting for ${pattern}: ${seen}\nstderr: ${errors}`)),
      timeoutMs,
    );
    child.stdout?.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
      if (pattern.test(seen)) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code}) before ${pattern}: ${seen}\nstderr: ${errors}`));
    });
  });
}

async function status(config: string): Promise<{
  leaderId?: number;
  nodes?: { nodeId: number; state: string }[];
  volumes?: {
    name: string;
    volumeId?: string;
    chunkSizeBytes?: string;
    health?: { chunksDegraded?: string; replicasFilling?: string };
  }[];
}> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [bin, "status", "--json", "--config", config],
    {
      timeout: 30_000,
    },
  );
  return JSON.parse(stdout);
}

/** Polls `check` until it returns true, at most `timeoutMs`. */
async function eventually(what: string, timeoutMs: number, check: () => Promise<boolean>) {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    if (
      await check().catch((error: unknown) => {
        last = error;
        return false;
      })
    ) {
      return;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (${last})`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const patternOf = (block: number) => (block % 251) + 1;

test("kill -9 a node while writing through NBD, keep writing, restart it: no acknowledged write lost", {
  timeout: 240_000,
}, async () => {
  const cwd = mkdtempSync(join(tmpdir(), "hes-e2e-"));
  const basePort = String(21_000 + Math.floor(Math.random() * 15_000));
  const cluster = spawn(process.execPath, [example], {
    cwd,
    env: { ...process.env, HES_EXAMPLE_BASE_PORT: basePort },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let restarted: ChildProcess | undefined;
  try {
    const out = await waitForOutput(cluster, /Serving until Ctrl-C/, 90_000);
    const socket = /socket=(\S+)/.exec(out)?.[1] as string;
    const pid3 = Number(/node 3 {2}pid (\d+)/.exec(out)?.[1]);
    const config = (id: number) => join(cwd, ".hes", "example", `node-${id}`, "config.json");
    assert.ok(socket && pid3 > 0, out);

    const client = await NbdClient.open(socket, "demo");
    const written: number[] = [];
    let refused = 0;
    const writeBlocks = async (from: number, count: number) => {
      for (let block = from; block < from + count; block++) {
        // A write the volume cannot place (e.g. while the map elects a new leader after the
        // kill) fails with EIO and is not acknowledged; like a guest, retry it, bounded.
        const deadline = Date.now() + 30_000;
        for (;;) {
          try {
            await client.write(block * BLOCK, Buffer.alloc(BLOCK, patternOf(block)));
            break;
          } catch (error) {
            refused++;
            if (Date.now() > deadline) throw error;
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        }
        written.push(block); // acknowledged
      }
    };
    await writeBlocks(0, 50);
    process.kill(pid3, "SIGKILL"); // node 3 dies with whatever it had in flight
    await writeBlocks(50, 100); // the other two still form the write quorum
    await client.flush();

    restarted = spawn(
      process.execPath,
      ["--initial-old-space-size=256", bin, "node", "start", "--config", config(3)],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    await waitForOutput(restarted, /node 3 up:/, 60_000);
    await writeBlocks(150, 50);
    await client.flush();

    for (const block of written) {
      const data = await client.read(block * BLOCK, BLOCK);
      assert.ok(
        data.every((b) => b === patternOf(block)),
        `block ${block} lost or wrong`,
      );
    }
    await client.close();
    console.log(`e2e: ${written.length} writes acknowledged, ${refused} refused and retried`);

    await eventually("three nodes up with a leader", 60_000, async () => {
      const s = await status(config(1));
      return !!s.leaderId && s.nodes?.filter((n) => n.state === "NODE_STATE_UP").length === 3;
    });
    await eventually("the volume back in sync (node 3 caught up)", 120_000, async () => {
      const s = await status(config(1));
      const health = s.volumes?.find((v) => v.name === "demo")?.health;
      return (
        Number(health?.chunksDegraded ?? 0) === 0 && Number(health?.replicasFilling ?? 0) === 0
      );
    });
    // Full redundancy, proved replica by replica: every acknowledged block, read from each
    // node's own copy over its data-plane service (not through the volume, which would hide a
    // replica that missed writes behind a good one).
    const volume = (await status(config(1))).volumes?.find((v) => v.name === "demo");
    const volumeId = Number(volume?.volumeId ?? 0);
    const chunkSizeBytes = Number(volume?.chunkSizeBytes);
    assert.ok(chunkSizeBytes >= BLOCK, JSON.stringify(volume));
    for (const nodeId of [1, 2, 3]) {
      await verifyReplica(config(nodeId), volumeId, chunkSizeBytes, written);
    }
  } finally {
    if (restarted !== undefined && restarted.exitCode === null) {
      const gone = new Promise((resolve) => restarted?.once("exit", resolve));
      restarted.kill("SIGTERM");
      await gone;
    }
    if (cluster.exitCode === null) {
      const gone = new Promise((resolve) => cluster.once("exit", resolve));
      cluster.kill("SIGTERM");
      await gone;
    }
    rmSync(cwd, { recursive: true, force: true });
  }
});

/** Reads every block in `blocks` from one node's replica of the volume and checks its pattern. */
async function verifyReplica(
  configPath: string,
  volumeId: number,
  chunkSizeBytes: number,
  blocks: readonly number[],
): Promise<void> {
  const config = await loadHostConfig(configPath);
  assert.ok(config.tls !== undefined, "the example runs with mutual TLS");
  const replica = new RemoteReplica({
    nodeId: config.nodeId,
    address: config.listen.data,
    chunkSizeBytes,
    tls: dataPlaneClientTls(await loadTlsMaterial(config.tls)),
  });
  try {
    const blocksPerChunk = chunkSizeBytes / BLOCK;
    for (const block of blocks) {
      const chunk = { volumeId, chunkIndex: Math.floor(block / blocksPerChunk) };
      // Read at the chunk's own epoch: the check must not fence the volume's owner.
      const version = await replica.version(chunk);
      assert.ok(version !== undefined, `node ${config.nodeId}: no chunk ${chunk.chunkIndex}`);
      const offsetBytes = (block % blocksPerChunk) * BLOCK;
      const data = await replica.read(chunk, offsetBytes, BLOCK, { epoch: version.epoch });
      assert.ok(
        data.every((b) => b === patternOf(block)),
        `node ${config.nodeId}: block ${block} lost or wrong on this replica`,
      );
    }
  } finally {
    await replica.close();
  }
}
