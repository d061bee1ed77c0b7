/**
 * Every bound in @hes/raft, each with its reason. Relationships are asserted at load, so a
 * change that breaks one fails the first import rather than a run in production.
 */
import { assert } from "@hes/base";

/**
 * Largest data of one proposed entry. The cluster map's commands are small (a placement, a
 * lease); 1 MiB leaves room for batched commands while an append of many entries still fits
 * one gRPC message ({@link APPEND_BYTES_MAX} plus one entry is below the 16 MiB wire bound).
 */
export const ENTRY_DATA_BYTES_MAX = 1024 * 1024;

/**
 * Entries in one append message. Bounds the work a follower does per message and the size of
 * the message when entries are tiny (per-entry overhead dominates then).
 */
export const APPEND_ENTRIES_MAX_DEFAULT = 4096;

/**
 * Entry data in one append message (at least one entry is always sent, so a single large
 * entry still moves). 1 MiB keeps one message's serialisation under ~1 ms.
 */
export const APPEND_BYTES_MAX_DEFAULT = 1024 * 1024;

/**
 * Appends the leader keeps in flight to one follower in the replicate state (pipelining).
 * 256 covers a 64-deep client pipeline several times over without letting a slow follower
 * pin unbounded send buffers.
 */
export const INFLIGHT_APPENDS_MAX_DEFAULT = 256;

/** Entry bytes in flight to one follower: with 1 MiB appends, at most 8 outstanding at full size. */
export const INFLIGHT_BYTES_MAX_DEFAULT = 8 * 1024 * 1024;

/**
 * Data of entries the leader holds that are not yet committed. Past this, proposals fail fast
 * with HES_BUSY: a leader that cannot reach a quorum must not grow its log without bound.
 */
export const UNCOMMITTED_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;

/** Committed entry data handed to the state machine in one Ready (bounds one apply pass). */
export const APPLY_BYTES_MAX_DEFAULT = 16 * 1024 * 1024;

/**
 * ReadIndex requests waiting on the leader (for the first commit of its term, or for a
 * heartbeat quorum). Past this, readIndex fails fast with HES_BUSY.
 */
export const READ_REQUESTS_PENDING_MAX = 4096;

/** Members of one cluster (voters plus learners). The cluster map runs on 3 to ~16 hosts. */
export const MEMBERS_MAX = 64;

/**
 * Ticks a follower in the snapshot state may stay silent before the leader sends the
 * snapshot again (the transport reports no delivery failures; a lost snapshot must not stall
 * a follower for ever).
 */
export const SNAPSHOT_RETRY_TICKS_DEFAULT = 30;

/** Default election timeout in ticks (with 100 ms ticks: 1 s, the production default). */
export const ELECTION_TICKS_DEFAULT = 10;

/** Default heartbeat interval in ticks (100 ms with 100 ms ticks). */
export const HEARTBEAT_TICKS_DEFAULT = 1;

/** Default tick length of the driver. */
export const TICK_MS_DEFAULT = 100;

/**
 * Inbound messages queued between two Ready cycles of the driver. Past this, messages are
 * dropped (Raft retransmits), so a flood cannot grow memory while a write is in progress.
 */
export const INBOX_MESSAGES_MAX = 16_384;

/** Ticks the driver lets accumulate while a write is slow; later ones are dropped. */
export const PENDING_TICKS_MAX = 4;

/** Proposals waiting for their entry to be applied on one node. Past this: HES_BUSY. */
export const PROPOSALS_PENDING_MAX = 65_536;

/** Linearizable reads waiting on one node. Past this: HES_BUSY. */
export const READS_PENDING_MAX = 65_536;

/**
 * Applied entries between two raftSnapshots taken by the driver (log compaction). Each
 * raftSnapshot serialises the whole state machine, so this trades snapshot cost against the
 * log's length on disk and the replay time after a restart.
 */
export const SNAPSHOT_ENTRIES_INTERVAL_DEFAULT = 10_000;

/**
 * How long a membership change keeps retrying passing refusals (HES_BUSY: a new leader's
 * first commit, a change in flight, a learner catching up) before it gives up. A learner
 * catching up on a large log is the slow case; a minute covers a cluster map of ~100 MB.
 */
export const MEMBERSHIP_TIMEOUT_MS_DEFAULT = 60_000;

/** Messages queued to one peer by a transport before it drops (Raft retransmits). */
export const TRANSPORT_QUEUE_MESSAGES_MAX = 4096;

/** Messages of one gRPC batch (one SendRequest). */
export const TRANSPORT_BATCH_MESSAGES_MAX = 1024;

/** Delay before a gRPC transport reconnects to a peer whose stream failed (doubles to 1 s). */
export const TRANSPORT_RECONNECT_MS_MIN = 50;
export const TRANSPORT_RECONNECT_MS_MAX = 1000;

assert(HEARTBEAT_TICKS_DEFAULT < ELECTION_TICKS_DEFAULT, "heartbeats come well within an election");
assert(APPEND_BYTES_MAX_DEFAULT <= INFLIGHT_BYTES_MAX_DEFAULT, "one append fits the window");
assert(
  APPEND_BYTES_MAX_DEFAULT + ENTRY_DATA_BYTES_MAX + 64 * 1024 < 16 * 1024 * 1024,
  "an append always fits one control-plane message (CONTROL_MESSAGE_BYTES_MAX)",
);
assert(ENTRY_DATA_BYTES_MAX <= UNCOMMITTED_BYTES_MAX_DEFAULT, "one entry fits the backlog");
assert(SNAPSHOT_RETRY_TICKS_DEFAULT > ELECTION_TICKS_DEFAULT, "retry slower than an election");
assert(TRANSPORT_BATCH_MESSAGES_MAX <= TRANSPORT_QUEUE_MESSAGES_MAX, "a batch fits the queue");
assert(TRANSPORT_RECONNECT_MS_MIN < TRANSPORT_RECONNECT_MS_MAX, "backoff grows");
