/**
 * Network faults as iptables rules in each node namespace's HESF chain. A partition drops
 * traffic between groups in both directions; a one-way cut drops only what `from` sends to
 * `to` (TCP then stalls both ways, as on a real half-broken link); loss drops a random share of
 * every packet a node sends and receives. `heal` flushes every chain.
 */
import { run } from "./exec.js";
import { type Endpoint, FAULT_CHAIN } from "./topology.js";

function ipt(namespace: string, ...args: string[]): Promise<string> {
  return run("ip", ["netns", "exec", namespace, "iptables", "-w", ...args]);
}

/** Drops everything `from` sends to `to` (rule in `from`'s namespace, outbound). */
export async function cutOneWay(from: Endpoint, to: Endpoint): Promise<void> {
  await ipt(from.namespace, "-A", FAULT_CHAIN, "-d", to.address, "-j", "DROP");
}

/**
 * Isolates the groups from each other: every pair of nodes in different groups is cut both
 * ways. Nodes in no group keep talking to everyone (that is how a "bridge" is built).
 */
export async function partition(groups: readonly (readonly Endpoint[])[]): Promise<void> {
  for (const [i, group] of groups.entries()) {
    for (const [j, other] of groups.entries()) {
      if (i === j) continue;
      for (const a of group) for (const b of other) await cutOneWay(a, b);
    }
  }
}

/**
 * A bridge: two sides that cannot talk to each other, plus one node that talks to both
 * (Jepsen's "bridge" nemesis). Each side with the bridge is a majority.
 */
export async function bridge(
  sideA: readonly Endpoint[],
  bridgeNode: Endpoint,
  sideB: readonly Endpoint[],
): Promise<void> {
  void bridgeNode;
  await partition([sideA, sideB]);
}

/** Drops each packet `node` sends or receives with the given probability (0 < p < 1). */
export async function loss(node: Endpoint, probability: number): Promise<void> {
  if (!(probability > 0 && probability < 1)) {
    throw new RangeError(`loss probability must be in (0, 1), got ${probability}`);
  }
  await ipt(
    node.namespace,
    ...["-A", FAULT_CHAIN, "-m", "statistic", "--mode", "random"],
    ...["--probability", String(probability), "-j", "DROP"],
  );
}

/** Removes every network fault from these namespaces. */
export async function heal(nodes: readonly Endpoint[]): Promise<void> {
  for (const node of nodes) await ipt(node.namespace, "-F", FAULT_CHAIN);
}

/** The rules currently in a node's fault chain (for reports and tests). */
export async function rules(node: Endpoint): Promise<string[]> {
  const listing = await ipt(node.namespace, "-S", FAULT_CHAIN);
  return listing.split("\n").filter((line) => line.startsWith("-A"));
}
