/**
 * @hes/host: composes one hypervisor host — disks, the cluster member, the replica service,
 * volumes, NBD exports and metrics — and lays out local clusters (`initCluster`). What a host
 * agent imports. See README.md for what is composed for real and what still waits.
 */
export {
  type CertificatePair,
  createClusterCa,
  issueNodeCertificate,
  type NodeCertificateSubject,
} from "./certs.js";
export { clusterComponents } from "./compose.js";
export {
  type DiskConfig,
  formatHostPort,
  type HostConfig,
  type HostPort,
  hostConfigToJson,
  loadHostConfig,
  type PeerConfig,
  parseHostPort,
  type TlsPaths,
  validateHostConfig,
} from "./config.js";
export {
  ackBeforeWriteDevice,
  anyHostFault,
  type BrokenDevice,
  type HostFaults,
  hostFaultsFromEnv,
} from "./fault-hooks.js";
export {
  type ExportTarget,
  Host,
  type HostComponents,
  type HostContext,
  type HostMember,
  type HostOptions,
  type HostStatus,
  type OpenedVolume,
  parseExportTarget,
} from "./host.js";
export {
  CLUSTER_FILE,
  INIT_BASE_PORT_DEFAULT,
  INIT_DISK_SIZE_BYTES_DEFAULT,
  type InitClusterOptions,
  type InitClusterResult,
  initCluster,
  planLocalCluster,
} from "./init-cluster.js";
export * as hostLimits from "./limits.js";
export {
  type Health,
  HostMetrics,
  type IoKind,
  type MemberGauges,
  MetricsServer,
  meteredDevice,
} from "./metrics.js";
export { HOST_NODE_FLAGS, heapSizedForStorage } from "./node-flags.js";
export {
  dataPlaneClientTls,
  dataPlaneServerTls,
  grpcChannelCredentials,
  grpcServerCredentials,
  loadTlsMaterial,
  type TlsMaterial,
} from "./tls.js";
