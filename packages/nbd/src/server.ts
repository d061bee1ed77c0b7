/**
 * The NBD server: named exports of BlockDevices, served on any number of listeners (unix
 * sockets, TCP, with or without TLS), each connection run by a `Connection`.
 *
 * Security: a TCP listener on anything but loopback must have TLS (a RangeError otherwise);
 * a listener with TLS refuses every option but STARTTLS and ABORT until TLS is up.
 */

import * as net from "node:net";
import { isIP } from "node:net";
import * as tls from "node:tls";
import { type Clock, HesError, type Logger, nullLogger, systemClock } from "@hes/base";
import type { BlockDevice } from "@hes/blockdev";
import {
  Connection,
  type ConnectionHost,
  type ExportEntry,
  type ListenerPolicy,
} from "./connection.js";
import {
  NBD_CLOSE_DRAIN_MS_DEFAULT,
  NBD_CONNECTIONS_DEFAULT,
  NBD_EXPORTS_MAX,
  NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT,
  NBD_INFLIGHT_BYTES_DEFAULT,
  NBD_INFLIGHT_REQUESTS_DEFAULT,
  NBD_INFLIGHT_REQUESTS_MAX,
  NBD_MIN_BLOCK_BYTES_MAX,
  NBD_PAYLOAD_BYTES_MAX,
  NBD_REPLY_BACKLOG_BYTES_MAX,
  NBD_STRING_BYTES_MAX,
} from "./limits.js";

/** TLS material for a listener (PEM strings or buffers, as `node:tls` takes them). */
export interface NbdTlsOptions {
  readonly key: string | Buffer;
  readonly cert: string | Buffer;
  /**
   * CA certificate(s) that sign client certificates. When given, every client must present
   * a certificate signed by one of them (mutual TLS); without it any client may connect
   * once TLS is up.
   */
  readonly ca?: string | Buffer | ReadonlyArray<string | Buffer>;
}

/** Where to listen. TLS, when given, is required of every client on that listener. */
export type NbdListenAddress =
  | { readonly path: string; readonly tls?: NbdTlsOptions }
  | { readonly host: string; readonly port: number; readonly tls?: NbdTlsOptions };

/** The address a listener is bound to (the real port when 0 was asked). */
export type NbdBoundAddress =
  | { readonly path: string }
  | { readonly host: string; readonly port: number };

/** One export. */
export interface NbdExportOptions {
  /** The name clients ask for ("" is the default export). At most 4096 bytes of UTF-8. */
  readonly name: string;
  readonly device: BlockDevice;
  /** Shown by `nbdinfo --list` and NBD_INFO_DESCRIPTION. */
  readonly description?: string;
  /** Serve read-only even if the device is writable. */
  readonly readOnly?: boolean;
}

/** Options for {@link NbdServer}. Defaults and reasons are in limits.ts. */
export interface NbdServerOptions {
  readonly logger?: Logger;
  readonly clock?: Clock;
  readonly connectionsMax?: number;
  readonly inflightRequestsPerConnectionMax?: number;
  readonly inflightBytesPerConnectionMax?: number;
  readonly handshakeTimeoutMs?: number;
}

/** Counters for metrics and tests. */
export interface NbdServerStats {
  readonly connections: number;
  readonly connectionsRefused: number;
  readonly requests: number;
  /** Requests answered with an error (refused by the server or failed by the device). */
  readonly errors: number;
  readonly protocolViolations: number;
}

/**
 * An NBD server. Add exports, `listen` on one or more addresses, `close` when done. The
 * server never closes the devices it exports: their owner does, after `close` or
 * `removeExport` resolves.
 */
export class NbdServer {
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly connectionsMax: number;
  private readonly host: ConnectionHost;
  private readonly exports = new Map<string, ExportEntry>();
  private readonly listeners: net.Server[] = [];
  private readonly connections = new Set<Connection>();
  private nextConnectionId = 1;
  private closing = false;
  private counters = { requests: 0, errors: 0, protocolViolations: 0, connectionsRefused: 0 };

