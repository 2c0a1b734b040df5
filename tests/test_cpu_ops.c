/* test_cpu_ops.c: the CPU backend's ops.
 *
 * Gradients: every backward is checked against central finite differences of the scalar
 * L = sum(y * r) for a fixed random r (so dy = r), with L summed in double from the float outputs.
 * A component fails when its error is both over 1% of its own size and over 0.1% of the largest
 * gradient component (tiny components drown in float rounding; a real bug is off by O(1)).
 * Every component is checked for small tensors, a random sample for large ones.
 * Values: conv against a direct convolution, pool geometry and divisors, batch-norm statistics,
 * the loss and one AdamW step against hand-computed numbers, NCHW <-> NHWC transfers, memory
 * accounting. Each dx is pre-filled with NaN before an overwrite (accumulate = 0) call, so a dx
 * element left unwritten fails, and the accumulate = 1 path is checked to add exactly.
 *
 * The op cases (shapes, geometries, what to check) are the rows of tests/op_cases.h, which
 * tests/gpu/gpu_parity.c runs too: every row flagged OC_FD or OC_VALUES is one cmocka test here
 * (run_op_case), its kind's runner below doing the checks. The tests after the runners are values
 * worked out by hand (ties, pool geometry, statistics, the loss, AdamW, transfers, memory).
 *
 * Adding an op:
 *   1. src/backend/backend.h: the function pointer and its contract (layouts, accumulate, dtype).
 *   2. src/cpu/<family>.c (the file named as its cuda/ twin), declared in src/cpu/backend.h, and
 *      its entry in src/cpu/backend.c's table.
 *   3. cuda/<family>.cu, declared in cuda/cuda_backend.h, its entry in cuda/cuda_backend.cu.
 *   4. A node kind in src/net/model.h, its shapes and FLOPs in src/net/model_build.c, its forward and
 *      backward in src/net/model.c; the architectures that use it in models/.
 *   5. Tests: ONE row in tests/op_cases.h's table (its shape and what to check), which this file
 *      (values and finite differences) and tests/gpu/gpu_parity.c (the GPU against this backend in
 *      every dtype) both run. An op of a new kind also needs its OpKind and a runner in each of the
 *      two files' switches (-Wswitch names a file that lacks one); where PyTorch has it,
 *      scripts/torch_reference.py's op cases with tests/test_parity.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/rng.h"
#include "op_cases.h"

static Backend *be;
static Rng rng;

/* ---- helpers ---- */

static Tensor tnew(int n, int c, int h, int w) {
    Tensor t = {be->ops->alloc(be, (size_t)n * c * h * w * sizeof(float)), n, c, h, w, DT_F32};
    return t;
}
static float *fnew(size_t count) { return be->ops->alloc(be, count * sizeof(float)); }
static void tfree(Tensor *t) { be->ops->release(be, t->data); }
static void ffree(void *p) { be->ops->release(be, p); }
static float *F(const Tensor *t) { return t->data; }

