/**
 * @hes/host: Composes one hypervisor host: disks, Raft member, cluster map, replica service, volumes, NBD exports and metrics. What a host agent imports.
 *
 * Not built yet: this package exports nothing until its issue lands (see README.md).
 */
export {};
