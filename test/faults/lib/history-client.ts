/**
 * The history-recording workload: several NBD connections, each a sequential process that
 * writes self-identifying blocks (blocks.ts) to a small hot set and reads them back, every
 * operation recorded with its monotonic invoke/complete times and outcome (history.ts).
 * Writes carry FUA, so an acknowledgement means durable: that is what "no acknowledged write
 * lost" is checked against. A timeout or a dropped connection makes the in-flight operation
 * "unknown"; the process then reconnects (bounded backoff) and carries on.
 */
import type { Prng } from "@hes/base";
import { blockValue, decodeBlock, encodeBlock, HISTORY_BLOCK_BYTES } from "./blocks.js";
import type { History, HistoryOp } from "./history.js";
import { HOT_BLOCKS_MAX, NBD_REQUEST_TIMEOUT_MS_DEFAULT } from "./limits.js";
import { type NbdAddress, NbdClient, NbdReplyError } from "./nbd-client.js";

export interface HistoryClientOptions {
  /** Where to connect; a function is asked again on every reconnect (the export may move). */
  readonly address: NbdAddress | (() => NbdAddress);
  readonly history: History;
  readonly prng: Prng;
  readonly connections: number;
  readonly hotBlocks: number;
  /** Where the hot set starts on the device (so several workloads can share one). */
  readonly firstBlock?: number;
  readonly writeShare?: number;
  readonly requestTimeoutMs?: number;
  /** Writer ids are `writerBase + connection`, unique across every client of one history. */
  readonly writerBase?: number;
}

class TimeoutError extends Error {}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`no reply in ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export class HistoryClient {
  private stopping = false;
  private readonly loops: Promise<void>[] = [];
  private readonly clients = new Set<NbdClient>();
  private readonly counters: number[];

  constructor(private readonly options: HistoryClientOptions) {
    const { connections, hotBlocks } = options;
    if (!Number.isInteger(connections) || connections < 1 || connections > 64) {
      throw new RangeError(`connections must be in 1..64, got ${connections}`);
    }
    if (!Number.isInteger(hotBlocks) || hotBlocks < 1 || hotBlocks > HOT_BLOCKS_MAX) {
      throw new RangeError(`hotBlocks must be in 1..${HOT_BLOCKS_MAX}, got ${hotBlocks}`);
    }
    this.counters = new Array(connections).fill(0);
  }

  /** Starts every connection's loop; they run until stop(). */
  start(): void {
    for (let p = 0; p < this.options.connections; p++) {
      this.loops.push(this.loop(p, this.options.prng.fork()));
    }
  }

  /** Stops issuing operations and waits for in-flight ones to finish or time out. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
    for (const client of this.clients) await client.close().catch(() => undefined);
  }

  private address(): NbdAddress {
    const { address } = this.options;
    return typeof address === "function" ? address() : address;
  }

  private blockOffsetBytes(block: number): number {
    return block * HISTORY_BLOCK_BYTES;
  }

  private async loop(process: number, prng: Prng): Promise<void> {
    const { history, hotBlocks } = this.options;
    const firstBlock = this.options.firstBlock ?? 0;
    let client: NbdClient | undefined;
    let backoffMs = 10;
    while (!this.stopping && !history.full) {
      if (client === undefined) {
        try {
          client = await withTimeout(NbdClient.connect(this.address()), 5_000);
          this.clients.add(client);
          backoffMs = 10;
        } catch {
          await new Promise((r) => setTimeout(r, backoffMs));
          backoffMs = Math.min(backoffMs * 2, 500);
          continue;
        }
      }
      const block = firstBlock + prng.int(hotBlocks);
      const isWrite = prng.chance(this.options.writeShare ?? 0.5);
      const healthy = isWrite
        ? await this.writeOnce(client, process, block)
        : await this.readOnce(client, process, block, false);
      if (!healthy) {
        client.destroy();
        this.clients.delete(client);
        client = undefined;
      }
    }
    if (client !== undefined) {
      await client.close().catch(() => undefined);
      this.clients.delete(client);
    }
  }

  /** One write; false if the connection is no longer usable. */
  private async writeOnce(client: NbdClient, process: number, block: number): Promise<boolean> {
    const writer = (this.options.writerBase ?? 0) + process;
    const counter = ++(this.counters[process] as number);
    const data = encodeBlock(block, writer, counter);
    const op = this.options.history.invoke({
      process,
      kind: "write",
      block,
      value: blockValue(writer, counter),
    });
    const write = client.write(this.blockOffsetBytes(block), data, { fua: true });
    return this.settle(
      op,
      write.then(() => ({})),
    );
  }

  /** One read; `final` marks reads taken after every writer stopped. */
  async readOnce(
    client: NbdClient,
    process: number,
    block: number,
    final: boolean,
  ): Promise<boolean> {
    const op = this.options.history.invoke({ process, kind: "read", block, final });
    const read = client.read(this.blockOffsetBytes(block), HISTORY_BLOCK_BYTES).then((data) => {
      const decoded = decodeBlock(data, block);
      if (decoded.kind === "corrupt") return { readValue: null, corrupt: decoded.reason };
      return { readValue: decoded.kind === "zero" ? null : decoded.value };
    });
    return this.settle(op, read);
  }

  private async settle(op: HistoryOp, work: Promise<Partial<HistoryOp>>): Promise<boolean> {
    const { history } = this.options;
    try {
      const result = await withTimeout(
        work,
        this.options.requestTimeoutMs ?? NBD_REQUEST_TIMEOUT_MS_DEFAULT,
      );
      history.complete(op, "ok", result);
      return true;
    } catch (err) {
      work.catch(() => undefined); // the timed-out request may still reject later
      if (err instanceof NbdReplyError) {
        history.complete(op, "fail", { error: `errno ${err.errno}` });
        return true;
      }
      history.complete(op, "unknown", { error: String(err) });
      return false;
    }
  }

  /**
   * Reads every hot block once more (marked final): call after the writers stopped and the
   * faults healed. Retries each block until it reads, or `deadlineMs` from now.
   */
  async finalReads(deadlineMs = 60_000): Promise<void> {
    const deadline = performance.now() + deadlineMs;
    const firstBlock = this.options.firstBlock ?? 0;
    const process = this.options.connections; // its own process number
    let client: NbdClient | undefined;
    for (let b = firstBlock; b < firstBlock + this.options.hotBlocks; b++) {
      for (let done = false; !done; ) {
        if (performance.now() > deadline)
          throw new Error(`final reads not done in ${deadlineMs} ms`);
        try {
          client ??= await withTimeout(NbdClient.connect(this.address()), 5_000);
          done = await this.readOnce(client, process, b, true);
          const last = this.options.history.ops.at(-1);
          if (last?.outcome !== "ok") done = false;
        } catch {
          done = false;
        }
        if (!done) {
          client?.destroy();
          client = undefined;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    await client?.close().catch(() => undefined);
  }
}
