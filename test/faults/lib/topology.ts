/**
 * The network the fault suite runs in: one network namespace per node and one for clients,
 * each joined by a veth pair to a bridge that lives in its own "switch" namespace, so the
 * root namespace's network is never touched. Addresses are 10.77.0.x/24: node i (1-based) is
 * .(10+i), the client is .100. Every name carries a prefix, so a run cleans up what a crashed
 * earlier run left behind (namespaces and the processes still inside them) before it starts.
 *
 * Partitions and loss are iptables rules in a chain of our own (HESF) inside each node's
 * namespace; destroying the namespaces removes them with everything else.
 */
import { run, runQuiet } from "./exec.js";

export const SUBNET_PREFIX = "10.77.0";
/** The default prefix for every namespace this suite creates. */
export const DEFAULT_PREFIX = "hesf";
/** Nodes beyond this would collide with the client address (.100). */
export const TOPOLOGY_NODES_MAX = 80;

export interface TopologyOptions {
  readonly nodes: number;
  /** Namespace name prefix ([a-z0-9], ≤ 8 chars); tests use their own to run side by side. */
  readonly prefix?: string;
}

/** One namespace on the bridge. */
export interface Endpoint {
  readonly namespace: string;
  readonly address: string;
}

export class Topology {
  private constructor(
    readonly prefix: string,
    readonly nodes: readonly Endpoint[],
    readonly client: Endpoint,
    private readonly switchNamespace: string,
  ) {}

  /** Cleans leftovers with the same prefix, then builds the namespaces, bridge and links. */
  static async create(options: TopologyOptions): Promise<Topology> {
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    if (!/^[a-z][a-z0-9]{0,7}$/.test(prefix)) throw new RangeError(`bad prefix '${prefix}'`);
    if (!Number.isInteger(options.nodes) || options.nodes < 1) {
      throw new RangeError(`nodes must be a positive integer, got ${options.nodes}`);
    }
    if (options.nodes > TOPOLOGY_NODES_MAX) {
      throw new RangeError(`nodes must be ≤ ${TOPOLOGY_NODES_MAX}, got ${options.nodes}`);
    }
    await Topology.cleanLeftovers(prefix);
    const sw = `${prefix}-sw`;
    const nodes = Array.from({ length: options.nodes }, (_, i) => ({
      namespace: `${prefix}-n${i + 1}`,
      address: `${SUBNET_PREFIX}.${11 + i}`,
    }));
    const client = { namespace: `${prefix}-cl`, address: `${SUBNET_PREFIX}.100` };
    const topology = new Topology(prefix, nodes, client, sw);
    try {
      await run("ip", ["netns", "add", sw]);
      await run("ip", ["-n", sw, "link", "add", "br0", "type", "bridge"]);
      await run("ip", ["-n", sw, "link", "set", "br0", "up"]);
      for (const [i, endpoint] of [...nodes, client].entries()) {
        await attach(sw, endpoint, `p${i}`);
      }
      for (const node of nodes) await installChain(node.namespace);
    } catch (err) {
      await topology.destroy();
      throw err;
    }
    return topology;
  }

  /** Kills every process inside namespaces with this prefix and deletes the namespaces. */
  static async cleanLeftovers(prefix: string): Promise<void> {
    const listing = (await runQuiet("ip", ["netns", "list"])) ?? "";
    const names = listing
      .split("\n")
      .map((line) => line.split(" ")[0] ?? "")
      .filter((name) => name.startsWith(`${prefix}-`));
    for (const name of names) {
      const pids = ((await runQuiet("ip", ["netns", "pids", name])) ?? "").split(/\s+/);
      for (const pid of pids.filter((p) => /^\d+$/.test(p))) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // already gone
        }
      }
      await runQuiet("ip", ["netns", "del", name]);
    }
  }

  /** All node addresses, in node order. */
  get nodeAddresses(): string[] {
    return this.nodes.map((n) => n.address);
  }

  /** The node endpoint for a 1-based node number. */
  node(number: number): Endpoint {
    const endpoint = this.nodes[number - 1];
    if (endpoint === undefined) throw new RangeError(`no node ${number}`);
    return endpoint;
  }

  async destroy(): Promise<void> {
    await Topology.cleanLeftovers(this.prefix);
    void this.switchNamespace;
  }
}

async function attach(sw: string, endpoint: Endpoint, portName: string): Promise<void> {
  await run("ip", ["netns", "add", endpoint.namespace]);
  await run("ip", [
    ...["-n", sw, "link", "add", portName, "type", "veth"],
    ...["peer", "name", "eth0", "netns", endpoint.namespace],
  ]);
  await run("ip", ["-n", sw, "link", "set", portName, "master", "br0", "up"]);
  await run("ip", [
    "-n",
    endpoint.namespace,
    "addr",
    "add",
    `${endpoint.address}/24`,
    "dev",
    "eth0",
  ]);
  await run("ip", ["-n", endpoint.namespace, "link", "set", "eth0", "up"]);
  await run("ip", ["-n", endpoint.namespace, "link", "set", "lo", "up"]);
}

/** The chain every network fault writes into, hooked into INPUT and OUTPUT. */
export const FAULT_CHAIN = "HESF";

async function installChain(namespace: string): Promise<void> {
  const ipt = (...args: string[]) => run("ip", ["netns", "exec", namespace, "iptables", ...args]);
  await ipt("-N", FAULT_CHAIN);
  await ipt("-A", "INPUT", "-j", FAULT_CHAIN);
  await ipt("-A", "OUTPUT", "-j", FAULT_CHAIN);
}
