/**
 * @hes/cli: The hes command: start a node, administer volumes and snapshots, status.
 *
 * Not built yet: this package exports nothing until its issue lands (see README.md).
 */
export {};
