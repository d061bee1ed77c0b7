/**
 * Goal: the volume simulation's properties on real processes (issue 6 point 7): every
 * acknowledged write reads back, reads are per-block linearizable, a fenced owner's writes
 * never land. Method: a three-node cluster on loopback (development plaintext): node 1 is a
 * Host in this process, whose volume the test drives as a host agent would; nodes 2 and 3 are
 * `hes node start` processes. Concurrent writers and readers run while a node (the Raft leader
 * when it is one of the children) is killed with SIGKILL and restarted, and no write may
 * fail; then node 3 takes the volume over (`hes export --takeover`), the
 * in-process owner's next write must fail HES_FENCED, and the whole volume is read back over
 * node 3's NBD export and checked, with the history, by the WGL checker (one register per
 * 4 KiB block; every write stamps its id into each block it writes).
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { isHesError } from "@hes/base";
import type { BlockDevice } from "@hes/blockdev";
import { Host, initCluster, loadHostConfig } from "@hes/host";
import { isAlive } from "@hes/replication";
import { checkLinearizable, type RegisterOp } from "../src/index.js";

const BLOCK = 4096;
const MiB = 2 ** 20;
const VOLUME_BLOCKS = 256; // 1 MiB: every op lands on a few hot blocks of one chunk
const bin = new URL("../../cli/bin/hes.mjs", import.meta.url).pathname;
const nodeArgs = ["--conditions=hes-source", "--import", "tsx", bin];

function blockOf(id: number, block: number): Uint8Array {
  const data = new Uint8Array(BLOCK);
  const view = new DataView(data.buffer);
  view.setUint32(0, id);
  view.setUint32(4, block);
  data.fill((id * 31 + block) & 0xff, 8);
  return data;
}

function blockValue(data: Uint8Array, block: number): number | undefined {
  if (data.every((b) => b === 0)) return undefined;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const id = view.getUint32(0);
  const filler = (id * 31 + block) & 0xff;
  if (view.getUint32(4) !== block || !data.subarray(8).every((b) => b === filler)) {
    throw new Error(`block ${block} is torn or misplaced (head ${id}/${view.getUint32(4)})`);
  }
  return id;
}

function startNode(config: string): ChildProcess {
  return spawn(process.execPath, [...nodeArgs, "node", "start", "--config", config], {
    stdio: ["ignore", "pipe", "pipe"],
  });
}

function waitForUp(child: ChildProcess, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`node not up: ${seen}`)), timeoutMs);
    child.stdout?.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
      if (/ up: control/.test(seen)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => reject(new Error(`node exited (${code}): ${seen}`)));
  });
}

async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>) {
  const endMs = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > endMs) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

interface History {
  readonly ops: RegisterOp[];
  readonly acked: (number | undefined)[];
  readonly unknown: Set<number>[];
  step: number;
  nextId: number;
  writesOk: number;
  writesFailed: number;
}

async function writer(device: BlockDevice, h: History, stop: { done: boolean }, seed: number) {
  let x = seed;
  while (!stop.done) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const first = x % (VOLUME_BLOCKS - 4);
    const count = 1 + (x % 3);
    const id = h.nextId++;
    const data = new Uint8Array(count * BLOCK);
    for (let i = 0; i < count; i++) data.set(blockOf(id, first + i), i * BLOCK);
    const invoke = h.step++;
    let ok = true;
    try {
      await device.write({ offsetBytes: first * BLOCK, data });
      h.writesOk++;
    } catch {
      ok = false;
      h.writesFailed++;
    }
    const response = ok ? h.step++ : Number.POSITIVE_INFINITY;
    for (let b = first; b < first + count; b++) {
      const key = `${b}`;
      h.ops.push({ id: h.ops.length, key, kind: "write", value: id, invoke, response });
      if (ok) h.acked[b] = id;
      else h.unknown[b]?.add(id);
    }
  }
}

async function reader(device: BlockDevice, h: History, stop: { done: boolean }, seed: number) {
  let x = seed;
  while (!stop.done) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const first = x % (VOLUME_BLOCKS - 4);
    const invoke = h.step++;
    let data: Uint8Array;
    try {
      data = await device.read({ offsetBytes: first * BLOCK, lengthBytes: 4 * BLOCK });
    } catch {
      continue;
    }
    const response = h.step++;
    for (let i = 0; i < 4; i++) {
      const value = blockValue(data.subarray(i * BLOCK, (i + 1) * BLOCK), first + i);
      const key = `${first + i}`;
      h.ops.push({ id: h.ops.length, key, kind: "read", value, invoke, response });
    }
  }
}

/** Runs writers and readers until `untilDone` resolves. */
async function workload(device: BlockDevice, h: History, untilDone: Promise<void>) {
  const stop = { done: false };
  const loops = [
    ...[1, 2, 3].map((s) => writer(device, h, stop, s * 7919)),
    ...[1, 2].map((s) => reader(device, h, stop, s * 104729)),
  ];
  try {
    await untilDone;
  } finally {
    stop.done = true;
    await Promise.all(loops);
  }
}

