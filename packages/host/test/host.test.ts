/**
 * Goal: Host.start composes a real node from a `hes cluster init` layout: the extent store on
 * its disk file, the gRPC control server with mutual TLS, the data plane with TLS, metrics and
 * /healthz over HTTP, and NBD exports of opened volumes, and stop() takes it all down and
 * releases every port and file. Method: real files, sockets and clients on loopback (qemu-io
 * when installed); the volume component here is an in-memory device standing in for blockdev's
 * Volume, which is another branch's work.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as tls from "node:tls";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { MemoryBlockDevice } from "@hes/blockdev";
import { ClusterAdminService, createClient } from "@hes/proto";
import { Host, type HostComponents, initCluster, loadHostConfig } from "../src/index.js";

async function freshNode(insecure = false) {
  const dir = mkdtempSync(join(tmpdir(), "hes-host-"));
  const basePort = 20_000 + Math.floor(Math.random() * 20_000);
  await initCluster({
    nodes: 1,
    dir: join(dir, "c"),
    basePort,
    diskSizeBytes: 2 ** 30,
    insecureDevelopment: insecure,
  });
  const config = await loadHostConfig(join(dir, "c", "node-1", "config.json"));
  return { dir, config };
}

const memoryVolumes: HostComponents = {
  openVolume: async (_context, _member, _name) => {
    const device = new MemoryBlockDevice({ sizeBytes: 64 * 2 ** 20 });
    return { device, close: async () => undefined };
  },
};

/** Async: the NBD server runs in this very process, so a blocking spawn would deadlock it. */
async function qemuIo(args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)("qemu-io", args, { timeout: 30_000 });
  return stdout;
}

