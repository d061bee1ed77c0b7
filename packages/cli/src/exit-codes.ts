/**
 * Exit codes of `hes`, one per error code, so scripts can branch without parsing messages.
 * 0 success, 1 an unexpected failure, 2 a bad command line; 10 and up follow HesError codes.
 * The table is a contract (README); new codes get new numbers, never reuse.
 */
import { HES_ERROR_CODES, type HesErrorCode } from "@hes/base";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export const EXIT_CODE_BY_HES_CODE: Readonly<Record<HesErrorCode, number>> = {
  HES_INVALID_ARGUMENT: 10,
  HES_NOT_FOUND: 11,
  HES_ALREADY_EXISTS: 12,
  HES_NOT_LEADER: 13,
  HES_FENCED: 14,
  HES_LEASE_HELD: 15,
  HES_CORRUPTION: 16,
  HES_IO: 17,
  HES_DISK_FAILED: 18,
  HES_NO_SPACE: 19,
  HES_BAD_FORMAT: 20,
  HES_TIMEOUT: 21,
  HES_ABORTED: 22,
  HES_UNAVAILABLE: 23,
  HES_CLOSED: 24,
  HES_PROTOCOL: 25,
  HES_TOO_LARGE: 26,
  HES_MISCOMPARE: 27,
  HES_QUORUM_LOST: 28,
  HES_UNSUPPORTED: 29,
  HES_PERMISSION_DENIED: 30,
  HES_BUSY: 31,
  HES_INTERNAL: 32,
};

/** What to do next, printed under the error (the base README's table, for an operator). */
export const NEXT_STEP_BY_HES_CODE: Readonly<Partial<Record<HesErrorCode, string>>> = {
  HES_NOT_FOUND: "check the name with `hes volume ls` (or the node id with `hes status`)",
  HES_ALREADY_EXISTS: "pick another name, or use the existing one",
  HES_UNAVAILABLE:
    "is the node running? start it with `hes node start --config FILE`, or point --endpoint at a running node",
  HES_TIMEOUT: "the cluster may have no leader (see `hes status`); retry when a majority is up",
  HES_NOT_LEADER: "retry; the client follows the leader hint",
  HES_PERMISSION_DENIED: "check --ca/--cert/--key (or the config's tls paths) and file modes",
  HES_NO_SPACE: "delete snapshots or volumes, or add disks",
  HES_QUORUM_LOST: "bring nodes back up; `hes status` shows which are down",
  HES_UNSUPPORTED: "this build does not implement it yet (see the cli README)",
  HES_LEASE_HELD:
    "the volume is open on another host: run this against that host's config, close it there, or open with takeover",
  HES_BUSY: "wait for the operation in progress, or unexport the volume (`hes unexport NAME`)",
};

export function exitCodeOf(code: HesErrorCode): number {
  return EXIT_CODE_BY_HES_CODE[code];
}

// Every code has an exit code, and no two share one (asserted at load).
const seen = new Set<number>();
for (const code of HES_ERROR_CODES) {
  const exit = EXIT_CODE_BY_HES_CODE[code];
  if (exit === undefined || exit < 10 || seen.has(exit)) {
    throw new Error(`exit code table: ${code} → ${exit} is missing or duplicated`);
  }
  seen.add(exit);
}
