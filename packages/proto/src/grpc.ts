/**
 * Glue between protobuf-es generated services and @grpc/grpc-js (no maintained adapter exists
 * for protobuf-es v2): a typed server implementation registered on a grpc-js `Server`, and a
 * typed promise client. All four method kinds are supported.
 *
 * Decoding happens inside the handler, not in grpc-js's deserializer: grpc-js answers a
 * deserializer failure with INTERNAL, whereas a malformed request is the caller's fault and
 * must get INVALID_ARGUMENT (and the server keeps serving).
 *
 * Errors: a handler throws HesError (mapped by `status.ts`, the exact code rides along in
 * trailing metadata), RangeError/TypeError (a bad request: INVALID_ARGUMENT), or anything else
 * (INTERNAL, logged). An `AssertionError` is a bug in this process: it is rethrown outside the
 * call so the process stops, as STYLE §4 requires. Clients see every failure as a HesError.
 */
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import {
  AssertionError,
  HesError,
  type HesErrorCode,
  isHesError,
  isHesErrorCode,
  type Logger,
  nullLogger,
} from "@hes/base";
import { CONTROL_MESSAGE_BYTES_MAX } from "./limits.js";
import {
  GRPC_STATUS_BY_HES_CODE,
  HES_CODE_METADATA_KEY,
  HES_DETAILS_METADATA_KEY,
  hesCodeForGrpcStatus,
} from "./status.js";

type MethodSpec = GenServiceMethods[string];
type In<M extends MethodSpec> = MessageShape<M["input"]>;
type OutInit<M extends MethodSpec> = MessageInitShape<M["output"]>;
type InInit<M extends MethodSpec> = MessageInitShape<M["input"]>;
type Out<M extends MethodSpec> = MessageShape<M["output"]>;

/** What a server handler knows about its call. */
export interface CallContext {
  /** Fires when the client cancels, the deadline passes, or the server shuts down. */
  readonly signal: AbortSignal;
  /** The request's metadata. */
  readonly metadata: grpc.Metadata;
  /** The remote address. */
  readonly peer: string;
}

/** The handler type for one method, by its kind. */
export type ServerHandler<M extends MethodSpec> = M["methodKind"] extends "unary"
  ? (request: In<M>, context: CallContext) => Promise<OutInit<M>>
  : M["methodKind"] extends "server_streaming"
    ? (request: In<M>, context: CallContext) => AsyncIterable<OutInit<M>>
    : M["methodKind"] extends "client_streaming"
      ? (requests: AsyncIterable<In<M>>, context: CallContext) => Promise<OutInit<M>>
      : (requests: AsyncIterable<In<M>>, context: CallContext) => AsyncIterable<OutInit<M>>;

/** A full implementation of a generated service. */
export type ServiceImplementation<S extends GenServiceMethods> = {
  [K in keyof S]: ServerHandler<S[K]>;
};

/** Per-call options for the client. */
export interface CallOptions {
  /** Milliseconds from now until the call fails with HES_TIMEOUT. */
  readonly deadlineMs?: number;
  /** Cancels the call (HES_ABORTED). */
  readonly signal?: AbortSignal;
  readonly metadata?: grpc.Metadata;
}

/** The client method type for one method, by its kind. */
export type ClientMethod<M extends MethodSpec> = M["methodKind"] extends "unary"
  ? (request: InInit<M>, options?: CallOptions) => Promise<Out<M>>
  : M["methodKind"] extends "server_streaming"
    ? (request: InInit<M>, options?: CallOptions) => AsyncIterable<Out<M>>
    : M["methodKind"] extends "client_streaming"
      ? (requests: AsyncIterable<InInit<M>>, options?: CallOptions) => Promise<Out<M>>
      : (requests: AsyncIterable<InInit<M>>, options?: CallOptions) => AsyncIterable<Out<M>>;

/** A typed client: one method per RPC, plus `close`. */
export type ServiceClient<S extends GenServiceMethods> = {
  [K in keyof S]: ClientMethod<S[K]>;
} & {
  /** Closes the channel; pending calls fail with HES_ABORTED or HES_UNAVAILABLE. */
  close(): void;
};

/** The client type for a generated service value: `ServiceClientOf<typeof EchoService>`. */
export type ServiceClientOf<T> =
  T extends GenService<infer S extends GenServiceMethods> ? ServiceClient<S> : never;

