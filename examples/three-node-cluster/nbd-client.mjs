// A minimal NBD client (fixed newstyle, NBD_OPT_EXPORT_NAME, simple replies), so the example
// can write and read its volume when qemu-io is not installed. Protocol: NetworkBlockDevice/nbd
// doc/proto.md. One request in flight at a time: this is a demonstration, not a driver.
import { connect } from "node:net";

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_EXPORT_NAME = 1;
const CMD_READ = 0;
const CMD_WRITE = 1;
const CMD_DISC = 2;
const CMD_FLUSH = 3;

class Reader {
  constructor(socket) {
    this.buffered = Buffer.alloc(0);
    this.waiting = undefined;
    socket.on("data", (chunk) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.waiting?.();
    });
    socket.on("close", () => {
      this.closed = true;
      this.waiting?.();
    });
  }
  async take(count) {
    while (this.buffered.length < count) {
      if (this.closed) throw new Error("nbd: the server closed the connection");
      await new Promise((resolve) => {
        this.waiting = resolve;
      });
    }
    const out = this.buffered.subarray(0, count);
    this.buffered = this.buffered.subarray(count);
    return out;
  }
}

export class NbdClient {
  static async open(socketPath, exportName) {
    const socket = connect(socketPath);
    await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    const reader = new Reader(socket);
    const greeting = await reader.take(18);
    if (greeting.readBigUInt64BE(0) !== NBDMAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
      throw new Error("nbd: not a fixed-newstyle server");
    }
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    const name = Buffer.from(exportName, "utf8");
    const option = Buffer.alloc(16);
    option.writeBigUInt64BE(IHAVEOPT, 0);
    option.writeUInt32BE(OPT_EXPORT_NAME, 8);
    option.writeUInt32BE(name.length, 12);
    socket.write(Buffer.concat([clientFlags, option, name]));
    const info = await reader.take(10); // size u64, transmission flags u16 (no zero padding)
    return new NbdClient(socket, reader, Number(info.readBigUInt64BE(0)));
  }

  constructor(socket, reader, sizeBytes) {
    this.socket = socket;
    this.reader = reader;
    this.sizeBytes = sizeBytes;
    this.cookie = 0n;
  }

  async request(type, offsetBytes, lengthBytes, payload) {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(0, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(++this.cookie, 8);
    header.writeBigUInt64BE(BigInt(offsetBytes), 16);
    header.writeUInt32BE(lengthBytes, 24);
    this.socket.write(payload === undefined ? header : Buffer.concat([header, payload]));
    if (type === CMD_DISC) return undefined;
    const reply = await this.reader.take(16);
    if (reply.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error("nbd: bad reply magic");
    const errno = reply.readUInt32BE(4);
    if (errno !== 0) throw new Error(`nbd: request failed with errno ${errno}`);
    return type === CMD_READ ? Buffer.from(await this.reader.take(lengthBytes)) : undefined;
  }

  write(offsetBytes, data) {
    return this.request(CMD_WRITE, offsetBytes, data.length, data);
  }
  read(offsetBytes, lengthBytes) {
    return this.request(CMD_READ, offsetBytes, lengthBytes);
  }
  flush() {
    return this.request(CMD_FLUSH, 0, 0);
  }
  async close() {
    await this.request(CMD_DISC, 0, 0);
    this.socket.end();
  }
}
