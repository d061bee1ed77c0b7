/**
 * The data-plane server: accepts connections (TCP, TLS or a unix socket), decodes request
 * frames, runs the handler for each (many at once per connection, bounded), and writes
 * responses as they complete, in any order, matched by request id.
 *
 * Failure isolation: a protocol violation closes that connection only; a handler error becomes
 * an error response and the connection keeps serving; an AssertionError (a bug) is rethrown
 * outside the connection so the process stops (STYLE §4).
 */
import * as net from "node:net";
import * as tls from "node:tls";
import { AssertionError, HesError, isHesError, type Logger, nullLogger } from "@hes/base";
import {
  FRAME_CONNECTIONS_DEFAULT,
  FRAME_INFLIGHT_PER_CONNECTION_DEFAULT,
  FRAME_META_BYTES_MAX,
  FRAME_PAYLOAD_BYTES_DEFAULT,
  FRAME_PAYLOAD_BYTES_MAX,
} from "../limits.js";
import { encodeFrame, type Frame, FrameDecoder, FrameKind, FrameStatus } from "./codec.js";
import { encodeErrorMeta, FrameSink } from "./socket.js";

/** One request as a handler sees it. `meta` and `payload` are valid until the handler settles. */
export interface FrameRequest {
  readonly opcode: number;
  readonly requestId: number;
  readonly meta: Uint8Array;
  readonly payload: Uint8Array;
  /** Remote address, for logs. */
  readonly peer: string;
  /** Fires when the connection closes or the server stops before the response is sent. */
  readonly signal: AbortSignal;
}

/** What a handler returns. */
export interface FrameResponse {
  readonly meta?: Uint8Array;
  readonly payload?: Uint8Array | readonly Uint8Array[];
  /** Runs once the socket no longer needs the response's buffers (to return them to a pool). */
  readonly release?: () => void;
}

/** Serves one request. Throw HesError for an operating error, RangeError for a bad request. */
export type FrameHandler = (request: FrameRequest) => Promise<FrameResponse> | FrameResponse;

/** Where a server listens or a client connects. */
export type FrameAddress =
  | { readonly host: string; readonly port: number }
  | { readonly path: string };

/** Options for {@link FrameServer}. */
export interface FrameServerOptions {
  readonly handler: FrameHandler;
  readonly logger?: Logger;
  /** TLS server options (certificate, key, CA, requestCert); absent = plaintext. */
  readonly tls?: tls.TlsOptions;
  /** Requests handled at once per connection before reading pauses. */
  readonly inflightPerConnectionMax?: number;
  readonly connectionsMax?: number;
  readonly payloadBytesMax?: number;
}

interface Connection {
  readonly socket: net.Socket;
  readonly sink: FrameSink;
  readonly decoder: FrameDecoder;
  readonly controller: AbortController;
  readonly peer: string;
  readonly backlog: Frame[];
  inflight: number;
  paused: boolean;
}

/** Counters for metrics and tests. */
export interface FrameServerStats {
  readonly connections: number;
  readonly requests: number;
  readonly errors: number;
  readonly protocolViolations: number;
}

/** A data-plane server. `listen`, then `close`. */
export class FrameServer {
  private readonly handler: FrameHandler;
  private readonly logger: Logger;
  private readonly inflightMax: number;
  private readonly connectionsMax: number;
  private readonly payloadBytesMax: number;
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  private requests = 0;
  private errors = 0;
  private protocolViolations = 0;

  constructor(options: FrameServerOptions) {
    this.handler = options.handler;
    this.logger = options.logger ?? nullLogger;
    this.inflightMax = options.inflightPerConnectionMax ?? FRAME_INFLIGHT_PER_CONNECTION_DEFAULT;
    this.connectionsMax = options.connectionsMax ?? FRAME_CONNECTIONS_DEFAULT;
    this.payloadBytesMax = options.payloadBytesMax ?? FRAME_PAYLOAD_BYTES_DEFAULT;
    if (!Number.isSafeInteger(this.inflightMax) || this.inflightMax < 1) {
      throw new RangeError(`inflightPerConnectionMax must be >= 1, got ${this.inflightMax}`);
    }
    if (this.payloadBytesMax < 0 || this.payloadBytesMax > FRAME_PAYLOAD_BYTES_MAX) {
      throw new RangeError(`payloadBytesMax must be 0..${FRAME_PAYLOAD_BYTES_MAX}`);
    }
    const onSocket = (socket: net.Socket): void => this.accept(socket);
    this.server =
      options.tls === undefined
        ? net.createServer({ noDelay: true }, onSocket)
        : tls.createServer({ ...options.tls }, onSocket);
    if (options.tls !== undefined) {
      this.server.on("tlsClientError", (error: Error) =>
        this.logger.warn({ err: error }, "data-plane TLS handshake failed"),
      );
    }
  }

