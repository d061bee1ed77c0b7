/**
 * `hes cluster init`: lays out a local cluster in one directory — a cluster CA, and per node a
 * config file, a certificate + key signed by the CA, and a data directory. Everything is written
 * into a scratch directory first and renamed into place at the end, so a failure leaves nothing.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, rmdir, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { HesError, type NodeId } from "@hes/base";
import { createClusterCa, issueNodeCertificate } from "./certs.js";
import { type HostConfig, hostConfigToJson, type PeerConfig } from "./config.js";
import { BASE_PORT_MAX, CLUSTER_INIT_NODES_MAX, PORTS_PER_NODE } from "./limits.js";

export interface InitClusterOptions {
  readonly nodes: number;
  /** Created; must not exist or be empty. */
  readonly dir: string;
  /** Node i (1-based) gets control base+i, data base+100+i, NBD base+200+i, metrics base+300+i. */
  readonly basePort?: number;
  /** Size of each node's one disk file (created sparse at first start). */
  readonly diskSizeBytes?: number;
  /** Plaintext between nodes (no certificates are made). Development only. */
  readonly insecureDevelopment?: boolean;
  /**
   * One IPv4 address per node (node i gets `hosts[i-1]`): its listen and peer addresses, and
   * named in its certificate (with 127.0.0.1 and localhost), for nodes on separate machines or
   * network namespaces. Default: every node on 127.0.0.1.
   */
  readonly hosts?: readonly string[];
}

export interface InitClusterResult {
  readonly clusterId: string;
  readonly dir: string;
  readonly configPaths: readonly string[];
  readonly caCertPath: string | undefined;
}

export const INIT_BASE_PORT_DEFAULT = 17_000;
export const INIT_DISK_SIZE_BYTES_DEFAULT = 4 * 2 ** 30;
const PORT_STRIDE = 100;

/** The file listing a cluster's nodes, written beside their directories. */
export const CLUSTER_FILE = "cluster.json";

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function checkHosts(hosts: readonly string[] | undefined, nodes: number): string[] {
  if (hosts === undefined) return Array.from({ length: nodes }, () => "127.0.0.1");
  if (!Array.isArray(hosts)) throw new TypeError("hosts must be an array of IPv4 addresses");
  if (hosts.length !== nodes) {
    throw new RangeError(`hosts must name one address per node (${nodes}), got ${hosts.length}`);
  }
  for (const host of hosts) {
    if (typeof host !== "string" || !IPV4.test(host)) {
      throw new RangeError(`hosts: ${JSON.stringify(host)} is not an IPv4 address`);
    }
  }
  return [...hosts];
}

function checkOptions(options: InitClusterOptions): Required<Omit<InitClusterOptions, "dir">> {
  const { nodes } = options;
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > CLUSTER_INIT_NODES_MAX) {
    throw new RangeError(
      `nodes must be an integer in [1, ${CLUSTER_INIT_NODES_MAX}], got ${nodes}`,
    );
  }
  const basePort = options.basePort ?? INIT_BASE_PORT_DEFAULT;
  const top = BASE_PORT_MAX - PORT_STRIDE * PORTS_PER_NODE;
  if (!Number.isInteger(basePort) || basePort < 1024 || basePort > top) {
    throw new RangeError(`basePort must be an integer in [1024, ${top}], got ${basePort}`);
  }
  const diskSizeBytes = options.diskSizeBytes ?? INIT_DISK_SIZE_BYTES_DEFAULT;
  if (!Number.isSafeInteger(diskSizeBytes) || diskSizeBytes < 2 ** 29) {
    throw new RangeError(`diskSizeBytes must be an integer ≥ 512 MiB, got ${diskSizeBytes}`);
  }
  const hosts = checkHosts(options.hosts, nodes);
  return {
    nodes,
    basePort,
    diskSizeBytes,
    insecureDevelopment: !!options.insecureDevelopment,
    hosts,
  };
}

async function ensureAbsentOrEmpty(dir: string): Promise<void> {
  const entries = await readdir(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return [];
    throw error;
  });
  if (entries.length > 0) {
    throw new HesError(
      "HES_ALREADY_EXISTS",
      `${dir} is not empty; pick a new directory (a cluster is never initialised over another)`,
    );
  }
}

