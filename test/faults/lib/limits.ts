/**
 * Every bound in the fault suite's machinery, each with its reason (STYLE.md §3).
 */

/** Bytes the proxy holds per direction of one connection before it stops reading the sender:
 * enough for a few 1 MiB data-plane frames, small enough that a stalled link is backpressure,
 * not memory growth. */
export const PROXY_BUFFERED_BYTES_MAX = 8 * 1024 * 1024;
/** Connections one proxy accepts: a cluster of 5 with a few pools each stays far below this. */
export const PROXY_CONNECTIONS_MAX = 256;
/** Delay the proxy may add to a chunk: beyond this, timeouts (not delay) are being tested. */
export const PROXY_DELAY_MS_MAX = 10_000;
/** Time strace gets to attach to every thread of the target before we call it failed. */
export const STRACE_ATTACH_TIMEOUT_MS = 10_000;
/** Bits one corruption call may flip: corruption tests want a few, not a shredded file. */
export const BIT_FLIPS_MAX = 4096;
/** Operations the history client records before it stops: bounds the checker's input. */
export const HISTORY_OPS_MAX = 200_000;
/** Blocks in the history client's hot set: small, so writers collide (the point), and the
 * per-block linearizability search stays cheap. */
export const HOT_BLOCKS_MAX = 1024;
/** How long one NBD request may take before its outcome is recorded as unknown. */
export const NBD_REQUEST_TIMEOUT_MS_DEFAULT = 5_000;
/** WGL search steps per block before the checker calls a history inconclusive. */
export const CHECKER_STEPS_PER_BLOCK_MAX = 2_000_000;
/** fio write phases per run (each after a crash ended the previous one), each in its own
 * region of the volume so a later phase never overwrites what an earlier one will verify. */
export const FIO_PHASES_MAX = 16;
/** Bytes of the volume each fio phase covers. */
export const FIO_PHASE_REGION_BYTES = 8 * 1024 * 1024;
/** Service must be back within this after a fault heals (issue 8: ≤ 10 s after a heal). */
export const SERVICE_BACK_MS_MAX = 10_000;
/**
 * A restarted node must print `node N up` within this: its store replay and Raft load take
 * ~1 s here; 30 s leaves room for a loaded 2-core machine without hiding a hang.
 */
export const NODE_START_MS_MAX = 30_000;
/** Failover target: kill of the serving node to the first acknowledged write (p99). */
export const FAILOVER_MS_P99_MAX = 3_000;
/**
 * Volume layout of a run: the history's hot set from 0, the service probe's block at 4 MiB
 * (in the same chunk as the hot set for any chunk ≥ 8 MiB, so "service is back" means the
 * chunk the workload uses takes writes again), fio's phases from 8 MiB.
 */
export const PROBE_OFFSET_BYTES = 4 * 1024 * 1024;
if (
  HOT_BLOCKS_MAX * 4096 > PROBE_OFFSET_BYTES ||
  PROBE_OFFSET_BYTES + 4096 > FIO_PHASE_REGION_BYTES
) {
  throw new Error("fault-suite layout overlaps: hot set, probe block and fio regions");
}

/**
 * How long a fault waits for a node with the role it targets (a replica still catching up from
 * the previous round has none): longer than a small volume's catch-up, shorter than a round.
 */
export const ROLE_WAIT_MS_MAX = 20_000;
