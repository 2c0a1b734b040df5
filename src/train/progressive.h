/* train/progressive.h: Composer's progressive resizing within a stage: the image side grows with the
 * fraction of the stage done, and each batch is shrunk on the fly (bilinear resize or random crop). */
#ifndef CNN_PROGRESSIVE_H
#define CNN_PROGRESSIVE_H

#include <stddef.h>

#include "base/rng.h"

typedef struct {
    float initial_scale, delay_fraction, finetune_fraction;
    int size_increment;
} ProgressiveSchedule;

/* Composer's scale at fraction t of the stage: initial_scale before delay_fraction, 1 after
 * 1 - finetune_fraction, linear in between. */
float progressive_scale(const ProgressiveSchedule *, float t);
/* The side for a full side at fraction t: scale * full rounded down to a multiple of
 * size_increment (at least one increment, at most full). */
int progressive_side(const ProgressiveSchedule *, int full, float t);
/* A smaller batch is made by the backend's shrink_batch (backend.h): a bilinear resize, or (Composer's
 * crop mode) the same d x d window of every image at this random offset. */
void crop_offsets(Rng *, int s, int d, int *oy, int *ox);

#endif
