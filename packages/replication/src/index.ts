/**
 * @hes/replication: The Raft-ordered cluster map (nodes, volumes, chunk placement, leases, epochs), the chunk-replica service and its client, rebuild, rebalance and scrub.
 *
 * Not built yet: this package exports nothing until its issue lands (see README.md).
 */
export {};
