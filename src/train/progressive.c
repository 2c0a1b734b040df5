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

void resize_strided(const float *in, int s, float *out, int d, size_t step) {
    float scale = (float)s / (float)d;
#define AT(y, x) in[((size_t)(y) * s + (x)) * step]
    for (int y = 0; y < d; y++) {
        /* source coordinate of the output pixel centre, clamped at the border as PyTorch does */
        float sy = fmaxf(((float)y + 0.5f) * scale - 0.5f, 0.0f);
        int y0 = (int)sy, y1 = y0 + 1 < s ? y0 + 1 : s - 1;
        float fy = sy - (float)y0;
        for (int x = 0; x < d; x++) {
            float sx = fmaxf(((float)x + 0.5f) * scale - 0.5f, 0.0f);
            int x0 = (int)sx, x1 = x0 + 1 < s ? x0 + 1 : s - 1;
            float fx = sx - (float)x0;
            float top = AT(y0, x0) + fx * (AT(y0, x1) - AT(y0, x0));
            float bottom = AT(y1, x0) + fx * (AT(y1, x1) - AT(y1, x0));
            out[((size_t)y * d + x) * step] = top + fy * (bottom - top);
        }
    }
#undef AT
}

void crop_offsets(Rng *rng, int s, int d, int *oy, int *ox) {
    *oy = (int)rng_below(rng, (uint32_t)(s - d + 1));
    *ox = (int)rng_below(rng, (uint32_t)(s - d + 1));
}
