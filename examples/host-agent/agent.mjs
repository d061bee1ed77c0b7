#!/usr/bin/env node
// A host agent in ~60 lines: the hypervisor-side program embeds @hes/host, so the volume runs
// in this process (a VM's IO is a function call to the local replica plus framing to the
// others) and QEMU attaches to it over a unix socket.
//
//   node examples/host-agent/agent.mjs [--config node-config.json] [--volume NAME]
//
// Without --config it lays out a one-node cluster under ./.hes/agent (hes cluster init).
// Then: qemu-system-x86_64 … -drive file=nbd+unix:///NAME?socket=PATH,format=raw,cache=none
// Env: HES_AGENT_EXIT_AFTER_START=1 stops once serving (the test uses it).
process.env.UV_THREADPOOL_SIZE ??= "16"; // before the first fs call: the store's IO threads
const { existsSync } = await import("node:fs");
const { join, resolve } = await import("node:path");
const { parseArgs } = await import("node:util");
const { Host, initCluster, loadHostConfig } = await import("@hes/host");
const { pino } = await import("pino");

const { values } = parseArgs({
  options: { config: { type: "string" }, volume: { type: "string" } },
});
const volume = values.volume ?? "vm-1-root";
let configPath = values.config;
if (configPath === undefined) {
  const dir = resolve(".hes", "agent");
  if (!existsSync(join(dir, "cluster.json"))) {
    const base = Number(process.env.HES_AGENT_BASE_PORT ?? 18_000);
    await initCluster({ nodes: 1, dir, basePort: base, diskSizeBytes: 2 ** 30 });
  }
  configPath = join(dir, "node-1", "config.json");
}

const logger = pino({ level: process.env.HES_LOG_LEVEL ?? "warn" });
const host = await Host.start(await loadHostConfig(configPath), { logger });
const control = host.control;

// Wait (bounded) until this node's member knows a leader and the map is initialised.
const deadline = Date.now() + 30_000;
while (control.view().clusterId === "" || control.view().node(host.config.nodeId) === undefined) {
  if (Date.now() > deadline) throw new Error("no cluster map within 30 s");
  await new Promise((r) => setTimeout(r, 100));
}
const view = await control.sync();
if (view.volumeByName(volume) === undefined) {
  const replicas = Math.min(3, host.config.peers.length);
  await control.propose({
    kind: "createVolume",
    fields: { name: volume, sizeBytes: 10 * 2 ** 30, replicationFactor: replicas },
  });
}

// In-process use: the agent itself reads and writes the volume…
const device = await host.openVolume(volume);
await device.write({ offsetBytes: 0, data: new Uint8Array(4096).fill(0x42), fua: true });
const back = await device.read({ offsetBytes: 0, lengthBytes: 4096 });
if (!back.every((b) => b === 0x42)) throw new Error("in-process read back differs");

// …and serves it to QEMU over a unix socket (file permissions guard it).
const socket = resolve(".hes", `${volume}.sock`);
await host.export(volume, { unix: socket });
console.log(`agent: node ${host.config.nodeId} serving ${volume} (in-process write/read: OK)`);
console.log(`  qemu: -drive file=nbd+unix:///${volume}?socket=${socket},format=raw,cache=none`);

const stop = async () => {
  await host.stop(); // drains NBD, flushes and closes the volume (lease released), then services
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
if (process.env.HES_AGENT_EXIT_AFTER_START === "1") await stop();
