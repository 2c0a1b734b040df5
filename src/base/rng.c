/* base/rng.c: xoshiro256** seeded by splitmix64, split per purpose, and the draws built on it (see rng.h). */
#include "base/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

Rng rng_split(const Rng *parent, uint64_t purpose) {
    /* Mix the parent's state with the purpose; the parent itself is not advanced, so the order
     * in which streams are split off does not matter. */
    uint64_t x = parent->s[0] ^ (parent->s[1] * 0x9e3779b97f4a7c15ULL) ^ (parent->s[2] << 1) ^ parent->s[3];
    x ^= splitmix64(&purpose);
    Rng r;
    rng_seed(&r, x);
    return r;
}

uint64_t rng_hash(uint64_t key, uint64_t index) {
    uint64_t z = key + (index + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_u64(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint32_t rng_below(Rng *r, uint32_t n) {
    /* Lemire's multiply-shift with rejection: no modulo bias. */
    uint64_t m = (uint64_t)(uint32_t)(rng_u64(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)(rng_u64(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

float rng_uniform(Rng *r) { return (float)(rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float rng_normal(Rng *r) {
    /* Box-Muller; u1 in (0, 1] so the log is finite. */
    double u1 = ((double)(rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

float rng_gamma(Rng *r, float shape) {
    /* Marsaglia and Tsang's method; shape < 1 through Gamma(shape + 1) * U^(1/shape). */
    if (shape < 1.0f) {
        float u = rng_uniform(r);
        return rng_gamma(r, shape + 1.0f) * powf(u > 0 ? u : 1e-30f, 1.0f / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = rng_normal(r), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = rng_uniform(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return (float)(d * v);
        if (u > 0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return (float)(d * v);
    }
}

float rng_beta(Rng *r, float a, float b) {
    float x = rng_gamma(r, a), y = rng_gamma(r, b);
    return x + y > 0 ? x / (x + y) : 0.5f;
}

float rng_mixup_lam(Rng *r, float alpha) {
    float lam = rng_beta(r, alpha, alpha);
    return lam > 1.0f - lam ? lam : 1.0f - lam;
}
