/* base/rng.h: the one random number generator. Explicit state, no globals, so a run is reproducible:
 * every purpose (init, shuffle, augment, mixup, dropout) gets its own stream from rng_split. */
#ifndef CNN_RNG_H
#define CNN_RNG_H

#include <stdint.h>

typedef struct Rng { uint64_t s[4]; } Rng;   /* xoshiro256** */

void rng_seed(Rng *, uint64_t seed);
/* An independent stream for `purpose` (and e.g. an epoch or sample index) derived from a parent. */
Rng rng_split(const Rng *parent, uint64_t purpose);
uint64_t rng_u64(Rng *);
uint32_t rng_below(Rng *, uint32_t n);   /* uniform in [0, n) */
float rng_uniform(Rng *);                /* [0, 1) */
float rng_normal(Rng *);                 /* standard normal */
float rng_gamma(Rng *, float shape);     /* Gamma(shape, 1), shape > 0 */
float rng_beta(Rng *, float a, float b); /* Beta(a, b) */
/* fastai's MixUp weight of one sample: l ~ Beta(alpha, alpha), then max(l, 1 - l), in [0.5, 1]. */
float rng_mixup_lam(Rng *, float alpha);

/* Counter-based draws, for values made in parallel that must not depend on the order or the
 * device (dropout masks): a pure function of (key, index), splitmix64's output number index + 1
 * from state key. cuda/head.cu holds a device copy; scripts/torch_reference.py a Python one. */
uint64_t rng_hash(uint64_t key, uint64_t index);

#endif
