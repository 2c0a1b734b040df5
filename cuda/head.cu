/* head.cu: the ops of fastai's cnn_learner head: concat pooling ([max | mean] over the map) and
 * dropout, NHWC, forward and backward, templates over the activation type (fp32, fp16, bf16; math in
 * fp32). One thread per (image, channel) for the pools, so neighbouring threads read neighbouring
 * channels and the backward needs no atomics (deterministic); one thread per element for dropout,
 * whose mask is redrawn from the seed, never stored. */
#include "cuda_backend.h"
#include "dtype.h"

#include <math.h>

/* ---- concat pool ---- */

template <typename T> __global__ void concat_pool_fwd_kernel(const T *x, T *y, int n, int c, int hw) {
    GRID_STRIDE(i, (size_t)n * c) {
        size_t ni = i / c, ch = i % c;
        const T *xn = x + ni * hw * c + ch;
        float mx = to_float(xn[0]), s = mx;
        for (int p = 1; p < hw; p++) {
            float v = to_float(xn[(size_t)p * c]);
            if ((v > mx || isnan(v)) && !isnan(mx)) mx = v; /* first maximum; a NaN sticks */
            s += v;
        }
        y[ni * 2 * c + ch] = from_float<T>(mx); /* exact: mx is one of the inputs */
        y[ni * 2 * c + c + ch] = from_float<T>(s / (float)hw);
    }
}

/* The max half's gradient goes to the first position equal to the forward's maximum. */
template <typename T>
__global__ void concat_pool_bwd_kernel(const T *x, const T *y, const T *dy, T *dx, int n, int c, int hw,
                                       int accumulate) {
    GRID_STRIDE(i, (size_t)n * c) {
        size_t ni = i / c, ch = i % c;
        const T *xn = x + ni * hw * c + ch;
        T *dn = dx + ni * hw * c + ch;
        float mx = to_float(y[ni * 2 * c + ch]), gmax = to_float(dy[ni * 2 * c + ch]);
        float gmean = to_float(dy[ni * 2 * c + c + ch]) / (float)hw;
        int hit = 0;
        for (int p = 0; p < hw; p++) {
            int first = !hit && to_float(xn[(size_t)p * c]) == mx;
            hit |= first;
            float g = gmean + (first ? gmax : 0.0f);
            size_t o = (size_t)p * c;
            dn[o] = from_float<T>(accumulate ? to_float(dn[o]) + g : g);
        }
    }
}

void cuda_concat_pool_forward(Backend *b, const Tensor *x, Tensor *y) {
    DType dt = cuda_act_dtype(x, "concat_pool_forward");
    cuda_require_dtype(y, dt, "concat_pool_forward");
    if (x->h < 1 || x->w < 1) die("cuda concat_pool_forward: empty %dx%d map", x->h, x->w);
    int n = x->n, c = x->c;
    cuda_set_shape(y, n, 2 * c, 1, 1);
    size_t total = (size_t)n * c;
    if (total == 0) return;
    cuda_dispatch(dt, "concat_pool_forward", [&](auto tag) {
        using T = decltype(tag);
        concat_pool_fwd_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
            (const T *)x->data, (T *)y->data, n, c, x->h * x->w);
    });
    KERNEL_CHECK();
}

void cuda_concat_pool_backward(Backend *b, const Tensor *x, const Tensor *y, const Tensor *dy, Tensor *dx,
                               int accumulate) {
    DType dt = cuda_act_dtype(x, "concat_pool_backward");
    cuda_require_dtype(y, dt, "concat_pool_backward");
    cuda_require_dtype(dy, dt, "concat_pool_backward");
    cuda_require_dtype(dx, dt, "concat_pool_backward");
    int n = x->n, c = x->c;
    if (dy->n != n || dy->c != 2 * c || y->c != 2 * c || dy->h * dy->w != 1)
        die("cuda concat_pool_backward: dy is %dx%dx%dx%d, y has %d channels; expected %dx%dx1x1", dy->n, dy->c, dy->h,
            dy->w, y->c, n, 2 * c);
    cuda_set_shape(dx, n, c, x->h, x->w);
    size_t total = (size_t)n * c;
    if (total == 0) return;
    cuda_dispatch(dt, "concat_pool_backward", [&](auto tag) {
        using T = decltype(tag);
        concat_pool_bwd_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
            (const T *)x->data, (const T *)y->data, (const T *)dy->data, (T *)dx->data, n, c, x->h * x->w,
            accumulate);
    });
    KERNEL_CHECK();
}

/* ---- dropout ---- */

/* A device copy of rng_hash (src/rng.c): gpu_parity checks that both backends draw the same masks. */
__device__ static inline uint64_t hash64(uint64_t key, uint64_t index) {
    uint64_t z = key + (index + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* x is NHWC; the mask is indexed in NCHW order (backend.h), so both layouts draw the same mask. */
template <typename T>
__global__ void dropout_kernel(const T *x, T *y, int c, int hw, size_t total, float p, float scale, uint64_t seed,
                               int accumulate) {
    GRID_STRIDE(i, total) {
        size_t ch = i % c, pix = (i / c) % hw, ni = i / ((size_t)c * hw);
        size_t nchw = (ni * c + ch) * hw + pix;
        int keep = (float)(hash64(seed, nchw) >> 40) * (1.0f / 16777216.0f) >= p;
        float v = keep ? to_float(x[i]) * scale : 0.0f;
        y[i] = from_float<T>(accumulate ? to_float(y[i]) + v : v);
    }
}

static void dropout_launch(Backend *b, const Tensor *x, float p, uint64_t seed, Tensor *y, int accumulate,
                           const char *op) {
    DType dt = cuda_act_dtype(x, op);
    cuda_require_dtype(y, dt, op);
    if (!(p >= 0.0f && p <= 1.0f)) die("cuda %s: p = %g is not in [0, 1]", op, p);
    int n = x->n, c = x->c, h = x->h, w = x->w; /* y may alias x */
    cuda_set_shape(y, n, c, h, w);
    size_t total = tensor_numel(y);
    if (total == 0) return;
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f; /* computed once, as the CPU does */
    cuda_dispatch(dt, op, [&](auto tag) {
        using T = decltype(tag);
        dropout_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
            (const T *)x->data, (T *)y->data, c, h * w, total, p, scale, seed, accumulate);
    });
    KERNEL_CHECK();
}

void cuda_dropout_forward(Backend *b, const Tensor *x, float p, uint64_t seed, Tensor *y) {
    dropout_launch(b, x, p, seed, y, 0, "dropout_forward");
}

void cuda_dropout_backward(Backend *b, const Tensor *dy, float p, uint64_t seed, Tensor *dx, int accumulate) {
    dropout_launch(b, dy, p, seed, dx, accumulate, "dropout_backward");
}
