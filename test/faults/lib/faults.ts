/**
 * Faults as composable actions. Each fault resolves the nodes it acts on when injected (a
 * role such as "leader" depends on the cluster at that moment, so the resolution is logged,
 * not planned), does its damage, and returns the action that undoes it. The runner injects,
 * holds, heals and measures recovery; `flapping` composes a partition with time.
 */
import { statSync } from "node:fs";
import { join } from "node:path";
import type { Prng } from "@hes/base";
import {
  filesUnder,
  flipBits,
  restoreCopy,
  SmallFilesystem,
  SyscallFault,
  saveCopy,
  wipe,
} from "./disk-faults.js";
import { run } from "./exec.js";
import { NODE_START_MS_MAX, ROLE_WAIT_MS_MAX } from "./limits.js";
import { bridge, cutOneWay, heal, loss, partition } from "./net-faults.js";
import type { Role, Target } from "./target.js";
import type { Endpoint } from "./topology.js";

export interface FaultContext {
  readonly target: Target;
  readonly prng: Prng;
  readonly logDir: string;
  readonly workDir: string;
  /** How long the fault is held before healing (flapping uses it to pace itself). */
  readonly holdMs: number;
  note(message: string): void;
  /** Registers cleanup for the end of the run (e.g. unmounting a small filesystem). */
  atTeardown(cleanup: () => Promise<void>): void;
}

/** Undoes a fault; resolves when the undo is done (not when the system has recovered). */
export type Heal = () => Promise<void>;

export interface Fault {
  readonly name: string;
  /** Nodes the fault needs at least. */
  readonly nodesMin: number;
  /** Whether the node that serves the export may be killed by it (needs a failover). */
  readonly killsExporter: boolean;
  inject(context: FaultContext): Promise<Heal>;
}

const noop: Heal = async () => undefined;

/**
 * A node with `role`, waiting (bounded) while none has it: after the previous round a replica
 * may still be catching up, and a round is not failed for the cluster being busy recovering.
 */
async function pick(context: FaultContext, role: Role, exclude: number[] = []): Promise<number> {
  const deadline = performance.now() + ROLE_WAIT_MS_MAX;
  let node = await context.target.nodeWithRole(role, exclude);
  while (node === undefined && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    node = await context.target.nodeWithRole(role, exclude);
  }
  if (node === undefined) {
    throw new Error(`no node has role ${role} within ${ROLE_WAIT_MS_MAX} ms`);
  }
  context.note(`${role} is node ${node}`);
  return node;
}

async function killNode(context: FaultContext, node: number): Promise<void> {
  const process = context.target.process(node);
  if (process === undefined) return;
  const status = await process.kill9();
  context.note(`kill -9 node ${node} (pid ${process.pid}): ${JSON.stringify(status)}`);
  await context.target.failover(node);
}

async function restartNodes(context: FaultContext, nodes: readonly number[]): Promise<void> {
  for (const node of nodes) {
    if (context.target.process(node) !== undefined) continue;
    await context.target.restart(node);
    context.note(`restarted node ${node}`);
  }
}

function kill(name: string, roles: readonly Role[], killsExporter: boolean): Fault {
  return {
    name,
    nodesMin: roles.length,
    killsExporter,
    async inject(context) {
      const killed: number[] = [];
      for (const role of roles) {
        const node = await pick(context, role, killed);
        await killNode(context, node);
        killed.push(node);
      }
      return () => restartNodes(context, killed);
    },
  };
}

function killAll(): Fault {
  return {
    name: "kill-all",
    nodesMin: 1,
    killsExporter: true,
    async inject(context) {
      const nodes = [...context.target.nodeNumbers];
      await Promise.all(nodes.map((n) => context.target.process(n)?.kill9()));
      context.note(`kill -9 nodes ${nodes.join(",")} at once`);
      return () => restartNodes(context, nodes);
    },
  };
}

function pause(role: Role): Fault {
  return {
    name: `pause-${role}`,
    nodesMin: 1,
    killsExporter: false,
    async inject(context) {
      const node = await pick(context, role);
      const process = context.target.process(node);
      process?.signal("SIGSTOP");
      context.note(`SIGSTOP node ${node} for ${context.holdMs} ms`);
      return async () => {
        process?.signal("SIGCONT");
      };
    },
  };
}

function endpoints(context: FaultContext, nodes: readonly number[]): Endpoint[] {
  return nodes.map((n) => context.target.topology.node(n));
}

/** Isolates `isolated` (resolved by role) from every other node. */
function isolate(name: string, role: Role, extra: number): Fault {
  return {
    name,
    nodesMin: 3,
    killsExporter: false,
    async inject(context) {
      const first = await pick(context, role);
      const side = [first];
      for (let i = 0; i < extra; i++) side.push(await pick(context, "any", side));
      const rest = context.target.nodeNumbers.filter((n) => !side.includes(n));
      await partition([endpoints(context, side), endpoints(context, rest)]);
      context.note(`partition [${side}] | [${rest}]`);
      return () => heal(context.target.topology.nodes);
    },
  };
}

