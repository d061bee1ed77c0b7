/**
 * @hes/nbd: An NBD server (fixed newstyle, structured replies, block status) exporting any BlockDevice over a unix socket or TCP with TLS.
 *
 * Not built yet: this package exports nothing until its issue lands (see README.md).
 */
export {};
