/* train/schedule.c: fastai's one-cycle curves, fit phases and parameter-group lrs (see schedule.h). */
#include "train/schedule.h"

#include <math.h>

#include "train/config.h"

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

float one_cycle_pos(long step, long total) { return total > 0 ? (float)((double)step / (double)total) : 0.0f; }

void group_lr_scales(int n, float lo, float hi, int spread, float *scale) {
    for (int g = 0; g < n; g++) {
        if (!spread || n == 1) scale[g] = 1.0f;
        else if (lo <= 0) scale[g] = g == n - 1 ? 1.0f : 0.1f;
        else scale[g] = (float)pow((double)lo / hi, 1.0 - (double)g / (n - 1));
    }
}

int fine_tune_phases(float base_lr, int freeze_epochs, int epochs, float pct_start, float div, float div_final,
                     float mom_max, float mom_min, FitPhase out[2]) {
    int k = 0;
    if (freeze_epochs > 0) {
        OneCycle c = one_cycle_default(base_lr);
        c.pct_start = 0.99f;
        c.div_final = div_final;
        c.mom_max = mom_max;
        c.mom_min = mom_min;
        out[k++] = (FitPhase){c, freeze_epochs, 0.0f, base_lr, 1, 1};
    }
    float hi = base_lr / 2;
    out[k++] = (FitPhase){{hi, pct_start, div, div_final, mom_max, mom_min}, epochs, hi / 100, hi, 1, 0};
    return k;
}

int stage_fit_phases(const StageConfig *st, FitPhase out[2]) {
    if (st->type == STAGE_FINE_TUNE)
        return fine_tune_phases(st->lr, st->freeze_epochs, st->epochs, st->pct_start, st->div, st->div_final,
                                st->mom_max, st->mom_min, out);
    out[0] = (FitPhase){{st->lr, st->pct_start, st->div, st->div_final, st->mom_max, st->mom_min}, st->epochs,
                        st->lr_lo, st->lr, st->lr_lo > 0, -1};
    return 1;
}
