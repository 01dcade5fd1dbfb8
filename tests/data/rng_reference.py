#!/usr/bin/env python3
"""Print reference outputs of splitmix64-seeded xoshiro256** for test_tape.c.

An independent implementation of the published algorithms (Blackman and
Vigna), used to check that ag_rng gives the same bits on every machine.
"""

MASK = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK


def xoshiro(seed, count):
    s = []
    for _ in range(4):
        seed, value = splitmix64(seed)
        s.append(value)
    out = []
    for _ in range(count):
        result = (rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        out.append(result)
    return out


if __name__ == "__main__":
    for seed in (0, 42):
        values = ", ".join("0x%016xu" % v for v in xoshiro(seed, 4))
        print("seed %d: {%s}" % (seed, values))
