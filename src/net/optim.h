/* net/optim.h: the optimizer step over the parameter table. */
#ifndef CNN_OPTIM_H
#define CNN_OPTIM_H

#include "net/model.h"

/* One AdamW step over every trainable parameter; parameters with decay == 0 get no weight decay.
 * Runs of neighbouring parameters with the same treatment go to the backend as one call. */
void optim_adamw_step(Model *m, const AdamWArgs *args);
/* The same with discriminative learning rates: parameter group g steps at args->lr * group_scale[g]
 * (decoupled weight decay too, as fastai's per-group lr does). group_scale NULL: every group at lr. */
void optim_adamw_step_groups(Model *m, const AdamWArgs *args, const float *group_scale);
/* Clear the Adam moments (fastai clears them on freeze and unfreeze). */
void optim_reset(Model *m);

#endif
