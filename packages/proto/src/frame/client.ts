/**
 * The data-plane client: one connection to one server, many requests in flight on it
 * (pipelined, matched by request id), with deadlines, cancellation, bounded waiting and lazy
 * reconnection with backoff.
 *
 * It never retries: whether a request is safe to repeat (a read is; a write with the same
 * epoch and sequence is idempotent at the replica; a compare-and-write is not) is the caller's
 * knowledge. When a connection drops, every request on it fails with HES_UNAVAILABLE and its
 * effect is unknown.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import { type Clock, HesError, type Logger, nullLogger, systemClock, type Timer } from "@hes/base";
import {
  FRAME_CLIENT_INFLIGHT_DEFAULT,
  FRAME_CLIENT_WAITERS_MAX,
  FRAME_CONNECT_TIMEOUT_MS_DEFAULT,
  FRAME_DEADLINE_MS_DEFAULT,
  FRAME_PAYLOAD_BYTES_DEFAULT,
  FRAME_PAYLOAD_BYTES_MAX,
} from "../limits.js";
import { encodeFrame, type Frame, FrameDecoder, FrameKind, FrameStatus } from "./codec.js";
import type { FrameAddress } from "./server.js";
import { decodeErrorMeta, FrameSink } from "./socket.js";

/** Backoff after a failed connect: doubles from the first to the last value. */
const RECONNECT_BACKOFF_MS_MIN = 50;
const RECONNECT_BACKOFF_MS_MAX = 2_000;

/** Options for {@link FrameClient}. */
export interface FrameClientOptions {
  readonly address: FrameAddress;
  /** TLS connect options (CA, client certificate, servername); absent = plaintext. */
  readonly tls?: tls.ConnectionOptions;
  readonly inflightMax?: number;
  readonly payloadBytesMax?: number;
  readonly deadlineMsDefault?: number;
  readonly connectTimeoutMs?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/** One call's request. */
export interface FrameCall {
  readonly meta?: Uint8Array;
  readonly payload?: Uint8Array | readonly Uint8Array[];
  /** Milliseconds until the call fails with HES_TIMEOUT (default from the client options). */
  readonly deadlineMs?: number;
  readonly signal?: AbortSignal;
}

/** A successful response. `meta` and `payload` may be views into receive buffers. */
export interface FrameReply {
  readonly meta: Uint8Array;
  readonly payload: Uint8Array;
}

interface Pending {
  readonly opcode: number;
  readonly resolve: (reply: FrameReply) => void;
  readonly reject: (error: unknown) => void;
  /** Monotonic ms after which the call fails with HES_TIMEOUT. */
  readonly deadlineAtMs: number;
  readonly deadlineMs: number;
  /** Removes the abort listener, if the call had a signal. */
  readonly cleanup: (() => void) | undefined;
}

interface Live {
  readonly socket: net.Socket;
  readonly sink: FrameSink;
  readonly decoder: FrameDecoder;
  /** Monotonic ms of the last bytes received (or of the connect). */
  lastReceiveAtMs: number;
}

/** A pipelined connection to one data-plane server. */
export class FrameClient {
  readonly address: FrameAddress;
  private readonly options: FrameClientOptions;
  private readonly inflightMax: number;
  private readonly deadlineMsDefault: number;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly pending = new Map<number, Pending>();
  private readonly waiters: Array<() => void> = [];
  private live: Live | undefined;
  private connecting: Promise<Live> | undefined;
  private nextRequestId = 1;
  private inflight = 0;
  private backoffMs = 0;
  /**
   * One timer for every deadline (armed for the earliest), instead of a timer per call:
   * at tens of thousands of calls per second, per-call timers cost more than the framing.
   */
  private deadlineTimer: Timer | undefined;
  private deadlineTimerAtMs = Number.POSITIVE_INFINITY;
  private retryAfterMs = 0;
  private closed = false;

