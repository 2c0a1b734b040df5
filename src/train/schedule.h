/* train/schedule.h: fastai's one-cycle learning-rate and momentum curves, its parameter-group lrs and
 * fine_tune's two fits. */
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
/* The pos of training step `step` (from 0) of a fit of `total` steps: step / total, as fastai's
 * pct_train before the batch (fastai's combine_scheds works on it in float32, as we do). */
float one_cycle_pos(long step, long total);

/* Each of n parameter groups' lr as a fraction of hi (the last group's): fastai's slice(lo, hi) is
 * even_mults(lo, hi, n), geometric from lo to hi; lo <= 0 is slice(hi): hi/10 for every group but
 * the last; spread 0 (a plain number) is hi for all. One group always gets hi. */
void group_lr_scales(int n, float lo, float hi, int spread, float *scale);

/* One fit_one_cycle call of a stage: its cycle, epochs and the slice over the parameter groups. */
typedef struct {
    OneCycle cycle;
    int epochs;
    float lo, hi; /* group_lr_scales(n, lo, hi, spread) */
    int spread;
    int frozen;   /* fine_tune: fastai's freeze() before it (1) or unfreeze() (0); other stages: -1,
                   * as the stage's freeze key leaves the model */
} FitPhase;

/* fastai's fine_tune(epochs, base_lr, freeze_epochs, lr_mult=100, pct_start, div): freeze,
 * fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99) (div 25 and div_final, moms as
 * given), unfreeze, fit_one_cycle(epochs, slice(base_lr/2/100, base_lr/2), pct_start, div,
 * div_final). Writes the phases that run (none frozen when freeze_epochs is 0); returns how many. */
int fine_tune_phases(float base_lr, int freeze_epochs, int epochs, float pct_start, float div, float div_final,
                     float mom_max, float mom_min, FitPhase out[2]);

struct StageConfig;
/* The fits of a stage with its config's numbers: fine_tune's two (fine_tune_phases), or one for
 * any other stage: the one-cycle of its lr, pct_start, div, div_final, moms, and its lr ("lo..hi"
 * spreads lo..hi over the groups, one number is the same lr for all). Returns how many. */
int stage_fit_phases(const struct StageConfig *st, FitPhase out[2]);

#endif
