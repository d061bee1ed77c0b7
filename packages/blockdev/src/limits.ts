/**
 * Limits of the in-process volume. Every value carries its reason; relationships are asserted
 * at load so a bad edit fails at import, not in production.
 */
import { assert } from "@hes/base";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Smallest addressable unit: guests with 512-byte sectors must work. */
export const VOLUME_LOGICAL_BLOCK_BYTES = 512;
/** The replicas' block: IO aligned to it avoids read-modify-write. */
export const VOLUME_BLOCK_BYTES = 4 * KiB;
/**
 * Largest single request: NBD clients send at most 32 MiB; larger requests would pin that much
 * memory per in-flight operation.
 */
export const VOLUME_REQUEST_BYTES_MAX = 32 * MiB;
/**
 * Largest piece sent to one replica in one call: a 1 MiB write is one call per replica. The
 * extent store accepts up to a quarter of its segment (at most 4 MiB), so replica stores must
 * use segments of at least 4 MiB (the default is 64 MiB).
 */
export const VOLUME_REPLICA_PIECE_BYTES = 1 * MiB;
/**
 * Operations admitted into one volume at once (reads and writes). Past it, callers wait
 * (backpressure): memory per volume is bounded by this × the request size.
 */
export const VOLUME_INFLIGHT_OPS_MAX = 256;
/** Callers queued behind a full in-flight window; past it, HES_BUSY rather than growth. */
export const VOLUME_QUEUED_OPS_MAX = 4096;
/**
 * Per-replica deadline of one call (DESIGN: ≤ 2 s): a hung replica is reported and left out
 * instead of stalling the guest for the failure detector's whole window.
 */
export const VOLUME_REPLICA_DEADLINE_MS_DEFAULT = 2000;
export const VOLUME_REPLICA_DEADLINE_MS_MAX = 2000;
/** Chunks whose seal/reconcile state one open volume remembers (one entry per touched chunk). */
export const VOLUME_TOUCHED_CHUNKS_MAX = 1 << 20;
/** QoS buckets hold at most this many seconds of credit: a bounded burst after idling. */
export const QOS_BURST_SECONDS = 1;

assert(VOLUME_BLOCK_BYTES % VOLUME_LOGICAL_BLOCK_BYTES === 0, "blocks hold whole sectors");
assert(VOLUME_REPLICA_PIECE_BYTES % VOLUME_BLOCK_BYTES === 0, "pieces hold whole blocks");
assert(VOLUME_REQUEST_BYTES_MAX % VOLUME_BLOCK_BYTES === 0, "requests end on a block");
assert(
  VOLUME_REPLICA_DEADLINE_MS_DEFAULT <= VOLUME_REPLICA_DEADLINE_MS_MAX,
  "the default deadline keeps the DESIGN bound",
);
assert(VOLUME_INFLIGHT_OPS_MAX <= VOLUME_QUEUED_OPS_MAX, "the queue can hold a full window");

/**
 * Seqs an owner may issue while one of its mutations is still unanswered: every operation takes
 * at most 4 seqs (a partial head, a partial tail, the body; a repair or a chunk reconcile takes
 * one), and at most VOLUME_INFLIGHT_OPS_MAX operations plus 64 chunk preparations run at once.
 * Reconcile compares only blocks changed after (highest seq − this): older writes had all
 * completed, and completed writes are on every in-sync replica.
 */
export const VOLUME_RECONCILE_SEQ_WINDOW = 4 * (VOLUME_INFLIGHT_OPS_MAX + 64) * 2;
/** The lease is renewed (a new epoch) this many seqs before the epoch's counter runs out. */
export const VOLUME_SEQ_RENEW_MARGIN = 1 << 20;
assert(
  VOLUME_SEQ_RENEW_MARGIN > VOLUME_RECONCILE_SEQ_WINDOW,
  "renewal leaves room for in-flight ops",
);

/**
 * Attempts of one replica's seal while preparing a chunk. A peer that just restarted is often
 * still in its client's reconnect backoff (≤ 2 s) or answers on the second connect; a seal is
 * idempotent, and refusing a takeover for one refused connect leaves a volume down.
 */
export const VOLUME_SEAL_ATTEMPTS_MAX = 4;
/** Pause between seal attempts: longer than the data-plane client's longest backoff (2 s). */
export const VOLUME_SEAL_RETRY_MS = 750;

/**
 * How long a volume keeps trying to report a failed replica to the cluster map before the
 * write fails. A replica often fails because its node died, and that node may have been the
 * Raft leader: the report then meets a dead leader (HES_UNAVAILABLE) until an election (1–2 s
 * of silence, then a vote) picks another. 10 s covers an election with margin; a cluster
 * without quorum fails the write at this bound rather than hanging the guest.
 */
export const VOLUME_REPORT_DEADLINE_MS = 10_000;
/** Pause between report attempts: half a Raft tick, so a new leader is found quickly. */
export const VOLUME_REPORT_RETRY_MS = 50;
assert(VOLUME_REPORT_RETRY_MS < VOLUME_REPORT_DEADLINE_MS, "a report gets several attempts");

/**
 * How long close() waits for the map to take the lease release. A host stopped after its peers
 * has no quorum and would otherwise wait the map's whole proposal deadline (10 s) for nothing;
 * 3 s still covers one election (1–2 s) when close meets a leader change. When it runs out the
 * volume is closed anyway (every acknowledged write is durable on its replicas) and the lease
 * stays recorded in the map: the next owner must open with takeover, which fences this epoch.
 */
export const VOLUME_CLOSE_RELEASE_MS = 3000;
assert(VOLUME_CLOSE_RELEASE_MS < VOLUME_REPORT_DEADLINE_MS, "close gives up sooner than IO");

/** At most one "write to a filling or stale replica failed" line per node per this long: during
 * a rebuild every write to the filling replica can fail, and logging each one flooded the log. */
export const VOLUME_FOLLOWER_FAILURE_LOG_MS = 5_000;

/** Spans (≤ VOLUME_REPLICA_PIECE_BYTES each) a takeover's reconcile compares at once per
 * chunk: one checksum and one allocation request per replica each. */
export const VOLUME_RECONCILE_SPANS_IN_FLIGHT = 8;
