/**
 * Goal: the NBD client, the history workload and the checker work end to end on a real NBD
 * export today (before the host exists), and the pipeline can fail. Method: @hes/nbd serving
 * a MemoryBlockDevice on a unix socket; four connections write self-identifying blocks to a
 * small hot set and read them; the checker must accept that history, and must refuse the
 * histories of a device that acknowledges writes it drops, or returns flipped bits.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Prng } from "@hes/base";
import { type BlockDevice, MemoryBlockDevice } from "@hes/blockdev";
import { NbdServer } from "@hes/nbd";
import { decodeBlock, encodeBlock } from "../lib/blocks.js";
import { checkHistory } from "../lib/checker.js";
import { waitFor } from "../lib/exec.js";
import { History } from "../lib/history.js";
import { HistoryClient } from "../lib/history-client.js";
import { NbdClient } from "../lib/nbd-client.js";

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "hesf-hist-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Wraps a device, replacing some of its methods (a deliberately broken device). */
function broken(inner: BlockDevice, overrides: Partial<BlockDevice>): BlockDevice {
  return new Proxy(inner, {
    get(target, prop) {
      if (prop in overrides) return overrides[prop as keyof BlockDevice];
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

async function runWorkload(device: BlockDevice, name: string, opsWanted: number) {
  const server = new NbdServer();
  server.addExport({ name: "vol", device });
  const path = join(dir, `${name}.sock`);
  await server.listen({ path });
  const history = new History();
  const client = new HistoryClient({
    address: { path, exportName: "vol" },
    history,
    prng: new Prng(42),
    connections: 4,
    hotBlocks: 8,
    firstBlock: 100,
    requestTimeoutMs: 2_000,
  });
  try {
    client.start();
    await waitFor(
      `${opsWanted} ops`,
      () => (history.ops.length >= opsWanted ? true : undefined),
      30_000,
    );
    await client.stop();
    await client.finalReads(10_000);
    history.closeOpen();
    return history;
  } finally {
    await server.close({ drainMs: 1_000 });
  }
}

test("blocks identify themselves; torn, flipped and misplaced ones are caught", () => {
  const block = encodeBlock(7, 3, 99);
  assert.deepEqual(decodeBlock(block, 7), { kind: "value", value: "3:99" });
  assert.deepEqual(decodeBlock(new Uint8Array(4096), 7), { kind: "zero" });
  assert.equal(decodeBlock(block, 8).kind, "corrupt");
  const flipped = Buffer.from(block);
  flipped[2000] = (flipped[2000] as number) ^ 4;
  assert.equal(decodeBlock(flipped, 7).kind, "corrupt");
  const torn = Buffer.concat([block.subarray(0, 2048), encodeBlock(7, 3, 100).subarray(2048)]);
  assert.equal(decodeBlock(torn, 7).kind, "corrupt");
});

test("the NBD client round-trips blocks and reports the export size", async () => {
  const server = new NbdServer();
  server.addExport({ name: "vol", device: new MemoryBlockDevice({ sizeBytes: 1 << 24 }) });
  const path = join(dir, "plain.sock");
  await server.listen({ path });
  const client = await NbdClient.connect({ path, exportName: "vol" });
  try {
    assert.equal(client.sizeBytes, 1 << 24);
    const data = encodeBlock(3, 1, 1);
    await Promise.all([client.write(3 * 4096, data, { fua: true }), client.flush()]);
    assert.deepEqual(await client.read(3 * 4096, 4096), data);
    await assert.rejects(client.read(1 << 24, 4096)); // past the end: an error reply
    assert.deepEqual(await client.read(3 * 4096, 4096), data, "connection still serves");
  } finally {
    await client.close();
    await server.close();
  }
});

test("a correct device's history is accepted", async () => {
  const history = await runWorkload(new MemoryBlockDevice({ sizeBytes: 1 << 24 }), "good", 3_000);
  const counts = history.counts();
  assert.ok(
    (counts["write:ok"] ?? 0) > 500 && (counts["read:ok"] ?? 0) > 500,
    JSON.stringify(counts),
  );
  assert.ok(history.ops.some((op) => op.kind === "read" && typeof op.readValue === "string"));
  const result = checkHistory(history.ops);
  assert.deepEqual(result.violations, []);
  assert.equal(result.ok, true);
  assert.equal(result.blocksChecked, 8);
});

test("a device that acknowledges writes it drops is caught", async () => {
  const inner = new MemoryBlockDevice({ sizeBytes: 1 << 24 });
  let writes = 0;
  const device = broken(inner, {
    write: async (request) => {
      if (++writes % 7 === 0) return; // acknowledged, never stored
      await inner.write(request);
    },
  });
  const result = checkHistory((await runWorkload(device, "lossy", 3_000)).ops);
  assert.equal(result.ok, false);
  const kinds = new Set(result.violations.map((v) => v.kind));
  assert.ok(kinds.has("stale-read") || kinds.has("lost-write"), [...kinds].join());
  assert.ok(kinds.has("not-linearizable"));
});

test("a device that returns flipped bits is caught as corrupt", async () => {
  const inner = new MemoryBlockDevice({ sizeBytes: 1 << 24 });
  let reads = 0;
  const device = broken(inner, {
    read: async (request) => {
      const data = Buffer.from(await inner.read(request));
      if (++reads % 50 === 0) data[100] = (data[100] as number) ^ 1;
      return data;
    },
  });
  const result = checkHistory((await runWorkload(device, "flippy", 2_000)).ops);
  assert.ok(result.violations.some((v) => v.kind === "corrupt"));
});
