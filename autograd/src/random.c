/* Seeded random numbers that are the same on every machine. */
#include <math.h>

#include "internal.h"

/* splitmix64 spreads one seed over the four state words. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

ag_rng ag_rng_new(uint64_t seed)
{
    ag_rng rng;

    for (int i = 0; i < 4; i++)
        rng.state[i] = splitmix64(&seed);
    return rng;
}

/* xoshiro256** by Blackman and Vigna. */
uint64_t ag_rng_next(ag_rng *rng)
{
    uint64_t *s = rng->state;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ag_rng_uniform(ag_rng *rng)
{
    /* The top 53 bits give every double in [0, 1) on a 2^-53 grid. */
    return (double)(ag_rng_next(rng) >> 11) * 0x1.0p-53;
}

double ag_rng_normal(ag_rng *rng)
{
    /* Marsaglia's polar method; the second value of each pair is dropped so
     * the generator state alone determines the next number. */
    for (;;) {
        double u = 2.0 * ag_rng_uniform(rng) - 1.0;
        double v = 2.0 * ag_rng_uniform(rng) - 1.0;
        double s = u * u + v * v;

        if (s > 0.0 && s < 1.0)
            return u * sqrt(-2.0 * log(s) / s);
    }
}

uint64_t ag_rng_below(ag_rng *rng, uint64_t n)
{
    if (n == 0)
        return 0;

    /* Reject the top partial block so every residue is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;

    for (;;) {
        uint64_t x = ag_rng_next(rng);
        if (x < limit)
            return x % n;
    }
}

ag_tensor *ag_rand_uniform(ag_tape *tape, ag_dtype dtype, int ndim,
                           const size_t *shape, double low, double high, ag_rng *rng)
{
    if (rng == NULL || !(low <= high)) {
        ag_set_error("ag_rand_uniform: %s", rng == NULL ? "rng is NULL"
                                                        : "low must not exceed high");
        return NULL;
    }

    ag_tensor *t = ag_tensor_alloc(tape, dtype, ndim, shape, "ag_rand_uniform");
    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < t->numel; i++)
        ag_tensor_set(t, i, low + (high - low) * ag_rng_uniform(rng));
    return t;
}

ag_tensor *ag_rand_normal(ag_tape *tape, ag_dtype dtype, int ndim,
                          const size_t *shape, double mean, double stddev, ag_rng *rng)
{
    if (rng == NULL || !(stddev >= 0.0)) {
        ag_set_error("ag_rand_normal: %s", rng == NULL ? "rng is NULL"
                                                       : "stddev must be >= 0");
        return NULL;
    }

    ag_tensor *t = ag_tensor_alloc(tape, dtype, ndim, shape, "ag_rand_normal");
    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < t->numel; i++)
        ag_tensor_set(t, i, mean + stddev * ag_rng_normal(rng));
    return t;
}