static void fill_normal(float *p, size_t n, float scale, float offset) {
    for (size_t i = 0; i < n; i++) p[i] = offset + scale * rng_normal(&rng);
}
static void fill_value(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
}
/* Distinct values spaced `gap` apart in random order: no ties, no kinks within a small step. */
static void fill_distinct(float *p, size_t n, float gap) {
    for (size_t i = 0; i < n; i++) p[i] = ((float)i - (float)n / 2) * gap;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = rng_below(&rng, (uint32_t)(i + 1));
        float t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static double dot(const float *y, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

typedef double (*LossFn)(void *ctx);

/* Central differences of f with respect to p[i] against ana[i]; see the file comment for the rule. */
static void check_grad(const char *what, LossFn f, void *ctx, float *p, size_t count, const float *ana, float h) {
    const size_t all = 1500;
    size_t nchk = count <= all ? count : 120; /* each costs two forward passes */
    double gscale = 0;
    for (size_t i = 0; i < count; i++) {
        if (!isfinite(ana[i])) fail_msg("%s: analytic gradient [%zu] = %g (left unwritten?)", what, i, ana[i]);
        gscale = fmax(gscale, fabs(ana[i]));
    }
    if (gscale == 0) fail_msg("%s: analytic gradient is all zero; the test is not testing anything", what);
    int fails = 0;
    double worst = 0;
    for (size_t k = 0; k < nchk; k++) {
        size_t i = count <= all ? k : rng_below(&rng, (uint32_t)count);
        float save = p[i], up = save + h, dn = save - h;
        p[i] = up;
        double lp = f(ctx);
        p[i] = dn;
        double lm = f(ctx);
        p[i] = save;
        double num = (lp - lm) / ((double)up - (double)dn);
        double err = fabs(num - ana[i]), rel = err / fmax(fmax(fabs(num), fabs(ana[i])), 1e-30);
        if (err > 1e-3 * gscale) worst = fmax(worst, rel);
        if (!(err <= 1e-3 * gscale || rel <= 1e-2) && fails++ < 5)
            print_error("%s[%zu]: analytic %.6g, numeric %.6g (rel err %.3g)\n", what, i, ana[i], num, rel);
    }
    if (fails) fail_msg("%s: %d of %zu components wrong", what, fails, nchk);
    (void)worst;
}

/* a == b + c elementwise. The backend may add c's terms into b one by one, so the rounding is that
 * of the terms: allow 1e-5 of the operands plus 1e-5 of c's largest element. */
static void check_sum(const char *what, const float *a, const float *b, const float *c, size_t n) {
    double cmax = 0;
    for (size_t i = 0; i < n; i++) cmax = fmax(cmax, fabs(c[i]));
    for (size_t i = 0; i < n; i++) {
        double want = (double)b[i] + c[i];
        if (!(fabs(a[i] - want) <= 1e-5 * (fabs(b[i]) + fabs(c[i]) + cmax) + 1e-30))
            fail_msg("%s[%zu]: %.9g, want %.9g + %.9g", what, i, a[i], b[i], c[i]);
    }
}

static void check_close(const char *what, double got, double want, double tol) {
    if (!(fabs(got - want) <= tol)) fail_msg("%s: %.9g, want %.9g (tol %g)", what, got, want, tol);
}

/* A backward that writes dx with the given accumulate flag. */
typedef void (*BwdFn)(void *ctx, Tensor *dx, int accumulate);

/* Runs bwd with accumulate = 0 into a NaN-filled dx (result: grad), then with accumulate = 1 into
 * random values P, and checks the second is P + grad. Leaves grad in dx. */
static void check_accumulate(const char *what, BwdFn bwd, void *ctx, Tensor *dx) {
    size_t n = tensor_numel(dx);
    Tensor dx2 = tnew(dx->n, dx->c, dx->h, dx->w);
    float *prior = malloc(n * sizeof(float));
    fill_value(F(dx), n, NAN);
    bwd(ctx, dx, 0);
    fill_normal(prior, n, 1.0f, 0.0f);
    memcpy(F(&dx2), prior, n * sizeof(float));
    bwd(ctx, &dx2, 1);
    char name[160];
    snprintf(name, sizeof name, "%s accumulate", what);
    check_sum(name, F(&dx2), prior, F(dx), n);
    free(prior);
    tfree(&dx2);
}

/* ---- convolution ---- */

typedef struct {
    ConvGeom g;
    Tensor x, y, dy;
    float *w;
} ConvCtx;

static double conv_loss(void *p) {
    ConvCtx *c = p;
    be->ops->conv_forward(be, &c->g, &c->x, c->w, &c->y);
    return dot(F(&c->y), F(&c->dy), tensor_numel(&c->y));
}

static void conv_bwd_data(void *p, Tensor *dx, int acc) {
    ConvCtx *c = p;
    be->ops->conv_backward_data(be, &c->g, &c->dy, c->w, dx, acc);
}

/* One output element of a direct convolution, in double; mag = sum |terms| for the tolerance. */
static double conv_ref(const ConvCtx *c, int n, int oy, int ox, int k, double *mag) {
    const ConvGeom *g = &c->g;
    const float *x = F(&c->x);
    double s = 0, m = 0;
    for (int r = 0; r < g->k; r++)
        for (int q = 0; q < g->k; q++) {
            int iy = oy * g->stride - g->pad + r, ix = ox * g->stride - g->pad + q;
            if (iy < 0 || iy >= c->x.h || ix < 0 || ix >= c->x.w) continue;
            for (int ch = 0; ch < g->cin; ch++) {
                double t = (double)x[(((size_t)n * c->x.h + iy) * c->x.w + ix) * g->cin + ch] *
                           c->w[(((size_t)k * g->k + r) * g->k + q) * g->cin + ch];
                s += t;
                m += fabs(t);
            }
        }
    *mag = m;
    return s;
}

static void conv_case(int n, int cin, int h, int w, int cout, int k, int stride, int pad) {
    ConvCtx c = {{cin, cout, k, stride, pad}, {0}, {0}, {0}, NULL};
    int oh = conv_out_size(h, k, stride, pad), ow = conv_out_size(w, k, stride, pad);
    char what[128];
    snprintf(what, sizeof what, "conv %dx%d/%d pad %d, %d->%d on %dx%d", k, k, stride, pad, cin, cout, h, w);
    c.x = tnew(n, cin, h, w);
    c.y = tnew(n, cout, oh, ow);
    c.y.h = c.y.w = c.y.c = -1; /* the op must set the output shape */
    c.dy = tnew(n, cout, oh, ow);
    size_t wcount = (size_t)cout * k * k * cin;
    c.w = fnew(wcount);
    float *dw = fnew(wcount);
    Tensor dx = tnew(n, cin, h, w);
    fill_normal(F(&c.x), tensor_numel(&c.x), 1.0f, 0.0f);
    fill_normal(c.w, wcount, 0.5f, 0.0f);
    fill_normal(F(&c.dy), tensor_numel(&c.dy), 1.0f, 0.0f);

    be->ops->conv_forward(be, &c.g, &c.x, c.w, &c.y);
    assert_int_equal(c.y.n, n), assert_int_equal(c.y.c, cout), assert_int_equal(c.y.h, oh), assert_int_equal(c.y.w, ow);
    for (int i = 0; i < n; i++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int kk = 0; kk < cout; kk++) {
                    double mag, want = conv_ref(&c, i, oy, ox, kk, &mag);
                    float got = F(&c.y)[(((size_t)i * oh + oy) * ow + ox) * cout + kk];
                    if (!(fabs(got - want) <= 1e-5 * mag + 1e-6))
                        fail_msg("%s forward y[%d,%d,%d,%d] = %.7g, want %.7g", what, i, kk, oy, ox, got, want);
                }

    check_accumulate(what, conv_bwd_data, &c, &dx);
    fill_value(dw, wcount, NAN);
    be->ops->conv_backward_filter(be, &c.g, &c.x, &c.dy, dw);
    char name[160];
    snprintf(name, sizeof name, "%s dx", what);
    check_grad(name, conv_loss, &c, F(&c.x), tensor_numel(&c.x), F(&dx), 0.05f);
    snprintf(name, sizeof name, "%s dw", what);
    check_grad(name, conv_loss, &c, c.w, wcount, dw, 0.05f);

    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx), ffree(c.w), ffree(dw);
}

/* A 3x3 pad 1 conv big enough to run in several chunks of images: sampled outputs and gradients
 * against direct sums. */
static void conv_chunked_case(int n, int h, int w, int cin, int cout) {
    ConvCtx c = {{cin, cout, 3, 1, 1}, {0}, {0}, {0}, NULL};
    c.x = tnew(n, cin, h, w);
    c.y = tnew(n, cout, h, w);
    c.dy = tnew(n, cout, h, w);
    size_t wcount = (size_t)cout * 9 * cin;
    c.w = fnew(wcount);
    float *dw = fnew(wcount);
    Tensor dx = tnew(n, cin, h, w);
    fill_normal(F(&c.x), tensor_numel(&c.x), 1.0f, 0.0f);
    fill_normal(c.w, wcount, 0.1f, 0.0f);
    fill_normal(F(&c.dy), tensor_numel(&c.dy), 1.0f, 0.0f);
    be->ops->conv_forward(be, &c.g, &c.x, c.w, &c.y);
    check_accumulate("chunked conv", conv_bwd_data, &c, &dx);
    be->ops->conv_backward_filter(be, &c.g, &c.x, &c.dy, dw);
    const float *dy = F(&c.dy);
    for (int t = 0; t < 400; t++) {
        /* y */
        int i = rng_below(&rng, n), oy = rng_below(&rng, h), ox = rng_below(&rng, w), k = rng_below(&rng, cout);
        if (t % 4 == 0) oy = 0, ox = w - 1; /* a padded corner */
        double mag, want = conv_ref(&c, i, oy, ox, k, &mag);
        check_close("chunked conv y", F(&c.y)[(((size_t)i * h + oy) * w + ox) * cout + k], want, 1e-5 * mag + 1e-6);
        /* dx[i, iy, ix, ch] = sum over windows covering it of dy * w */
        int iy = rng_below(&rng, h), ix = rng_below(&rng, w), ch = rng_below(&rng, cin);
        double s = 0, m = 0;
        for (int r = 0; r < 3; r++)
            for (int q = 0; q < 3; q++) {
                int py = iy + 1 - r, px = ix + 1 - q;
                if (py < 0 || py >= h || px < 0 || px >= w) continue;
                for (int kk = 0; kk < cout; kk++) {
                    double v = (double)dy[(((size_t)i * h + py) * w + px) * cout + kk] *
                               c.w[(((size_t)kk * 3 + r) * 3 + q) * cin + ch];
                    s += v, m += fabs(v);
                }
            }
        check_close("chunked conv dx", F(&dx)[(((size_t)i * h + iy) * w + ix) * cin + ch], s, 1e-5 * m + 1e-6);
    }
    for (int t = 0; t < 40; t++) {
        int k = rng_below(&rng, cout), r = rng_below(&rng, 3), q = rng_below(&rng, 3), ch = rng_below(&rng, cin);
        double s = 0, m = 0;
        for (int i = 0; i < n; i++)
            for (int oy = 0; oy < h; oy++)
                for (int ox = 0; ox < w; ox++) {
                    int iy = oy - 1 + r, ix = ox - 1 + q;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                    double v = (double)dy[(((size_t)i * h + oy) * w + ox) * cout + k] *
                               F(&c.x)[(((size_t)i * h + iy) * w + ix) * cin + ch];
                    s += v, m += fabs(v);
                }
        check_close("chunked conv dw", dw[(((size_t)k * 3 + r) * 3 + q) * cin + ch], s, 1e-5 * m + 1e-6);
    }
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx), ffree(c.w), ffree(dw);
}

/* ---- batch norm ---- */

typedef struct {
    Tensor x, y, dy;
    float *gamma, *beta, *rm, *rv, *sm, *si;
    int infer;
} BnCtx;