/** Channel and server options every hes gRPC endpoint uses. */
export const GRPC_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": CONTROL_MESSAGE_BYTES_MAX,
  "grpc.max_send_message_length": CONTROL_MESSAGE_BYTES_MAX,
  // Detect a dead peer on long-lived Raft streams within ~15 s even when idle.
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  // grpc-js backs off reconnects 1.6× per failed attempt from 1 s up to 120 s: after a peer
  // had been down a minute its next attempt could be ~40 s away, and even after a short
  // outage a restarted peer went uncounted for seconds (a leader stepped down for want of a
  // quorum in the fault suite). Peers are few and known: try a dead one every ≤ 1 s.
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 1_000,
};

/** Server options matching {@link GRPC_CHANNEL_OPTIONS}. */
export const GRPC_SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.max_receive_message_length": CONTROL_MESSAGE_BYTES_MAX,
  "grpc.max_send_message_length": CONTROL_MESSAGE_BYTES_MAX,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 5_000,
};

const passThrough = (value: Buffer): Buffer => value;

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function methodPath(service: GenService<GenServiceMethods>, methodName: string): string {
  return `/${service.typeName}/${methodName}`;
}

/** Turns anything a handler threw into a grpc status; rethrows assertion failures. */
function toStatus(error: unknown, logger: Logger, path: string): grpc.StatusObject {
  if (error instanceof AssertionError) {
    logger.fatal({ err: error, path }, "assertion failed in a gRPC handler");
    queueMicrotask(() => {
      throw error;
    });
  }
  let code: HesErrorCode;
  let message: string;
  let details: Readonly<Record<string, unknown>> = {};
  if (isHesError(error)) {
    code = error.code;
    message = error.message;
    details = error.details;
  } else if (error instanceof RangeError || error instanceof TypeError) {
    code = "HES_INVALID_ARGUMENT";
    message = `[HES_INVALID_ARGUMENT] ${error.message}`;
  } else {
    code = "HES_INTERNAL";
    message = `[HES_INTERNAL] ${path} failed`;
    logger.error({ err: error, path }, "gRPC handler failed");
  }
  const metadata = new grpc.Metadata();
  metadata.set(HES_CODE_METADATA_KEY, code);
  if (Object.keys(details).length > 0) {
    metadata.set(HES_DETAILS_METADATA_KEY, safeJson(details));
  }
  return { code: GRPC_STATUS_BY_HES_CODE[code], details: message, metadata };
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  } catch {
    return "{}";
  }
}

