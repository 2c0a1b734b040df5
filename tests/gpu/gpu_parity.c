/* gpu_parity.c: every op of the cuda backend against the cpu backend (the oracle), on random inputs
 * and odd sizes, including the accumulate = 1 paths, in fp32, fp16 and bf16, with and without loss
 * scaling. Plain C, no cmocka and no OpenBLAS, because GPU machines may lack both. One line per case;
 * exits non-zero if any case fails, 0 with a "skipped" line when no GPU is usable.
 * The op cases are the rows of tests/op_cases.h flagged OC_GPU (test_cpu_ops runs the same table on
 * the cpu alone): run_rows dispatches each to its kind's parity_* runner, in every pass.
 * CNNTRAIN_GPU_QUICK=1 (the compute-sanitizer pass) runs the rows flagged OC_QUICK, and fewer passes.
 * CNNTRAIN_PARITY_SELF=1 (make test, tests/test_parity_self.sh): a second cpu backend stands in for
 * cuda, every pass in fp32, so the harness and the table are exercised without a GPU; every case
 * must then agree within TOL_SELF.
 *
 * Error measure: relative L2 norm, ||gpu - cpu|| / ||cpu|| (absolute when cpu is all zero), in double.
 * Tolerances (fp32): 1e-5 for elementwise ops, pooling, the loss and AdamW; 1e-4 where long sums meet
 * different summation orders (conv, batch norm, GEMM); 0 for pure data movement.
 *
 * Mixed precision. The cuda backend's activations are fp16 or bf16 (set_compute), its weights a cast
 * copy of the fp32 masters (weights_updated), everything else fp32. The cpu backend stays fp32 and
 * gets the same inputs: every activation and weight is first rounded to the GPU's dtype (through
 * the GPU), so the comparison measures the GPU's arithmetic (fp32 accumulation, one rounding of each
 * output, cuDNN's and cuBLAS's choice of kernels), not the rounding of the inputs. One rounding of a
 * result to fp16 (11-bit significand, unit roundoff 2^-11 = 4.9e-4) leaves a relative L2 error of
 * about 2.8e-4, to bf16 (8 bits, 2^-8 = 3.9e-3) about 2.3e-3; a backward op may round twice (an
 * accumulated dx: the old value is already rounded) and cuDNN may stage intermediates in the data
 * type. Tolerances, for every compute op: fp16 2e-3, bf16 1e-2 (about 4x the expected error); fp32
 * ones (statistics, loss, parameter gradients) computed from low-precision inputs use the same.
 * Loss scaling (S = 64 in fp32, 512 in fp16, 1000 in bf16): the GPU gets every incoming gradient
 * (dy) multiplied by S (softmax_xent: its scale argument), and every gradient it computes carries
 * S, activation gradients (dx, dlogits) and parameter gradients (conv dw, bn dgamma/dbeta, linear
 * dw/db) alike: they are compared after dividing by S (scale_carried() holds this rule); the
 * optimizer divides S out once (adamw's grad_scale). An fp16 overflow must reach the fp32
 * gradients as inf (count_nonfinite), not be clamped.
 * Batch norm runs through cuDNN in fp32 and fp16 and through the backend's own kernels in bf16; a
 * second cuda backend made with CNNTRAIN_BN_KERNELS=own checks the own kernels in fp32 and fp16 too.
 * Memory-bound kernels move 16 bytes per access when the channel count (or, flat, the pointers)
 * allow: shapes mix channel counts that do (64, 16, 8, 24) and do not (65, 3), and one test passes
 * pointers one element off alignment. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/rng.h"
#include "op_cases.h"
#include "suite.h"

static const double TOL_EXACT = 0.0, TOL_ELEM = 1e-5, TOL_REDUCE = 1e-4, TOL_F16 = 2e-3, TOL_BF16 = 1e-2;
/* An fp32 convolution for which cuDNN ran no plain fp32 kernel runs on TF32 tensor cores (the
 * backend warns and counts it in Backend.tf32_ops): TF32 keeps 10 significand bits, fp16's unit
 * roundoff, so such a case gets fp16's tolerance and is marked [TF32] rather than failing blindly. */
static const double TOL_TF32 = 2e-3;

/* Self-check (CNNTRAIN_PARITY_SELF=1): two cpu backends agree up to the rounding of the inputs by
 * a loss scale that is not a power of two (1000: ~1e-7), so every case must pass within TOL_SELF. */
static const double TOL_SELF = 1e-6;

static Backend *cpu, *gpu;
static Rng rng;
static int ncases, nfailed, quick, self_check;
static double worst_err; /* self-check: the largest error reported */

/* The pass being run: the GPU's activation dtype, its loss scale, and a label for the report. */
static DType gdt = DT_F32;
static float gscale = 1.0f;
static char gpass[64] = "";

/* ---- loss scaling: the one place that knows which values carry the scale ----
 * The GPU gets every incoming gradient (dy) multiplied by the pass's scale S; what each output
 * carries follows from the backend's contract (backend.h, softmax_xent): every gradient computed
 * from a scaled dy carries S, activation gradients (dx, dlogits) and parameter gradients (conv dw,
 * bn dgamma/dbeta, linear dw/db) alike; the optimizer divides it out once. The comparisons divide
 * the GPU's output by scale_carried(its kind); xent_both passes S to the GPU's softmax_xent. */
typedef enum {
    OUT_VALUE,      /* forward outputs, statistics, optimizer state */
    OUT_ACT_GRAD,   /* dx, dlogits: the GPU's carry the scale, as dy did */
    OUT_PARAM_GRAD, /* dw, dgamma, dbeta, db */
} OutKind;

static float scale_carried(OutKind kind) {
    switch (kind) {
    case OUT_ACT_GRAD: return gscale;
    case OUT_PARAM_GRAD: return gscale; /* no op divides it out: the optimizer does */
    case OUT_VALUE: break;
    }
    return 1.0f;
}

/* The loss scale of the pass: what the GPU's incoming gradients are multiplied by. */
static void set_loss_scale(float scale) { gscale = scale; }

/* An fp32 tolerance, or the pass's low-precision one. */
static double tol(double fp32_tol) { return gdt == DT_F32 ? fp32_tol : gdt == DT_F16 ? TOL_F16 : TOL_BF16; }

/* ---- reporting ---- */

static void report(const char *name, double err, double tol, const char *why) {
    if (self_check) {
        tol = fmin(tol, TOL_SELF);
        if (!why && !(err <= worst_err)) worst_err = err; /* NaN sticks */
    }
    int ok = !why && err <= tol; /* NaN fails */
    char full[256];
    snprintf(full, sizeof full, "%s%s", gpass, name);
    ncases++;
    if (!ok) nfailed++;
    if (why)
        printf("FAIL %-84s %s\n", full, why);
    else
        printf("%s %-84s err=%.2e tol=%.0e\n", ok ? "PASS" : "FAIL", full, err, tol);
    fflush(stdout);
}

