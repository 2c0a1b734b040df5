/* train/step.h: one training step, the same code for the trainer, `train smoke`, `train bench` and the
 * GPU training test: the batch into the model's input (uploaded, or augmented on the device), a
 * progressive stage's shrink, mixup, the forward pass, the loss, the backward pass, the gradient
 * check, and the optimizer's update with the loss scale divided out.
 *
 * A device never waits for the host inside a step. What the host learns of a step (its loss, and
 * how many gradient values are inf or NaN) comes back as a StepReport, when the step's StepReads
 * says: one step late (the copy overlaps the next step), at once (before the update, so that the
 * loss scaler can skip it), or never (a benchmark's timed steps). */
#ifndef CNN_STEP_H
#define CNN_STEP_H

#include <stdint.h>

#include "base/rng.h"
#include "net/model.h"
#include "net/optim.h"
#include "pipeline/device_feed.h"
#include "pipeline/loader.h"
#include "train/scaler.h"

typedef enum {
    STEP_READ_LATE, /* each step's report comes with the next step (or step_finish), after its update;
                     * needs a fixed loss scale */
    STEP_READ_NOW,  /* the report comes at once, and the update is made only if the step is good
                     * (the scaler decides on an overflow) */
    STEP_READ_NONE  /* no report; every update is made */
} StepReads;

typedef struct Stepper Stepper;

/* A stepper for a model attached to its backend, its optimizer and its loss scaler (both used by
 * every step; the scaler's scale may change between steps). feed: the way a loader's BATCH_RAW
 * batch reaches the device (may be NULL when no step gets one). */
Stepper *step_new(Model *, Optimizer *, GradScaler *, DeviceFeed *feed, StepReads reads);
void step_free(Stepper *);

typedef struct {
    /* The batch: a loader's (batch), or host floats (x: n x 3 x size x size, normalised, with labels),
     * or neither: the input and labels are on the device already, as the last step left them. */
    const Batch *batch;
    const float *x;
    const int32_t *labels;
    int n, size;          /* for x, or for neither; a batch brings its own */
    int side;             /* train at side x side; 0 or >= size: the batch's size. Smaller: shrink_batch, */
    int crop, oy, ox;     /* cutting the side x side window at (oy, ox), or (crop 0) resizing */
    float mixup_alpha;    /* > 0: mixup, drawing from mix_rng */
    Rng *mix_rng;
    float smoothing;      /* label smoothing */
    uint64_t dropout_seed;
    OptimHyper hyper;
    int epoch;            /* the caller's names for the step: returned in its report, for messages */
    long index;
    long tag;             /* and a number of its own (the trainer: the step's number in the run) */
    int poison_input;     /* fault injection for tests: a NaN into the input batch, */
    int poison_grad;      /* +inf into the first trainable parameter's gradient */
} StepArgs;

typedef struct {
    int valid;            /* 0: no step reported with this call (the first LATE step, or NONE) */
    int epoch, n;         /* the step described: its StepArgs' epoch, index and tag, its images */
    long index, tag;
    OptimHyper hyper;     /* its hyper-parameters (lr, momentum: what a step log records) */
    float loss;           /* the batch's mean loss */
    uint64_t bad;         /* gradient values inf or NaN */
    uint64_t first_bad;   /* flat index (in the parameter block) of the first */
    float scale;          /* the loss scale the step ran at */
    /* APPLY: the update was made. SKIP: an overflow, not made, the scaler halved the scale. STOP: a
     * loss or gradient not finite that the scaler cannot skip (READ_LATE: made already). */
    ScalerVerdict verdict;
} StepReport;

/* Queue one step. Returns the report of the step whose results came back (see StepReads). */
StepReport step_run(Stepper *, const StepArgs *);
/* The report of the step still pending (READ_LATE), after waiting for it; else none. */
StepReport step_finish(Stepper *);

#endif
