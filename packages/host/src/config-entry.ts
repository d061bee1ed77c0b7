/**
 * `@hes/host/config`: a host's configuration and TLS material without the host itself (no
 * store, Raft, volumes or NBD). The `hes` admin commands load only this, so a command such as
 * `hes export --takeover` (a failover step) does not pay for loading the whole host.
 */
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
export { grpcChannelCredentials, loadTlsMaterial, type TlsMaterial } from "./tls.js";