static double rel_err(const float *got, const float *want, size_t count) {
    double num = 0, den = 0;
    for (size_t i = 0; i < count; i++) {
        double d = (double)got[i] - (double)want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    if (!isfinite(num) || !isfinite(den)) return NAN;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float *host_floats(size_t count) {
    float *p = calloc(count ? count : 1, sizeof(float)); /* zeroed: nothing reads garbage */
    if (!p) {
        fprintf(stderr, "gpu_parity: out of host memory\n");
        exit(2);
    }
    return p;
}

static void fill_normal(float *p, size_t count, float mean, float scale) {
    for (size_t i = 0; i < count; i++) p[i] = mean + scale * rng_normal(&rng);
}

/* Round v[0..count) to the GPU's activation dtype in place (a trip through a GPU tensor). */
static void round_host(float *v, size_t count) {
    if (gdt == DT_F32 || count == 0) return;
    Tensor t = {NULL, (int)count, 1, 1, 1, gdt};
    t.data = gpu->ops->alloc(gpu, count * dtype_size(gdt));
    gpu->ops->tensor_upload(gpu, &t, v);
    gpu->ops->tensor_download(gpu, v, &t);
    gpu->ops->release(gpu, t.data);
}

/* ---- a tensor held by both backends: fp32 on the cpu, the pass's dtype on the GPU ---- */

typedef struct {
    Tensor c, g;
} Pair;

static Pair pair_new(int n, int c, int h, int w) {
    Pair p;
    Tensor t = {NULL, n, c, h, w, DT_F32};
    p.c = t;
    p.g = t;
    p.g.dtype = gdt;
    p.c.data = cpu->ops->alloc(cpu, tensor_numel(&t) * sizeof(float));
    p.g.data = gpu->ops->alloc(gpu, tensor_numel(&t) * dtype_size(gdt));
    return p;
}

static void pair_free(Pair *p) {
    cpu->ops->release(cpu, p->c.data);
    gpu->ops->release(gpu, p->g.data);
}

/* The GPU gets host*scale, the cpu what the GPU holds divided by scale: the same values, up to the
 * rounding of a scale that is not a power of two. */
static void pair_set_scaled(Pair *p, const float *host, float scale) {
    size_t n = tensor_numel(&p->c);
    float *v = host_floats(n);
    for (size_t i = 0; i < n; i++) v[i] = host[i] * scale;
    gpu->ops->tensor_upload(gpu, &p->g, v);
    if (gdt != DT_F32 || scale != 1.0f) {
        gpu->ops->tensor_download(gpu, v, &p->g);
        for (size_t i = 0; i < n; i++) v[i] /= scale;
    }
    cpu->ops->tensor_upload(cpu, &p->c, v);
    free(v);
}

static void pair_set(Pair *p, const float *host) { pair_set_scaled(p, host, 1.0f); }

static void pair_random(Pair *p, float mean, float scale) {
    size_t n = tensor_numel(&p->c);
    float *h = host_floats(n);
    fill_normal(h, n, mean, scale);
    pair_set(p, h);
    free(h);
}

/* An incoming gradient: the GPU's copy carries the pass's loss scale, as an activation gradient does. */
static void pair_random_grad(Pair *p, float mean, float scale) {
    size_t n = tensor_numel(&p->c);
    float *h = host_floats(n);
    fill_normal(h, n, mean, scale);
    pair_set_scaled(p, h, scale_carried(OUT_ACT_GRAD));
    free(h);
}

/* Compares the GPU's values divided by scale with the cpu's. */
static void cmp_pair_scaled(const char *name, const Pair *p, float scale, double tol) {
    const Tensor *c = &p->c, *g = &p->g;
    if (c->n != g->n || c->c != g->c || c->h != g->h || c->w != g->w || g->dtype != gdt) {
        char why[160];
        snprintf(why, sizeof why, "shape cuda %dx%dx%dx%d %s vs cpu %dx%dx%dx%d", g->n, g->c, g->h, g->w,
                 dtype_name(g->dtype), c->n, c->c, c->h, c->w);
        report(name, 0, tol, why);
        return;
    }
    size_t n = tensor_numel(c);
    float *hc = host_floats(n), *hg = host_floats(n);
    cpu->ops->tensor_download(cpu, hc, c);
    gpu->ops->tensor_download(gpu, hg, g);
    if (scale != 1.0f)
        for (size_t i = 0; i < n; i++) hg[i] /= scale;
    report(name, rel_err(hg, hc, n), tol, NULL);
    free(hc);
    free(hg);
}

static void cmp_pair(const char *name, const Pair *p, double tol) {
    cmp_pair_scaled(name, p, scale_carried(OUT_VALUE), tol);
}

/* An activation gradient. */
static void cmp_pair_grad(const char *name, const Pair *p, double tol) {
    cmp_pair_scaled(name, p, scale_carried(OUT_ACT_GRAD), tol);
}

/* ---- a flat float array held by both backends (parameters, gradients, statistics) ---- */

typedef struct {
    float *c, *g;
    size_t count;
} Buf;

static Buf buf_new(size_t count) {
    Buf b = {cpu->ops->alloc(cpu, count * sizeof(float)), gpu->ops->alloc(gpu, count * sizeof(float)), count};
    return b;
}

static void buf_free(Buf *b) {
    cpu->ops->release(cpu, b->c);
    gpu->ops->release(gpu, b->g);
}

static void buf_set(Buf *b, const float *host) {
    cpu->ops->upload(cpu, b->c, host, b->count * sizeof(float));
    gpu->ops->upload(gpu, b->g, host, b->count * sizeof(float));
}

static void buf_random(Buf *b, float mean, float scale) {
    float *h = host_floats(b->count);
    fill_normal(h, b->count, mean, scale);
    buf_set(b, h);
    free(h);
}

/* Weights for a conv or linear layer: rounded to the pass's dtype (so the cpu computes with what
 * the GPU's copy holds), uploaded, and the GPU's copy refreshed. */
static void buf_random_weights(Buf *b, float scale) {
    float *h = host_floats(b->count);
    fill_normal(h, b->count, 0, scale);
    round_host(h, b->count);
    buf_set(b, h);
    gpu->ops->weights_updated(gpu, b->g, b->count);
    free(h);
}

/* Compares the GPU's values, divided by the scale an output of this kind carries, with the cpu's. */
static void cmp_buf_as(const char *name, const Buf *b, OutKind kind, double tol) {
    float *hc = host_floats(b->count), *hg = host_floats(b->count);
    float scale = scale_carried(kind);
    cpu->ops->download(cpu, hc, b->c, b->count * sizeof(float));
    gpu->ops->download(gpu, hg, b->g, b->count * sizeof(float));
    if (scale != 1.0f)
        for (size_t i = 0; i < b->count; i++) hg[i] /= scale;
    report(name, rel_err(hg, hc, b->count), tol, NULL);
    free(hc);
    free(hg);
}

static void cmp_buf(const char *name, const Buf *b, double tol) { cmp_buf_as(name, b, OUT_VALUE, tol); }

/* softmax_xent on both backends (labels and lam on each; lam NULL without mixup): the cpu's is
 * the unscaled loss and dlogits, the GPU's dlogits carry the pass's loss scale. */
static void xent_both(const Pair *z, const int32_t *la_c, const int32_t *la_g, const int32_t *lb_c,
                      const int32_t *lb_g, const Buf *lam, float smoothing, Buf *loss, Pair *dz) {
    cpu->ops->softmax_xent(cpu, &z->c, la_c, lb_c, lam ? lam->c : NULL, smoothing, 1.0f, loss->c, &dz->c);
    gpu->ops->softmax_xent(gpu, &z->g, la_g, lb_g, lam ? lam->g : NULL, smoothing, gscale, loss->g, &dz->g);
}

/* ---- memory and transfers (cuda alone: exact) ---- */

static void test_memory(void) {
    const size_t n = 1237;
    float *h = host_floats(n), *back = host_floats(n);
    fill_normal(h, n, 0, 1);

    float *a = gpu->ops->alloc(gpu, n * sizeof(float)), *b = gpu->ops->alloc(gpu, n * sizeof(float));
    gpu->ops->download(gpu, back, a, n * sizeof(float));
    double e = 0;
    for (size_t i = 0; i < n; i++) e += fabs(back[i]);
    report("alloc is zero-filled (1237 floats)", e, TOL_EXACT, NULL);

    gpu->ops->upload(gpu, a, h, n * sizeof(float));
    gpu->ops->download(gpu, back, a, n * sizeof(float));
    report("upload/download round trip (1237 floats)", rel_err(back, h, n), TOL_EXACT, NULL);

    gpu->ops->copy(gpu, b, a, n * sizeof(float));
    gpu->ops->download(gpu, back, b, n * sizeof(float));
    report("copy (1237 floats)", rel_err(back, h, n), TOL_EXACT, NULL);

    gpu->ops->zero(gpu, b, n * sizeof(float));
    gpu->ops->sync(gpu);
    gpu->ops->download(gpu, back, b, n * sizeof(float));
    e = 0;
    for (size_t i = 0; i < n; i++) e += fabs(back[i]);
    report("zero (1237 floats)", e, TOL_EXACT, NULL);
    gpu->ops->release(gpu, a);
    gpu->ops->release(gpu, b);
    free(h);
    free(back);

    /* NCHW round trip, and the same NHWC bytes on both backends (weights are shared as raw K,R,S,C). */
    static const int shapes[][4] = {{3, 5, 7, 6}, {4, 10, 1, 1}, {2, 1, 5, 3}, {3, 65, 7, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        char name[128];
        Pair p = pair_new(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3]);
        size_t cnt = tensor_numel(&p.c);
        float *x = host_floats(cnt), *y = host_floats(cnt), *raw_c = host_floats(cnt), *raw_g = host_floats(cnt);
        fill_normal(x, cnt, 0, 1);
        pair_set(&p, x);
        gpu->ops->tensor_download(gpu, y, &p.g);
        snprintf(name, sizeof name, "tensor_upload/download round trip %dx%dx%dx%d", p.c.n, p.c.c, p.c.h, p.c.w);
        report(name, rel_err(y, x, cnt), TOL_EXACT, NULL);
        cpu->ops->download(cpu, raw_c, p.c.data, cnt * sizeof(float));
        gpu->ops->download(gpu, raw_g, p.g.data, cnt * sizeof(float));
        snprintf(name, sizeof name, "device layout equals cpu layout (NHWC) %dx%dx%dx%d", p.c.n, p.c.c, p.c.h, p.c.w);
        report(name, rel_err(raw_g, raw_c, cnt), TOL_EXACT, NULL);
        free(x);
        free(y);
        free(raw_c);
        free(raw_g);
        pair_free(&p);
    }
}

/* fp16/bf16 activations: a round trip rounds each value once (relative error at most the unit
 * roundoff), and a value that is already rounded comes back exactly. */
static void test_memory_lowp(void) {
    static const int shapes[][4] = {{3, 5, 7, 6}, {4, 10, 1, 1}, {3, 65, 7, 7}};
    double unit = gdt == DT_F16 ? 1.0 / 2048 : 1.0 / 256;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        char name[128];
        Tensor t = {NULL, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], gdt};
        size_t cnt = tensor_numel(&t);
        t.data = gpu->ops->alloc(gpu, cnt * dtype_size(gdt));
        float *x = host_floats(cnt), *y = host_floats(cnt), *z = host_floats(cnt);
        fill_normal(x, cnt, 0, 1);
        gpu->ops->tensor_upload(gpu, &t, x);
        gpu->ops->tensor_download(gpu, y, &t);
        double worst = 0;
        for (size_t i = 0; i < cnt; i++) {
            double r = fabs((double)y[i] - x[i]) / fabs((double)x[i]);
            if (x[i] != 0 && !(r <= worst)) worst = r; /* NaN sticks */
        }
        snprintf(name, sizeof name, "tensor_upload/download rounds once (max relative error) %dx%dx%dx%d", t.n, t.c,
                 t.h, t.w);
        report(name, worst, unit, NULL);
        gpu->ops->tensor_upload(gpu, &t, y);
        gpu->ops->tensor_download(gpu, z, &t);
        snprintf(name, sizeof name, "tensor_upload/download of rounded values is exact %dx%dx%dx%d", t.n, t.c, t.h,
                 t.w);
        report(name, rel_err(z, y, cnt), TOL_EXACT, NULL);
        free(x);
        free(y);
        free(z);
        gpu->ops->release(gpu, t.data);
    }
}

