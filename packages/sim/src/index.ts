/**
 * @hes/sim: The deterministic simulator: SimClock, SimNetwork, SimDisk, seed runner and checkers (private).
 *
 * Not built yet: this package exports nothing until its issue lands (see README.md).
 */
export {};
