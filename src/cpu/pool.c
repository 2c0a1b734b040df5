/* cpu/pool.c: max, average and global average pooling on NHWC float32 (cuda/pool.cu's twins).
 * Inner loops run over the contiguous channel dimension so gcc vectorises them; outer loops are
 * OpenMP-parallel once the tensor is big enough to pay for a fork/join. */
#include <math.h>
#include <string.h>

#include "cpu/backend.h"
#include "base/util.h"

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* ---- pooling ---- */

/* Window of output index o along one axis: [lo, hi) clipped to the input, and the divisor extent:
 * PyTorch clips the window to the padded input (count_include_pad) before counting. */
typedef struct { int lo, hi, span; } Win;

static inline Win window(int o, int in, const PoolGeom *g) {
    int start = o * g->stride - g->pad;
    int end = imin(start + g->k, in + g->pad);
    Win w = {imax(start, 0), imin(end, in), end - start};
    return w;
}

static void pool_shape(const PoolGeom *g, const Tensor *x, int *oh, int *ow, const char *op) {
    *oh = pool_out_size(x->h, g);
    *ow = pool_out_size(x->w, g);
    if (*oh < 1 || *ow < 1) die("%s: input %dx%d too small for a %d/%d pool", op, x->h, x->w, g->k, g->stride);
}

void cpu_maxpool_forward(Backend *b, const PoolGeom *g, const Tensor *x, Tensor *y) {
    (void)b;
    int OH, OW, N = x->n, C = x->c, H = x->h, W = x->w;
    pool_shape(g, x, &OH, &OW, "maxpool_forward");
    cpu_set_shape(y, N, C, OH, OW);
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) if (tensor_numel(y) * g->k * g->k >= CPU_PAR_MIN)
    for (int t = 0; t < N * OH; t++) {
        int n = t / OH;
        Win wy = window(t % OH, H, g);
        for (int ox = 0; ox < OW; ox++) {
            Win wx = window(ox, W, g);
            float *yo = yd + ((size_t)t * OW + ox) * C;
            for (int c = 0; c < C; c++) yo[c] = -INFINITY;
            for (int iy = wy.lo; iy < wy.hi; iy++)
                for (int ix = wx.lo; ix < wx.hi; ix++) {
                    const float *xi = xd + (((size_t)n * H + iy) * W + ix) * C;
                    /* strict > keeps the first maximum; a NaN wins, as in PyTorch */
                    for (int c = 0; c < C; c++) yo[c] = (xi[c] > yo[c] || xi[c] != xi[c]) ? xi[c] : yo[c];
                }
        }
    }
}

/* Backward of both pools scatters into overlapping windows, so threads own (image, channel block)
 * pairs: no two write the same element. */
#define CB 64

static void zero_block(float *dx, int n, int H, int W, int C, int c0, int cn) {
    for (size_t p = 0; p < (size_t)H * W; p++) memset(dx + (((size_t)n * H * W) + p) * C + c0, 0, cn * sizeof(float));
}

void cpu_maxpool_backward(Backend *b, const PoolGeom *g, const Tensor *x, const Tensor *y, const Tensor *dy,
                          Tensor *dx, int accumulate) {
    (void)b;
    int OH, OW, N = x->n, C = x->c, H = x->h, W = x->w;
    pool_shape(g, x, &OH, &OW, "maxpool_backward");
    if (dy->h != OH || dy->w != OW || dy->c != C || y->h != OH || y->w != OW)
        die("maxpool_backward: dy/y are %dx%d, expected %dx%d", dy->h, dy->w, OH, OW);
    cpu_set_shape(dx, N, C, H, W);
    const float *xd = x->data, *yd = y->data, *gd = dy->data;
    float *dd = dx->data;
    int nblocks = (C + CB - 1) / CB;
#pragma omp parallel for collapse(2) schedule(static) if (tensor_numel(x) >= CPU_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int cb = 0; cb < nblocks; cb++) {
            int c0 = cb * CB, cn = imin(CB, C - c0);
            if (!accumulate) zero_block(dd, n, H, W, C, c0, cn);
            for (int oy = 0; oy < OH; oy++) {
                Win wy = window(oy, H, g);
                for (int ox = 0; ox < OW; ox++) {
                    Win wx = window(ox, W, g);
                    size_t o = (((size_t)n * OH + oy) * OW + ox) * C + c0;
                    const float *yo = yd + o;
                    float rem[CB]; /* gradient not yet given: the first max in scan order takes it */
                    for (int c = 0; c < cn; c++) rem[c] = gd[o + c];
                    for (int iy = wy.lo; iy < wy.hi; iy++)
                        for (int ix = wx.lo; ix < wx.hi; ix++) {
                            size_t i = (((size_t)n * H + iy) * W + ix) * C + c0;
                            const float *xi = xd + i;
                            float *di = dd + i;
                            for (int c = 0; c < cn; c++) {
                                int hit = xi[c] == yo[c];
                                di[c] += hit ? rem[c] : 0.0f;
                                rem[c] = hit ? 0.0f : rem[c];
                            }
                        }
                }
            }
        }
}