  constructor(options: NbdServerOptions = {}) {
    this.logger = (options.logger ?? nullLogger).child({ component: "nbd" });
    this.clock = options.clock ?? systemClock;
    this.connectionsMax = positive(
      options.connectionsMax ?? NBD_CONNECTIONS_DEFAULT,
      "connectionsMax",
    );
    const inflightRequestsMax = positive(
      options.inflightRequestsPerConnectionMax ?? NBD_INFLIGHT_REQUESTS_DEFAULT,
      "inflightRequestsPerConnectionMax",
    );
    if (inflightRequestsMax > NBD_INFLIGHT_REQUESTS_MAX) {
      throw new RangeError(
        `inflightRequestsPerConnectionMax must be <= ${NBD_INFLIGHT_REQUESTS_MAX}`,
      );
    }
    this.host = {
      logger: this.logger,
      clock: this.clock,
      inflightRequestsMax,
      inflightBytesMax: positive(
        options.inflightBytesPerConnectionMax ?? NBD_INFLIGHT_BYTES_DEFAULT,
        "inflightBytesPerConnectionMax",
      ),
      replyBacklogBytesMax: NBD_REPLY_BACKLOG_BYTES_MAX,
      handshakeTimeoutMs: positive(
        options.handshakeTimeoutMs ?? NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT,
        "handshakeTimeoutMs",
      ),
      findExport: (name) => this.findExport(name),
      listExports: () => [...this.exports.values()],
      isClosing: () => this.closing,
      count: (what) => {
        this.counters[what]++;
      },
      closed: (connection) => {
        this.connections.delete(connection);
      },
    };
  }

  /** Adds an export. RangeError for a bad name, a duplicate, or a device NBD cannot describe. */
  addExport(options: NbdExportOptions): void {
    const { name, device } = options;
    if (
      typeof name !== "string" ||
      Buffer.byteLength(name) > NBD_STRING_BYTES_MAX ||
      name.includes("\0")
    ) {
      throw new RangeError(
        `export name must be a string of at most ${NBD_STRING_BYTES_MAX} bytes without NUL`,
      );
    }
    if (this.exports.has(name)) throw new RangeError(`export "${name}" already exists`);
    if (this.exports.size >= NBD_EXPORTS_MAX) {
      throw new RangeError(`at most ${NBD_EXPORTS_MAX} exports per server`);
    }
    checkDeviceGeometry(device, name);
    const description = options.description ?? "";
    if (Buffer.byteLength(description) > NBD_STRING_BYTES_MAX || description.includes("\0")) {
      throw new RangeError(`description of export "${name}" is too long or contains NUL`);
    }
    const readOnly = device.readOnly || (options.readOnly ?? false);
    this.exports.set(name, { name, description, device, readOnly });
    this.logger.info({ export: name, sizeBytes: device.sizeBytes, readOnly }, "nbd: export added");
  }

  /**
   * Removes an export. Its connections get ESHUTDOWN for new requests, have up to `drainMs`
   * to finish what is in flight, and are then closed. New clients no longer see it.
   */
  async removeExport(name: string, options: { readonly drainMs?: number } = {}): Promise<void> {
    const entry = this.exports.get(name);
    if (entry === undefined) throw new RangeError(`no export named "${name}"`);
    this.exports.delete(name);
    const affected = [...this.connections].filter((c) => c.exportName === name);
    await this.drainAndDestroy(affected, options.drainMs ?? NBD_CLOSE_DRAIN_MS_DEFAULT);
  }

  /** Resolves "" to the export named "" or, when there is exactly one export, to that one. */
  private findExport(name: string): ExportEntry | undefined {
    const exact = this.exports.get(name);
    if (exact !== undefined || name !== "" || this.exports.size !== 1) return exact;
    return this.exports.values().next().value;
  }

