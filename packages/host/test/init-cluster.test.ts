/**
 * Goal: `initCluster` lays out a cluster whose configs validate, whose ports are distinct and
 * loopback, whose node certificates chain to the one CA, and which refuses bad input or a used
 * directory without writing anything. Method: run it into scratch directories and read back.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { initCluster, loadHostConfig } from "../src/index.js";

test("three nodes: valid configs, distinct loopback ports, certificates from one CA", async () => {
  const root = mkdtempSync(join(tmpdir(), "hes-init-"));
  try {
    const result = await initCluster({ nodes: 3, dir: join(root, "cluster") });
    assert.equal(result.configPaths.length, 3);
    const ca = new X509Certificate(readFileSync(result.caCertPath as string));
    const ports = new Set<number>();
    for (const [i, path] of result.configPaths.entries()) {
      const config = await loadHostConfig(path);
      assert.equal(config.nodeId, i + 1);
      assert.equal(config.clusterId, result.clusterId);
      assert.equal(config.peers.length, 3);
      assert.equal(config.insecureDevelopment, undefined);
      const listen = config.listen;
      for (const address of [listen.control, listen.data, listen.nbd, listen.metrics]) {
        assert.equal(address?.host, "127.0.0.1");
        assert.ok(!ports.has(address?.port as number), "ports are distinct");
        ports.add(address?.port as number);
      }
      const tls = config.tls as NonNullable<typeof config.tls>;
      const cert = new X509Certificate(readFileSync(tls.certPath));
      assert.ok(cert.verify(ca.publicKey));
      assert.equal(statSync(tls.keyPath).mode & 0o077, 0, "the key is private to its owner");
    }
    assert.equal(ports.size, 12);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("a non-empty directory or bad counts are refused and nothing is written", async () => {
  const root = mkdtempSync(join(tmpdir(), "hes-init-"));
  try {
    const used = join(root, "used");
    mkdirSync(used);
    writeFileSync(join(used, "keep"), "x");
    await assert.rejects(initCluster({ nodes: 3, dir: used }), /HES_ALREADY_EXISTS/);
    assert.deepEqual(readdirSync(used), ["keep"]);
    await assert.rejects(initCluster({ nodes: 0, dir: join(root, "a") }), RangeError);
    await assert.rejects(initCluster({ nodes: 1.5, dir: join(root, "a") }), RangeError);
    await assert.rejects(initCluster({ nodes: 3, dir: join(root, "a"), basePort: 80 }), RangeError);
    assert.deepEqual(readdirSync(root), ["used"], "no scratch directory is left behind");
    const empty = join(root, "empty");
    mkdirSync(empty);
    await initCluster({ nodes: 1, dir: empty, insecureDevelopment: true });
    const config = await loadHostConfig(join(empty, "node-1", "config.json"));
    assert.equal(config.insecureDevelopment, true);
    assert.equal(config.tls, undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("hosts: each node listens on its address and its certificate names it", async () => {
  const root = mkdtempSync(join(tmpdir(), "hes-init-"));
  try {
    const hosts = ["10.9.0.11", "10.9.0.12", "10.9.0.13"];
    const result = await initCluster({ nodes: 3, dir: join(root, "cluster"), hosts });
    for (const [i, path] of result.configPaths.entries()) {
      const config = await loadHostConfig(path);
      assert.equal(config.listen.control.host, hosts[i]);
      assert.equal(config.listen.data.host, hosts[i]);
      assert.deepEqual(
        config.peers.map((p) => p.control.host),
        hosts,
      );
      const cert = new X509Certificate(readFileSync(join(path, "..", "tls", "node.pem")));
      assert.ok(cert.checkIP(hosts[i] as string), `node ${i + 1} certificate names its address`);
      assert.ok(cert.checkIP("127.0.0.1"), "and loopback still");
      assert.equal(cert.checkIP(hosts[(i + 1) % 3] as string), undefined, "not another node's");
    }
    for (const bad of [["10.9.0.11"], ["10.9.0.11", "10.9.0.12", "10.9.0.300"], ["a", "b", "c"]]) {
      const dir = join(root, `bad-${bad.length}-${bad[2] ?? ""}`);
      await assert.rejects(initCluster({ nodes: 3, dir, hosts: bad }), RangeError);
      assert.equal(readdirSync(root).includes(`bad-${bad.length}-${bad[2] ?? ""}`), false);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
