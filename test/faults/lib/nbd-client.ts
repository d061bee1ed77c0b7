/**
 * A small NBD client for the history workload: fixed newstyle handshake with NBD_OPT_GO,
 * simple replies only, any number of requests in flight matched by cookie. It exists so the
 * workload knows exactly when each request was sent and answered (monotonic times), which a
 * general client library hides. Spec: NetworkBlockDevice/nbd doc/proto.md.
 */
import * as net from "node:net";

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const INFO_EXPORT = 0;
const CMD_READ = 0;
const CMD_WRITE = 1;
const CMD_DISC = 2;
const CMD_FLUSH = 3;
const CMD_FLAG_FUA = 1;

/** Where an export listens: a unix socket path or a TCP host:port, and the export name. */
export type NbdAddress =
  | { readonly path: string; readonly exportName: string }
  | { readonly host: string; readonly port: number; readonly exportName: string };

/** The server answered a request with an error (errno per the protocol: EIO = 5, …). */
export class NbdReplyError extends Error {
  constructor(readonly errno: number) {
    super(`NBD server replied errno ${errno}`);
    this.name = "NbdReplyError";
  }
}

/** Buffers bytes from a socket and hands out exact-length reads. */
class ByteQueue {
  private chunks: Buffer[] = [];
  private length = 0;
  private waiter: (() => void) | undefined;
  failure: Error | undefined;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
    this.wake();
  }

  fail(err: Error): void {
    this.failure ??= err;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  async take(count: number): Promise<Buffer> {
    while (this.length < count) {
      if (this.failure !== undefined) throw this.failure;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
    const all = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    this.chunks = count < all.length ? [all.subarray(count)] : [];
    this.length -= count;
    return all.subarray(0, count);
  }
}

interface Pending {
  readonly lengthBytes: number;
  readonly isRead: boolean;
  resolve(data: Buffer): void;
  reject(err: Error): void;
}

export class NbdClient {
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private closedError: Error | undefined;
  sizeBytes = 0;
  transmissionFlags = 0;

  private constructor(
    private readonly socket: net.Socket,
    private readonly bytes: ByteQueue,
  ) {
    socket.on("data", (chunk: Buffer) => bytes.push(chunk));
    const down = (err?: Error): void => {
      const error = err ?? new Error("NBD connection closed");
      this.closedError ??= error;
      bytes.fail(error);
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
    };
    socket.on("error", down);
    socket.on("close", () => down());
  }

  /** Connects and negotiates the export; rejects on any handshake error. */
  static async connect(address: NbdAddress): Promise<NbdClient> {
    const socket =
      "path" in address ? net.connect(address.path) : net.connect(address.port, address.host);
    socket.setNoDelay?.(true);
    const client = new NbdClient(socket, new ByteQueue());
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      });
      await client.handshake(address.exportName);
      void client.replyLoop();
      return client;
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  private async handshake(exportName: string): Promise<void> {
    const hello = await this.bytes.take(18);
    if (hello.readBigUInt64BE(0) !== NBDMAGIC || hello.readBigUInt64BE(8) !== IHAVEOPT) {
      throw new Error("not an NBD fixed-newstyle server");
    }
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    const name = Buffer.from(exportName);
    const data = Buffer.alloc(4 + name.length + 2);
    data.writeUInt32BE(name.length, 0);
    name.copy(data, 4);
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(IHAVEOPT, 0);
    header.writeUInt32BE(OPT_GO, 8);
    header.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([clientFlags, header, data]));
    for (;;) {
      const reply = await this.bytes.take(20);
      if (reply.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error("bad option reply");
      const type = reply.readUInt32BE(12);
      const body = await this.bytes.take(reply.readUInt32BE(16));
      if (type === REP_ACK) return;
      if (type >= 0x80000000) throw new Error(`export '${exportName}' refused: reply ${type}`);
      if (type === REP_INFO && body.readUInt16BE(0) === INFO_EXPORT) {
        this.sizeBytes = Number(body.readBigUInt64BE(2));
        this.transmissionFlags = body.readUInt16BE(10);
      }
    }
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const header = await this.bytes.take(16);
        if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error("bad reply magic");
        const errno = header.readUInt32BE(4);
        const cookie = header.readBigUInt64BE(8);
        const pending = this.pending.get(cookie);
        if (pending === undefined) throw new Error(`reply for unknown cookie ${cookie}`);
        this.pending.delete(cookie);
        if (errno !== 0) pending.reject(new NbdReplyError(errno));
        else if (pending.isRead)
          pending.resolve(Buffer.from(await this.bytes.take(pending.lengthBytes)));
        else pending.resolve(Buffer.alloc(0));
      }
    } catch (err) {
      this.socket.destroy(err as Error);
    }
  }

  private request(
    type: number,
    flags: number,
    offsetBytes: number,
    lengthBytes: number,
    payload?: Uint8Array,
  ): Promise<Buffer> {
    if (this.closedError !== undefined) return Promise.reject(this.closedError);
    const cookie = this.nextCookie++;
    const header = Buffer.alloc(28);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(cookie, 8);
    header.writeBigUInt64BE(BigInt(offsetBytes), 16);
    header.writeUInt32BE(lengthBytes, 24);
    return new Promise((resolve, reject) => {
      if (type !== CMD_DISC) {
        this.pending.set(cookie, { lengthBytes, isRead: type === CMD_READ, resolve, reject });
      }
      this.socket.write(payload === undefined ? header : Buffer.concat([header, payload]));
      if (type === CMD_DISC) resolve(Buffer.alloc(0));
    });
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.request(CMD_READ, 0, offsetBytes, lengthBytes);
  }

  async write(offsetBytes: number, data: Uint8Array, options: { fua: boolean }): Promise<void> {
    await this.request(CMD_WRITE, options.fua ? CMD_FLAG_FUA : 0, offsetBytes, data.length, data);
  }

  async flush(): Promise<void> {
    await this.request(CMD_FLUSH, 0, 0, 0);
  }

  /** Polite disconnect (NBD_CMD_DISC), then close. */
  async close(): Promise<void> {
    if (this.closedError === undefined) await this.request(CMD_DISC, 0, 0, 0);
    this.socket.end();
    this.socket.destroy();
  }

  /** Drops the connection at once; every pending request rejects. */
  destroy(): void {
    this.socket.destroy();
  }
}
