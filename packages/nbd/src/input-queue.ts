/**
 * Bytes received from a socket and not yet parsed. Chunks are kept as they arrived; `take`
 * returns a view into the first chunk when the bytes lie inside it (the common case: a
 * request header, or a write payload that arrived in one piece) and copies only when a
 * message straddles chunks.
 */
import { assert } from "@hes/base";

export class InputQueue {
  private readonly chunks: Buffer[] = [];
  /** Bytes of chunks[0] already consumed. */
  private headOffset = 0;
  /** Unconsumed bytes across all chunks. */
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Removes and returns the next `count` bytes; the caller checked `length >= count`. */
  take(count: number): Buffer {
    assert(count <= this.length, "take within what was received");
    const head = this.chunks[0];
    if (count === 0 || head === undefined) return Buffer.alloc(0);
    if (head.length - this.headOffset >= count) {
      const view = head.subarray(this.headOffset, this.headOffset + count);
      this.consume(count);
      return view;
    }
    const out = Buffer.allocUnsafe(count);
    let filled = 0;
    while (filled < count) {
      const chunk = this.chunks[0] as Buffer;
      const piece = Math.min(chunk.length - this.headOffset, count - filled);
      chunk.copy(out, filled, this.headOffset, this.headOffset + piece);
      filled += piece;
      this.consume(piece);
    }
    return out;
  }

  /** Moves up to `target.length - targetOffset` bytes into `target`; returns how many. */
  copyInto(target: Buffer, targetOffset: number): number {
    let copied = 0;
    const wanted = target.length - targetOffset;
    while (copied < wanted && this.chunks.length > 0) {
      const chunk = this.chunks[0] as Buffer;
      const piece = Math.min(chunk.length - this.headOffset, wanted - copied);
      chunk.copy(target, targetOffset + copied, this.headOffset, this.headOffset + piece);
      copied += piece;
      this.consume(piece);
    }
    return copied;
  }

  /** Drops up to `count` bytes; returns how many were dropped. */
  skip(count: number): number {
    let dropped = 0;
    while (dropped < count && this.chunks.length > 0) {
      const chunk = this.chunks[0] as Buffer;
      const piece = Math.min(chunk.length - this.headOffset, count - dropped);
      dropped += piece;
      this.consume(piece);
    }
    return dropped;
  }

  clear(): void {
    this.chunks.length = 0;
    this.headOffset = 0;
    this.length = 0;
  }

  private consume(count: number): void {
    this.length -= count;
    this.headOffset += count;
    const head = this.chunks[0] as Buffer;
    if (this.headOffset === head.length) {
      this.chunks.shift();
      this.headOffset = 0;
    }
  }
}
