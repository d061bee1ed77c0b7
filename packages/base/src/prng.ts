/**
 * A seeded pseudo-random number generator (xoshiro128**), so that everything random in the
 * Raft core, placement and the simulator replays exactly from one integer seed.
 * Not for cryptography.
 */
import { assert } from "./assert.js";

/** Largest seed accepted; seeds are printed and typed back by people. */
export const PRNG_SEED_MAX = Number.MAX_SAFE_INTEGER;

/** splitmix32: spreads a small seed over the 128-bit state so nearby seeds diverge at once. */
function splitmix32(state: { value: number }): number {
  state.value = (state.value + 0x9e3779b9) | 0;
  let z = state.value;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** A deterministic random stream. Two Prngs with the same seed produce the same sequence. */
export class Prng {
  /** The seed this stream started from. */
  readonly seed: number;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    assert(
      Number.isSafeInteger(seed) && seed >= 0 && seed <= PRNG_SEED_MAX,
      `Prng seed must be a safe non-negative integer, got ${seed}`,
    );
    this.seed = seed;
    // Fold the high bits in too, so seeds above 2^32 differ from their low 32 bits.
    const mixer = { value: (seed >>> 0) ^ Math.floor(seed / 0x1_0000_0000) };
    this.s0 = splitmix32(mixer);
    this.s1 = splitmix32(mixer);
    this.s2 = splitmix32(mixer);
    this.s3 = splitmix32(mixer);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** A uniformly random unsigned 32-bit integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A uniformly random float in [0, 1) with 53 bits of precision. */
  float(): number {
    const high = this.nextU32() >>> 5; // 27 bits
    const low = this.nextU32() >>> 6; // 26 bits
    return (high * 67108864 + low) / 9007199254740992;
  }

  /** A uniformly random integer in [0, maxExclusive). Unbiased (rejection sampling). */
  int(maxExclusive: number): number {
    assert(
      Number.isSafeInteger(maxExclusive) && maxExclusive > 0,
      `Prng.int bound must be a positive safe integer, got ${maxExclusive}`,
    );
    if (maxExclusive <= 0x1_0000_0000) {
      const limit = 0x1_0000_0000 - (0x1_0000_0000 % maxExclusive);
      for (;;) {
        const value = this.nextU32();
        if (value < limit) return value % maxExclusive;
      }
    }
    return Math.floor(this.float() * maxExclusive);
  }

  /** A uniformly random integer in [min, maxInclusive]. */
  between(min: number, maxInclusive: number): number {
    assert(maxInclusive >= min, `Prng.between: max ${maxInclusive} < min ${min}`);
    return min + this.int(maxInclusive - min + 1);
  }

  /** True with probability `probability` (0..1). */
  chance(probability: number): boolean {
    return this.float() < probability;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    assert(items.length > 0, "Prng.pick of an empty array");
    return items[this.int(items.length)] as T;
  }

  /** Shuffles `items` in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }

  /** Fills `target` with random bytes and returns it. */
  fill(target: Uint8Array): Uint8Array {
    let i = 0;
    for (; i + 4 <= target.length; i += 4) {
      const value = this.nextU32();
      target[i] = value & 0xff;
      target[i + 1] = (value >>> 8) & 0xff;
      target[i + 2] = (value >>> 16) & 0xff;
      target[i + 3] = value >>> 24;
    }
    if (i < target.length) {
      let value = this.nextU32();
      for (; i < target.length; i++) {
        target[i] = value & 0xff;
        value >>>= 8;
      }
    }
    return target;
  }

  /** An independent stream derived from this one (for giving each simulated node its own). */
  fork(): Prng {
    return new Prng(this.nextU32() * 0x20_0000 + (this.nextU32() >>> 11));
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