function oneWay(): Fault {
  return {
    name: "partition-one-way",
    nodesMin: 2,
    killsExporter: false,
    async inject(context) {
      const leader = await pick(context, "leader");
      const others = context.target.nodeNumbers.filter((n) => n !== leader);
      for (const other of endpoints(context, others)) {
        await cutOneWay(context.target.topology.node(leader), other);
      }
      context.note(`node ${leader} → [${others}] dropped (one way)`);
      return () => heal(context.target.topology.nodes);
    },
  };
}

function bridgeFault(): Fault {
  return {
    name: "partition-bridge",
    nodesMin: 3,
    killsExporter: false,
    async inject(context) {
      const nodes = context.prng.shuffle([...context.target.nodeNumbers]);
      const middle = nodes.shift() as number;
      const half = Math.floor(nodes.length / 2);
      const [a, b] = [nodes.slice(0, half), nodes.slice(half)];
      const [sideA, sideB] = [endpoints(context, a), endpoints(context, b)];
      await bridge(sideA, context.target.topology.node(middle), sideB);
      context.note(`bridge: [${a}] | [${b}], node ${middle} talks to both`);
      return () => heal(context.target.topology.nodes);
    },
  };
}

function flapping(): Fault {
  return {
    name: "partition-flapping",
    nodesMin: 3,
    killsExporter: false,
    async inject(context) {
      const { topology } = context.target;
      let stopped = false;
      const loop = (async () => {
        while (!stopped) {
          const victim = context.prng.pick(context.target.nodeNumbers);
          const rest = context.target.nodeNumbers.filter((n) => n !== victim);
          await partition([endpoints(context, [victim]), endpoints(context, rest)]);
          context.note(`flap: isolate node ${victim}`);
          await new Promise((r) => setTimeout(r, context.prng.between(200, 1_500)));
          await heal(topology.nodes);
          await new Promise((r) => setTimeout(r, context.prng.between(100, 800)));
        }
      })();
      return async () => {
        stopped = true;
        await loop;
        await heal(topology.nodes);
      };
    },
  };
}

function packetLoss(probability: number): Fault {
  return {
    name: `loss-${Math.round(probability * 100)}pct`,
    nodesMin: 1,
    killsExporter: false,
    async inject(context) {
      for (const node of context.target.topology.nodes) await loss(node, probability);
      context.note(`every node drops ${probability * 100}% of its packets`);
      return () => heal(context.target.topology.nodes);
    },
  };
}

/** strace injection into a node's data files. */
function disk(name: string, role: Role, syscalls: string[], fault: SyscallFaultSpec): Fault {
  return {
    name,
    nodesMin: 1,
    killsExporter: false,
    async inject(context) {
      const node = await pick(context, role);
      const process = context.target.process(node);
      if (process === undefined) throw new Error(`node ${node} is down`);
      const paths = filesUnder(context.target.dataDir(node));
      const tracer = await SyscallFault.attach({
        ...{ pid: process.pid, syscalls, fault, paths },
        ...{ logDir: context.logDir, name: `${name}-node${node}` },
      });
      context.note(`${name} on node ${node}: ${syscalls} over ${paths.length} files`);
      return async () => {
        await tracer.detach();
        context.note(`${name}: ${tracer.injectedCount()} injections`);
        // A node may stop on a failed disk write (fail-stop, HES_IO): the heal replaces the
        // disk, so it starts again, as an operator would; later rounds need it.
        if (context.target.process(node) === undefined) {
          context.note(`node ${node} stopped on the disk fault`);
          await restartNodes(context, [node]);
        }
      };
    },
  };
}

type SyscallFaultSpec = { readonly error: "EIO" | "ENOSPC" } | { readonly delayUs: number };

const WRITE_SYSCALLS = ["write", "pwrite64", "writev", "pwritev", "pwritev2"];

