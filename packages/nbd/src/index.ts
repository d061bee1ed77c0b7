/**
 * @hes/nbd: an NBD server (fixed newstyle, structured replies, base:allocation block status,
 * STARTTLS) exporting any BlockDevice over unix sockets or TCP.
 */
export { NBD_ERRNO_BY_CODE, nbdErrnoOf } from "./errno.js";
export * from "./limits.js";
export {
  isLoopbackHost,
  type NbdBoundAddress,
  type NbdExportOptions,
  type NbdListenAddress,
  NbdServer,
  type NbdServerOptions,
  type NbdServerStats,
  type NbdTlsOptions,
} from "./server.js";
