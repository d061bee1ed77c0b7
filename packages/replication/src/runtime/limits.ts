/**
 * Bounds and defaults of the replication runtime (the cluster map hosted on Raft, its
 * forwarding, the admin service and the leader's loops), each with its reason (STYLE §3).
 * Kept apart from ../limits.ts (the map's own bounds) so the two evolve independently.
 */
import { assert } from "@hes/base";
import { GRACE_PERIOD_MS_DEFAULT, GRACE_PERIOD_MS_MIN, REBUILDS_INFLIGHT_MAX } from "../limits.js";

// ---- Proposals ----

/**
 * Proposals one member has in flight (its own and those it forwards). Each holds a promise,
 * a timer and at most one 256 KiB command; 1,024 of them is far more than a host's volumes,
 * movers and loops issue at once, and small beside Raft's own 65,536 waiters.
 */
export const PROPOSALS_IN_FLIGHT_MAX = 1024;

/**
 * Proposals a leader accepts from followers at once. Every member may forward up to its own
 * bound; the leader caps the sum so a storm of followers cannot queue unbounded work on it.
 */
export const FORWARDED_IN_FLIGHT_MAX = 4096;

/**
 * Default deadline of one proposal, forwarding and retries included: several election
 * timeouts (1–2 s each), so one leader change fits inside, but a cluster without quorum
 * answers HES_TIMEOUT within seconds rather than hanging its caller.
 */
export const PROPOSE_DEADLINE_MS_DEFAULT = 10_000;

/** Longest deadline a caller may ask for: beyond a minute a caller should retry itself. */
export const PROPOSE_DEADLINE_MS_MAX = 60_000;

/**
 * Wait between attempts when no leader is known or the leader moved. Half a Raft tick at
 * the default 100 ms: a new leader is noticed quickly without spinning.
 */
export const PROPOSE_RETRY_MS = 50;

/**
 * Applied outcomes remembered for followers whose forwarded proposal committed before the
 * leader's answer reached them (the follower may apply it first). A forwarded answer is
 * normally a few entries behind; 4,096 outcomes are ~1 MiB and cover seconds of load.
 */
export const APPLIED_OUTCOMES_KEPT = 4096;

// ---- Loops ----

/** How often every member heartbeats (issue 5: the grace period is counted in these). */
export const HEARTBEAT_INTERVAL_MS_DEFAULT = 1_000;

/** Fastest heartbeat: each is a Raft entry on every member; 10 per second per node is plenty. */
export const HEARTBEAT_INTERVAL_MS_MIN = 100;

/**
 * Nodes one liveness pass marks down. A leader that wrongly sees everyone silent (its own
 * clock jumped) marks at most this many per pass, and the next pass re-checks in map time.
 */
export const MARK_DOWN_PER_PASS_MAX = 4;

/** Cadence of the repair pass (planRepairs → ReplaceReplica and move cleanups). */
export const REPAIR_INTERVAL_MS_DEFAULT = 5_000;

/**
 * Repair commands one pass proposes. planRepairs already stops at the rebuild budget; this
 * keeps one pass's burst of proposals small beside the log's other traffic.
 */
export const REPAIR_ACTIONS_PER_PASS_MAX = 64;

/** Cadence of the rebalance pass (planRebalance → StartMove): balance is never urgent. */
export const REBALANCE_INTERVAL_MS_DEFAULT = 30_000;

/** Moves one rebalance pass starts (the map bounds moves in flight cluster-wide anyway). */
export const REBALANCE_MOVES_PER_PASS_MAX = 8;

/** Retry cadence of a member registering itself (addNode / updateNode) until it is in. */
export const REGISTER_RETRY_MS = 200;

/**
 * How long `stop()` lets calls on the member's own gRPC server finish before cutting them:
 * peers hold Raft streams open indefinitely, so a graceful shutdown alone may never end.
 */
export const SERVER_SHUTDOWN_GRACE_MS = 1_000;

// ---- Admin ----

/** Deadline of an admin call on the server side (a sync plus one proposal). */
export const ADMIN_DEADLINE_MS_DEFAULT = 15_000;

assert(
  HEARTBEAT_INTERVAL_MS_DEFAULT * 10 <= GRACE_PERIOD_MS_DEFAULT,
  "many default heartbeats fit in the default grace period: a few lost ones never mark a node down",
);
assert(
  HEARTBEAT_INTERVAL_MS_MIN * 2 <= GRACE_PERIOD_MS_MIN,
  "a cluster set to the shortest grace period can still heartbeat twice within it",
);
assert(REPAIR_ACTIONS_PER_PASS_MAX <= REBUILDS_INFLIGHT_MAX, "one pass within the rebuild budget");
assert(PROPOSALS_IN_FLIGHT_MAX <= FORWARDED_IN_FLIGHT_MAX, "one member's proposals fit the leader");
assert(PROPOSE_DEADLINE_MS_DEFAULT <= PROPOSE_DEADLINE_MS_MAX, "default deadline within max");
