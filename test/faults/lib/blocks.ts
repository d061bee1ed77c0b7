/**
 * Self-identifying 4 KiB blocks for the history workload. Every block written says where it
 * belongs, who wrote it and which write it was, and carries a CRC over all of that, so a read
 * tells apart: never written (all zeros), a known write (its value), and corrupt or misplaced
 * data (a violation in itself, whatever the history).
 *
 * Layout (big-endian): 0 magic "HESFBLK1" | 8 block number (u64) | 16 writer (u32) |
 * 20 counter (u32) | 24 filler derived from the three | 4092 CRC-32 of bytes 0..4092.
 */
import { crc32 } from "node:zlib";

export const HISTORY_BLOCK_BYTES = 4096;
const MAGIC = Buffer.from("HESFBLK1");
const CRC_AT = HISTORY_BLOCK_BYTES - 4;

/** A write's identity: the value the checker's register model holds. */
export function blockValue(writer: number, counter: number): string {
  return `${writer}:${counter}`;
}

export function encodeBlock(block: number, writer: number, counter: number): Buffer {
  const out = Buffer.alloc(HISTORY_BLOCK_BYTES);
  MAGIC.copy(out, 0);
  out.writeBigUInt64BE(BigInt(block), 8);
  out.writeUInt32BE(writer, 16);
  out.writeUInt32BE(counter, 20);
  // Filler that differs per write, so a block half from one write and half from another
  // (a torn write) fails the CRC instead of looking valid.
  let x =
    (Math.imul(block, 2654435761) ^ Math.imul(writer, 40503) ^ Math.imul(counter, 2246822519)) >>>
      0 || 1;
  for (let at = 24; at < CRC_AT; at += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32BE(x >>> 0, at);
  }
  out.writeUInt32BE(crc32(out.subarray(0, CRC_AT)), CRC_AT);
  return out;
}

/** What a read of one block returned. */
export type DecodedBlock =
  | { readonly kind: "zero" }
  | { readonly kind: "value"; readonly value: string }
  | { readonly kind: "corrupt"; readonly reason: string };

export function decodeBlock(data: Uint8Array, expectedBlock: number): DecodedBlock {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length !== HISTORY_BLOCK_BYTES) {
    return { kind: "corrupt", reason: `read ${buf.length} bytes, not ${HISTORY_BLOCK_BYTES}` };
  }
  if (buf.every((b) => b === 0)) return { kind: "zero" };
  if (!buf.subarray(0, 8).equals(MAGIC)) return { kind: "corrupt", reason: "no block magic" };
  if (crc32(buf.subarray(0, CRC_AT)) !== buf.readUInt32BE(CRC_AT)) {
    return { kind: "corrupt", reason: "CRC mismatch (torn or flipped)" };
  }
  const block = Number(buf.readBigUInt64BE(8));
  if (block !== expectedBlock) {
    return { kind: "corrupt", reason: `block ${block}'s data read at block ${expectedBlock}` };
  }
  return { kind: "value", value: blockValue(buf.readUInt32BE(16), buf.readUInt32BE(20)) };
}
