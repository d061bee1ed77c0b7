/**
 * The `hes` command line: parses and validates every flag, then calls @hes/host (node start,
 * cluster init) or a node's admin gRPC service (status, volumes). Errors print what went wrong
 * and what to do next, and the exit code follows the error code (exit-codes.ts, README).
 */
import { isHesError } from "@hes/base";
import { Command, CommanderError, Option } from "commander";
import { type AdminTarget, resolveAdminTarget, withAdmin, withHostService } from "./admin.js";
import {
  EXIT_FAILURE,
  EXIT_OK,
  EXIT_USAGE,
  exitCodeOf,
  NEXT_STEP_BY_HES_CODE,
} from "./exit-codes.js";
import { printSnapshots, printStatus, printVolume, printVolumes } from "./output.js";
import { parseInteger, parseName, parseNodeId, parseSize, UsageError } from "./units.js";

/** Where the CLI writes; tests pass their own. */
export interface CliIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly env: Readonly<Record<string, string | undefined>>;
}

const processIo: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  env: process.env,
};

/** Flags every cluster-facing command takes to find the cluster. */
function connectionOptions(command: Command): Command {
  return command
    .option("--config <file>", "a node config (default: $HES_CONFIG)")
    .option("--endpoint <host:port>", "a node's control address (with --ca/--cert/--key)")
    .option("--ca <file>", "cluster CA certificate (PEM)")
    .option("--cert <file>", "client certificate (PEM), signed by the cluster CA")
    .option("--key <file>", "client key (PEM)")
    .option("--insecure", "plaintext to --endpoint (development clusters only)")
    .option("--json", "machine-readable output");
}

function checkAddress(text: string, flag: string): string {
  if (!/^[A-Za-z0-9.-]+:\d{1,5}$/.test(text)) {
    throw new UsageError(`${flag}: ${JSON.stringify(text)}: write HOST:PORT`);
  }
  return text;
}

