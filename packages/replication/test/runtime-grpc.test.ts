/**
 * ClusterMember over real gRPC in one process: a founding member on a server owned by the
 * caller (the host's way), a second member that joins through an admin AddNode, admin calls
 * through the new member (writes forwarded, membership calls handed to the leader), and its
 * drain and removal. Also: no insecure default (credentials are required).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { credentials, ServerCredentials } from "@grpc/grpc-js";
import { isHesError } from "@hes/base";
import { expectRejects } from "@hes/base/testing";
import { bindServer, createServer } from "@hes/proto";
import { AdminClient, ClusterMember, type ClusterMemberOptions } from "@hes/replication";

const root = mkdtempSync(join(tmpdir(), "hes-runtime-grpc-"));
after(() => rmSync(root, { recursive: true, force: true }));
const GiB = 1024 ** 3;
const insecure = {
  server: ServerCredentials.createInsecure(),
  channel: credentials.createInsecure(),
};

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createNetServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        resolve(typeof address === "object" && address !== null ? address.port : 0),
      );
    });
  });
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function self(id: number, port: number): ClusterMemberOptions["self"] {
  return {
    controlAddress: `127.0.0.1:${port}`,
    dataAddress: `127.0.0.1:${port + 1}`,
    failureDomain: `rack-${id}`,
    disks: [{ diskId: `d${id}`, path: `/dev/d${id}`, capacityBytes: 100 * GiB }],
  };
}

test("credentials are required: there is no insecure default", async () => {
  await assert.rejects(
    ClusterMember.start({
      nodeId: 1,
      clusterId: "c",
      dataDir: join(root, "nocreds"),
      members: [{ nodeId: 1, controlAddress: "127.0.0.1:1" }],
      self: self(1, 1),
    }),
    TypeError,
  );
});

test("a member on the host's server; a second one joins through AddNode and leaves", async () => {
  const [port1, port2] = [await freePort(), await freePort()];
  const server = createServer();
  const first = await ClusterMember.start({
    nodeId: 1,
    clusterId: "grpc",
    dataDir: join(root, "m1"),
    members: [{ nodeId: 1, controlAddress: `127.0.0.1:${port1}` }],
    self: self(1, port1),
    credentials: insecure,
    server,
    raft: { tickMs: 20 },
    loops: { heartbeatIntervalMs: 200 },
  });
  await bindServer(server, `127.0.0.1:${port1}`, insecure.server);
  const second = await ClusterMember.start({
    nodeId: 2,
    clusterId: "grpc",
    join: true,
    dataDir: join(root, "m2"),
    members: [{ nodeId: 1, controlAddress: `127.0.0.1:${port1}` }],
    self: self(2, port2),
    credentials: insecure,
    raft: { tickMs: 20 },
    loops: { heartbeatIntervalMs: 200 },
  });
  const admin1 = AdminClient.connect(`127.0.0.1:${port1}`, { credentials: insecure.channel });
  const admin2 = AdminClient.connect(`127.0.0.1:${port2}`, { credentials: insecure.channel });
  try {
    await waitFor("member 1 registered", () => first.view().node(1) !== undefined);
    // Not a member yet: it knows no leader, so membership calls through it are refused.
    await expectRejects(
      admin2.addNode({ nodeId: 2, controlAddress: `127.0.0.1:${port2}` }),
      (e) => isHesError(e, "HES_NOT_LEADER") || isHesError(e, "HES_TIMEOUT"),
      "add through a non-member",
    );
    const added = await admin1.addNode({
      nodeId: 2,
      controlAddress: `127.0.0.1:${port2}`,
      dataAddress: `127.0.0.1:${port2 + 1}`,
      failureDomain: "rack-2",
      disks: [{ diskId: "d2", path: "/dev/d2", capacityBytes: 100 * GiB }],
    });
    assert.equal(added.nodeId, 2);
    const status = await admin2.status();
    assert.deepEqual(
      status.members.filter((m) => m.voter).map((m) => m.nodeId),
      [1, 2],
    );
    assert.equal(status.leaderId, 1);
    // Writes through the new member are forwarded to the leader.
    const volume = await admin2.createVolume({ name: "via-2", sizeBytes: GiB, replicas: 2 });
    assert.equal(second.view().volume(volume.volumeId)?.name, "via-2");
    await expectRejects(
      admin2.createVolume({ name: "bad", sizeBytes: 0 }),
      (e) => isHesError(e, "HES_INVALID_ARGUMENT") && /size_bytes/.test(String(e)),
      "size 0 names the field",
    );
    await expectRejects(
      admin2.drainNode(0),
      (e) => isHesError(e, "HES_INVALID_ARGUMENT") && /node_id/.test(String(e)),
      "node 0 names the field",
    );
    // Drain and remove node 2 through node 2 itself: handed to the leader.
    assert.equal((await admin2.drainNode(2)).nodeId, 2);
    await admin2.removeNode(2);
    await waitFor("node 2 removed", () => first.status().members.voters.length === 1);
    assert.equal(first.view().node(2)?.state, "removed");
  } finally {
    admin1.close();
    admin2.close();
    await second.stop();
    await first.stop();
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  }
});
