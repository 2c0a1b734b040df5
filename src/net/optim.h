/* net/optim.h: the optimizer: AdamW over a model's parameter table, and the state it owns (Adam's
 * moments, its step count, the learning rate of each parameter group). The model owns the weights
 * and their gradients; the optimizer reads the Param table for what trains (trainable), what decays
 * (decay) and which group each parameter is in (group). */
#ifndef CNN_OPTIM_H
#define CNN_OPTIM_H

#include "net/model.h"

#define OPTIM_MAX_GROUPS 8

/* One step's hyper-parameters (a one-cycle schedule moves lr and beta1 every step). wd is decoupled:
 * p -= lr*wd*p before the Adam update. */
typedef struct {
    float lr, beta1, beta2, eps, wd;
} OptimHyper;

typedef struct Optimizer {
    Model *model;
    float *exp_avg, *exp_avg_sq; /* backend memory, model->param_floats each (PyTorch's names) */
    int step;                    /* Adam steps since the moments were last cleared: the bias corrections */
    float group_lr[OPTIM_MAX_GROUPS]; /* parameter group g steps at lr * group_lr[g] (fastai's
                                       * discriminative learning rates); 1 for every group at first */
} Optimizer;

/* An optimizer for an attached model (model_attach): zero moments, step 0, every group at lr. */
Optimizer *optim_new(Model *m);
void optim_free(Optimizer *);
/* Clear the moments and the step count (fastai clears them on freeze and unfreeze). */
void optim_reset(Optimizer *);
/* Group g's lr as a fraction of the step's lr, scale[0 .. ngroups-1] (the trainer computes fastai's
 * slice(lo, hi) with schedule.h's group_lr_scales). */
void optim_set_group_lrs(Optimizer *, const float *scale);
/* One AdamW step over every trainable parameter; parameters with decay == 0 get no weight decay.
 * The gradients are multiplied by grad_scale first (1 / the loss scale: the one place a loss-scaled
 * gradient is unscaled). Runs of neighbouring parameters with the same treatment go to the backend
 * as one call. */
void optim_step(Optimizer *, const OptimHyper *h, float grad_scale);
/* The moments on the host (param_floats floats each), for checkpoints; set also sets the step count. */
void optim_get_state(const Optimizer *, float *exp_avg, float *exp_avg_sq);
void optim_set_state(Optimizer *, const float *exp_avg, const float *exp_avg_sq, int step);

#endif
