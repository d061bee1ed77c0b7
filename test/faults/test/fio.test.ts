/**
 * Goal: the fio workload verifies what it wrote, across a crash between phases, and fails when
 * data is gone. Method: @hes/nbd serving a MemoryBlockDevice on a unix socket; fio writes with
 * crc32c verify headers; the server is killed mid-run (every connection dropped); a new
 * server over the same device must pass fio's verify of the completed writes, and a server
 * over a blank device must fail it.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type BlockDevice, MemoryBlockDevice } from "@hes/blockdev";
import { NbdServer } from "@hes/nbd";
import { waitFor } from "../lib/exec.js";
import { fioVerify, fioWrite } from "../lib/fio.js";

let dir: string;
let fioMissing: string | undefined;
try {
  execFileSync("fio", ["--version"], { stdio: "ignore" });
} catch {
  fioMissing = "fio is not installed";
}
before(() => {
  dir = mkdtempSync(join(tmpdir(), "hesf-fio-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function serve(device: BlockDevice, path: string): Promise<NbdServer> {
  const server = new NbdServer();
  server.addExport({ name: "vol", device });
  rmSync(path, { force: true });
  await server.listen({ path });
  return server;
}

test("fio's verified writes survive a server crash mid-run", { skip: fioMissing }, async () => {
  const device = new MemoryBlockDevice({ sizeBytes: 64 << 20 });
  const path = join(dir, "vol.sock");
  let server = await serve(device, path);
  const job = {
    address: { path, exportName: "vol" },
    stateDir: join(dir, "state"),
    sizeBytes: 32 << 20,
  };
  const writing = fioWrite({ ...job, runtimeS: 30 });
  // Crash the export once fio has written a while: drop every connection at once.
  await waitFor(
    "fio to write 300 blocks",
    () => (device.stats().allocatedBlocks > 300 ? true : undefined),
    20_000,
  );
  await server.close({ drainMs: 0 });
  const written = await writing;
  assert.notEqual(written.jobError, 0, "fio noticed the crash");
  assert.ok(written.writeBytes > 0, JSON.stringify(written));

  server = await serve(device, path);
  const verified = await fioVerify(job);
  await server.close();
  assert.equal(verified.jobError, 0, verified.stderr);
  assert.ok(verified.readBytes > 0);

  server = await serve(new MemoryBlockDevice({ sizeBytes: 64 << 20 }), path);
  const blank = await fioVerify(job);
  await server.close();
  assert.notEqual(blank.jobError, 0, "verify must fail on a device that lost the data");
  assert.match(blank.stderr, /verify: bad magic header/);
});
