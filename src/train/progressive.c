/* train/progressive.c: the size schedule of progressive resizing and its resize of a batch (see progressive.h). */
#include "train/progressive.h"

#include <math.h>
#include <string.h>

float progressive_scale(const ProgressiveSchedule *p, float t) {
    if (t < p->delay_fraction) return p->initial_scale;
    if (t > 1.0f - p->finetune_fraction) return 1.0f;
    float span = 1.0f - p->finetune_fraction - p->delay_fraction;
    float frac = span > 0 ? (t - p->delay_fraction) / span : 1.0f;
    return p->initial_scale + (1.0f - p->initial_scale) * frac;
}

int progressive_side(const ProgressiveSchedule *p, int full, float t) {
    int inc = p->size_increment > 0 ? p->size_increment : 1;
    /* a hair of tolerance so that 0.75 * 224 computed in float (167.99998) still gives 168 */
    int side = (int)((double)progressive_scale(p, t) * full + 1e-3) / inc * inc;
    if (side < inc) side = inc;
    return side > full ? full : side;
}

void crop_offsets(Rng *rng, int s, int d, int *oy, int *ox) {
    *oy = (int)rng_below(rng, (uint32_t)(s - d + 1));
    *ox = (int)rng_below(rng, (uint32_t)(s - d + 1));
}
