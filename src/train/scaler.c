/* train/scaler.c: the loss-scaling policy (see scaler.h). */
#include "train/scaler.h"

GradScaler scaler_make(int dynamic, float scale) { return (GradScaler){dynamic, scale, 0, 0}; }

ScalerVerdict scaler_update(GradScaler *s, int finite) {
    if (finite) {
        if (s->dynamic && ++s->good_steps == SCALE_GROWTH_INTERVAL) {
            if (s->scale < SCALE_MAX) s->scale *= 2;
            s->good_steps = 0;
        }
        return SCALER_APPLY;
    }
    if (!s->dynamic || s->scale <= 1.0f) return SCALER_STOP;
    s->scale /= 2;
    s->good_steps = 0;
    s->skipped++;
    return SCALER_SKIP;
}
