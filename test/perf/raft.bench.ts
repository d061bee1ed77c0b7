/**
 * Raft benchmark: three members in three processes on loopback, level storage, gRPC
 * transport, election timeout 1 s (10 ticks of 100 ms), heartbeat 100 ms. Measures committed
 * proposals per second and commit latency (propose → applied on the leader) for 64 B and
 * 4 KiB payloads at 1 and 64 outstanding, then leader failover over KILLS kill -9s of the
 * leader, from the kill to the first new proposal committed by the new leader. Beside it, in
 * the same run, fio's write+fdatasync latency for 4 KiB on the same disk: the floor of one
 * commit.
 *
 * Back of the envelope. One commit at 1 outstanding is, in sequence: the leader's level
 * batch with fdatasync, one gRPC hop (~0.3 ms here, TOOLCHAIN.md), a follower's fdatasync, the
 * hop back, then the leader's apply. So ≈ 2 × fdatasync + 2 × 0.3 ms + a few 0.1 ms of
 * JavaScript. At 64 outstanding, a Ready batches every proposal that arrived during the
 * previous sync, so throughput ≈ batch size / (2 × fdatasync + RTT) and is bounded by CPU:
 * protobuf encoding, level and gRPC cost ~20–50 µs per small entry on this 2-core VM shared by
 * three members, i.e. roughly 10,000–30,000 entries/s. Failover ≈ the randomized election
 * timeout (1–2 s) + a pre-vote and a vote round (ms) + one commit.
 *
 *   pnpm bench raft          (env: SECONDS per load case, default 5; KILLS, default 20;
 *                             CPU_PROF=<dir>: members write CPU profiles there on a clean stop)
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { loadavg } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { type LoadResult, percentile, printHeader } from "./common.js";

const SECONDS = Number(process.env.SECONDS ?? 5);
const KILLS = Number(process.env.KILLS ?? 20);
const TICK_MS = 100;
const ELECTION_TICKS = 10;

printHeader("raft: 3 members × 3 processes, level + gRPC on loopback", {
  seconds: SECONDS,
  kills: KILLS,
  tickMs: TICK_MS,
  electionTicks: ELECTION_TICKS,
  heartbeatTicks: 1,
  payloads: [64, 4096],
  depths: [1, 64],
});

// The members' storage and fio's file live on the same disk (/var/tmp is not tmpfs here).
const root = mkdtempSync("/var/tmp/hes-raft-bench-");
const nowMs = (): number => performance.timeOrigin + performance.now();

interface FioLatency {
  readonly syncP50Ms: number;
  readonly syncP99Ms: number;
  readonly writeP50Ms: number;
  readonly iops: number;
}

function fioFdatasync(): FioLatency {
  const file = join(root, "fio.dat");
  const out = execFileSync("fio", [
    "--name=fdatasync-4k",
    `--filename=${file}`,
    "--rw=write",
    "--bs=4k",
    "--size=64m",
    "--ioengine=sync",
    "--fdatasync=1",
    "--time_based=1",
    "--runtime=5",
    "--output-format=json",
  ]).toString();
  rmSync(file, { force: true });
  /** The part of fio's JSON output read here. */
  interface FioJob {
    readonly sync: { readonly lat_ns: { readonly percentile: Record<string, number> } };
    readonly write: {
      readonly clat_ns: { readonly percentile: Record<string, number> };
      readonly iops: number;
    };
  }
  const job = (JSON.parse(out) as { jobs: FioJob[] }).jobs[0] as FioJob;
  const sync = job.sync.lat_ns.percentile;
  const write = job.write.clat_ns.percentile;
  return {
    syncP50Ms: (sync["50.000000"] ?? Number.NaN) / 1e6,
    syncP99Ms: (sync["99.000000"] ?? Number.NaN) / 1e6,
    writeP50Ms: (write["50.000000"] ?? Number.NaN) / 1e6,
    iops: job.write.iops,
  };
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

type Reply = Record<string, unknown>;

/** One member process and its line protocol. */
class Member {
  child: ChildProcess | undefined;
  /** Starts with RaftNode's leaderAppendsBeforePersist set this way. */
  early = false;
  private waiting: Array<{ key: string; resolve: (reply: Reply) => void }> = [];
  private listeners: Array<(reply: Reply) => void> = [];

