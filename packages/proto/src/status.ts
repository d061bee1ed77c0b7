/**
 * The one mapping between hes error codes and gRPC status codes (STYLE §5: map codes once at
 * each edge). The server also sends the exact hes code in trailing metadata, so a hes client
 * rebuilds the original HesError; the status code serves other gRPC clients and proxies.
 */
import { status as GrpcStatus } from "@grpc/grpc-js";
import type { HesErrorCode } from "@hes/base";

/** Trailing-metadata key carrying the hes error code. */
export const HES_CODE_METADATA_KEY = "hes-code";
/** Trailing-metadata key carrying the error's details as JSON. */
export const HES_DETAILS_METADATA_KEY = "hes-details";

/** hes code → gRPC status, for every code. */
export const GRPC_STATUS_BY_HES_CODE: Readonly<Record<HesErrorCode, GrpcStatus>> = {
  HES_INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  HES_NOT_FOUND: GrpcStatus.NOT_FOUND,
  HES_ALREADY_EXISTS: GrpcStatus.ALREADY_EXISTS,
  HES_NOT_LEADER: GrpcStatus.FAILED_PRECONDITION,
  HES_FENCED: GrpcStatus.FAILED_PRECONDITION,
  HES_LEASE_HELD: GrpcStatus.FAILED_PRECONDITION,
  HES_CORRUPTION: GrpcStatus.DATA_LOSS,
  HES_IO: GrpcStatus.INTERNAL,
  HES_DISK_FAILED: GrpcStatus.UNAVAILABLE,
  HES_NO_SPACE: GrpcStatus.RESOURCE_EXHAUSTED,
  HES_BAD_FORMAT: GrpcStatus.FAILED_PRECONDITION,
  HES_TIMEOUT: GrpcStatus.DEADLINE_EXCEEDED,
  HES_ABORTED: GrpcStatus.CANCELLED,
  HES_UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  HES_CLOSED: GrpcStatus.UNAVAILABLE,
  HES_PROTOCOL: GrpcStatus.INTERNAL,
  HES_TOO_LARGE: GrpcStatus.RESOURCE_EXHAUSTED,
  HES_MISCOMPARE: GrpcStatus.ABORTED,
  HES_QUORUM_LOST: GrpcStatus.UNAVAILABLE,
  HES_UNSUPPORTED: GrpcStatus.UNIMPLEMENTED,
  HES_PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
  HES_BUSY: GrpcStatus.RESOURCE_EXHAUSTED,
  HES_INTERNAL: GrpcStatus.INTERNAL,
};

/**
 * gRPC status → hes code, for errors that carry no hes code (raised by grpc-js itself, such as
 * a deadline, an unreachable server or a message over the size limit).
 */
export function hesCodeForGrpcStatus(code: GrpcStatus): HesErrorCode {
  switch (code) {
    case GrpcStatus.INVALID_ARGUMENT:
      return "HES_INVALID_ARGUMENT";
    case GrpcStatus.NOT_FOUND:
      return "HES_NOT_FOUND";
    case GrpcStatus.ALREADY_EXISTS:
      return "HES_ALREADY_EXISTS";
    case GrpcStatus.DEADLINE_EXCEEDED:
      return "HES_TIMEOUT";
    case GrpcStatus.CANCELLED:
      return "HES_ABORTED";
    case GrpcStatus.UNAVAILABLE:
      return "HES_UNAVAILABLE";
    case GrpcStatus.RESOURCE_EXHAUSTED:
      return "HES_TOO_LARGE";
    case GrpcStatus.UNIMPLEMENTED:
      return "HES_UNSUPPORTED";
    case GrpcStatus.PERMISSION_DENIED:
    case GrpcStatus.UNAUTHENTICATED:
      return "HES_PERMISSION_DENIED";
    case GrpcStatus.DATA_LOSS:
      return "HES_CORRUPTION";
    case GrpcStatus.ABORTED:
      return "HES_MISCOMPARE";
    default:
      return "HES_INTERNAL";
  }
}
