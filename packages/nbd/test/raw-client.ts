/**
 * A deliberately small NBD client for tests: it speaks the wire format byte by byte so tests
 * can send what real clients never would (garbage, past-end requests, oversize payloads,
 * unknown commands) and read exactly what the server answers.
 */
import * as net from "node:net";
import * as tls from "node:tls";

export const NBD = {
  OPT_EXPORT_NAME: 1,
  OPT_ABORT: 2,
  OPT_LIST: 3,
  OPT_STARTTLS: 5,
  OPT_INFO: 6,
  OPT_GO: 7,
  OPT_STRUCTURED_REPLY: 8,
  OPT_LIST_META_CONTEXT: 9,
  OPT_SET_META_CONTEXT: 10,
  REP_ACK: 1,
  REP_SERVER: 2,
  REP_INFO: 3,
  REP_META_CONTEXT: 4,
  REP_ERR_UNSUP: 0x80000001,
  REP_ERR_POLICY: 0x80000002,
  REP_ERR_INVALID: 0x80000003,
  REP_ERR_TLS_REQD: 0x80000005,
  REP_ERR_UNKNOWN: 0x80000006,
  REP_ERR_SHUTDOWN: 0x80000007,
  REP_ERR_TOO_BIG: 0x80000009,
  CMD_READ: 0,
  CMD_WRITE: 1,
  CMD_DISC: 2,
  CMD_FLUSH: 3,
  CMD_TRIM: 4,
  CMD_CACHE: 5,
  CMD_WRITE_ZEROES: 6,
  CMD_BLOCK_STATUS: 7,
  FLAG_FUA: 1,
  FLAG_NO_HOLE: 2,
  FLAG_DF: 4,
  FLAG_REQ_ONE: 8,
  FLAG_FAST_ZERO: 16,
  EPERM: 1,
  EIO: 5,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
  TYPE_NONE: 0,
  TYPE_OFFSET_DATA: 1,
  TYPE_OFFSET_HOLE: 2,
  TYPE_BLOCK_STATUS: 5,
  TYPE_ERROR: 0x8001,
} as const;

/** One option reply. */
export interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

/** One transmission reply message: a simple reply or one structured chunk. */
export interface Reply {
  readonly structured: boolean;
  readonly cookie: number;
  /** Simple: the error field. Structured error chunk: its error. Else 0. */
  readonly errno: number;
  /** Structured only. */
  readonly chunkType: number;
  readonly done: boolean;
  /** Structured: the chunk payload. Simple READ: the data (when read with `dataBytes`). */
  readonly payload: Buffer;
}

/** Reads exact byte counts from a socket; fails when the socket closes first. */
class ByteReader {
  private buffered = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | undefined;
  private readonly onData = (chunk: Buffer): void => {
    this.buffered = Buffer.concat([this.buffered, chunk]);
    this.wake?.();
  };
  constructor(socket: net.Socket) {
    this.listen(socket);
  }
  unlisten(socket: net.Socket): void {
    socket.off("data", this.onData);
  }
  listen(socket: net.Socket): void {
    socket.on("data", this.onData);
    socket.on("close", () => {
      this.ended = true;
      this.wake?.();
    });
  }
  get pendingBytes(): number {
    return this.buffered.length;
  }
  async read(count: number): Promise<Buffer> {
    while (this.buffered.length < count) {
      if (this.ended) throw new Error(`connection closed while waiting for ${count} bytes`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
    const out = this.buffered.subarray(0, count);
    this.buffered = this.buffered.subarray(count);
    return out;
  }
}

export type Address = { path: string } | { host: string; port: number };

export interface HandshakeOptions {
  readonly exportName?: string;
  readonly structured?: boolean;
  readonly metaContext?: boolean;
  /** Use NBD_OPT_EXPORT_NAME instead of NBD_OPT_GO. */
  readonly exportNameOption?: boolean;
  readonly noZeroes?: boolean;
}

/** A raw NBD client over one socket. */
export class RawClient {
  socket: net.Socket;
  private readonly reader: ByteReader;
  readonly closed: Promise<void>;
  handshakeFlags = 0;
  sizeBytes = 0;
  transmissionFlags = 0;
  structured = false;
  private nextCookie = 1;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.reader = new ByteReader(socket);
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    socket.on("error", () => {});
  }

  static async connect(address: Address): Promise<RawClient> {
    const socket =
      "path" in address ? net.connect(address.path) : net.connect(address.port, address.host);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    return new RawClient(socket);
  }

  /** Reads the server greeting and sends client flags. */
  async greet(clientFlags = 1): Promise<void> {
    const greeting = await this.reader.read(18);
    if (greeting.toString("latin1", 0, 16) !== "NBDMAGICIHAVEOPT") throw new Error("bad greeting");
    this.handshakeFlags = greeting.readUInt16BE(16);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags, 0);
    this.socket.write(flags);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16);
    header.write("IHAVEOPT", 0, "latin1");
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([header, data]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = await this.reader.read(20);
    if (header.readUInt32BE(0) !== 0x0003e889 || header.readUInt32BE(4) !== 0x045565a9) {
      throw new Error("bad option reply magic");
    }
    const length = header.readUInt32BE(16);
    return {
      option: header.readUInt32BE(8),
      type: header.readUInt32BE(12),
      data: Buffer.from(await this.reader.read(length)),
    };
  }

