/* pool.cu: max and average pooling (PyTorch's ceil_mode and count_include_pad rules) and global
 * average pooling, NHWC, forward and backward, templates over the activation type T (fp32, fp16,
 * bf16; sums in fp32). Kernels of our own: cuDNN pooling has no ceil mode. Backward kernels gather
 * (one thread per input position and channel group, summing the windows that cover it), so no
 * atomics and the result is deterministic. A thread takes 16 bytes of channels (8 fp16/bf16, 4 fp32)
 * when c allows it (vec.h), else one channel. */
#include "cuda_backend.h"
#include "dtype.h"
#include "vec.h"

#include <math.h>

/* Output rows whose window [o*stride - pad, o*stride - pad + k) covers input row i. */
__device__ static inline void covering(int i, int k, int stride, int pad, int out, int *lo, int *hi) {
    int first = i + pad - k + 1; /* the window must end at or after i */
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    int last = (i + pad) / stride; /* and start at or before i */
    *hi = last < out - 1 ? last : out - 1;
}

/* Every kernel is templated on L, the channels one thread handles (vec.h): L = 1, or 16 bytes of
 * them when c % L == 0 and the pointers are 16-byte aligned. Each channel's arithmetic is the same
 * at either width. A thread's work item is (pixel, channel group): idx = pix * (c / L) + group. */

/* The first maximum in scan order, as PyTorch picks it; NaN wins, so it propagates. For each of the
 * L channels at x (the map's pixel 0, first channel of the group): best = the flat (h*w) index of
 * the winner in the input map, or -1 for a window of padding only; bv = its value, bit for bit. */
template <typename T, int L>
__device__ static inline void max_index(const T *__restrict__ x, int h, int w, int c, int hs, int ws, int k,
                                        int (&best)[L], T (&bv)[L]) {
    float bf[L];
#pragma unroll
    for (int l = 0; l < L; l++) {
        best[l] = -1;
        bf[l] = -INFINITY;
    }
    for (int i = hs; i < hs + k; i++) {
        if (i < 0 || i >= h) continue;
        for (int j = ws; j < ws + k; j++) {
            if (j < 0 || j >= w) continue;
            T v[L];
            load_raw(x + ((size_t)i * w + j) * c, v);
#pragma unroll
            for (int l = 0; l < L; l++) {
                float f = to_float(v[l]);
                /* once the best is NaN it stays: the scan stopped there */
                if (best[l] < 0 || ((f > bf[l] || isnan(f)) && !isnan(bf[l]))) {
                    best[l] = i * w + j;
                    bf[l] = f;
                    bv[l] = v[l];
                }
            }
        }
    }
}

/* Work item i of a grid over (pixel, group of L channels) of an NHWC map hh x ww with cg groups:
 * its pixel (flat over images, rows, columns), first channel, column, row and image. */
struct PixelAt {
    size_t pix;
    int ch, x, y, n;
};
__device__ __forceinline__ PixelAt pixel_at(size_t i, int cg, int L, int hh, int ww) {
    PixelAt a;
    a.ch = (int)(i % cg) * L;
    a.pix = i / cg;
    a.x = (int)(a.pix % ww);
    size_t t = a.pix / ww;
    a.y = (int)(t % hh);
    a.n = (int)(t / hh);
    return a;
}

template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK)
    maxpool_fwd_kernel(const T *__restrict__ x, T *__restrict__ y, int n, int c, int h, int w, int oh, int ow, int k,
                       int stride, int pad) {
    int cg = c / L;
    GRID_STRIDE(i, (size_t)n * oh * ow * cg) {
        PixelAt at = pixel_at(i, cg, L, oh, ow);
        int ch = at.ch, ox = at.x, oy = at.y, ni = at.n;
        size_t pix = at.pix;
        int best[L];
        T bv[L];
        max_index<T, L>(x + (size_t)ni * h * w * c + ch, h, w, c, oy * stride - pad, ox * stride - pad, k, best, bv);
#pragma unroll
        for (int l = 0; l < L; l++)
            if (best[l] < 0) bv[l] = from_float<T>(-INFINITY);
        store_raw(y + pix * c + ch, bv);
    }
}

/* Recomputes each covering window's argmax rather than storing indices in the forward pass.
 * No __launch_bounds__: with it ptxas squeezes the fp16/bf16 L = 1 kernel into 32 registers and spills. */
