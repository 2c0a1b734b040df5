/* cpu/ops.c: the CPU backend's elementwise, pooling, linear, loss and optimizer ops on NHWC float32.
 * Inner loops run over the contiguous channel dimension so gcc vectorises them; outer loops are
 * OpenMP-parallel once the tensor is big enough to pay for a fork/join. */
#include <math.h>
#include <string.h>

#include "cpu/backend.h"
#include "cpu/gemm.h"
#include "train/progressive.h"
#include "base/util.h"

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

static void check_same(const Tensor *a, const Tensor *b, const char *op) {
    if (tensor_numel(a) != tensor_numel(b))
        die("%s: shapes (%d,%d,%d,%d) and (%d,%d,%d,%d) differ", op, a->n, a->c, a->h, a->w, b->n, b->c, b->h, b->w);
}

/* ---- relu ---- */

void cpu_relu_forward(Backend *b, const Tensor *x, Tensor *y) {
    (void)b;
    const size_t n = tensor_numel(x);
    const float *xd = x->data;
    float *yd = y->data;
    cpu_set_shape(y, x->n, x->c, x->h, x->w);
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) yd[i] = xd[i] < 0.0f ? 0.0f : xd[i]; /* a NaN passes, as in PyTorch */
}

/* y > 0 exactly where x > 0, so the output is enough to gate the gradient (and y may alias x). */
void cpu_relu_backward(Backend *b, const Tensor *y, const Tensor *dy, Tensor *dx, int accumulate) {
    (void)b;
    check_same(y, dy, "relu_backward");
    const size_t n = tensor_numel(y);
    const float *yd = y->data, *g = dy->data;
    float *d = dx->data;
    cpu_set_shape(dx, y->n, y->c, y->h, y->w);
    if (accumulate) {
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) d[i] += yd[i] > 0.0f ? g[i] : 0.0f;
    } else {
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) d[i] = yd[i] > 0.0f ? g[i] : 0.0f;
    }
}

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

/* ---- linear: x (n, in), w (out, in), y (n, out) ---- */

void cpu_linear_forward(Backend *b, const Tensor *x, const float *w, const float *bias, Tensor *y) {
    (void)b;
    int n = x->n, in = x->c * x->h * x->w, out = y->c;
    cpu_set_shape(y, n, out, 1, 1);
    float *yd = y->data;
    sgemm(0, 1, n, out, in, 1.0f, x->data, in, w, in, 0.0f, yd, out);
    if (bias)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) yd[(size_t)i * out + o] += bias[o];
}

void cpu_linear_backward(Backend *b, const Tensor *x, const Tensor *dy, const float *w, float *dw, float *db,
                         Tensor *dx, int accumulate) {
    int n = x->n, in = x->c * x->h * x->w, out = dy->c;
    const float *gd = dy->data;
    const double unscale = 1.0 / b->loss_scale;
    if (dw) {
        sgemm(1, 0, out, in, n, 1.0f, gd, out, x->data, in, 0.0f, dw, in); // (out, in) = dy^T x
        cpu_unscale(b, dw, (size_t)out * in);
    }
    if (db)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += gd[(size_t)i * out + o];
            db[o] = (float)(s * unscale);
        }
    if (dx) {
        cpu_set_shape(dx, x->n, x->c, x->h, x->w);
        sgemm(0, 0, n, in, out, 1.0f, gd, out, w, in, accumulate ? 1.0f : 0.0f, dx->data, in); // (n, in) = dy w
    }
}

/* ---- residual add and gradient accumulation ---- */

void cpu_add(Backend *b, const Tensor *x, const Tensor *z, Tensor *y) {
    (void)b;
    check_same(x, z, "add");
    const size_t n = tensor_numel(x);
    const float *xd = x->data, *zd = z->data;
    float *yd = y->data;
    cpu_set_shape(y, x->n, x->c, x->h, x->w);
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) yd[i] = xd[i] + zd[i];
}

void cpu_accumulate(Backend *b, const Tensor *src, Tensor *dst, int accumulate) {
    (void)b;
    const size_t n = tensor_numel(src);
    const float *s = src->data;
    float *d = dst->data;
    cpu_set_shape(dst, src->n, src->c, src->h, src->w);
    if (!accumulate) {
        if (d != s) memcpy(d, s, n * sizeof(float));
        return;
    }
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) d[i] += s[i];
}

/* ---- loss ---- */

/* Per sample, with t the smoothed mixed target (sums to 1) and lse = log sum exp z:
 *   loss_i = -sum_j t_j log softmax_j = lse - sum_j t_j z_j,  dz_j = (softmax_j - t_j) / n.
 * Samples run in parallel; their losses are summed afterwards in order, so the result does not
 * depend on the thread count. dlogits may alias logits: each row is fully read before it is written. */
