/**
 * ClusterMember over the in-memory Raft network and in-memory forwarding (real level
 * storage in temp dirs): bootstrap (InitCluster once, every node registers itself),
 * proposals through followers with the map's refusals, sync after propose, subscribe,
 * restart recovery, leader isolation, liveness (mark down → rejoin report), deadlines.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type HesErrorCode, isHesError, type NodeId } from "@hes/base";
import { expectRejects } from "@hes/base/testing";
import { MemoryNetwork } from "@hes/raft";
import {
  ClusterMember,
  type ClusterMemberOptions,
  MemoryForwarding,
  type RejoinReport,
} from "@hes/replication";

const root = mkdtempSync(join(tmpdir(), "hes-runtime-"));
after(() => rmSync(root, { recursive: true, force: true }));
const GiB = 1024 ** 3;

function rejectsWith(promise: Promise<unknown>, code: HesErrorCode): Promise<unknown> {
  return expectRejects(promise, (e) => isHesError(e, code), code);
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

class Cluster {
  readonly network = new MemoryNetwork();
  readonly forwarding = new MemoryForwarding();
  readonly members = new Map<NodeId, ClusterMember>();
  readonly rejoins: Array<{ nodeId: NodeId; report: RejoinReport }> = [];
  readonly ids: NodeId[];

  constructor(
    readonly name: string,
    count: number,
    private readonly extra: Partial<ClusterMemberOptions> = {},
  ) {
    this.ids = Array.from({ length: count }, (_, i) => i + 1);
  }

  async start(id: NodeId, dataAddress = `mem-data:${id}`): Promise<ClusterMember> {
    const member = await ClusterMember.start({
      nodeId: id,
      clusterId: `cluster-${this.name}`,
      dataDir: join(root, this.name, `n${id}`),
      members: this.ids.map((nodeId) => ({ nodeId, controlAddress: `mem:${nodeId}` })),
      self: {
        controlAddress: `mem:${id}`,
        dataAddress,
        failureDomain: `rack-${id}`,
        disks: [{ diskId: `d${id}`, path: `/dev/d${id}`, capacityBytes: 100 * GiB }],
      },
      transport: this.network.transport(id),
      forwarder: this.forwarding.forwarder(id),
      raft: { tickMs: 10, electionTicks: 10, prngSeed: id },
      loops: { heartbeatIntervalMs: 100, repairIntervalMs: 200, rebalanceIntervalMs: 0 },
      onRejoin: (report) => this.rejoins.push({ nodeId: id, report }),
      ...this.extra,
    });
    this.forwarding.register(id, member);
    this.members.set(id, member);
    return member;
  }

  async startAll(): Promise<void> {
    for (const id of this.ids) await this.start(id);
    await waitFor("every node registered", () =>
      [...this.members.values()].every((m) =>
        this.ids.every((id) => m.view().node(id) !== undefined),
      ),
    );
  }

  async stop(id: NodeId): Promise<void> {
    const member = this.member(id);
    this.forwarding.unregister(id, member);
    this.members.delete(id);
    await member.stop();
  }

  async stopAll(): Promise<void> {
    for (const id of [...this.members.keys()]) await this.stop(id);
  }

  member(id: NodeId): ClusterMember {
    const member = this.members.get(id);
    assert.ok(member, `member ${id} runs`);
    return member;
  }

  leader(): ClusterMember | undefined {
    return [...this.members.values()].find((m) => m.isLeader());
  }

  async waitLeader(): Promise<ClusterMember> {
    await waitFor("a leader", () => this.leader() !== undefined);
    return this.leader() as ClusterMember;
  }

  follower(): ClusterMember {
    const found = [...this.members.values()].find((m) => !m.isLeader());
    assert.ok(found, "a follower");
    return found;
  }
}

describe("ClusterMember (memory network)", () => {
  test("bootstrap, proposals through a follower, refusals, sync, subscribe, restart", async () => {
    const cluster = new Cluster("basic", 3);
    await cluster.startAll();
    try {
      const leader = await cluster.waitLeader();
      assert.equal(leader.view().clusterId, "cluster-basic");
      const follower = cluster.follower();
      let notified = 0;
      const unsubscribe = follower.subscribe(() => notified++);

      const value = await follower.propose({
        kind: "createVolume",
        fields: { name: "vm1", sizeBytes: 10 * GiB },
      });
      assert.ok(value.volumeId !== undefined && value.volumeId > 0);
      // Resolved only after THIS member applied it.
      assert.equal(follower.view().volume(value.volumeId)?.name, "vm1");
      assert.ok(notified > 0, "subscribers hear of applied batches");
      unsubscribe();

      // The map's refusal comes back with the map's code, through forwarding.
      await rejectsWith(
        follower.propose({ kind: "createVolume", fields: { name: "vm1", sizeBytes: GiB } }),
        "HES_ALREADY_EXISTS",
      );
      await rejectsWith(
        follower.propose({ kind: "createVolume", fields: { name: "odd", sizeBytes: 4097 } }),
        "HES_INVALID_ARGUMENT",
      );
      // A caller bug is a RangeError before anything is proposed.
      await assert.rejects(
        follower.propose({ kind: "createVolume", fields: { name: "x", sizeBytes: 1.5 } }),
        RangeError,
      );
      await assert.rejects(
        follower.propose(
          { kind: "createVolume", fields: { name: "x", sizeBytes: GiB } },
          { deadlineMs: 0 },
        ),
        RangeError,
      );

      // A proposal on one member is visible on every other after sync (ReadIndex).
      const second = await leader.propose({
        kind: "createVolume",
        fields: { name: "vm2", sizeBytes: GiB },
      });
      for (const member of cluster.members.values()) {
        const view = await member.sync();
        assert.equal(view.volume(second.volumeId ?? 0)?.name, "vm2");
      }

      // The leader applied InitCluster once; every node registered with its disks.
      for (const id of cluster.ids) {
        const node = leader.view().node(id);
        assert.equal(node?.state, "up");
        assert.equal(node?.disks[0]?.capacityBytes, 100 * GiB);
      }

      // Restart everything from the data dirs: the map comes back whole.
      const before = leader.view().snapshot();
      const indexBefore = leader.view().appliedIndex;
      await cluster.stopAll();
      await cluster.startAll();
      const again = await cluster.waitLeader();
      const view = await again.sync();
      assert.equal(view.volumeByName("vm1")?.volumeId, value.volumeId);
      assert.equal(view.volumeByName("vm2")?.volumeId, second.volumeId);
      assert.ok(view.appliedIndex >= indexBefore);
      assert.ok(before.byteLength > 0);
      for (const member of cluster.members.values()) {
        assert.deepEqual(member.view().checkInvariants(), []);
      }
    } finally {
      await cluster.stopAll();
    }
  });

  test("an isolated leader is replaced; proposals keep working through the new one", async () => {
    const cluster = new Cluster("isolate", 3);
    await cluster.startAll();
    try {
      const old = await cluster.waitLeader();
      const others = cluster.ids.filter((id) => id !== old.nodeId);
      cluster.network.isolate(old.nodeId, others);
      cluster.forwarding.isolate(old.nodeId, others);
      await waitFor("a new leader", () => others.some((id) => cluster.member(id).isLeader()));
      const follower = cluster.member(others.find((id) => !cluster.member(id).isLeader()) ?? 0);
      const value = await follower.propose({
        kind: "createVolume",
        fields: { name: "after", sizeBytes: GiB },
      });
      // The cut-off old leader cannot commit anything: its proposal times out.
      await rejectsWith(
        old.propose(
          { kind: "createVolume", fields: { name: "lost", sizeBytes: GiB } },
          { deadlineMs: 500 },
        ),
        "HES_TIMEOUT",
      );
      cluster.network.heal();
      cluster.forwarding.heal();
      const view = await old.sync();
      assert.equal(view.volumeByName("after")?.volumeId, value.volumeId);
      assert.equal(view.volumeByName("lost"), undefined, "a timed-out proposal never reported ok");
    } finally {
      await cluster.stopAll();
    }
  });

  test("a silent node is marked down after the grace period and told what it missed", async () => {
    const cluster = new Cluster("liveness", 3, {});
    await cluster.startAll();
    try {
      const leader = await cluster.waitLeader();
      await leader.propose({ kind: "setConfig", fields: { gracePeriodMs: 1_000 } });
      const victim = cluster.ids.find((id) => id !== leader.nodeId) ?? 0;
      const created = await leader.propose({
        kind: "createVolume",
        fields: { name: "owned", sizeBytes: GiB },
      });
      const volumeId = created.volumeId ?? 0;
      await leader.propose({ kind: "openVolume", fields: { volumeId, nodeId: victim } });
      await cluster.stop(victim);
      await waitFor(
        "victim marked down",
        () => leader.view().node(victim)?.state === "down",
        8_000,
      );
      assert.equal(leader.view().volume(volumeId)?.ownerNodeId, 0, "its lease was revoked");
      await cluster.start(victim);
      await waitFor(
        "rejoin reported",
        () => cluster.rejoins.some((r) => r.nodeId === victim),
        8_000,
      );
      const report = cluster.rejoins.find((r) => r.nodeId === victim)?.report;
      assert.deepEqual(report?.revokedVolumeIds, [volumeId]);
      await waitFor("victim up again", () => leader.view().node(victim)?.state === "up");
    } finally {
      await cluster.stopAll();
    }
  });

  test("the leader re-places the replicas of a node marked down (repair loop)", async () => {
    const cluster = new Cluster("repair", 4);
    await cluster.startAll();
    try {
      const leader = await cluster.waitLeader();
      await leader.propose({ kind: "setConfig", fields: { gracePeriodMs: 1_000 } });
      const { volumeId = 0 } = await leader.propose({
        kind: "createVolume",
        fields: { name: "r", sizeBytes: GiB, chunkSizeBytes: 64 * 1024 ** 2, replicationFactor: 3 },
      });
      const { epoch = 0 } = await leader.propose({
        kind: "openVolume",
        fields: { volumeId, nodeId: leader.nodeId },
      });
      const { chunk } = await leader.propose({
        kind: "placeChunk",
        fields: { volumeId, chunkIndex: 0, epoch, preferredNodeId: leader.nodeId },
      });
      const holders = chunk?.replicas.map((r) => r.nodeId) ?? [];
      assert.equal(holders.length, 3);
      const victim = holders.find((id) => id !== leader.nodeId) ?? 0;
      const spare = cluster.ids.find((id) => !holders.includes(id)) ?? 0;
      await cluster.stop(victim);
      await waitFor(
        "a new replica on the spare node",
        () =>
          leader
            .view()
            .chunk(volumeId, 0)
            ?.replicas.some((r) => r.nodeId === spare) === true,
        10_000,
      );
      const after = leader.view().chunk(volumeId, 0);
      assert.equal(after?.replicas.find((r) => r.nodeId === spare)?.state, "filling");
      assert.equal(
        after?.replicas.some((r) => r.nodeId === victim),
        false,
      );
      assert.deepEqual(leader.view().checkInvariants(), []);
    } finally {
      await cluster.stopAll();
    }
  });

  test("a node restarted with a new data address updates its record", async () => {
    const cluster = new Cluster("update", 3);
    await cluster.startAll();
    try {
      await cluster.waitLeader();
      const id = cluster.ids[2] ?? 3;
      await cluster.stop(id);
      await cluster.start(id, "mem-data:moved");
      const other = cluster.member(cluster.ids[0] ?? 1);
      await waitFor(
        "the new address in the map",
        () => other.view().node(id)?.dataAddress === "mem-data:moved",
      );
      assert.equal(other.view().node(id)?.controlAddress, `mem:${id}`);
    } finally {
      await cluster.stopAll();
    }
  });

  test("without a quorum proposals fail by their deadline; only idempotent ones are retried", async () => {
    const cluster = new Cluster("quorum", 3);
    await cluster.startAll();
    try {
      await cluster.waitLeader();
      const survivor = cluster.ids[0] ?? 1;
      for (const id of cluster.ids) if (id !== survivor) await cluster.stop(id);
      const member = cluster.member(survivor);
      const started = Date.now();
      // Idempotent: retried (leader unknown, then unreachable) until the deadline.
      await rejectsWith(
        member.propose(
          { kind: "setConfig", fields: { gracePeriodMs: 5_000 } },
          { deadlineMs: 800 },
        ),
        "HES_TIMEOUT",
      );
      assert.ok(Date.now() - started < 5_000, "the deadline bounds the call");
      // Not idempotent: an unknown outcome is surfaced at once, never silently repeated.
      const error = await member
        .propose(
          { kind: "createVolume", fields: { name: "nq", sizeBytes: GiB } },
          { deadlineMs: 800 },
        )
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      assert.ok(
        isHesError(error, "HES_UNAVAILABLE") || isHesError(error, "HES_TIMEOUT"),
        `got ${String(error)}`,
      );
    } finally {
      await cluster.stopAll();
    }
  });
});
