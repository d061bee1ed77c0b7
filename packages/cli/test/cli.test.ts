/**
 * Goal: the `hes` command keeps its contract: every flag is validated (bad input → a message
 * naming the flag, exit 2, nothing changed), HesError codes become their documented exit codes
 * with a next step, `cluster init` lays out a cluster, and `node start` runs a node over mutual
 * TLS until SIGTERM, then stops cleanly. Method: run the real bin as a child process.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { HES_ERROR_CODES } from "@hes/base";
import { EXIT_CODE_BY_HES_CODE } from "../src/index.js";

const bin = new URL("../bin/hes.mjs", import.meta.url).pathname;
const nodeArgs = ["--conditions=hes-source", "--import", "tsx", bin];

function hes(args: string[], env: Record<string, string> = {}) {
  const result = spawnSync(process.execPath, [...nodeArgs, ...args], {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, HES_CONFIG: "", ...env },
  });
  return { code: result.status, out: result.stdout, err: result.stderr };
}

test("every error code has its own exit code of 10 or more", () => {
  const codes = HES_ERROR_CODES.map((code) => EXIT_CODE_BY_HES_CODE[code]);
  assert.equal(new Set(codes).size, HES_ERROR_CODES.length);
  assert.ok(codes.every((c) => c >= 10));
  assert.equal(EXIT_CODE_BY_HES_CODE.HES_UNAVAILABLE, 23);
});

test("bad input is refused with the flag named and exit 2", () => {
  const cases: [string[], RegExp][] = [
    [["cluster", "init", "--nodes", "0", "--dir", "/nonexistent/x"], /--nodes: 0 is out of range/],
    [
      ["cluster", "init", "--nodes", "three", "--dir", "/tmp/x"],
      /--nodes: "three" is not a number/,
    ],
    [["cluster", "init", "--nodes", "3"], /required option '--dir/],
    [["volume", "create", "vm-1", "--size", "10XB", "--endpoint", "h:1"], /--size: "10XB"/],
    [["volume", "create", "vm-1", "--size", "0GiB", "--insecure", "--endpoint", "h:1"], /--size/],
    [
      ["volume", "create", "-bad", "--size", "1GiB", "--endpoint", "h:1"],
      /unknown option|not a valid name/,
    ],
    [
      ["volume", "create", "vm 1", "--size", "1GiB", "--endpoint", "h:1"],
      /NAME: "vm 1" is not a valid name/,
    ],
    [
      ["volume", "create", "vm", "--size", "1GiB", "--replicas", "9", "--endpoint", "h:1"],
      /--replicas: 9/,
    ],
    [["status"], /which cluster\? pass --config FILE/],
    [["status", "--endpoint", "nohost"], /--endpoint: "nohost"/],
    [["status", "--endpoint", "h:1"], /--endpoint needs --ca, --cert and --key/],
    [["export", "vm", "--nbd", "ftp:x"], /--nbd: "ftp:x": write unix:/],
    [["node", "drain", "x"], /ID: "x" is not a number/],
    [["node", "start"], /needs --config FILE, or all of --id/],
    [
      [
        "node",
        "start",
        "--id",
        "1",
        "--data-dir",
        "/tmp/x",
        "--listen",
        "127.0.0.1:1",
        "--peers",
        "1=127.0.0.1:1",
      ],
      /--insecure-development/,
    ],
    [["frobnicate"], /unknown command/],
  ];
  for (const [args, message] of cases) {
    const { code, err } = hes(args);
    assert.equal(code, 2, `${args.join(" ")}: ${err}`);
    assert.match(err, message, args.join(" "));
  }
});

test("cluster init writes a cluster; a second init into it is refused with exit 12", () => {
  const root = mkdtempSync(join(tmpdir(), "hes-cli-"));
  try {
    const dir = join(root, "c");
    const first = hes(["cluster", "init", "--nodes", "3", "--dir", dir, "--json"]);
    assert.equal(first.code, 0, first.err);
    const result = JSON.parse(first.out) as { configPaths: string[] };
    assert.equal(result.configPaths.length, 3);
    assert.ok(result.configPaths.every((p) => existsSync(p)));
    const before = readdirSync(dir).sort();
    const second = hes(["cluster", "init", "--nodes", "3", "--dir", dir]);
    assert.equal(second.code, 12, second.err);
    assert.match(second.err, /HES_ALREADY_EXISTS[\s\S]*next: pick another name/);
    assert.deepEqual(readdirSync(dir).sort(), before);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

/** Runs qemu-io against an NBD URI; fails the test with its output when the command fails. */
function qemuIo(uri: string, command: string): void {
  const result = spawnSync("qemu-io", ["-f", "raw", "-c", command, uri], {
    encoding: "utf8",
    timeout: 30_000,
  });
  const output = `${result.stdout}${result.stderr}`;
  assert.equal(result.status, 0, `qemu-io ${command}: ${output}`);
  assert.doesNotMatch(output, /Pattern verification failed|error/i, `qemu-io ${command}`);
}

