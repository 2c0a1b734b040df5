/* cpu/linear.c: the fully connected layer as GEMMs (cuda/linear.cu's twin).
 * Inner loops run over the contiguous channel dimension so gcc vectorises them; outer loops are
 * OpenMP-parallel once the tensor is big enough to pay for a fork/join. */
#include "cpu/backend.h"
#include "cpu/gemm.h"
#include "base/util.h"

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
    (void)b;
    int n = x->n, in = x->c * x->h * x->w, out = dy->c;
    const float *gd = dy->data;
    if (dw) sgemm(1, 0, out, in, n, 1.0f, gd, out, x->data, in, 0.0f, dw, in); // (out, in) = dy^T x
    if (db)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += gd[(size_t)i * out + o];
            db[o] = (float)s;
        }
    if (dx) {
        cpu_set_shape(dx, x->n, x->c, x->h, x->w);
        sgemm(0, 0, n, in, out, 1.0f, gd, out, w, in, accumulate ? 1.0f : 0.0f, dx->data, in); // (n, in) = dy w
    }
}
