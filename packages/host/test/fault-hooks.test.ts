/**
 * Goal: the deliberately broken build lies exactly as the fault suite needs it to: a write is
 * acknowledged before the device has it (a read right after is stale), the real write lands
 * later, cancel() drops the queued ones, and only the exact value `1` turns it on.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { MemoryBlockDevice } from "@hes/blockdev";
import { ackBeforeWriteDevice, anyHostFault, hostFaultsFromEnv } from "../src/fault-hooks.js";

const BLOCK = 4096;

async function waitFor(check: () => Promise<boolean>, boundMs: number): Promise<void> {
  const until = Date.now() + boundMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`condition not met within ${boundMs} ms`);
    await new Promise((done) => setTimeout(done, 5));
  }
}

test("only HES_FAULT_ACK_BEFORE_WRITE=1 turns the lie on", () => {
  assert.deepEqual(hostFaultsFromEnv({ HES_FAULT_ACK_BEFORE_WRITE: "1" }), {
    ackBeforeWrite: true,
  });
  for (const value of [undefined, "", "0", "true", "yes", " 1", "1 "]) {
    const faults = hostFaultsFromEnv({ HES_FAULT_ACK_BEFORE_WRITE: value });
    assert.equal(anyHostFault(faults), false, `value ${JSON.stringify(value)}`);
  }
});

test("a write is acknowledged before it is written, and lands later", async () => {
  const inner = new MemoryBlockDevice({ sizeBytes: 1 << 20 });
  const broken = ackBeforeWriteDevice(inner, (error) => assert.fail(String(error)), 50);
  const data = new Uint8Array(BLOCK).fill(0xab);
  await broken.device.write({ offsetBytes: 0, data, fua: true });
  data.fill(0); // the caller reuses its buffer: the late write must not see that
  const right = await broken.device.read({ offsetBytes: 0, lengthBytes: BLOCK });
  assert.equal(right[0], 0, "the acknowledged write is not there yet: a stale read");
  await broken.device.flush();
  await waitFor(async () => {
    const later = await inner.read({ offsetBytes: 0, lengthBytes: BLOCK });
    return later.every((b) => b === 0xab);
  }, 5_000);
});

test("cancel drops acknowledged writes that were not issued", async () => {
  const inner = new MemoryBlockDevice({ sizeBytes: 1 << 20 });
  const broken = ackBeforeWriteDevice(inner, (error) => assert.fail(String(error)), 30);
  await broken.device.write({ offsetBytes: BLOCK, data: new Uint8Array(BLOCK).fill(7) });
  broken.cancel();
  await new Promise((done) => setTimeout(done, 100));
  const read = await inner.read({ offsetBytes: BLOCK, lengthBytes: BLOCK });
  assert.ok(
    read.every((b) => b === 0),
    "the lost write never reached the device",
  );
});
