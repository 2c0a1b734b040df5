/* cpu/batchnorm.c: batch norm on NHWC activations: x is (rows = n*h*w, C), statistics per column.
 *
 * Reductions split the rows evenly among threads; each thread sums its rows into its own C-wide
 * double accumulators (inner loop over the contiguous channels, so it vectorises), then the
 * partials are added in thread order, which makes the result independent of scheduling.
 * Variance is one pass over data shifted by the first row (sums of d = x - x[0]): as accurate as two
 * passes when the shift is near the mean, and it reads x once.
 *
 * Backend.sync_bn (data-parallel training, dist/dist.h): the statistics are the global batch's, as
 * PyTorch's SyncBatchNorm computes them: forward, each rank's (count, mean, sum of squared
 * deviations) per channel gathered and combined in rank order (Chan's formula; every rank gets the
 * same bits); backward, the sums of dy and dy * (x - mean) summed over the ranks for dx, while
 * dgamma and dbeta stay this rank's (the gradient all-reduce averages them with the others).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/backend.h"
#include "base/util.h"
#include "dist/dist.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* part: nt blocks of 2*C doubles, zeroed, for per-thread (sum a, sum b). */
static double *partials(Backend *b, int nt, int C) {
    double *p = cpu_scratch(b, CPU_WS_STATS, (size_t)nt * 2 * C * sizeof(double));
    memset(p, 0, (size_t)nt * 2 * C * sizeof(double));
    return p;
}

/* Sum the nt partial blocks into the first one. */
static void reduce_partials(double *p, int nt, int C) {
    for (int t = 1; t < nt; t++)
        for (int c = 0; c < 2 * C; c++) p[c] += p[(size_t)t * 2 * C + c];
}

/* Inside a parallel region: this thread's id and its even share [r0, r1) of the rows. */
static int thread_rows(size_t rows, size_t *r0, size_t *r1) {
    int t = 0, nth = 1;
#ifdef _OPENMP
    t = omp_get_thread_num(), nth = omp_get_num_threads();
#endif
    *r0 = rows * t / nth;
    *r1 = rows * (t + 1) / nth;
    return t;
}

/* y = (x - center[c]) * scale[c] + shift[c]; y may alias x. Centering first keeps precision when
 * |mean| >> std. */
static void affine(const float *x, const float *center, const float *scale, const float *shift, size_t rows, int C,
                   float *y) {
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - center[c]) * scale[c] + shift[c];
    }
}

/* sync_bn: part holds this rank's sums of d = x - shift and d^2 (shift: its first row); on return
 * part[c] is the global mean and part[C + c] the global sum of squared deviations. Returns the
 * global row count. */
static double sync_stats(double *part, const float *shift, size_t rows, int C) {
    int N = dist_size();
    size_t per = 1 + 2 * (size_t)C;
    double *mine = xmalloc(per * sizeof(double)), *all = xmalloc((size_t)N * per * sizeof(double));
    mine[0] = (double)rows;
    for (int c = 0; c < C; c++) {
        double dmean = rows ? part[c] / (double)rows : 0;
        double ss = part[C + c] - part[c] * dmean;
        mine[1 + c] = (double)shift[c] + dmean;
        mine[1 + C + c] = ss < 0 ? 0 : ss;
    }
    dist_allgather(mine, all, per * sizeof(double));
    double n = all[0];
    for (int c = 0; c < C; c++) part[c] = all[1 + c], part[C + c] = all[1 + C + c];
    for (int r = 1; r < N; r++) { /* rank order, the same on every rank */
        const double *o = all + (size_t)r * per;
        double nb = o[0], total = n + nb;
        if (nb == 0) continue;
        for (int c = 0; c < C; c++) {
            double delta = o[1 + c] - part[c];
            part[c] += delta * nb / total;
            part[C + c] += o[1 + C + c] + delta * delta * n * nb / total;
        }
        n = total;
    }
    free(mine);
    free(all);
    return n;
}

