/* head.cu: the ops of fastai's cnn_learner head: concat pooling ([max | mean] over the map) and
 * dropout, NHWC, forward and backward, templates over the activation type (fp32, fp16, bf16; math in
 * fp32). One thread per (image, channel group) for the pools, so neighbouring threads read
 * neighbouring channels and the backward needs no atomics (deterministic); one thread per group of
 * elements for dropout, whose mask is redrawn from the seed, never stored. A group is 16 bytes of
 * channels (8 fp16/bf16, 4 fp32) when c % 8 (or 4) == 0 and the pointers are aligned, else one
 * channel (vec.h); the per-element math is the same either way. */
#include "cuda_backend.h"
#include "dtype.h"
#include "vec.h"

#include <math.h>

/* ---- concat pool ---- */

/* A thread per (image, group of L channels); L = 16 bytes of channels when c allows (vec.h). */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK) concat_pool_fwd_kernel(const T *__restrict__ x, T *__restrict__ y, int n,
                                                                     int c, int hw) {
    int cg = c / L;
    GRID_STRIDE(i, (size_t)n * cg) {
        size_t ni = i / cg, ch = (i % cg) * L;
        const T *xn = x + ni * hw * c + ch;
        float mx[L], s[L];
        load_floats(xn, mx);
#pragma unroll
        for (int l = 0; l < L; l++) s[l] = mx[l];
        for (int p = 1; p < hw; p++) {
            float v[L];
            load_floats(xn + (size_t)p * c, v);
#pragma unroll
            for (int l = 0; l < L; l++) {
                if ((v[l] > mx[l] || isnan(v[l])) && !isnan(mx[l])) mx[l] = v[l]; /* first maximum; a NaN sticks */
                s[l] += v[l];
            }
        }
#pragma unroll
        for (int l = 0; l < L; l++) s[l] = s[l] / (float)hw;
        store_floats(y + ni * 2 * c + ch, mx); /* exact: mx is one of the inputs */
        store_floats(y + ni * 2 * c + c + ch, s);
    }
}

/* The max half's gradient goes to the first position equal to the forward's maximum. */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK)
    concat_pool_bwd_kernel(const T *__restrict__ x, const T *__restrict__ y, const T *__restrict__ dy,
                           T *__restrict__ dx, int n, int c, int hw, int accumulate) {
    int cg = c / L;
    GRID_STRIDE(i, (size_t)n * cg) {
        size_t ni = i / cg, ch = (i % cg) * L;
        const T *xn = x + ni * hw * c + ch;
        T *dn = dx + ni * hw * c + ch;
        float mx[L], gmax[L], gmean[L];
        load_floats(y + ni * 2 * c + ch, mx);
        load_floats(dy + ni * 2 * c + ch, gmax);
        load_floats(dy + ni * 2 * c + c + ch, gmean);
        int hit[L];
#pragma unroll
        for (int l = 0; l < L; l++) {
            gmean[l] = gmean[l] / (float)hw;
            hit[l] = 0;
        }
        for (int p = 0; p < hw; p++) {
            size_t o = (size_t)p * c;
            float v[L], g[L], old[L];
            load_floats(xn + o, v);
            if (accumulate) load_floats(dn + o, old);
#pragma unroll
            for (int l = 0; l < L; l++) {
                int first = !hit[l] && v[l] == mx[l];
                hit[l] |= first;
                g[l] = gmean[l] + (first ? gmax[l] : 0.0f);
                if (accumulate) g[l] = old[l] + g[l];
            }
            store_floats(dn + o, g);
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
        lanes_dispatch<T>(channels_wide<T>(c, x->data, y->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            concat_pool_fwd_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)x->data, (T *)y->data, n, c, x->h * x->w);
        });
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
        lanes_dispatch<T>(channels_wide<T>(c, x->data, y->data, dy->data, dx->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            concat_pool_bwd_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)x->data, (const T *)y->data, (const T *)dy->data, (T *)dx->data, n, c, x->h * x->w,
                accumulate);
        });
    });
    KERNEL_CHECK();
}

/* ---- dropout ---- */

/* A device copy of rng_hash (src/base/rng.c): gpu_parity checks that both backends draw the same masks. */
__device__ static inline uint64_t hash64(uint64_t key, uint64_t index) {
    uint64_t z = key + (index + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* x is NHWC; the mask is indexed in NCHW order (backend.h), so both layouts draw the same mask.
 * A thread takes L elements of one pixel (c % L == 0). No __restrict__: y may alias x. */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK) dropout_kernel(const T *x, T *y, int c, int hw, size_t total, float p,
                                                             float scale, uint64_t seed, int accumulate,
                                                             size_t first_image) {
    GRID_STRIDE(g, total / L) {
        /* ni: the image's index in the global batch (a data-parallel rank's part starts at first_image) */
        size_t i = g * L, ch = i % c, pix = (i / c) % hw, ni = first_image + i / ((size_t)c * hw);
        float v[L], old[L];
        load_floats(x + i, v);
        if (accumulate) load_floats(y + i, old);
#pragma unroll
        for (int l = 0; l < L; l++) {
            size_t nchw = (ni * c + ch + l) * hw + pix;
            int keep = (float)(hash64(seed, nchw) >> 40) * (1.0f / 16777216.0f) >= p;
            v[l] = keep ? v[l] * scale : 0.0f;
            if (accumulate) v[l] = old[l] + v[l];
        }
        store_floats(y + i, v);
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
        lanes_dispatch<T>(channels_wide<T>(c, x->data, y->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            dropout_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)x->data, (T *)y->data, c, h * w, total, p, scale, seed, accumulate, (size_t)b->image_offset);
        });
    });
    KERNEL_CHECK();
}

void cuda_dropout_forward(Backend *b, const Tensor *x, float p, uint64_t seed, Tensor *y) {
    dropout_launch(b, x, p, seed, y, 0, "dropout_forward");
}

void cuda_dropout_backward(Backend *b, const Tensor *dy, float p, uint64_t seed, Tensor *dx, int accumulate) {
    dropout_launch(b, dy, p, seed, dx, accumulate, "dropout_backward");
}
