#include "schedule.h"

#include <math.h>

OneCycle one_cycle_default(float lr_max) { return (OneCycle){lr_max, 0.25f, 25.0f, 1e5f, 0.95f, 0.85f}; }

/* fastai's SchedCos: start + (1 + cos(pi * (1 - pos))) * (end - start) / 2, as a weighted mean in
 * double so the ends come out exact (1e-3 + (1e-8 - 1e-3) is not 1e-8 in float). */
static float cosine(float start, float end, float pos) {
    double w = (1.0 + cos(M_PI * (1.0 - (double)pos))) / 2.0;
    return (float)((1.0 - w) * start + w * end);
}

float one_cycle_lr(const OneCycle *c, float pos) {
    if (pos < c->pct_start) return cosine(c->lr_max / c->div, c->lr_max, pos / c->pct_start);
    return cosine(c->lr_max, c->lr_max / c->div_final, (pos - c->pct_start) / (1.0f - c->pct_start));
}

float one_cycle_mom(const OneCycle *c, float pos) {
    if (pos < c->pct_start) return cosine(c->mom_max, c->mom_min, pos / c->pct_start);
    return cosine(c->mom_min, c->mom_max, (pos - c->pct_start) / (1.0f - c->pct_start));
}