void cpu_bn_forward_train(Backend *b, const Tensor *x, const float *gamma, const float *beta, float *running_mean,
                          float *running_var, float momentum, float eps, float *save_mean, float *save_invstd,
                          Tensor *y) {
    const int C = x->c;
    const size_t rows = (size_t)x->n * x->h * x->w;
    if (rows == 0) die("bn_forward_train: empty input");
    const float *xd = x->data; // (rows, C)
    cpu_set_shape(y, x->n, x->c, x->h, x->w);
    int nt = rows * C >= CPU_PAR_MIN ? max_threads() : 1;
    double *part = partials(b, nt, C);
#pragma omp parallel num_threads(nt)
    {
        size_t r0, r1;
        int t = thread_rows(rows, &r0, &r1);
        double *s1 = part + (size_t)t * 2 * C, *s2 = s1 + C; /* sums of d and d^2 */
        for (size_t r = r0; r < r1; r++) {
            const float *xr = xd + r * C;
            for (int c = 0; c < C; c++) {
                double d = (double)xr[c] - (double)xd[c];
                s1[c] += d;
                s2[c] += d * d;
            }
        }
    }
    reduce_partials(part, nt, C);
    float *scale = cpu_scratch(b, CPU_WS_CHAN, (size_t)C * sizeof(float));
    /* part -> each channel's mean (part[c]) and sum of squared deviations (part[C + c]) over n rows:
     * this process's, or with sync_bn the global batch's */
    double n = (double)rows;
    if (b->sync_bn) {
        n = sync_stats(part, xd, rows, C);
    } else {
        for (int c = 0; c < C; c++) {
            double dmean = part[c] / (double)rows;
            double ss = part[C + c] - part[c] * dmean;
            part[c] = (double)xd[c] + dmean;
            part[C + c] = ss < 0 ? 0 : ss;
        }
    }
    for (int c = 0; c < C; c++) {
        double mean = part[c], ss = part[C + c], var = ss / n;
        double unbiased = n > 1 ? ss / (n - 1) : var;
        double invstd = 1.0 / sqrt(var + (double)eps);
        save_mean[c] = (float)mean;
        save_invstd[c] = (float)invstd;
        if (running_mean) running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean);
        if (running_var) running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
        scale[c] = (float)(gamma[c] * invstd);
    }
    affine(xd, save_mean, scale, beta, rows, C, y->data);
}

void cpu_bn_forward_infer(Backend *b, const Tensor *x, const float *gamma, const float *beta,
                          const float *running_mean, const float *running_var, float eps, Tensor *y) {
    const int C = x->c;
    const size_t rows = (size_t)x->n * x->h * x->w;
    cpu_set_shape(y, x->n, x->c, x->h, x->w);
    float *scale = cpu_scratch(b, CPU_WS_CHAN, (size_t)C * sizeof(float));
    for (int c = 0; c < C; c++) scale[c] = (float)(gamma[c] / sqrt((double)running_var[c] + eps));
    affine(x->data, running_mean, scale, beta, rows, C, y->data);
}

/* Per channel: sum dy and sum dy * (x - center). */
static double *dy_sums(Backend *b, const float *x, const float *dy, const float *center, size_t rows, int C) {
    int nt = rows * C >= CPU_PAR_MIN ? max_threads() : 1;
    double *part = partials(b, nt, C);
#pragma omp parallel num_threads(nt)
    {
        size_t r0, r1;
        int t = thread_rows(rows, &r0, &r1);
        double *sdy = part + (size_t)t * 2 * C, *sdyx = sdy + C;
        for (size_t r = r0; r < r1; r++) {
            const float *xr = x + r * C, *gr = dy + r * C;
            for (int c = 0; c < C; c++) {
                sdy[c] += gr[c];
                sdyx[c] += (double)gr[c] * ((double)xr[c] - center[c]);
            }
        }
    }
    reduce_partials(part, nt, C);
    return part;
}

