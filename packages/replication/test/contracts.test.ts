import assert from "node:assert/strict";
import { test } from "node:test";
import { isHesError } from "@hes/base";
import {
  DirectCluster,
  epochOfSeq,
  SEQ_EPOCH_MAX,
  SEQ_PER_EPOCH_MAX,
  volumeSeq,
} from "../src/index.js";

test("volume seqs of a newer epoch exceed every seq of an older one", () => {
  assert.ok(volumeSeq(2, 1) > volumeSeq(1, SEQ_PER_EPOCH_MAX));
  assert.equal(epochOfSeq(volumeSeq(7, 123)), 7);
  assert.ok(Number.isSafeInteger(volumeSeq(SEQ_EPOCH_MAX, SEQ_PER_EPOCH_MAX)));
  assert.throws(() => volumeSeq(0, 1), RangeError);
  assert.throws(() => volumeSeq(1, 0), RangeError);
  assert.throws(() => volumeSeq(1, SEQ_PER_EPOCH_MAX + 1), RangeError);
  assert.throws(() => volumeSeq(SEQ_EPOCH_MAX + 1, 1), RangeError);
});

test("a direct cluster applies proposals through the real map and refuses bad ones", async () => {
  const cluster = new DirectCluster();
  cluster.apply({ kind: "initCluster", fields: { clusterId: "c1" } });
  const control = cluster.control(1);
  let notified = 0;
  const unsubscribe = control.subscribe(() => {
    notified += 1;
  });
  const created = await control.propose({
    kind: "createVolume",
    fields: { name: "v", sizeBytes: 64 * 2 ** 20 },
  });
  assert.equal(typeof created.volumeId, "number");
  assert.equal(control.view().volumeByName("v")?.volumeId, created.volumeId);
  await assert.rejects(
    control.propose({ kind: "createVolume", fields: { name: "v", sizeBytes: 64 * 2 ** 20 } }),
    (error: unknown) => isHesError(error) && error.code === "HES_ALREADY_EXISTS",
  );
  unsubscribe();
  assert.equal(notified, 1);
  assert.equal((await control.sync()).volumes().length, 1);
});
