/**
 * A host's configuration: the JSON file `hes cluster init` writes per node and `hes node start
 * --config` reads, and its validation. Every error names the field and what was expected, and
 * validation happens before anything is opened or bound.
 */
import { dirname, isAbsolute, resolve } from "node:path";
import { HesError, type NodeId } from "@hes/base";
import { CONFIG_FILE_BYTES_MAX, DISKS_PER_HOST_MAX } from "./limits.js";

/** A TCP listen or dial address. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** A cluster member as every node knows it. */
export interface PeerConfig {
  readonly nodeId: NodeId;
  readonly control: HostPort;
  readonly data: HostPort;
  readonly failureDomain: string;
}

/** One disk (a file, created sparse at `sizeBytes`, or a block device). */
export interface DiskConfig {
  readonly path: string;
  readonly sizeBytes: number;
}

/** PEM file paths for mutual TLS between nodes (absolute after validation). */
export interface TlsPaths {
  readonly caPath: string;
  readonly certPath: string;
  readonly keyPath: string;
}

export interface HostConfig {
  /** Stamped on every disk; a disk of another cluster is refused (HES_BAD_FORMAT). */
  readonly clusterId: string;
  readonly nodeId: NodeId;
  readonly failureDomain: string;
  /** Absolute: disks, index databases and Raft state live under it unless given elsewhere. */
  readonly dataDir: string;
  readonly listen: {
    /** gRPC: Raft, cluster map, admin. */
    readonly control: HostPort;
    /** The chunk-replica data plane. */
    readonly data: HostPort;
    /** Default TCP address for `hes export --nbd tcp:` when none is given. */
    readonly nbd?: HostPort;
    /** Prometheus `/metrics` and `/healthz` (plain HTTP, loopback by default). */
    readonly metrics?: HostPort;
  };
  /** Every member, this node included. */
  readonly peers: readonly PeerConfig[];
  readonly disks: readonly DiskConfig[];
  /** Required unless `insecureDevelopment` is true. */
  readonly tls?: TlsPaths;
  /** Plaintext gRPC and data plane. Only for development on one machine. */
  readonly insecureDevelopment?: boolean;
}

type Json = Record<string, unknown>;

function fail(field: string, expected: string, got: unknown): never {
  const shown = JSON.stringify(got) ?? String(got);
  throw new RangeError(`config.${field}: expected ${expected}, got ${shown.slice(0, 80)}`);
}

function objectAt(raw: unknown, field: string): Json {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail(field, "an object", raw);
  return raw as Json;
}

function stringAt(raw: unknown, field: string, maxLength = 4096): string {
  if (typeof raw !== "string" || raw.length === 0 || raw.length > maxLength) {
    fail(field, `a non-empty string of at most ${maxLength} characters`, raw);
  }
  return raw;
}

function nodeIdAt(raw: unknown, field: string): NodeId {
  if (typeof raw !== "number" || !Number.isSafeInteger(raw) || raw < 1 || raw >= 2 ** 32) {
    fail(field, "a node id, an integer in [1, 2^32)", raw);
  }
  return raw as NodeId;
}

/** Parses "host:port" (IPv4 or a name; port 0–65535) or an object `{ host, port }`. */
export function parseHostPort(raw: unknown, field: string): HostPort {
  if (typeof raw === "string") {
    const match = /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(raw);
    if (match?.[1] === undefined || match[2] === undefined) fail(field, '"host:port"', raw);
    return checkPort({ host: match[1], port: Number(match[2]) }, field, raw);
  }
  const object = objectAt(raw, field);
  const host = stringAt(object.host, `${field}.host`, 253);
  return checkPort({ host, port: object.port as number }, field, raw);
}

function checkPort(address: HostPort, field: string, raw: unknown): HostPort {
  const { port } = address;
  if (!Number.isInteger(port) || port < 0 || port > 65_535)
    fail(field, "a port in [0, 65535]", raw);
  return address;
}

export function formatHostPort(address: HostPort): string {
  return `${address.host}:${address.port}`;
}

