#!/usr/bin/env node
// The README's first command: a three-node hes cluster on loopback, with one command.
//
// 1. `hes cluster init --nodes 3` into .hes/example/ (once; later runs reuse the cluster):
//    a cluster CA, node certificates, node configs, disk files.
// 2. Three `hes node start --config …` processes (mutual TLS between them), logs in
//    .hes/example/node-N.log.
// 3. Waits for a leader, creates the volume `demo` (3 replicas), exports it over NBD on a unix
//    socket from node 1, writes a pattern and reads it back with qemu-io when installed (else
//    with the small NBD client beside this file), and prints `hes status`.
// 4. Runs until Ctrl-C, then stops the nodes with SIGTERM (each drains, flushes, closes).
//
// Env: HES_EXAMPLE_DIR (default ./.hes/example), HES_EXAMPLE_BASE_PORT (default 17000),
// HES_EXAMPLE_EXIT_AFTER_START=1 (stop once up: the test uses it).
import { execFile, spawn } from "node:child_process";
import { createWriteStream, existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { NbdClient } from "./nbd-client.mjs";

const started = Date.now();
const bin = new URL("../../packages/cli/bin/hes.mjs", import.meta.url).pathname;
const root = resolve(process.env.HES_EXAMPLE_DIR ?? join(process.cwd(), ".hes", "example"));
const basePort = process.env.HES_EXAMPLE_BASE_PORT ?? "17000";
const volume = "demo";
const socket = join(root, `${volume}.sock`);
const configOf = (id) => join(root, `node-${id}`, "config.json");
// Children run the way this process runs (plain node on the build, or tsx on sources).
const nodeArgs = [...process.execArgv, bin];
const run = promisify(execFile);
const phase = (what) => {
  if (process.env.HES_EXAMPLE_TIMINGS === "1")
    console.error(`[${Date.now() - started} ms] ${what}`);
};

/** Runs `hes …`; resolves with { code, stdout, stderr } (never throws on a non-zero exit). */
async function hes(...args) {
  try {
    const { stdout, stderr } = await run(process.execPath, [...nodeArgs, ...args], {
      env: { ...process.env, HES_CONFIG: configOf(1) },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    return { code: error.code ?? 1, stdout: error.stdout ?? "", stderr: error.stderr ?? "" };
  }
}

async function must(...args) {
  const result = await hes(...args);
  if (result.code !== 0) throw new Error(`hes ${args.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

function startNode(id) {
  const log = createWriteStream(join(root, `node-${id}.log`), { flags: "a" });
  // --initial-old-space-size: without it V8 runs a major GC every few MiB of IO
  // (docs/PERFORMANCE.md); it can only be given on the command line.
  const argv = [
    "--initial-old-space-size=256",
    ...nodeArgs,
    "node",
    "start",
    "--config",
    configOf(id),
  ];
  const child = spawn(process.execPath, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, UV_THREADPOOL_SIZE: "16" },
  });
  child.stderr.pipe(log);
  const up = new Promise((resolveUp, rejectUp) => {
    let seen = "";
    child.stdout.on("data", (chunk) => {
      seen += chunk;
      log.write(chunk);
      if (/node \d+ up:/.test(seen)) resolveUp();
    });
    child.once("exit", (code, signal) =>
      rejectUp(new Error(`node ${id} exited (${code ?? signal}); see ${log.path}`)),
    );
  });
  child.once("exit", (code, signal) => {
    if (!stopping) console.log(`node ${id} exited (${code ?? signal}); the others keep serving`);
  });
  return { id, child, up };
}

/**
 * Clients of node 1 in this process (what `hes status/volume/export` call), so the start-up
 * path does not pay a CLI process start per step; the final status is printed by `hes` itself.
 */
async function connectNode1() {
  const { grpcChannelCredentials, loadHostConfig, loadTlsMaterial } = await import("@hes/host");
  const { ClusterAdminService, createClient, HostService } = await import("@hes/proto");
  const config = await loadHostConfig(configOf(1));
  const options = {
    credentials: grpcChannelCredentials(await loadTlsMaterial(config.tls)),
    channelOptions: { "grpc.ssl_target_name_override": "localhost" },
  };
  const address = `127.0.0.1:${config.listen.control.port}`;
  return {
    admin: createClient(ClusterAdminService, address, options),
    host: createClient(HostService, address, options),
  };
}

/** Bounded wait for a leader, an initialised map and three registered nodes. */
async function waitForCluster(admin, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await admin.getStatus({}, { deadlineMs: 2_000 }).then(
      (reply) => reply.status,
      () => undefined,
    );
    if (status?.leaderId && status.clusterId !== "" && status.nodes.length === 3) return status;
    if (Date.now() > deadline) throw new Error(`no cluster within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function roundTrip() {
  const pattern = 0xa5;
  if (existsSync("/usr/bin/qemu-io")) {
    const uri = `nbd+unix:///${volume}?socket=${socket}`;
    await run("qemu-io", ["-f", "raw", "-c", `write -P ${pattern} 0 1M`, uri]);
    const { stdout } = await run("qemu-io", ["-f", "raw", "-c", `read -P ${pattern} 0 1M`, uri]);
    if (!/read 1048576\/1048576/.test(stdout)) throw new Error(`qemu-io read check: ${stdout}`);
    return "qemu-io wrote 1 MiB of 0xa5 through NBD and read it back: OK";
  }
  const client = await NbdClient.open(socket, volume);
  await client.write(0, Buffer.alloc(1 << 20, pattern));
  await client.flush();
  const back = await client.read(0, 1 << 20);
  await client.close();
  if (!back.every((b) => b === pattern)) throw new Error("read back differs");
  return "wrote 1 MiB of 0xa5 through NBD (built-in client) and read it back: OK";
}

let stopping = false;
let nodes = [];
async function stop() {
  if (stopping) return;
  stopping = true;
  console.log("stopping the nodes (SIGTERM: drain, flush, close)…");
  await Promise.all(
    nodes.map(
      ({ child }) =>
        new Promise((done) => {
          if (child.exitCode !== null || child.signalCode !== null) return done();
          child.once("exit", done);
          child.kill("SIGTERM");
        }),
    ),
  );
}

// Installed before any node starts, so Ctrl-C during start-up never orphans a node process.
process.on("SIGINT", () => stop().then(() => process.exit(0)));
process.on("SIGTERM", () => stop().then(() => process.exit(0)));

try {
  if (!existsSync(join(root, "cluster.json"))) {
    await must(
      "cluster",
      "init",
      "--nodes",
      "3",
      "--dir",
      root,
      "--base-port",
      basePort,
      "--disk-size",
      "1GiB",
    );
  }
  phase("cluster laid out");
  rmSync(socket, { force: true });
  nodes = [1, 2, 3].map(startNode);
  const clients = await connectNode1();
  await Promise.all(nodes.map((n) => n.up));
  phase("three nodes up");
  await waitForCluster(clients.admin, 30_000);
  phase("leader elected, nodes registered");
  const request = { name: volume, sizeBytes: 2n ** 30n, replicas: 3 };
  await clients.admin.createVolume(request, { deadlineMs: 15_000 }).catch((error) => {
    if (error.code !== "HES_ALREADY_EXISTS") throw error;
  });
  phase("volume created");
  await clients.host.exportVolume(
    { name: volume, nbdTarget: `unix:${socket}` },
    { deadlineMs: 30_000 },
  );
  clients.admin.close();
  clients.host.close();
  phase("exported");
  const checked = await roundTrip();
  const upMs = Date.now() - started;
  console.log(`hes example: up in ${upMs} ms (three nodes, volume ${volume} exported)`);
  console.log(checked);
  console.log(await must("status"));
  for (const { id, child } of nodes) {
    console.log(`  node ${id}  pid ${child.pid}  config ${configOf(id)}`);
  }
  console.log(`NBD: nbd+unix:///${volume}?socket=${socket}`);
  console.log(`status: HES_CONFIG=${configOf(1)} hes status`);
  console.log("Serving until Ctrl-C.");
} catch (error) {
  console.error(`hes example failed: ${error.message}`);
  await stop();
  process.exit(1);
}

if (process.env.HES_EXAMPLE_EXIT_AFTER_START === "1") await stop();