test("multi-process: IO through a node kill -9 and a takeover matches the model", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "hes-volume-mp-"));
  const basePort = 20_000 + Math.floor(Math.random() * 20_000);
  const { configPaths } = await initCluster({
    nodes: 3,
    dir: join(root, "c"),
    basePort,
    diskSizeBytes: 512 * MiB,
    insecureDevelopment: true,
  });
  const [c1, c2, c3] = configPaths as [string, string, string];
  const host = await Host.start(await loadHostConfig(c1));
  const children = new Map<number, ChildProcess>([
    [2, startNode(c2)],
    [3, startNode(c3)],
  ]);
  try {
    await Promise.all([...children.values()].map((child) => waitForUp(child, 60_000)));
    const control = host.control;
    assert.ok(control !== undefined);
    await waitFor("three nodes up", 60_000, async () => {
      await control.sync();
      return (
        control
          .view()
          .nodes()
          .filter((n) => isAlive(n)).length === 3
      );
    });
    await control.propose({
      kind: "createVolume",
      fields: { name: "vm", sizeBytes: VOLUME_BLOCKS * BLOCK, chunkSizeBytes: MiB },
    });
    const device = await host.openVolume("vm");
    const h: History = {
      ops: [],
      acked: new Array(VOLUME_BLOCKS).fill(undefined),
      unknown: Array.from({ length: VOLUME_BLOCKS }, () => new Set<number>()),
      step: 0,
      nextId: 1,
      writesOk: 0,
      writesFailed: 0,
    };
    let victim = 0;
    const schedule = (async () => {
      await waitFor("writes before the kill", 30_000, async () => h.writesOk >= 100);
      // The Raft leader when it is a child (issue 7: the failure report then meets a dead
      // leader and must wait for the election instead of failing the write), else node 2.
      const leaderId = Number(host.health().leaderId);
      victim = leaderId === 2 || leaderId === 3 ? leaderId : 2;
      t.diagnostic(`killing node ${victim} (leader: node ${leaderId})`);
      children.get(victim)?.kill("SIGKILL");
      const before = h.writesOk;
      await waitFor("writes with a node dead", 60_000, async () => h.writesOk >= before + 100);
      const restarted = startNode(victim === 2 ? c2 : c3);
      children.set(victim, restarted);
      await waitForUp(restarted, 60_000);
      const after = h.writesOk;
      await waitFor("writes after the restart", 60_000, async () => h.writesOk >= after + 100);
    })();
    await workload(device, h, schedule);

    // Node 3 takes the volume over; this host's owner is fenced and its write never lands.
    const socket = join(root, "vm.sock");
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [...nodeArgs, "export", "vm", "--nbd", `unix:${socket}`, "--takeover", "--config", c3],
      { timeout: 60_000 },
    );
    assert.match(stdout, /vm exported at unix:/);
    const fencedId = h.nextId++;
    await assert.rejects(device.write({ offsetBytes: 0, data: blockOf(fencedId, 0) }), (e) =>
      isHesError(e, "HES_FENCED"),
    );
    const { NbdClient } = await import("../../../examples/three-node-cluster/nbd-client.mjs");
    const nbd = await NbdClient.open(socket, "vm");
    const invoke = h.step++;
    const all: Uint8Array = await nbd.read(0, VOLUME_BLOCKS * BLOCK);
    const response = h.step++;
    await nbd.close();
    for (let b = 0; b < VOLUME_BLOCKS; b++) {
      const value = blockValue(all.subarray(b * BLOCK, (b + 1) * BLOCK), b);
      const allowed = new Set<number | undefined>([h.acked[b], ...(h.unknown[b] ?? [])]);
      assert.ok(allowed.has(value), `block ${b} holds ${value}, expected one of ${[...allowed]}`);
      h.ops.push({ id: h.ops.length, key: `${b}`, kind: "read", value, invoke, response });
    }
    const result = checkLinearizable(h.ops);
    assert.ok(result.ok || result.inconclusive, `block ${result.key}: ${result.detail}`);
    assert.ok(h.writesOk >= 300, `${h.writesOk} writes acknowledged (${h.writesFailed} failed)`);
    // Two of three replicas stay up throughout: no write may fail, not even the one whose
    // failure report met the killed leader.
    assert.equal(h.writesFailed, 0, `writes failed with node ${victim} killed`);
    const reads = h.ops.filter((op) => op.kind === "read").length;
    t.diagnostic(
      `${h.writesOk} writes acknowledged, ${h.writesFailed} failed, ${reads} block reads`,
    );
  } finally {
    for (const child of children.values()) child.kill("SIGKILL");
    await host.stop().catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  }
});