/** The port plan and peer list of a fresh cluster (on loopback unless `hosts` is given). */
export function planLocalCluster(
  nodes: number,
  basePort: number,
  hosts?: readonly string[],
): PeerConfig[] {
  return Array.from({ length: nodes }, (_, i) => {
    const host = hosts?.[i] ?? "127.0.0.1";
    return {
      nodeId: (i + 1) as NodeId,
      control: { host, port: basePort + i + 1 },
      data: { host, port: basePort + PORT_STRIDE + i + 1 },
      failureDomain: `host-${i + 1}`,
    };
  });
}

export async function initCluster(options: InitClusterOptions): Promise<InitClusterResult> {
  const checked = checkOptions(options);
  const dir = resolve(options.dir);
  await ensureAbsentOrEmpty(dir);
  const scratch = join(dirname(dir), `.${basename(dir)}.init-${randomBytes(4).toString("hex")}`);
  const clusterId = randomBytes(16).toString("hex");
  const peers = planLocalCluster(checked.nodes, checked.basePort, checked.hosts);
  try {
    await mkdir(join(scratch, "ca"), { recursive: true });
    const ca = checked.insecureDevelopment ? undefined : createClusterCa(`hes ${clusterId} CA`);
    if (ca !== undefined) {
      await writeFile(join(scratch, "ca", "ca.pem"), ca.certPem);
      await writeFile(join(scratch, "ca", "ca.key"), ca.keyPem, { mode: 0o600 });
    }
    const configPaths: string[] = [];
    for (const peer of peers) {
      const nodeDir = join(scratch, `node-${peer.nodeId}`);
      await mkdir(join(nodeDir, "tls"), { recursive: true, mode: 0o700 });
      await mkdir(join(nodeDir, "data"), { recursive: true });
      if (ca !== undefined) {
        const pair = issueNodeCertificate(ca, {
          commonName: `hes-node-${peer.nodeId}`,
          dnsNames: ["localhost"],
          ipAddresses: [...new Set(["127.0.0.1", peer.control.host])],
        });
        await writeFile(join(nodeDir, "tls", "ca.pem"), ca.certPem);
        await writeFile(join(nodeDir, "tls", "node.pem"), pair.certPem);
        await writeFile(join(nodeDir, "tls", "node.key"), pair.keyPem, { mode: 0o600 });
      }
      const config: HostConfig = {
        clusterId,
        nodeId: peer.nodeId,
        failureDomain: peer.failureDomain,
        dataDir: "data",
        listen: {
          control: peer.control,
          data: peer.data,
          nbd: { host: peer.control.host, port: checked.basePort + 2 * PORT_STRIDE + peer.nodeId },
          metrics: {
            host: peer.control.host,
            port: checked.basePort + 3 * PORT_STRIDE + peer.nodeId,
          },
        },
        peers,
        disks: [{ path: "data/disk-0.img", sizeBytes: checked.diskSizeBytes }],
        ...(ca === undefined
          ? { insecureDevelopment: true }
          : {
              tls: { caPath: "tls/ca.pem", certPath: "tls/node.pem", keyPath: "tls/node.key" },
            }),
      };
      const body = `${JSON.stringify(hostConfigToJson(config), null, 2)}\n`;
      await writeFile(join(nodeDir, "config.json"), body);
      configPaths.push(join(dir, `node-${peer.nodeId}`, "config.json"));
    }
    const listing = {
      clusterId,
      nodes: peers.map((peer, i) => ({ nodeId: peer.nodeId, config: configPaths[i] })),
    };
    await writeFile(join(scratch, CLUSTER_FILE), `${JSON.stringify(listing, null, 2)}\n`);
    await rmdir(dir).catch(() => undefined); // an empty directory given by the caller
    await rename(scratch, dir);
    const caCertPath = ca === undefined ? undefined : join(dir, "ca", "ca.pem");
    return { clusterId, dir, configPaths, caCertPath };
  } catch (error) {
    await rm(scratch, { recursive: true, force: true });
    throw error;
  }
}
