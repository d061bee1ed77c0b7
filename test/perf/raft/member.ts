/**
 * One Raft member of the benchmark, in its own process: a RaftNode on level storage with the
 * gRPC transport, applying to a counter. Driven by JSON lines on stdin; answers and events
 * are JSON lines on stdout:
 *
 *   {"cmd":"status"}                                      → {"status":{…}}
 *   {"cmd":"load","payloadBytes":64,"depth":1,"seconds":5} → {"load":{ops/s, p50, p99}}
 *   {"cmd":"probe"}   propose every 5 ms while leading; the first commit → {"committedAtMs":…}
 *   {"cmd":"unprobe"} stop probing
 *   {"cmd":"cpu"}     → {"cpuUs": user + system CPU time of this process so far}
 *   {"cmd":"stop"}    stop cleanly and exit
 *
 * argv[2]: {"id":1,"ports":{"1":p1,…},"dir":"…","tickMs":100,"electionTicks":10,"early":false}
 */
import { createInterface } from "node:readline";
import { addService, bindServer, createServer, RaftTransportService } from "@hes/proto";
import { GrpcRaftTransport, RaftNode, type StateMachine } from "@hes/raft";
import { closedLoop } from "../common.js";

interface Config {
  readonly id: number;
  readonly ports: Record<string, number>;
  readonly dir: string;
  readonly tickMs: number;
  readonly electionTicks: number;
  /** RaftNode's leaderAppendsBeforePersist. */
  readonly early: boolean;
}
const config = JSON.parse(process.argv[2] ?? "{}") as Config;
const nowMs = (): number => performance.timeOrigin + performance.now();
const emit = (value: object): void => {
  process.stdout.write(`${JSON.stringify(value)}\n`);
};

class Counter implements StateMachine<number> {
  count = 0;
  apply(): number {
    return ++this.count;
  }
  snapshot(): Uint8Array {
    return new TextEncoder().encode(String(this.count));
  }
  restore(data: Uint8Array): void {
    this.count = Number(new TextDecoder().decode(data));
  }
}

const peers: Record<number, string> = {};
for (const [id, port] of Object.entries(config.ports)) {
  if (Number(id) !== config.id) peers[Number(id)] = `127.0.0.1:${port}`;
}
const transport = new GrpcRaftTransport({ selfId: config.id, clusterId: "bench", peers });
const server = createServer();
addService(server, RaftTransportService, transport.service());
await bindServer(server, `127.0.0.1:${config.ports[String(config.id)]}`);
const node = await RaftNode.start({
  id: config.id,
  peers: Object.keys(config.ports).map(Number),
  storageDir: config.dir,
  transport,
  stateMachine: new Counter(),
  tickMs: config.tickMs,
  electionTicks: config.electionTicks,
  heartbeatTicks: 1,
  leaderAppendsBeforePersist: config.early,
});
emit({ ready: config.id });

let probeGeneration = 0;

async function probe(): Promise<void> {
  const generation = ++probeGeneration;
  const payload = new Uint8Array(64);
  while (generation === probeGeneration) {
    if (node.status().role === "leader") {
      try {
        await node.propose(payload);
        emit({ committedAtMs: nowMs(), term: node.status().term });
        return;
      } catch {
        // not leader any more, or dropped: keep probing
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line) as { cmd: string } & Record<string, number>;
  if (command.cmd === "status") emit({ status: node.status() });
  else if (command.cmd === "cpu") {
    const usage = process.cpuUsage();
    emit({ cpuUs: usage.user + usage.system });
  } else if (command.cmd === "probe") void probe();
  else if (command.cmd === "unprobe") probeGeneration++;
  else if (command.cmd === "load") {
    const payload = new Uint8Array(command.payloadBytes ?? 64).fill(7);
    const result = await closedLoop(
      () => node.propose(payload),
      command.depth ?? 1,
      command.seconds ?? 5,
      1,
    );
    emit({ load: result });
  } else if (command.cmd === "stop") {
    await node.stop();
    server.forceShutdown();
    emit({ stopped: config.id });
    process.exit(0);
  }
}