/* dx = (accumulate ? dx : 0) + a[c]*dy + k[c]*(x - center[c]) + e[c]; dx may alias dy. */
static void bn_dx(const float *x, const float *dy, const float *center, const float *a, const float *k,
                  const float *e, size_t rows, int C, float *dx, int accumulate) {
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * C, *gr = dy + r * C;
        float *dr = dx + r * C;
        if (accumulate)
            for (int c = 0; c < C; c++) dr[c] += a[c] * gr[c] + k[c] * (xr[c] - center[c]) + e[c];
        else
            for (int c = 0; c < C; c++) dr[c] = a[c] * gr[c] + k[c] * (xr[c] - center[c]) + e[c];
    }
}

/* Training-mode backward, with xhat = (x - mean) * invstd and M = rows:
 *   dbeta = sum dy, dgamma = sum dy * xhat,
 *   dx = gamma * invstd * (dy - dbeta / M - xhat * dgamma / M). */
void cpu_bn_backward(Backend *b, const Tensor *x, const Tensor *dy, const float *gamma, const float *save_mean,
                     const float *save_invstd, float *dgamma, float *dbeta, Tensor *dx, int accumulate) {
    const int C = x->c;
    const size_t rows = (size_t)x->n * x->h * x->w;
    const double *s = dy_sums(b, x->data, dy->data, save_mean, rows, C);
    float *coef = cpu_scratch(b, CPU_WS_CHAN, 3 * (size_t)C * sizeof(float));
    float *a = coef, *k = coef + C, *e = coef + 2 * C;
    double *global = NULL, M = (double)rows;
    if (b->sync_bn) { /* dx takes the global batch's sums; dgamma, dbeta this rank's own */
        global = xmalloc((2 * (size_t)C + 1) * sizeof(double));
        memcpy(global, s, 2 * (size_t)C * sizeof(double));
        global[2 * C] = (double)rows;
        dist_allreduce_sum_f64(global, 2 * (size_t)C + 1);
        M = global[2 * C];
    }
    for (int c = 0; c < C; c++) {
        double invstd = save_invstd[c], db = s[c], dg = s[C + c] * invstd;
        if (dbeta) dbeta[c] = (float)db;
        if (dgamma) dgamma[c] = (float)dg;
        if (global) db = global[c], dg = global[C + c] * invstd;
        double ac = gamma[c] * invstd;
        double kc = -ac * invstd * dg / M;        /* multiplies (x - mean) */
        a[c] = (float)ac;
        k[c] = (float)kc;
        e[c] = (float)(-ac * db / M);
    }
    free(global);
    if (!dx) return;
    cpu_set_shape(dx, x->n, x->c, x->h, x->w);
    bn_dx(x->data, dy->data, save_mean, a, k, e, rows, C, dx->data, accumulate);
}

/* Backward through y = gamma * (x - rm) / sqrt(rv + eps) + beta with the statistics constant. */
void cpu_bn_backward_infer(Backend *b, const Tensor *x, const Tensor *dy, const float *gamma,
                           const float *running_mean, const float *running_var, float eps, float *dgamma,
                           float *dbeta, Tensor *dx, int accumulate) {
    const int C = x->c;
    const size_t rows = (size_t)x->n * x->h * x->w;
    const double *s = dy_sums(b, x->data, dy->data, running_mean, rows, C);
    float *coef = cpu_scratch(b, CPU_WS_CHAN, 3 * (size_t)C * sizeof(float));
    float *a = coef, *k = coef + C, *e = coef + 2 * C;
    for (int c = 0; c < C; c++) {
        double invstd = 1.0 / sqrt((double)running_var[c] + eps);
        if (dbeta) dbeta[c] = (float)s[c];
        if (dgamma) dgamma[c] = (float)(s[C + c] * invstd);
        a[c] = (float)(gamma[c] * invstd);
        k[c] = 0.0f;
        e[c] = 0.0f;
    }
    if (!dx) return;
    cpu_set_shape(dx, x->n, x->c, x->h, x->w);
    bn_dx(x->data, dy->data, running_mean, a, k, e, rows, C, dx->data, accumulate);
}
