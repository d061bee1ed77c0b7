/**
 * The packed chunk table of a map snapshot (`ClusterMapState.chunk_table`). Chunk placements
 * are most of a map (up to CHUNK_PLACEMENTS_MAX of them) and protobuf-es's reflective codec
 * costs ~25 µs per chunk for a round trip, half a minute at the limit, with the event loop
 * blocked; this flat varint layout costs well under a microsecond per chunk.
 *
 * Layout, all unsigned LEB128 varints (values are safe integers, at most 8 bytes each):
 *   per chunk, in (volume id, chunk index) order:
 *     volume_id, chunk_index, placed_at_index, move_from_node_id, move_to_node_id,
 *     replica_count, then per replica:
 *       node_id, state (ReplicaState: 1 in-sync, 2 stale, 3 filling), durable_seq,
 *       bytes_done, bytes_total
 */
import { HesError } from "@hes/base";
import { ReplicaState as WireReplicaState } from "@hes/proto";
import type { ChunkRecord, ReplicaRecord, ReplicaState } from "./model.js";

const STATE_CODES: Readonly<Record<ReplicaState, WireReplicaState>> = {
  "in-sync": WireReplicaState.IN_SYNC,
  stale: WireReplicaState.STALE,
  filling: WireReplicaState.FILLING,
};
const STATES = new Map(Object.entries(STATE_CODES).map(([k, v]) => [v, k as ReplicaState]));

/** Most bytes one varint may take: 8 × 7 bits hold any safe integer (< 2^53). */
const VARINT_BYTES_MAX = 8;

class Writer {
  private bytes = new Uint8Array(1024);
  private length = 0;

  varint(value: number): void {
    if (this.length + VARINT_BYTES_MAX > this.bytes.length) {
      const grown = new Uint8Array(this.bytes.length * 2);
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
    }
    let rest = value;
    while (rest >= 0x80) {
      this.bytes[this.length++] = (rest % 0x80) | 0x80;
      rest = Math.floor(rest / 0x80);
    }
    this.bytes[this.length++] = rest;
  }

  finish(): Uint8Array {
    return this.bytes.slice(0, this.length);
  }
}

function bad(message: string): never {
  throw new HesError("HES_BAD_FORMAT", `cluster map snapshot chunk table: ${message}`);
}

class Reader {
  private at = 0;
  constructor(private readonly bytes: Uint8Array) {}

  get done(): boolean {
    return this.at >= this.bytes.length;
  }

  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < VARINT_BYTES_MAX; i++) {
      const byte = this.bytes[this.at++];
      if (byte === undefined) bad("truncated");
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) {
        if (!Number.isSafeInteger(value)) bad("value out of range");
        return value;
      }
      scale *= 0x80;
    }
    return bad("varint too long");
  }
}

/** Encodes chunk records (the caller passes them sorted). */
export function encodeChunkTable(chunks: Iterable<ChunkRecord>): Uint8Array {
  const w = new Writer();
  for (const chunk of chunks) {
    w.varint(chunk.volumeId);
    w.varint(chunk.chunkIndex);
    w.varint(chunk.placedAtIndex);
    w.varint(chunk.moveFromNodeId);
    w.varint(chunk.moveToNodeId);
    w.varint(chunk.replicas.length);
    for (const replica of chunk.replicas) {
      w.varint(replica.nodeId);
      w.varint(STATE_CODES[replica.state]);
      w.varint(replica.durableSeq);
      w.varint(replica.bytesDone);
      w.varint(replica.bytesTotal);
    }
  }
  return w.finish();
}

/** Decodes a chunk table; HES_BAD_FORMAT when it is not one. Ranges are the caller's. */
export function decodeChunkTable(bytes: Uint8Array, replicasMax: number): ChunkRecord[] {
  const r = new Reader(bytes);
  const out: ChunkRecord[] = [];
  while (!r.done) {
    const volumeId = r.varint();
    const chunkIndex = r.varint();
    const placedAtIndex = r.varint();
    const moveFromNodeId = r.varint();
    const moveToNodeId = r.varint();
    const count = r.varint();
    if (count > replicasMax) bad(`chunk ${volumeId}/${chunkIndex} has ${count} replicas`);
    const replicas: ReplicaRecord[] = [];
    for (let i = 0; i < count; i++) {
      const nodeId = r.varint();
      const state = STATES.get(r.varint());
      if (state === undefined) bad(`chunk ${volumeId}/${chunkIndex}: unknown replica state`);
      replicas.push({
        nodeId,
        state,
        durableSeq: r.varint(),
        bytesDone: r.varint(),
        bytesTotal: r.varint(),
      });
    }
    out.push({ volumeId, chunkIndex, replicas, moveFromNodeId, moveToNodeId, placedAtIndex });
  }
  return out;
}