/* The cast copy follows the master weights: after new values and weights_updated (in two halves,
 * as an optimizer working through parameter groups would call it), a conv computes with the new
 * weights. */
static void test_weights_refresh(void) {
    const ConvGeom g = {16, 24, 3, 1, 1};
    int n = 2, h = 6, w = 5;
    size_t wcount = (size_t)g.cout * g.k * g.k * g.cin;
    Pair x = pair_new(n, g.cin, h, w), y = pair_new(n, g.cout, h, w);
    Buf wt = buf_new(wcount);
    pair_random(&x, 0, 1);
    buf_random_weights(&wt, 0.1f);
    gpu->ops->conv_forward(gpu, &g, &x.g, wt.g, &y.g);
    float *h2 = host_floats(wcount);
    fill_normal(h2, wcount, 0, 0.1f);
    round_host(h2, wcount);
    buf_set(&wt, h2);
    gpu->ops->weights_updated(gpu, wt.g, wcount / 2);
    gpu->ops->weights_updated(gpu, wt.g + wcount / 2, wcount - wcount / 2);
    cpu->ops->conv_forward(cpu, &g, &x.c, wt.c, &y.c);
    gpu->ops->conv_forward(gpu, &g, &x.g, wt.g, &y.g);
    cmp_pair("conv_forward after new weights + weights_updated (two halves)", &y, tol(TOL_REDUCE));
    free(h2);
    pair_free(&x);
    pair_free(&y);
    buf_free(&wt);
}

/* An fp16 overflow in a parameter gradient must reach the fp32 gradient as inf (the loss scaler's
 * signal), never be clamped; and the same op at a safe scale must be finite. A 1x1 conv over
 * 4x16x16 positions sums 1024 products for each weight: with dy*32768 (itself well inside fp16's
 * range) the sums are ~2.6e5, past fp16's 65504. */
static void test_fp16_overflow(void) {
    const ConvGeom g = {8, 8, 1, 1, 0};
    int n = 4, h = 16, w = 16;
    size_t wcount = (size_t)g.cout * g.cin;
    Pair x = pair_new(n, g.cin, h, w), dy = pair_new(n, g.cout, h, w);
    Buf dw = buf_new(wcount);
    pair_random(&x, 0, 1);
    float saved = gscale;
    const float scales[2] = {1.0f, 32768.0f};
    for (int k = 0; k < 2; k++) {
        set_loss_scale(scales[k]);
        pair_random_grad(&dy, 0, 0.25f);
        gpu->ops->conv_backward_filter(gpu, &g, &x.g, &dy.g, dw.g);
        size_t bad = gpu->ops->count_nonfinite(gpu, dw.g, wcount);
        char name[160], why[96];
        snprintf(name, sizeof name, "fp16 conv dw at loss_scale %g: %s", scales[k],
                 k ? "overflow reaches the fp32 gradient as inf" : "all finite");
        snprintf(why, sizeof why, "%zu of %zu gradients are not finite", bad, wcount);
        report(name, 0, 0, (k ? bad == 0 : bad != 0) ? why : NULL);
    }
    set_loss_scale(saved);
    pair_free(&x);
    pair_free(&dy);
    buf_free(&dw);
}

/* ---- convolution ---- */

static int tf32_at_case_start; /* gpu->tf32_ops when the current conv case began */

/* The tolerance for a conv result in the current pass: TOL_TF32, with the name marked, once a conv
 * of this case has run on TF32 in an fp32 pass. */
static double conv_tol(char *name, size_t len) {
    if (gdt != DT_F32 || gpu->tf32_ops == tf32_at_case_start) return tol(TOL_REDUCE);
    size_t used = strlen(name);
    snprintf(name + used, len - used, " [TF32]");
    return TOL_TF32;
}

static void parity_conv(const OpCase *oc) {
    const ConvGeom *g = &oc->conv;
    int n = oc->n, h = oc->h, w = oc->w;
    int oh = conv_out_size(h, g->k, g->stride, g->pad), ow = conv_out_size(w, g->k, g->stride, g->pad);
    char tag[96], name[160];
    snprintf(tag, sizeof tag, "%d->%d k%d s%d p%d x=%dx%dx%dx%d", g->cin, g->cout, g->k, g->stride, g->pad, n,
             g->cin, h, w);
    size_t wcount = (size_t)g->cout * g->k * g->k * g->cin;
    Pair x = pair_new(n, g->cin, h, w), y = pair_new(n, g->cout, oh, ow), dy = pair_new(n, g->cout, oh, ow),
         dx = pair_new(n, g->cin, h, w);
    Buf wt = buf_new(wcount), dw = buf_new(wcount);
    pair_random(&x, 0, 1);
    buf_random_weights(&wt, 1.0f / sqrtf((float)(g->k * g->k * g->cin)));
    pair_random_grad(&dy, 0, 1);

    tf32_at_case_start = gpu->tf32_ops;
    cpu->ops->conv_forward(cpu, g, &x.c, wt.c, &y.c);
    gpu->ops->conv_forward(gpu, g, &x.g, wt.g, &y.g);
    snprintf(name, sizeof name, "conv_forward %s", tag);
    cmp_pair(name, &y, conv_tol(name, sizeof name));

    for (int acc = 0; acc <= 1; acc++) {
        pair_random_grad(&dx, 0, 1); /* overwritten (acc 0) or added to (acc 1) */
        cpu->ops->conv_backward_data(cpu, g, &dy.c, wt.c, &dx.c, acc);
        gpu->ops->conv_backward_data(gpu, g, &dy.g, wt.g, &dx.g, acc);
        snprintf(name, sizeof name, "conv_backward_data acc=%d %s", acc, tag);
        cmp_pair_grad(name, &dx, conv_tol(name, sizeof name));
    }

    buf_random(&dw, 0, 1); /* must be overwritten */
    cpu->ops->conv_backward_filter(cpu, g, &x.c, &dy.c, dw.c);
    gpu->ops->conv_backward_filter(gpu, g, &x.g, &dy.g, dw.g);
    snprintf(name, sizeof name, "conv_backward_filter (dw) %s", tag);
    cmp_buf_as(name, &dw, OUT_PARAM_GRAD, conv_tol(name, sizeof name));

    /* the same shape again goes through the cached plan */
    cpu->ops->conv_forward(cpu, g, &x.c, wt.c, &y.c);
    gpu->ops->conv_forward(gpu, g, &x.g, wt.g, &y.g);
    snprintf(name, sizeof name, "conv_forward (cached plan) %s", tag);
    cmp_pair(name, &y, conv_tol(name, sizeof name));

    pair_free(&x);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
    buf_free(&wt);
    buf_free(&dw);
}