  constructor(options: FrameClientOptions) {
    this.options = options;
    this.address = options.address;
    this.inflightMax = options.inflightMax ?? FRAME_CLIENT_INFLIGHT_DEFAULT;
    this.deadlineMsDefault = options.deadlineMsDefault ?? FRAME_DEADLINE_MS_DEFAULT;
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? nullLogger;
    if (!Number.isSafeInteger(this.inflightMax) || this.inflightMax < 1) {
      throw new RangeError(`inflightMax must be >= 1, got ${this.inflightMax}`);
    }
    const payloadMax = options.payloadBytesMax ?? FRAME_PAYLOAD_BYTES_DEFAULT;
    if (payloadMax < 0 || payloadMax > FRAME_PAYLOAD_BYTES_MAX) {
      throw new RangeError(`payloadBytesMax must be 0..${FRAME_PAYLOAD_BYTES_MAX}`);
    }
  }

  /** Where this client connects, for messages. */
  get target(): string {
    return "path" in this.address
      ? `unix:${this.address.path}`
      : `${this.address.host}:${this.address.port}`;
  }

  /** Requests sent and not yet answered. */
  get inflightCount(): number {
    return this.inflight;
  }

  /**
   * Sends one request and resolves with its response. Rejects with the server's HesError, or
   * HES_TIMEOUT, HES_ABORTED, HES_UNAVAILABLE (connection failed: effect unknown), HES_BUSY
   * (too many callers waiting), HES_CORRUPTION (response damaged in transit), HES_CLOSED.
   */
  call(opcode: number, request: FrameCall = {}): Promise<FrameReply> {
    if (this.closed) {
      return Promise.reject(
        new HesError("HES_CLOSED", `data-plane client to ${this.target} is closed`),
      );
    }
    if (isAborted(request.signal)) {
      return Promise.reject(
        new HesError("HES_ABORTED", `opcode ${opcode} to ${this.target}: aborted`),
      );
    }
    // Fast path, no awaits: connected, a slot free and nobody queued ahead.
    if (this.live !== undefined && this.inflight < this.inflightMax && this.waiters.length === 0) {
      this.inflight++;
      return this.send(this.live, opcode, request);
    }
    return this.callSlow(opcode, request);
  }

  private async callSlow(opcode: number, request: FrameCall): Promise<FrameReply> {
    await this.acquireSlot(request.signal);
    let live: Live;
    try {
      live = this.live ?? (await this.connect());
      // The signal may have fired while this call waited for a slot or a connection.
      if (isAborted(request.signal)) {
        throw new HesError(
          "HES_ABORTED",
          `opcode ${opcode} to ${this.target}: aborted before sending`,
        );
      }
    } catch (error) {
      this.releaseSlot();
      throw error;
    }
    return this.send(live, opcode, request);
  }

  /** Fails every pending call with HES_CLOSED and closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.deadlineTimer?.cancel();
    this.deadlineTimer = undefined;
    for (const wake of this.waiters.splice(0)) wake();
    const live = this.live;
    this.live = undefined;
    this.failAll(new HesError("HES_CLOSED", `data-plane client to ${this.target} closed`));
    if (live !== undefined) {
      await new Promise<void>((resolve) => {
        live.socket.once("close", () => resolve());
        live.socket.destroy();
      });
    }
  }

  /** Sends on `live` holding one slot; the slot is released when the call settles. */
  private send(live: Live, opcode: number, request: FrameCall): Promise<FrameReply> {
    const requestId = this.nextRequestId;
    this.nextRequestId = this.nextRequestId === 0xffff_ffff ? 1 : this.nextRequestId + 1;
    let parts: Uint8Array[];
    try {
      // Throws RangeError for a bad opcode or an oversize meta or payload: nothing is sent.
      parts = encodeFrame(
        { kind: FrameKind.request, opcode, requestId, status: 0 },
        request.meta,
        request.payload,
      );
    } catch (error) {
      this.releaseSlot();
      return Promise.reject(error);
    }
    return new Promise<FrameReply>((resolve, reject) => {
      const deadlineMs = request.deadlineMs ?? this.deadlineMsDefault;
      const deadlineAtMs = this.clock.nowMs() + deadlineMs;
      const signal = request.signal;
      let cleanup: (() => void) | undefined;
      if (signal !== undefined) {
        const onAbort = (): void => {
          this.settle(requestId)?.reject(
            new HesError(
              "HES_ABORTED",
              `opcode ${opcode} to ${this.target}: aborted; effect unknown`,
            ),
          );
        };
        signal.addEventListener("abort", onAbort, { once: true });
        cleanup = () => signal.removeEventListener("abort", onAbort);
      }
      this.pending.set(requestId, { opcode, resolve, reject, deadlineAtMs, deadlineMs, cleanup });
      if (deadlineAtMs < this.deadlineTimerAtMs) this.armDeadlineTimer(deadlineAtMs);
      live.sink.send(parts);
    });
  }