function decodeRequest<D extends DescMessage>(schema: D, bytes: Buffer): MessageShape<D> {
  try {
    return fromBinary(schema, bytes);
  } catch (error) {
    throw new HesError(
      "HES_INVALID_ARGUMENT",
      `malformed ${schema.typeName}: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

/** The parts of a grpc-js server call that every method kind has. */
type SurfaceCall = Pick<
  grpc.ServerUnaryCall<unknown, unknown>,
  "cancelled" | "metadata" | "getPeer"
> & {
  once(event: "cancelled", listener: () => void): unknown;
};

function contextOf(call: SurfaceCall): CallContext {
  const controller = new AbortController();
  if (call.cancelled) controller.abort();
  else call.once("cancelled", () => controller.abort());
  return { signal: controller.signal, metadata: call.metadata, peer: call.getPeer() };
}

/**
 * Decodes an incoming request stream as an async iterable, failing on a malformed message.
 * Iterates without destroying the call at the end: a plain `for await` over a grpc-js duplex
 * destroys it when the requests end, and the response status would never be sent.
 */
async function* decodeStream<D extends DescMessage>(
  schema: D,
  stream: import("node:stream").Readable,
): AsyncIterable<MessageShape<D>> {
  for await (const bytes of stream.iterator({ destroyOnReturn: false })) {
    yield decodeRequest(schema, bytes as Buffer);
  }
}

/** Writes an async iterable of responses to a grpc-js writable call, honouring backpressure. */
async function pipeResponses<D extends DescMessage>(
  schema: D,
  responses: AsyncIterable<MessageInitShape<D>>,
  call: grpc.ServerWritableStream<unknown, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>,
): Promise<void> {
  for await (const response of responses) {
    if (call.cancelled) return;
    const bytes = asBuffer(toBinary(schema, createMessage(schema, response)));
    if (!call.write(bytes)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          call.off("drain", done);
          call.off("cancelled", done);
          resolve();
        };
        call.on("drain", done);
        call.on("cancelled", done);
      });
    }
  }
}

function createMessage<D extends DescMessage>(
  schema: D,
  init: MessageInitShape<D>,
): MessageShape<D> {
  return create(schema, init);
}

/** Options for {@link addService}. */
export interface AddServiceOptions {
  readonly logger?: Logger;
}

/**
 * Registers `implementation` of the generated `service` on a grpc-js server.
 * Every method must be implemented (the type requires it).
 */
export function addService<S extends GenServiceMethods>(
  server: grpc.Server,
  service: GenService<S>,
  implementation: ServiceImplementation<S>,
  options: AddServiceOptions = {},
): void {
  const logger = options.logger ?? nullLogger;
  const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const path = methodPath(service as GenService<GenServiceMethods>, method.name);
    const handler = (implementation as Record<string, unknown>)[method.localName];
    if (typeof handler !== "function") {
      throw new TypeError(`${service.typeName}: no handler for ${method.localName}`);
    }
    definition[method.localName] = {
      path,
      originalName: method.name,
      requestStream:
        method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream:
        method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: passThrough,
      requestDeserialize: passThrough,
      responseSerialize: passThrough,
      responseDeserialize: passThrough,
    };
    const input = method.input;
    const output = method.output;
    switch (method.methodKind) {
      case "unary":
        handlers[method.localName] = (
          call: grpc.ServerUnaryCall<Buffer, Buffer>,
          callback: grpc.sendUnaryData<Buffer>,
        ) => {
          (async () => {
            const request = decodeRequest(input, call.request);
            const response = await handler(request, contextOf(call));
            return asBuffer(toBinary(output, createMessage(output, response)));
          })().then(
            (bytes) => callback(null, bytes),
            (error: unknown) => callback(toStatus(error, logger, path)),
          );
        };
        break;
      case "server_streaming":
        handlers[method.localName] = (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
          (async () => {
            const request = decodeRequest(input, call.request);
            await pipeResponses(output, handler(request, contextOf(call)), call);
          })().then(
            () => call.end(),
            (error: unknown) => call.emit("error", toStatus(error, logger, path)),
          );
        };
        break;
      case "client_streaming":
        handlers[method.localName] = (
          call: grpc.ServerReadableStream<Buffer, Buffer>,
          callback: grpc.sendUnaryData<Buffer>,
        ) => {
          (async () => {
            const requests = decodeStream(input, call);
            const response = await handler(requests, contextOf(call));
            return asBuffer(toBinary(output, createMessage(output, response)));
          })().then(
            (bytes) => callback(null, bytes),
            (error: unknown) => {
              callback(toStatus(error, logger, path));
            },
          );
        };
        break;
      case "bidi_streaming":
        handlers[method.localName] = (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
          (async () => {
            const requests = decodeStream(input, call);
            await pipeResponses(output, handler(requests, contextOf(call)), call);
          })().then(
            () => call.end(),
            (error: unknown) => call.emit("error", toStatus(error, logger, path)),
          );
        };
        break;
    }
  }
  server.addService(definition, handlers);
}

/** Rebuilds a HesError from a grpc-js client error. */
export function hesErrorFromGrpc(error: unknown, path: string): HesError {
  if (isHesError(error)) return error;
  const serviceError = error as Partial<grpc.ServiceError>;
  const code = serviceError.metadata?.get(HES_CODE_METADATA_KEY)[0];
  const detailsText = serviceError.metadata?.get(HES_DETAILS_METADATA_KEY)[0];
  let details: Record<string, unknown> = {};
  if (typeof detailsText === "string") {
    try {
      details = JSON.parse(detailsText) as Record<string, unknown>;
    } catch {
      details = {};
    }
  }
  const hesCode: HesErrorCode = isHesErrorCode(code)
    ? code
    : hesCodeForGrpcStatus(serviceError.code ?? grpc.status.UNKNOWN);
  const raw = serviceError.details ?? String(error);
  const prefix = `[${hesCode}] `;
  const text = raw.startsWith(prefix) ? raw.slice(prefix.length) : `${path}: ${raw}`;
  return new HesError(hesCode, text, { cause: error, details });
}

function callOptionsOf(options: CallOptions | undefined): grpc.CallOptions {
  const callOptions: grpc.CallOptions = {};
  if (options?.deadlineMs !== undefined) callOptions.deadline = Date.now() + options.deadlineMs;
  return callOptions;
}

function bindAbort(call: { cancel(): void }, signal: AbortSignal | undefined): void {
  if (signal === undefined) return;
  if (signal.aborted) call.cancel();
  else signal.addEventListener("abort", () => call.cancel(), { once: true });
}

async function* readResponses<D extends DescMessage>(
  stream:
    | grpc.ClientReadableStream<MessageShape<D>>
    | grpc.ClientDuplexStream<unknown, MessageShape<D>>,
  path: string,
): AsyncIterable<MessageShape<D>> {
  try {
    for await (const message of stream) yield message as MessageShape<D>;
  } catch (error) {
    throw hesErrorFromGrpc(error, path);
  } finally {
    stream.cancel();
  }
}

/** Writes a request iterable into a client stream with backpressure, then ends it. */
function pumpRequests<D extends DescMessage>(
  schema: D,
  requests: AsyncIterable<MessageInitShape<D>>,
  call:
    | grpc.ClientWritableStream<MessageShape<D>>
    | grpc.ClientDuplexStream<MessageShape<D>, unknown>,
): void {
  (async () => {
    for await (const request of requests) {
      if (!call.write(createMessage(schema, request))) {
        await new Promise<void>((resolve) => call.once("drain", resolve));
      }
    }
    call.end();
  })().catch(() => call.cancel());
}

/** Options for {@link createClient}. */
export interface CreateClientOptions {
  /** Default: insecure (plaintext), for development and tests only. */
  readonly credentials?: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
}

/** A typed promise client for `service` at `address` ("host:port" or "unix:/path"). */
export function createClient<S extends GenServiceMethods>(
  service: GenService<S>,
  address: string,
  options: CreateClientOptions = {},
): ServiceClient<S> {
  const client = new grpc.Client(
    address,
    options.credentials ?? grpc.credentials.createInsecure(),
    { ...GRPC_CHANNEL_OPTIONS, ...options.channelOptions },
  );
  const methods: Record<string, unknown> = {
    close: () => client.close(),
  };
  for (const method of service.methods) {
    const path = methodPath(service as GenService<GenServiceMethods>, method.name);
    const input = method.input;
    const output = method.output;
    const serialize = (message: MessageShape<typeof input>): Buffer =>
      asBuffer(toBinary(input, message));
    const deserialize = (bytes: Buffer): MessageShape<typeof output> => fromBinary(output, bytes);
    switch (method.methodKind) {
      case "unary":
        methods[method.localName] = (request: MessageInitShape<typeof input>, opts?: CallOptions) =>
          new Promise((resolve, reject) => {
            const call = client.makeUnaryRequest(
              path,
              serialize,
              deserialize,
              createMessage(input, request),
              opts?.metadata ?? new grpc.Metadata(),
              callOptionsOf(opts),
              (error, response) =>
                error ? reject(hesErrorFromGrpc(error, path)) : resolve(response),
            );
            bindAbort(call, opts?.signal);
          });
        break;
      case "server_streaming":
        methods[method.localName] = (
          request: MessageInitShape<typeof input>,
          opts?: CallOptions,
        ) => {
          const call = client.makeServerStreamRequest(
            path,
            serialize,
            deserialize,
            createMessage(input, request),
            opts?.metadata ?? new grpc.Metadata(),
            callOptionsOf(opts),
          );
          bindAbort(call, opts?.signal);
          return readResponses(call, path);
        };
        break;
      case "client_streaming":
        methods[method.localName] = (
          requests: AsyncIterable<MessageInitShape<typeof input>>,
          opts?: CallOptions,
        ) =>
          new Promise((resolve, reject) => {
            const call = client.makeClientStreamRequest(
              path,
              serialize,
              deserialize,
              opts?.metadata ?? new grpc.Metadata(),
              callOptionsOf(opts),
              (error, response) =>
                error ? reject(hesErrorFromGrpc(error, path)) : resolve(response),
            );
            bindAbort(call, opts?.signal);
            pumpRequests(input, requests, call);
          });
        break;
      case "bidi_streaming":
        methods[method.localName] = (
          requests: AsyncIterable<MessageInitShape<typeof input>>,
          opts?: CallOptions,
        ) => {
          const call = client.makeBidiStreamRequest(
            path,
            serialize,
            deserialize,
            opts?.metadata ?? new grpc.Metadata(),
            callOptionsOf(opts),
          );
          bindAbort(call, opts?.signal);
          pumpRequests(input, requests, call);
          return readResponses(call, path);
        };
        break;
    }
  }
  return methods as ServiceClient<S>;
}

/** Starts a grpc-js server on `address`; resolves with the bound port. */
export function bindServer(
  server: grpc.Server,
  address: string,
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, credentials, (error, port) =>
      error
        ? reject(
            new HesError("HES_UNAVAILABLE", `cannot listen on ${address}: ${error.message}`, {
              cause: error,
            }),
          )
        : resolve(port),
    ),
  );
}

/** A grpc-js server with the hes defaults (message size limits, keepalive). */
export function createServer(options: grpc.ServerOptions = {}): grpc.Server {
  return new grpc.Server({ ...GRPC_SERVER_OPTIONS, ...options });
}
