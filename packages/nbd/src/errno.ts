/**
 * The one place device errors become NBD error values (STYLE §5: map codes once per edge).
 */
import { type HesErrorCode, isHesError } from "@hes/base";
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM } from "./protocol.js";

/**
 * HesError code → NBD error. Codes not listed are EIO: the client (a guest kernel, qemu)
 * then reports an IO error for that request, which is the honest answer when the device
 * could not do it for a reason the guest cannot fix.
 */
export const NBD_ERRNO_BY_CODE: Readonly<Partial<Record<HesErrorCode, number>>> = {
  HES_INVALID_ARGUMENT: NBD_EINVAL,
  HES_NO_SPACE: NBD_ENOSPC,
  HES_FENCED: NBD_EPERM,
  HES_PERMISSION_DENIED: NBD_EPERM,
  HES_UNSUPPORTED: NBD_ENOTSUP,
};

/**
 * The NBD error for a failed device call. A RangeError or TypeError means the device refused
 * the request's arguments (EINVAL); anything that is not a HesError is EIO.
 */
export function nbdErrnoOf(error: unknown): number {
  if (isHesError(error)) return NBD_ERRNO_BY_CODE[error.code] ?? NBD_EIO;
  if (error instanceof RangeError || error instanceof TypeError) return NBD_EINVAL;
  return NBD_EIO;
}