  private armDeadlineTimer(atMs: number): void {
    this.deadlineTimer?.cancel();
    this.deadlineTimerAtMs = atMs;
    this.deadlineTimer = this.clock.setTimer(Math.max(0, atMs - this.clock.nowMs()), () => {
      this.deadlineTimer = undefined;
      this.deadlineTimerAtMs = Number.POSITIVE_INFINITY;
      this.expireDeadlines();
    });
  }

  /**
   * Fails every call past its deadline and re-arms the timer for the earliest remaining one.
   * When nothing at all was received during an expired call's whole deadline, the connection
   * is presumed dead (a peer that restarted or vanished behind a partition leaves a half-open
   * socket that TCP may take minutes to notice): it is dropped, so the next call reconnects.
   */
  private expireDeadlines(): void {
    const now = this.clock.nowMs();
    let earliest = Number.POSITIVE_INFINITY;
    let silent = false;
    const live = this.live;
    for (const [requestId, entry] of this.pending) {
      if (entry.deadlineAtMs <= now) {
        const sentAtMs = entry.deadlineAtMs - entry.deadlineMs;
        if (live !== undefined && live.lastReceiveAtMs <= sentAtMs) silent = true;
        this.settle(requestId)?.reject(
          new HesError(
            "HES_TIMEOUT",
            `opcode ${entry.opcode} to ${this.target}: no response within ${entry.deadlineMs} ms; ` +
              "effect unknown",
          ),
        );
      } else if (entry.deadlineAtMs < earliest) {
        earliest = entry.deadlineAtMs;
      }
    }
    if (earliest !== Number.POSITIVE_INFINITY) this.armDeadlineTimer(earliest);
    if (silent && live !== undefined && this.live === live) {
      this.logger.warn(
        { target: this.target },
        "data-plane connection silent for a whole deadline; dropping it",
      );
      this.live = undefined;
      // Failed here, not by the socket's close event: by then a new connection may carry calls.
      this.failAll(
        new HesError(
          "HES_UNAVAILABLE",
          `connection to ${this.target} silent; effect of in-flight requests unknown`,
        ),
      );
      live.socket.destroy();
    }
  }

  /** Removes a pending call and frees its slot; undefined when it already settled. */
  private settle(requestId: number): Pending | undefined {
    const entry = this.pending.get(requestId);
    if (entry === undefined) return undefined;
    this.pending.delete(requestId);
    entry.cleanup?.();
    // The deadline timer stays armed when nothing is pending: it fires once, finds nothing,
    // and saves re-arming it on every call of a depth-1 caller.
    this.releaseSlot();
    return entry;
  }

  private onFrame(frame: Frame): void {
    const entry = this.settle(frame.requestId);
    if (entry === undefined) return; // Timed out or aborted earlier: the late answer is dropped.
    const what = `opcode ${entry.opcode} to ${this.target}`;
    if (frame.status !== FrameStatus.ok) {
      entry.reject(decodeErrorMeta(frame.meta, what));
    } else if (frame.bodyCorrupt) {
      entry.reject(
        new HesError("HES_CORRUPTION", `${what}: response meta or payload failed its checksum`),
      );
    } else {
      entry.resolve({ meta: frame.meta, payload: frame.payload });
    }
  }