void cpu_avgpool_forward(Backend *b, const PoolGeom *g, const Tensor *x, Tensor *y) {
    (void)b;
    int OH, OW, N = x->n, C = x->c, H = x->h, W = x->w;
    pool_shape(g, x, &OH, &OW, "avgpool_forward");
    cpu_set_shape(y, N, C, OH, OW);
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) if (tensor_numel(y) * g->k * g->k >= CPU_PAR_MIN)
    for (int t = 0; t < N * OH; t++) {
        int n = t / OH;
        Win wy = window(t % OH, H, g);
        for (int ox = 0; ox < OW; ox++) {
            Win wx = window(ox, W, g);
            float *yo = yd + ((size_t)t * OW + ox) * C;
            float inv = 1.0f / (float)(wy.span * wx.span);
            for (int c = 0; c < C; c++) yo[c] = 0.0f;
            for (int iy = wy.lo; iy < wy.hi; iy++)
                for (int ix = wx.lo; ix < wx.hi; ix++) {
                    const float *xi = xd + (((size_t)n * H + iy) * W + ix) * C;
                    for (int c = 0; c < C; c++) yo[c] += xi[c];
                }
            for (int c = 0; c < C; c++) yo[c] *= inv;
        }
    }
}

void cpu_avgpool_backward(Backend *b, const PoolGeom *g, const Tensor *dy, Tensor *dx, int accumulate) {
    (void)b;
    int OH, OW, N = dx->n, C = dx->c, H = dx->h, W = dx->w;
    pool_shape(g, dx, &OH, &OW, "avgpool_backward");
    if (dy->h != OH || dy->w != OW || dy->c != C || dy->n != N)
        die("avgpool_backward: dy is %dx%d, dx %dx%d gives %dx%d (set dx to the input's shape)", dy->h, dy->w, H, W,
            OH, OW);
    const float *gd = dy->data;
    float *dd = dx->data;
    int nblocks = (C + CB - 1) / CB;
#pragma omp parallel for collapse(2) schedule(static) if (tensor_numel(dx) >= CPU_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int cb = 0; cb < nblocks; cb++) {
            int c0 = cb * CB, cn = imin(CB, C - c0);
            if (!accumulate) zero_block(dd, n, H, W, C, c0, cn);
            for (int oy = 0; oy < OH; oy++) {
                Win wy = window(oy, H, g);
                for (int ox = 0; ox < OW; ox++) {
                    Win wx = window(ox, W, g);
                    const float *go = gd + (((size_t)n * OH + oy) * OW + ox) * C + c0;
                    float inv = 1.0f / (float)(wy.span * wx.span);
                    float share[CB];
                    for (int c = 0; c < cn; c++) share[c] = go[c] * inv;
                    for (int iy = wy.lo; iy < wy.hi; iy++)
                        for (int ix = wx.lo; ix < wx.hi; ix++) {
                            float *di = dd + (((size_t)n * H + iy) * W + ix) * C + c0;
                            for (int c = 0; c < cn; c++) di[c] += share[c];
                        }
                }
            }
        }
}

/* ---- global average pool: (n, hw, c) -> (n, c) ---- */

void cpu_global_avgpool_forward(Backend *b, const Tensor *x, Tensor *y) {
    (void)b;
    int N = x->n, C = x->c;
    size_t HW = (size_t)x->h * x->w;
    const float *xd = x->data;
    float *yd = y->data;
    cpu_set_shape(y, N, C, 1, 1);
    float inv = 1.0f / (float)HW;
#pragma omp parallel for schedule(static) if (tensor_numel(x) >= CPU_PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *yo = yd + (size_t)n * C;
        for (int c = 0; c < C; c++) yo[c] = 0.0f;
        for (size_t p = 0; p < HW; p++) {
            const float *xi = xd + ((size_t)n * HW + p) * C;
            for (int c = 0; c < C; c++) yo[c] += xi[c];
        }
        for (int c = 0; c < C; c++) yo[c] *= inv;
    }
}

void cpu_global_avgpool_backward(Backend *b, const Tensor *dy, Tensor *dx, int accumulate) {
    (void)b;
    int N = dx->n, C = dx->c;
    if (dy->n != N || dy->c != C) die("global_avgpool_backward: dy (%d,%d) does not match dx (%d,%d)", dy->n, dy->c, N, C);
    size_t HW = (size_t)dx->h * dx->w, rows = (size_t)N * HW;
    const float *gd = dy->data;
    float *dd = dx->data;
    float inv = 1.0f / (float)HW;
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *go = gd + (r / HW) * C;
        float *di = dd + r * C;
        if (accumulate)
            for (int c = 0; c < C; c++) di[c] += go[c] * inv;
        else
            for (int c = 0; c < C; c++) di[c] = go[c] * inv;
    }
}