static double bn_loss(void *p) {
    BnCtx *c = p;
    if (c->infer)
        be->ops->bn_forward_infer(be, &c->x, c->gamma, c->beta, c->rm, c->rv, 1e-5f, &c->y);
    else
        be->ops->bn_forward_train(be, &c->x, c->gamma, c->beta, c->rm, c->rv, 0.1f, 1e-5f, c->sm, c->si, &c->y);
    return dot(F(&c->y), F(&c->dy), tensor_numel(&c->y));
}

static float *bn_dg, *bn_db; /* where bn_bwd writes the parameter gradients */

static void bn_bwd(void *p, Tensor *dx, int acc) {
    BnCtx *c = p;
    if (c->infer)
        be->ops->bn_backward_infer(be, &c->x, &c->dy, c->gamma, c->rm, c->rv, 1e-5f, bn_dg, bn_db, dx, acc);
    else
        be->ops->bn_backward(be, &c->x, &c->dy, c->gamma, c->sm, c->si, bn_dg, bn_db, dx, acc);
}

static void bn_case(int n, int ch, int h, int w, float mean, float std, int infer, int fd) {
    BnCtx c = {tnew(n, ch, h, w), tnew(n, ch, h, w), tnew(n, ch, h, w), fnew(ch), fnew(ch), fnew(ch), fnew(ch),
               fnew(ch), fnew(ch), infer};
    size_t count = tensor_numel(&c.x);
    fill_normal(F(&c.x), count, std, mean);
    fill_normal(F(&c.dy), count, 1.0f, 0.0f);
    fill_normal(c.gamma, ch, 0.3f, 1.0f);
    fill_normal(c.beta, ch, 0.3f, 0.0f);
    fill_normal(c.rm, ch, 0.3f, 0.2f);
    for (int i = 0; i < ch; i++) c.rv[i] = 0.5f + rng_uniform(&rng);
    bn_loss(&c); /* save_mean / save_invstd for backward */
    Tensor dx = tnew(n, ch, h, w);
    float *dg = fnew(ch), *db = fnew(ch);
    bn_dg = dg, bn_db = db;
    const char *what = infer ? "bn_backward_infer" : "bn_backward";
    check_accumulate(what, bn_bwd, &c, &dx);
    char name[64];
    if (fd) {
        snprintf(name, sizeof name, "%s dx", what);
        check_grad(name, bn_loss, &c, F(&c.x), count, F(&dx), 1e-2f);
        snprintf(name, sizeof name, "%s dgamma", what);
        check_grad(name, bn_loss, &c, c.gamma, ch, dg, 1e-2f);
        snprintf(name, sizeof name, "%s dbeta", what);
        check_grad(name, bn_loss, &c, c.beta, ch, db, 1e-2f);
    }
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx);
    float *ps[] = {c.gamma, c.beta, c.rm, c.rv, c.sm, c.si, dg, db};
    for (int i = 0; i < 8; i++) ffree(ps[i]);
}

/* Statistics after one training step, against two-pass double sums: the running variance uses the
 * unbiased estimate, the normalisation the biased one; offset data checks the one-pass variance. */
static void test_bn_stats(void **state) {
    (void)state;
    const int n = 4, ch = 3, h = 5, w = 5;
    const size_t rows = (size_t)n * h * w;
    for (int offset = 0; offset < 2; offset++) {
        Tensor x = tnew(n, ch, h, w), y = tnew(n, ch, h, w);
        float gamma[3] = {1.0f, 2.0f, 0.5f}, beta[3] = {0.0f, -1.0f, 3.0f};
        float *g = fnew(ch), *b = fnew(ch), *rm = fnew(ch), *rv = fnew(ch), *sm = fnew(ch), *si = fnew(ch);
        memcpy(g, gamma, sizeof gamma), memcpy(b, beta, sizeof beta);
        float rm0[3] = {0.5f, -0.25f, 0.0f}, rv0[3] = {1.0f, 2.0f, 0.5f};
        memcpy(rm, rm0, sizeof rm0), memcpy(rv, rv0, sizeof rv0);
        fill_normal(F(&x), tensor_numel(&x), 1.5f, offset ? 1000.0f : 0.3f);
        be->ops->bn_forward_train(be, &x, g, b, rm, rv, 0.1f, 1e-5f, sm, si, &y);
        for (int c = 0; c < ch; c++) {
            double mean = 0, ss = 0;
            for (size_t r = 0; r < rows; r++) mean += F(&x)[r * ch + c];
            mean /= rows;
            for (size_t r = 0; r < rows; r++) ss += pow(F(&x)[r * ch + c] - mean, 2);
            double var = ss / rows, unbiased = ss / (rows - 1);
            check_close("save_mean", sm[c], mean, 1e-6 * fabs(mean) + 1e-6);
            check_close("save_invstd", si[c], 1 / sqrt(var + 1e-5), 1e-4 / sqrt(var));
            check_close("running_mean", rm[c], 0.9 * rm0[c] + 0.1 * mean, 1e-6 * fabs(mean) + 1e-6);
            check_close("running_var", rv[c], 0.9 * rv0[c] + 0.1 * unbiased, 1e-4 * unbiased);
            /* normalised output: mean beta, biased variance gamma^2 * var / (var + eps) */
            double ym = 0, yv = 0;
            for (size_t r = 0; r < rows; r++) ym += F(&y)[r * ch + c];
            ym /= rows;
            for (size_t r = 0; r < rows; r++) yv += pow(F(&y)[r * ch + c] - ym, 2);
            yv /= rows;
            check_close("y mean", ym, beta[c], 1e-4);
            check_close("y var", yv, gamma[c] * gamma[c] * var / (var + 1e-5), 1e-3 * gamma[c] * gamma[c]);
        }
        tfree(&x), tfree(&y);
        float *ps[] = {g, b, rm, rv, sm, si};
        for (int i = 0; i < 6; i++) ffree(ps[i]);
    }
}

static void test_bn_infer_values(void **state) {
    (void)state;
    Tensor x = tnew(2, 2, 1, 1), y = tnew(2, 2, 1, 1);
    float *g = fnew(2), *b = fnew(2), *rm = fnew(2), *rv = fnew(2);
    float xv[4] = {1, 2, 3, 4}; /* NHWC: sample 0 = (1, 2), sample 1 = (3, 4) */
    memcpy(F(&x), xv, sizeof xv);
    g[0] = 2, g[1] = 1, b[0] = 0.5f, b[1] = -1, rm[0] = 1, rm[1] = 3, rv[0] = 4 - 1e-5f, rv[1] = 1 - 1e-5f;
    be->ops->bn_forward_infer(be, &x, g, b, rm, rv, 1e-5f, &y);
    /* (x - rm) / sqrt(rv + eps) * g + b with sqrt(rv + eps) = 2 and 1 */
    float want[4] = {0.5f, -2.0f, 2.5f, 0.0f};
    for (int i = 0; i < 4; i++) check_close("bn infer", F(&y)[i], want[i], 1e-5);
    tfree(&x), tfree(&y), ffree(g), ffree(b), ffree(rm), ffree(rv);
}

/* ---- relu ---- */

typedef struct { Tensor x, y, dy; } UnCtx; /* a unary op's tensors */

static double relu_loss(void *p) {
    UnCtx *c = p;
    be->ops->relu_forward(be, &c->x, &c->y);
    return dot(F(&c->y), F(&c->dy), tensor_numel(&c->y));
}

static void relu_bwd(void *p, Tensor *dx, int acc) {
    UnCtx *c = p;
    be->ops->relu_backward(be, &c->y, &c->dy, dx, acc);
}

