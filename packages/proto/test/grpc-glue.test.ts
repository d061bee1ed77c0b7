/**
 * Goal: prove the grpc-js glue carries every method kind with typed messages and maps errors
 * at the edge exactly once. Method: a real grpc-js server on 127.0.0.1 with the echo test
 * service; malformed and oversize messages are sent with a raw grpc-js client.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { HES_ERROR_CODES, HesError, isHesError } from "@hes/base";
import {
  addService,
  bindServer,
  CONTROL_MESSAGE_BYTES_MAX,
  createClient,
  createServer,
  GRPC_STATUS_BY_HES_CODE,
  hesCodeForGrpcStatus,
  type ServiceClientOf,
} from "@hes/proto";
import { EchoService } from "@hes/proto/testing";

let server: grpc.Server;
let address: string;
let client: ServiceClientOf<typeof EchoService>;

async function* fromArray<T>(items: T[]): AsyncIterable<T> {
  for (const item of items) yield item;
}

before(async () => {
  server = createServer();
  addService(server, EchoService, {
    async echo(request) {
      if (request.text === "fail-hes") {
        throw new HesError("HES_NOT_LEADER", "not the leader", { details: { leaderHint: 3 } });
      }
      if (request.text === "fail-range") throw new RangeError("offsetBytes must be >= 0");
      if (request.text === "fail-bug") throw new Error("something internal");
      if (request.text === "slow") await new Promise((resolve) => setTimeout(resolve, 500));
      return { text: request.text, payload: request.payload };
    },
    async *repeat(request) {
      for (let i = 0; i < request.repeat; i++) yield { text: request.text, index: i };
      if (request.text === "fail-late") throw new HesError("HES_IO", "disk gone");
    },
    async collect(requests) {
      let text = "";
      for await (const request of requests) text += request.text;
      return { text };
    },
    async *chat(requests) {
      let index = 0;
      for await (const request of requests)
        yield { text: request.text.toUpperCase(), index: index++ };
    },
  });
  const port = await bindServer(server, "127.0.0.1:0");
  address = `127.0.0.1:${port}`;
  client = createClient(EchoService, address);
});

after(async () => {
  client.close();
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
});

describe("gRPC glue: round trips over 127.0.0.1", () => {
  test("unary carries text and bytes", async () => {
    const payload = new Uint8Array([1, 2, 3, 250]);
    const response = await client.echo({ text: "hello", payload });
    assert.equal(response.text, "hello");
    assert.deepEqual([...response.payload], [...payload]);
  });

  test("server streaming yields every message in order", async () => {
    const seen: number[] = [];
    for await (const response of client.repeat({ text: "x", repeat: 50 }))
      seen.push(response.index);
    assert.deepEqual(
      seen,
      Array.from({ length: 50 }, (_, i) => i),
    );
  });

  test("client streaming sees every request", async () => {
    const response = await client.collect(fromArray([{ text: "a" }, { text: "b" }, { text: "c" }]));
    assert.equal(response.text, "abc");
  });

  test("bidirectional streaming answers each request", async () => {
    const out: string[] = [];
    for await (const response of client.chat(fromArray([{ text: "ab" }, { text: "cd" }]))) {
      out.push(`${response.index}:${response.text}`);
    }
    assert.deepEqual(out, ["0:AB", "1:CD"]);
  });
});

describe("gRPC glue: errors", () => {
  test("a HesError keeps its code, message and details across the wire", async () => {
    const error = await client.echo({ text: "fail-hes" }).catch((e: unknown) => e);
    assert.ok(isHesError(error, "HES_NOT_LEADER"), String(error));
    assert.equal(error.details.leaderHint, 3);
    assert.match(error.message, /not the leader/);
  });

  test("a RangeError in a handler is INVALID_ARGUMENT", async () => {
    const error = await client.echo({ text: "fail-range" }).catch((e: unknown) => e);
    assert.ok(isHesError(error, "HES_INVALID_ARGUMENT"), String(error));
    assert.match((error as Error).message, /offsetBytes/);
  });

  test("an unexpected error is HES_INTERNAL without leaking its message", async () => {
    const error = await client.echo({ text: "fail-bug" }).catch((e: unknown) => e);
    assert.ok(isHesError(error, "HES_INTERNAL"), String(error));
    assert.doesNotMatch((error as Error).message, /something internal/);
  });

  test("an error after some streamed messages reaches the reader", async () => {
    const seen: number[] = [];
    const error = await (async () => {
      for await (const response of client.repeat({ text: "fail-late", repeat: 3 }))
        seen.push(response.index);
    })().catch((e: unknown) => e);
    assert.deepEqual(seen, [0, 1, 2]);
    assert.ok(isHesError(error, "HES_IO"), String(error));
  });

  test("a deadline gives HES_TIMEOUT", async () => {
    const error = await client.echo({ text: "slow" }, { deadlineMs: 50 }).catch((e: unknown) => e);
    assert.ok(isHesError(error, "HES_TIMEOUT"), String(error));
  });

  test("an aborted call gives HES_ABORTED", async () => {
    const controller = new AbortController();
    const pending = client.echo({ text: "slow" }, { signal: controller.signal });
    controller.abort();
    const error = await pending.catch((e: unknown) => e);
    assert.ok(isHesError(error, "HES_ABORTED"), String(error));
  });

  test("a malformed message is INVALID_ARGUMENT and the server keeps serving", async () => {
    const raw = new grpc.Client(address, grpc.credentials.createInsecure());
    // 0xff 0xff ... is an invalid protobuf tag; 0x0a 0x05 "ab" is a truncated length-delimited field.
    for (const garbage of [
      Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]),
      Buffer.from([0x0a, 0x05, 0x61, 0x62]),
    ]) {
      const error = await new Promise<grpc.ServiceError | null>((resolve) =>
        raw.makeUnaryRequest(
          "/hes.testing.v1.EchoService/Echo",
          (b: Buffer) => b,
          (b: Buffer) => b,
          garbage,
          (e) => resolve(e),
        ),
      );
      assert.equal(error?.code, grpc.status.INVALID_ARGUMENT, String(error?.details));
    }
    raw.close();
    assert.equal((await client.echo({ text: "still here" })).text, "still here");
  });

  test("a message over the size limit is refused and the server keeps serving", async () => {
    const huge = new Uint8Array(CONTROL_MESSAGE_BYTES_MAX + 1024);
    const raw = createClient(EchoService, address, {
      channelOptions: { "grpc.max_send_message_length": 64 * 1024 * 1024 },
    });
    const error = await raw.echo({ payload: huge }).catch((e: unknown) => e);
    raw.close();
    assert.ok(isHesError(error, "HES_TOO_LARGE"), String(error));
    assert.equal((await client.echo({ text: "after" })).text, "after");
  });

  test("an unreachable server gives HES_UNAVAILABLE", async () => {
    const nowhere = createClient(EchoService, "127.0.0.1:1");
    const error = await nowhere.echo({ text: "x" }, { deadlineMs: 2_000 }).catch((e: unknown) => e);
    nowhere.close();
    assert.ok(isHesError(error, "HES_UNAVAILABLE", "HES_TIMEOUT"), String(error));
  });
});

describe("gRPC status mapping table", () => {
  test("every hes code has a gRPC status", () => {
    for (const code of HES_ERROR_CODES) {
      assert.equal(typeof GRPC_STATUS_BY_HES_CODE[code], "number", code);
    }
  });

  test("statuses raised by grpc-js itself map to the intended hes codes", () => {
    const table: Array<[grpc.status, string]> = [
      [grpc.status.DEADLINE_EXCEEDED, "HES_TIMEOUT"],
      [grpc.status.UNAVAILABLE, "HES_UNAVAILABLE"],
      [grpc.status.CANCELLED, "HES_ABORTED"],
      [grpc.status.RESOURCE_EXHAUSTED, "HES_TOO_LARGE"],
      [grpc.status.INVALID_ARGUMENT, "HES_INVALID_ARGUMENT"],
      [grpc.status.UNIMPLEMENTED, "HES_UNSUPPORTED"],
      [grpc.status.UNAUTHENTICATED, "HES_PERMISSION_DENIED"],
      [grpc.status.DATA_LOSS, "HES_CORRUPTION"],
      [grpc.status.UNKNOWN, "HES_INTERNAL"],
    ];
    for (const [status, code] of table) assert.equal(hesCodeForGrpcStatus(status), code);
  });

  test("codes whose status is unambiguous round-trip", () => {
    for (const code of HES_ERROR_CODES) {
      const back = hesCodeForGrpcStatus(GRPC_STATUS_BY_HES_CODE[code]);
      const shared = HES_ERROR_CODES.filter(
        (c) => GRPC_STATUS_BY_HES_CODE[c] === GRPC_STATUS_BY_HES_CODE[code],
      );
      if (shared.length === 1) assert.equal(back, code);
    }
  });
});
