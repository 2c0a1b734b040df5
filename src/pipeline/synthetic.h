/* pipeline/synthetic.h: a generated, learnable image task (10 shape/texture classes) for the smoke run and
 * tests, so nothing has to be downloaded. */
#ifndef CNN_SYNTHETIC_H
#define CNN_SYNTHETIC_H

#include <stdint.h>

#include "base/rng.h"

#define SYNTH_CLASSES 10
extern const char *const synth_class_names[SYNTH_CLASSES];

/* Draw one size x size RGB image (HWC, uint8) of class cls with random colours, placement and noise. */
void synth_image(Rng *, int cls, int size, uint8_t *rgb);
/* A batch as normalised NCHW floats (ImageNet mean/std) with labels drawn uniformly. */
void synth_batch(Rng *, int n, int size, float *nchw, int32_t *labels);

#endif
