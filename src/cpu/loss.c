/* cpu/loss.c: softmax cross-entropy with label smoothing and mixup (cuda/loss.cu's twin).
 * Inner loops run over the contiguous channel dimension so gcc vectorises them; outer loops are
 * OpenMP-parallel once the tensor is big enough to pay for a fork/join. */
#include <math.h>

#include "cpu/backend.h"
#include "base/util.h"

/* ---- loss ---- */

/* Per sample, with t the smoothed mixed target (sums to 1) and lse = log sum exp z:
 *   loss_i = -sum_j t_j log softmax_j = lse - sum_j t_j z_j,  dz_j = (softmax_j - t_j) / n.
 * Samples run in parallel; their losses are summed afterwards in order, so the result does not
 * depend on the thread count. dlogits may alias logits: each row is fully read before it is written. */
void cpu_softmax_xent(Backend *b, const Tensor *logits, const int32_t *labels_a, const int32_t *labels_b,
                      const float *lam, float smoothing, float scale_f, float *loss, Tensor *dlogits) {
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
    const double base = (double)smoothing / K, scale = scale_f; /* the loss scale (backend.h) */
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
