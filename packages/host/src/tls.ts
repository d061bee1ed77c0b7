/**
 * Mutual TLS material for a node: read once at start from the paths in its config, then turned
 * into grpc-js credentials (control plane) and node:tls options (data plane). Both ends present
 * a certificate and require the peer's to chain to the cluster CA.
 */
import { readFile } from "node:fs/promises";
import type { ConnectionOptions, TlsOptions } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { HesError } from "@hes/base";
import type { TlsPaths } from "./config.js";

export interface TlsMaterial {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

export async function loadTlsMaterial(paths: TlsPaths): Promise<TlsMaterial> {
  const read = async (path: string, field: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (error) {
      throw new HesError(
        "HES_PERMISSION_DENIED",
        `tls.${field}: cannot read ${path}; run \`hes cluster init\` or fix the path`,
        { cause: error },
      );
    }
  };
  return {
    ca: await read(paths.caPath, "caPath"),
    cert: await read(paths.certPath, "certPath"),
    key: await read(paths.keyPath, "keyPath"),
  };
}

/** gRPC server side: present our certificate, require and verify the client's. */
export function grpcServerCredentials(material: TlsMaterial): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(
    material.ca,
    [{ private_key: material.key, cert_chain: material.cert }],
    true,
  );
}

/** gRPC client side: verify the server against the CA and present our certificate. */
export function grpcChannelCredentials(material: TlsMaterial): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(material.ca, material.key, material.cert);
}

/** Data-plane (FrameServer) TLS: client certificates required (mutual TLS), TLS 1.2+. */
export function dataPlaneServerTls(material: TlsMaterial): TlsOptions {
  return {
    ca: material.ca,
    cert: material.cert,
    key: material.key,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.2",
  };
}

/** Data-plane (FrameClient) TLS towards a peer on `host`. */
export function dataPlaneClientTls(material: TlsMaterial): ConnectionOptions {
  return {
    ca: material.ca,
    cert: material.cert,
    key: material.key,
    minVersion: "TLSv1.2",
  };
}