/** Runs the bin without blocking this process's event loop. */
function hesAsync(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [...nodeArgs, ...args], {
      env: { ...process.env, HES_CONFIG: "" },
    });
    let out = "";
    let err = "";
    c.stdout.on("data", (d: Buffer) => {
      out += d;
    });
    c.stderr.on("data", (d: Buffer) => {
      err += d;
    });
    c.on("exit", (code) => resolve({ code, out, err }));
  });
}

/** Waits (bounded) until `child` printed a line matching `pattern`. */
function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`timeout; output: ${seen}`)), timeoutMs);
    child.stdout?.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
      if (pattern.test(seen)) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
    child.on("exit", () => reject(new Error(`exited early; output: ${seen}`)));
  });
}

test("node start runs a node over mTLS until SIGTERM; the CLI reaches it with its config", async () => {
  const root = mkdtempSync(join(tmpdir(), "hes-cli-"));
  const dir = join(root, "c");
  const base = String(20_000 + Math.floor(Math.random() * 20_000));
  const init = hes([
    "cluster",
    "init",
    "--nodes",
    "1",
    "--dir",
    dir,
    "--base-port",
    base,
    "--disk-size",
    "1GiB",
  ]);
  assert.equal(init.code, 0, init.err);
  const config = join(dir, "node-1", "config.json");
  const child = spawn(process.execPath, [...nodeArgs, "node", "start", "--config", config], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    const up = await waitForOutput(child, /node 1 up: control 127\.0\.0\.1:\d+/, 30_000);
    const metrics = /metrics (127\.0\.0\.1:\d+)/.exec(up)?.[1];
    // The CLI reaches the one-node cluster over mutual TLS with the node's own config; a
    // bounded wait covers the election and the map's bootstrap.
    let status = { code: -1 as number | null, out: "", err: "" };
    for (let attempt = 0; attempt < 60; attempt++) {
      status = await hesAsync(["status", "--json", "--config", config]);
      if (status.code === 0 && JSON.parse(status.out).leaderId === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assert.equal(status.code, 0, status.err);
    assert.equal(JSON.parse(status.out).leaderId, 1);
    assert.doesNotMatch(status.err, /DEP0123/);
    const health = await fetch(`http://${metrics}/healthz`);
    assert.equal(health.status, 200, "healthy once a leader is known");
    const created = await hesAsync([
      "volume",
      "create",
      "vm-1",
      "--size",
      "64MiB",
      "--replicas",
      "1",
      "--config",
      config,
    ]);
    assert.equal(created.code, 0, created.err);
    assert.match(created.out, /vm-1\s+64 MiB\s+×1\s+not open/);
    const again = await hesAsync([
      "volume",
      "create",
      "vm-1",
      "--size",
      "64MiB",
      "--replicas",
      "1",
      "--config",
      config,
    ]);
    assert.equal(again.code, 12, again.err);
    const missing = await hesAsync(["volume", "stat", "nope", "--config", config]);
    assert.equal(missing.code, 11, missing.err);
    assert.match(missing.err, /next: check the name with `hes volume ls`/);
    const socket = join(root, "vm-1.sock");
    const exported = await hesAsync([
      "export",
      "vm-1",
      "--nbd",
      `unix:${socket}`,
      "--config",
      config,
    ]);
    assert.equal(exported.code, 0, exported.err);
    assert.match(exported.out, /vm-1 exported at unix:/);
    const uri = `nbd+unix:///vm-1?socket=${socket}`;
    qemuIo(uri, "write -P 0xaa 0 256k");
    const snap = await hesAsync(["snapshot", "create", "vm-1", "s1", "--config", config]);
    assert.equal(snap.code, 0, snap.err);
    const listed = await hesAsync(["snapshot", "ls", "vm-1", "--json", "--config", config]);
    assert.equal(JSON.parse(listed.out)[0].name, "s1");
    qemuIo(uri, "write -P 0xbb 64k 512k");
    // Rollback while the volume is exported would change the disk under the guest: refused.
    const busy = await hesAsync(["snapshot", "rollback", "vm-1", "s1", "--config", config]);
    assert.equal(busy.code, 31, busy.err);
    assert.match(busy.err, /unexport it[\s\S]*next:/);
    qemuIo(uri, "read -P 0xbb 64k 512k");
    const closed = await hesAsync(["unexport", "vm-1", "--config", config]);
    assert.equal(closed.code, 0, closed.err);
    const noSnap = await hesAsync(["snapshot", "rollback", "vm-1", "s9", "--config", config]);
    assert.equal(noSnap.code, 11, noSnap.err);
    const back = await hesAsync([
      "snapshot",
      "rollback",
      "vm-1",
      "s1",
      "--json",
      "--config",
      config,
    ]);
    assert.equal(back.code, 0, back.err);
    assert.deepEqual(JSON.parse(back.out), { volume: "vm-1", rolledBackTo: "s1" });
    const again2 = await hesAsync([
      "export",
      "vm-1",
      "--nbd",
      `unix:${socket}`,
      "--config",
      config,
    ]);
    assert.equal(again2.code, 0, again2.err);
    // The head is the snapshot again: 0xaa where it was, zeroes past it (a hole then).
    qemuIo(uri, "read -P 0xaa 0 256k");
    qemuIo(uri, "read -P 0 256k 320k");
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
  } finally {
    child.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
  }
});
