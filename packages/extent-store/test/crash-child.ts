/**
 * The writer process of the kill -9 crash test (crash.test.ts). Opens the store in `dir`, then
 * writes and discards random block ranges until killed, several in flight, never two in flight
 * on the same block. Reports on stdout (a pipe: synchronous on Linux, so a line is in the pipe
 * before the next step happens):
 *   READY                               the store is open
 *   I <seq> <chunk> <first> <count> <kind>   about to issue (kind W = write, D = discard)
 *   A <seq>                             acknowledged (durable)
 * Block content is a function of (seq, block): see `blockContent`.
 *
 *   node --conditions=hes-source --import tsx crash-child.ts <dir> <seed>
 */
import { join } from "node:path";
import { Prng } from "@hes/base";
import { ExtentStore, FileDisk } from "@hes/extent-store";

export const CRASH_STORE = {
  diskBytes: 48 * 1024 * 1024,
  chunkSizeBytes: 1024 * 1024,
  segmentSizeBytes: 1024 * 1024,
  checkpointLogBytes: 16 * 1024 * 1024,
  chunks: 4,
  /** Blocks of each chunk the writers use: small, so segments die (and are reused) quickly. */
  blocksPerChunk: 64,
  clusterId: "crash-test",
} as const;

/** The content a write of `seq` puts in `block`: self-identifying, checkable to the byte. */
export function blockContent(seq: number, chunk: number, block: number): Uint8Array {
  const data = new Prng(seq * 1_000_003 + chunk * 1009 + block).fill(new Uint8Array(4096));
  const view = new DataView(data.buffer);
  view.setUint32(0, seq, true);
  view.setUint32(4, chunk, true);
  view.setUint32(8, block, true);
  return data;
}

/** Opens (formatting on first use) the crash test's store in `dir`. */
export async function openCrashStore(dir: string): Promise<ExtentStore> {
  const disk = await FileDisk.open(join(dir, "disk.img"), {
    createSizeBytes: CRASH_STORE.diskBytes,
  });
  return ExtentStore.open({
    disks: [{ disk, indexPath: join(dir, "index") }],
    clusterId: CRASH_STORE.clusterId,
    format: true,
    chunkSizeBytes: CRASH_STORE.chunkSizeBytes,
    segmentSizeBytes: CRASH_STORE.segmentSizeBytes,
    checkpointLogBytes: CRASH_STORE.checkpointLogBytes,
  });
}

async function main(): Promise<void> {
  const [dir, seedText, firstSeqText] = process.argv.slice(2);
  if (dir === undefined || seedText === undefined || firstSeqText === undefined) {
    throw new Error("usage: crash-child.ts <dir> <seed> <firstSeq>");
  }
  const prng = new Prng(Number(seedText));
  const store = await openCrashStore(dir);
  process.stdout.write("READY\n");
  let seq = Number(firstSeqText);
  const busy = new Set<string>();
  const worker = async (index: number): Promise<void> => {
    // Half the workers write random ranges; the others stream through a chunk of their own.
    // The region is small, so whole segments die quickly and are reused.
    const streaming = index % 2 === 1;
    let cursor = 0;
    for (;;) {
      const chunk = streaming ? (index - 1) / 2 : prng.int(CRASH_STORE.chunks);
      const count = prng.between(1, 8);
      const first = streaming
        ? Math.min(cursor, CRASH_STORE.blocksPerChunk - count)
        : prng.int(CRASH_STORE.blocksPerChunk - count);
      if (streaming) cursor = (cursor + count) % CRASH_STORE.blocksPerChunk;
      const keys = Array.from({ length: count }, (_, i) => `${chunk}/${first + i}`);
      if (keys.some((key) => busy.has(key))) {
        await new Promise((resolve) => setImmediate(resolve)); // let the holder finish
        continue;
      }
      for (const key of keys) busy.add(key);
      const s = seq++;
      const kind = prng.chance(0.9) ? "W" : "D";
      process.stdout.write(`I ${s} ${chunk} ${first} ${count} ${kind}\n`);
      const target = { volumeId: 1, chunkIndex: chunk };
      if (kind === "W") {
        const data = new Uint8Array(count * 4096);
        for (let i = 0; i < count; i++) data.set(blockContent(s, chunk, first + i), i * 4096);
        await store.write(target, first * 4096, data, { epoch: 1, seq: s });
      } else {
        await store.discard(target, first * 4096, count * 4096, { epoch: 1, seq: s });
      }
      process.stdout.write(`A ${s}\n`);
      for (const key of keys) busy.delete(key);
    }
  };
  await Promise.all(Array.from({ length: 8 }, (_, i) => worker(i)));
}

if (process.argv[1]?.endsWith("crash-child.ts")) {
  main().catch((error: unknown) => {
    process.stderr.write(`crash child failed: ${String(error)}\n`);
    process.exitCode = 1;
  });
}
