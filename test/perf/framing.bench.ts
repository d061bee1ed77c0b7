/**
 * Data-plane framing benchmark: 4 KiB request/response pairs between two processes on
 * loopback, through FrameClient/FrameServer, beside a bare length-prefixed TCP echo measured
 * in the same run (the ceiling: no header, no checksums, no request ids).
 *
 * Back of the envelope: loopback TCP on this machine moves ~86,000 4 KiB messages/s at 32 in
 * flight (TOOLCHAIN.md). Each hes frame adds a 32-byte header, two crc32c (~1 µs per 4 KiB at
 * ~4 GB/s) and a Map lookup, so ~60–80% of the ceiling is the expectation; the goal is ≥ 50,000.
 *
 *   pnpm bench framing            (env: SECONDS per case, default 5)
 */
import { spawn } from "node:child_process";
import * as net from "node:net";
import { createInterface } from "node:readline";
import { FrameClient } from "@hes/proto";
import { closedLoop, type LoadResult, printHeader } from "./common.js";

const SECONDS = Number(process.env.SECONDS ?? 5);
const OP_WRITE = 1;
const OP_READ = 2;

printHeader("data-plane framing: 4 KiB request/response between two processes", {
  seconds: SECONDS,
  depths: [1, 32],
});

const child = spawn(
  process.execPath,
  [...process.execArgv, new URL("./framing/server.ts", import.meta.url).pathname],
  {
    stdio: ["ignore", "pipe", "inherit"],
  },
);
const line = await new Promise<string>((resolve) =>
  createInterface({ input: child.stdout }).once("line", resolve),
);
const { framePort, rawPort } = JSON.parse(line) as { framePort: number; rawPort: number };

/** A minimal pipelined client for the raw echo: FIFO matching, as the server answers in order. */
async function rawClient(
  port: number,
): Promise<{ echo: (payload: Buffer) => Promise<void>; close: () => void }> {
  const socket = net.connect({ port, host: "127.0.0.1", noDelay: true });
  await new Promise((resolve) => socket.once("connect", resolve));
  const waiting: Array<() => void> = [];
  let pending: Buffer = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let offset = 0;
    while (pending.length - offset >= 4) {
      const length = pending.readUInt32LE(offset);
      if (pending.length - offset < 4 + length) break;
      offset += 4 + length;
      waiting.shift()?.();
    }
    pending = pending.subarray(offset);
  });
  return {
    echo: (payload) =>
      new Promise<void>((resolve) => {
        waiting.push(resolve);
        const head = Buffer.allocUnsafe(4);
        head.writeUInt32LE(payload.length, 0);
        socket.cork();
        socket.write(head);
        socket.write(payload);
        process.nextTick(() => socket.uncork());
      }),
    close: () => socket.destroy(),
  };
}

const block = Buffer.alloc(4096, 0xcd);
const rows: Array<[string, number, LoadResult]> = [];
const frameClient = new FrameClient({
  address: { host: "127.0.0.1", port: framePort },
  inflightMax: 64,
});
const raw = await rawClient(rawPort);
for (const depth of [1, 32]) {
  rows.push([
    "raw TCP echo, 4 KiB each way (ceiling)",
    depth,
    await closedLoop(() => raw.echo(block), depth, SECONDS),
  ]);
  rows.push([
    "hes frame: 4 KiB request, empty response (write)",
    depth,
    await closedLoop(() => frameClient.call(OP_WRITE, { payload: block }), depth, SECONDS),
  ]);
  rows.push([
    "hes frame: empty request, 4 KiB response (read)",
    depth,
    await closedLoop(() => frameClient.call(OP_READ), depth, SECONDS),
  ]);
}
raw.close();
await frameClient.close();
child.kill();

console.log("\n| case | in flight | ops/s | p50 ms | p99 ms |");
console.log("|---|---|---|---|---|");
for (const [name, depth, r] of rows) {
  console.log(
    `| ${name} | ${depth} | ${Math.round(r.opsPerSecond).toLocaleString("en-US")} | ${r.p50Ms.toFixed(3)} | ${r.p99Ms.toFixed(3)} |`,
  );
}
const ceiling =
  rows.find(([n, d]) => d === 32 && n.startsWith("raw"))?.[2].opsPerSecond ?? Number.NaN;
for (const [name, depth, r] of rows) {
  if (depth === 32 && !name.startsWith("raw")) {
    console.log(
      `${name} at 32: ${((r.opsPerSecond / ceiling) * 100).toFixed(0)}% of the raw TCP ceiling measured in this run`,
    );
  }
}
