import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { isHesError } from "@hes/base";
import { ExtentStore, FileDisk } from "@hes/extent-store";
import { LocalReplica } from "../src/index.js";

const MiB = 2 ** 20;
let root: string;
let store: ExtentStore;
let replica: LocalReplica;

before(async () => {
  root = await mkdtemp(join(tmpdir(), "hes-local-replica-"));
  const disk = await FileDisk.open(join(root, "disk.img"), { createSizeBytes: 64 * MiB });
  store = await ExtentStore.open({
    disks: [{ disk, indexPath: join(root, "index") }],
    clusterId: "local-replica-test",
    format: true,
    chunkSizeBytes: MiB,
    segmentSizeBytes: MiB,
  });
  replica = new LocalReplica(1, store);
});

after(async () => {
  await store.close();
  await rm(root, { recursive: true, force: true });
});

const fenced = (error: unknown) => isHesError(error) && error.code === "HES_FENCED";

test("a seal at a newer epoch fences older writers and readers, and changes nothing", async () => {
  const chunk = { volumeId: 1, chunkIndex: 0 };
  await replica.write(chunk, 0, new Uint8Array(4096).fill(1), { epoch: 1, seq: 10 });
  assert.deepEqual(await replica.seal(chunk, 2), { epoch: 2, durableSeq: 10 });
  await assert.rejects(
    replica.write(chunk, 0, new Uint8Array(4096).fill(9), { epoch: 1, seq: 11 }),
    fenced,
  );
  await assert.rejects(replica.read(chunk, 0, 4096, { epoch: 1 }), fenced);
  await assert.rejects(replica.seal(chunk, 1), fenced);
  await assert.rejects(replica.discard(chunk, 0, 4096, { epoch: 1, seq: 12 }), fenced);
  const data = await replica.read(chunk, 0, 4096, { epoch: 2 });
  assert.equal(data[0], 1);
  assert.deepEqual(await replica.version(chunk), { epoch: 2, durableSeq: 10 });
});

test("copy-range copies data and keeps holes as metadata; checksums compare equal", async () => {
  const source = { volumeId: 2, chunkIndex: 0 };
  const target = { volumeId: 2, chunkIndex: 1 };
  const data = new Uint8Array(8192).map((_, i) => i % 251);
  await replica.write(source, 4096, data, { epoch: 1, seq: 1 });
  await replica.copyRange(
    { chunk: source, offsetBytes: 0 },
    { chunk: target, offsetBytes: 0 },
    16384,
    {
      epoch: 1,
      seq: 2,
    },
  );
  assert.deepEqual(
    await replica.blockChecksums(target, 0, 16384),
    await replica.blockChecksums(source, 0, 16384),
  );
  const runs = await replica.allocation(target, 0, 16384);
  assert.equal(runs.find((run) => run.state === "data")?.lengthBytes, 8192);
  assert.deepEqual(await replica.read(target, 4096, 8192, { epoch: 1 }), data);
});

test("bad arguments are refused before the store is touched", async () => {
  const chunk = { volumeId: 3, chunkIndex: 0 };
  await assert.rejects(
    async () => replica.write(chunk, 1, new Uint8Array(4096), { epoch: 1, seq: 1 }),
    RangeError,
  );
  await assert.rejects(
    async () => replica.write(chunk, 0, new Uint8Array(4096), { epoch: -1, seq: 1 }),
    RangeError,
  );
  assert.equal(await replica.version(chunk), undefined);
});
