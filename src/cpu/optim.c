/* cpu/optim.c: the optimizer's ops: the non-finite scan of the gradient check, AdamW
 * (cuda/optim.cu's twins).
 * Inner loops run over the contiguous channel dimension so gcc vectorises them; outer loops are
 * OpenMP-parallel once the tensor is big enough to pay for a fork/join. */
#include <math.h>
#include <stdint.h>

#include "cpu/backend.h"
#include "base/util.h"

/* ---- optimizer ---- */

void cpu_scan_nonfinite(Backend *b, const float *x, size_t count, uint64_t *out) {
    (void)b;
    uint64_t bad = 0, first = UINT64_MAX;
#pragma omp parallel for schedule(static) reduction(+ : bad) reduction(min : first) if (count >= CPU_PAR_MIN)
    for (size_t i = 0; i < count; i++)
        if (!isfinite(x[i])) {
            bad++;
            if (i < first) first = i;
        }
    out[0] = bad;
    out[1] = first;
}

size_t cpu_count_nonfinite(Backend *b, const float *x, size_t count) {
    uint64_t r[2];
    cpu_scan_nonfinite(b, x, count, r);
    return (size_t)r[0];
}

static void adamw_run(float *p, const float *g, float *m, float *v, size_t count, float lr, float wd,
                      const AdamWArgs *a, float grad_scale) {
    const float b1 = a->beta1, b2 = a->beta2, eps = a->eps;
    const float decay = 1.0f - lr * wd;
    const float step_size = (float)(lr / (1.0 - pow(a->beta1, a->step)));
    const float inv_bc2 = (float)(1.0 / (1.0 - pow(a->beta2, a->step)));
#pragma omp parallel for schedule(static) if (count >= CPU_PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        float gi = g[i] * grad_scale;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * mi / (sqrtf(vi * inv_bc2) + eps);
    }
}

void cpu_adamw(Backend *b, float *p, const float *g, float *m, float *v, const AdamWRun *runs, int nruns,
               const AdamWArgs *a, float grad_scale) {
    (void)b;
    for (int r = 0; r < nruns; r++) {
        size_t o = runs[r].offset;
        adamw_run(p + o, g + o, m + o, v + o, runs[r].count, runs[r].lr, runs[r].wd, a, grad_scale);
    }
}
