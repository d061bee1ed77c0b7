/**
 * Goal: the data-plane server and client over real sockets: pipelining with out-of-order
 * completion, bounded in-flight work, errors that fail one request and keep the connection,
 * protocol violations that close only the offending connection, deadlines, aborts,
 * reconnection, unix sockets and TLS. Method: FrameServer and FrameClient on 127.0.0.1 and a
 * unix socket, plus raw `net` sockets that send hand-made and malformed frames.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { HesError, isHesError } from "@hes/base";
import {
  encodeFrame,
  type FrameAddress,
  FrameClient,
  FrameDecoder,
  type FrameHandler,
  FrameKind,
  FrameServer,
} from "@hes/proto";

const OP_ECHO = 1;
const OP_SLOW = 2;
const OP_FAIL = 3;
const OP_COUNT = 4;

const dir = mkdtempSync(join(tmpdir(), "hes-frame-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function makeHandler(state: { active: number; peak: number }): FrameHandler {
  return async (request) => {
    state.active++;
    state.peak = Math.max(state.peak, state.active);
    try {
      switch (request.opcode) {
        case OP_ECHO:
          return { meta: request.meta, payload: request.payload };
        case OP_SLOW: {
          const delayMs = request.meta[0] ?? 0;
          await new Promise((resolve) => setTimeout(resolve, delayMs));
          return { meta: request.meta };
        }
        case OP_FAIL:
          throw new HesError("HES_FENCED", "epoch 3 superseded by 4", { details: { current: 4 } });
        case OP_COUNT:
          await new Promise((resolve) => setTimeout(resolve, 5));
          return {};
        default:
          throw new HesError("HES_UNSUPPORTED", `unknown opcode ${request.opcode}`);
      }
    } finally {
      state.active--;
    }
  };
}

async function withServer(
  body: (
    address: FrameAddress,
    server: FrameServer,
    state: { active: number; peak: number },
  ) => Promise<void>,
  options: { inflight?: number; address?: FrameAddress } = {},
): Promise<void> {
  const state = { active: 0, peak: 0 };
  const server = new FrameServer({
    handler: makeHandler(state),
    ...(options.inflight === undefined ? {} : { inflightPerConnectionMax: options.inflight }),
  });
  const address = await server.listen(options.address ?? { host: "127.0.0.1", port: 0 });
  try {
    await body(address, server, state);
  } finally {
    await server.close();
  }
}

function rawConnect(address: FrameAddress): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      "path" in address ? net.connect(address.path) : net.connect(address.port, address.host);
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

describe("data plane over sockets", () => {
  test("pipelined requests complete out of order and match their request ids", () =>
    withServer(async (address) => {
      const client = new FrameClient({ address });
      const delays = [40, 5, 30, 0, 20, 10, 35, 1];
      const order: number[] = [];
      const results = await Promise.all(
        delays.map((delay, i) =>
          client.call(OP_SLOW, { meta: new Uint8Array([delay, i]) }).then((reply) => {
            order.push(i);
            return reply.meta[1];
          }),
        ),
      );
      assert.deepEqual(
        results,
        delays.map((_, i) => i),
      );
      assert.notDeepEqual(
        order,
        delays.map((_, i) => i),
        "completion order should follow the delays",
      );
      await client.close();
    }));

  test("4 KiB and 8 MiB payloads round-trip intact", () =>
    withServer(async (address) => {
      const client = new FrameClient({ address });
      for (const size of [4096, 8 * 1024 * 1024]) {
        const payload = new Uint8Array(size).map((_, i) => (i * 31 + size) & 0xff);
        const reply = await client.call(OP_ECHO, { meta: new Uint8Array([9]), payload });
        assert.equal(Buffer.compare(Buffer.from(reply.payload), Buffer.from(payload)), 0);
      }
      await client.close();
    }));

  test("a handler error fails that request with its code; the connection keeps serving", () =>
    withServer(async (address) => {
      const client = new FrameClient({ address });
      const error = await client.call(OP_FAIL).catch((e: unknown) => e);
      assert.ok(isHesError(error, "HES_FENCED"), String(error));
      assert.equal(error.details.current, 4);
      const unknown = await client.call(999).catch((e: unknown) => e);
      assert.ok(isHesError(unknown, "HES_UNSUPPORTED"), String(unknown));
      const reply = await client.call(OP_ECHO, { payload: new Uint8Array([1, 2]) });
      assert.deepEqual([...reply.payload], [1, 2]);
      await client.close();
    }));

  test("the server bounds work per connection and pauses reading beyond it", () =>
    withServer(
      async (address, _server, state) => {
        const client = new FrameClient({ address, inflightMax: 64 });
        await Promise.all(Array.from({ length: 200 }, () => client.call(OP_COUNT)));
        assert.ok(state.peak <= 4, `peak concurrent handlers ${state.peak} > 4`);
        assert.equal(state.peak, 4);
        await client.close();
      },
      { inflight: 4 },
    ));

  test("garbage on one connection closes it; another connection is untouched", () =>
    withServer(async (address, server) => {
      const client = new FrameClient({ address });
      await client.call(OP_ECHO);
      const bad = await rawConnect(address);
      const closed = new Promise<void>((resolve) => bad.once("close", () => resolve()));
      bad.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n".padEnd(64, " ")));
      await closed;
      assert.equal(server.stats().protocolViolations, 1);
      const reply = await client.call(OP_ECHO, { payload: new Uint8Array([7]) });
      assert.deepEqual([...reply.payload], [7]);
      await client.close();
    }));

  test("an oversize frame header closes that connection before the payload is sent", () =>
    withServer(async (address) => {
      const bad = await rawConnect(address);
      const closed = new Promise<void>((resolve) => bad.once("close", () => resolve()));
      const head = encodeFrame(
        { kind: FrameKind.request, opcode: OP_ECHO, requestId: 1, status: 0 },
        undefined,
        new Uint8Array(16 * 1024 * 1024),
      )[0] as Uint8Array;
      bad.write(head);
      await closed;
    }));

  test("a payload damaged in transit fails that request with HES_CORRUPTION only", () =>
    withServer(async (address) => {
      const socket = await rawConnect(address);
      const decoder = new FrameDecoder({ expectKind: FrameKind.response });
      const replies: Array<{ id: number; status: number; meta: string }> = [];
      const got = new Promise<void>((resolve) =>
        socket.on("data", (chunk: Buffer) =>
          decoder.push(chunk, (frame) => {
            replies.push({
              id: frame.requestId,
              status: frame.status,
              meta: Buffer.from(frame.meta).toString(),
            });
            if (replies.length === 2) resolve();
          }),
        ),
      );
      const damaged = encodeFrame(
        { kind: FrameKind.request, opcode: OP_ECHO, requestId: 10, status: 0 },
        undefined,
        new Uint8Array(100).fill(1),
      );
      const payload = damaged[1] as Uint8Array;
      const flipped = new Uint8Array(payload);
      flipped[50] = 0;
      socket.write(damaged[0] as Uint8Array);
      socket.write(flipped);
      for (const part of encodeFrame({
        kind: FrameKind.request,
        opcode: OP_ECHO,
        requestId: 11,
        status: 0,
      }))
        socket.write(part);
      await got;
      assert.equal(replies[0]?.id, 10);
      assert.equal(replies[0]?.status, 1);
      assert.match(replies[0]?.meta ?? "", /HES_CORRUPTION/);
      assert.deepEqual(replies[1], { id: 11, status: 0, meta: "" });
      socket.destroy();
    }));

  test("deadline and abort fail the call; the late response is ignored", () =>
    withServer(async (address) => {
      const client = new FrameClient({ address });
      const timeout = await client
        .call(OP_SLOW, { meta: new Uint8Array([100]), deadlineMs: 10 })
        .catch((e: unknown) => e);
      assert.ok(isHesError(timeout, "HES_TIMEOUT"), String(timeout));
      const controller = new AbortController();
      const pending = client.call(OP_SLOW, {
        meta: new Uint8Array([100]),
        signal: controller.signal,
      });
      controller.abort();
      assert.ok(isHesError(await pending.catch((e: unknown) => e), "HES_ABORTED"));
      await new Promise((resolve) => setTimeout(resolve, 150));
      assert.equal((await client.call(OP_ECHO, { payload: new Uint8Array([3]) })).payload[0], 3);
      await client.close();
    }));

  test("a lost connection fails in-flight calls with HES_UNAVAILABLE; the next call reconnects", async () => {
    const state = { active: 0, peak: 0 };
    let server = new FrameServer({ handler: makeHandler(state) });
    const address = await server.listen({ host: "127.0.0.1", port: 0 });
    const client = new FrameClient({ address });
    await client.call(OP_ECHO);
    const inflight = client.call(OP_SLOW, { meta: new Uint8Array([200]) });
    await new Promise((resolve) => setTimeout(resolve, 20));
    await server.close();
    assert.ok(isHesError(await inflight.catch((e: unknown) => e), "HES_UNAVAILABLE"));
    const refused = await client.call(OP_ECHO).catch((e: unknown) => e);
    assert.ok(isHesError(refused, "HES_UNAVAILABLE"), String(refused));
    server = new FrameServer({ handler: makeHandler(state) });
    await server.listen(address);
    let reply: unknown;
    for (let attempt = 0; attempt < 50 && reply === undefined; attempt++) {
      reply = await client
        .call(OP_ECHO)
        .catch(() => new Promise((resolve) => setTimeout(resolve, 50)).then(() => undefined));
    }
    assert.ok(reply !== undefined, "client did not reconnect");
    await client.close();
    await server.close();
  });

  test("a connection silent for a whole deadline is dropped; the next call reconnects", async () => {
    // A peer that accepts and never answers nor closes: a half-open socket after a restart.
    const sockets: net.Socket[] = [];
    const blackHole = net.createServer((socket) => {
      sockets.push(socket);
      socket.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => blackHole.listen(0, "127.0.0.1", resolve));
    const { port } = blackHole.address() as net.AddressInfo;
    const client = new FrameClient({ address: { host: "127.0.0.1", port } });
    try {
      for (let i = 0; i < 2; i++) {
        const error = await client.call(OP_ECHO, { deadlineMs: 30 }).catch((e: unknown) => e);
        assert.ok(isHesError(error, "HES_TIMEOUT"), String(error));
      }
      assert.equal(sockets.length, 2, "the silent connection was replaced");
    } finally {
      await client.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => blackHole.close(resolve));
    }
  });

  test("calls after close fail with HES_CLOSED", () =>
    withServer(async (address) => {
      const client = new FrameClient({ address });
      await client.close();
      assert.ok(isHesError(await client.call(OP_ECHO).catch((e: unknown) => e), "HES_CLOSED"));
    }));

  test("a unix socket works like TCP", () =>
    withServer(
      async (address) => {
        const client = new FrameClient({ address });
        assert.equal((await client.call(OP_ECHO, { payload: new Uint8Array([5]) })).payload[0], 5);
        await client.close();
      },
      { address: { path: join(dir, "frame.sock") } },
    ));

  test("mutual TLS: a client with the CA's certificate is served; one without is refused", {
    skip: hasOpenssl()
      ? false
      : "needs the openssl command (CI installs it; apt-get install openssl)",
  }, async () => {
    const pki = makePki(dir);
    const state = { active: 0, peak: 0 };
    const server = new FrameServer({
      handler: makeHandler(state),
      tls: {
        key: pki.serverKey,
        cert: pki.serverCert,
        ca: pki.ca,
        requestCert: true,
        rejectUnauthorized: true,
      },
    });
    const address = await server.listen({ host: "127.0.0.1", port: 0 });
    const good = new FrameClient({
      address,
      tls: { key: pki.clientKey, cert: pki.clientCert, ca: pki.ca, servername: "node-1" },
    });
    assert.equal((await good.call(OP_ECHO, { payload: new Uint8Array([8]) })).payload[0], 8);
    const anonymous = new FrameClient({ address, tls: { ca: pki.ca, servername: "node-1" } });
    const error = await anonymous.call(OP_ECHO, { deadlineMs: 2_000 }).catch((e: unknown) => e);
    assert.ok(isHesError(error, "HES_UNAVAILABLE", "HES_TIMEOUT"), String(error));
    await good.close();
    await anonymous.close();
    await server.close();
  });
});

function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    if (process.env.CI === "true") throw new Error("CI must install openssl (see .ci/run)");
    return false;
  }
}

/** A throwaway CA with one server and one client certificate, made with openssl. */
function makePki(
  root: string,
): Record<"ca" | "serverKey" | "serverCert" | "clientKey" | "clientCert", Buffer> {
  const run = (args: string[]): void => {
    execFileSync("openssl", args, { cwd: root, stdio: "ignore" });
  };
  run([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "1",
    "-subj",
    "/CN=hes-test-ca",
  ]);
  for (const name of ["server", "client"]) {
    run([
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=node-1`,
    ]);
    run([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "1",
      "-extfile",
      "/dev/stdin",
    ]);
  }
  const read = (file: string): Buffer => readFileSync(join(root, file));
  return {
    ca: read("ca.crt"),
    serverKey: read("server.key"),
    serverCert: read("server.crt"),
    clientKey: read("client.key"),
    clientCert: read("client.crt"),
  };
}
