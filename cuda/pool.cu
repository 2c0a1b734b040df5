/* pool.cu: max and average pooling (PyTorch's ceil_mode and count_include_pad rules) and global
 * average pooling, NHWC, forward and backward, templates over the activation type T (fp32, fp16,
 * bf16; sums in fp32). Kernels of our own: cuDNN pooling has no ceil mode. Backward kernels gather
 * (one thread per input element, summing the windows that cover it), so no atomics and the result is
 * deterministic. */
#include "cuda_backend.h"
#include "dtype.h"

#include <math.h>

/* Output rows whose window [o*stride - pad, o*stride - pad + k) covers input row i. */
__device__ static inline void covering(int i, int k, int stride, int pad, int out, int *lo, int *hi) {
    int first = i + pad - k + 1; /* the window must end at or after i */
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    int last = (i + pad) / stride; /* and start at or before i */
    *hi = last < out - 1 ? last : out - 1;
}

/* The first maximum in scan order, as PyTorch picks it; NaN wins, so it propagates. Returns the
 * flat (h*w) index of the winner in the input map, or -1 for a window of padding only. */
template <typename T>
__device__ static inline int max_index(const T *x, int h, int w, int c, int ch, int hs, int ws, int k) {
    int best = -1;
    float bv = -INFINITY;
    for (int i = hs; i < hs + k; i++) {
        if (i < 0 || i >= h) continue;
        for (int j = ws; j < ws + k; j++) {
            if (j < 0 || j >= w) continue;
            float v = to_float(x[((size_t)i * w + j) * c + ch]);
            if (best < 0 || v > bv || isnan(v)) {
                best = i * w + j;
                bv = v;
                if (isnan(v)) return best;
            }
        }
    }
    return best;
}

template <typename T>
__global__ void maxpool_fwd_kernel(const T *x, T *y, int n, int c, int h, int w, int oh, int ow, int k, int stride,
                                   int pad) {
    size_t total = (size_t)n * oh * ow * c;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i;
        int ch = (int)(t % c);
        t /= c;
        int ox = (int)(t % ow);
        t /= ow;
        int oy = (int)(t % oh);
        int ni = (int)(t / oh);
        const T *xn = x + (size_t)ni * h * w * c;
        int best = max_index(xn, h, w, c, ch, oy * stride - pad, ox * stride - pad, k);
        y[i] = best < 0 ? from_float<T>(-INFINITY) : xn[(size_t)best * c + ch];
    }
}

/* Recomputes each covering window's argmax rather than storing indices in the forward pass. */
template <typename T>
__global__ void maxpool_bwd_kernel(const T *x, const T *dy, T *dx, int n, int c, int h, int w, int oh, int ow, int k,
                                   int stride, int pad, int accumulate) {
    size_t total = (size_t)n * h * w * c;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i;
        int ch = (int)(t % c);
        t /= c;
        int ix = (int)(t % w);
        t /= w;
        int iy = (int)(t % h);
        int ni = (int)(t / h);
        const T *xn = x + (size_t)ni * h * w * c;
        const T *dyn = dy + (size_t)ni * oh * ow * c;
        int y0, y1, x0, x1;
        covering(iy, k, stride, pad, oh, &y0, &y1);
        covering(ix, k, stride, pad, ow, &x0, &x1);
        float g = 0.0f;
        for (int oy = y0; oy <= y1; oy++)
            for (int ox = x0; ox <= x1; ox++)
                if (max_index(xn, h, w, c, ch, oy * stride - pad, ox * stride - pad, k) == iy * w + ix)
                    g += to_float(dyn[((size_t)oy * ow + ox) * c + ch]);
        dx[i] = from_float<T>(accumulate ? to_float(dx[i]) + g : g);
    }
}

/* PyTorch's divisor: the window clipped to the padded input (count_include_pad), so the part of a
 * ceil-mode window hanging past the padding does not count. */
__device__ static inline int avg_divisor(int oy, int ox, int h, int w, int k, int stride, int pad) {
    int hs = oy * stride - pad, ws = ox * stride - pad;
    int he = min(hs + k, h + pad), we = min(ws + k, w + pad);
    return (he - hs) * (we - ws);
}

