/**
 * Rebuild and catch-up, beside fio's sequential write bandwidth of the same disk in the same run.
 *
 * Four nodes in this process, each an ExtentStore on its own file (O_DIRECT|O_DSYNC, as the
 * host opens disks) in BENCH_DIR, each serving its chunk-replica service on a real loopback
 * socket. A volume of VOLUME_MIB is written in 1 MiB writes to nodes 1–3; node 3 is then lost
 * (wiped and marked down) and its replicas are re-placed on node 4, whose mover pulls them
 * from nodes 1–2 over the sockets.
 *
 * Estimate first: the disk writes ~1–2 GB/s sequentially (fio write 1 MiB qd8). A rebuild
 * reads every byte on one node's store and writes it on another's (plus the store's crc32c of
 * every block, twice, on one JavaScript thread at ~2.5 GB/s) — all on the same disk — so
 * about a third to a half of fio's bandwidth is the most to expect; the target is ≥ 50% of
 * fio ÷ the number of stores sharing the disk (4 here).
 *
 * Catch-up: node 3 stops for OUTAGE_S seconds while the owner writes random 4 KiB blocks to
 * nodes 1–2; it restarts, and its mover copies the blocks changed since the watermark. The
 * target is bytes moved ≤ 2 × bytes written during the outage.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { systemClock } from "@hes/base";
import { ExtentStore, FileDisk } from "@hes/extent-store";
import {
  ChunkReplicaService,
  DirectCluster,
  Mover,
  ReplicaPool,
  volumeSeq,
} from "@hes/replication";
import { printHeader } from "./common.js";
import { runFio } from "./extent-store/fio.js";

const MiB = 1024 * 1024;
const DIR = process.env.BENCH_DIR ?? "/var/tmp/hes-bench-rebuild";
const VOLUME_MIB = Number(process.env.VOLUME_MIB ?? 1024);
const CHUNK_MIB = Number(process.env.CHUNK_MIB ?? 64);
const OUTAGE_S = Number(process.env.OUTAGE_S ?? 10);
const FIO_SECONDS = Number(process.env.SECONDS ?? 5);
const LIMIT_MIB_S = Number(process.env.LIMIT_MIB_S ?? 64);
const NODES = 4;
const STORE_BYTES = (VOLUME_MIB + 512) * MiB * 2;

printHeader("rebuild and catch-up beside fio sequential write, same disk, same run", {
  dir: DIR,
  volumeMiB: VOLUME_MIB,
  chunkMiB: CHUNK_MIB,
  nodes: NODES,
  replicas: 3,
  storeFileBytes: STORE_BYTES,
  outageSeconds: OUTAGE_S,
  fioSeconds: FIO_SECONDS,
  limitedRunMiBps: LIMIT_MIB_S,
  chunksInFlight: Number(process.env.CHUNKS_IN_FLIGHT ?? 2),
  disks: "O_DIRECT|O_DSYNC",
});

rmSync(DIR, { recursive: true, force: true });
mkdirSync(DIR, { recursive: true });

console.log("\nfio write-1m-qd8 on a 2 GiB file in the same directory…");
const fio = runFio("write-1m-qd8", join(DIR, "fio.dat"), 2 * 1024 * MiB, FIO_SECONDS);
rmSync(join(DIR, "fio.dat"), { force: true });
const fioMBps = fio.bytesPerSecond / 1e6;
console.log(`fio sequential write: ${fioMBps.toFixed(0)} MB/s`);

interface Node {
  nodeId: number;
  store: ExtentStore;
  service: ChunkReplicaService;
  pool: ReplicaPool;
  port: number;
}
// The map's clock, moved forward past the grace period to mark the lost node down.
let clockOffsetMs = 0;
const clock = { ...systemClock, wallMs: () => systemClock.wallMs() + clockOffsetMs };
const cluster = new DirectCluster(clock);
const nodes: Node[] = [];

async function openNode(nodeId: number, format: boolean, port = 0): Promise<Node> {
  const dir = join(DIR, `node-${nodeId}`);
  mkdirSync(dir, { recursive: true });
  const disk = await FileDisk.open(join(dir, "disk.img"), {
    createSizeBytes: STORE_BYTES,
    direct: true,
    dsync: true,
  });
  const store = await ExtentStore.open({
    disks: [{ disk, indexPath: join(dir, "index") }],
    clusterId: "bench",
    format,
    chunkSizeBytes: CHUNK_MIB * MiB,
  });
  const service = new ChunkReplicaService({ nodeId, store });
  const address = (await service.listen({ host: "127.0.0.1", port })) as { port: number };
  // Throughput, not tail latency, is measured here: on a loaded 2-core VM a 1 MiB write queued
  // behind many others can exceed the 2 s IO deadline meant for a hung peer.
  const client = { ioDeadlineMs: 30_000, copyDeadlineMs: 60_000 };
  const pool = new ReplicaPool({ nodeId, store, view: () => cluster.map, client });
  return { nodeId, store, service, pool, port: address.port };
}

async function closeNode(node: Node): Promise<void> {
  await node.pool.close();
  await node.service.close();
  await node.store.close();
}

cluster.apply({ kind: "initCluster", fields: { clusterId: "bench", gracePeriodMs: 1_000 } });
for (let nodeId = 1; nodeId <= 3; nodeId++) nodes.push(await openNode(nodeId, true));
const addNode = (node: Node) =>
  cluster.apply({
    kind: "addNode",
    fields: {
      nodeId: node.nodeId,
      controlAddress: "127.0.0.1:1",
      dataAddress: `127.0.0.1:${node.port}`,
      failureDomain: `d${node.nodeId}`,
      disks: [{ diskId: `disk-${node.nodeId}`, path: DIR, capacityBytes: STORE_BYTES }],
    },
  });
for (const node of nodes) addNode(node);

const chunks = Math.ceil(VOLUME_MIB / CHUNK_MIB);
const { volumeId } = cluster.apply({
  kind: "createVolume",
  fields: { name: "bench", sizeBytes: VOLUME_MIB * MiB, chunkSizeBytes: CHUNK_MIB * MiB },
});
const vid = volumeId as number;
const epoch = cluster.apply({ kind: "openVolume", fields: { volumeId: vid, nodeId: 1 } })
  .epoch as number;
for (let i = 0; i < chunks; i++) {
  cluster.apply({
    kind: "placeChunk",
    fields: { volumeId: vid, chunkIndex: i, epoch, preferredNodeId: 1 },
  });
}
let counter = 0;
const owner = () => nodes[0] as Node;
const report = (nodeIds: number[]) => {
  const seq = volumeSeq(epoch, counter);
  const entries = [];
  for (let i = 0; i < chunks; i++) {
    for (const nodeId of nodeIds)
      entries.push({ volumeId: vid, chunkIndex: i, nodeId, durableSeq: seq });
  }
  cluster.apply({ kind: "reportReplicaProgress", fields: { entries } });
};

// ---- fill ----
console.log(`\nfilling ${VOLUME_MIB} MiB × 3 replicas (1 MiB writes, 8 in flight)…`);
const block = new Uint8Array(MiB);
for (let i = 0; i < block.length; i++) block[i] = (i * 2654435761) >>> 24;
let fillStart = performance.now();
{
  const total = VOLUME_MIB;
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const at = next++;
      counter++;
      const stamp = { epoch, seq: volumeSeq(epoch, counter) };
      const chunk = { volumeId: vid, chunkIndex: Math.floor(at / CHUNK_MIB) };
      const data = block.slice();
      data[0] = at & 0xff;
      await Promise.all(
        [1, 2, 3].map((n) =>
          owner()
            .pool.replica(n)
            .write(chunk, (at % CHUNK_MIB) * MiB, data, stamp),
        ),
      );
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}
report([1, 2, 3]);
console.log(
  `filled in ${((performance.now() - fillStart) / 1000).toFixed(1)} s ` +
    `(${((VOLUME_MIB * 3 * MiB) / 1e6 / ((performance.now() - fillStart) / 1000)).toFixed(0)} MB/s of replica writes)`,
);
fillStart = 0;

// ---- lose node 3, rebuild onto node 4 ----
const lost = nodes[2] as Node;
await closeNode(lost);
rmSync(join(DIR, "node-3"), { recursive: true, force: true });
const spare = await openNode(4, true);
nodes.push(spare);
addNode(spare);
clockOffsetMs += 2_000;
for (const nodeId of [1, 2, 4]) cluster.apply({ kind: "nodeHeartbeat", fields: { nodeId } });
cluster.apply({ kind: "markNodeDown", fields: { nodeId: 3 } });
for (let i = 0; i < chunks; i++) {
  cluster.apply({
    kind: "replaceReplica",
    fields: { volumeId: vid, chunkIndex: i, oldNodeId: 3, newNodeId: 4 },
  });
}
console.log(`\nnode 3 lost; rebuilding ${chunks} chunks onto node 4 (unlimited bandwidth)…`);
const IN_FLIGHT = Number(process.env.CHUNKS_IN_FLIGHT ?? 2);
const mover = new Mover({
  chunksInFlightMax: IN_FLIGHT,
  nodeId: 4,
  control: cluster.control(4),
  replicas: spare.pool,
  bytesPerSecond: 0,
});
const started = performance.now();
const results = await mover.runOnce();
const seconds = (performance.now() - started) / 1000;
const failed = results.filter((r) => !r.ok);
if (failed.length > 0) throw new Error(`rebuild failed: ${String(failed[0]?.error)}`);
const rebuilt = mover.stats().rebuildBytes + mover.stats().catchUpBytes;
const rebuildMBps = rebuilt / 1e6 / seconds;
console.log(
  `rebuild: ${(rebuilt / MiB).toFixed(0)} MiB in ${seconds.toFixed(2)} s = ${rebuildMBps.toFixed(0)} MB/s`,
);
await mover.close();

// A rate-limited copy of a few chunks (a rebalance move 4 → 5): the limiter holds the rate.
const few = Math.min(chunks, 4);
console.log(`\nrate-limited move of ${few} chunks from node 4 to node 5 at ${LIMIT_MIB_S} MiB/s…`);
const five = await openNode(5, true);
nodes.push(five);
addNode(five);
for (let i = 0; i < few; i++) {
  cluster.apply({
    kind: "startMove",
    fields: { volumeId: vid, chunkIndex: i, fromNodeId: 4, toNodeId: 5 },
  });
}
const limited = new Mover({
  nodeId: 5,
  control: cluster.control(5),
  replicas: five.pool,
  bytesPerSecond: LIMIT_MIB_S * MiB,
});
const limitedStart = performance.now();
const limitedResults = await limited.runOnce();
const limitedSeconds = (performance.now() - limitedStart) / 1000;
if (limitedResults.some((r) => !r.ok)) throw new Error("limited rebuild failed");
const limitedBytes = limited.stats().rebuildBytes + limited.stats().catchUpBytes;
const finished = limited.stats().movesFinished;
console.log(
  `limited (${finished} moves finished): ${(limitedBytes / MiB).toFixed(0)} MiB in ${limitedSeconds.toFixed(2)} s = ` +
    `${(limitedBytes / MiB / limitedSeconds).toFixed(1)} MiB/s (limit ${LIMIT_MIB_S})`,
);
await limited.close();

// ---- catch-up after an outage of node 2 ----
console.log(`\ncatch-up: node 2 stops for ${OUTAGE_S} s while the owner writes 4 KiB blocks…`);
const two = nodes[1] as Node;
const watermark = volumeSeq(epoch, counter);
await closeNode(two);
const deadline = performance.now() + OUTAGE_S * 1000;
let writtenBytes = 0;
let writes = 0;
let x = 12345;
const small = new Uint8Array(4096).fill(7);
{
  const worker = async () => {
    while (performance.now() < deadline) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0; // imul: exact 32-bit product
      const blockIndex = (x >>> 8) % ((VOLUME_MIB * MiB) / 4096);
      const chunk = {
        volumeId: vid,
        chunkIndex: Math.floor((blockIndex * 4096) / (CHUNK_MIB * MiB)),
      };
      const offset = (blockIndex * 4096) % (CHUNK_MIB * MiB);
      counter++;
      const stamp = { epoch, seq: volumeSeq(epoch, counter) };
      const record = cluster.map.chunk(vid, chunk.chunkIndex);
      const live = (record?.replicas ?? []).map((r) => r.nodeId).filter((n) => n !== 2);
      await Promise.all(
        live.map((n) => owner().pool.replica(n).write(chunk, offset, small, stamp)),
      );
      writtenBytes += 4096;
      writes++;
      if (writes % 1000 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}
for (let i = 0; i < chunks; i++) {
  cluster.apply({
    kind: "reportReplicaFailure",
    fields: { volumeId: vid, chunkIndex: i, epoch, nodeId: 2, safeSeq: watermark },
  });
}
const inSyncNow = cluster.map
  .chunksOfVolume(vid)
  .flatMap((c) => c.replicas.filter((r) => r.state === "in-sync").map((r) => r.nodeId));
report([...new Set(inSyncNow)]);
const back = await openNode(2, false, two.port);
nodes[1] = back;
const catchUp = new Mover({
  nodeId: 2,
  control: cluster.control(2),
  replicas: back.pool,
  bytesPerSecond: 0,
});
const catchStart = performance.now();
const catchResults = await catchUp.runOnce();
const catchSeconds = (performance.now() - catchStart) / 1000;
if (catchResults.some((r) => !r.ok))
  throw new Error(`catch-up failed: ${String(catchResults.find((r) => !r.ok)?.error)}`);
const moved = catchUp.stats().catchUpBytes;
console.log(
  `catch-up: ${writes} writes (${(writtenBytes / MiB).toFixed(1)} MiB) during the outage; ` +
    `moved ${(moved / MiB).toFixed(1)} MiB in ${catchSeconds.toFixed(2)} s over ${catchResults.length} chunks`,
);
await catchUp.close();
// Verify: every chunk of the caught-up node equals the owner's replica, block for block.
let identical = true;
for (let i = 0; i < chunks; i++) {
  const chunk = { volumeId: vid, chunkIndex: i };
  const a = await back.pool.replica(2).blockChecksums(chunk, 0, CHUNK_MIB * MiB);
  const b = await back.pool.replica(1).blockChecksums(chunk, 0, CHUNK_MIB * MiB);
  if (a.some((crc, k) => crc !== b[k])) identical = false;
}
console.log(`caught-up replicas identical to the owner's: ${identical ? "yes" : "NO"}`);

// ---- summary ----
const share = (fioMBps * 0.5) / NODES;
console.log("\n| figure | value | target | result |");
console.log("| --- | --- | --- | --- |");
console.log(`| fio sequential write (write-1m-qd8) | ${fioMBps.toFixed(0)} MB/s | | |`);
console.log(
  `| rebuild throughput | ${rebuildMBps.toFixed(0)} MB/s | ≥ 50% × fio ÷ ${NODES} stores = ${share.toFixed(0)} MB/s | ${rebuildMBps >= share ? "met" : "NOT met"} (${((rebuildMBps / fioMBps) * 100).toFixed(0)}% of fio) |`,
);
const ratio = moved / Math.max(1, writtenBytes);
console.log(
  `| catch-up bytes moved / written during a ${OUTAGE_S} s outage | ${ratio.toFixed(2)}× | ≤ 2× | ${ratio <= 2 ? "met" : "NOT met"} |`,
);

for (const node of nodes) {
  if (node === lost || node === two) continue;
  await closeNode(node);
}
rmSync(DIR, { recursive: true, force: true });