static void relu_case(int n, int ch, int h, int w, int fd) {
    UnCtx c = {tnew(n, ch, h, w), tnew(n, ch, h, w), tnew(n, ch, h, w)};
    size_t count = tensor_numel(&c.x);
    /* keep |x| >= 0.05 so a step of 0.01 never crosses the kink */
    for (size_t i = 0; i < count; i++) {
        float v = rng_normal(&rng);
        F(&c.x)[i] = v >= 0 ? v + 0.05f : v - 0.05f;
    }
    fill_normal(F(&c.dy), count, 1.0f, 0.0f);
    relu_loss(&c);
    for (size_t i = 0; i < count; i++) assert_true(F(&c.y)[i] == fmaxf(F(&c.x)[i], 0.0f));
    Tensor dx = tnew(n, ch, h, w);
    check_accumulate("relu", relu_bwd, &c, &dx);
    if (fd) check_grad("relu dx", relu_loss, &c, F(&c.x), count, F(&dx), 1e-2f);
    /* in place: y aliasing x */
    Tensor xi = tnew(n, ch, h, w);
    memcpy(F(&xi), F(&c.x), count * sizeof(float));
    relu_loss(&c);
    be->ops->relu_forward(be, &xi, &xi);
    for (size_t i = 0; i < count; i++) assert_true(F(&xi)[i] == F(&c.y)[i]);
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx), tfree(&xi);
}

/* ---- pooling ---- */

typedef struct {
    PoolGeom g;
    Tensor x, y, dy;
    int max;
} PoolCtx;

static double pool_loss(void *p) {
    PoolCtx *c = p;
    if (c->max)
        be->ops->maxpool_forward(be, &c->g, &c->x, &c->y);
    else
        be->ops->avgpool_forward(be, &c->g, &c->x, &c->y);
    return dot(F(&c->y), F(&c->dy), tensor_numel(&c->y));
}

static void pool_bwd(void *p, Tensor *dx, int acc) {
    PoolCtx *c = p;
    if (c->max)
        be->ops->maxpool_backward(be, &c->g, &c->x, &c->y, &c->dy, dx, acc);
    else
        be->ops->avgpool_backward(be, &c->g, &c->dy, dx, acc);
}

static void pool_case(int max, PoolGeom g, int n, int ch, int h, int w, int fd) {
    PoolCtx c = {g, tnew(n, ch, h, w), {0}, {0}, max};
    int oh = pool_out_size(h, &c.g), ow = pool_out_size(w, &c.g);
    c.y = tnew(n, ch, oh, ow);
    c.dy = tnew(n, ch, oh, ow);
    size_t count = tensor_numel(&c.x);
    /* Max pool copies values, so its differences are exact given distinct inputs a step never
     * reorders; average pool is linear, so any step works and a large one beats rounding. */
    float h_step = max ? 1e-4f : 0.05f;
    if (max)
        fill_distinct(F(&c.x), count, 1e-3f);
    else
        fill_normal(F(&c.x), count, 1.0f, 0.0f);
    fill_normal(F(&c.dy), tensor_numel(&c.dy), 1.0f, 0.0f);
    pool_loss(&c);
    assert_int_equal(c.y.h, oh), assert_int_equal(c.y.w, ow);
    Tensor dx = tnew(n, ch, h, w);
    char what[96];
    snprintf(what, sizeof what, "%spool %d/%d pad %d ceil %d on %dx%d", max ? "max" : "avg", g.k, g.stride, g.pad,
             g.ceil_mode, h, w);
    check_accumulate(what, pool_bwd, &c, &dx);
    if (fd) check_grad(what, pool_loss, &c, F(&c.x), count, F(&dx), h_step);
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx);
}

/* The gradient of tied maxima goes to the first in scan order, like PyTorch. */
static void test_maxpool_ties(void **state) {
    (void)state;
    PoolCtx c = {{2, 2, 0, 0}, tnew(1, 2, 2, 2), tnew(1, 2, 1, 1), tnew(1, 2, 1, 1), 1};
    float xv[8] = {1, 5, 3, 5, 3, 5, 0, 2}; /* NHWC: channel 0 = 1,3,3,0; channel 1 = all 5 but one 2 */
    memcpy(F(&c.x), xv, sizeof xv);
    F(&c.dy)[0] = 10, F(&c.dy)[1] = 20;
    pool_loss(&c);
    assert_true(F(&c.y)[0] == 3 && F(&c.y)[1] == 5);
    Tensor dx = tnew(1, 2, 2, 2);
    pool_bwd(&c, &dx, 0);
    float want[8] = {0, 20, 10, 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++) check_close("maxpool tie dx", F(&dx)[i], want[i], 0);
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx);
}

/* Output sizes and divisors by hand: PyTorch's ceil mode drops a window that would start in the
 * right padding; the average counts padding but not the overhang past it. */
static void test_pool_geometry(void **state) {
    (void)state;
    PoolGeom avg2 = {2, 2, 0, 1}, max3 = {3, 2, 1, 0}, avg3c = {3, 2, 1, 1};
    assert_int_equal(pool_out_size(5, &avg2), 3);
    assert_int_equal(pool_out_size(7, &avg2), 4);
    assert_int_equal(pool_out_size(8, &avg2), 4);
    assert_int_equal(pool_out_size(5, &max3), 3);
    assert_int_equal(pool_out_size(7, &max3), 4);
    assert_int_equal(pool_out_size(64, &max3), 32);
    assert_int_equal(pool_out_size(6, &avg3c), 4);
    PoolGeom edge = {2, 2, 1, 1}; /* 4 + 2 pad: a 4th window would start at 5, in the right padding */
    assert_int_equal(pool_out_size(4, &edge), 3);

    /* 7x7 ramp, AvgPool2d(2, ceil): last row/column windows hold one input pixel and divide by 1 */
    Tensor x = tnew(1, 1, 7, 7), y = tnew(1, 1, 4, 4);
    for (int i = 0; i < 49; i++) F(&x)[i] = (float)i;
    be->ops->avgpool_forward(be, &avg2, &x, &y);
    assert_int_equal(y.h, 4);
    check_close("avg2 y[0][0]", F(&y)[0], (0 + 1 + 7 + 8) / 4.0, 1e-6);
    check_close("avg2 y[0][3]", F(&y)[3], (6 + 13) / 2.0, 1e-6);
    check_close("avg2 y[3][0]", F(&y)[12], (42 + 43) / 2.0, 1e-6);
    check_close("avg2 y[3][3]", F(&y)[15], 48, 1e-6);
    tfree(&x), tfree(&y);

    /* ones, 5x5 and 6x6, 3/2 pad 1: border windows include padding in the divisor */
    x = tnew(1, 1, 5, 5), y = tnew(1, 1, 3, 3);
    fill_value(F(&x), 25, 1.0f);
    PoolGeom avg3 = {3, 2, 1, 0};
    be->ops->avgpool_forward(be, &avg3, &x, &y);
    check_close("avg3 y[0][0]", F(&y)[0], 4 / 9.0, 1e-6);
    check_close("avg3 y[0][1]", F(&y)[1], 6 / 9.0, 1e-6);
    check_close("avg3 y[1][1]", F(&y)[4], 1.0, 1e-6);
    tfree(&x), tfree(&y);
    x = tnew(1, 1, 6, 6), y = tnew(1, 1, 4, 4);
    fill_value(F(&x), 36, 1.0f);
    be->ops->avgpool_forward(be, &avg3c, &x, &y);
    check_close("avg3c y[0][0]", F(&y)[0], 4 / 9.0, 1e-6);
    check_close("avg3c y[3][0]", F(&y)[12], 2 / 6.0, 1e-6); /* rows 5..6 (6 is padding), cols -1..1 */
    check_close("avg3c y[3][3]", F(&y)[15], 1 / 4.0, 1e-6);
    tfree(&x), tfree(&y);
}