  constructor(
    readonly id: number,
    private readonly config: object,
  ) {}

  async start(): Promise<void> {
    const child = spawn(
      process.execPath,
      [
        ...process.execArgv,
        // CPU_PROF=<dir>: each member writes a V8 CPU profile there when it stops cleanly.
        ...(process.env.CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.CPU_PROF}`] : []),
        new URL("./raft/member.ts", import.meta.url).pathname,
        JSON.stringify(this.config),
      ],
      { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, UV_THREADPOOL_SIZE: "16" } },
    );
    this.child = child;
    this.waiting = [];
    const ready = new Promise<void>((resolve) => {
      this.listeners.push((reply) => {
        if ("ready" in reply) resolve();
      });
    });
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const reply = JSON.parse(line) as Reply;
      for (const listener of this.listeners) listener(reply);
      const i = this.waiting.findIndex((w) => w.key in reply);
      if (i >= 0) this.waiting.splice(i, 1)[0]?.resolve(reply);
    });
    await ready;
  }

  request(command: object, key: string): Promise<Reply> {
    return new Promise((resolve) => {
      this.waiting.push({ key, resolve });
      this.child?.stdin?.write(`${JSON.stringify(command)}\n`);
    });
  }

  send(command: object): void {
    this.child?.stdin?.write(`${JSON.stringify(command)}\n`);
  }

  onEvent(listener: (reply: Reply) => void): () => void {
    this.listeners.push(listener);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  async status(): Promise<{
    role: string;
    term: number;
    leaderId: number;
    commitIndex: number;
    appliedIndex: number;
  }> {
    return (await this.request({ cmd: "status" }, "status")).status as never;
  }

  kill(): void {
    this.child?.kill("SIGKILL");
    this.child = undefined;
  }
}

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The leader, once every live member agrees on it and has applied what it committed. */
async function settledLeader(members: Member[]): Promise<Member> {
  return waitFor("a settled leader", async () => {
    const statuses = await Promise.all(members.map((m) => m.status()));
    const leaderAt = statuses.findIndex((s) => s.role === "leader");
    const leader = statuses[leaderAt];
    if (leader === undefined) return undefined;
    const agreed = statuses.every(
      (s) => s.leaderId === members[leaderAt]?.id && s.appliedIndex >= leader.commitIndex,
    );
    return agreed && leader.commitIndex > 0 ? members[leaderAt] : undefined;
  });
}

const fio = fioFdatasync();
console.log(
  `\nfio 4 KiB write + fdatasync on ${root} (same disk): fdatasync p50 ${fio.syncP50Ms.toFixed(3)} ms, ` +
    `p99 ${fio.syncP99Ms.toFixed(3)} ms; write p50 ${fio.writeP50Ms.toFixed(3)} ms; ` +
    `${Math.round(fio.iops)} IOPS`,
);

const ports = [await freePort(), await freePort(), await freePort()];
const portMap = Object.fromEntries(ports.map((port, i) => [String(i + 1), port]));
const members = [1, 2, 3].map((id) => {
  const dir = join(root, `member-${id}`);
  mkdirSync(dir, { recursive: true });
  return new Member(id, {
    id,
    ports: portMap,
    dir,
    tickMs: TICK_MS,
    electionTicks: ELECTION_TICKS,
  });
});
await Promise.all(members.map((m) => m.start()));
let leader = await settledLeader(members);

const rows: Array<[string, number, number, LoadResult, number]> = [];
async function clusterCpuUs(): Promise<number> {
  const replies = await Promise.all(members.map((m) => m.request({ cmd: "cpu" }, "cpuUs")));
  return replies.reduce((sum, r) => sum + (r.cpuUs as number), 0);
}
async function loadMatrix(mode: string, payloads: number[]): Promise<void> {
  for (const payloadBytes of payloads) {
    for (const depth of [1, 64]) {
      const cpuBefore = await clusterCpuUs();
      const command = { cmd: "load", payloadBytes, depth, seconds: SECONDS };
      const load = (await leader.request(command, "load")).load as LoadResult;
      const cpuUs = (await clusterCpuUs()) - cpuBefore;
      // CPU of all three members per committed proposal (over the warm-up second too).
      rows.push([mode, payloadBytes, depth, load, cpuUs / (load.opsPerSecond * (SECONDS + 1))]);
    }
  }
}
// Warm up (JIT, level's files, gRPC streams) before measuring; on a fresh start the first
// case otherwise pays for it.
await leader.request({ cmd: "load", payloadBytes: 64, depth: 16, seconds: 2 }, "load");
await loadMatrix("strict", [64, 4096]);
// The same cluster restarted with the leader sending appends while it writes (one fsync
// less on the commit path; RaftNode's leaderAppendsBeforePersist, off by default).
for (const m of members) await m.request({ cmd: "stop" }, "stopped");
for (const m of members) m.early = true;
await Promise.all(members.map((m) => m.start()));
leader = await settledLeader(members);
await leader.request({ cmd: "load", payloadBytes: 64, depth: 16, seconds: 2 }, "load");
await loadMatrix("leader appends before persist", [64]);
console.log("\n| mode | payload | outstanding | committed/s | p50 ms | p99 ms | CPU µs/commit |");
console.log("|---|---|---|---|---|---|---|");
for (const [mode, payload, depth, r, cpu] of rows) {
  const perSecond = Math.round(r.opsPerSecond).toLocaleString("en-US");
  console.log(
    `| ${mode} | ${payload} B | ${depth} | ${perSecond} | ${r.p50Ms.toFixed(3)} | ` +
      `${r.p99Ms.toFixed(3)} | ${cpu.toFixed(0)} |`,
  );
}
console.log("(CPU µs/commit: user + system time of all three members per committed proposal)");
console.log(
  `load average (other work on this VM skews every figure): ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}`,
);

const failovers: number[] = [];
for (let k = 0; k < KILLS; k++) {
  leader = await settledLeader(members);
  const survivors = members.filter((m) => m !== leader);
  const committed = new Promise<number>((resolve) => {
    const offs = survivors.map((m) =>
      m.onEvent((reply) => {
        if (typeof reply.committedAtMs === "number") {
          for (const off of offs) off();
          resolve(reply.committedAtMs);
        }
      }),
    );
  });
  for (const s of survivors) s.send({ cmd: "probe" });
  const killedAt = nowMs();
  leader.kill();
  const firstCommitAt = await Promise.race([
    committed,
    new Promise<number>((_, reject) =>
      setTimeout(() => reject(new Error("no commit in 30 s")), 30_000),
    ),
  ]);
  failovers.push(firstCommitAt - killedAt);
  for (const s of survivors) s.send({ cmd: "unprobe" });
  await leader.start();
}
await settledLeader(members);

console.log(
  `\nfailover over ${failovers.length} kill -9s of the leader (kill → first new commit): ` +
    `p50 ${percentile(failovers, 50).toFixed(0)} ms, p99 ${percentile(failovers, 99).toFixed(0)} ms, ` +
    `max ${Math.max(...failovers).toFixed(0)} ms`,
);
console.log(`failover samples (ms): ${failovers.map((f) => f.toFixed(0)).join(" ")}`);

const strict = (payload: number, depth: number): LoadResult | undefined =>
  rows.find(([m, p, d]) => m === "strict" && p === payload && d === depth)?.[3];
const early = rows.find(([m, p, d]) => m !== "strict" && p === 64 && d === 1)?.[3];
const p50At1 = strict(64, 1)?.p50Ms ?? Number.NaN;
const at64 = strict(64, 64)?.opsPerSecond ?? Number.NaN;
const floor = fio.syncP50Ms + fio.writeP50Ms;
console.log("\ntargets (issue 3):");
console.log(`- failover p99 ≤ 3000 ms: ${percentile(failovers, 99).toFixed(0)} ms`);
console.log(
  `- commit p50 at 1 outstanding ≤ 2 × fdatasync p50 + 1 ms = ${(2 * floor + 1).toFixed(3)} ms: ` +
    `${p50At1.toFixed(3)} ms (strict), ${early?.p50Ms.toFixed(3)} ms (leader appends before persist)`,
);
console.log(
  `- ≥ 10,000 committed 64 B proposals/s at 64 outstanding: ${Math.round(at64).toLocaleString("en-US")}`,
);

for (const m of members) await m.request({ cmd: "stop" }, "stopped");
rmSync(root, { recursive: true, force: true });
