/**
 * One client connection: the fixed-newstyle handshake (options, STARTTLS), then the
 * transmission phase with many requests in flight, answered as they complete and matched by
 * cookie.
 *
 * Input is parsed from an InputQueue by `pump()`, which runs whenever bytes arrive or a
 * request completes. A request is admitted only while the connection's window (requests,
 * payload bytes, reply backlog) has room; otherwise the socket is paused, so a client that
 * queues deeper is held back by TCP flow control. Replies are corked per tick and written as
 * header + data buffers (writev), so read data goes to the socket without a copy.
 *
 * Failure isolation: a bad request gets its NBD error and the connection keeps serving; a
 * protocol violation (bad magic, a client flag we never offered, an oversize option on
 * EXPORT_NAME) closes this connection only.
 */
import { setMaxListeners } from "node:events";
import type * as net from "node:net";
import * as tls from "node:tls";
import { AssertionError, type Clock, type Logger, type Timer } from "@hes/base";
import type { BlockDevice } from "@hes/blockdev";
import {
  decodeRequestHeader,
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerReply,
  encodeSimpleReply,
  encodeStructuredError,
  isOptionMagic,
  parseInfoRequest,
  parseMetaContextRequest,
  type RequestHeader,
} from "./codec.js";
import { nbdErrnoOf } from "./errno.js";
import { InputQueue } from "./input-queue.js";
import {
  NBD_OPTION_BYTES_MAX,
  NBD_OPTIONS_PER_CONNECTION_MAX,
  NBD_PAYLOAD_BYTES_MAX,
  NBD_STRING_BYTES_MAX,
} from "./limits.js";
import * as P from "./protocol.js";
import { checkRequest, commandName, type TransmissionContext } from "./requests.js";
import { type Executor, executeRequest } from "./transmission.js";

/** An export as the server registered it. */
export interface ExportEntry {
  readonly name: string;
  readonly description: string;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
}

/** How a listener wants its connections handled. */
export interface ListenerPolicy {
  /** Present when the listener offers TLS; then TLS is required (FORCEDTLS mode). */
  readonly secureContext?: tls.SecureContext;
  /** Require and verify a client certificate during the TLS handshake. */
  readonly requestClientCertificate: boolean;
}

/** What a connection needs from its server. */
export interface ConnectionHost {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly inflightRequestsMax: number;
  readonly inflightBytesMax: number;
  readonly replyBacklogBytesMax: number;
  readonly handshakeTimeoutMs: number;
  findExport(name: string): ExportEntry | undefined;
  listExports(): readonly ExportEntry[];
  isClosing(): boolean;
  /** Counts for stats. */
  count(what: "requests" | "errors" | "protocolViolations"): void;
  /** The connection closed; forget it. */
  closed(connection: Connection): void;
}

type Phase = "clientFlags" | "options" | "upgrading" | "transmission" | "ended";

/** Geometry the handshake announced for the chosen export. */
interface Session {
  readonly entry: ExportEntry;
  readonly context: TransmissionContext;
}

/** One client connection; created by the server for each accepted socket. */
export class Connection implements Executor {
  readonly id: number;
  readonly logger: Logger;
  readonly controller = new AbortController();
  private socket: net.Socket;
  private readonly host: ConnectionHost;
  private readonly policy: ListenerPolicy;
  private readonly input = new InputQueue();
  private phase: Phase = "clientFlags";
  private handshakeTimer: Timer | undefined;
  private noZeroes = false;
  private tlsActive = false;
  private structuredReplies = false;
  /** The export `base:allocation` was selected for (SET_META_CONTEXT), if any. */
  private metaContextExport: ExportEntry | undefined;
  private optionsSeen = 0;
  private pendingOption: { readonly option: number; readonly lengthBytes: number } | undefined;
  private skipOptionBytes = 0;
  private session: Session | undefined;
  private current: RequestHeader | undefined;
  private currentAdmitted = false;
  /** A WRITE payload being assembled, and how much of it has arrived. */
  private partialPayload: Buffer | undefined;
  private partialFilled = 0;
  private skipPayloadBytes = 0;
  private inflightRequests = 0;
  private inflightBytes = 0;
  private blocked = false;
  private draining = false;
  private disconnectRequested = false;
  /** The client half-closed: no more input will come. */
  private inputEnded = false;
  private pumping = false;
  private corked = false;
  private idleWaiters: Array<() => void> = [];
  private closeWaiters: Array<() => void> = [];
  private closed = false;