function diskFull(): Fault {
  return {
    name: "disk-full",
    nodesMin: 1,
    // It kills a replica, not the exporter: nothing fails over, so no failover time is taken
    // (the copy onto the small filesystem would be counted as one).
    killsExporter: false,
    async inject(context) {
      const node = await pick(context, "replica");
      const dataDir = context.target.dataDir(node);
      await killNode(context, node);
      // Move the data onto a small ext4 with a little room, then take that room away.
      const aside = join(context.workDir, `node${node}-data-aside`);
      await run("mv", [dataDir, aside]);
      const usedBytes = filesUnder(aside).reduce((sum, f) => sum + statSync(f).size, 0);
      // Room for ext4's own overhead too (a journal of up to 64 MiB, inode tables ≈ 1.6%):
      // sized at the files plus 64 MiB only, a store whose files were dense did not fit.
      const roomBytes = Math.ceil(usedBytes * 1.05) + 192 * 1024 * 1024;
      const fs = await SmallFilesystem.mount(dataDir, roomBytes, "ext4");
      context.atTeardown(() => fs.unmount());
      await run("cp", ["-a", `${aside}/.`, dataDir]);
      await context.target.restart(node);
      // Fill only once the node has opened its store: a disk full at start is a node that
      // refuses to start (HES_IO), not the fault under test (writes failing at run time).
      await context.target.awaitNodeUp?.(node, NODE_START_MS_MAX);
      const takenBytes = fs.fill();
      context.note(`node ${node}'s disk is full (${takenBytes} bytes taken)`);
      return async () => {
        fs.unfill();
        context.note(`node ${node}'s disk has room again`);
        // Put the node's data back on an ordinary directory, so later rounds that move or
        // replace its files (stale contents, wipe) do not meet a mount point or a full disk.
        await killNode(context, node);
        const back = join(context.workDir, `node${node}-data-back`);
        await run("cp", ["-a", `${dataDir}/.`, back]);
        await fs.unmount();
        await run("rm", ["-rf", dataDir, aside]);
        await run("mv", [back, dataDir]);
        await context.target.restart(node);
        context.note(`node ${node} is back on its own disk`);
      };
    },
  };
}

/** Stops a replica, flips bits in its largest data file, starts it again. */
function bitFlips(): Fault {
  return {
    name: "bit-flips",
    nodesMin: 2,
    killsExporter: false,
    async inject(context) {
      const node = await pick(context, "replica");
      await killNode(context, node);
      const files = filesUnder(context.target.dataDir(node));
      const largest = files.sort((a, b) => statSync(b).size - statSync(a).size)[0];
      if (largest !== undefined && statSync(largest).size > 0) {
        const flips = flipBits(largest, context.prng, 16);
        context.note(`flipped ${flips.length} bits in ${largest}`);
      }
      await restartNodes(context, [node]);
      return noop;
    },
  };
}

/** A replica's files saved now, restored (stale) after the hold while it is stopped. */
function staleContents(): Fault {
  return {
    name: "stale-contents",
    nodesMin: 2,
    killsExporter: false,
    async inject(context) {
      const node = await pick(context, "replica");
      const dir = context.target.dataDir(node);
      const saved = join(context.workDir, `node${node}-stale`);
      await killNode(context, node);
      saveCopy(dir, saved);
      await restartNodes(context, [node]);
      context.note(`saved node ${node}'s files; they will come back stale at heal`);
      return async () => {
        await killNode(context, node);
        restoreCopy(saved, dir);
        await restartNodes(context, [node]);
        context.note(`node ${node} restarted on stale files`);
      };
    },
  };
}

function wipeNode(): Fault {
  return {
    name: "wipe-replace",
    nodesMin: 2,
    killsExporter: false,
    async inject(context) {
      const node = await pick(context, "replica");
      await killNode(context, node);
      wipe(context.target.dataDir(node));
      context.note(`node ${node} wiped; it comes back empty at heal`);
      return () => restartNodes(context, [node]);
    },
  };
}

/** Every fault by name, for schedules and `--faults a,b,c`. */
export const FAULTS: readonly Fault[] = [
  kill("kill-leader", ["leader"], true),
  kill("kill-replica", ["replica"], false),
  kill("kill-exporter", ["exporter"], true),
  // The leader, then a second node that is not the exporter (a replica, or the new leader).
  kill("kill-two", ["leader", "other"], true),
  killAll(),
  pause("leader"),
  pause("replica"),
  isolate("partition-minority", "replica", 0),
  isolate("partition-leader-minority", "leader", 0),
  oneWay(),
  bridgeFault(),
  flapping(),
  packetLoss(0.2),
  disk("disk-eio-fdatasync", "replica", ["fdatasync", "fsync"], { error: "EIO" }),
  disk("disk-eio-write", "replica", WRITE_SYSCALLS, { error: "EIO" }),
  disk("disk-enospc-write", "replica", WRITE_SYSCALLS, { error: "ENOSPC" }),
  // The store may write with O_DSYNC (each write is its own sync), so data writes are slowed
  // along with fdatasync: every durable step of the node takes 200 ms longer.
  disk("disk-slow-fdatasync", "replica", ["fdatasync", "fsync", ...WRITE_SYSCALLS], {
    delayUs: 200_000,
  }),
  diskFull(),
  bitFlips(),
  staleContents(),
  wipeNode(),
];

export function faultNamed(name: string): Fault {
  const fault = FAULTS.find((f) => f.name === name);
  if (fault === undefined) {
    throw new RangeError(`unknown fault '${name}'; known: ${FAULTS.map((f) => f.name).join(", ")}`);
  }
  return fault;
}
