/* cpu/elementwise.c: ReLU, the residual add and gradient accumulation on float32 (cuda/elementwise.cu's
 * twins).
 * Inner loops run over the contiguous channel dimension so gcc vectorises them; outer loops are
 * OpenMP-parallel once the tensor is big enough to pay for a fork/join. */
#include <string.h>

#include "cpu/backend.h"
#include "base/util.h"

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