export function buildProgram(io: CliIo, exit: { code: number }): Command {
  const program = new Command("hes")
    .description("hes: hypervisor-embedded clustered block storage")
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .showHelpAfterError("(run with --help for usage)");
  const target = (opts: Record<string, unknown>): Promise<AdminTarget> =>
    resolveAdminTarget(opts, io.env);

  const cluster = program.command("cluster").description("lay out a cluster");
  cluster
    .command("init")
    .description("write node configs, a cluster CA and node certificates into DIR")
    .requiredOption("--nodes <n>", "number of nodes (1–32)")
    .requiredOption("--dir <dir>", "a new or empty directory")
    .option("--base-port <port>", "first port of the plan (default 17000)")
    .option("--disk-size <size>", "each node's disk file (default 4GiB)")
    .option("--insecure-development", "no certificates: plaintext between nodes")
    .option(
      "--hosts <list>",
      "one IPv4 address per node, comma-separated: its listen/peer address, named in its " +
        "certificate (default: all on 127.0.0.1)",
    )
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      const { initCluster } = await import("@hes/host");
      const hosts = opts.hosts === undefined ? undefined : String(opts.hosts).split(",");
      const result = await initCluster({
        nodes: parseInteger(opts.nodes, "--nodes", 1, 32),
        dir: opts.dir,
        ...(opts.basePort === undefined
          ? {}
          : { basePort: parseInteger(opts.basePort, "--base-port", 1024, 65_000) }),
        ...(opts.diskSize === undefined
          ? {}
          : { diskSizeBytes: parseSize(opts.diskSize, "--disk-size") }),
        insecureDevelopment: !!opts.insecureDevelopment,
        ...(hosts === undefined ? {} : { hosts }),
      });
      if (opts.json) return io.out(`${JSON.stringify(result)}\n`);
      io.out(`cluster ${result.clusterId}: ${result.configPaths.length} nodes in ${result.dir}\n`);
      for (const path of result.configPaths) io.out(`  hes node start --config ${path}\n`);
    });

  const node = program.command("node").description("run or administer nodes");
  node
    .command("start")
    .description("run a node until SIGTERM/SIGINT")
    .option("--config <file>", "the node's config (default: $HES_CONFIG)")
    .option("--id <id>", "node id (without --config)")
    .option("--data-dir <dir>", "data directory (without --config)")
    .option("--listen <host:port>", "control address (without --config)")
    .option("--data-listen <host:port>", "data-plane address (default: control port + 100)")
    .option("--peers <list>", "id=host:port,… every member's control address (without --config)")
    .option("--nbd-listen <host:port>", "default NBD TCP address")
    .option("--metrics-listen <host:port>", "Prometheus /metrics and /healthz address")
    .option("--insecure-development", "plaintext between nodes (flags mode has no certificates)")
    .action(async (opts) => {
      // Loaded here, not at the top: the other commands do not pay for pino and the host.
      const { nodeStart } = await import("./node-start.js");
      exit.code = await nodeStart(opts, io);
    });
  connectionOptions(node.command("drain").argument("<id>", "node id"))
    .option("--cancel", "stop draining")
    .action(async (id, o) => {
      const nodeId = parseNodeId(id);
      await withAdmin(await target(o), async (admin) => {
        await admin.drainNode({ nodeId, cancel: !!o.cancel }, { deadlineMs: 15_000 });
        const what = o.cancel ? "no longer draining" : "draining: its chunks move to other nodes";
        io.out(
          o.json
            ? `${JSON.stringify({ nodeId, draining: !o.cancel })}\n`
            : `node ${nodeId} ${what}\n`,
        );
      });
    });
  connectionOptions(node.command("remove").argument("<id>", "node id")).action(async (id, o) => {
    const nodeId = parseNodeId(id);
    await withAdmin(await target(o), async (admin) => {
      await admin.removeNode({ nodeId }, { deadlineMs: 15_000 });
      io.out(o.json ? `${JSON.stringify({ removed: nodeId })}\n` : `node ${nodeId} removed\n`);
    });
  });
  connectionOptions(node.command("add").description("register a new node (then start it)"))
    .requiredOption("--id <id>", "the new node's id")
    .requiredOption("--control <host:port>", "its control address")
    .requiredOption("--data <host:port>", "its data-plane address")
    .option("--failure-domain <name>", "rack or host group (default host-ID)")
    .action(async (o) => {
      const nodeId = parseNodeId(o.id, "--id");
      const request = {
        nodeId,
        controlAddress: checkAddress(o.control, "--control"),
        dataAddress: checkAddress(o.data, "--data"),
        failureDomain: o.failureDomain ?? `host-${nodeId}`,
      };
      await withAdmin(await target(o), async (admin) => {
        await admin.addNode(request, { deadlineMs: 15_000 });
        io.out(o.json ? `${JSON.stringify(request)}\n` : `node ${nodeId} added\n`);
      });
    });

  connectionOptions(program.command("status").description("cluster health")).action(async (o) => {
    await withAdmin(await target(o), async (admin) => {
      const { status } = await admin.getStatus({}, { deadlineMs: 10_000 });
      printStatus(io, status, !!o.json);
    });
  });

  const volume = program.command("volume").description("volumes");
  connectionOptions(volume.command("create").argument("<name>"))
    .requiredOption("--size <size>", "e.g. 10GiB")
    .addOption(new Option("--replicas <n>", "copies of each chunk").default("3"))
    .addOption(new Option("--chunk-size <size>", "placement unit").default("64MiB"))
    .action(async (name, o) => {
      const request = {
        name: parseName(name, "NAME"),
        sizeBytes: BigInt(parseSize(o.size, "--size")),
        replicas: parseInteger(o.replicas, "--replicas", 1, 5),
        chunkSizeBytes: BigInt(parseSize(o.chunkSize, "--chunk-size")),
      };
      await withAdmin(await target(o), async (admin) => {
        const { volume: created } = await admin.createVolume(request, { deadlineMs: 10_000 });
        printVolume(io, created, !!o.json);
      });
    });
  connectionOptions(volume.command("ls")).action(async (o) => {
    await withAdmin(await target(o), async (admin) => {
      const { volumes } = await admin.listVolumes({}, { deadlineMs: 10_000 });
      printVolumes(io, volumes, !!o.json);
    });
  });
  connectionOptions(volume.command("stat").argument("<name>")).action(async (name, o) => {
    const checked = parseName(name, "NAME");
    await withAdmin(await target(o), async (admin) => {
      const { volume: found } = await admin.getVolume({ name: checked }, { deadlineMs: 10_000 });
      printVolume(io, found, !!o.json);
    });
  });
  connectionOptions(volume.command("rm").argument("<name>")).action(async (name, o) => {
    const checked = parseName(name, "NAME");
    await withAdmin(await target(o), async (admin) => {
      await admin.deleteVolume({ name: checked }, { deadlineMs: 10_000 });
      io.out(o.json ? `${JSON.stringify({ deleted: checked })}\n` : `deleted ${checked}\n`);
    });
  });
  connectionOptions(volume.command("resize").argument("<name>"))
    .requiredOption("--size <size>", "the new size, e.g. 20GiB")
    .option("--allow-shrink", "allow a smaller size (data past it is lost)")
    .action(async (name, o) => {
      const request = {
        name: parseName(name, "NAME"),
        sizeBytes: BigInt(parseSize(o.size, "--size")),
        allowShrink: !!o.allowShrink,
      };
      await withAdmin(await target(o), async (admin) => {
        const { volume: resized } = await admin.resizeVolume(request, { deadlineMs: 15_000 });
        printVolume(io, resized, !!o.json);
      });
    });
  connectionOptions(volume.command("clone").argument("<source>").argument("<name>"))
    .requiredOption("--snapshot <snap>", "the source's snapshot to clone from")
    .action(async (source, name, o) => {
      const request = {
        sourceName: parseName(source, "SOURCE"),
        snapshotName: parseName(o.snapshot, "--snapshot"),
        name: parseName(name, "NAME"),
      };
      await withAdmin(await target(o), async (admin) => {
        const { volume: cloned } = await admin.cloneVolume(request, { deadlineMs: 15_000 });
        printVolume(io, cloned, !!o.json);
      });
    });

  const snapshot = program.command("snapshot").description("snapshots");
  connectionOptions(snapshot.command("create").argument("<volume>").argument("<snapshot>")).action(
    async (volumeName, snap, o) => {
      const request = {
        volumeName: parseName(volumeName, "VOLUME"),
        name: parseName(snap, "SNAPSHOT"),
      };
      // The node that --config/--endpoint names drains the volume's IO and pins its replicas:
      // it must be the host that has the volume open, or the volume must be open nowhere.
      const found = await target(o);
      await withHostService(found, (client) =>
        client.createSnapshotOnHost(
          { volumeName: request.volumeName, snapshotName: request.name },
          { deadlineMs: 60_000 },
        ),
      );
      await withAdmin(found, async (admin) => {
        const { snapshots } = await admin.listSnapshots(
          { volumeName: request.volumeName },
          { deadlineMs: 15_000 },
        );
        printSnapshots(
          io,
          snapshots.filter((s) => s.name === request.name),
          !!o.json,
        );
      });
    },
  );
  connectionOptions(snapshot.command("rm").argument("<volume>").argument("<snapshot>")).action(
    async (volumeName, snap, o) => {
      const request = {
        volumeName: parseName(volumeName, "VOLUME"),
        name: parseName(snap, "SNAPSHOT"),
      };
      await withAdmin(await target(o), async (admin) => {
        await admin.deleteSnapshot(request, { deadlineMs: 15_000 });
        io.out(o.json ? `${JSON.stringify({ deleted: request })}\n` : `deleted ${snap}\n`);
      });
    },
  );
  connectionOptions(snapshot.command("ls").argument("<volume>")).action(async (volumeName, o) => {
    const request = { volumeName: parseName(volumeName, "VOLUME") };
    await withAdmin(await target(o), async (admin) => {
      const { snapshots } = await admin.listSnapshots(request, { deadlineMs: 15_000 });
      printSnapshots(io, snapshots, !!o.json);
    });
  });
  connectionOptions(
    snapshot
      .command("rollback")
      .description("make the volume's head equal to the snapshot (the volume must be closed)")
      .argument("<volume>")
      .argument("<snapshot>"),
  ).action(async (volumeName, snap, o) => {
    const request = {
      volumeName: parseName(volumeName, "VOLUME"),
      snapshotName: parseName(snap, "SNAPSHOT"),
    };
    // The node that --config/--endpoint names opens the volume, rolls it back and closes it.
    await withHostService(await target(o), (client) =>
      client.rollbackSnapshot(request, { deadlineMs: 120_000 }),
    );
    io.out(
      o.json
        ? `${JSON.stringify({ volume: request.volumeName, rolledBackTo: request.snapshotName })}\n`
        : `${request.volumeName} rolled back to ${request.snapshotName}\n`,
    );
  });

  connectionOptions(program.command("export").argument("<name>"))
    .description("serve a volume over NBD from the node that --config/--endpoint names")
    .requiredOption("--nbd <target>", "unix:PATH or tcp:127.0.0.1:PORT (on that node)")
    .option("--takeover", "take the volume over if another host has it open")
    .action(async (name, o) => {
      const request = {
        name: parseName(name, "NAME"),
        nbdTarget: formatNbdTarget(parseNbdTarget(o.nbd)),
        takeover: !!o.takeover,
      };
      const found = await target(o);
      const { address } = await withHostService(found, (client) =>
        client.exportVolume(request, { deadlineMs: 30_000 }),
      );
      io.out(
        o.json ? `${JSON.stringify({ name, address })}\n` : `${name} exported at ${address}\n`,
      );
      const path = address.startsWith("unix:") ? address.slice(5) : undefined;
      if (!o.json && path !== undefined) {
        io.out(`  qemu: -drive file=nbd+unix:///${name}?socket=${path},format=raw\n`);
      }
    });
  connectionOptions(program.command("unexport").argument("<name>"))
    .description("end a volume's NBD export on that node and close the volume there")
    .action(async (name, o) => {
      const checked = parseName(name, "NAME");
      await withHostService(await target(o), (client) =>
        client.unexportVolume({ name: checked }, { deadlineMs: 30_000 }),
      );
      io.out(o.json ? `${JSON.stringify({ unexported: checked })}\n` : `${checked} closed\n`);
    });
  return program;
}