/* ---- global average pool ---- */

static double gap_loss(void *p) {
    UnCtx *c = p;
    be->ops->global_avgpool_forward(be, &c->x, &c->y);
    return dot(F(&c->y), F(&c->dy), tensor_numel(&c->y));
}

static void gap_bwd(void *p, Tensor *dx, int acc) {
    UnCtx *c = p;
    be->ops->global_avgpool_backward(be, &c->dy, dx, acc);
}

/* Values: every mean against a double sum (a float sum of hw terms: 1e-6 of their size). */
static void gap_case(int n, int ch, int h, int w, int fd) {
    UnCtx c = {tnew(n, ch, h, w), tnew(n, ch, 1, 1), tnew(n, ch, 1, 1)};
    size_t hw = (size_t)h * w;
    fill_normal(F(&c.x), tensor_numel(&c.x), 1.0f, 0.0f);
    fill_normal(F(&c.dy), tensor_numel(&c.dy), 1.0f, 0.0f);
    c.y.h = c.y.c = -1; /* the op must set the output shape */
    gap_loss(&c);
    assert_int_equal(c.y.h, 1), assert_int_equal(c.y.c, ch);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ch; k++) {
            double s = 0, mag = 0;
            for (size_t q = 0; q < hw; q++) {
                double v = F(&c.x)[((size_t)i * hw + q) * ch + k];
                s += v, mag += fabs(v);
            }
            check_close("gap value", F(&c.y)[(size_t)i * ch + k], s / hw, 1e-6 * mag / hw + 1e-7);
        }
    Tensor dx = tnew(n, ch, h, w);
    check_accumulate("gap", gap_bwd, &c, &dx);
    if (fd) check_grad("gap dx", gap_loss, &c, F(&c.x), tensor_numel(&c.x), F(&dx), 1e-2f);
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx);
}

/* ---- linear ---- */

typedef struct {
    Tensor x, y, dy;
    float *w, *b;
} LinCtx;

static double lin_loss(void *p) {
    LinCtx *c = p;
    be->ops->linear_forward(be, &c->x, c->w, c->b, &c->y);
    return dot(F(&c->y), F(&c->dy), tensor_numel(&c->y));
}

static float *lin_dw, *lin_db;

static void lin_bwd(void *p, Tensor *dx, int acc) {
    LinCtx *c = p;
    be->ops->linear_backward(be, &c->x, &c->dy, c->w, lin_dw, lin_db, dx, acc);
}

/* Values: every output against a double sum (1e-5 of the terms' size: float GEMM rounding). */
static void linear_case(int n, int in, int out, int bias, int fd) {
    LinCtx c = {tnew(n, in, 1, 1), tnew(n, out, 1, 1), tnew(n, out, 1, 1), fnew((size_t)out * in),
                bias ? fnew(out) : NULL};
    fill_normal(F(&c.x), (size_t)n * in, 1.0f, 0.0f);
    fill_normal(F(&c.dy), (size_t)n * out, 1.0f, 0.0f);
    fill_normal(c.w, (size_t)out * in, 0.5f, 0.0f);
    if (bias) fill_normal(c.b, out, 0.5f, 0.0f);
    lin_loss(&c);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < out; k++) {
            double want = bias ? c.b[k] : 0, mag = fabs(want);
            for (int j = 0; j < in; j++) {
                double t = (double)F(&c.x)[(size_t)i * in + j] * c.w[(size_t)k * in + j];
                want += t, mag += fabs(t);
            }
            check_close(bias ? "linear y" : "linear y (no bias)", F(&c.y)[(size_t)i * out + k], want, 1e-5 * mag + 1e-6);
        }
    lin_dw = fnew((size_t)out * in), lin_db = bias ? fnew(out) : NULL;
    fill_value(lin_dw, (size_t)out * in, NAN);
    if (bias) fill_value(lin_db, out, NAN);
    Tensor dx = tnew(n, in, 1, 1);
    check_accumulate("linear", lin_bwd, &c, &dx);
    if (fd) {
        check_grad("linear dx", lin_loss, &c, F(&c.x), (size_t)n * in, F(&dx), 1e-2f);
        check_grad("linear dw", lin_loss, &c, c.w, (size_t)out * in, lin_dw, 1e-2f);
        if (bias) check_grad("linear db", lin_loss, &c, c.b, out, lin_db, 1e-2f);
    }
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx), ffree(c.w), ffree(c.b), ffree(lin_dw), ffree(lin_db);
}

/* ---- add / accumulate ---- */

static void add_case(int n, int ch, int h, int w) {
    Tensor a = tnew(n, ch, h, w), b = tnew(n, ch, h, w), y = tnew(n, ch, h, w), d = tnew(n, ch, h, w);
    size_t count = tensor_numel(&a);
    fill_normal(F(&a), count, 1.0f, 0.0f);
    fill_normal(F(&b), count, 1.0f, 0.0f);
    be->ops->add(be, &a, &b, &y);
    check_sum("add", F(&y), F(&a), F(&b), count);
    /* accumulate 0 copies, 1 adds */
    fill_value(F(&d), count, NAN);
    be->ops->accumulate(be, &a, &d, 0);
    for (size_t i = 0; i < count; i++) assert_true(F(&d)[i] == F(&a)[i]);
    be->ops->accumulate(be, &b, &d, 1);
    check_sum("accumulate", F(&d), F(&a), F(&b), count);
    /* in place: y aliasing a */
    be->ops->add(be, &a, &b, &a);
    for (size_t i = 0; i < count; i++) assert_true(F(&a)[i] == F(&y)[i]);
    /* the gradient of y = a + b is dy for both: a residual block's dx = overwrite + accumulate */
    tfree(&a), tfree(&b), tfree(&y), tfree(&d);
}

/* ---- softmax cross-entropy ---- */

typedef struct {
    Tensor z, dz;
    int32_t *la, *lb;
    float *lam, *loss, smoothing;
} XentCtx;

static double xent_loss(void *p) {
    XentCtx *c = p;
    be->ops->softmax_xent(be, &c->z, c->la, c->lb, c->lam, c->smoothing, 1.0f, c->loss, &c->dz);
    return *c->loss;
}

static void test_xent_values(void **state) {
    (void)state;
    XentCtx c = {tnew(2, 3, 1, 1), tnew(2, 3, 1, 1), be->ops->alloc(be, 8), NULL, NULL, fnew(1), 0};
    int32_t *lb = be->ops->alloc(be, 8);
    float *lam = fnew(2);
    float z[6] = {1, 2, 3, 0, 0, 0};
    memcpy(F(&c.z), z, sizeof z);
    c.la[0] = 2, c.la[1] = 0;
    /* no mixup: labels_b and lam NULL; -log softmax([1,2,3])[2] = log(1 + e^-1 + e^-2); uniform logits give log 3 */
    const double nll = 0.4076059644443804;
    xent_loss(&c);
    check_close("xent plain", *c.loss, (nll + log(3.0)) / 2, 1e-6);
    /* smoothing 0.1 on sample 0 alone: 0.9 nll + 0.1 mean(-log p) = nll + 0.1, as mean(-log p) = nll + 1 */
    c.z.n = c.dz.n = 1;
    c.smoothing = 0.1f;
    xent_loss(&c);
    check_close("xent smoothing", *c.loss, nll + 0.1, 1e-6);
    /* mixup lam 0.7 between labels 2 and 0: 0.9 (0.7 nll + 0.3 (nll + 2)) + 0.1 (nll + 1) = nll + 0.64 */
    c.lb = lb, c.lam = lam;
    c.lb[0] = 0, c.lam[0] = 0.7f;
    xent_loss(&c);
    check_close("xent mixup + smoothing", *c.loss, nll + 0.64, 1e-6);
    /* dlogits = softmax - target: rows sum to 0 */
    check_close("xent dlogits sum", F(&c.dz)[0] + F(&c.dz)[1] + F(&c.dz)[2], 0, 1e-6);
    tfree(&c.z), tfree(&c.dz), ffree(c.la), ffree(c.lb), ffree(c.lam), ffree(c.loss);
}

