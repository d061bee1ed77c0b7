/**
 * Three ClusterMembers in three processes on 127.0.0.1 over gRPC (fixtures/runtime-member.ts).
 *
 * 1. The admin service end to end through the typed AdminClient: status, volume create / get /
 *    list / resize / delete, snapshots, clones, config; refusals keep their HesError codes and
 *    bad requests name the field.
 * 2. Volumes are created through followers while the leader is killed with SIGKILL; a new
 *    leader takes over; every acknowledged volume exists on all three maps once the killed
 *    member is restarted and has caught up.
 *
 * Diagnostics report proposal latency through a follower and on the leader, and the time from
 * the kill to the first acknowledged proposal.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, test } from "node:test";
import { credentials } from "@grpc/grpc-js";
import { type HesErrorCode, isHesError } from "@hes/base";
import { expectRejects } from "@hes/base/testing";
import { AdminClient } from "@hes/replication";

const root = mkdtempSync(join(tmpdir(), "hes-runtime-cluster-"));
after(() => rmSync(root, { recursive: true, force: true }));
const fixture = new URL("./fixtures/runtime-member.ts", import.meta.url).pathname;
const GiB = 1024 ** 3;

type Reply = Record<string, unknown>;

class Member {
  child: ChildProcess | undefined;
  admin: AdminClient | undefined;
  private listeners: Array<(reply: Reply) => void> = [];
  constructor(
    readonly id: number,
    readonly port: number,
    private readonly config: object,
  ) {}

  async start(): Promise<void> {
    const child = spawn(
      process.execPath,
      [...process.execArgv, fixture, JSON.stringify(this.config)],
      {
        stdio: ["pipe", "pipe", "inherit"],
      },
    );
    this.child = child;
    const ready = this.next((r) => "ready" in r);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const reply = JSON.parse(line) as Reply;
      for (const listener of [...this.listeners]) listener(reply);
    });
    await ready;
    this.admin = AdminClient.connect(`127.0.0.1:${this.port}`, {
      credentials: credentials.createInsecure(),
      deadlineMs: 5_000,
    });
  }

  next(match: (reply: Reply) => boolean, timeoutMs = 30_000): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`member ${this.id}: no reply`)), timeoutMs);
      const listener = (reply: Reply): void => {
        if (!match(reply)) return;
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== listener);
        resolve(reply);
      };
      this.listeners.push(listener);
    });
  }

  async ask(command: object, key: string, timeoutMs = 30_000): Promise<Reply> {
    const reply = this.next((r) => key in r, timeoutMs);
    this.child?.stdin?.write(`${JSON.stringify(command)}\n`);
    return reply;
  }

  kill(): void {
    this.admin?.close();
    this.admin = undefined;
    this.child?.kill("SIGKILL");
    this.child = undefined;
    this.listeners = [];
  }

  client(): AdminClient {
    assert.ok(this.admin, `member ${this.id} runs`);
    return this.admin;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        resolve(typeof address === "object" && address !== null ? address.port : 0),
      );
    });
  });
}

async function waitFor(what: string, condition: () => Promise<boolean>, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function leaderOf(members: Member[]): Promise<Member> {
  let leader: Member | undefined;
  await waitFor("a leader", async () => {
    for (const m of members) {
      if (m.child === undefined) continue;
      const status = (await m.ask({ cmd: "status" }, "status")).status as { role: string };
      if (status.role === "leader") leader = m;
    }
    return leader !== undefined;
  });
  return leader as Member;
}

function rejectsWith(promise: Promise<unknown>, code: HesErrorCode): Promise<unknown> {
  return expectRejects(promise, (e) => isHesError(e, code), code);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;
}

test("three processes: admin API, leader killed during volume creation, catch-up", async (t) => {
  const ports = [await freePort(), await freePort(), await freePort()];
  const portMap = Object.fromEntries(ports.map((p, i) => [String(i + 1), p]));
  const members = [1, 2, 3].map(
    (id) =>
      new Member(id, ports[id - 1] ?? 0, {
        id,
        ports: portMap,
        dir: join(root, `m${id}`),
        clusterId: "three",
      }),
  );
  try {
    await Promise.all(members.map((m) => m.start()));
    const first = members[0] as Member;
    await waitFor("all three registered", async () => {
      const status = await first.client().status();
      return status.nodes.length === 3 && status.leaderId !== 0;
    });

    // ---- The admin API through any member ----
    const admin = first.client();
    const status = await admin.status();
    assert.equal(status.clusterId, "three");
    assert.equal(status.members.filter((m) => m.voter).length, 3);
    const created = await admin.createVolume({ name: "a", sizeBytes: 4 * GiB, replicas: 3 });
    assert.equal(created.sizeBytes, 4 * GiB);
    assert.equal(created.health?.chunksDegraded, 0);
    await rejectsWith(admin.createVolume({ name: "a", sizeBytes: GiB }), "HES_ALREADY_EXISTS");
    // The leader reports each voter's match index from its progress: all three catch up to
    // the commit index (the heartbeats carry it), and no follower is ahead of the leader.
    const leaderAdmin = (await leaderOf(members)).client();
    await waitFor("every member's match index at the commit index", async () => {
      const s = await leaderAdmin.status();
      const voters = s.members.filter((m) => m.voter);
      return voters.length === 3 && voters.every((m) => m.matchIndex >= s.commitIndex);
    });
    const byLeader = await leaderAdmin.status();
    const leaderMatch = byLeader.members.find((m) => m.nodeId === byLeader.leaderId)?.matchIndex;
    assert.ok(leaderMatch !== undefined && leaderMatch > 0);
    for (const m of byLeader.members) assert.ok(m.matchIndex <= leaderMatch, `${m.nodeId}`);
    const bad = await expectRejects(
      admin.createVolume({ name: "", sizeBytes: GiB }),
      (e) => isHesError(e, "HES_INVALID_ARGUMENT"),
      "empty name",
    );
    assert.match(String(bad), /name/);
    await rejectsWith(admin.getVolume("nope"), "HES_NOT_FOUND");
    assert.equal((await admin.resizeVolume("a", 8 * GiB)).sizeBytes, 8 * GiB);
    const snap = await admin.createSnapshot("a", "s1");
    assert.equal(snap.name, "s1");
    assert.deepEqual(
      (await admin.listSnapshots("a")).map((s) => s.name),
      ["s1"],
    );
    const clone = await admin.cloneVolume("a", "s1", "a-clone");
    assert.equal(clone.parentVolumeId, created.volumeId);
    await admin.deleteVolume("a-clone");
    assert.equal((await admin.setConfig({ gracePeriodMs: 60_000 })).gracePeriodMs, 60_000);
    // Another member sees it all after its own sync.
    const other = (members[1] as Member).client();
    assert.deepEqual(
      (await other.listVolumes()).map((v) => v.name),
      ["a"],
    );

    // ---- Latency: through a follower and on the leader ----
    const leader = await leaderOf(members);
    const follower = members.find((m) => m !== leader) as Member;
    for (const [who, member] of [
      ["leader", leader],
      ["follower", follower],
    ] as const) {
      const reply = (await member.ask({ cmd: "bench", count: 100, prefix: who }, "bench"))
        .bench as {
        latenciesUs: number[];
      };
      const sorted = [...reply.latenciesUs].sort((x, y) => x - y);
      t.diagnostic(
        `proposal latency on the ${who}: p50 ${percentile(sorted, 50)} µs, ` +
          `p99 ${percentile(sorted, 99)} µs (100 sequential createVolume)`,
      );
    }

    // ---- Kill the leader while volumes are created through the followers ----
    const acked = new Set<string>();
    let killedAt = 0;
    let firstAfterKillMs = -1;
    let i = 0;
    const survivors = members.filter((m) => m !== leader);
    const create = async (member: Member): Promise<boolean> => {
      const name = `v${i++}`;
      try {
        await member.client().createVolume({ name, sizeBytes: GiB }, { deadlineMs: 10_000 });
        acked.add(name);
        if (killedAt !== 0 && firstAfterKillMs < 0) firstAfterKillMs = Date.now() - killedAt;
        return true;
      } catch (error) {
        // Outcome unknown (leader died mid-call) or a no-leader window: not acknowledged.
        assert.ok(
          isHesError(error, "HES_UNAVAILABLE") ||
            isHesError(error, "HES_TIMEOUT") ||
            isHesError(error, "HES_NOT_LEADER"),
          `unexpected ${String(error)}`,
        );
        return false;
      }
    };
    // Each writer makes 60 attempts, and keeps going (bounded) until one succeeds after the
    // kill: attempts during the election fail fast, and a loaded machine may use up all 60.
    const afterKillDeadlineMs = 20_000;
    const writers = survivors.map(async (member, w) => {
      for (
        let n = 0;
        n < 60 ||
        (killedAt !== 0 && firstAfterKillMs < 0 && Date.now() - killedAt < afterKillDeadlineMs);
        n++
      ) {
        const ok = await create(member);
        if (!ok) await new Promise((resolve) => setTimeout(resolve, 20));
        if (w === 0 && n === 15) {
          killedAt = Date.now();
          leader.kill();
        }
      }
    });
    await Promise.all(writers);
    assert.ok(firstAfterKillMs >= 0, "proposals succeed after the leader was killed");
    t.diagnostic(
      `failover: ${firstAfterKillMs} ms from SIGKILL of the leader to the first acknowledged ` +
        `proposal (election timeout 500–1000 ms); ${acked.size} of ${i} volumes acknowledged`,
    );
    const newLeader = await leaderOf(survivors);
    assert.notEqual(newLeader, leader);

    // ---- Restart the killed member: it catches up; every acknowledged volume everywhere ----
    await leader.start();
    for (const member of members) {
      await waitFor(`member ${member.id} holds every acknowledged volume`, async () => {
        const names = new Set(
          ((await member.ask({ cmd: "volumes" }, "volumes")).volumes as string[]) ?? [],
        );
        return [...acked].every((name) => names.has(name));
      });
      const listed = new Set((await member.client().listVolumes()).map((v) => v.name));
      for (const name of acked) assert.ok(listed.has(name), `${name} on member ${member.id}`);
    }
  } finally {
    for (const m of members) m.kill();
  }
});
