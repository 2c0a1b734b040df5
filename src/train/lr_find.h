/* train/lr_find.h: fastai's learning-rate range test (Learner.lr_find): a mock training whose lr
 * grows exponentially from start_lr to end_lr over num_it batches, recording each batch's loss and
 * its smoothed value (fastai's AvgSmoothLoss, beta 0.98), stopping when the smoothed loss passes 4x
 * its best (stop_div), then the model, its batch-norm statistics and the optimizer put back as
 * they were. Then fastai's suggestions: minimum (the lr at the lowest loss / 10), steep (steepest
 * descent) and valley (fastai's longest-valley rule), computed exactly as fastai's functions do
 * (float32 tensors, the same slicing and tie rules), printed as fastai prints them.
 *
 * lr_find_curve.c: the schedule, the smoothing, the suggestions and the CSV (pure functions);
 * lr_find.c: the test itself on a trainer (an lr_find stage) and `./train lr_find` (lr_find_config);
 * report/plot_lr_find.c: the plot. */
#ifndef CNN_LR_FIND_H
#define CNN_LR_FIND_H

#include <stdio.h>

#include "train/config.h"

typedef struct {
    double start_lr, end_lr;  /* fastai's defaults 1e-7 and 10 */
    int num_it;               /* batches; fastai raises anything below 6 to 6 */
    int stop_div;             /* stop once the smoothed loss exceeds 4x the best so far */
} LrFindOptions;

void lr_find_options_default(LrFindOptions *);
/* fastai's LRFinder raises num_it to at least 6. */
int lr_find_iterations(const LrFindOptions *);
/* Batch i's lr: fastai's SchedExp(start, end) at pos = i / num_it, start * (end/start)^pos. */
double lr_find_lr(const LrFindOptions *, int i);

/* fastai's AvgSmoothLoss(beta=0.98), as Recorder keeps it: an exponential moving average of the
 * batch losses, debiased (val / (1 - beta^count)), in float32 as fastai's tensors. */
typedef struct {
    float val;
    int count;
} SmoothLoss;
/* Adds a batch loss; returns the smoothed value (what Recorder records and LRFinder compares). */
float smooth_loss_add(SmoothLoss *, float loss);

/* What a range test recorded, one entry per batch run. */
typedef struct {
    int n, cap;
    double *lr;        /* the batch's lr */
    float *loss;       /* its loss (the batch mean, as the training step computes it) */
    float *smooth;     /* the smoothed loss after it */
    int num_it;        /* lr_find_iterations of the options */
    int diverged;      /* stopped by stop_div, or by a loss or gradient that is not finite */
    int interrupted;   /* stopped by Ctrl-C / SIGTERM */
} LrFindCurve;

void lr_find_curve_push(LrFindCurve *, double lr, float loss, float smooth);
void lr_find_curve_free(LrFindCurve *);

enum { LR_SUGGEST_MINIMUM, LR_SUGGEST_STEEP, LR_SUGGEST_VALLEY, LR_SUGGEST_COUNT };

/* One suggestion: the lr suggested, and the point fastai marks on its plot (minimum marks the
 * minimum itself, not the suggested tenth of it). ok = 0: too few points for it (fastai raises). */
typedef struct {
    const char *name;  /* "minimum", "steep", "valley" */
    int ok;
    double lr;
    double point_lr;
    float point_loss;
} LrSuggestion;

/* fastai's suggestion functions on float32 arrays of n points (lrs and smoothed losses, as
 * Learner.lr_find hands them over): minimum, steep, valley. */
LrSuggestion lr_suggest_minimum(const float *lrs, const float *losses, int n);
LrSuggestion lr_suggest_steep(const float *lrs, const float *losses, int n);
LrSuggestion lr_suggest_valley(const float *lrs, const float *losses, int n);
/* All three as Learner.lr_find computes them from a curve: its points [num_it/10, n-5), cut at the
 * first NaN smoothed loss, the lrs rounded to float32. Returns how many are ok. */
int lr_find_suggest(const LrFindCurve *, LrSuggestion out[LR_SUGGEST_COUNT]);

/* x as Python's repr(float) writes it (the shortest text that reads back as x): 0.001, 6.3e-05. */
void python_float_repr(double x, char *buf, size_t len);
/* "SuggestedLRs(minimum=..., steep=..., valley=...)", fastai's namedtuple as Python prints it. */
void lr_find_print_suggestions(FILE *, const LrSuggestion *, int n);

/* The curve as CSV (iteration,lr,loss,smooth_loss), written whole (util.h's atomic writer).
 * Returns 0, or -1 with the reason in err. */
int lr_find_write_csv(const char *path, const LrFindCurve *, char *err, size_t errlen);
/* The curve as a PNG through gnuplot (report/plot_lr_find.c), suggestions marked. Returns as
 * plot_eval (0 also when gnuplot is absent, saying so). */
int lr_find_plot(const char *png_path, const LrFindCurve *, const LrSuggestion *, const char *title);

/* `./train lr_find`: the range test on the config's model (fresh, as `./train CONFIG` would start
 * it, or from_ckpt: a run's resume.safetensors or a model file) with the settings of stage `stage` (NULL: the first stage that
 * trains or is an lr_find stage), writing lr_find.csv and lr_find.png into out_dir and printing
 * the suggestions. Returns 0, 130/143 when interrupted, or exits with a message on an error. */
int lr_find_config(const Config *cfg, const char *stage, const LrFindOptions *o, const char *from_ckpt,
                   const char *out_dir);

#endif