template <typename T, int L>
__global__ void maxpool_bwd_kernel(const T *__restrict__ x, const T *__restrict__ dy, T *__restrict__ dx, int n, int c,
                                   int h, int w, int oh, int ow, int k, int stride, int pad, int accumulate) {
    int cg = c / L;
    GRID_STRIDE(i, (size_t)n * h * w * cg) {
        PixelAt at = pixel_at(i, cg, L, h, w);
        int ch = at.ch, ix = at.x, iy = at.y, ni = at.n;
        size_t pix = at.pix;
        const T *xn = x + (size_t)ni * h * w * c + ch;
        const T *dyn = dy + (size_t)ni * oh * ow * c + ch;
        int y0, y1, x0, x1;
        covering(iy, k, stride, pad, oh, &y0, &y1);
        covering(ix, k, stride, pad, ow, &x0, &x1);
        float g[L];
#pragma unroll
        for (int l = 0; l < L; l++) g[l] = 0.0f;
        for (int oy = y0; oy <= y1; oy++)
            for (int ox = x0; ox <= x1; ox++) {
                int best[L];
                T bv[L];
                max_index<T, L>(xn, h, w, c, oy * stride - pad, ox * stride - pad, k, best, bv);
                float d[L];
                load_floats(dyn + ((size_t)oy * ow + ox) * c, d);
#pragma unroll
                for (int l = 0; l < L; l++)
                    if (best[l] == iy * w + ix) g[l] += d[l];
            }
        if (accumulate) {
            float old[L];
            load_floats(dx + pix * c + ch, old);
#pragma unroll
            for (int l = 0; l < L; l++) g[l] = old[l] + g[l];
        }
        store_floats(dx + pix * c + ch, g);
    }
}

/* PyTorch's divisor: the window clipped to the padded input (count_include_pad), so the part of a
 * ceil-mode window hanging past the padding does not count. */
__device__ static inline int avg_divisor(int oy, int ox, int h, int w, int k, int stride, int pad) {
    int hs = oy * stride - pad, ws = ox * stride - pad;
    int he = min(hs + k, h + pad), we = min(ws + k, w + pad);
    return (he - hs) * (we - ws);
}

template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK)
    avgpool_fwd_kernel(const T *__restrict__ x, T *__restrict__ y, int n, int c, int h, int w, int oh, int ow, int k,
                       int stride, int pad) {
    int cg = c / L;
    GRID_STRIDE(i, (size_t)n * oh * ow * cg) {
        PixelAt at = pixel_at(i, cg, L, oh, ow);
        int ch = at.ch, ox = at.x, oy = at.y, ni = at.n;
        size_t pix = at.pix;
        const T *xn = x + (size_t)ni * h * w * c + ch;
        int hs = oy * stride - pad, ws = ox * stride - pad;
        float s[L];
#pragma unroll
        for (int l = 0; l < L; l++) s[l] = 0.0f;
        for (int yy = max(hs, 0); yy < min(hs + k, h); yy++)
            for (int xx = max(ws, 0); xx < min(ws + k, w); xx++) {
                float v[L];
                load_floats(xn + ((size_t)yy * w + xx) * c, v);
#pragma unroll
                for (int l = 0; l < L; l++) s[l] += v[l];
            }
        float div = (float)avg_divisor(oy, ox, h, w, k, stride, pad);
#pragma unroll
        for (int l = 0; l < L; l++) s[l] = s[l] / div;
        store_floats(y + pix * c + ch, s);
    }
}

template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK)
    avgpool_bwd_kernel(const T *__restrict__ dy, T *__restrict__ dx, int n, int c, int h, int w, int oh, int ow,
                       int k, int stride, int pad, int accumulate) {
    int cg = c / L;
    GRID_STRIDE(i, (size_t)n * h * w * cg) {
        PixelAt at = pixel_at(i, cg, L, h, w);
        int ch = at.ch, ix = at.x, iy = at.y, ni = at.n;
        size_t pix = at.pix;
        const T *dyn = dy + (size_t)ni * oh * ow * c + ch;
        int y0, y1, x0, x1;
        covering(iy, k, stride, pad, oh, &y0, &y1);
        covering(ix, k, stride, pad, ow, &x0, &x1);
        float g[L];
#pragma unroll
        for (int l = 0; l < L; l++) g[l] = 0.0f;
        for (int oy = y0; oy <= y1; oy++)
            for (int ox = x0; ox <= x1; ox++) {
                float d[L];
                load_floats(dyn + ((size_t)oy * ow + ox) * c, d);
                float div = (float)avg_divisor(oy, ox, h, w, k, stride, pad);
#pragma unroll
                for (int l = 0; l < L; l++) g[l] += d[l] / div;
            }
        if (accumulate) {
            float old[L];
            load_floats(dx + pix * c + ch, old);
#pragma unroll
            for (int l = 0; l < L; l++) g[l] = old[l] + g[l];
        }
        store_floats(dx + pix * c + ch, g);
    }
}