  constructor(id: number, socket: net.Socket, host: ConnectionHost, policy: ListenerPolicy) {
    // Every in-flight request's device calls listen on this signal (a volume: one listener per
    // replica call) and remove their listener when they finish, so the count is bounded by the
    // in-flight window, not a leak; Node's default of 10 would warn at depth 4.
    setMaxListeners(0, this.controller.signal);
    this.id = id;
    this.socket = socket;
    this.host = host;
    this.policy = policy;
    this.logger = host.logger.child({
      connection: id,
      peer:
        socket.remoteAddress === undefined
          ? "unix"
          : `${socket.remoteAddress}:${socket.remotePort}`,
    });
    this.attach(socket);
    this.handshakeTimer = host.clock.setTimer(host.handshakeTimeoutMs, () => {
      this.logger.warn({ timeoutMs: host.handshakeTimeoutMs }, "nbd: handshake timed out");
      this.destroy();
    });
    this.send([encodeGreeting()]);
  }

  /** The export this connection transmits on, once the handshake is over. */
  get exportName(): string | undefined {
    return this.session?.entry.name;
  }

  get device(): BlockDevice {
    return (this.session as Session).entry.device;
  }

  get context(): TransmissionContext {
    return (this.session as Session).context;
  }

  /** Calls `callback` once the socket has closed (at once if it has). */
  onceClosed(callback: () => void): void {
    if (this.closed) callback();
    else this.closeWaiters.push(callback);
  }