/* ---- batch norm ---- */

/* The own kernels take 16 bytes of channels per access when c % 8 == 0 (c % 4 in fp32): 16, 32, 64
 * and 8 do, 65 and 3 do not. 64x8x64x64 has 262144 rows: more slabs than a warp has lanes. A mean
 * of 100 with std 1 checks the one-pass variance against cancellation. */
static void parity_bn(const OpCase *oc) {
    const float momentum = 0.1f, eps = 1e-5f;
    int n = oc->n, c = oc->c, h = oc->h, w = oc->w;
    char tag[96], name[160];
    if (oc->bn.mean != 0.5f)
        snprintf(tag, sizeof tag, "%dx%dx%dx%d mean=%g std=%g", n, c, h, w, oc->bn.mean, oc->bn.std);
    else
        snprintf(tag, sizeof tag, "%dx%dx%dx%d", n, c, h, w);
    int sync = (oc->flags & OC_SYNC) != 0; /* sync_bn's path (one rank) on both backends */
    cpu->sync_bn = gpu->sync_bn = sync;
    if (sync) snprintf(tag + strlen(tag), sizeof tag - strlen(tag), " sync_bn");
    Pair x = pair_new(n, c, h, w), y = pair_new(n, c, h, w), dy = pair_new(n, c, h, w), dx = pair_new(n, c, h, w);
    Buf gamma = buf_new(c), beta = buf_new(c), rmean = buf_new(c), rvar = buf_new(c), smean = buf_new(c),
        sinv = buf_new(c), dgamma = buf_new(c), dbeta = buf_new(c);
    float *stats_m = host_floats(c), *stats_v = host_floats(c);
    for (int i = 0; i < c; i++) {
        stats_m[i] = 0.1f * rng_normal(&rng);
        stats_v[i] = 0.5f + rng_uniform(&rng);
    }
    pair_random(&x, oc->bn.mean, oc->bn.std); /* a non-zero mean, as after a conv */
    buf_random(&gamma, 1.0f, 0.2f);
    buf_random(&beta, 0.0f, 0.2f);
    buf_set(&rmean, stats_m);
    buf_set(&rvar, stats_v);

    cpu->ops->bn_forward_train(cpu, &x.c, gamma.c, beta.c, rmean.c, rvar.c, momentum, eps, smean.c, sinv.c, &y.c);
    gpu->ops->bn_forward_train(gpu, &x.g, gamma.g, beta.g, rmean.g, rvar.g, momentum, eps, smean.g, sinv.g, &y.g);
    snprintf(name, sizeof name, "bn_forward_train y %s", tag);
    cmp_pair(name, &y, tol(TOL_REDUCE));
    snprintf(name, sizeof name, "bn_forward_train running_mean %s", tag);
    cmp_buf(name, &rmean, tol(TOL_REDUCE));
    snprintf(name, sizeof name, "bn_forward_train running_var (unbiased update) %s", tag);
    cmp_buf(name, &rvar, tol(TOL_REDUCE));
    snprintf(name, sizeof name, "bn_forward_train save_mean %s", tag);
    cmp_buf(name, &smean, tol(TOL_REDUCE));
    snprintf(name, sizeof name, "bn_forward_train save_invstd %s", tag);
    cmp_buf(name, &sinv, tol(TOL_REDUCE));

    pair_random_grad(&dy, 0, 1);
    for (int acc = 0; acc <= 1; acc++) {
        pair_random_grad(&dx, 0, 1);
        cpu->ops->bn_backward(cpu, &x.c, &dy.c, gamma.c, smean.c, sinv.c, dgamma.c, dbeta.c, &dx.c, acc);
        gpu->ops->bn_backward(gpu, &x.g, &dy.g, gamma.g, smean.g, sinv.g, dgamma.g, dbeta.g, &dx.g, acc);
        snprintf(name, sizeof name, "bn_backward acc=%d dx %s", acc, tag);
        cmp_pair_grad(name, &dx, tol(TOL_REDUCE));
        snprintf(name, sizeof name, "bn_backward acc=%d dgamma %s", acc, tag);
        cmp_buf_as(name, &dgamma, OUT_PARAM_GRAD, tol(TOL_REDUCE));
        snprintf(name, sizeof name, "bn_backward acc=%d dbeta %s", acc, tag);
        cmp_buf_as(name, &dbeta, OUT_PARAM_GRAD, tol(TOL_REDUCE));
    }

    /* inference and frozen-statistics backward from identical running statistics */
    buf_set(&rmean, stats_m);
    buf_set(&rvar, stats_v);
    cpu->ops->bn_forward_infer(cpu, &x.c, gamma.c, beta.c, rmean.c, rvar.c, eps, &y.c);
    gpu->ops->bn_forward_infer(gpu, &x.g, gamma.g, beta.g, rmean.g, rvar.g, eps, &y.g);
    snprintf(name, sizeof name, "bn_forward_infer y %s", tag);
    cmp_pair(name, &y, tol(TOL_REDUCE));
    for (int acc = 0; acc <= 1; acc++) {
        pair_random_grad(&dx, 0, 1);
        cpu->ops->bn_backward_infer(cpu, &x.c, &dy.c, gamma.c, rmean.c, rvar.c, eps, dgamma.c, dbeta.c, &dx.c, acc);
        gpu->ops->bn_backward_infer(gpu, &x.g, &dy.g, gamma.g, rmean.g, rvar.g, eps, dgamma.g, dbeta.g, &dx.g, acc);
        snprintf(name, sizeof name, "bn_backward_infer acc=%d dx %s", acc, tag);
        cmp_pair_grad(name, &dx, tol(TOL_REDUCE));
        snprintf(name, sizeof name, "bn_backward_infer acc=%d dgamma %s", acc, tag);
        cmp_buf_as(name, &dgamma, OUT_PARAM_GRAD, tol(TOL_REDUCE));
        snprintf(name, sizeof name, "bn_backward_infer acc=%d dbeta %s", acc, tag);
        cmp_buf_as(name, &dbeta, OUT_PARAM_GRAD, tol(TOL_REDUCE));
    }

    free(stats_m);
    free(stats_v);
    pair_free(&x);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
    Buf *bufs[] = {&gamma, &beta, &rmean, &rvar, &smean, &sinv, &dgamma, &dbeta};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) buf_free(bufs[i]);
    cpu->sync_bn = gpu->sync_bn = 0;
}

/* ---- ReLU, add, accumulate ---- */

/* A tensor of shape (n, c, h, w) one element into a larger allocation on both backends: its data
 * pointer is not 16-byte aligned, so the cuda kernels must take their one-element path. */
static Pair pair_view_offset(Pair *base, int n, int c, int h, int w) {
    Pair v = *base;
    v.c.data = (float *)base->c.data + 1;
    v.g.data = (char *)base->g.data + dtype_size(gdt);
    v.c.n = v.g.n = n;
    v.c.c = v.g.c = c;
    v.c.h = v.g.h = h;
    v.c.w = v.g.w = w;
    return v;
}