/* One thread per (image, channel group): neighbouring threads read neighbouring channels. */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK) gap_fwd_kernel(const T *__restrict__ x, T *__restrict__ y, int n, int c,
                                                             int hw) {
    int cg = c / L;
    GRID_STRIDE(i, (size_t)n * cg) {
        size_t ni = i / cg, ch = (i % cg) * L;
        const T *xn = x + ni * hw * c + ch;
        float s[L];
#pragma unroll
        for (int l = 0; l < L; l++) s[l] = 0.0f;
        for (int p = 0; p < hw; p++) {
            float v[L];
            load_floats(xn + (size_t)p * c, v);
#pragma unroll
            for (int l = 0; l < L; l++) s[l] += v[l];
        }
#pragma unroll
        for (int l = 0; l < L; l++) s[l] = s[l] / (float)hw;
        store_floats(y + ni * c + ch, s);
    }
}

template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK) gap_bwd_kernel(const T *__restrict__ dy, T *__restrict__ dx, int n,
                                                             int c, int hw, int accumulate) {
    GRID_STRIDE(i, (size_t)n * hw * c / L) {
        size_t e = i * L, ch = e % c, ni = e / ((size_t)hw * c);
        float g[L];
        load_floats(dy + ni * c + ch, g);
#pragma unroll
        for (int l = 0; l < L; l++) g[l] = g[l] / (float)hw;
        if (accumulate) {
            float old[L];
            load_floats(dx + e, old);
#pragma unroll
            for (int l = 0; l < L; l++) g[l] = old[l] + g[l];
        }
        store_floats(dx + e, g);
    }
}

static void check_geom(const PoolGeom *g, const char *op) {
    if (g->k < 1 || g->stride < 1 || g->pad < 0 || 2 * g->pad > g->k)
        die("cuda %s: invalid pooling window k=%d stride=%d pad=%d (PyTorch needs pad <= k/2)", op, g->k, g->stride,
            g->pad);
}

/* Output size of the pool over x; dies when the input is too small. */
static void pool_out(const PoolGeom *g, const Tensor *x, int *oh, int *ow, const char *op) {
    check_geom(g, op);
    *oh = pool_out_size(x->h, g);
    *ow = pool_out_size(x->w, g);
    if (*oh < 1 || *ow < 1) die("cuda %s: input %dx%d is too small for a %dx%d window", op, x->h, x->w, g->k, g->k);
}

void cuda_maxpool_forward(Backend *b, const PoolGeom *g, const Tensor *x, Tensor *y) {
    DType dt = cuda_act_dtype(x, "maxpool_forward");
    cuda_require_dtype(y, dt, "maxpool_forward");
    int oh, ow;
    pool_out(g, x, &oh, &ow, "maxpool_forward");
    cuda_set_shape(y, x->n, x->c, oh, ow);
    size_t total = tensor_numel(y);
    if (total == 0) return;
    cuda_dispatch(dt, "maxpool_forward", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(channels_wide<T>(x->c, x->data, y->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            maxpool_fwd_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)x->data, (T *)y->data, x->n, x->c, x->h, x->w, oh, ow, g->k, g->stride, g->pad);
        });
    });
    KERNEL_CHECK();
}

/* y is not needed: the argmax is recomputed from x (the same first-maximum rule as the forward). */
void cuda_maxpool_backward(Backend *b, const PoolGeom *g, const Tensor *x, const Tensor *y, const Tensor *dy,
                           Tensor *dx, int accumulate) {
    (void)y;
    DType dt = cuda_act_dtype(x, "maxpool_backward");
    cuda_require_dtype(dy, dt, "maxpool_backward");
    cuda_require_dtype(dx, dt, "maxpool_backward");
    int oh, ow;
    pool_out(g, x, &oh, &ow, "maxpool_backward");
    if (dy->n != x->n || dy->c != x->c || dy->h != oh || dy->w != ow)
        die("cuda maxpool_backward: dy is %dx%dx%dx%d, expected %dx%dx%dx%d", dy->n, dy->c, dy->h, dy->w, x->n, x->c,
            oh, ow);
    cuda_set_shape(dx, x->n, x->c, x->h, x->w);
    size_t total = tensor_numel(dx);
    if (total == 0) return;
    cuda_dispatch(dt, "maxpool_backward", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(channels_wide<T>(x->c, x->data, dy->data, dx->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            maxpool_bwd_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)x->data, (const T *)dy->data, (T *)dx->data, x->n, x->c, x->h, x->w, oh, ow, g->k,
                g->stride, g->pad, accumulate);
        });
    });
    KERNEL_CHECK();
}

