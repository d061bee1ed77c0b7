/**
 * NBD server limits. Every value carries its reason; relationships are asserted at load.
 * Worst-case server memory for request and reply payloads is about
 * connections × (in-flight bytes + reply backlog + one input chunk).
 */
import { assert } from "@hes/base";

/**
 * Largest READ or WRITE payload advertised (and accepted) per request: 32 MiB, the size
 * proto.md tells clients to stay within for interoperability and tells servers not to treat
 * as denial of service. A device with a smaller `maxRequestBytes` lowers it.
 */
export const NBD_PAYLOAD_BYTES_MAX = 32 * 1024 * 1024;

/** proto.md: an advertised minimum block size must not exceed 64 KiB. */
export const NBD_MIN_BLOCK_BYTES_MAX = 64 * 1024;

/**
 * Largest option payload buffered during the handshake. Option data is names (≤ 4096 bytes
 * by the spec) and a few metadata queries; anything longer is skipped unread and refused with
 * NBD_REP_ERR_TOO_BIG.
 */
export const NBD_OPTION_BYTES_MAX = 64 * 1024;

/**
 * Options one connection may send before it is deemed a denial of service and dropped
 * (proto.md allows a hard disconnect then). Real clients send fewer than ten.
 */
export const NBD_OPTIONS_PER_CONNECTION_MAX = 256;

/** Names, descriptions and error messages: proto.md caps strings at 4096 bytes. */
export const NBD_STRING_BYTES_MAX = 4096;

/**
 * A connection that has not reached the transmission phase by then is closed: a client that
 * connects and stays silent would otherwise hold a connection slot forever.
 */
export const NBD_HANDSHAKE_TIMEOUT_MS_DEFAULT = 10_000;

/**
 * Requests one connection works on at once. Past this the server stops reading that socket,
 * so a client with a deeper queue is slowed by TCP flow control instead of growing memory.
 * 128 covers fio's depth-32 jobs, qemu's 16 and nbdcopy's 64 with room to spare.
 */
export const NBD_INFLIGHT_REQUESTS_DEFAULT = 128;
export const NBD_INFLIGHT_REQUESTS_MAX = 4096;

/**
 * Payload bytes (write data received, read data requested) one connection has in flight.
 * A request is admitted when it fits, or when nothing else is in flight, so one request of
 * the maximum payload always makes progress.
 */
export const NBD_INFLIGHT_BYTES_DEFAULT = 64 * 1024 * 1024;

/**
 * Reply bytes queued in a socket that the client is not reading. Past this the server stops
 * reading requests from that client until the socket drains: replies cannot pile up.
 */
export const NBD_REPLY_BACKLOG_BYTES_MAX = 16 * 1024 * 1024;

/** Connections one server holds at once (handshaking or transmitting); more are refused. */
export const NBD_CONNECTIONS_DEFAULT = 64;

/** Exports one server holds. */
export const NBD_EXPORTS_MAX = 1024;

/**
 * READs at least this long ask the device's allocation map first so zero ranges travel as
 * OFFSET_HOLE chunks (12 bytes instead of the data). Smaller reads are not worth the extra
 * call: a 4 KiB read goes out as one data chunk.
 */
export const NBD_SPARSE_READ_BYTES_MIN = 64 * 1024;

/** A zero run shorter than this inside a sparse read is sent as data (fewer, larger chunks). */
export const NBD_HOLE_CHUNK_BYTES_MIN = 4096;

/**
 * Descriptors in one block-status reply. proto.md says a server should not send more than
 * 2^20; fewer keeps one reply under 128 KiB, and the client simply asks again from where it
 * ended.
 */
export const NBD_BLOCK_STATUS_DESCRIPTORS_MAX = 16 * 1024;

/** How long `close()` lets in-flight requests finish before it drops connections. */
export const NBD_CLOSE_DRAIN_MS_DEFAULT = 5_000;

assert(NBD_INFLIGHT_BYTES_DEFAULT >= NBD_PAYLOAD_BYTES_MAX, "one maximum request fits the window");
assert(NBD_INFLIGHT_REQUESTS_DEFAULT <= NBD_INFLIGHT_REQUESTS_MAX, "default within max");
assert(NBD_PAYLOAD_BYTES_MAX <= 0xffff_ffff - 8, "a payload fits one OFFSET_DATA chunk");
assert(NBD_SPARSE_READ_BYTES_MIN >= NBD_HOLE_CHUNK_BYTES_MIN, "sparse reads can hold a hole");
assert(NBD_OPTION_BYTES_MAX >= 2 * NBD_STRING_BYTES_MAX + 16, "an option holds two strings");
