/**
 * Wire limits. Every value carries its reason; relationships are asserted at load.
 */
import { assert } from "@hes/base";

/**
 * Largest control-plane (gRPC) message either side accepts. Raft appends are batched below
 * this and snapshots are streamed in pieces below it; anything larger is refused with
 * RESOURCE_EXHAUSTED before it is buffered.
 */
export const CONTROL_MESSAGE_BYTES_MAX = 16 * 1024 * 1024;

/** Fixed size of a data-plane frame header (see README: "Data-plane framing"). */
export const FRAME_HEADER_BYTES = 32;

/** Largest meta section of a frame: operation headers are small (ids, offsets, epochs). */
export const FRAME_META_BYTES_MAX = 64 * 1024;

/**
 * Hard upper bound on a frame's payload. 16 MiB holds the largest single IO a volume splits
 * into (a 64 MiB chunk is streamed in 1–8 MiB pieces) with room to spare; a peer announcing
 * more is broken or hostile and its connection is closed before anything is buffered.
 */
export const FRAME_PAYLOAD_BYTES_MAX = 16 * 1024 * 1024;

/** Default per-connection payload bound (configurable down, never above the hard bound). */
export const FRAME_PAYLOAD_BYTES_DEFAULT = 8 * 1024 * 1024;

/**
 * Requests a server works on at once per connection. Past this it stops reading the socket,
 * so a fast client is slowed by TCP flow control instead of growing server memory.
 * Bounds server memory per connection to about this × the payload bound.
 */
export const FRAME_INFLIGHT_PER_CONNECTION_DEFAULT = 256;

/** Requests a client keeps in flight on one connection; callers beyond this wait in FIFO. */
export const FRAME_CLIENT_INFLIGHT_DEFAULT = 128;

/** Callers a client lets wait for an in-flight slot before refusing with HES_BUSY. */
export const FRAME_CLIENT_WAITERS_MAX = 4096;

/** Connections one frame server accepts at once; more are closed on arrival. */
export const FRAME_CONNECTIONS_DEFAULT = 1024;

/** A client call with no deadline of its own gets this one. */
export const FRAME_DEADLINE_MS_DEFAULT = 30_000;

/** A connect attempt that takes longer than this fails with HES_UNAVAILABLE. */
export const FRAME_CONNECT_TIMEOUT_MS_DEFAULT = 5_000;

assert(
  FRAME_PAYLOAD_BYTES_DEFAULT <= FRAME_PAYLOAD_BYTES_MAX,
  "default payload within the hard max",
);
assert(FRAME_META_BYTES_MAX < FRAME_PAYLOAD_BYTES_MAX, "meta is small next to payload");
assert(FRAME_PAYLOAD_BYTES_MAX <= 0xffff_ffff, "payload length travels as u32");
