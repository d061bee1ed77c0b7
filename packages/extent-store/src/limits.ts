/**
 * Every bound of the extent store, each with its reason. Relationships are asserted at load, so
 * an edit that breaks one fails at once rather than in a rare corner at runtime.
 */
import { assert, DISK_BLOCK_SIZE_BYTES } from "@hes/base";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** The unit of addressing, checksums and IO: one 4 KiB block (the Disk's block). */
export const BLOCK_SIZE_BYTES = 4096;

/** Blocks covered by one index page: 1 MiB of a chunk, so a page is 4 KiB of metadata. */
export const PAGE_BLOCKS = 256;

/** Default chunk (placement unit) size, DESIGN.md's default. */
export const CHUNK_SIZE_BYTES_DEFAULT = 64 * MiB;
/** Smallest chunk: one index page. */
export const CHUNK_SIZE_BYTES_MIN = PAGE_BLOCKS * BLOCK_SIZE_BYTES;
/** Largest chunk: keeps per-chunk index arrays (pages per view) small. */
export const CHUNK_SIZE_BYTES_MAX = 1 * GiB;

/** Default segment (the unit of log space and of compaction) size. */
export const SEGMENT_SIZE_BYTES_DEFAULT = 64 * MiB;
/** Smallest segment: tests use 1 MiB segments to exercise rolls and compaction quickly. */
export const SEGMENT_SIZE_BYTES_MIN = 1 * MiB;
/** Largest segment: segment fill is kept in 32 bits and compaction reads whole segments. */
export const SEGMENT_SIZE_BYTES_MAX = 1 * GiB;

/** Bytes before the first segment: two superblock copies, then padding to a 1 MiB boundary. */
export const SEGMENTS_START_BYTES = 1 * MiB;

/** Disk block addresses are 32-bit in the index and the records, so a disk holds ≤ 16 TiB. */
export const DISK_BLOCKS_MAX = 2 ** 32 - 1;
/** Addresses 0 and 1 mean "hole" and "zeroes"; real data never lives there (superblocks do). */
export const ADDRESS_HOLE = 0;
export const ADDRESS_ZERO = 1;

/**
 * Largest single write. A write is one record and one record lives in one batch, which must fit
 * in a segment with room to spare; for small segments the bound is a quarter of a segment.
 */
export const WRITE_BYTES_MAX = 4 * MiB;
/** Data bytes in one batch: bounds one writev and the latency of the writers that share it. */
export const BATCH_DATA_BYTES_MAX = 8 * MiB;
/** Header bytes of one batch (record headers, batched ahead of the data). */
export const BATCH_HEADER_BYTES_MAX = 64 * KiB;
/** Records in one batch: bounds header size and the work done in one apply step. */
export const BATCH_ENTRIES_MAX = 512;

/** Records waiting behind the batch being written; past this, writers wait (backpressure). */
export const COMMIT_QUEUE_ENTRIES_MAX = 1024;
/** Data bytes waiting behind the batch being written; past this, writers wait. */
export const COMMIT_QUEUE_BYTES_MAX = 64 * MiB;
/** Writers that may wait for queue room; past this a write fails with HES_BUSY. */
export const COMMIT_WAITERS_MAX = 4096;

/** Log bytes written between index checkpoints: bounds replay work (and time) at open. */
export const CHECKPOINT_LOG_BYTES_DEFAULT = 256 * MiB;
/** Smallest checkpoint interval (tests use small ones to exercise checkpoint + replay). */
export const CHECKPOINT_LOG_BYTES_MIN = 1 * MiB;

/** Compaction copy rate when not urgent, so foreground IO keeps its latency. */
export const COMPACTION_BYTES_PER_SECOND_DEFAULT = 64 * MiB;
/** Free segments kept for compaction: foreground writes may not take the last ones. */
export const COMPACTION_RESERVE_SEGMENTS = 2;
/**
 * Bytes compaction gathers before one append (and its scan window): one pool buffer each.
 * Capped by the store's largest write (smaller with small segments).
 */
export const COMPACTION_PIECE_BYTES = 1 * MiB;
/** Background compaction starts when used space exceeds live data by this factor. */
export const COMPACTION_START_AMPLIFICATION = 1.25;
/** A segment is a victim only below this live ratio (copying fuller ones gains too little). */
export const COMPACTION_VICTIM_LIVE_RATIO_MAX = 0.9;
/** With no foreground writes for this long, compaction tidies up to the same victim ratio. */
export const COMPACTION_IDLE_MS = 500;

/** Reads during replay, scrub and export go in pieces of this size (bounded memory). */
export const SCAN_PIECE_BYTES = 1 * MiB;
/** Largest data piece an export yields. */
export const EXPORT_PIECE_BYTES_MAX = 1 * MiB;

/**
 * Sequence numbers (segment seqs and batch LSNs share one counter) reserved durably in the index
 * at a time; a new reservation is written when half is used, so appends rarely wait for it.
 */
export const SEQ_RESERVATION = 1 << 20;

/**
 * Batches in flight at once: the next batch is written while the previous one syncs, so CPU
 * work of its writers overlaps the IO. Replay tells a torn tail from corruption by each
 * batch's `durableLsn`, which is what makes more than one in flight safe.
 */
export const BATCHES_IN_FLIGHT_MAX = 2;

/** Longest cluster id, in UTF-8 bytes (it is stored in the superblock). */
export const CLUSTER_ID_BYTES_MAX = 64;

/** Disks per store: one process rarely has more, and placement scans them all. */
export const DISKS_MAX = 64;

assert(BLOCK_SIZE_BYTES === DISK_BLOCK_SIZE_BYTES, "store blocks are the disk's blocks");
assert(CHUNK_SIZE_BYTES_DEFAULT % (PAGE_BLOCKS * BLOCK_SIZE_BYTES) === 0, "whole pages");
assert(SEGMENTS_START_BYTES >= 2 * BLOCK_SIZE_BYTES, "room for two superblocks");
assert(WRITE_BYTES_MAX <= BATCH_DATA_BYTES_MAX, "a write must fit in one batch");
assert(
  WRITE_BYTES_MAX <= 8 * MiB,
  "a write's data is copied into one pool buffer on direct disks (arena size 8 MiB)",
);
assert(
  BATCH_HEADER_BYTES_MAX + BATCH_DATA_BYTES_MAX + BLOCK_SIZE_BYTES <= SEGMENT_SIZE_BYTES_DEFAULT,
  "a full batch plus the end-of-segment record fits in a default segment",
);
assert(COMMIT_QUEUE_BYTES_MAX >= BATCH_DATA_BYTES_MAX, "the queue holds at least one batch");
assert(COMPACTION_RESERVE_SEGMENTS >= 2, "compaction needs a segment to write into");
assert(COMPACTION_PIECE_BYTES <= WRITE_BYTES_MAX, "a piece is no larger than a write");
assert(COMPACTION_START_AMPLIFICATION < 1.5, "steady state must stay under the 1.5x target");
