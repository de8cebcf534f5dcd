// random.ts: the seeded generator of the data pipeline (shuffling, synthetic images).
// Contract: a pure function of (seed, stream): the same arguments give the same sequence on
// every platform (integer arithmetic only; floats are built from integer bits).

const MASK64 = (1n << 64n) - 1n;

// SplitMix64 (Steele et al.): turns any 64-bit seed into well-mixed state words.
function splitmix64(state: bigint): [bigint, bigint] {
  const next = (state + 0x9E3779B97F4A7C15n) & MASK64;
  let z = next;
  z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & MASK64;
  return [next, z ^ (z >> 31n)];
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

// xoshiro128** (Blackman and Vigna): fast 32-bit generator; 2^128 - 1 period.
export class Rng {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  // seed: any integer in [0, 2^64); stream separates independent sequences of one seed
  // (e.g. the epoch for shuffling).
  constructor(seed: number | bigint, stream: number | bigint = 0) {
    let state = (BigInt(seed) ^ (BigInt(stream) * 0xD1342543DE82EF95n)) & MASK64;
    const words: number[] = [];
    for (let i = 0; i < 2; i++) {
      const [next, out] = splitmix64(state);
      state = next;
      words.push(Number(out & 0xFFFFFFFFn), Number(out >> 32n));
    }
    [this.#s0, this.#s1, this.#s2, this.#s3] = words;
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1;  // the one bad state
  }

  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.#s1 << 9) >>> 0;
    this.#s2 = (this.#s2 ^ this.#s0) >>> 0;
    this.#s3 = (this.#s3 ^ this.#s1) >>> 0;
    this.#s1 = (this.#s1 ^ this.#s2) >>> 0;
    this.#s0 = (this.#s0 ^ this.#s3) >>> 0;
    this.#s2 = (this.#s2 ^ t) >>> 0;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  uniform(): number {
    const hi = this.nextU32() >>> 5;  // 27 bits
    const lo = this.nextU32() >>> 6;  // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  // Integer in [0, n), n <= 2^32; unbiased (rejection of the incomplete last block).
  below(n: number): number {
    if (n <= 1) return 0;
    const limit = 4294967296 - (4294967296 % n);
    let x: number;
    do x = this.nextU32(); while (x >= limit);
    return x % n;
  }

  // Standard normal (Box-Muller).
  normal(): number {
    const u = 1 - this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }
}

// A uniformly random permutation of 0..n-1 (Fisher-Yates) for one (seed, epoch).
export function permutation(n: number, seed: number | bigint, epoch: number): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const rng = new Rng(seed, epoch);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}