/* The loss in double: the mean over samples of (1 - smoothing) (lam nll(a) + (1 - lam) nll(b))
 * + smoothing mean_j(-log p_j) (backend.h's rule). */
static double xent_ref(const XentCtx *c) {
    int n = c->z.n, k = c->z.c;
    double total = 0;
    for (int i = 0; i < n; i++) {
        const float *z = F(&c->z) + (size_t)i * k;
        double mx = -INFINITY, se = 0, sz = 0;
        for (int j = 0; j < k; j++) mx = fmax(mx, z[j]);
        for (int j = 0; j < k; j++) se += exp(z[j] - mx), sz += z[j];
        double lse = mx + log(se), lam = c->lam ? c->lam[i] : 1.0;
        double nll = lam * (lse - z[c->la[i]]) + (c->lb ? (1 - lam) * (lse - z[c->lb[i]]) : 0.0);
        total += (1 - c->smoothing) * nll + c->smoothing * (lse - sz / k);
    }
    return total / n;
}

static void xent_case(int n, int k, int mixup, float smoothing, int fd) {
    XentCtx c = {tnew(n, k, 1, 1), tnew(n, k, 1, 1), be->ops->alloc(be, (size_t)n * 4),
                 mixup ? be->ops->alloc(be, (size_t)n * 4) : NULL, mixup ? fnew(n) : NULL, fnew(1), smoothing};
    fill_normal(F(&c.z), (size_t)n * k, 2.0f, 0.0f);
    for (int i = 0; i < n; i++) {
        c.la[i] = (int32_t)rng_below(&rng, k);
        if (mixup) {
            c.lb[i] = (int32_t)rng_below(&rng, k);
            c.lam[i] = 0.5f + 0.5f * rng_uniform(&rng);
        }
    }
    xent_loss(&c);
    double want = xent_ref(&c);
    check_close("softmax_xent loss", *c.loss, want, 1e-5 * fabs(want) + 1e-6);
    float *ana = malloc((size_t)n * k * sizeof(float));
    memcpy(ana, F(&c.dz), (size_t)n * k * sizeof(float));
    if (fd) check_grad(mixup ? "softmax_xent mixup" : "softmax_xent", xent_loss, &c, F(&c.z), (size_t)n * k, ana, 1e-2f);
    free(ana);
    tfree(&c.z), tfree(&c.dz), ffree(c.la), ffree(c.lb), ffree(c.lam), ffree(c.loss);
}

/* ---- AdamW ---- */

static void test_adamw(void **state) {
    (void)state;
    float *p = fnew(2), *g = fnew(2), *m = fnew(2), *v = fnew(2);
    p[0] = 1, g[0] = 0.5f, m[0] = 0, v[0] = 0;
    p[1] = -2, g[1] = -1, m[1] = 0.2f, v[1] = 0.5f;
    AdamWArgs a = {0.1f, 0.9f, 0.99f, 1e-5f, 0.01f, 1};
    AdamWRun run = {0, 2, a.lr, a.wd};
    be->ops->adamw(be, p, g, m, v, &run, 1, &a, 1.0f);
    /* p0: decay to 0.999; m = 0.05, v = 0.0025; m^ = 0.5, v^ = 0.25; 0.999 - 0.1 * 0.5 / (0.5 + 1e-5) */
    /* float arguments (1 - 0.9f is 0.10000002) allow ~1e-6 relative */
    check_close("adamw p0", p[0], 0.8990019999600007, 1e-6);
    check_close("adamw m0", m[0], 0.05, 1e-7);
    check_close("adamw v0", v[0], 0.0025, 1e-8);
    check_close("adamw p1", p[1], -2.009257544874123, 4e-6);
    check_close("adamw m1", m[1], 0.08, 2e-7);
    check_close("adamw v1", v[1], 0.505, 1e-6);
    g[0] = -0.25f;
    a.step = 2;
    run.count = 1;
    be->ops->adamw(be, p, g, m, v, &run, 1, &a, 1.0f);
    check_close("adamw p0 step 2", p[0], 0.8714337307566947, 1e-6);
    /* two runs with their own lr and wd in one call: run 2 (element 1) with lr 0, wd 0 stays */
    float before = p[1];
    AdamWRun runs[2] = {{0, 1, 0.1f, 0.01f}, {1, 1, 0.0f, 0.0f}};
    a.step = 3;
    be->ops->adamw(be, p, g, m, v, runs, 2, &a, 1.0f);
    assert_true(p[1] == before);
    assert_true(p[0] != 0.8714337307566947f);
    ffree(p), ffree(g), ffree(m), ffree(v);
}

/* A row of the table (OC_VALUES): three steps on gradients drawn 1 / grad_scale times larger, as a
 * loss-scaled backward leaves them, against AdamW in double on what the op must use (g *
 * grad_scale). A power-of-two scale undoes the scaling exactly: those rows must also equal, bit for
 * bit, the same steps taken on the unscaled gradients with grad_scale 1. */
static void adamw_case(const OpCase *oc) {
    size_t n = (size_t)oc->n;
    assert_true(n > 0); /* (the many-run row is gpu only) */
    AdamWArgs a = oc->adamw;
    const float gs = oc->grad_scale;
    AdamWRun run = {0, n, a.lr, a.wd};
    float *p = fnew(n), *g = fnew(n), *m = fnew(n), *v = fnew(n);
    float *p1 = fnew(n), *g1 = fnew(n), *m1 = fnew(n), *v1 = fnew(n); /* the unscaled twin */
    double *rp = malloc(n * sizeof *rp), *rm = calloc(n, sizeof *rm), *rv = calloc(n, sizeof *rv);
    double *rm_abs = calloc(n, sizeof *rm_abs); /* m's terms cancel: its tolerance goes by their size */
    fill_normal(p, n, 1.0f, 0.0f);
    memcpy(p1, p, n * sizeof *p);
    fill_value(m, n, 0), fill_value(v, n, 0), fill_value(m1, n, 0), fill_value(v1, n, 0);
    for (size_t i = 0; i < n; i++) rp[i] = p[i];
    int exp2;
    const int exact = frexpf(gs, &exp2) == 0.5f;
    const double b1 = a.beta1, b2 = a.beta2, eps = a.eps, lr = a.lr, wd = a.wd;
    for (int step = 1; step <= 3; step++) {
        a.step = step;
        fill_normal(g1, n, 1.0f, 0.0f);
        for (size_t i = 0; i < n; i++) g[i] = g1[i] / gs;
        be->ops->adamw(be, p, g, m, v, &run, 1, &a, gs);
        be->ops->adamw(be, p1, g1, m1, v1, &run, 1, &a, 1.0f);
        const double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
        for (size_t i = 0; i < n; i++) {
            double gi = (double)g[i] * gs;
            rm[i] = b1 * rm[i] + (1 - b1) * gi;
            rm_abs[i] = b1 * rm_abs[i] + (1 - b1) * fabs(gi);
            rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
            rp[i] = rp[i] * (1 - lr * wd) - lr / bc1 * rm[i] / (sqrt(rv[i] / bc2) + eps);
        }
    }
    char what[64];
    for (size_t i = 0; i < n; i++) {
        snprintf(what, sizeof what, "adamw grad_scale %g: p[%zu]", (double)gs, i);
        check_close(what, p[i], rp[i], 2e-6 * fabs(rp[i]) + 1e-5 * lr);
        snprintf(what, sizeof what, "adamw grad_scale %g: m[%zu]", (double)gs, i);
        check_close(what, m[i], rm[i], 2e-6 * rm_abs[i]);
        snprintf(what, sizeof what, "adamw grad_scale %g: v[%zu]", (double)gs, i);
        check_close(what, v[i], rv[i], 1e-5 * fabs(rv[i]) + 1e-12);
    }
    if (exact) {
        assert_memory_equal(p, p1, n * sizeof *p);
        assert_memory_equal(m, m1, n * sizeof *m);
        assert_memory_equal(v, v1, n * sizeof *v);
    }
    ffree(p), ffree(g), ffree(m), ffree(v), ffree(p1), ffree(g1), ffree(m1), ffree(v1);
    free(rp), free(rm), free(rv), free(rm_abs);
}

