/**
 * Goal: the namespaces, bridge and iptables partitions do what the scenarios rely on. Method:
 * a real TCP echo server in node 1's namespace, probed from node 2's and the client's;
 * a partition must block node 2 (both ways, and one way), loss must be installable, healing
 * must restore the link, and a leftover topology must be cleaned by the next create.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { faultSuiteUnavailable, run, runQuiet, waitFor } from "../lib/exec.js";
import { cutOneWay, heal, loss, partition, rules } from "../lib/net-faults.js";
import { ManagedProcess } from "../lib/process.js";
import { Topology } from "../lib/topology.js";

const skip = faultSuiteUnavailable();
const targets = new URL("../targets/", import.meta.url).pathname;
let topology: Topology;
let logDir: string;
let server: ManagedProcess;

async function probe(from: string, host: string): Promise<boolean> {
  const out = await runQuiet("ip", [
    ...["netns", "exec", from, process.execPath],
    ...[join(targets, "tcp-probe.mjs"), host, "7000", "700"],
  ]);
  return out?.trim() === "ok";
}

before(async () => {
  if (skip !== undefined) return;
  logDir = mkdtempSync(join(tmpdir(), "hesf-topo-"));
  topology = await Topology.create({ nodes: 3, prefix: "hest" });
  const n1 = topology.node(1);
  server = ManagedProcess.spawn({
    namespace: n1.namespace,
    command: process.execPath,
    args: [join(targets, "echo-server.mjs"), n1.address, "7000"],
    logDir,
    name: "echo",
  });
  await waitFor(
    "echo server",
    () => (readFileSync(server.stdoutPath, "utf8").includes("listening") ? true : undefined),
    10_000,
  );
});

after(async () => {
  if (skip !== undefined) return;
  await server?.kill9();
  await topology?.destroy();
  rmSync(logDir, { recursive: true, force: true });
});

test("nodes and the client reach each other over the bridge", { skip }, async () => {
  const n1 = topology.node(1);
  assert.equal(await probe(topology.node(2).namespace, n1.address), true);
  assert.equal(await probe(topology.client.namespace, n1.address), true);
  // The root namespace is not on the bridge: isolation from the host network is real.
  assert.equal(await probe("hest-n3", "127.0.0.1"), false);
});

test("a partition blocks, a one-way cut blocks, heal restores", { skip }, async () => {
  const [n1, n2, n3] = [topology.node(1), topology.node(2), topology.node(3)];
  await partition([[n1], [n2, n3]]);
  assert.equal(await probe(n2.namespace, n1.address), false);
  assert.equal(await probe(topology.client.namespace, n1.address), true, "client not in a group");
  await heal(topology.nodes);
  assert.deepEqual(await rules(n1), []);
  assert.equal(await probe(n2.namespace, n1.address), true);
  await cutOneWay(n1, n3); // replies from n1 to n3 are lost: n3's connection cannot complete
  assert.equal(await probe(n3.namespace, n1.address), false);
  assert.equal(await probe(n2.namespace, n1.address), true);
  await heal(topology.nodes);
  assert.equal(await probe(n3.namespace, n1.address), true);
});

test("loss installs a random-drop rule and refuses a bad probability", { skip }, async () => {
  const n2 = topology.node(2);
  await loss(n2, 0.3);
  assert.match((await rules(n2)).join("\n"), /statistic --mode random --probability 0\.(3|29)/);
  await assert.rejects(loss(n2, 1.5), RangeError);
  await heal(topology.nodes);
  await loss(n2, 0.999); // near-total loss must actually stop traffic
  assert.equal(await probe(n2.namespace, topology.node(1).address), false);
  await heal(topology.nodes);
  assert.equal(await probe(n2.namespace, topology.node(1).address), true);
});

test("create cleans up what a crashed run left behind", { skip }, async () => {
  // A leftover namespace with a live process in it, as a kill -9'd runner would leave.
  await runQuiet("ip", ["netns", "add", "hesl-n1"]);
  const orphan = ManagedProcess.spawn({
    namespace: "hesl-n1",
    command: "sleep",
    args: ["600"],
    logDir,
    name: "orphan",
  });
  await waitFor(
    "orphan in namespace",
    async () => {
      const pids = await run("ip", ["netns", "pids", "hesl-n1"]);
      return pids.trim() !== "" ? true : undefined;
    },
    5_000,
  );
  const fresh = await Topology.create({ nodes: 1, prefix: "hesl" });
  assert.equal((await orphan.exited).signal, "SIGKILL");
  await fresh.destroy();
  const left = await run("ip", ["netns", "list"]);
  assert.doesNotMatch(left, /hesl-/);
});