function formatNbdTarget(target: { unix: string } | { tcp: string }): string {
  return "unix" in target ? `unix:${target.unix}` : `tcp:${target.tcp}`;
}

export function parseNbdTarget(text: string): { unix: string } | { tcp: string } {
  if (text.startsWith("unix:") && text.length > 5) return { unix: text.slice(5) };
  if (/^tcp:[A-Za-z0-9.-]+:\d{1,5}$/.test(text)) return { tcp: text.slice(4) };
  throw new UsageError(`--nbd: ${JSON.stringify(text)}: write unix:/path/to.sock or tcp:HOST:PORT`);
}

/** Runs `hes` with `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const exit = { code: EXIT_OK };
  const program = buildProgram(io, exit);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return exit.code;
  } catch (error) {
    return reportError(io, error);
  }
}

function reportError(io: CliIo, error: unknown): number {
  if (error instanceof CommanderError) {
    // Help and version exit 0; commander already printed its message for usage errors.
    return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  }
  if (error instanceof UsageError || error instanceof RangeError || error instanceof TypeError) {
    io.err(`hes: ${error.message}\n`);
    return EXIT_USAGE;
  }
  if (isHesError(error)) {
    io.err(`hes: ${error.message}\n`);
    const next = NEXT_STEP_BY_HES_CODE[error.code];
    if (next !== undefined) io.err(`  next: ${next}\n`);
    return exitCodeOf(error.code);
  }
  io.err(`hes: unexpected failure: ${error instanceof Error ? error.stack : String(error)}\n`);
  return EXIT_FAILURE;
}