  /** Starts listening; resolves with the bound address (the real port when 0 was asked). */
  listen(address: FrameAddress): Promise<FrameAddress> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void =>
        reject(
          new HesError("HES_UNAVAILABLE", `data plane cannot listen: ${error.message}`, {
            cause: error,
          }),
        );
      this.server.once("error", onError);
      const done = (): void => {
        this.server.off("error", onError);
        const bound = this.server.address();
        resolve(
          typeof bound === "object" && bound !== null
            ? { host: bound.address, port: bound.port }
            : { path: String(bound) },
        );
      };
      if ("path" in address) this.server.listen(address.path, done);
      else this.server.listen(address.port, address.host, done);
    });
  }

  stats(): FrameServerStats {
    return {
      connections: this.connections.size,
      requests: this.requests,
      errors: this.errors,
      protocolViolations: this.protocolViolations,
    };
  }

  /**
   * Stops accepting, waits up to `drainMs` for in-flight requests to be answered, then closes
   * every connection (handlers still running see their signal abort).
   */
  async close(drainMs = 0): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const deadline = Date.now() + drainMs;
    while (Date.now() < deadline && [...this.connections].some((c) => c.inflight > 0)) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    for (const connection of this.connections) this.drop(connection);
    await closed;
  }

  private accept(socket: net.Socket): void {
    if (this.connections.size >= this.connectionsMax) {
      this.logger.warn(
        { connections: this.connections.size },
        "data plane: connection limit, refusing",
      );
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const connection: Connection = {
      socket,
      sink: new FrameSink(socket),
      decoder: new FrameDecoder({
        expectKind: FrameKind.request,
        metaBytesMax: FRAME_META_BYTES_MAX,
        payloadBytesMax: this.payloadBytesMax,
      }),
      controller: new AbortController(),
      peer: `${socket.remoteAddress ?? "local"}:${socket.remotePort ?? 0}`,
      backlog: [],
      inflight: 0,
      paused: false,
    };
    this.connections.add(connection);
    socket.on("data", (chunk: Buffer) => this.receive(connection, chunk));
    socket.on("error", (error) =>
      this.logger.debug({ err: error, peer: connection.peer }, "data-plane socket error"),
    );
    socket.on("close", () => {
      this.connections.delete(connection);
      connection.controller.abort();
    });
  }

  private receive(connection: Connection, chunk: Buffer): void {
    try {
      connection.decoder.push(chunk, (frame) => connection.backlog.push(frame));
    } catch (error) {
      this.protocolViolations++;
      this.logger.warn(
        { err: error, peer: connection.peer },
        "data-plane protocol violation; closing connection",
      );
      this.drop(connection);
      return;
    }
    this.pump(connection);
  }

  /** Starts backlog frames while slots are free; pauses the socket while they are not. */
  private pump(connection: Connection): void {
    while (connection.backlog.length > 0 && connection.inflight < this.inflightMax) {
      this.start(connection, connection.backlog.shift() as Frame);
    }
    const full = connection.inflight >= this.inflightMax;
    if (full && !connection.paused) {
      connection.paused = true;
      connection.socket.pause();
    } else if (!full && connection.paused) {
      connection.paused = false;
      connection.socket.resume();
    }
  }

  private start(connection: Connection, frame: Frame): void {
    connection.inflight++;
    this.requests++;
    const finish = (response: FrameResponse | undefined, error: unknown): void => {
      connection.inflight--;
      if (response === undefined) this.errors++;
      this.reply(connection, frame, response, error);
      if (!connection.socket.destroyed) this.pump(connection);
    };
    if (frame.bodyCorrupt) {
      finish(
        undefined,
        new HesError("HES_CORRUPTION", "request meta or payload failed its checksum in transit"),
      );
      return;
    }
    let result: Promise<FrameResponse> | FrameResponse;
    try {
      result = this.handler({
        opcode: frame.opcode,
        requestId: frame.requestId,
        meta: frame.meta,
        payload: frame.payload,
        peer: connection.peer,
        signal: connection.controller.signal,
      });
    } catch (error) {
      finish(undefined, error);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (response) => finish(response, undefined),
        (error: unknown) => finish(undefined, error),
      );
    } else {
      finish(result, undefined);
    }
  }

  private reply(
    connection: Connection,
    frame: Frame,
    response: FrameResponse | undefined,
    error: unknown,
  ): void {
    const fields = { kind: FrameKind.response, opcode: frame.opcode, requestId: frame.requestId };
    if (response === undefined) {
      const hesError = this.toHesError(error, frame.opcode);
      connection.sink.send(
        encodeFrame({ ...fields, status: FrameStatus.error }, encodeErrorMeta(hesError)),
      );
      return;
    }
    let parts: Uint8Array[];
    try {
      parts = encodeFrame({ ...fields, status: FrameStatus.ok }, response.meta, response.payload);
    } catch (encodeError) {
      response.release?.();
      this.reply(connection, frame, undefined, encodeError);
      return;
    }
    connection.sink.send(
      parts,
      response.release === undefined ? undefined : () => response.release?.(),
    );
  }

  private toHesError(error: unknown, opcode: number): HesError {
    if (error instanceof AssertionError) {
      this.logger.fatal({ err: error, opcode }, "assertion failed in a data-plane handler");
      queueMicrotask(() => {
        throw error;
      });
    }
    if (isHesError(error)) return error;
    if (error instanceof RangeError || error instanceof TypeError) {
      return new HesError("HES_INVALID_ARGUMENT", error.message);
    }
    this.logger.error({ err: error, opcode }, "data-plane handler failed");
    return new HesError("HES_INTERNAL", `opcode ${opcode} failed in the server`);
  }

  private drop(connection: Connection): void {
    connection.controller.abort();
    connection.socket.destroy();
    this.connections.delete(connection);
  }
}