  /**
   * Starts a listener. A TCP address off loopback without `tls` is a RangeError: plaintext NBD
   * would hand the volume to anyone on the network. Fails with HES_UNAVAILABLE when the
   * address cannot be bound (in use, no permission).
   */
  async listen(address: NbdListenAddress): Promise<NbdBoundAddress> {
    if (this.closing) throw new HesError("HES_CLOSED", "nbd server is closed");
    const policy = listenerPolicy(address);
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) =>
      this.accept(socket, policy),
    );
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void =>
        reject(
          new HesError("HES_UNAVAILABLE", `nbd cannot listen: ${error.message}`, { cause: error }),
        );
      server.once("error", onError);
      const done = (): void => {
        server.off("error", onError);
        resolve();
      };
      if ("path" in address) server.listen(address.path, done);
      else server.listen(address.port, address.host, done);
    });
    server.on("error", (error) => this.logger.error({ err: error }, "nbd: listener error"));
    this.listeners.push(server);
    const bound = server.address();
    const result: NbdBoundAddress =
      typeof bound === "object" && bound !== null
        ? { host: bound.address, port: bound.port }
        : { path: String(bound) };
    this.logger.info(
      { address: result, tls: policy.secureContext !== undefined },
      "nbd: listening",
    );
    return result;
  }

  stats(): NbdServerStats {
    return { connections: this.connections.size, ...this.counters };
  }

  /**
   * Stops listening, lets in-flight requests finish for up to `drainMs` (new ones get
   * ESHUTDOWN), then closes every connection. Resolves when all sockets are closed.
   */
  async close(options: { readonly drainMs?: number } = {}): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const listenersClosed = Promise.all(
      this.listeners.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
    await this.drainAndDestroy(
      [...this.connections],
      options.drainMs ?? NBD_CLOSE_DRAIN_MS_DEFAULT,
    );
    await listenersClosed;
    this.logger.info(this.stats(), "nbd: server closed");
  }

  /**
   * Drains `connections`: new requests get ESHUTDOWN while in-flight ones finish, for up to
   * `drainMs`. Idle connections then end gracefully (their last replies flushed); those
   * still busy at the deadline, or not closed by then, are destroyed.
   */
  private async drainAndDestroy(connections: Connection[], drainMs: number): Promise<void> {
    for (const connection of connections) connection.drain();
    let timer: { cancel(): void } | undefined;
    let expired = false;
    const deadline = new Promise<void>((resolve) => {
      timer = this.clock.setTimer(drainMs, () => {
        expired = true;
        resolve();
      });
    });
    const closed = connections.map((c) => new Promise<void>((resolve) => c.onceClosed(resolve)));
    await Promise.race([
      Promise.all(connections.map((c) => c.idle().then(() => c.endGracefully()))),
      deadline,
    ]);
    if (!expired) await Promise.race([Promise.all(closed), deadline]);
    timer?.cancel();
    for (const connection of connections) connection.destroy();
    await Promise.all(closed);
  }

  private accept(socket: net.Socket, policy: ListenerPolicy): void {
    if (this.closing || this.connections.size >= this.connectionsMax) {
      this.counters.connectionsRefused++;
      this.logger.warn(
        { connections: this.connections.size, closing: this.closing },
        "nbd: connection refused (limit reached or closing)",
      );
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const connection = new Connection(this.nextConnectionId++, socket, this.host, policy);
    this.connections.add(connection);
  }
}

function positive(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  return value;
}

function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && (value & (value - 1)) === 0;
}

/** NBD's block-size rules (proto.md "Size constraints") applied to a device. */
function checkDeviceGeometry(device: BlockDevice, name: string): void {
  const what = `export "${name}"`;
  if (typeof device !== "object" || device === null)
    throw new TypeError(`${what}: device is required`);
  const { logicalBlockBytes: minimum, preferredBlockBytes: preferred, maxRequestBytes } = device;
  if (!isPowerOfTwo(minimum) || minimum > NBD_MIN_BLOCK_BYTES_MAX) {
    throw new RangeError(
      `${what}: logicalBlockBytes must be a power of two <= 64 KiB, got ${minimum}`,
    );
  }
  if (!isPowerOfTwo(preferred) || preferred < Math.max(minimum, 512)) {
    throw new RangeError(
      `${what}: preferredBlockBytes must be a power of two >= max(512, logical)`,
    );
  }
  if (
    !Number.isSafeInteger(maxRequestBytes) ||
    Math.min(maxRequestBytes, NBD_PAYLOAD_BYTES_MAX) < preferred
  ) {
    throw new RangeError(`${what}: maxRequestBytes must be at least preferredBlockBytes`);
  }
  if (!Number.isSafeInteger(device.sizeBytes) || device.sizeBytes < 0) {
    throw new RangeError(`${what}: sizeBytes must be a non-negative safe integer`);
  }
}

/** True for addresses that only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  const bare = host.startsWith("::ffff:") ? host.slice(7) : host;
  if (isIP(bare) === 4) return bare.startsWith("127.");
  return bare === "::1";
}

function listenerPolicy(address: NbdListenAddress): ListenerPolicy {
  if (typeof address !== "object" || address === null) {
    throw new TypeError("listen address must be { path } or { host, port }");
  }
  if ("host" in address && address.tls === undefined && !isLoopbackHost(address.host)) {
    throw new RangeError(
      `listen: ${address.host} is not a loopback address, so this export needs tls ` +
        "(give { key, cert }); plaintext NBD off this machine would expose the volume",
    );
  }
  if (address.tls === undefined) return { requestClientCertificate: false };
  try {
    const secureContext = tls.createSecureContext({
      key: address.tls.key,
      cert: address.tls.cert,
      ...(address.tls.ca === undefined
        ? {}
        : { ca: address.tls.ca as string | Buffer | Array<string | Buffer> }),
      minVersion: "TLSv1.2",
    });
    return { secureContext, requestClientCertificate: address.tls.ca !== undefined };
  } catch (error) {
    throw new RangeError(`listen: tls key/cert/ca rejected: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
