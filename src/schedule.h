/* schedule.h: fastai's one-cycle learning-rate and momentum curves. */
#ifndef CNN_SCHEDULE_H
#define CNN_SCHEDULE_H

typedef struct {
    float lr_max, pct_start, div, div_final;
    float mom_max, mom_min; /* beta1 goes mom_max -> mom_min -> mom_max */
} OneCycle;

/* fastai's defaults: pct_start 0.25, div 25, div_final 1e5, moms (0.95, 0.85, 0.95). */
OneCycle one_cycle_default(float lr_max);
/* pos = fraction of the cycle done, in [0, 1]. */
float one_cycle_lr(const OneCycle *, float pos);
float one_cycle_mom(const OneCycle *, float pos);

#endif