  private acquireSlot(signal: AbortSignal | undefined): Promise<void> {
    if (this.inflight < this.inflightMax && this.waiters.length === 0) {
      this.inflight++;
      return Promise.resolve();
    }
    if (this.waiters.length >= FRAME_CLIENT_WAITERS_MAX) {
      return Promise.reject(
        new HesError(
          "HES_BUSY",
          `data-plane client to ${this.target}: ${this.waiters.length} callers waiting`,
        ),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const wake = (): void => {
        signal?.removeEventListener("abort", onAbort);
        if (this.closed) {
          reject(new HesError("HES_CLOSED", `data-plane client to ${this.target} closed`));
          return;
        }
        this.inflight++;
        resolve();
      };
      const onAbort = (): void => {
        const index = this.waiters.indexOf(wake);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(new HesError("HES_ABORTED", `call to ${this.target} aborted while waiting`));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(wake);
    });
  }

  private releaseSlot(): void {
    this.inflight--;
    const next = this.waiters.shift();
    if (next !== undefined) next();
  }

  private connect(): Promise<Live> {
    if (this.connecting !== undefined) return this.connecting;
    const now = this.clock.nowMs();
    if (now < this.retryAfterMs) {
      return Promise.reject(
        new HesError(
          "HES_UNAVAILABLE",
          `${this.target} unreachable; next connect attempt in ${Math.ceil(this.retryAfterMs - now)} ms`,
        ),
      );
    }
    this.connecting = this.open().then(
      (live) => {
        this.connecting = undefined;
        this.backoffMs = 0;
        if (this.closed) {
          live.socket.destroy();
          throw new HesError("HES_CLOSED", `data-plane client to ${this.target} closed`);
        }
        this.live = live;
        return live;
      },
      (error: unknown) => {
        this.connecting = undefined;
        this.backoffMs = Math.min(
          Math.max(this.backoffMs * 2, RECONNECT_BACKOFF_MS_MIN),
          RECONNECT_BACKOFF_MS_MAX,
        );
        this.retryAfterMs = this.clock.nowMs() + this.backoffMs;
        throw error;
      },
    );
    return this.connecting;
  }

  private open(): Promise<Live> {
    return new Promise<Live>((resolve, reject) => {
      const address = this.address;
      const base =
        "path" in address ? { path: address.path } : { host: address.host, port: address.port };
      const socket =
        this.options.tls === undefined
          ? net.connect({ ...base, noDelay: true })
          : tls.connect({ ...base, ...this.options.tls });
      const connectEvent = this.options.tls === undefined ? "connect" : "secureConnect";
      const timeoutMs = this.options.connectTimeoutMs ?? FRAME_CONNECT_TIMEOUT_MS_DEFAULT;
      const timer = this.clock.setTimer(timeoutMs, () => {
        socket.destroy();
        reject(
          new HesError(
            "HES_UNAVAILABLE",
            `connect to ${this.target} timed out after ${timeoutMs} ms`,
          ),
        );
      });
      socket.once("error", (error) => {
        timer.cancel();
        reject(
          new HesError("HES_UNAVAILABLE", `connect to ${this.target}: ${error.message}`, {
            cause: error,
          }),
        );
      });
      socket.once(connectEvent, () => {
        timer.cancel();
        socket.setNoDelay(true);
        socket.removeAllListeners("error");
        resolve(this.attach(socket));
      });
    });
  }

  private attach(socket: net.Socket): Live {
    const live: Live = {
      socket,
      sink: new FrameSink(socket),
      decoder: new FrameDecoder({
        expectKind: FrameKind.response,
        payloadBytesMax: this.options.payloadBytesMax ?? FRAME_PAYLOAD_BYTES_DEFAULT,
      }),
      lastReceiveAtMs: this.clock.nowMs(),
    };
    const onFrame = (frame: Frame): void => this.onFrame(frame);
    socket.on("data", (chunk: Buffer) => {
      live.lastReceiveAtMs = this.clock.nowMs();
      try {
        live.decoder.push(chunk, onFrame);
      } catch (error) {
        this.logger.warn(
          { err: error, target: this.target },
          "data-plane protocol violation from server",
        );
        socket.destroy();
      }
    });
    socket.on("error", (error) =>
      this.logger.debug({ err: error, target: this.target }, "data-plane socket error"),
    );
    socket.on("close", () => {
      // Not the current connection (dropped as silent, or the client closed): its calls were
      // failed then, and the pending ones now belong to a newer connection.
      if (this.live !== live) return;
      this.live = undefined;
      this.failAll(
        new HesError(
          "HES_UNAVAILABLE",
          `connection to ${this.target} lost; effect of in-flight requests unknown`,
        ),
      );
    });
    return live;
  }

  private failAll(error: HesError): void {
    for (const requestId of [...this.pending.keys()]) this.settle(requestId)?.reject(error);
  }
}

/** Reads the signal's state through a call, so checks after an await are not narrowed away. */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}
