/**
 * The hes side of the NBD benchmark, run as its own process so its CPU can be measured apart
 * from fio's: an NbdServer exporting one MemoryBlockDevice (the default export) on a unix
 * socket. Usage: server.ts SOCKET_PATH SIZE_BYTES. Prints {"pid":…} once listening, then
 * serves until SIGTERM, when it closes cleanly.
 */
import { MemoryBlockDevice } from "@hes/blockdev";
import { NbdServer } from "@hes/nbd";

const [socketPath, sizeText] = process.argv.slice(2);
if (socketPath === undefined || sizeText === undefined) {
  throw new Error("usage: server.ts SOCKET_PATH SIZE_BYTES");
}
const server = new NbdServer();
server.addExport({ name: "", device: new MemoryBlockDevice({ sizeBytes: Number(sizeText) }) });
await server.listen({ path: socketPath });
process.once("SIGTERM", () => {
  server.close({ drainMs: 1000 }).then(() => process.exit(0));
});
process.stdout.write(`${JSON.stringify({ pid: process.pid })}\n`);
