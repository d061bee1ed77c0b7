/**
 * How the CLI finds the cluster: `--config FILE` (or $HES_CONFIG) names a node config, whose
 * control address and certificates are used; or `--endpoint host:port` with `--ca/--cert/--key`
 * (or `--insecure` for a development cluster).
 */
import type * as grpc from "@grpc/grpc-js";
import { grpcChannelCredentials, loadHostConfig, loadTlsMaterial } from "@hes/host/config";
import { ClusterAdminService, createClient, HostService, type ServiceClientOf } from "@hes/proto";
import { UsageError } from "./units.js";

export interface AdminTarget {
  readonly address: string;
  readonly credentials: grpc.ChannelCredentials;
}

export type AdminClient = ServiceClientOf<typeof ClusterAdminService>;

export async function resolveAdminTarget(
  opts: Record<string, unknown>,
  env: Readonly<Record<string, string | undefined>>,
): Promise<AdminTarget> {
  const grpcJs = await import("@grpc/grpc-js");
  if (typeof opts.endpoint === "string") {
    if (!/^[A-Za-z0-9.-]+:\d{1,5}$/.test(opts.endpoint)) {
      throw new UsageError(`--endpoint: ${JSON.stringify(opts.endpoint)}: write HOST:PORT`);
    }
    if (opts.insecure === true) {
      return { address: opts.endpoint, credentials: grpcJs.credentials.createInsecure() };
    }
    const { ca, cert, key } = opts;
    if (typeof ca !== "string" || typeof cert !== "string" || typeof key !== "string") {
      throw new UsageError("--endpoint needs --ca, --cert and --key (or --insecure for dev)");
    }
    const material = await loadTlsMaterial({ caPath: ca, certPath: cert, keyPath: key });
    return { address: opts.endpoint, credentials: grpcChannelCredentials(material) };
  }
  const configPath = typeof opts.config === "string" ? opts.config : env.HES_CONFIG;
  if (configPath === undefined || configPath === "") {
    throw new UsageError(
      "which cluster? pass --config FILE (a node config from `hes cluster init`), set " +
        "HES_CONFIG, or pass --endpoint HOST:PORT with --ca/--cert/--key",
    );
  }
  const config = await loadHostConfig(configPath);
  const { host, port } = config.listen.control;
  const address = `${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`;
  if (config.tls === undefined) {
    return { address, credentials: grpcJs.credentials.createInsecure() };
  }
  const material = await loadTlsMaterial(config.tls);
  return { address, credentials: grpcChannelCredentials(material) };
}

function clientOptions(target: AdminTarget) {
  // Node certificates name localhost and 127.0.0.1; an IP as the TLS server name is not
  // allowed (RFC 6066), so the name checked against the certificate is localhost.
  const isIp = /^\d+\.\d+\.\d+\.\d+:/.test(target.address);
  return {
    credentials: target.credentials,
    ...(isIp ? { channelOptions: { "grpc.ssl_target_name_override": "localhost" } } : {}),
  };
}

/** Calls `run` with a HostService client of the node at `target`, then closes it. */
export async function withHostService<T>(
  target: AdminTarget,
  run: (client: ServiceClientOf<typeof HostService>) => Promise<T>,
): Promise<T> {
  const client = createClient(HostService, target.address, clientOptions(target));
  try {
    return await run(client);
  } finally {
    client.close();
  }
}

export async function withAdmin<T>(
  target: AdminTarget,
  run: (admin: AdminClient) => Promise<T>,
): Promise<T> {
  const admin = createClient(ClusterAdminService, target.address, clientOptions(target));
  try {
    return await run(admin);
  } finally {
    admin.close();
  }
}