function pathAt(raw: unknown, field: string, baseDir: string): string {
  const path = stringAt(raw, field);
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

/**
 * Checks a parsed config file and resolves its relative paths against `baseDir` (the file's
 * directory). RangeError/TypeError naming the field on anything wrong.
 */
export function validateHostConfig(raw: unknown, baseDir: string): HostConfig {
  const config = objectAt(raw, "(root)");
  const nodeId = nodeIdAt(config.nodeId, "nodeId");
  const listen = objectAt(config.listen, "listen");
  const insecure = config.insecureDevelopment;
  if (insecure !== undefined && typeof insecure !== "boolean") {
    fail("insecureDevelopment", "true or false", insecure);
  }
  const peers = validatePeers(config.peers, nodeId);
  const disks = validateDisks(config.disks, baseDir);
  const dataDir = pathAt(config.dataDir, "dataDir", baseDir);
  let tls: TlsPaths | undefined;
  if (config.tls !== undefined) {
    const t = objectAt(config.tls, "tls");
    tls = {
      caPath: pathAt(t.caPath, "tls.caPath", baseDir),
      certPath: pathAt(t.certPath, "tls.certPath", baseDir),
      keyPath: pathAt(t.keyPath, "tls.keyPath", baseDir),
    };
  } else if (insecure !== true) {
    fail("tls", "certificate paths (or insecureDevelopment: true for a dev cluster)", undefined);
  }
  const result: HostConfig = {
    clusterId: stringAt(config.clusterId, "clusterId", 128),
    nodeId,
    failureDomain: stringAt(config.failureDomain, "failureDomain", 128),
    dataDir,
    listen: {
      control: parseHostPort(listen.control, "listen.control"),
      data: parseHostPort(listen.data, "listen.data"),
      ...(listen.nbd === undefined ? {} : { nbd: parseHostPort(listen.nbd, "listen.nbd") }),
      ...(listen.metrics === undefined
        ? {}
        : { metrics: parseHostPort(listen.metrics, "listen.metrics") }),
    },
    peers,
    disks,
    ...(tls === undefined ? {} : { tls }),
    ...(insecure === true ? { insecureDevelopment: true } : {}),
  };
  return result;
}

function validatePeers(raw: unknown, self: NodeId): PeerConfig[] {
  if (!Array.isArray(raw) || raw.length === 0) fail("peers", "a non-empty array", raw);
  const seen = new Set<number>();
  const peers = raw.map((entry, i) => {
    const peer = objectAt(entry, `peers[${i}]`);
    const nodeId = nodeIdAt(peer.nodeId, `peers[${i}].nodeId`);
    if (seen.has(nodeId)) fail(`peers[${i}].nodeId`, "ids that appear once", nodeId);
    seen.add(nodeId);
    return {
      nodeId,
      control: parseHostPort(peer.control, `peers[${i}].control`),
      data: parseHostPort(peer.data, `peers[${i}].data`),
      failureDomain: stringAt(peer.failureDomain, `peers[${i}].failureDomain`, 128),
    };
  });
  if (!seen.has(self)) fail("peers", `a list that includes this node (${self})`, [...seen]);
  return peers;
}

function validateDisks(raw: unknown, baseDir: string): DiskConfig[] {
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > DISKS_PER_HOST_MAX) {
    fail("disks", `an array of 1 to ${DISKS_PER_HOST_MAX} disks`, raw);
  }
  return raw.map((entry, i) => {
    const disk = objectAt(entry, `disks[${i}]`);
    const sizeBytes = disk.sizeBytes;
    if (typeof sizeBytes !== "number" || !Number.isSafeInteger(sizeBytes) || sizeBytes < 2 ** 29) {
      fail(
        `disks[${i}].sizeBytes`,
        "an integer of at least 512 MiB (the store needs 4+ segments of 64 MiB)",
        sizeBytes,
      );
    }
    return { path: pathAt(disk.path, `disks[${i}].path`, baseDir), sizeBytes };
  });
}

/** The JSON form of a config (paths as given): what `hes cluster init` writes. */
export function hostConfigToJson(config: HostConfig): Json {
  const address = formatHostPort;
  return {
    clusterId: config.clusterId,
    nodeId: config.nodeId,
    failureDomain: config.failureDomain,
    dataDir: config.dataDir,
    listen: {
      control: address(config.listen.control),
      data: address(config.listen.data),
      ...(config.listen.nbd === undefined ? {} : { nbd: address(config.listen.nbd) }),
      ...(config.listen.metrics === undefined ? {} : { metrics: address(config.listen.metrics) }),
    },
    peers: config.peers.map((peer) => ({
      nodeId: peer.nodeId,
      control: address(peer.control),
      data: address(peer.data),
      failureDomain: peer.failureDomain,
    })),
    disks: config.disks,
    ...(config.tls === undefined ? {} : { tls: config.tls }),
    ...(config.insecureDevelopment === true ? { insecureDevelopment: true } : {}),
  };
}

/** Reads and validates a config file; relative paths in it are relative to the file. */
export async function loadHostConfig(path: string): Promise<HostConfig> {
  const { readFile, stat } = await import("node:fs/promises");
  const info = await stat(path).catch((error: unknown) => {
    throw new HesError("HES_NOT_FOUND", `config file ${path} cannot be read`, { cause: error });
  });
  if (!info.isFile() || info.size > CONFIG_FILE_BYTES_MAX) {
    throw new RangeError(`config file ${path}: not a regular file of at most 1 MiB`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (error) {
    throw new RangeError(`config file ${path}: not valid JSON (${(error as Error).message})`);
  }
  return validateHostConfig(raw, dirname(resolve(path)));
}
