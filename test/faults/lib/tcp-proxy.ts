/**
 * A TCP proxy of our own for delay and reordering (there is no `tc netem` here). Each chunk
 * read from one side is delivered to the other after a delay drawn from a seeded Prng. Within
 * one connection and direction, delivery never overtakes an earlier chunk (a TCP stream cannot
 * be reordered without corrupting it), so reordering happens where a real network shows it:
 * between connections, e.g. two peers' messages, or a data-plane frame and a control RPC.
 * `hold()` stalls every stream (a "grey" link) until `release()`.
 *
 * Bounded: at most PROXY_BUFFERED_BYTES_MAX queued per direction (then the sender is paused),
 * at most PROXY_CONNECTIONS_MAX connections.
 */
import * as net from "node:net";
import type { Prng } from "@hes/base";
import { PROXY_BUFFERED_BYTES_MAX, PROXY_CONNECTIONS_MAX, PROXY_DELAY_MS_MAX } from "./limits.js";

export interface DelayRangeMs {
  readonly minMs: number;
  readonly maxMs: number;
}

export interface TcpProxyOptions {
  readonly listen: { readonly host: string; readonly port: number };
  readonly target: { readonly host: string; readonly port: number };
  readonly prng: Prng;
  readonly delay?: DelayRangeMs;
}

function checkDelay(delay: DelayRangeMs): DelayRangeMs {
  const { minMs, maxMs } = delay;
  if (!(Number.isInteger(minMs) && Number.isInteger(maxMs) && minMs >= 0 && minMs <= maxMs)) {
    throw new RangeError(`delay must be integers 0 ≤ minMs ≤ maxMs, got ${minMs}..${maxMs}`);
  }
  if (maxMs > PROXY_DELAY_MS_MAX) throw new RangeError(`delay maxMs > ${PROXY_DELAY_MS_MAX}`);
  return delay;
}

/** One direction of one connection: a FIFO of chunks with their delivery times. */
class Pipe {
  private readonly queue: Array<{ atMs: number; chunk: Buffer }> = [];
  private queuedBytes = 0;
  private lastAtMs = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly proxy: TcpProxy,
    private readonly from: net.Socket,
    private readonly to: net.Socket,
  ) {
    from.on("data", (chunk: Buffer) => this.push(chunk));
    from.on("end", () => this.push(undefined));
  }

  private ended = false;

  private push(chunk: Buffer | undefined): void {
    if (chunk === undefined) {
      this.ended = true;
    } else {
      const atMs = Math.max(performance.now() + this.proxy.drawDelayMs(), this.lastAtMs);
      this.lastAtMs = atMs;
      this.queue.push({ atMs, chunk });
      this.queuedBytes += chunk.length;
      if (this.queuedBytes > PROXY_BUFFERED_BYTES_MAX) this.from.pause();
    }
    this.schedule();
  }

  schedule(): void {
    if (this.timer !== undefined || this.proxy.held) return;
    const head = this.queue[0];
    if (head === undefined) {
      if (this.ended) this.to.end();
      return;
    }
    const waitMs = Math.max(0, head.atMs - performance.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, waitMs);
  }

  private flush(): void {
    const now = performance.now();
    while (!this.proxy.held && this.queue.length > 0 && (this.queue[0]?.atMs ?? 0) <= now) {
      const { chunk } = this.queue.shift() as { chunk: Buffer };
      this.queuedBytes -= chunk.length;
      if (!this.to.destroyed) this.to.write(chunk);
    }
    if (this.queuedBytes <= PROXY_BUFFERED_BYTES_MAX / 2) this.from.resume();
    this.schedule();
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

export class TcpProxy {
  private delay: DelayRangeMs;
  private readonly pipes = new Set<Pipe>();
  private readonly sockets = new Set<net.Socket>();
  held = false;
  /** Connections accepted so far (for tests and reports). */
  connectionsAccepted = 0;

  private constructor(
    private readonly options: TcpProxyOptions,
    private readonly server: net.Server,
  ) {
    this.delay = checkDelay(options.delay ?? { minMs: 0, maxMs: 0 });
  }

  static async start(options: TcpProxyOptions): Promise<TcpProxy> {
    const server = net.createServer({ allowHalfOpen: true });
    server.maxConnections = PROXY_CONNECTIONS_MAX;
    const proxy = new TcpProxy(options, server);
    server.on("connection", (client) => proxy.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.listen.port, options.listen.host, () => resolve());
    });
    return proxy;
  }

  /** The bound port (the real one when listening on port 0). */
  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  setDelay(delay: DelayRangeMs): void {
    this.delay = checkDelay(delay);
  }

  drawDelayMs(): number {
    return this.options.prng.between(this.delay.minMs, this.delay.maxMs);
  }

  /** Stops delivering anything, in every direction, until release(). */
  hold(): void {
    this.held = true;
  }

  release(): void {
    this.held = false;
    for (const pipe of this.pipes) pipe.schedule();
  }

  private accept(client: net.Socket): void {
    this.connectionsAccepted++;
    const upstream = net.connect({
      port: this.options.target.port,
      host: this.options.target.host,
      allowHalfOpen: true,
    });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const pipes = [new Pipe(this, client, upstream), new Pipe(this, upstream, client)];
    for (const pipe of pipes) this.pipes.add(pipe);
    const close = (): void => {
      for (const pipe of pipes) {
        pipe.stop();
        this.pipes.delete(pipe);
      }
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on("error", close);
      socket.on("close", close);
    }
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    for (const pipe of this.pipes) pipe.stop();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
