import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { type HesError, isHesError } from "@hes/base";
import type { ChunkExportPiece } from "@hes/extent-store";
import { encodeFrame, FrameClient, FrameKind, FrameServer } from "@hes/proto";
import { RemoteReplica, ReplicaOp } from "@hes/replication";
import { crc32c } from "@node-rs/crc32";
import { CHUNK_BYTES, MiB, pattern, startNodes, type TestCluster } from "./dataplane-harness.ts";

const code = (c: string) => (error: unknown) => isHesError(error) && error.code === c;

async function collect(pieces: AsyncIterable<ChunkExportPiece>) {
  const out: ChunkExportPiece[] = [];
  for await (const piece of pieces) out.push(piece);
  return out;
}

describe("chunk-replica service and RemoteReplica over loopback", () => {
  let t: TestCluster;
  before(async () => {
    t = await startNodes(2, { ioDeadlineMs: 1_000 });
  });
  after(async () => {
    await t.close();
  });

  test("every method round-trips and agrees with the local replica", async () => {
    const remote = t.node(1).pool.replica(2);
    const local = t.local(2);
    assert.equal(remote.local, false);
    const chunk = { volumeId: 7, chunkIndex: 1 };
    const other = { volumeId: 7, chunkIndex: 2 };
    const data = pattern(MiB, 1); // the store's write bound with 4 MiB segments
    await remote.write(chunk, 0, data, { epoch: 1, seq: 10 });
    await remote.writeZeroes(chunk, 3 * MiB, 64 * 1024, { epoch: 1, seq: 11 });
    await remote.writeZeroes(chunk, 3 * MiB + 64 * 1024, 8192, { epoch: 1, seq: 12, unmap: true });
    await remote.discard(chunk, 8192, 4096, { epoch: 1, seq: 13 });
    const read = await remote.read(chunk, 0, CHUNK_BYTES, { epoch: 1 });
    assert.deepEqual(read, await local.read(chunk, 0, CHUNK_BYTES, { epoch: 1 }));
    assert.deepEqual(read.subarray(0, 8192), data.subarray(0, 8192));
    assert.ok(read.subarray(8192, 12288).every((b) => b === 0));
    assert.deepEqual(await remote.version(chunk), { epoch: 1, durableSeq: 13 });
    assert.equal(await remote.version({ volumeId: 99, chunkIndex: 0 }), undefined);
    assert.deepEqual(
      await remote.allocation(chunk, 0, CHUNK_BYTES),
      await local.allocation(chunk, 0, CHUNK_BYTES),
    );
    assert.deepEqual(
      await remote.changedBlocks(chunk, { sinceSeq: 11 }),
      await local.changedBlocks(chunk, { sinceSeq: 11 }),
    );
    assert.deepEqual(
      await remote.blockChecksums(chunk, 0, CHUNK_BYTES),
      await local.blockChecksums(chunk, 0, CHUNK_BYTES),
    );
    await remote.pinSnapshot(chunk, 5, { epoch: 1 });
    await remote.write(chunk, 0, pattern(4096, 2), { epoch: 1, seq: 14 });
    assert.deepEqual(
      await remote.read(chunk, 0, 4096, { epoch: 1, snapshotId: 5 }),
      data.subarray(0, 4096),
    );
    assert.deepEqual(
      await remote.changedBlocks(chunk, { fromSnapshotId: 5 }),
      await local.changedBlocks(chunk, { fromSnapshotId: 5 }),
    );
    await remote.copyRange(
      { chunk, offsetBytes: 0, snapshotId: 5 },
      { chunk: other, offsetBytes: MiB },
      MiB,
      { epoch: 1, seq: 15 },
    );
    assert.deepEqual(await local.read(other, MiB, MiB, { epoch: 1 }), read.subarray(0, MiB));
    await remote.releaseSnapshot(chunk, 5, { epoch: 1 });
    await assert.rejects(remote.releaseSnapshot(chunk, 5, { epoch: 1 }), code("HES_NOT_FOUND"));
    assert.deepEqual(await remote.seal(chunk, 3), { epoch: 3, durableSeq: 14 });
    // Export over the wire equals the store's own export (version last, same pieces).
    const wire = await collect(remote.exportChunk(chunk));
    const own = await collect(t.node(2).store.exportChunk(chunk));
    const body = (ps: ChunkExportPiece[]) => ps.filter((p) => p.kind !== "version");
    assert.deepEqual(body(wire), body(own));
    assert.deepEqual(wire.at(-1), own[0]);
    await remote.deleteChunk(other, { epoch: 1 });
    assert.equal(await remote.version(other), undefined);
  });

  test("an export imported through the service makes a byte-identical replica", async () => {
    const source = t.node(1).pool.replica(2);
    const chunk = { volumeId: 8, chunkIndex: 0 };
    for (let i = 0; i < 12; i++) {
      await source.write(chunk, i * 256 * 1024, pattern(64 * 1024, i + 3), {
        epoch: 2,
        seq: i + 1,
      });
    }
    await source.writeZeroes(chunk, 3 * MiB, MiB, { epoch: 2, seq: 20 });
    const target = t.node(2).pool.replica(1);
    const version = await target.importChunk(chunk, source.exportChunk(chunk), { epoch: 2 });
    assert.deepEqual(version, await source.version(chunk));
    assert.deepEqual(
      await target.blockChecksums(chunk, 0, CHUNK_BYTES),
      await source.blockChecksums(chunk, 0, CHUNK_BYTES),
    );
    assert.deepEqual(
      await target.allocation(chunk, 0, CHUNK_BYTES),
      await source.allocation(chunk, 0, CHUNK_BYTES),
    );
    // Incremental: only the blocks after seq 10 travel.
    const since = await collect(source.exportChunk(chunk, { sinceSeq: 10 }));
    const dataBytes = since.reduce((n, p) => n + (p.kind === "data" ? p.data.byteLength : 0), 0);
    assert.equal(dataBytes, 2 * 64 * 1024);
  });

  test("fencing travels with its code and changes nothing", async () => {
    const remote = t.node(1).pool.replica(2);
    const chunk = { volumeId: 9, chunkIndex: 0 };
    await remote.write(chunk, 0, pattern(4096, 1), { epoch: 1, seq: 1 });
    await remote.seal(chunk, 4);
    await assert.rejects(
      remote.write(chunk, 0, pattern(4096, 2), { epoch: 3, seq: 2 }),
      (error: unknown) => code("HES_FENCED")(error) && (error as HesError).details?.epoch === 4,
    );
    await assert.rejects(remote.read(chunk, 0, 4096, { epoch: 1 }), code("HES_FENCED"));
    await assert.rejects(remote.discard(chunk, 0, 4096, { epoch: 2, seq: 3 }), code("HES_FENCED"));
    await assert.rejects(remote.importChunk(chunk, empty(), { epoch: 3 }), code("HES_FENCED"));
    assert.deepEqual(await remote.read(chunk, 0, 4096, { epoch: 4 }), pattern(4096, 1));
    assert.deepEqual(await remote.version(chunk), { epoch: 4, durableSeq: 1 });
  });

  test("bad arguments: RangeError at the client, HES_INVALID_ARGUMENT at the service", async () => {
    const remote = t.node(1).pool.replica(2);
    const chunk = { volumeId: 10, chunkIndex: 0 };
    await assert.rejects(
      remote.write(chunk, 1, new Uint8Array(4096), { epoch: 1, seq: 1 }),
      RangeError,
    );
    await assert.rejects(remote.read(chunk, 0, CHUNK_BYTES + 4096, { epoch: 1 }), RangeError);
    await assert.rejects(
      remote.read({ volumeId: -1, chunkIndex: 0 }, 0, 4096, { epoch: 1 }),
      RangeError,
    );
    const raw = new FrameClient({ address: { host: "127.0.0.1", port: t.node(2).port } });
    try {
      const words = (values: number[]) => {
        const b = new Uint8Array(values.length * 8);
        const v = new DataView(b.buffer);
        for (const [i, x] of values.entries()) v.setUint32(i * 8, x, true);
        return b;
      };
      // Unaligned offset, past the chunk, short meta, bad flags, unknown opcode, a 2^60 field.
      const cases: [number, Uint8Array, Uint8Array | undefined, RegExp][] = [
        [ReplicaOp.write, words([10, 0, 1, 1, 1]), new Uint8Array(4096), /offsetBytes/],
        [ReplicaOp.read, words([10, 0, CHUNK_BYTES, 4096, 1, 0, 0]), undefined, /offsetBytes/],
        [ReplicaOp.read, words([10, 0, 0, 8 * MiB, 1, 0, 0]), undefined, /lengthBytes/],
        [ReplicaOp.read, words([10, 0, 0]), undefined, /7 u64 fields/],
        [ReplicaOp.read, words([10, 0, 0, 4096, 1, 64, 0]), undefined, /flags/],
        [ReplicaOp.write, words([10, 0, 0, 1, 1]), new Uint8Array(100), /lengthBytes/],
        [ReplicaOp.version, words([10, 0]), new Uint8Array(8), /payload/],
      ];
      for (const [opcode, meta, payload, field] of cases) {
        await assert.rejects(
          raw.call(opcode, { meta, ...(payload === undefined ? {} : { payload }) }),
          (error: unknown) =>
            code("HES_INVALID_ARGUMENT")(error) && field.test((error as Error).message),
        );
      }
      const huge = words([10, 0]);
      new DataView(huge.buffer).setUint32(4, 2 ** 30, true);
      await assert.rejects(raw.call(ReplicaOp.version, { meta: huge }), /exceeds 2\^53/);
      await assert.rejects(raw.call(0x01ff, {}), code("HES_UNSUPPORTED"));
      // The same connection still serves, and nothing was written.
      const ok = await raw.call(ReplicaOp.version, { meta: words([10, 0]) });
      assert.equal(ok.meta[0], 0);
    } finally {
      await raw.close();
    }
  });

  test("garbage and oversize frames close only that connection", async () => {
    const port = t.node(2).port;
    for (const bytes of [
      Buffer.from("this is not a frame, not even close to one......"),
      oversizeHeader(),
    ]) {
      const socket = net.connect({ host: "127.0.0.1", port });
      const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
      socket.on("error", () => {});
      socket.write(bytes);
      await closed;
    }
    const remote = t.node(1).pool.replica(2);
    assert.equal(await remote.version({ volumeId: 11, chunkIndex: 0 }), undefined);
  });

  test("a peer that stops answering fails IO by its deadline, not later", async () => {
    const hung = new FrameServer({ handler: () => new Promise(() => {}) });
    const address = (await hung.listen({ host: "127.0.0.1", port: 0 })) as { port: number };
    const remote = new RemoteReplica({
      nodeId: 3,
      address: { host: "127.0.0.1", port: address.port },
      chunkSizeBytes: CHUNK_BYTES,
      ioDeadlineMs: 300,
      controlDeadlineMs: 300,
    });
    try {
      const started = performance.now();
      await assert.rejects(
        remote.write({ volumeId: 1, chunkIndex: 0 }, 0, new Uint8Array(4096), { epoch: 1, seq: 1 }),
        code("HES_TIMEOUT"),
      );
      await assert.rejects(
        remote.read({ volumeId: 1, chunkIndex: 0 }, 0, 4096, { epoch: 1 }),
        code("HES_TIMEOUT"),
      );
      const elapsed = performance.now() - started;
      assert.ok(elapsed < 2_000, `two 300 ms deadlines took ${elapsed} ms`);
      assert.equal(remote.stats().retries, 0, "a timeout is never retried");
    } finally {
      await remote.close();
      await hung.close();
    }
  });

  test("a restarted peer is reached again on the same pooled client", async () => {
    const remote = t.node(1).pool.replica(2);
    const chunk = { volumeId: 12, chunkIndex: 0 };
    await remote.write(chunk, 0, pattern(4096, 9), { epoch: 1, seq: 1 });
    await t.stop(2);
    await assert.rejects(remote.read(chunk, 0, 4096, { epoch: 1 }), code("HES_UNAVAILABLE"));
    await t.restart(2);
    // The client backs off after failed connects; wait (bounded) for it to get through.
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        assert.deepEqual(await remote.read(chunk, 0, 4096, { epoch: 1 }), pattern(4096, 9));
        break;
      } catch (error) {
        if (!code("HES_UNAVAILABLE")(error) || Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    assert.strictEqual(t.node(1).pool.replica(2), remote, "the pooled client is reused");
  });
});

async function* empty(): AsyncGenerator<ChunkExportPiece> {}

function oversizeHeader(): Buffer {
  const parts = encodeFrame({
    kind: FrameKind.request,
    opcode: ReplicaOp.write,
    requestId: 1,
    status: 0,
  });
  const head = Buffer.from(parts[0] as Uint8Array);
  head.writeUInt32LE(2 ** 31, 20); // payload length far over the bound, header crc valid
  head.writeUInt32LE(crc32c(head.subarray(0, 28)), 28);
  return head;
}