/* ReLU, add and accumulate on pointers one element off alignment (the 16-byte path's fallback). */
static void parity_elementwise_unaligned(const OpCase *oc) {
    const int n = oc->n, c = oc->c, h = oc->h, w = oc->w, count = n * c * h * w;
    char name[160];
    Pair bx = pair_new(1, count + 1, 1, 1), by = pair_new(1, count + 1, 1, 1), bd = pair_new(1, count + 1, 1, 1);
    Pair x = pair_view_offset(&bx, n, c, h, w), y = pair_view_offset(&by, n, c, h, w),
         d = pair_view_offset(&bd, n, c, h, w);
    pair_random(&x, 0, 1);
    cpu->ops->relu_forward(cpu, &x.c, &y.c);
    gpu->ops->relu_forward(gpu, &x.g, &y.g);
    snprintf(name, sizeof name, "relu_forward unaligned (pointers one element off) %dx%dx%dx%d", n, c, h, w);
    cmp_pair(name, &y, tol(TOL_ELEM));
    pair_random_grad(&x, 0, 1);
    pair_random_grad(&d, 0, 1);
    cpu->ops->relu_backward(cpu, &y.c, &x.c, &d.c, 1);
    gpu->ops->relu_backward(gpu, &y.g, &x.g, &d.g, 1);
    snprintf(name, sizeof name, "relu_backward acc=1 unaligned %dx%dx%dx%d", n, c, h, w);
    cmp_pair_grad(name, &d, tol(TOL_ELEM));
    pair_random(&x, 0, 1);
    pair_random(&d, 0, 1);
    cpu->ops->add(cpu, &x.c, &d.c, &y.c);
    gpu->ops->add(gpu, &x.g, &d.g, &y.g);
    snprintf(name, sizeof name, "add unaligned %dx%dx%dx%d", n, c, h, w);
    cmp_pair(name, &y, tol(TOL_ELEM));
    cpu->ops->accumulate(cpu, &x.c, &d.c, 1);
    gpu->ops->accumulate(gpu, &x.g, &d.g, 1);
    snprintf(name, sizeof name, "accumulate acc=1 unaligned %dx%dx%dx%d", n, c, h, w);
    cmp_pair(name, &d, tol(TOL_ELEM));
    pair_free(&bx);
    pair_free(&by);
    pair_free(&bd);
}

/* ReLU, in place too; mixup; progressive resizing (square maps); add; accumulate. */
static void parity_elementwise(const OpCase *oc) {
    if (oc->flags & OC_UNALIGNED) {
        parity_elementwise_unaligned(oc);
        return;
    }
    int n = oc->n, c = oc->c, h = oc->h, w = oc->w;
    char tag[64], name[160];
    snprintf(tag, sizeof tag, "%dx%dx%dx%d", n, c, h, w);
    size_t bytes = (size_t)n * c * h * w * sizeof(float), gbytes = (size_t)n * c * h * w * dtype_size(gdt);
    Pair x = pair_new(n, c, h, w), y = pair_new(n, c, h, w), z = pair_new(n, c, h, w), dy = pair_new(n, c, h, w),
         dx = pair_new(n, c, h, w);
    pair_random(&x, 0, 1);

    cpu->ops->relu_forward(cpu, &x.c, &y.c);
    gpu->ops->relu_forward(gpu, &x.g, &y.g);
    snprintf(name, sizeof name, "relu_forward %s", tag);
    cmp_pair(name, &y, tol(TOL_ELEM));

    cpu->ops->copy(cpu, z.c.data, x.c.data, bytes);
    gpu->ops->copy(gpu, z.g.data, x.g.data, gbytes);
    cpu->ops->relu_forward(cpu, &z.c, &z.c);
    gpu->ops->relu_forward(gpu, &z.g, &z.g);
    snprintf(name, sizeof name, "relu_forward in place %s", tag);
    cmp_pair(name, &z, tol(TOL_ELEM));

    /* mixup: partners a reversed batch (image 0 with the last, ...), weights in [0.5, 1] */
    int32_t partner[64]; /* elementwise rows have at most 64 images */
    float lam[64];
    for (int i = 0; i < n; i++) {
        partner[i] = n - 1 - i;
        lam[i] = 0.5f + 0.5f * (float)i / (float)n;
    }
    cpu->ops->copy(cpu, z.c.data, x.c.data, bytes);
    gpu->ops->copy(gpu, z.g.data, x.g.data, gbytes);
    cpu->ops->mix_images(cpu, &z.c, partner, lam);
    gpu->ops->mix_images(gpu, &z.g, partner, lam);
    snprintf(name, sizeof name, "mix_images %s", tag);
    cmp_pair(name, &z, tol(TOL_ELEM));

    /* progressive resizing: a crop and a bilinear resize to an odd smaller side */
    if (h == w && h > 2) {
        int d = h - 2;
        Pair small = pair_new(n, c, d, d);
        for (int crop = 0; crop <= 1; crop++) {
            cpu->ops->shrink_batch(cpu, &x.c, d, crop, crop, 2 * crop, &small.c);
            gpu->ops->shrink_batch(gpu, &x.g, d, crop, crop, 2 * crop, &small.g);
            snprintf(name, sizeof name, "shrink_batch %s to %d (%s)", tag, d, crop ? "crop at 1,2" : "resize");
            cmp_pair(name, &small, crop ? TOL_EXACT : tol(TOL_ELEM));
        }
        pair_free(&small);
    }

    pair_random_grad(&dy, 0, 1);
    for (int acc = 0; acc <= 1; acc++) {
        pair_random_grad(&dx, 0, 1);
        cpu->ops->relu_backward(cpu, &y.c, &dy.c, &dx.c, acc);
        gpu->ops->relu_backward(gpu, &y.g, &dy.g, &dx.g, acc);
        snprintf(name, sizeof name, "relu_backward acc=%d %s", acc, tag);
        cmp_pair_grad(name, &dx, tol(TOL_ELEM));
    }

    pair_random(&z, 0, 1);
    cpu->ops->add(cpu, &x.c, &z.c, &y.c);
    gpu->ops->add(gpu, &x.g, &z.g, &y.g);
    snprintf(name, sizeof name, "add %s", tag);
    cmp_pair(name, &y, tol(TOL_ELEM));

    cpu->ops->add(cpu, &z.c, &x.c, &z.c);
    gpu->ops->add(gpu, &z.g, &x.g, &z.g);
    snprintf(name, sizeof name, "add in place (y = a) %s", tag);
    cmp_pair(name, &z, tol(TOL_ELEM));

    for (int acc = 0; acc <= 1; acc++) {
        pair_random(&dx, 0, 1);
        cpu->ops->accumulate(cpu, &x.c, &dx.c, acc);
        gpu->ops->accumulate(gpu, &x.g, &dx.g, acc);
        snprintf(name, sizeof name, "accumulate acc=%d %s", acc, tag);
        cmp_pair(name, &dx, tol(TOL_ELEM));
    }

    pair_free(&x);
    pair_free(&y);
    pair_free(&z);
    pair_free(&dy);
    pair_free(&dx);
}

/* ---- pooling ---- */

/* Small integers: many ties, so the first-maximum rules are tested, exactly representable in
 * every dtype. */
static void pair_random_ties(Pair *p) {
    size_t n = tensor_numel(&p->c);
    float *h = host_floats(n);
    for (size_t i = 0; i < n; i++) h[i] = floorf(2.0f * rng_normal(&rng));
    pair_set(p, h);
    free(h);
}

/* OC_TIES: x of small integers (pair_random_ties) */
static void parity_pool(const OpCase *oc) {
    const PoolGeom *g = &oc->pool;
    int n = oc->n, c = oc->c, h = oc->h, w = oc->w, ties = (oc->flags & OC_TIES) != 0;
    int oh = pool_out_size(h, g), ow = pool_out_size(w, g);
    int is_max = oc->kind == OP_MAXPOOL;
    const char *kind = is_max ? "maxpool" : "avgpool";
    char tag[112], name[160];
    snprintf(tag, sizeof tag, "k%d s%d p%d ceil=%d x=%dx%dx%dx%d -> %dx%d%s", g->k, g->stride, g->pad, g->ceil_mode,
             n, c, h, w, oh, ow, ties ? " ties" : "");
    Pair x = pair_new(n, c, h, w), y = pair_new(n, c, oh, ow), dy = pair_new(n, c, oh, ow), dx = pair_new(n, c, h, w);
    if (ties)
        pair_random_ties(&x);
    else
        pair_random(&x, 0, 1);
    if (is_max) {
        cpu->ops->maxpool_forward(cpu, g, &x.c, &y.c);
        gpu->ops->maxpool_forward(gpu, g, &x.g, &y.g);
    } else {
        cpu->ops->avgpool_forward(cpu, g, &x.c, &y.c);
        gpu->ops->avgpool_forward(gpu, g, &x.g, &y.g);
    }
    snprintf(name, sizeof name, "%s_forward %s", kind, tag);
    cmp_pair(name, &y, tol(TOL_ELEM));
    pair_random_grad(&dy, 0, 1);
    for (int acc = 0; acc <= 1; acc++) {
        pair_random_grad(&dx, 0, 1);
        if (is_max) {
            cpu->ops->maxpool_backward(cpu, g, &x.c, &y.c, &dy.c, &dx.c, acc);
            gpu->ops->maxpool_backward(gpu, g, &x.g, &y.g, &dy.g, &dx.g, acc);
        } else {
            cpu->ops->avgpool_backward(cpu, g, &dy.c, &dx.c, acc);
            gpu->ops->avgpool_backward(gpu, g, &dy.g, &dx.g, acc);
        }
        snprintf(name, sizeof name, "%s_backward acc=%d %s", kind, acc, tag);
        cmp_pair_grad(name, &dx, tol(TOL_ELEM));
    }
    pair_free(&x);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
}

