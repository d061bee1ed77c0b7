/**
 * Goal: prove the driver (RaftNode over level, in-memory transport) does what its API says:
 * proposals commit and apply everywhere, followers fail fast with a leader hint, ReadIndex
 * reads see completed writes, a full restart recovers state from disk, compaction and
 * InstallSnapshot bring a new member up, leadership moves on request, the leader can remove
 * itself, and bad input is refused without effect. Method: three or four real members in one
 * process with real level databases in a temporary directory and short ticks; every wait is
 * for a condition with a bound.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { isHesError, type NodeId } from "@hes/base";
import {
  type AppliedEntry,
  MemoryNetwork,
  RaftNode,
  type RaftNodeOptions,
  type StateMachine,
} from "@hes/raft";

const root = mkdtempSync(join(tmpdir(), "hes-raft-node-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirCounter = 0;

/** A key-value state machine: data is `key=value`; apply returns the previous value. */
class KvMachine implements StateMachine<string | undefined> {
  map = new Map<string, string>();
  appliedIndex = 0;
  apply(entry: AppliedEntry): string | undefined {
    const [key, value] = new TextDecoder().decode(entry.data).split("=") as [string, string];
    const previous = this.map.get(key);
    this.map.set(key, value);
    this.appliedIndex = entry.index;
    return previous;
  }
  snapshot(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify([...this.map]));
  }
  restore(data: Uint8Array, meta: { index: number }): void {
    this.map = new Map(JSON.parse(new TextDecoder().decode(data)) as Array<[string, string]>);
    this.appliedIndex = meta.index;
  }
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

interface Cluster {
  network: MemoryNetwork;
  nodes: Map<NodeId, RaftNode<string | undefined>>;
  machines: Map<NodeId, KvMachine>;
  dirs: Map<NodeId, string>;
}

// Fast ticks, but an election timeout (0.5–1 s) that a loaded CI machine's event-loop stalls do
// not reach: these tests assume one leader throughout; elections are the simulator's business.
const FAST = {
  tickMs: 10,
  electionTicks: 50,
  heartbeatTicks: 1,
};

async function startMember(
  cluster: Cluster,
  id: NodeId,
  extra: Partial<RaftNodeOptions<string | undefined>> = {},
): Promise<RaftNode<string | undefined>> {
  let dir = cluster.dirs.get(id);
  if (dir === undefined) {
    dir = join(root, `member-${dirCounter++}`);
    cluster.dirs.set(id, dir);
  }
  const machine = new KvMachine();
  const node = await RaftNode.start<string | undefined>({
    id,
    storageDir: dir,
    transport: cluster.network.transport(id),
    stateMachine: machine,
    prngSeed: id,
    ...FAST,
    ...extra,
  });
  cluster.nodes.set(id, node);
  cluster.machines.set(id, machine);
  return node;
}

async function startCluster(
  ids: NodeId[],
  extra: Partial<RaftNodeOptions<string | undefined>> = {},
): Promise<Cluster> {
  const cluster: Cluster = {
    network: new MemoryNetwork(),
    nodes: new Map(),
    machines: new Map(),
    dirs: new Map(),
  };
  for (const id of ids) await startMember(cluster, id, { peers: ids, ...extra });
  return cluster;
}

async function leaderOf(cluster: Cluster): Promise<RaftNode<string | undefined>> {
  let leader: RaftNode<string | undefined> | undefined;
  await waitFor("a leader", () => {
    leader = [...cluster.nodes.values()].find((n) => n.status().role === "leader");
    return leader !== undefined;
  });
  return leader as RaftNode<string | undefined>;
}

async function stopAll(cluster: Cluster): Promise<void> {
  await Promise.all([...cluster.nodes.values()].map((n) => n.stop()));
}

const put = (text: string): Uint8Array => new TextEncoder().encode(text);

