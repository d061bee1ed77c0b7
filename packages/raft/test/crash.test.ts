/**
 * Goal: no acknowledged proposal is ever lost when members are killed with SIGKILL — not one
 * member, not the leader mid-write, not all three at once. Method: three members in three
 * processes (fixtures/crash-member.ts: RaftNode on level, gRPC on loopback); the leader
 * proposes values and reports each acknowledgement; members are killed with kill -9 while
 * writes are in flight, restarted from their directories, and every acknowledged value must
 * then be in every member's state machine, exactly once and in one order everywhere.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, test } from "node:test";

const root = mkdtempSync(join(tmpdir(), "hes-raft-crash-"));
after(() => rmSync(root, { recursive: true, force: true }));
const fixture = new URL("./fixtures/crash-member.ts", import.meta.url).pathname;

type Reply = Record<string, unknown>;

class Member {
  child: ChildProcess | undefined;
  private listeners: Array<(reply: Reply) => void> = [];
  constructor(
    readonly id: number,
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
  }

  on(listener: (reply: Reply) => void): void {
    this.listeners.push(listener);
  }

  next(match: (reply: Reply) => boolean, timeoutMs = 20_000): Promise<Reply> {
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

  async ask(command: object, key: string): Promise<Reply> {
    const reply = this.next((r) => key in r);
    this.child?.stdin?.write(`${JSON.stringify(command)}\n`);
    return reply;
  }

  kill(): void {
    this.child?.kill("SIGKILL");
    this.child = undefined;
    this.listeners = [];
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

async function leaderOf(members: Member[]): Promise<Member> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    for (const m of members) {
      const status = (await m.ask({ cmd: "status" }, "status")).status as { role: string };
      if (status.role === "leader") return m;
    }
    if (Date.now() > deadline) throw new Error("no leader");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("acknowledged proposals survive kill -9 of the leader and of every member", async () => {
  const ports = [await freePort(), await freePort(), await freePort()];
  const portMap = Object.fromEntries(ports.map((p, i) => [String(i + 1), p]));
  const members = [1, 2, 3].map(
    (id) => new Member(id, { id, ports: portMap, dir: join(root, `m${id}`) }),
  );
  const acked = new Set<number>();
  let first = 0;
  try {
    await Promise.all(members.map((m) => m.start()));
    for (const round of ["leader", "all", "leader", "all"] as const) {
      const leader = await leaderOf(members);
      leader.on((reply) => {
        if (typeof reply.acked === "number") acked.add(reply.acked);
      });
      const before = acked.size;
      leader.child?.stdin?.write(
        `${JSON.stringify({ cmd: "write", first, count: 100_000, depth: 16 })}\n`,
      );
      first += 100_000;
      // Kill once some writes were acknowledged, with more in flight.
      await leader.next((r) => typeof r.acked === "number" && acked.size >= before + 300);
      const victims = round === "leader" ? [leader] : members;
      for (const v of victims) v.kill();
      for (const v of victims) await v.start();
    }
    const leader = await leaderOf(members);
    // A fresh write commits only after everything before it: then compare every member.
    leader.child?.stdin?.write(
      `${JSON.stringify({ cmd: "write", first: -1, count: 1, depth: 1 })}\n`,
    );
    await leader.next((r) => r.acked === -1);
    const deadline = Date.now() + 20_000;
    let lists: number[][] = [];
    for (;;) {
      lists = await Promise.all(
        members.map(async (m) => (await m.ask({ cmd: "values" }, "values")).values as number[]),
      );
      if (lists.every((l) => l.includes(-1)) || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(acked.size >= 1200, `writes were acknowledged (${acked.size})`);
    for (const [i, values] of lists.entries()) {
      const present = new Set(values);
      assert.equal(present.size, values.length, `member ${i + 1} applied a value twice`);
      const lost = [...acked].filter((v) => !present.has(v));
      assert.deepEqual(
        lost.slice(0, 10),
        [],
        `member ${i + 1} lost ${lost.length} acknowledged values`,
      );
      assert.deepEqual(values, lists[0], `member ${i + 1} applied a different sequence`);
    }
  } finally {
    for (const m of members) m.kill();
  }
});