/* ---- transfers and memory ---- */

/* ---- fastai's head: concat pool and dropout ---- */

static double cpool_loss(void *p) {
    UnCtx *c = p;
    be->ops->concat_pool_forward(be, &c->x, &c->y);
    return dot(F(&c->y), F(&c->dy), tensor_numel(&c->y));
}

static void cpool_bwd(void *p, Tensor *dx, int acc) {
    UnCtx *c = p;
    be->ops->concat_pool_backward(be, &c->x, &c->y, &c->dy, dx, acc);
}

/* fd: also check against finite differences (small maps only: over a large spread of values a
 * step small enough to keep the maximum in place drowns in the mean's rounding). */
static void cpool_case(int n, int ch, int h, int w, int fd) {
    UnCtx c = {tnew(n, ch, h, w), tnew(n, 2 * ch, 1, 1), tnew(n, 2 * ch, 1, 1)};
    size_t count = tensor_numel(&c.x), hw = (size_t)h * w;
    fill_distinct(F(&c.x), count, 1e-3f); /* no ties: a small step never moves the maximum */
    fill_normal(F(&c.dy), tensor_numel(&c.dy), 1.0f, 0.0f);
    c.y.c = -1; /* the op must set the output shape */
    cpool_loss(&c);
    assert_int_equal(c.y.c, 2 * ch), assert_int_equal(c.y.h, 1), assert_int_equal(c.y.w, 1);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ch; k++) {
            double mx = -INFINITY, s = 0, mag = 0;
            for (size_t q = 0; q < hw; q++) {
                double v = F(&c.x)[((size_t)i * hw + q) * ch + k];
                mx = fmax(mx, v);
                s += v;
                mag += fabs(v);
            }
            check_close("concat pool max", F(&c.y)[(size_t)i * 2 * ch + k], mx, 0);
            check_close("concat pool mean", F(&c.y)[(size_t)i * 2 * ch + ch + k], s / hw, 1e-6 * mag / hw + 1e-7);
        }
    Tensor dx = tnew(n, ch, h, w);
    char what[96];
    snprintf(what, sizeof what, "concat pool %dx%dx%dx%d", n, ch, h, w);
    check_accumulate(what, cpool_bwd, &c, &dx);
    /* by hand: every position gets d mean / hw, the maximum d max on top */
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ch; k++)
            for (size_t q = 0; q < hw; q++) {
                size_t at = ((size_t)i * hw + q) * ch + k;
                const float *yi = F(&c.y) + (size_t)i * 2 * ch, *gi = F(&c.dy) + (size_t)i * 2 * ch;
                double want = gi[ch + k] / (double)hw + (F(&c.x)[at] == yi[k] ? gi[k] : 0.0);
                check_close("concat pool dx", F(&dx)[at], want, 1e-6 * fabs(want) + 1e-7);
            }
    if (fd) check_grad(what, cpool_loss, &c, F(&c.x), count, F(&dx), 1e-4f);
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx);
}

/* Tied maxima: the first in row-major (h, w) order takes the gradient, as in PyTorch; the mean
 * half's gradient is spread evenly over the map. */
static void test_concat_pool_ties(void **state) {
    (void)state;
    UnCtx c = {tnew(1, 2, 2, 2), tnew(1, 4, 1, 1), tnew(1, 4, 1, 1)};
    float xv[8] = {1, 5, 3, 5, 3, 5, 0, 2}; /* NHWC: channel 0 = 1,3,3,0; channel 1 = 5,5,5,2 */
    memcpy(F(&c.x), xv, sizeof xv);
    float dyv[4] = {10, 20, 4, 8}; /* d max0, d max1, d mean0, d mean1 */
    memcpy(F(&c.dy), dyv, sizeof dyv);
    cpool_loss(&c);
    float ywant[4] = {3, 5, 7 / 4.0f, 17 / 4.0f};
    for (int i = 0; i < 4; i++) check_close("concat pool tie y", F(&c.y)[i], ywant[i], 1e-6);
    Tensor dx = tnew(1, 2, 2, 2);
    cpool_bwd(&c, &dx, 0);
    float want[8] = {1, 22, 11, 2, 1, 2, 1, 2};
    for (int i = 0; i < 8; i++) check_close("concat pool tie dx", F(&dx)[i], want[i], 1e-6);
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx);
}

typedef struct {
    Tensor x, y, dy;
    float p;
    uint64_t seed;
} DropCtx;

static double drop_loss(void *p) {
    DropCtx *c = p;
    be->ops->dropout_forward(be, &c->x, c->p, c->seed, &c->y);
    return dot(F(&c->y), F(&c->dy), tensor_numel(&c->y));
}

static void drop_bwd(void *p, Tensor *dx, int acc) {
    DropCtx *c = p;
    be->ops->dropout_backward(be, &c->dy, c->p, c->seed, dx, acc);
}

/* Values: the mask is backend.h's rule at NCHW indices, kept values scaled by 1/(1-p); in place
 * equals out of place; the gradient against finite differences (0 < p < 1: at p = 1 it is zero). */
static void drop_case(int n, int ch, int h, int w, float p, int fd) {
    DropCtx c = {tnew(n, ch, h, w), tnew(n, ch, h, w), tnew(n, ch, h, w), p, rng_u64(&rng)};
    size_t count = tensor_numel(&c.x), hw = (size_t)h * w;
    fill_normal(F(&c.x), count, 1.0f, 0.0f);
    fill_normal(F(&c.dy), count, 1.0f, 0.0f);
    drop_loss(&c);
    for (int i = 0; i < n; i++)
        for (size_t q = 0; q < hw; q++)
            for (int k = 0; k < ch; k++) {
                size_t nhwc = ((size_t)i * hw + q) * ch + k, nchw = ((size_t)i * ch + k) * hw + q;
                int keep = (float)(rng_hash(c.seed, nchw) >> 40) / 16777216.0f >= c.p;
                float want = keep ? F(&c.x)[nhwc] * (1.0f / (1.0f - p)) : 0.0f;
                if (F(&c.y)[nhwc] != want) fail_msg("dropout y[%zu] = %g, want %g", nhwc, F(&c.y)[nhwc], want);
            }
    Tensor dx = tnew(n, ch, h, w);
    check_accumulate("dropout", drop_bwd, &c, &dx);
    if (fd && p > 0 && p < 1) check_grad("dropout dx", drop_loss, &c, F(&c.x), count, F(&dx), 1e-2f);
    /* in place */
    drop_loss(&c); /* y again: check_grad left it at a perturbed x */
    Tensor z = tnew(n, ch, h, w);
    memcpy(F(&z), F(&c.x), count * sizeof(float));
    be->ops->dropout_forward(be, &z, c.p, c.seed, &z);
    for (size_t i = 0; i < count; i++) assert_true(F(&z)[i] == F(&c.y)[i]);
    tfree(&c.x), tfree(&c.y), tfree(&c.dy), tfree(&dx), tfree(&z);
}

