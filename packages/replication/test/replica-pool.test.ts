import assert from "node:assert/strict";
import { test } from "node:test";
import { isHesError } from "@hes/base";
import { parseDataAddress, RateLimiter } from "@hes/replication";
import { openStore, startNodes } from "./dataplane-harness.ts";

test("data addresses parse, and bad ones are refused", () => {
  assert.deepEqual(parseDataAddress("10.0.0.1:7200"), { host: "10.0.0.1", port: 7200 });
  assert.deepEqual(parseDataAddress("[::1]:7200"), { host: "::1", port: 7200 });
  assert.deepEqual(parseDataAddress("unix:/run/hes.sock"), { path: "/run/hes.sock" });
  assert.throws(() => parseDataAddress("nohost"), RangeError);
  assert.throws(() => parseDataAddress("h:99999"), RangeError);
});

test("the pool: local replica for itself, one client per peer, replaced when the address changes", async () => {
  const t = await startNodes(2);
  try {
    const pool = t.node(1).pool;
    assert.equal(pool.replica(1).local, true);
    const remote = pool.replica(2);
    assert.strictEqual(pool.replica(2), remote);
    assert.throws(
      () => pool.replica(9),
      (error: unknown) => isHesError(error, "HES_NOT_FOUND"),
    );
    // Node 2 moves to another port: the pool follows the map.
    await t.stop(2);
    const node = t.node(2);
    node.store = await openStore(node.dir, false);
    await t.serve(node, 0); // a new port
    const port = t.node(2).port;
    t.cluster.apply({
      kind: "updateNode",
      fields: {
        nodeId: 2,
        controlAddress: "127.0.0.1:1",
        dataAddress: `127.0.0.1:${port}`,
        failureDomain: "d2",
        disks: [{ diskId: "disk-2", path: node.dir, capacityBytes: 128 * 2 ** 20 }],
      },
    });
    const moved = pool.replica(2);
    assert.notStrictEqual(moved, remote);
    assert.equal(await moved.version({ volumeId: 1, chunkIndex: 0 }), undefined);
  } finally {
    await t.close();
  }
});

test("the token bucket holds a rate (with a burst of a quarter second)", async () => {
  const limiter = new RateLimiter(4 * 1024 * 1024);
  const started = performance.now();
  for (let i = 0; i < 8; i++) await limiter.take(256 * 1024);
  // 2 MiB at 4 MiB/s with a 1 MiB burst: at least ~0.25 s.
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 200, `took ${elapsed} ms`);
  assert.throws(() => new RateLimiter(-1), RangeError);
});
