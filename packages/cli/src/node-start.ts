/**
 * `hes node start`: builds a HostConfig from `--config` (or $HES_CONFIG) or from flags, starts
 * the Host, and stops it on SIGTERM/SIGINT. The CLI owns the process; the host library does not.
 */
import { join, resolve } from "node:path";
import {
  type HostConfig,
  type HostPort,
  loadHostConfig,
  parseHostPort,
  validateHostConfig,
} from "@hes/host/config";
import { pino } from "pino";
import type { CliIo } from "./main.js";
import { parseNodeId, UsageError } from "./units.js";

/** Flags mode: one disk file under the data dir, created sparse. */
const FLAGS_DISK_SIZE_BYTES = 4 * 2 ** 30;
/** Flags mode: the data plane listens this far above the control port unless given. */
const DATA_PORT_OFFSET = 100;

interface StartFlags {
  readonly config?: string;
  readonly id?: string;
  readonly dataDir?: string;
  readonly listen?: string;
  readonly dataListen?: string;
  readonly peers?: string;
  readonly nbdListen?: string;
  readonly metricsListen?: string;
  readonly insecureDevelopment?: boolean;
}

function withOffset(address: HostPort, offset: number): HostPort {
  return { host: address.host, port: address.port + offset };
}

/** "1=127.0.0.1:7101,2=127.0.0.1:7102" → peers (data ports at control + 100). */
function parsePeers(text: string): HostConfig["peers"] {
  return text.split(",").map((entry, i) => {
    const match = /^(\d+)=(.+)$/.exec(entry.trim());
    if (match?.[1] === undefined || match[2] === undefined) {
      throw new UsageError(`--peers: entry ${i + 1} ${JSON.stringify(entry)}: write ID=HOST:PORT`);
    }
    const control = parseHostPort(match[2], `--peers[${i}]`);
    const nodeId = parseNodeId(match[1], "--peers id") as HostConfig["nodeId"];
    return {
      nodeId,
      control,
      data: withOffset(control, DATA_PORT_OFFSET),
      failureDomain: `host-${nodeId}`,
    };
  });
}

function configFromFlags(flags: StartFlags): HostConfig {
  if (!flags.id || !flags.dataDir || !flags.listen || !flags.peers) {
    throw new UsageError(
      "hes node start needs --config FILE, or all of --id --data-dir --listen --peers",
    );
  }
  if (flags.insecureDevelopment !== true) {
    throw new UsageError(
      "flags mode has no certificates: add --insecure-development for a dev cluster, or use " +
        "`hes cluster init` and --config for mutual TLS",
    );
  }
  const nodeId = parseNodeId(flags.id, "--id");
  const control = parseHostPort(flags.listen, "--listen");
  const dataDir = resolve(flags.dataDir);
  const raw = {
    clusterId: "hes-flags-cluster",
    nodeId,
    failureDomain: `host-${nodeId}`,
    dataDir,
    listen: {
      control: flags.listen,
      data: flags.dataListen ?? `${control.host}:${control.port + DATA_PORT_OFFSET}`,
      ...(flags.nbdListen === undefined ? {} : { nbd: flags.nbdListen }),
      ...(flags.metricsListen === undefined ? {} : { metrics: flags.metricsListen }),
    },
    peers: parsePeers(flags.peers),
    disks: [{ path: join(dataDir, "disk-0.img"), sizeBytes: FLAGS_DISK_SIZE_BYTES }],
    insecureDevelopment: true,
  };
  return validateHostConfig(JSON.parse(JSON.stringify(raw)), process.cwd());
}

export async function nodeStart(flags: StartFlags, io: CliIo): Promise<number> {
  const configPath = flags.config ?? (flags.id === undefined ? io.env.HES_CONFIG : undefined);
  const config =
    configPath !== undefined && configPath !== ""
      ? await loadHostConfig(configPath)
      : configFromFlags(flags);
  const { Host, anyHostFault, hostFaultsFromEnv } = await import("@hes/host");
  const logger = pino({ level: io.env.HES_LOG_LEVEL ?? "info" }, pino.destination(2));
  const faults = hostFaultsFromEnv(io.env);
  if (anyHostFault(faults)) {
    io.err(
      `WARNING: DELIBERATELY BROKEN NODE (${JSON.stringify(faults)}): acknowledged writes ` +
        "will be lost. For the fault suite only.\n",
    );
  }
  const host = await Host.start(config, { logger, faults });
  const status = host.status();
  io.out(
    `node ${status.nodeId} up: control ${status.control}, data ${status.data}, metrics ` +
      `${status.metrics ?? "off"}\n`,
  );
  const missing = Object.entries(status.composed)
    .filter(([, present]) => !present)
    .map(([name]) => name);
  if (missing.length > 0) io.out(`not composed in this build: ${missing.join(", ")}\n`);
  const signal = await new Promise<NodeJS.Signals>((done) => {
    process.once("SIGTERM", () => done("SIGTERM"));
    process.once("SIGINT", () => done("SIGINT"));
  });
  io.out(`${signal}: stopping node ${status.nodeId}\n`);
  await host.stop();
  io.out(`node ${status.nodeId} stopped\n`);
  return 0;
}