void cpu_softmax_xent(Backend *b, const Tensor *logits, const int32_t *labels_a, const int32_t *labels_b,
                      const float *lam, float smoothing, float *loss, Tensor *dlogits) {
    const int n = logits->n, K = logits->c * logits->h * logits->w;
    const float *z = logits->data; // (n, K)
    float *dz = dlogits ? dlogits->data : NULL;
    if (dlogits) cpu_set_shape(dlogits, logits->n, logits->c, logits->h, logits->w);
    const int mix = labels_b && lam;
    for (int i = 0; i < n; i++) {
        int la = labels_a[i], lb = mix ? labels_b[i] : la;
        if (la < 0 || la >= K || lb < 0 || lb >= K) die("softmax_xent: label %d/%d out of range [0, %d)", la, lb, K);
    }
    double *per = cpu_scratch(b, CPU_WS_STATS, (size_t)n * sizeof(double));
    const double base = (double)smoothing / K, scale = b->loss_scale; /* see Backend.loss_scale */
#pragma omp parallel for schedule(static) if ((size_t)n * K >= CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *zi = z + (size_t)i * K;
        int la = labels_a[i], lb = mix ? labels_b[i] : la;
        double l = mix ? lam[i] : 1.0, ta = (1.0 - smoothing) * l, tb = (1.0 - smoothing) * (1.0 - l);
        float mx = zi[0];
        for (int j = 1; j < K; j++) mx = zi[j] > mx ? zi[j] : mx;
        double se = 0, sz = 0;
        for (int j = 0; j < K; j++) {
            se += exp((double)zi[j] - mx);
            sz += zi[j];
        }
        double lse = mx + log(se);
        per[i] = lse - (base * sz + ta * zi[la] + tb * zi[lb]);
        if (dz) {
            float *di = dz + (size_t)i * K;
            for (int j = 0; j < K; j++) di[j] = (float)((exp((double)zi[j] - lse) - base) / n * scale);
            di[la] -= (float)(ta / n * scale);
            di[lb] -= (float)(tb / n * scale);
        }
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += per[i];
    *loss = (float)(total / n);
}

/* ---- mixup ---- */

void cpu_mix_images(Backend *b, Tensor *x, const int32_t *partner, const float *lam) {
    const int n = x->n;
    const size_t per = n ? tensor_numel(x) / (size_t)n : 0;
    float *d = x->data, *orig = cpu_scratch(b, CPU_WS_MIX, tensor_numel(x) * sizeof(float));
    memcpy(orig, d, tensor_numel(x) * sizeof(float));
#pragma omp parallel for schedule(static) if (tensor_numel(x) >= CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float l = lam[i], *xi = orig + (size_t)i * per, *xj = orig + (size_t)partner[i] * per;
        float *o = d + (size_t)i * per;
        for (size_t k = 0; k < per; k++) o[k] = l * xi[k] + (1.0f - l) * xj[k];
    }
}

void cpu_shrink_batch(Backend *b, const Tensor *x, int d, int crop, int oy, int ox, Tensor *y) {
    (void)b;
    const int n = x->n, c = x->c, s = x->h;
    if (x->w != s || d > s || d < 1 || (crop && (oy < 0 || ox < 0 || oy + d > s || ox + d > s)))
        die("shrink_batch: cannot make %dx%d (crop %d at %d,%d) of %dx%d", d, d, crop, oy, ox, x->h, x->w);
    cpu_set_shape(y, n, c, d, d);
    const float *src = x->data;
    float *dst = y->data;
#pragma omp parallel for schedule(static) if ((size_t)n * c * d * d >= CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *in = src + (size_t)i * s * s * c;
        float *out = dst + (size_t)i * d * d * c;
        if (crop)
            for (int r = 0; r < d; r++)
                memcpy(out + (size_t)r * d * c, in + ((size_t)(oy + r) * s + ox) * c, (size_t)d * c * sizeof(float));
        else
            for (int ch = 0; ch < c; ch++) resize_strided(in + ch, s, out + ch, d, (size_t)c);
    }
}

/* ---- optimizer ---- */

void cpu_unscale(Backend *b, float *g, size_t count) {
    if (b->loss_scale == 1.0f) return;
    const float inv = 1.0f / b->loss_scale; /* a power of two: exact */
#pragma omp parallel for schedule(static) if (count >= CPU_PAR_MIN)
    for (size_t i = 0; i < count; i++) g[i] *= inv;
}

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

void cpu_read_async(Backend *b, void *host_dst, const void *src, size_t bytes, int slot) {
    (void)b;
    if (slot != 0 && slot != 1) die("cpu backend: read_async slot %d (want 0 or 1)", slot);
    if (bytes) memcpy(host_dst, src, bytes);
}

void cpu_read_wait(Backend *b, int slot) {
    (void)b;
    if (slot != 0 && slot != 1) die("cpu backend: read_wait slot %d (want 0 or 1)", slot);
}

static void adamw_run(float *p, const float *g, float *m, float *v, size_t count, float lr, float wd,
                      const AdamWArgs *a) {
    const float b1 = a->beta1, b2 = a->beta2, eps = a->eps;
    const float decay = 1.0f - lr * wd;
    const float step_size = (float)(lr / (1.0 - pow(a->beta1, a->step)));
    const float inv_bc2 = (float)(1.0 / (1.0 - pow(a->beta2, a->step)));
#pragma omp parallel for schedule(static) if (count >= CPU_PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        float mi = b1 * m[i] + (1.0f - b1) * g[i];
        float vi = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * mi / (sqrtf(vi * inv_bc2) + eps);
    }
}

void cpu_adamw(Backend *b, float *p, const float *g, float *m, float *v, const AdamWRun *runs, int nruns,
               const AdamWArgs *a) {
    (void)b;
    for (int r = 0; r < nruns; r++) {
        size_t o = runs[r].offset;
        adamw_run(p + o, g + o, m + o, v + o, runs[r].count, runs[r].lr, runs[r].wd, a);
    }
}