template <typename T>
__global__ void avgpool_fwd_kernel(const T *x, T *y, int n, int c, int h, int w, int oh, int ow, int k, int stride,
                                   int pad) {
    size_t total = (size_t)n * oh * ow * c;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i;
        int ch = (int)(t % c);
        t /= c;
        int ox = (int)(t % ow);
        t /= ow;
        int oy = (int)(t % oh);
        int ni = (int)(t / oh);
        const T *xn = x + (size_t)ni * h * w * c;
        int hs = oy * stride - pad, ws = ox * stride - pad;
        float s = 0.0f;
        for (int yy = max(hs, 0); yy < min(hs + k, h); yy++)
            for (int xx = max(ws, 0); xx < min(ws + k, w); xx++) s += to_float(xn[((size_t)yy * w + xx) * c + ch]);
        y[i] = from_float<T>(s / (float)avg_divisor(oy, ox, h, w, k, stride, pad));
    }
}

template <typename T>
__global__ void avgpool_bwd_kernel(const T *dy, T *dx, int n, int c, int h, int w, int oh, int ow, int k, int stride,
                                   int pad, int accumulate) {
    size_t total = (size_t)n * h * w * c;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i;
        int ch = (int)(t % c);
        t /= c;
        int ix = (int)(t % w);
        t /= w;
        int iy = (int)(t % h);
        int ni = (int)(t / h);
        const T *dyn = dy + (size_t)ni * oh * ow * c;
        int y0, y1, x0, x1;
        covering(iy, k, stride, pad, oh, &y0, &y1);
        covering(ix, k, stride, pad, ow, &x0, &x1);
        float g = 0.0f;
        for (int oy = y0; oy <= y1; oy++)
            for (int ox = x0; ox <= x1; ox++)
                g += to_float(dyn[((size_t)oy * ow + ox) * c + ch]) / (float)avg_divisor(oy, ox, h, w, k, stride, pad);
        dx[i] = from_float<T>(accumulate ? to_float(dx[i]) + g : g);
    }
}

/* One thread per (image, channel): neighbouring threads read neighbouring channels. */
template <typename T> __global__ void gap_fwd_kernel(const T *x, T *y, int n, int c, int hw) {
    size_t total = (size_t)n * c;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t ni = i / c, ch = i % c;
        const T *xn = x + ni * hw * c + ch;
        float s = 0.0f;
        for (int p = 0; p < hw; p++) s += to_float(xn[(size_t)p * c]);
        y[i] = from_float<T>(s / (float)hw);
    }
}

template <typename T> __global__ void gap_bwd_kernel(const T *dy, T *dx, int n, int c, int hw, int accumulate) {
    size_t total = (size_t)n * hw * c;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t ch = i % c, ni = i / ((size_t)hw * c);
        float g = to_float(dy[ni * c + ch]) / (float)hw;
        dx[i] = from_float<T>(accumulate ? to_float(dx[i]) + g : g);
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
        maxpool_fwd_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
            (const T *)x->data, (T *)y->data, x->n, x->c, x->h, x->w, oh, ow, g->k, g->stride, g->pad);
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
        maxpool_bwd_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
            (const T *)x->data, (const T *)dy->data, (T *)dx->data, x->n, x->c, x->h, x->w, oh, ow, g->k, g->stride,
            g->pad, accumulate);
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
        avgpool_fwd_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
            (const T *)x->data, (T *)y->data, x->n, x->c, x->h, x->w, oh, ow, g->k, g->stride, g->pad);
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
        avgpool_bwd_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
            (const T *)dy->data, (T *)dx->data, dx->n, dx->c, dx->h, dx->w, oh, ow, g->k, g->stride, g->pad,
            accumulate);
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
        gap_fwd_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>((const T *)x->data, (T *)y->data,
                                                                                    x->n, x->c, x->h * x->w);
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
        gap_bwd_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
            (const T *)dy->data, (T *)dx->data, dx->n, dx->c, dx->h * dx->w, accumulate);
    });
    KERNEL_CHECK();
}
