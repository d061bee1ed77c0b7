/**
 * Goal: no invariant violation on fresh random seeds (shard 1 of 4). Method: see
 * fresh-seeds.ts; a failure prints the seed and the command that replays it.
 */
import { freshSeedShard } from "./fresh-seeds.js";

freshSeedShard(0);