static void parity_gap(const OpCase *oc) {
    int n = oc->n, c = oc->c, h = oc->h, w = oc->w;
    char name[160];
    Pair x = pair_new(n, c, h, w), y = pair_new(n, c, 1, 1), dy = pair_new(n, c, 1, 1), dx = pair_new(n, c, h, w);
    pair_random(&x, 0, 1);
    cpu->ops->global_avgpool_forward(cpu, &x.c, &y.c);
    gpu->ops->global_avgpool_forward(gpu, &x.g, &y.g);
    snprintf(name, sizeof name, "global_avgpool_forward %dx%dx%dx%d", n, c, h, w);
    cmp_pair(name, &y, tol(TOL_ELEM));
    pair_random_grad(&dy, 0, 1);
    for (int acc = 0; acc <= 1; acc++) {
        pair_random_grad(&dx, 0, 1);
        cpu->ops->global_avgpool_backward(cpu, &dy.c, &dx.c, acc);
        gpu->ops->global_avgpool_backward(gpu, &dy.g, &dx.g, acc);
        snprintf(name, sizeof name, "global_avgpool_backward acc=%d %dx%dx%dx%d", acc, n, c, h, w);
        cmp_pair_grad(name, &dx, tol(TOL_ELEM));
    }
    pair_free(&x);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
}

/* ---- fastai's head: concat pool and dropout ---- */

/* Concat pool and dropout take 16 bytes of channels per thread when c % 8 == 0 (c % 4 in fp32).
 * OC_TIES: argmax routing to the first maximum. */
static void parity_concat_pool(const OpCase *oc) {
    int n = oc->n, c = oc->c, h = oc->h, w = oc->w, ties = (oc->flags & OC_TIES) != 0;
    char tag[64], name[160];
    snprintf(tag, sizeof tag, "%dx%dx%dx%d%s", n, c, h, w, ties ? " ties" : "");
    Pair x = pair_new(n, c, h, w), y = pair_new(n, 2 * c, 1, 1), dy = pair_new(n, 2 * c, 1, 1),
         dx = pair_new(n, c, h, w);
    if (ties)
        pair_random_ties(&x);
    else
        pair_random(&x, 0, 1);
    cpu->ops->concat_pool_forward(cpu, &x.c, &y.c);
    gpu->ops->concat_pool_forward(gpu, &x.g, &y.g);
    snprintf(name, sizeof name, "concat_pool_forward %s", tag);
    cmp_pair(name, &y, tol(TOL_ELEM));
    pair_random_grad(&dy, 0, 1);
    for (int acc = 0; acc <= 1; acc++) {
        pair_random_grad(&dx, 0, 1);
        cpu->ops->concat_pool_backward(cpu, &x.c, &y.c, &dy.c, &dx.c, acc);
        gpu->ops->concat_pool_backward(gpu, &x.g, &y.g, &dy.g, &dx.g, acc);
        snprintf(name, sizeof name, "concat_pool_backward acc=%d (argmax routing) %s", acc, tag);
        cmp_pair_grad(name, &dx, tol(TOL_ELEM));
    }
    pair_free(&x);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
}

/* Dropout masks come from rng_hash on both backends: any mask difference is an O(1) error. */
static void parity_dropout(const OpCase *oc) {
    int n = oc->n, c = oc->c, h = oc->h, w = oc->w;
    float p = oc->drop_p;
    uint64_t seed = rng_u64(&rng);
    char tag[96], name[160];
    snprintf(tag, sizeof tag, "p=%g %dx%dx%dx%d", p, n, c, h, w);
    Pair x = pair_new(n, c, h, w), y = pair_new(n, c, h, w), dy = pair_new(n, c, h, w), dx = pair_new(n, c, h, w);
    pair_random(&x, 0, 1);
    cpu->ops->dropout_forward(cpu, &x.c, p, seed, &y.c);
    gpu->ops->dropout_forward(gpu, &x.g, p, seed, &y.g);
    snprintf(name, sizeof name, "dropout_forward %s", tag);
    cmp_pair(name, &y, tol(TOL_ELEM));
    cpu->ops->dropout_forward(cpu, &x.c, p, seed, &x.c);
    gpu->ops->dropout_forward(gpu, &x.g, p, seed, &x.g);
    snprintf(name, sizeof name, "dropout_forward in place %s", tag);
    cmp_pair(name, &x, tol(TOL_ELEM));
    pair_random_grad(&dy, 0, 1);
    for (int acc = 0; acc <= 1; acc++) {
        pair_random_grad(&dx, 0, 1);
        cpu->ops->dropout_backward(cpu, &dy.c, p, seed, &dx.c, acc);
        gpu->ops->dropout_backward(gpu, &dy.g, p, seed, &dx.g, acc);
        snprintf(name, sizeof name, "dropout_backward acc=%d %s", acc, tag);
        cmp_pair_grad(name, &dx, tol(TOL_ELEM));
    }
    pair_free(&x);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
}

/* ---- linear ---- */

static void parity_linear(const OpCase *oc) {
    int n = oc->n, in = oc->c, out = oc->linear.out, has_b = oc->linear.bias;
    char tag[96], name[160];
    snprintf(tag, sizeof tag, "n=%d %d->%d%s", n, in, out, has_b ? " +bias" : "");
    Pair x = pair_new(n, in, 1, 1), y = pair_new(n, out, 1, 1), dy = pair_new(n, out, 1, 1),
         dx = pair_new(n, in, 1, 1);
    Buf wt = buf_new((size_t)out * in), b = buf_new(out), dw = buf_new((size_t)out * in), db = buf_new(out);
    pair_random(&x, 0, 1);
    buf_random_weights(&wt, 1.0f / sqrtf((float)in));
    buf_random(&b, 0, 0.5f);
    cpu->ops->linear_forward(cpu, &x.c, wt.c, has_b ? b.c : NULL, &y.c);
    gpu->ops->linear_forward(gpu, &x.g, wt.g, has_b ? b.g : NULL, &y.g);
    snprintf(name, sizeof name, "linear_forward %s", tag);
    cmp_pair(name, &y, tol(TOL_REDUCE));

    pair_random_grad(&dy, 0, 1);
    for (int acc = 0; acc <= 1; acc++) {
        pair_random_grad(&dx, 0, 1);
        buf_random(&dw, 0, 1);
        buf_random(&db, 0, 1);
        cpu->ops->linear_backward(cpu, &x.c, &dy.c, wt.c, dw.c, has_b ? db.c : NULL, &dx.c, acc);
        gpu->ops->linear_backward(gpu, &x.g, &dy.g, wt.g, dw.g, has_b ? db.g : NULL, &dx.g, acc);
        snprintf(name, sizeof name, "linear_backward acc=%d dx %s", acc, tag);
        cmp_pair_grad(name, &dx, tol(TOL_REDUCE));
        snprintf(name, sizeof name, "linear_backward acc=%d dw %s", acc, tag);
        cmp_buf_as(name, &dw, OUT_PARAM_GRAD, tol(TOL_REDUCE));
        if (has_b) {
            snprintf(name, sizeof name, "linear_backward acc=%d db %s", acc, tag);
            cmp_buf_as(name, &db, OUT_PARAM_GRAD, tol(TOL_REDUCE));
        }
    }
    pair_free(&x);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
    buf_free(&wt);
    buf_free(&b);
    buf_free(&dw);
    buf_free(&db);
}

/* ---- softmax cross-entropy ---- */