void cuda_avgpool_forward(Backend *b, const PoolGeom *g, const Tensor *x, Tensor *y) {
    DType dt = cuda_act_dtype(x, "avgpool_forward");
    cuda_require_dtype(y, dt, "avgpool_forward");
    int oh, ow;
    pool_out(g, x, &oh, &ow, "avgpool_forward");
    cuda_set_shape(y, x->n, x->c, oh, ow);
    size_t total = tensor_numel(y);
    if (total == 0) return;
    cuda_dispatch(dt, "avgpool_forward", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(channels_wide<T>(x->c, x->data, y->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            avgpool_fwd_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)x->data, (T *)y->data, x->n, x->c, x->h, x->w, oh, ow, g->k, g->stride, g->pad);
        });
    });
    KERNEL_CHECK();
}

/* dx's shape (set by the caller) is the input size: ceil mode makes it ambiguous from dy. */
void cuda_avgpool_backward(Backend *b, const PoolGeom *g, const Tensor *dy, Tensor *dx, int accumulate) {
    DType dt = cuda_act_dtype(dy, "avgpool_backward");
    cuda_require_dtype(dx, dt, "avgpool_backward");
    int oh, ow;
    pool_out(g, dx, &oh, &ow, "avgpool_backward");
    if (dy->n != dx->n || dy->c != dx->c || dy->h != oh || dy->w != ow)
        die("cuda avgpool_backward: dy is %dx%dx%dx%d, expected %dx%dx%dx%d for input %dx%d", dy->n, dy->c, dy->h,
            dy->w, dx->n, dx->c, oh, ow, dx->h, dx->w);
    size_t total = tensor_numel(dx);
    if (total == 0) return;
    cuda_dispatch(dt, "avgpool_backward", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(channels_wide<T>(dx->c, dy->data, dx->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            avgpool_bwd_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)dy->data, (T *)dx->data, dx->n, dx->c, dx->h, dx->w, oh, ow, g->k, g->stride, g->pad,
                accumulate);
        });
    });
    KERNEL_CHECK();
}

void cuda_global_avgpool_forward(Backend *b, const Tensor *x, Tensor *y) {
    DType dt = cuda_act_dtype(x, "global_avgpool_forward");
    cuda_require_dtype(y, dt, "global_avgpool_forward");
    if (x->h < 1 || x->w < 1) die("cuda global_avgpool_forward: empty %dx%d map", x->h, x->w);
    cuda_set_shape(y, x->n, x->c, 1, 1);
    size_t total = tensor_numel(y);
    if (total == 0) return;
    cuda_dispatch(dt, "global_avgpool_forward", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(channels_wide<T>(x->c, x->data, y->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            gap_fwd_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)x->data, (T *)y->data, x->n, x->c, x->h * x->w);
        });
    });
    KERNEL_CHECK();
}

/* dx's shape (set by the caller) gives the map size the gradient spreads over. */
void cuda_global_avgpool_backward(Backend *b, const Tensor *dy, Tensor *dx, int accumulate) {
    DType dt = cuda_act_dtype(dy, "global_avgpool_backward");
    cuda_require_dtype(dx, dt, "global_avgpool_backward");
    if (dy->n != dx->n || dy->c != dx->c || dy->h != 1 || dy->w != 1)
        die("cuda global_avgpool_backward: dy is %dx%dx%dx%d, expected %dx%dx1x1", dy->n, dy->c, dy->h, dy->w, dx->n,
            dx->c);
    size_t total = tensor_numel(dx);
    if (total == 0) return;
    cuda_dispatch(dt, "global_avgpool_backward", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(channels_wide<T>(dx->c, dy->data, dx->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            gap_bwd_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)dy->data, (T *)dx->data, dx->n, dx->c, dx->h * dx->w, accumulate);
        });
    });
    KERNEL_CHECK();
}
