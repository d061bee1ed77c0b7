/**
 * The server half of the framing benchmark, run as its own process. Serves the hes data-plane
 * framing and, for the baseline, the simplest possible framed TCP echo ([u32 length][payload]).
 * Prints {"framePort":…, "rawPort":…} on stdout, then serves until killed.
 */
import * as net from "node:net";
import { FrameServer } from "@hes/proto";

export const OP_WRITE = 1; // 4 KiB request payload, empty response (a replica write)
export const OP_READ = 2; // empty request, 4 KiB response (a replica read)

const block = new Uint8Array(4096).fill(0xab);
const server = new FrameServer({
  handler: (request) => (request.opcode === OP_READ ? { payload: block } : {}),
});
const frameAddress = await server.listen({ host: "127.0.0.1", port: 0 });

// Baseline: length-prefixed echo with no header, checksum or request ids.
const raw = net.createServer({ noDelay: true }, (socket) => {
  let pending: Buffer = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let offset = 0;
    const out: Buffer[] = [];
    while (pending.length - offset >= 4) {
      const length = pending.readUInt32LE(offset);
      if (pending.length - offset < 4 + length) break;
      out.push(pending.subarray(offset, offset + 4 + length));
      offset += 4 + length;
    }
    pending = pending.subarray(offset);
    if (out.length > 0) socket.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out));
  });
});
await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", () => resolve()));
const rawAddress = raw.address() as net.AddressInfo;
process.on("SIGINT", () => process.exit(0));
process.stdout.write(
  `${JSON.stringify({ framePort: "port" in frameAddress ? frameAddress.port : 0, rawPort: rawAddress.port })}\n`,
);