/* p = 0 is the identity and p = 1 zeros (forward and backward); the kept fraction over 100k
 * elements within 4 sigma of 1-p; a second seed draws a different mask. */
static void test_dropout_values(void **state) {
    (void)state;
    const int big = 100000;
    Tensor ones = tnew(big, 1, 1, 1), a = tnew(big, 1, 1, 1), b = tnew(big, 1, 1, 1);
    fill_value(F(&ones), big, 1.0f);
    be->ops->dropout_forward(be, &ones, 0.0f, 7, &a);
    for (int i = 0; i < big; i++) assert_true(F(&a)[i] == 1.0f);
    be->ops->dropout_backward(be, &ones, 1.0f, 7, &a, 0);
    for (int i = 0; i < big; i++) assert_true(F(&a)[i] == 0.0f);
    be->ops->dropout_forward(be, &ones, 0.5f, 1, &a);
    be->ops->dropout_forward(be, &ones, 0.5f, 2, &b);
    int ka = 0, same = 0;
    for (int i = 0; i < big; i++) {
        ka += F(&a)[i] != 0;
        same += (F(&a)[i] != 0) == (F(&b)[i] != 0);
    }
    check_close("dropout kept fraction (p 0.5)", ka / (double)big, 0.5, 4 * sqrt(0.25 / big));
    check_close("two seeds agree on (p 0.5)", same / (double)big, 0.5, 4 * sqrt(0.25 / big));
    tfree(&ones), tfree(&a), tfree(&b);
}

static void roundtrip(int n, int c, int h, int w) {
    Tensor t = tnew(n, c, h, w);
    size_t count = tensor_numel(&t);
    float *host = malloc(count * sizeof(float)), *back = malloc(count * sizeof(float));
    fill_normal(host, count, 1.0f, 0.0f);
    be->ops->tensor_upload(be, &t, host);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    assert_true(F(&t)[(((size_t)i * h + y) * w + x) * c + ch] ==
                                host[(((size_t)i * c + ch) * h + y) * w + x]);
    be->ops->tensor_download(be, back, &t);
    assert_memory_equal(host, back, count * sizeof(float));
    free(host), free(back);
    tfree(&t);
}

static void test_upload_download(void **state) {
    (void)state;
    roundtrip(2, 5, 7, 9);
    roundtrip(3, 3, 33, 35); /* more than one 32-pixel tile, parallel */
    roundtrip(1, 64, 1, 1);
}

static void test_memory(void **state) {
    (void)state;
    size_t base = be->bytes_in_use;
    unsigned char *p = be->ops->alloc(be, 1000), *q = be->ops->alloc(be, 3);
    assert_true(((uintptr_t)p & 63) == 0 && ((uintptr_t)q & 63) == 0);
    for (int i = 0; i < 1000; i++) assert_int_equal(p[i], 0);
    assert_true(be->bytes_in_use == base + 1003);
    assert_true(be->peak_bytes >= base + 1003);
    memset(p, 7, 1000);
    be->ops->zero(be, p, 500);
    assert_int_equal(p[499], 0), assert_int_equal(p[500], 7);
    be->ops->copy(be, q, p + 500, 3);
    assert_int_equal(q[2], 7);
    be->ops->release(be, p);
    assert_true(be->bytes_in_use == base + 3);
    be->ops->release(be, q);
    assert_true(be->bytes_in_use == base);
    be->ops->release(be, NULL);
    assert_true(be->threads >= 1);
}

/* ---- the op cases: one cmocka test per row of tests/op_cases.h flagged OC_FD or OC_VALUES ---- */

static void run_op_case(void **state) {
    const OpCase *oc = *state;
    int fd = (oc->flags & OC_FD) != 0;
    switch (oc->kind) {
    case OP_CONV:
        if (oc->flags & OC_CHUNKED) {
            assert_true(oc->conv.k == 3 && oc->conv.stride == 1 && oc->conv.pad == 1); /* what the sampled sums assume */
            conv_chunked_case(oc->n, oc->h, oc->w, oc->c, oc->conv.cout);
        } else {
            conv_case(oc->n, oc->c, oc->h, oc->w, oc->conv.cout, oc->conv.k, oc->conv.stride, oc->conv.pad);
        }
        break;
    case OP_BN:
        be->sync_bn = (oc->flags & OC_SYNC) != 0; /* one rank: the same results through sync_bn's path */
        bn_case(oc->n, oc->c, oc->h, oc->w, oc->bn.mean, oc->bn.std, 0, fd);
        bn_case(oc->n, oc->c, oc->h, oc->w, oc->bn.mean, oc->bn.std, 1, fd);
        be->sync_bn = 0;
        break;
    case OP_ELEMENTWISE:
        relu_case(oc->n, oc->c, oc->h, oc->w, fd);
        add_case(oc->n, oc->c, oc->h, oc->w);
        break;
    case OP_MAXPOOL:
    case OP_AVGPOOL: pool_case(oc->kind == OP_MAXPOOL, oc->pool, oc->n, oc->c, oc->h, oc->w, fd); break;
    case OP_GAP: gap_case(oc->n, oc->c, oc->h, oc->w, fd); break;
    case OP_CONCAT_POOL: cpool_case(oc->n, oc->c, oc->h, oc->w, fd); break;
    case OP_DROPOUT: drop_case(oc->n, oc->c, oc->h, oc->w, oc->drop_p, fd); break;
    case OP_LINEAR: linear_case(oc->n, oc->c, oc->linear.out, oc->linear.bias, fd); break;
    case OP_XENT: xent_case(oc->n, oc->c, oc->xent.mixup, oc->xent.smoothing, fd); break;
    case OP_ADAMW: adamw_case(oc); break;
    }
}

static int setup(void **state) {
    (void)state;
    char err[256];
    be = backend_create("cpu", err, sizeof err);
    rng_seed(&rng, 42);
    return be ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    backend_destroy(be);
    return 0;
}

int main(void) {
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_upload_download),
        cmocka_unit_test(test_bn_stats),
        cmocka_unit_test(test_bn_infer_values),
        cmocka_unit_test(test_maxpool_ties),
        cmocka_unit_test(test_pool_geometry),
        cmocka_unit_test(test_xent_values),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_concat_pool_ties),
        cmocka_unit_test(test_dropout_values),
    };
    enum { NFIXED = sizeof fixed / sizeof fixed[0] };
    static struct CMUnitTest tests[NFIXED + OP_NCASES];
    static char names[OP_NCASES][96];
    int count = 0;
    for (int i = 0; i < NFIXED; i++) tests[count++] = fixed[i];
    for (int i = 0; i < OP_NCASES; i++) {
        const OpCase *oc = &op_cases[i];
        if (!(oc->flags & (OC_FD | OC_VALUES))) continue;
        op_case_name(oc, names[i], sizeof names[i]);
        tests[count++] = (struct CMUnitTest){names[i], run_op_case, NULL, NULL, (void *)oc};
    }
    return _cmocka_run_group_tests("test_cpu_ops", tests, (size_t)count, setup, teardown);
}
