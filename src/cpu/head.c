/* cpu/head.c: the ops of fastai's cnn_learner head that the ResNets do not have: concat pooling
 * (max and mean over the map, side by side) and dropout. NHWC float32; see backend.h for the rules. */
#include <math.h>
#include <string.h>

#include "cpu/backend.h"
#include "base/rng.h"
#include "base/util.h"

/* ---- concat pool: x (n, hw, c) -> y (n, 2c) = [max | mean] ---- */

void cpu_concat_pool_forward(Backend *b, const Tensor *x, Tensor *y) {
    (void)b;
    const int N = x->n, C = x->c;
    const size_t HW = (size_t)x->h * x->w;
    if (HW == 0) die("concat_pool_forward: empty %dx%d map", x->h, x->w);
    const float *xd = x->data;
    float *yd = y->data;
    cpu_set_shape(y, N, 2 * C, 1, 1);
    const float inv = 1.0f / (float)HW;
#pragma omp parallel for schedule(static) if (tensor_numel(x) >= CPU_PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *mx = yd + (size_t)n * 2 * C, *mean = mx + C;
        const float *x0 = xd + (size_t)n * HW * C;
        for (int c = 0; c < C; c++) mx[c] = mean[c] = x0[c];
        for (size_t p = 1; p < HW; p++) {
            const float *xi = x0 + p * C;
            for (int c = 0; c < C; c++) {
                /* strict > keeps the first maximum; a NaN sticks once seen */
                mx[c] = (xi[c] > mx[c] || xi[c] != xi[c]) && mx[c] == mx[c] ? xi[c] : mx[c];
                mean[c] += xi[c];
            }
        }
        for (int c = 0; c < C; c++) mean[c] *= inv;
    }
}

/* The max half's gradient goes to the first position equal to the forward's maximum: the same
 * element the forward's strict > kept. */
void cpu_concat_pool_backward(Backend *b, const Tensor *x, const Tensor *y, const Tensor *dy, Tensor *dx,
                              int accumulate) {
    const int N = x->n, C = x->c;
    const size_t HW = (size_t)x->h * x->w;
    if (dy->n != N || dy->c != 2 * C || y->c != 2 * C || dy->h * dy->w != 1)
        die("concat_pool_backward: dy is (%d,%d,%d,%d), y has %d channels; expected (%d,%d,1,1) for x with %d channels",
            dy->n, dy->c, dy->h, dy->w, y->c, N, 2 * C, C);
    const float *xd = x->data, *yd = y->data, *gd = dy->data;
    float *dd = dx->data;
    cpu_set_shape(dx, N, C, x->h, x->w);
    const float inv = 1.0f / (float)HW;
    unsigned char *done = cpu_scratch(b, CPU_WS_ROWS, (size_t)N * C);
    memset(done, 0, (size_t)N * C);
#pragma omp parallel for schedule(static) if (tensor_numel(x) >= CPU_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *mx = yd + (size_t)n * 2 * C, *gmax = gd + (size_t)n * 2 * C, *gmean = gmax + C;
        unsigned char *hit = done + (size_t)n * C;
        for (size_t p = 0; p < HW; p++) {
            size_t row = ((size_t)n * HW + p) * C;
            const float *xi = xd + row;
            float *di = dd + row;
            for (int c = 0; c < C; c++) {
                int first = !hit[c] && xi[c] == mx[c];
                hit[c] |= (unsigned char)first;
                float g = gmean[c] * inv + (first ? gmax[c] : 0.0f);
                di[c] = accumulate ? di[c] + g : g;
            }
        }
    }
}

/* ---- dropout ---- */

/* Element i (NCHW order) survives when its draw is at least p; see backend.h. */
static inline int dropout_keep(uint64_t seed, size_t i, float p) {
    return (float)(rng_hash(seed, i) >> 40) * (1.0f / 16777216.0f) >= p;
}

/* y = mask * x * scale, or y += ... with accumulate; y may alias x. */
static void apply_mask(const Tensor *x, float p, uint64_t seed, Tensor *y, int accumulate, long first) {
    const int N = x->n, C = x->c;
    const size_t HW = (size_t)x->h * x->w, base = (size_t)first * C * HW; /* a rank's part: global indices */
    const float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) if (tensor_numel(x) >= CPU_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (size_t q = 0; q < HW; q++) {
            size_t row = ((size_t)n * HW + q) * C;
            for (int c = 0; c < C; c++) {
                size_t nchw = base + ((size_t)n * C + c) * HW + q;
                float v = dropout_keep(seed, nchw, p) ? xd[row + c] * scale : 0.0f;
                yd[row + c] = accumulate ? yd[row + c] + v : v;
            }
        }
}

void cpu_dropout_forward(Backend *b, const Tensor *x, float p, uint64_t seed, Tensor *y) {
    if (!(p >= 0.0f && p <= 1.0f)) die("dropout_forward: p = %g is not in [0, 1]", p);
    int n = x->n, c = x->c, h = x->h, w = x->w; /* y may alias x */
    apply_mask(x, p, seed, y, 0, b->image_offset);
    cpu_set_shape(y, n, c, h, w);
}

void cpu_dropout_backward(Backend *b, const Tensor *dy, float p, uint64_t seed, Tensor *dx, int accumulate) {
    if (!(p >= 0.0f && p <= 1.0f)) die("dropout_backward: p = %g is not in [0, 1]", p);
    int n = dy->n, c = dy->c, h = dy->h, w = dy->w;
    apply_mask(dy, p, seed, dx, accumulate, b->image_offset);
    cpu_set_shape(dx, n, c, h, w);
}
