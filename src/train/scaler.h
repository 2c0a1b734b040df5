/* train/scaler.h: loss scaling, the one policy for every training loop (PyTorch's GradScaler). The
 * loss's gradient is multiplied by `scale` so that a low-precision backward pass does not underflow;
 * the parameter gradients then carry the scale, and the optimizer step divides it out once
 * (optim_step's grad_scale = 1 / scale). A dynamic scaler starts high, halves the scale and skips
 * the step whenever a gradient overflows (inf or NaN), and doubles it after a run of good steps. */
#ifndef CNN_SCALER_H
#define CNN_SCALER_H

/* PyTorch's GradScaler defaults */
#define SCALE_INIT 65536.0f
#define SCALE_GROWTH_INTERVAL 2000
#define SCALE_MAX 0x1p100f

typedef struct {
    int dynamic;      /* adapt the scale and skip overflowing steps; else the scale stays as set */
    float scale;      /* a power of two (exact to divide out); 1 without loss scaling */
    int good_steps;   /* finite steps since the scale last changed */
    long skipped;     /* steps skipped for an overflow */
} GradScaler;

/* dynamic 0: a fixed scale (1 for none); dynamic 1: start at scale (SCALE_INIT for PyTorch's). */
GradScaler scaler_make(int dynamic, float scale);

typedef enum {
    SCALER_APPLY,     /* finite gradients: apply the step */
    SCALER_SKIP,      /* an overflow: skip the step, the scale is halved */
    SCALER_STOP       /* an overflow with nothing to halve (not dynamic, or at scale 1): the caller stops */
} ScalerVerdict;

/* After a step's gradient check: what to do with the step, and the scale for the next one. */
ScalerVerdict scaler_update(GradScaler *, int finite);

#endif
