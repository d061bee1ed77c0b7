/**
 * The Node flags a storage host should run with. V8 sizes its old generation from a few MiB
 * and starts a major GC each time the ArrayBuffer (IO buffer) allowance is used up: a busy node
 * ran 40–60 Mark-Compacts in 8 s, and the write path lost a third of its throughput. An initial
 * old-space size removes them. It can only be given on the node command line (not
 * NODE_OPTIONS, not at run time), so a library can only check it and warn.
 */

/** Give these to `node` before the script: `node --initial-old-space-size=256 agent.js`. */
export const HOST_NODE_FLAGS: readonly string[] = Object.freeze(["--initial-old-space-size=256"]);

/** True when V8 was given an initial old-generation (or heap) size on its command line. */
export function heapSizedForStorage(execArgv: readonly string[] = process.execArgv): boolean {
  return execArgv.some(
    (a) => a.startsWith("--initial-old-space-size") || a.startsWith("--initial-heap-size"),
  );
}