describe("RaftNode", () => {
  test("proposals commit and apply on every member; followers fail fast", async () => {
    const cluster = await startCluster([1, 2, 3]);
    try {
      const leader = await leaderOf(cluster);
      const outcomes = await Promise.all(
        Array.from({ length: 100 }, (_, i) => leader.propose(put(`k${i % 10}=v${i}`))),
      );
      const indices = outcomes.map((o) => o.index);
      assert.deepEqual(
        indices,
        [...indices].sort((a, b) => a - b),
        "indices in proposal order",
      );
      assert.equal(outcomes[99]?.result, "v89", "result is the state machine's return value");
      const last = indices[99] as number;
      await waitFor("all applied", () =>
        [...cluster.machines.values()].every((m) => m.appliedIndex >= last),
      );
      for (const machine of cluster.machines.values()) assert.equal(machine.map.get("k9"), "v99");

      // The leader's view of each member's durable log: all reach the last entry; only the
      // leader answers, and a bad id is refused.
      const ids = [...cluster.nodes.keys()];
      await waitFor("every match index at the last entry", () =>
        ids.every((id) => (leader.matchOf(id) ?? 0) >= last),
      );
      const follower = [...cluster.nodes.values()].find((n) => n !== leader);
      assert.ok(follower);
      assert.equal(follower.matchOf(leader.status().id), undefined);
      assert.equal(leader.matchOf(9), undefined, "no such member");
      assert.throws(() => leader.matchOf(0), RangeError);
      await assert.rejects(follower.propose(put("x=1")), (error) => {
        assert.ok(isHesError(error, "HES_NOT_LEADER"));
        assert.equal(error.details.leaderHint, leader.status().id);
        return true;
      });
    } finally {
      await stopAll(cluster);
    }
  });

  test("readIndex on a follower reflects a completed write", async () => {
    const cluster = await startCluster([1, 2, 3]);
    try {
      const leader = await leaderOf(cluster);
      const follower = [...cluster.nodes.entries()].find(([, n]) => n !== leader);
      assert.ok(follower);
      const [followerId, followerNode] = follower;
      for (let i = 0; i < 20; i++) {
        const write = await leader.propose(put(`x=${i}`));
        const { index } = await followerNode.readIndex();
        assert.ok(index >= write.index, `read index ${index} covers the write at ${write.index}`);
        assert.equal(cluster.machines.get(followerId)?.map.get("x"), `${i}`, "never stale");
      }
    } finally {
      await stopAll(cluster);
    }
  });

  test("a follower's read asked of a leader that died fails at the next leader, not at its timeout", async () => {
    // A request timeout far beyond the test's bounds: without the fix the read would only
    // end with HES_TIMEOUT after it (the takeover after a leader's death waited 3 s for it).
    const cluster = await startCluster([1, 2, 3], { requestTimeoutTicks: 100_000 });
    try {
      const leader = await leaderOf(cluster);
      await leader.propose(put("a=1"));
      const oldId = leader.status().id;
      const followerId = ([1, 2, 3] as NodeId[]).find((id) => id !== oldId) as NodeId;
      const follower = cluster.nodes.get(followerId) as RaftNode<string | undefined>;
      await leader.stop(); // its ReadIndex messages are lost from now on
      assert.equal(follower.status().leaderId, oldId, "the follower still follows the dead leader");
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        follower.readIndex().then(
          () => "confirmed",
          (error: unknown) => (isHesError(error, "HES_NOT_LEADER") ? "not-leader" : String(error)),
        ),
        new Promise<string>((resolve) => {
          timer = setTimeout(() => resolve("still pending after 10 s"), 10_000);
        }),
      ]);
      clearTimeout(timer);
      assert.equal(outcome, "not-leader");
      assert.notEqual(follower.status().leaderId, oldId, "failed once the leader changed");
      await waitFor("a new leader", () =>
        [...cluster.nodes.values()].some((n) => n !== leader && n.status().role === "leader"),
      );
      const { index } = await follower.readIndex(); // and the retry is served by the new one
      assert.ok(index >= 1);
    } finally {
      await stopAll(cluster);
    }
  });

  test("a full restart recovers the log and state machine from disk", async () => {
    const cluster = await startCluster([1, 2, 3], { snapshotEntriesInterval: 25 });
    let committed: number;
    try {
      const leader = await leaderOf(cluster);
      for (let i = 0; i < 60; i++) await leader.propose(put(`k${i % 7}=v${i}`));
      committed = leader.status().commitIndex;
    } finally {
      // A failure above must not leave members (and their timers) running: the file would hang.
      await stopAll(cluster);
    }
    for (const id of [1, 2, 3]) await startMember(cluster, id);
    try {
      const again = await leaderOf(cluster);
      assert.ok(again.status().term >= 2, "a new term after the restart");
      await again.propose(put("after=restart"));
      await waitFor("state rebuilt", () =>
        [...cluster.machines.values()].every(
          (m) => m.map.get("after") === "restart" && m.appliedIndex > committed,
        ),
      );
      for (const machine of cluster.machines.values()) {
        assert.equal(machine.map.get("k3"), "v59", "entries from before the restart survive");
      }
    } finally {
      await stopAll(cluster);
    }
  });

  test("a new member catches up from a raftSnapshot and becomes a voter", async () => {
    const cluster = await startCluster([1, 2, 3], { snapshotEntriesInterval: 10 });
    try {
      const leader = await leaderOf(cluster);
      for (let i = 0; i < 50; i++) await leader.propose(put(`k${i}=v${i}`));
      await startMember(cluster, 4, { snapshotEntriesInterval: 10 });
      await leader.addVoter(4);
      assert.deepEqual(leader.status().members.voters, [1, 2, 3, 4]);
      await leader.propose(put("k50=v50"));
      await waitFor("member 4 applied", () => cluster.machines.get(4)?.map.get("k50") === "v50");
      assert.equal(cluster.machines.get(4)?.map.get("k0"), "v0", "history came by snapshot");
    } finally {
      await stopAll(cluster);
    }
  });

  test("leadership transfer, then the leader removes itself", async () => {
    const cluster = await startCluster([1, 2, 3]);
    try {
      const leader = await leaderOf(cluster);
      await leader.propose(put("a=1"));
      const leaderId = leader.status().id;
      const target = ([1, 2, 3] as NodeId[]).find((id) => id !== leaderId) as NodeId;
      await leader.transferLeadership(target);
      await waitFor("target leads", () => cluster.nodes.get(target)?.status().role === "leader");
      const newLeader = cluster.nodes.get(target) as RaftNode<string | undefined>;
      await newLeader.removeMember(target);
      const rest = ([1, 2, 3] as NodeId[]).filter((id) => id !== target);
      await waitFor("a remaining member leads", () =>
        rest.some((id) => cluster.nodes.get(id)?.status().role === "leader"),
      );
      const next = rest
        .map((id) => cluster.nodes.get(id))
        .find((n) => n?.status().role === "leader");
      assert.ok(next);
      assert.deepEqual(next.status().members.voters, rest);
      await next.propose(put("b=2"));
    } finally {
      await stopAll(cluster);
    }
  });

  test("bad input is refused and changes nothing", async () => {
    const cluster = await startCluster([1]);
    try {
      const leader = await leaderOf(cluster);
      const before = leader.status().commitIndex;
      assert.throws(() => leader.propose("x" as unknown as Uint8Array), TypeError);
      assert.throws(() => leader.propose(new Uint8Array(2 * 1024 * 1024)), RangeError);
      await assert.rejects(leader.removeMember(0), RangeError);
      const aborted = AbortSignal.abort();
      assert.throws(
        () => leader.propose(put("a=1"), { signal: aborted }),
        (e) => isHesError(e, "HES_ABORTED"),
      );
      assert.equal(leader.status().commitIndex, before);
      await assert.rejects(
        RaftNode.start({
          id: 1,
          peers: [2],
          storageDir: root,
          transport: cluster.network.transport(9),
          stateMachine: new KvMachine(),
        }),
        RangeError,
      );
    } finally {
      await stopAll(cluster);
    }
  });

  test("a storage directory of another member is refused", async () => {
    const cluster = await startCluster([1]);
    await leaderOf(cluster);
    await stopAll(cluster);
    await assert.rejects(
      RaftNode.start({
        id: 2,
        storageDir: cluster.dirs.get(1) as string,
        transport: cluster.network.transport(2),
        stateMachine: new KvMachine(),
      }),
      (e) => isHesError(e, "HES_BAD_FORMAT"),
    );
  });
});