static void parity_xent(const OpCase *oc) {
    int n = oc->n, k = oc->c, mix = oc->xent.mixup;
    float eps = oc->xent.smoothing;
    char tag[96], name[160];
    snprintf(tag, sizeof tag, "n=%d classes=%d smoothing=%.1f%s", n, k, eps, mix ? " mixup" : "");
    Pair z = pair_new(n, k, 1, 1), dz = pair_new(n, k, 1, 1);
    Buf loss = buf_new(1), lam = buf_new(n);
    int32_t *la = malloc((size_t)n * sizeof *la), *lb = malloc((size_t)n * sizeof *lb);
    float *hl = host_floats(n);
    for (int j = 0; j < n; j++) {
        la[j] = (int32_t)rng_below(&rng, (uint32_t)k);
        lb[j] = (int32_t)rng_below(&rng, (uint32_t)k);
        hl[j] = 0.5f + 0.5f * rng_uniform(&rng); /* mixup keeps lam >= 0.5 */
    }
    buf_set(&lam, hl);
    size_t lbytes = (size_t)n * sizeof(int32_t);
    int32_t *la_c = cpu->ops->alloc(cpu, lbytes), *lb_c = cpu->ops->alloc(cpu, lbytes);
    int32_t *la_g = gpu->ops->alloc(gpu, lbytes), *lb_g = gpu->ops->alloc(gpu, lbytes);
    cpu->ops->upload(cpu, la_c, la, lbytes);
    cpu->ops->upload(cpu, lb_c, lb, lbytes);
    gpu->ops->upload(gpu, la_g, la, lbytes);
    gpu->ops->upload(gpu, lb_g, lb, lbytes);
    pair_random(&z, 0, 3);

    xent_both(&z, la_c, la_g, mix ? lb_c : NULL, mix ? lb_g : NULL, mix ? &lam : NULL, eps, &loss, &dz);
    snprintf(name, sizeof name, "softmax_xent loss %s", tag);
    cmp_buf(name, &loss, tol(TOL_ELEM));
    snprintf(name, sizeof name, "softmax_xent dlogits %s", tag);
    cmp_pair_grad(name, &dz, tol(TOL_ELEM));

    /* in place: dlogits aliasing logits */
    pair_random(&z, 0, 3);
    xent_both(&z, la_c, la_g, mix ? lb_c : NULL, mix ? lb_g : NULL, mix ? &lam : NULL, eps, &loss, &z);
    snprintf(name, sizeof name, "softmax_xent in place loss %s", tag);
    cmp_buf(name, &loss, tol(TOL_ELEM));
    snprintf(name, sizeof name, "softmax_xent in place dlogits %s", tag);
    cmp_pair_grad(name, &z, tol(TOL_ELEM));

    cpu->ops->release(cpu, la_c);
    cpu->ops->release(cpu, lb_c);
    gpu->ops->release(gpu, la_g);
    gpu->ops->release(gpu, lb_g);
    free(la);
    free(lb);
    free(hl);
    pair_free(&z);
    pair_free(&dz);
    buf_free(&loss);
    buf_free(&lam);
}

/* ---- AdamW ---- */

/* scan_nonfinite (queued: count and first index into device memory) read back with read_async /
 * read_wait through pinned memory, against the cpu backend: none, one, several (the first of
 * several found by the atomic min), an empty range; and both slots in flight at once. */
static void test_scan_and_read(void) {
    const size_t count = 100003;
    Buf x = buf_new(count);
    uint64_t *cg = gpu->ops->alloc(gpu, 4 * sizeof(uint64_t)), cres[2];
    uint64_t *host = gpu->ops->alloc_host(gpu, 4 * sizeof(uint64_t));
    float *h = host_floats(count);
    static const struct {
        const char *name;
        size_t bad[3];
        int nbad;
        size_t n;
    } cases[] = {{"all finite", {0}, 0, 100003},
                 {"one NaN at 77777", {77777}, 1, 100003},
                 {"inf at 99999, NaN at 5, -inf at 60000", {99999, 5, 60000}, 3, 100003},
                 {"empty range", {0}, 0, 0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fill_normal(h, count, 0, 1);
        for (int i = 0; i < cases[k].nbad; i++) h[cases[k].bad[i]] = i == 1 ? NAN : i == 2 ? -INFINITY : INFINITY;
        if (cases[k].nbad == 1) h[cases[k].bad[0]] = NAN;
        buf_set(&x, h);
        int slot = (int)(k & 1);
        host[2 * slot] = host[2 * slot + 1] = 12345; /* must be overwritten */
        gpu->ops->scan_nonfinite(gpu, x.g, cases[k].n, cg + 2 * slot);
        gpu->ops->read_async(gpu, host + 2 * slot, cg + 2 * slot, 2 * sizeof(uint64_t), slot);
        gpu->ops->read_wait(gpu, slot);
        cpu->ops->scan_nonfinite(cpu, x.c, cases[k].n, cres);
        char name[160], why[160];
        snprintf(name, sizeof name, "scan_nonfinite + read_async/read_wait: %s", cases[k].name);
        snprintf(why, sizeof why, "cuda: %llu values, first at %llu; cpu: %llu, first at %llu",
                 (unsigned long long)host[2 * slot], (unsigned long long)host[2 * slot + 1],
                 (unsigned long long)cres[0], (unsigned long long)cres[1]);
        int ok = host[2 * slot] == cres[0] && host[2 * slot + 1] == cres[1] &&
                 cres[0] == (uint64_t)cases[k].nbad && (cases[k].nbad || cres[1] == UINT64_MAX);
        report(name, 0, 0, ok ? NULL : why);
        size_t c = gpu->ops->count_nonfinite(gpu, x.g, cases[k].n);
        snprintf(name, sizeof name, "count_nonfinite: %s", cases[k].name);
        snprintf(why, sizeof why, "%zu, want %d", c, cases[k].nbad);
        report(name, 0, 0, c == (size_t)cases[k].nbad ? NULL : why);
    }
    free(h);
    gpu->ops->free_host(gpu, host);
    gpu->ops->release(gpu, cg);
    buf_free(&x);
}

/* Three steps on gradients drawn 1 / grad_scale times larger (the row's loss scale, which the op
 * divides out). n = 0: many runs in one launch, as the trainer calls it: 300 runs of odd lengths with
 * their own lr and wd (no decay on every third), gaps between them (frozen parameters stay). */
static void parity_adamw(const OpCase *oc) {
    enum { NRUNS = 300 };
    AdamWRun runs[NRUNS];
    AdamWArgs a = oc->adamw;
    int nruns = 1;
    size_t count = (size_t)oc->n;
    char tag[160], name[192];
    if (count) {
        runs[0] = (AdamWRun){0, count, a.lr, a.wd};
        snprintf(tag, sizeof tag, " count=%zu lr=%g b1=%g b2=%g eps=%g wd=%g grad_scale=%g, 3 steps", count, a.lr,
                 a.beta1, a.beta2, a.eps, a.wd, oc->grad_scale);
    } else {
        nruns = NRUNS;
        for (int r = 0; r < NRUNS; r++) {
            size_t len = 1 + (size_t)(r * 37 % 101);
            runs[r] = (AdamWRun){count, len, 1e-3f * (1 + r % 5), r % 3 ? 0.05f : 0.0f};
            count += len + (r % 7 == 0 ? 13 : 0);
        }
        snprintf(tag, sizeof tag, ", 300 runs with their own lr/wd and frozen gaps, 3 steps");
    }
    Buf p = buf_new(count), g = buf_new(count), m = buf_new(count), v = buf_new(count);
    buf_random(&p, 0, 1);
    for (int step = 1; step <= 3; step++) {
        a.step = step;
        buf_random(&g, 0, 1.0f / oc->grad_scale); /* loss-scaled: the op takes g * grad_scale */
        cpu->ops->adamw(cpu, p.c, g.c, m.c, v.c, runs, nruns, &a, oc->grad_scale);
        gpu->ops->adamw(gpu, p.g, g.g, m.g, v.g, runs, nruns, &a, oc->grad_scale);
    }
    snprintf(name, sizeof name, "adamw p%s", tag);
    cmp_buf(name, &p, TOL_ELEM);
    if (nruns == 1) { /* (the many-run case compared p and v only) */
        snprintf(name, sizeof name, "adamw m%s", tag);
        cmp_buf(name, &m, TOL_ELEM);
    }
    snprintf(name, sizeof name, "adamw v%s", tag);
    cmp_buf(name, &v, TOL_ELEM);
    buf_free(&p);
    buf_free(&g);
    buf_free(&m);
    buf_free(&v);
}

/* ---- the table's rows ---- */

static void run_case(const OpCase *oc) {
    switch (oc->kind) {
    case OP_CONV: parity_conv(oc); break;
    case OP_BN: parity_bn(oc); break;
    case OP_ELEMENTWISE: parity_elementwise(oc); break;
    case OP_MAXPOOL:
    case OP_AVGPOOL: parity_pool(oc); break;
    case OP_GAP: parity_gap(oc); break;
    case OP_CONCAT_POOL: parity_concat_pool(oc); break;
    case OP_DROPOUT: parity_dropout(oc); break;
    case OP_LINEAR: parity_linear(oc); break;
    case OP_XENT: parity_xent(oc); break;
    case OP_ADAMW: parity_adamw(oc); break;
    }
}

#define KIND(k) (1u << (k))
/* what every pass runs (AdamW computes in fp32 whatever the pass: the fp32 part alone runs it) */
static const unsigned OPS_PASS = ~KIND(OP_ADAMW);
/* the ops with parameter gradients, and the loss: what loss scaling touches most */
static const unsigned OPS_GRAD = KIND(OP_CONV) | KIND(OP_BN) | KIND(OP_LINEAR) | KIND(OP_XENT);

/* The table's gpu rows of the kinds in mask (under CNNTRAIN_GPU_QUICK those flagged OC_QUICK), in the
 * current pass. */
static void run_rows(unsigned kinds) {
    for (int i = 0; i < OP_NCASES; i++) {
        const OpCase *oc = &op_cases[i];
        if ((oc->flags & OC_GPU) && (kinds & KIND(oc->kind)) && (!quick || (oc->flags & OC_QUICK))) run_case(oc);
    }
}

/* Switches the GPU to dt with loss scale `scale`; 0 (after reporting why) when it cannot. */
static int set_pass(DType dt, float scale) {
    const char *as = self_check && dt != DT_F32 ? "fp32 for " : "";
    if (scale != 1.0f)
        snprintf(gpass, sizeof gpass, "[%s%s scale=%g] ", as, dtype_name(dt), scale);
    else
        snprintf(gpass, sizeof gpass, "[%s%s] ", as, dtype_name(dt));
    if (self_check) { /* the cpu backend computes in fp32 only */
        gdt = DT_F32;
        set_loss_scale(scale);
        return 1;
    }
    if (!gpu->ops->set_compute || gpu->ops->set_compute(gpu, dt) != 0) {
        report("set_compute", 0, 0, "the cuda backend refuses this dtype");
        return 0;
    }
    if (gpu->compute != dt) {
        report("set_compute", 0, 0, "Backend.compute did not follow");
        return 0;
    }
    gdt = dt;
    set_loss_scale(scale);
    return 1;
}

static void check_memory(Backend *b, const char *which) {
    char name[96], why[96];
    b->ops->sync(b);
    gpass[0] = 0;
    if (self_check) return; /* the cpu backend keeps its scratch buffers until it is destroyed */
    snprintf(name, sizeof name, "cuda (%s) bytes_in_use back to 0 after every release", which);
    snprintf(why, sizeof why, "%zu bytes still counted as in use", b->bytes_in_use);
    report(name, 0, 0, b->bytes_in_use ? why : NULL);
    snprintf(name, sizeof name, "cuda (%s) peak_bytes recorded", which);
    report(name, b->peak_bytes > 0 ? 0 : 1, 0, NULL);
}

/* The backend under test: cuda, or in self-check mode a second cpu backend. NULL: skip (said why). */
static Backend *create_under_test(char *err, size_t len) {
    if (self_check) return backend_create("cpu", err, len);
    /* A binary without the CUDA backend (stale objects from a CUDA=0 build) would otherwise "skip"
     * on a machine that has a GPU, and the suite would pass without testing anything. */
    if (!strstr(backend_list(), "cuda")) {
        printf("gpu_parity: FAIL: built without the CUDA backend (backends: %s); rebuild with make clean && make "
               "test-gpu\n",
               backend_list());
        exit(1);
    }
    Backend *b = backend_create("cuda", err, len);
    if (!b) printf("gpu_parity: no usable GPU (%s); skipped\n", err);
    return b;
}

static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && v[0] && strcmp(v, "0") != 0;
}