  /** Resolves once no request is in flight (immediately when none is). */
  idle(): Promise<void> {
    if (this.inflightRequests === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Starts a graceful shutdown: options get NBD_REP_ERR_SHUTDOWN, new requests ESHUTDOWN
   * (write payloads are still consumed), in-flight ones finish. The caller destroys later.
   */
  drain(): void {
    this.draining = true;
    if (this.phase !== "transmission") this.destroy();
  }

  /**
   * Ends the connection after what is already queued has been written (a graceful close:
   * replies sent just before are not lost), then releases the socket.
   */
  endGracefully(): void {
    if (this.closed || (this.phase === "ended" && this.socket.writableEnded)) return;
    this.phase = "ended";
    this.handshakeTimer?.cancel();
    this.input.clear();
    const socket = this.socket;
    socket.once("finish", () => socket.destroy());
    socket.end();
  }

  /** Closes the socket at once; in-flight device calls see their signal abort. */
  destroy(): void {
    if (this.phase === "ended" && this.socket.destroyed) return;
    this.phase = "ended";
    this.handshakeTimer?.cancel();
    this.controller.abort();
    this.input.clear();
    this.socket.destroy();
  }

  private attach(socket: net.Socket): void {
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("drain", this.onDrain);
    socket.on("error", (error: Error) => this.logger.debug({ err: error }, "nbd: socket error"));
    socket.once("close", this.onClose);
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.phase === "ended" || this.disconnectRequested) return;
    this.input.push(chunk);
    this.pump();
  };

  private readonly onEnd = (): void => {
    // The client will send nothing more: finish what it sent, then close our side.
    this.inputEnded = true;
    if (this.phase !== "transmission") this.endGracefully();
    else this.maybeFinishDisconnect();
  };

  private readonly onDrain = (): void => {
    if (this.blocked) this.unblockAndPump();
  };

  private readonly onClose = (): void => {
    // After STARTTLS both the raw and the TLS socket report the close: handle it once.
    if (this.closed) return;
    this.closed = true;
    this.phase = "ended";
    this.handshakeTimer?.cancel();
    this.controller.abort();
    this.input.clear();
    for (const resolve of this.idleWaiters.splice(0)) resolve();
    this.host.closed(this);
    for (const callback of this.closeWaiters.splice(0)) callback();
  };

  /** Parses as much input as the current phase and window allow. Never re-entered. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.step()) {
        // each step consumed input or changed state; keep going
      }
    } finally {
      this.pumping = false;
    }
  }

  private step(): boolean {
    switch (this.phase) {
      case "clientFlags":
        return this.readClientFlags();
      case "options":
        return this.readOption();
      case "transmission":
        return this.readRequest();
      default:
        return false;
    }
  }

  private violation(reason: string, fields: Record<string, unknown> = {}): false {
    this.host.count("protocolViolations");
    this.logger.warn({ ...fields, reason }, "nbd: protocol violation; closing this connection");
    this.destroy();
    return false;
  }

  // ---- handshake ----

  private readClientFlags(): boolean {
    if (this.input.length < P.CLIENT_FLAGS_BYTES) return false;
    const flags = this.input.take(P.CLIENT_FLAGS_BYTES).readUInt32BE(0);
    if ((flags & ~(P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES)) !== 0) {
      return this.violation("unknown client flags", { flags });
    }
    if ((flags & P.FLAG_C_FIXED_NEWSTYLE) === 0 && this.policy.secureContext !== undefined) {
      // TLS needs fixed newstyle (proto.md); this listener serves nothing without TLS.
      return this.violation("client without fixed newstyle on a TLS listener", { flags });
    }
    this.noZeroes = (flags & P.FLAG_C_NO_ZEROES) !== 0;
    this.phase = "options";
    return true;
  }

  private readOption(): boolean {
    if (this.skipOptionBytes > 0) {
      this.skipOptionBytes -= this.input.skip(this.skipOptionBytes);
      if (this.skipOptionBytes > 0) return false;
      const option = this.pendingOption?.option ?? 0;
      this.pendingOption = undefined;
      this.replyOption(
        option,
        P.REP_ERR_TOO_BIG,
        `option data above ${NBD_OPTION_BYTES_MAX} bytes`,
      );
      return true;
    }
    if (this.pendingOption === undefined) {
      if (this.input.length < P.OPTION_HEADER_BYTES) return false;
      const header = this.input.take(P.OPTION_HEADER_BYTES);
      if (!isOptionMagic(header, 0)) return this.violation("bad option magic");
      if (++this.optionsSeen > NBD_OPTIONS_PER_CONNECTION_MAX) {
        return this.violation("too many options", { optionsSeen: this.optionsSeen });
      }
      const option = header.readUInt32BE(8);
      const lengthBytes = header.readUInt32BE(12);
      this.pendingOption = { option, lengthBytes };
      if (lengthBytes > NBD_OPTION_BYTES_MAX) {
        if (option === P.OPT_EXPORT_NAME) return this.violation("oversize export name");
        this.skipOptionBytes = lengthBytes;
        return true;
      }
    }
    const { option, lengthBytes } = this.pendingOption;
    if (this.input.length < lengthBytes) return false;
    const data = this.input.take(lengthBytes);
    this.pendingOption = undefined;
    this.handleOption(option, data);
    return this.phase === "options" || this.phase === "transmission";
  }

  private replyOption(option: number, type: number, data?: Uint8Array | string): void {
    const body = typeof data === "string" ? Buffer.from(data.slice(0, NBD_STRING_BYTES_MAX)) : data;
    this.send([encodeOptionReply(option, type, body)]);
  }

  private handleOption(option: number, data: Buffer): void {
    if (this.draining || this.host.isClosing()) {
      if (option === P.OPT_EXPORT_NAME) this.destroy();
      else this.replyOption(option, P.REP_ERR_SHUTDOWN, "the server is shutting down");
      return;
    }
    const tlsRequired = this.policy.secureContext !== undefined && !this.tlsActive;
    if (tlsRequired && option !== P.OPT_STARTTLS && option !== P.OPT_ABORT) {
      if (option === P.OPT_EXPORT_NAME) {
        this.violation("NBD_OPT_EXPORT_NAME before TLS on a TLS listener");
        return;
      }
      this.replyOption(option, P.REP_ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS first");
      return;
    }
    switch (option) {
      case P.OPT_EXPORT_NAME:
        this.optionExportName(data);
        return;
      case P.OPT_ABORT:
        this.replyOption(option, P.REP_ACK);
        this.endGracefully();
        return;
      case P.OPT_LIST:
        this.optionList(data);
        return;
      case P.OPT_STARTTLS:
        this.optionStartTls(data);
        return;
      case P.OPT_INFO:
      case P.OPT_GO:
        this.optionInfo(option, data);
        return;
      case P.OPT_STRUCTURED_REPLY:
        if (data.length > 0) {
          this.replyOption(option, P.REP_ERR_INVALID, "no data expected");
          return;
        }
        this.structuredReplies = true;
        this.replyOption(option, P.REP_ACK);
        return;
      case P.OPT_LIST_META_CONTEXT:
      case P.OPT_SET_META_CONTEXT:
        this.optionMetaContext(option, data);
        return;
      default:
        this.replyOption(option, P.REP_ERR_UNSUP, `option ${option} is not supported`);
    }
  }

  private optionList(data: Buffer): void {
    if (data.length > 0) {
      this.replyOption(P.OPT_LIST, P.REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
      return;
    }
    for (const entry of this.host.listExports()) {
      this.replyOption(P.OPT_LIST, P.REP_SERVER, encodeServerReply(entry.name, entry.description));
    }
    this.replyOption(P.OPT_LIST, P.REP_ACK);
  }

  private optionStartTls(data: Buffer): void {
    const context = this.policy.secureContext;
    if (context === undefined) {
      this.replyOption(P.OPT_STARTTLS, P.REP_ERR_POLICY, "TLS is not configured on this listener");
      return;
    }
    if (this.tlsActive || data.length > 0) {
      this.replyOption(P.OPT_STARTTLS, P.REP_ERR_INVALID, "TLS already active, or data given");
      return;
    }
    if (this.input.length > 0) {
      this.violation("data after NBD_OPT_STARTTLS before its reply");
      return;
    }
    this.phase = "upgrading";
    const raw = this.socket;
    raw.off("data", this.onData);
    raw.pause();
    this.send([encodeOptionReply(P.OPT_STARTTLS, P.REP_ACK)], (error) => {
      if (error !== undefined && error !== null) return;
      this.upgrade(raw, context);
    });
  }

  private upgrade(raw: net.Socket, context: tls.SecureContext): void {
    if (this.phase !== "upgrading") return;
    const secure = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: context,
      requestCert: this.policy.requestClientCertificate,
      rejectUnauthorized: this.policy.requestClientCertificate,
    });
    raw.off("end", this.onEnd);
    raw.off("drain", this.onDrain);
    secure.once("secure", () => {
      if (this.phase !== "upgrading") return;
      this.tlsActive = true;
      // proto.md: nothing negotiated before STARTTLS survives it.
      this.structuredReplies = false;
      this.metaContextExport = undefined;
      this.phase = "options";
      this.logger.debug({ protocol: secure.getProtocol() }, "nbd: TLS established");
      this.pump();
    });
    secure.on("error", (error: Error) => {
      this.logger.warn({ err: error }, "nbd: TLS handshake or session failed");
      this.destroy();
    });
    this.socket = secure;
    this.attach(secure);
  }

  private optionInfo(option: number, data: Buffer): void {
    const request = parseInfoRequest(data);
    if (request === undefined) {
      this.replyOption(option, P.REP_ERR_INVALID, "malformed NBD_OPT_INFO/GO data");
      return;
    }
    const entry = this.host.findExport(request.name);
    if (entry === undefined) {
      this.replyOption(option, P.REP_ERR_UNKNOWN, `no export named "${request.name}"`);
      return;
    }
    const context = this.contextFor(entry);
    const flags = this.transmissionFlags(entry);
    this.replyOption(option, P.REP_INFO, encodeInfoExport(context.sizeBytes, flags));
    // Sent whether asked or not: this server enforces a 512-byte minimum (not the default 1).
    this.replyOption(
      option,
      P.REP_INFO,
      encodeInfoBlockSize(
        context.minimumBlockBytes,
        preferredBlockBytes(entry.device),
        context.maximumPayloadBytes,
      ),
    );
    if (request.infoTypes.includes(P.INFO_NAME)) {
      this.replyOption(option, P.REP_INFO, encodeInfoString(P.INFO_NAME, entry.name));
    }
    if (request.infoTypes.includes(P.INFO_DESCRIPTION) && entry.description !== "") {
      this.replyOption(option, P.REP_INFO, encodeInfoString(P.INFO_DESCRIPTION, entry.description));
    }
    this.replyOption(option, P.REP_ACK);
    if (option === P.OPT_GO) this.enterTransmission(entry, context);
  }

  private optionExportName(data: Buffer): void {
    const name = decodeString(data);
    const entry = name === undefined ? undefined : this.host.findExport(name);
    if (entry === undefined) {
      // NBD_OPT_EXPORT_NAME cannot carry an error: proto.md says terminate the session.
      this.logger.info({ name }, "nbd: NBD_OPT_EXPORT_NAME for an unknown export; closing");
      this.destroy();
      return;
    }
    const context = this.contextFor(entry);
    const flags = this.transmissionFlags(entry);
    this.send([encodeExportNameReply(context.sizeBytes, flags, this.noZeroes)]);
    this.enterTransmission(entry, context);
  }

  private optionMetaContext(option: number, data: Buffer): void {
    if (option === P.OPT_SET_META_CONTEXT) this.metaContextExport = undefined;
    if (!this.structuredReplies) {
      this.replyOption(option, P.REP_ERR_INVALID, "negotiate NBD_OPT_STRUCTURED_REPLY first");
      return;
    }
    const request = parseMetaContextRequest(data);
    if (request === undefined) {
      this.replyOption(option, P.REP_ERR_INVALID, "malformed meta context data");
      return;
    }
    const entry = this.host.findExport(request.name);
    if (entry === undefined) {
      this.replyOption(option, P.REP_ERR_UNKNOWN, `no export named "${request.name}"`);
      return;
    }
    const listing = option === P.OPT_LIST_META_CONTEXT;
    const matches = request.queries.some(
      (query) => query === P.BASE_ALLOCATION || (listing && query === "base:"),
    );
    if (matches || (listing && request.queries.length === 0)) {
      const id = listing ? 0 : P.BASE_ALLOCATION_CONTEXT_ID;
      this.replyOption(option, P.REP_META_CONTEXT, encodeMetaContextReply(id, P.BASE_ALLOCATION));
      if (!listing) this.metaContextExport = entry;
    }
    this.replyOption(option, P.REP_ACK);
  }

  private contextFor(entry: ExportEntry): TransmissionContext {
    const device = entry.device;
    const minimum = device.logicalBlockBytes;
    const maximum = Math.min(device.maxRequestBytes, NBD_PAYLOAD_BYTES_MAX);
    return {
      sizeBytes: Math.floor(device.sizeBytes / minimum) * minimum,
      minimumBlockBytes: minimum,
      maximumPayloadBytes: Math.floor(maximum / minimum) * minimum,
      readOnly: entry.readOnly,
      structuredReplies: this.structuredReplies,
      blockStatus: this.metaContextExport === entry,
    };
  }

  private transmissionFlags(entry: ExportEntry): number {
    let flags = P.TFLAG_HAS_FLAGS | P.TFLAG_SEND_FLUSH | P.TFLAG_SEND_FUA | P.TFLAG_SEND_CACHE;
    if (entry.readOnly) flags |= P.TFLAG_READ_ONLY;
    else flags |= P.TFLAG_SEND_TRIM | P.TFLAG_SEND_WRITE_ZEROES | P.TFLAG_SEND_FAST_ZERO;
    if (this.structuredReplies) flags |= P.TFLAG_SEND_DF;
    if (entry.device.multiConnSafe) flags |= P.TFLAG_CAN_MULTI_CONN;
    return flags;
  }

  private enterTransmission(entry: ExportEntry, context: TransmissionContext): void {
    this.handshakeTimer?.cancel();
    this.handshakeTimer = undefined;
    this.session = { entry, context };
    this.phase = "transmission";
    this.logger.info(
      {
        export: entry.name,
        sizeBytes: context.sizeBytes,
        structuredReplies: context.structuredReplies,
        blockStatus: context.blockStatus,
        tls: this.tlsActive,
      },
      "nbd: client entered transmission",
    );
  }

  // ---- transmission ----

  private readRequest(): boolean {
    if (this.skipPayloadBytes > 0) {
      this.skipPayloadBytes -= this.input.skip(this.skipPayloadBytes);
      if (this.skipPayloadBytes > 0) return false;
    }
    if (this.current === undefined) {
      if (this.disconnectRequested || this.input.length < P.REQUEST_HEADER_BYTES) return false;
      const header = decodeRequestHeader(this.input.take(P.REQUEST_HEADER_BYTES));
      if (header === undefined) return this.violation("bad request magic");
      if (header.type === P.CMD_DISC) {
        // Nothing may follow DISC (proto.md): stop reading so a client ignoring that
        // cannot grow our input while in-flight requests finish.
        this.disconnectRequested = true;
        this.socket.pause();
        this.input.clear();
        this.maybeFinishDisconnect();
        return false;
      }
      this.host.count("requests");
      const refusal = this.draining
        ? { errno: P.NBD_ESHUTDOWN, message: "the server is shutting down" }
        : checkRequest(header, this.context);
      if (refusal !== undefined) {
        if (header.type === P.CMD_WRITE) this.skipPayloadBytes = header.lengthBytes;
        this.logger.debug({ ...refusal, command: commandName(header.type) }, "nbd: refused");
        this.replyError(header, refusal.errno, refusal.message);
        return true;
      }
      this.current = header;
    }
    return this.admitAndStart(this.current);
  }

  private admitAndStart(header: RequestHeader): boolean {
    const costBytes =
      header.type === P.CMD_READ || header.type === P.CMD_WRITE ? header.lengthBytes : 0;
    if (!this.currentAdmitted) {
      if (!this.windowHasRoom(costBytes)) {
        this.blocked = true;
        this.socket.pause();
        return false;
      }
      this.currentAdmitted = true;
      this.inflightRequests++;
      this.inflightBytes += costBytes;
    }
    let payload: Buffer | undefined;
    if (header.type === P.CMD_WRITE) {
      payload = this.receivePayload(header.lengthBytes);
      if (payload === undefined) return false;
    }
    this.current = undefined;
    this.currentAdmitted = false;
    executeRequest(this, header, payload).then(
      () => this.release(costBytes),
      (error: unknown) => {
        this.failed(header, error);
        this.release(costBytes);
      },
    );
    return true;
  }

  /**
   * The WRITE payload once all of it is here. A payload that arrived whole is a view of the
   * received chunk; a larger one is copied into its own buffer chunk by chunk as it arrives,
   * while each chunk is still in cache, instead of all at once at the end.
   */
  private receivePayload(lengthBytes: number): Buffer | undefined {
    if (this.partialPayload === undefined) {
      if (this.input.length >= lengthBytes) return this.input.take(lengthBytes);
      this.partialPayload = Buffer.allocUnsafe(lengthBytes);
      this.partialFilled = 0;
    }
    const payload = this.partialPayload;
    this.partialFilled += this.input.copyInto(payload, this.partialFilled);
    if (this.partialFilled < lengthBytes) return undefined;
    this.partialPayload = undefined;
    return payload;
  }

  private windowHasRoom(costBytes: number): boolean {
    if (this.inflightRequests >= this.host.inflightRequestsMax) return false;
    if (this.inflightBytes > 0 && this.inflightBytes + costBytes > this.host.inflightBytesMax) {
      return false;
    }
    return this.socket.writableLength <= this.host.replyBacklogBytesMax;
  }

  private release(costBytes: number): void {
    this.inflightRequests--;
    this.inflightBytes -= costBytes;
    if (this.inflightRequests === 0) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
    if (this.phase !== "transmission") return;
    if (this.blocked) this.unblockAndPump();
    this.maybeFinishDisconnect();
  }

  private unblockAndPump(): void {
    this.blocked = false;
    this.socket.resume();
    this.pump();
  }

  /** After a half-close: true when the buffered input can never complete another request. */
  private inputExhausted(): boolean {
    if (!this.inputEnded) return false;
    if (this.skipPayloadBytes > 0) return true;
    const current = this.current;
    if (current === undefined) return this.input.length < P.REQUEST_HEADER_BYTES;
    return this.currentAdmitted && this.partialPayload !== undefined;
  }

  /** Ends the connection once DISC (or a half-close) was seen and nothing is left to answer. */
  private maybeFinishDisconnect(): void {
    if (this.phase !== "transmission") return;
    if (!this.disconnectRequested && !this.inputExhausted()) return;
    // An admitted WRITE whose payload can no longer arrive holds a slot it will never use.
    const stranded = this.inputExhausted() && this.currentAdmitted ? 1 : 0;
    if (this.inflightRequests - stranded > 0) return;
    this.logger.debug("nbd: client disconnected");
    this.endGracefully();
  }

  private failed(header: RequestHeader, error: unknown): void {
    if (error instanceof AssertionError) {
      this.logger.fatal({ err: error }, "nbd: assertion failed while serving a request");
      queueMicrotask(() => {
        throw error;
      });
    }
    const errno = nbdErrnoOf(error);
    if (errno === P.NBD_EIO) {
      this.logger.warn({ err: error, command: commandName(header.type) }, "nbd: device error");
    }
    const message = error instanceof Error ? error.message : String(error);
    this.replyError(header, errno, message);
  }

  /** Sends an error reply: structured (with the message) when negotiated, else simple. */
  replyError(header: RequestHeader, errno: number, message: string): void {
    this.host.count("errors");
    const structured = this.session?.context.structuredReplies ?? false;
    this.send([
      structured
        ? encodeStructuredError(header, errno, message, NBD_STRING_BYTES_MAX)
        : encodeSimpleReply(errno, header),
    ]);
  }

  /**
   * Queues buffers on the socket, corked until `setImmediate` (after the event loop's poll
   * phase) so the replies completed in one turn of the loop leave in one writev. `onFlushed` runs once the socket has taken them.
   */
  send(parts: readonly Uint8Array[], onFlushed?: (error?: Error | null) => void): void {
    const socket = this.socket;
    if (socket.destroyed || this.phase === "ended") {
      onFlushed?.(new Error("connection closed"));
      return;
    }
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      setImmediate(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    const last = parts.length - 1;
    for (let i = 0; i < last; i++) socket.write(parts[i] as Uint8Array);
    socket.write(parts[last] as Uint8Array, onFlushed);
  }
}

function preferredBlockBytes(device: BlockDevice): number {
  return Math.max(device.preferredBlockBytes, device.logicalBlockBytes, 512);
}
