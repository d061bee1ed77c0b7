#!/usr/bin/env node
// The three-node example, as far as hes is built today.
//
// What exists: the data-plane framing (@hes/proto) and the real disk (@hes/extent-store's
// FileDisk). Not yet: Raft, the cluster map, replication, volumes and NBD (issues 3–7). So this
// starts three data-plane servers on loopback, each serving block reads and writes from its own
// disk file under .hes/example/, writes one block to every node through the framing, reads each
// back and checks it, prints what it did, and keeps serving until Ctrl-C.
process.env.UV_THREADPOOL_SIZE ??= "16";
const { mkdirSync } = await import("node:fs");
const { join } = await import("node:path");
const { FileDisk } = await import("@hes/extent-store");
const { FrameClient, FrameServer } = await import("@hes/proto");
const { HesError } = await import("@hes/base");

const OP_WRITE = 1;
const OP_READ = 2;
const BLOCK = 4096;
const root = join(process.cwd(), ".hes", "example");
const started = Date.now();

function blockOf(meta) {
  const view = new DataView(meta.buffer, meta.byteOffset, meta.byteLength);
  if (meta.byteLength !== 8)
    throw new HesError("HES_INVALID_ARGUMENT", "meta must be an 8-byte block number");
  return Number(view.getBigUint64(0, true));
}

const nodes = [];
for (let id = 1; id <= 3; id++) {
  const dir = join(root, `node-${id}`);
  mkdirSync(dir, { recursive: true });
  const disk = await FileDisk.open(join(dir, "disk.img"), { createSizeBytes: 256 * 2 ** 20 });
  const server = new FrameServer({
    handler: async (request) => {
      const position = blockOf(request.meta) * BLOCK;
      if (request.opcode === OP_WRITE) {
        if (request.payload.byteLength !== BLOCK)
          throw new RangeError("a write carries exactly one 4 KiB block");
        await disk.write(request.payload, position);
        await disk.sync();
        return {};
      }
      if (request.opcode === OP_READ) {
        const data = new Uint8Array(BLOCK);
        await disk.read(data, position);
        return { payload: data };
      }
      throw new HesError("HES_UNSUPPORTED", `opcode ${request.opcode}`);
    },
  });
  const address = await server.listen({ host: "127.0.0.1", port: 0 });
  nodes.push({ id, disk, server, address, client: new FrameClient({ address }) });
}

const meta = new Uint8Array(8);
new DataView(meta.buffer).setBigUint64(0, 7n, true);
for (const node of nodes) {
  const block = new Uint8Array(BLOCK).fill(node.id);
  await node.client.call(OP_WRITE, { meta, payload: block });
  const { payload } = await node.client.call(OP_READ, { meta });
  if (!payload.every((b) => b === node.id)) throw new Error(`node ${node.id}: read back differs`);
}

console.log(`hes example: up in ${Date.now() - started} ms`);
console.log("NOTE: Raft, the cluster map, replication, volumes and NBD are not built yet.");
console.log("What runs: three data-plane servers, each with its own disk file:");
for (const node of nodes) {
  console.log(
    `  node ${node.id}  data plane ${node.address.host}:${node.address.port}  disk ${node.disk.name}`,
  );
}
console.log("Wrote block 7 to every node through the framing, synced, read it back: OK.");
console.log("Serving until Ctrl-C.");

const stop = async () => {
  for (const node of nodes) {
    await node.client.close();
    await node.server.close();
    await node.disk.close();
  }
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
if (process.env.HES_EXAMPLE_EXIT_AFTER_START === "1") await stop();