int main(int argc, char **argv) {
    static const char *const parts[] = {"fp32", "fp16", "fp16-scaled", "bf16", "bf16-scaled", "own-bn"};
    suite_args("gpu_parity", argc, argv, parts, (int)(sizeof parts / sizeof parts[0]));
    char err[512];
    self_check = env_flag("CNNTRAIN_PARITY_SELF");
    quick = env_flag("CNNTRAIN_GPU_QUICK");
    gpu = create_under_test(err, sizeof err);
    if (!gpu) return 0;
    cpu = backend_create("cpu", err, sizeof err);
    if (!cpu) {
        fprintf(stderr, "gpu_parity: cannot create the cpu backend: %s\n", err);
        backend_destroy(gpu);
        return 1;
    }
    if (self_check)
        printf("gpu_parity: self-check: a second cpu backend stands in for cuda, every pass in fp32 (the "
               "low-precision passes' own checks skipped, the unscaled fp16 and bf16 passes' ops too: they "
               "would repeat fp32), tolerance %.0e\n",
               TOL_SELF);
    rng_seed(&rng, 20240607);

    /* fp32, exactly as before mixed precision */
    if (suite_part("fp32")) {
        test_memory();
        run_rows(OPS_PASS);
        run_rows(KIND(OP_ADAMW));
        test_scan_and_read();
        if (!quick && set_pass(DT_F32, 64.0f)) run_rows(OPS_GRAD); /* the fp32 path's unscaling */
    }

    /* fp16 and bf16, without and with loss scaling (a scale that is not a power of two for bf16) */
    if (suite_part("fp16") && set_pass(DT_F16, 1.0f)) {
        if (!self_check) {
            char why[96];
            DType got = backend_set_precision(gpu, DT_F16);
            snprintf(why, sizeof why, "returned %s", dtype_name(got));
            report("backend_set_precision(fp16)", 0, 0, got == DT_F16 ? NULL : why);
            test_memory_lowp();
        }
        test_weights_refresh();
        if (!quick && !self_check) run_rows(OPS_PASS); /* (self-check: the fp32 pass again) */
        if (!self_check) test_fp16_overflow();
    }
    /* 512: the largest conv dw here sums 168 products of N(0,1) x N(0,1)*scale, ~4.5 sigma = 58*scale,
     * which must stay below fp16's 65504 (test_fp16_overflow checks what happens past it) */
    if (suite_part("fp16-scaled") && set_pass(DT_F16, 512.0f)) run_rows(OPS_PASS);
    if (suite_part("bf16") && !self_check && set_pass(DT_BF16, 1.0f)) {
        test_memory_lowp();
        test_weights_refresh();
        run_rows(OPS_PASS);
    }
    if (suite_part("bf16-scaled") && !quick && set_pass(DT_BF16, 1000.0f)) run_rows(OPS_GRAD);

    /* batch norm through the backend's own kernels (what bf16 uses) in fp32 and fp16 too */
    if (suite_part("own-bn") && !quick) {
        setenv("CNNTRAIN_BN_KERNELS", "own", 1);
        Backend *own = self_check ? backend_create("cpu", err, sizeof err) : backend_create("cuda", err, sizeof err);
        unsetenv("CNNTRAIN_BN_KERNELS");
        if (!own) {
            report("cuda backend with CNNTRAIN_BN_KERNELS=own", 0, 0, err);
        } else {
            Backend *main_gpu = gpu;
            gpu = own;
            const char *labels[] = {"[own bn fp32] ", "[own bn fp16 scale=512] "};
            const DType dts[] = {DT_F32, self_check ? DT_F32 : DT_F16};
            for (int k = 0; k < 2; k++) {
                if (!self_check && gpu->ops->set_compute(gpu, dts[k]) != 0) continue;
                gdt = dts[k];
                set_loss_scale(k ? 512.0f : 1.0f);
                snprintf(gpass, sizeof gpass, "%s", labels[k]);
                run_rows(KIND(OP_BN));
            }
            check_memory(own, "own bn");
            backend_destroy(own);
            gpu = main_gpu;
        }
    }
    set_pass(DT_F32, 1.0f);
    check_memory(gpu, "main");

    if (gpu->tf32_ops)
        printf("note: %d fp32 convolution directions had no plain fp32 kernel and ran on TF32; their cases are "
               "marked [TF32] (tolerance %.0e); CNNTRAIN_CUDNN_LOG=1 names them\n",
               gpu->tf32_ops, TOL_TF32);
    if (self_check) printf("gpu_parity: self-check: worst error %.2e\n", worst_err);
    printf("gpu_parity: %d cases, %d failed (%s)\n", ncases, nfailed, self_check ? "cpu vs cpu self-check" : "cuda vs cpu");
    backend_destroy(cpu);
    backend_destroy(gpu);
    return nfailed ? 1 : 0;
}