test("a host starts on its config, serves metrics, health and an NBD export, and stops", async () => {
  const { dir, config } = await freshNode();
  const host = await Host.start(config, { components: memoryVolumes });
  try {
    const status = host.status();
    assert.equal(status.composed.volumes, true);
    assert.equal(status.composed.member, false);
    const socket = join(dir, "vol.sock");
    assert.equal(await host.export("vm-1", { unix: socket }), `unix:${socket}`);
    if (existsSync("/usr/bin/qemu-io")) {
      const uri = `nbd+unix:///vm-1?socket=${socket}`;
      await qemuIo(["-f", "raw", "-c", "write -P 0x5a 0 64k", uri]);
      assert.match(
        await qemuIo(["-f", "raw", "-c", "read -P 0x5a 0 64k", uri]),
        /read 65536\/65536/,
      );
    } else {
      const device = await host.openVolume("vm-1");
      await device.write({ offsetBytes: 0, data: new Uint8Array(65536).fill(0x5a) });
    }
    const metricsUrl = `http://${status.metrics}`;
    const text = await (await fetch(`${metricsUrl}/metrics`)).text();
    assert.match(text, /hes_volume_ops_total\{volume="vm-1",op="write",node="1"\} [1-9]/);
    assert.match(text, /hes_volume_bytes_total\{volume="vm-1",op="write",node="1"\} 65536/);
    assert.match(text, /hes_volume_latency_seconds_bucket\{le="0\.0001",node="1",volume="vm-1"/);
    assert.match(text, /hes_disk_capacity_bytes\{disk="[^"]+",node="1"\} \d+/);
    const health = await fetch(`${metricsUrl}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { ok: boolean }).ok, true);
    await assert.rejects(host.export("vm-1", { unix: `${socket}.2` }), /HES_ALREADY_EXISTS/);
    await assert.rejects(host.export("vm-2", { tcp: "0.0.0.0:0" }), RangeError);
  } finally {
    await host.stop();
  }
  // Everything released: the ports are free and the store reopens on the same disk.
  const again = await Host.start(config, { components: {} });
  await again.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("the control and data planes refuse a peer without a cluster certificate", async () => {
  const { dir, config } = await freshNode();
  const host = await Host.start(config, { components: {} });
  try {
    const plain = createClient(ClusterAdminService, `127.0.0.1:${host.addresses.control.port}`);
    await assert.rejects(plain.getStatus({}, { deadlineMs: 2_000 }), /HES_UNAVAILABLE|HES_TIMEOUT/);
    plain.close();
    const stranger = tls.connect({
      host: "127.0.0.1",
      port: host.addresses.data.port,
      rejectUnauthorized: false,
    });
    const outcome = await new Promise<string>((resolve) => {
      stranger.on("error", (e) => resolve(`error ${e.message}`));
      stranger.on("close", () => resolve("closed"));
      stranger.on("secureConnect", () => stranger.write("HESF"));
    });
    assert.match(outcome, /closed|error/);
    stranger.destroy();
    // A plaintext connection to the TLS data plane gets nowhere either.
    const raw = netConnect(host.addresses.data.port, "127.0.0.1");
    raw.write("HESF not tls");
    await new Promise((resolve) => raw.on("close", resolve));
  } finally {
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a one-node cluster: the member elects itself, answers admin over mTLS, serves a volume", async () => {
  const { dir, config } = await freshNode();
  const host = await Host.start(config);
  try {
    const { loadTlsMaterial, grpcChannelCredentials } = await import("../src/index.js");
    const material = await loadTlsMaterial(config.tls as NonNullable<typeof config.tls>);
    const client = createClient(ClusterAdminService, `127.0.0.1:${host.addresses.control.port}`, {
      credentials: grpcChannelCredentials(material),
      channelOptions: { "grpc.ssl_target_name_override": "localhost" },
    });
    // Bounded wait: leader elected, map initialised, this node registered by its heartbeat.
    let ready = false;
    let leader = 0;
    for (let attempt = 0; attempt < 150 && !ready; attempt++) {
      const { status } = await client.getStatus({}, { deadlineMs: 5_000 });
      leader = status?.leaderId ?? 0;
      ready = leader === 1 && status?.clusterId === config.clusterId && status.nodes.length === 1;
      if (!ready) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(ready, `leader, map and node registration within 15 s (leader ${leader})`);
    await client.createVolume(
      { name: "vm-1", sizeBytes: 64n * 2n ** 20n, replicas: 1, chunkSizeBytes: 2n ** 20n * 64n },
      { deadlineMs: 10_000 },
    );
    client.close();
    const device = await host.openVolume("vm-1");
    await device.write({ offsetBytes: 4096, data: new Uint8Array(8192).fill(7), fua: true });
    const back = await device.read({ offsetBytes: 4096, lengthBytes: 8192 });
    assert.ok(back.every((b) => b === 7));
    assert.equal(host.health().ok, true);
    const text = await (await fetch(`http://${host.status().metrics}/metrics`)).text();
    assert.match(text, /hes_raft_leader_id\{node="1"\} 1/);
    assert.match(text, /hes_raft_term\{node="1"\} [1-9]/);
    assert.match(text, /hes_raft_commit_index\{node="1"\} [1-9]/);
    assert.match(text, /hes_volumes_open\{node="1"\} 1/);
  } finally {
    await host.stop();
  }
  // The data survives a restart of the whole host (store, Raft log and map on disk).
  const again = await Host.start(config);
  try {
    const device = await again.openVolume("vm-1");
    const back = await device.read({ offsetBytes: 4096, lengthBytes: 8192 });
    assert.ok(back.every((b) => b === 7));
  } finally {
    await again.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a bad config is refused naming the field, before anything is opened", async () => {
  const { dir, config } = await freshNode();
  await assert.rejects(Host.start({ ...config, nodeId: 0 as never }), /config\.nodeId/);
  await assert.rejects(
    Host.start({ ...config, tls: undefined as never }),
    /config\.tls: expected certificate paths/,
  );
  await assert.rejects(
    Host.start({ ...config, listen: { ...config.listen, control: "x:99999" as never } }),
    /config\.listen\.control/,
  );
  assert.equal(existsSync(join(config.dataDir, "index-0")), false, "nothing was opened");
  void grpc;
  rmSync(dir, { recursive: true, force: true });
});
