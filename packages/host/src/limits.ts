/**
 * Limits of one host's composition. Every value says why; relationships are asserted at load.
 */
import { assert } from "@hes/base";

/** Node and CA certificates from `hes cluster init`: long enough for a lab, short of forever. */
export const CERT_VALIDITY_DAYS = 825;
/** Nodes `hes cluster init` will lay out: the design targets 3 to ~16 hosts; a little room. */
export const CLUSTER_INIT_NODES_MAX = 32;
/** Ports `hes cluster init` assigns per node: control, data, NBD, metrics. */
export const PORTS_PER_NODE = 4;
/** Highest base port so that every node's ports stay below 65536. */
export const BASE_PORT_MAX = 65_535 - CLUSTER_INIT_NODES_MAX * PORTS_PER_NODE;
/** A config file is a few KiB; refusing more keeps a wrong path (a disk image) from loading. */
export const CONFIG_FILE_BYTES_MAX = 1024 * 1024;
/** Disks per host: a 2U server holds 24 bays; beyond that is a mistake in the config. */
export const DISKS_PER_HOST_MAX = 64;
/** Volumes open at once on one host: bounds memory and the metrics label set (cardinality). */
export const OPEN_VOLUMES_MAX = 256;
/** NBD exports at once on one host: one per open volume at most. */
export const EXPORTS_MAX = OPEN_VOLUMES_MAX;
/** How long stop() lets in-flight NBD requests finish before it fails them. */
export const STOP_DRAIN_MS = 5_000;
/** How long stop() lets gRPC calls end by themselves; peers' Raft streams never do. */
export const GRPC_SHUTDOWN_GRACE_MS = 1_000;
/** Concurrent HTTP connections to the metrics endpoint (scrapers are few). */
export const METRICS_CONNECTIONS_MAX = 64;
/**
 * The broken build (HES_FAULT_ACK_BEFORE_WRITE=1) issues an acknowledged write this late: well
 * past the fault suite's kill-to-takeover time, so a kill -9 of the serving node loses it.
 */
export const FAULT_ACK_BEFORE_WRITE_DELAY_MS = 1_000;
/**
 * Queued lies at once (each holds a copy of its data): 4,096 × the 4 KiB history writes is
 * 16 MiB; past it writes are done for real, so a fio burst cannot grow memory without bound.
 */
export const FAULT_ACK_BEFORE_WRITE_PENDING_MAX = 4_096;

assert(EXPORTS_MAX <= OPEN_VOLUMES_MAX, "an export serves an open volume");
assert(BASE_PORT_MAX > 1024, "the port plan must fit above the privileged range");