  /** Sends an option and collects replies up to the final ACK or error. */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (reply.type === NBD.REP_ACK || reply.type >= 0x80000000) return replies;
    }
  }

  /** Upgrades to TLS after a successful NBD_OPT_STARTTLS. */
  async startTls(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    const replies = await this.option(NBD.OPT_STARTTLS);
    if (replies[0]?.type !== NBD.REP_ACK) throw new Error(`STARTTLS refused: ${replies[0]?.type}`);
    this.reader.unlisten(this.socket);
    const secure = tls.connect({ ...options, socket: this.socket });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", resolve);
      secure.once("error", reject);
    });
    this.socket = secure;
    this.reader.listen(secure);
    return secure;
  }

  /** A full handshake ending in transmission. */
  async handshake(options: HandshakeOptions = {}): Promise<void> {
    await this.greet(1 | (options.noZeroes === false ? 0 : 2));
    const name = options.exportName ?? "";
    if (options.structured ?? true) {
      const [reply] = await this.option(NBD.OPT_STRUCTURED_REPLY);
      this.structured = reply?.type === NBD.REP_ACK;
    }
    if (options.metaContext ?? this.structured) {
      const replies = await this.option(
        NBD.OPT_SET_META_CONTEXT,
        metaContextData(name, ["base:allocation"]),
      );
      if (replies.at(-1)?.type !== NBD.REP_ACK) throw new Error("SET_META_CONTEXT failed");
    }
    if (options.exportNameOption === true) {
      this.sendOption(NBD.OPT_EXPORT_NAME, Buffer.from(name));
      const reply = await this.reader.read(10 + (options.noZeroes === false ? 124 : 0));
      this.sizeBytes = Number(reply.readBigUInt64BE(0));
      this.transmissionFlags = reply.readUInt16BE(8);
      return;
    }
    const replies = await this.option(NBD.OPT_GO, infoData(name, [3]));
    const last = replies.at(-1);
    if (last?.type !== NBD.REP_ACK) throw new Error(`GO failed with ${last?.type.toString(16)}`);
    for (const reply of replies) {
      if (reply.type === NBD.REP_INFO && reply.data.readUInt16BE(0) === 0) {
        this.sizeBytes = Number(reply.data.readBigUInt64BE(2));
        this.transmissionFlags = reply.data.readUInt16BE(10);
      }
    }
  }

  /** Sends one request (with its payload for WRITE); returns its cookie. */
  request(
    type: number,
    offsetBytes: number,
    lengthBytes: number,
    options: { flags?: number; payload?: Buffer; cookie?: number } = {},
  ): number {
    const cookie = options.cookie ?? this.nextCookie++;
    const header = Buffer.alloc(28);
    header.writeUInt32BE(0x25609513, 0);
    header.writeUInt16BE(options.flags ?? 0, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(BigInt(cookie), 8);
    header.writeBigUInt64BE(BigInt(offsetBytes), 16);
    header.writeUInt32BE(lengthBytes, 24);
    this.socket.write(
      options.payload === undefined ? header : Buffer.concat([header, options.payload]),
    );
    return cookie;
  }

  /**
   * Reads one reply message. For a simple reply to a READ, pass `dataBytes` (simple replies
   * do not say whether data follows; the caller knows from its request).
   */
  async readReply(dataBytes = 0): Promise<Reply> {
    const magic = (await this.reader.read(4)).readUInt32BE(0);
    if (magic === 0x67446698) {
      const rest = await this.reader.read(12);
      const errno = rest.readUInt32BE(0);
      const payload =
        errno === 0 && dataBytes > 0
          ? Buffer.from(await this.reader.read(dataBytes))
          : Buffer.alloc(0);
      return {
        structured: false,
        cookie: Number(rest.readBigUInt64BE(4)),
        errno,
        chunkType: 0,
        done: true,
        payload,
      };
    }
    if (magic !== 0x668e33ef) throw new Error(`bad reply magic ${magic.toString(16)}`);
    const rest = await this.reader.read(16);
    const flags = rest.readUInt16BE(0);
    const chunkType = rest.readUInt16BE(2);
    const payload = Buffer.from(await this.reader.read(rest.readUInt32BE(12)));
    const errno = chunkType >= 0x8000 ? payload.readUInt32BE(0) : 0;
    return {
      structured: true,
      cookie: Number(rest.readBigUInt64BE(4)),
      errno,
      chunkType,
      done: (flags & 1) !== 0,
      payload,
    };
  }

  /** Reads every chunk of one structured reply (until DONE). */
  async readStructured(): Promise<Reply[]> {
    const chunks: Reply[] = [];
    for (;;) {
      const reply = await this.readReply();
      chunks.push(reply);
      if (reply.done) return chunks;
    }
  }

  /** READ and reassemble the data; throws on an error reply. */
  async read(offsetBytes: number, lengthBytes: number, flags = 0): Promise<Buffer> {
    const cookie = this.request(NBD.CMD_READ, offsetBytes, lengthBytes, { flags });
    if (!this.structured) {
      const reply = await this.readReply(lengthBytes);
      if (reply.cookie !== cookie || reply.errno !== 0)
        throw new Error(`read failed: ${reply.errno}`);
      return reply.payload;
    }
    const out = Buffer.alloc(lengthBytes);
    for (const chunk of await this.readStructured()) {
      if (chunk.cookie !== cookie) throw new Error("unexpected cookie");
      if (chunk.errno !== 0) throw new Error(`read failed: ${chunk.errno}`);
      if (chunk.chunkType === NBD.TYPE_OFFSET_DATA) {
        const at = Number(chunk.payload.readBigUInt64BE(0)) - offsetBytes;
        chunk.payload.copy(out, at, 8);
      }
    }
    return out;
  }

  /** A request without reply data; resolves with the error (0 on success). */
  async call(
    type: number,
    offsetBytes: number,
    lengthBytes: number,
    flags = 0,
    payload?: Buffer,
  ): Promise<number> {
    const cookie = this.request(
      type,
      offsetBytes,
      lengthBytes,
      payload === undefined ? { flags } : { flags, payload },
    );
    const reply = await this.readReply();
    if (reply.cookie !== cookie) throw new Error(`unexpected cookie ${reply.cookie}`);
    if (reply.structured && !reply.done) throw new Error("expected a single chunk");
    return reply.errno;
  }

  async write(offsetBytes: number, payload: Buffer, flags = 0): Promise<number> {
    return this.call(NBD.CMD_WRITE, offsetBytes, payload.length, flags, payload);
  }

  disconnect(): void {
    this.request(NBD.CMD_DISC, 0, 0);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** NBD_OPT_INFO / NBD_OPT_GO data. */
export function infoData(name: string, infoTypes: number[]): Buffer {
  const nameBytes = Buffer.from(name);
  const out = Buffer.alloc(6 + nameBytes.length + 2 * infoTypes.length);
  out.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(out, 4);
  out.writeUInt16BE(infoTypes.length, 4 + nameBytes.length);
  infoTypes.forEach((type, i) => {
    out.writeUInt16BE(type, 6 + nameBytes.length + 2 * i);
  });
  return out;
}

/** NBD_OPT_SET/LIST_META_CONTEXT data. */
export function metaContextData(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const nameBytes = Buffer.from(name);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(nameBytes.length, 0);
  parts.push(head, nameBytes);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const query of queries) {
    const q = Buffer.from(query);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(q.length, 0);
    parts.push(length, q);
  }
  return Buffer.concat(parts);
}
