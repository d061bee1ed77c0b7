/**
 * Operating errors with stable codes.
 *
 * A code is a contract (documented in this package's README: when it happens, what to do);
 * a message is for people and may change. Callers branch on `code` with `isHesError`, which is
 * duck-typed on `name` and `code` so that errors survive being passed between copies of this
 * package and across process boundaries (rebuilt from a wire status).
 *
 * Bugs are not operating errors: they go through `assert` and crash.
 */

/** Every stable error code. Add codes at the end; never rename or reuse one. */
export const HES_ERROR_CODES = [
  /** The request itself is wrong (range, size, alignment, id, malformed message). */
  "HES_INVALID_ARGUMENT",
  /** The named object (volume, snapshot, chunk, node) does not exist. */
  "HES_NOT_FOUND",
  /** An object of that name or id already exists. */
  "HES_ALREADY_EXISTS",
  /** This Raft member is not the leader; `details.leaderHint` names the one it knows of. */
  "HES_NOT_LEADER",
  /** The writer's epoch was superseded; a newer owner holds the volume. Stop writing. */
  "HES_FENCED",
  /** The volume is owned elsewhere and the caller did not ask for takeover. */
  "HES_LEASE_HELD",
  /** Stored or transmitted data failed its checksum; the bytes were not returned. */
  "HES_CORRUPTION",
  /** The device returned an IO error (EIO); the operation did not complete. */
  "HES_IO",
  /** The disk was taken out of service after a failed sync; nothing further is accepted. */
  "HES_DISK_FAILED",
  /** Not enough space to accept the write; nothing was stored. */
  "HES_NO_SPACE",
  /** The disk or file holds an unknown format, another cluster's data, or a newer version. */
  "HES_BAD_FORMAT",
  /** A deadline passed before the operation completed; its effect is unknown. */
  "HES_TIMEOUT",
  /** The caller's AbortSignal fired; the operation's effect is unknown. */
  "HES_ABORTED",
  /** The peer or service is unreachable or shutting down; safe operations may be retried. */
  "HES_UNAVAILABLE",
  /** The object was closed; no further calls are accepted. */
  "HES_CLOSED",
  /** The peer broke the wire protocol; the connection was closed. */
  "HES_PROTOCOL",
  /** A message or frame exceeded its size limit and was refused. */
  "HES_TOO_LARGE",
  /** A compare-and-write found data different from `expected`; nothing was written. */
  "HES_MISCOMPARE",
  /** Too few replicas are reachable to meet the write quorum; nothing was acknowledged. */
  "HES_QUORUM_LOST",
  /** The operation is valid but not supported by this peer or device. */
  "HES_UNSUPPORTED",
  /** The caller is not authenticated or not allowed to do this. */
  "HES_PERMISSION_DENIED",
  /** A bounded resource is exhausted (queue, connections, open volumes); retry later. */
  "HES_BUSY",
  /** An unexpected failure in a peer; report it. Not used for bugs in this process. */
  "HES_INTERNAL",
] as const;

/** One stable error code. */
export type HesErrorCode = (typeof HES_ERROR_CODES)[number];

const CODE_SET: ReadonlySet<string> = new Set(HES_ERROR_CODES);

/** True when `value` is one of the stable codes. */
export function isHesErrorCode(value: unknown): value is HesErrorCode {
  return typeof value === "string" && CODE_SET.has(value);
}

/** Options for {@link HesError}. */
export interface HesErrorOptions {
  /** The lower-level error this one wraps. */
  readonly cause?: unknown;
  /** Machine-readable facts for the caller (for example `{ leaderHint: 2 }`). */
  readonly details?: Readonly<Record<string, unknown>>;
}

/**
 * An expected operating condition, with a stable `code`.
 * The message reads `[CODE] text` so logs and CLI output show the code.
 */
export class HesError extends Error {
  override readonly name = "HesError";
  readonly code: HesErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: HesErrorCode, message: string, options: HesErrorOptions = {}) {
    super(`[${code}] ${message}`, options.cause === undefined ? {} : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }

  /** The message without the `[CODE] ` prefix. */
  get text(): string {
    const prefix = `[${this.code}] `;
    return this.message.startsWith(prefix) ? this.message.slice(prefix.length) : this.message;
  }
}

/**
 * True when `err` is a HesError, optionally with one of `codes`.
 * Duck-typed (name and code), so it also recognises errors from another copy of this package.
 */
export function isHesError(err: unknown, ...codes: HesErrorCode[]): err is HesError {
  if (typeof err !== "object" || err === null) return false;
  const candidate = err as { name?: unknown; code?: unknown };
  if (candidate.name !== "HesError" || !isHesErrorCode(candidate.code)) return false;
  return codes.length === 0 || codes.includes(candidate.code);
}

/** Turns an AbortSignal's state into HES_ABORTED; call at the start of every abortable IO. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted === true) {
    throw new HesError("HES_ABORTED", `${what}: aborted by the caller`, { cause: signal.reason });
  }
}
