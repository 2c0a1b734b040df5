/* elementwise.cu: ReLU, residual add and gradient accumulation (src/cpu/elementwise.c's twins). The
 * layouts are flat here (NHWC or not does not matter to an elementwise op). Activations may be fp32,
 * fp16 or bf16 (kernels are templates computing in float, see dtype.h); they move 16 bytes per
 * access when their pointers allow (vec.h), with the same per-element float math. */
#include "cuda_backend.h"
#include "dtype.h"
#include "vec.h"

#include <math.h>

/* ---- ReLU, add, accumulate ----
 * L elements per access (vec.h): 16 bytes when every pointer is 16-byte aligned, the last
 * total % L one by one. No __restrict__: y may alias x (relu), a or b (add). */

template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK) relu_fwd_kernel(const T *x, T *y, size_t total) {
    for_lanes<L>(total, [&](auto lanes, size_t i) {
        constexpr int K = decltype(lanes)::value;
        float v[K];
        load_floats(x + i, v);
#pragma unroll
        for (int k = 0; k < K; k++) v[k] = v[k] > 0.0f ? v[k] : 0.0f;
        store_floats(y + i, v);
    });
}

/* y is the forward output: y > 0 exactly where x > 0. */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK)
    relu_bwd_kernel(const T *y, const T *dy, T *dx, size_t total, int accumulate) {
    for_lanes<L>(total, [&](auto lanes, size_t i) {
        constexpr int K = decltype(lanes)::value;
        float yv[K], g[K], old[K];
        load_floats(y + i, yv);
        load_floats(dy + i, g);
        if (accumulate) load_floats(dx + i, old);
#pragma unroll
        for (int k = 0; k < K; k++) {
            g[k] = yv[k] > 0.0f ? g[k] : 0.0f;
            if (accumulate) g[k] = old[k] + g[k];
        }
        store_floats(dx + i, g);
    });
}

template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK) add_kernel(const T *a, const T *b, T *y, size_t total) {
    for_lanes<L>(total, [&](auto lanes, size_t i) {
        constexpr int K = decltype(lanes)::value;
        float va[K], vb[K];
        load_floats(a + i, va);
        load_floats(b + i, vb);
#pragma unroll
        for (int k = 0; k < K; k++) va[k] += vb[k];
        store_floats(y + i, va);
    });
}

void cuda_relu_forward(Backend *b, const Tensor *x, Tensor *y) {
    DType dt = cuda_act_dtype(x, "relu_forward");
    cuda_require_dtype(y, dt, "relu_forward");
    int n = x->n, c = x->c, h = x->h, w = x->w; /* y may alias x */
    cuda_set_shape(y, n, c, h, w);
    size_t total = tensor_numel(y);
    if (total == 0) return;
    cuda_dispatch(dt, "relu_forward", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(aligned16(x->data, y->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            relu_fwd_kernel<T, L><<<lanes_grid(total, L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)x->data, (T *)y->data, total);
        });
    });
    KERNEL_CHECK();
}

void cuda_relu_backward(Backend *b, const Tensor *y, const Tensor *dy, Tensor *dx, int accumulate) {
    DType dt = cuda_act_dtype(y, "relu_backward");
    cuda_require_dtype(dy, dt, "relu_backward");
    cuda_require_dtype(dx, dt, "relu_backward");
    cuda_require_same_shape(y, dy, "relu_backward");
    int n = y->n, c = y->c, h = y->h, w = y->w;
    cuda_set_shape(dx, n, c, h, w);
    size_t total = tensor_numel(dx);
    if (total == 0) return;
    cuda_dispatch(dt, "relu_backward", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(aligned16(y->data, dy->data, dx->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            relu_bwd_kernel<T, L><<<lanes_grid(total, L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)y->data, (const T *)dy->data, (T *)dx->data, total, accumulate);
        });
    });
    KERNEL_CHECK();
}

void cuda_add(Backend *b, const Tensor *a, const Tensor *bt, Tensor *y) {
    DType dt = cuda_act_dtype(a, "add");
    cuda_require_dtype(bt, dt, "add");
    cuda_require_dtype(y, dt, "add");
    cuda_require_same_shape(a, bt, "add");
    int n = a->n, c = a->c, h = a->h, w = a->w; /* y may alias a or b */
    cuda_set_shape(y, n, c, h, w);
    size_t total = tensor_numel(y);
    if (total == 0) return;
    cuda_dispatch(dt, "add", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(aligned16(a->data, bt->data, y->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            add_kernel<T, L><<<lanes_grid(total, L), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
                (const T *)a->data, (const T *)bt->data, (T *)y->data, total);
        });
    });
    KERNEL_CHECK();
}

void cuda_accumulate(Backend *b, const Tensor *src, Tensor *dst, int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(src, "accumulate");
    cuda_require_dtype(dst, dt, "accumulate");
    int n = src->n, c = src->c, h = src->h, w = src->w;
    cuda_set_shape(dst, n, c, h, w);
    size_t total = tensor_numel(dst);
    if (total == 0) return;
    if (!accumulate) {
        if (dst->data != src->data)
            CUDA_CHECK(cudaMemcpyAsync(dst->data, src->data, total * dtype_size(dt), cudaMemcpyDeviceToDevice,
                                       ctx->stream));
        return;
    }
    cuda_dispatch(dt, "accumulate", [&](auto tag) {
        using T = decltype(tag);
        lanes_dispatch<T>(aligned16(src->data, dst->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            /* dst += src is add with y = a = dst */
            add_kernel<T, L><<<lanes_grid(total, L), CUDA_BLOCK, 0, ctx->stream>>>(
                (const T *)dst->data, (const T *)src->data, (T *)dst->data, total);
        });
    });
    KERNEL_CHECK();
}
