/* batch.cu: whole-batch transforms on the device, computed in float with no fused multiply-add (in
 * the CPU's order), whatever the activation dtype:
 * - mixup: x_i = lam_i * x_i + (1 - lam_i) * x_partner(i), from a copy of the batch (partners read
 *   the unmixed images);
 * - progressive resizing: a d x d window of every image, or a bilinear resize to d x d. */
#include "cuda_backend.h"
#include "dtype.h"

template <typename T>
__global__ void mix_kernel(T *x, const T *orig, const int32_t *partner, const float *lam, size_t per_image, size_t total) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t img = i / per_image, k = i - img * per_image;
        float l = lam[img];
        float mine = to_float(orig[i]), other = to_float(orig[(size_t)partner[img] * per_image + k]);
        x[i] = from_float<T>(__fadd_rn(__fmul_rn(l, mine), __fmul_rn(1.0f - l, other)));
    }
}

void cuda_mix_images(Backend *b, Tensor *x, const int32_t *partner, const float *lam) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(x, "mix_images");
    int n = x->n;
    size_t total = tensor_numel(x), per_image = n ? total / (size_t)n : 0;
    if (total == 0) return;
    size_t bytes = total * dtype_size(dt), table = (size_t)n * (sizeof(int32_t) + sizeof(float));
    /* one scratch block: the batch's copy, then the partners and weights (staged from pageable
     * host memory before the copies return, so the caller may reuse its arrays at once) */
    size_t table_at = (bytes + 15) / 16 * 16; /* fp16 with an odd numel: the int32s must stay aligned */
    char *s = (char *)cuda_buf_reserve(ctx->stream, &ctx->mix, table_at + table);
    int32_t *partner_d = (int32_t *)(s + table_at);
    float *lam_d = (float *)(partner_d + n);
    CUDA_CHECK(cudaMemcpyAsync(s, x->data, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    CUDA_CHECK(cudaMemcpyAsync(partner_d, partner, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, ctx->stream));
    CUDA_CHECK(cudaMemcpyAsync(lam_d, lam, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
    cuda_dispatch(dt, "mix_images", [&](auto tag) {
        using T = decltype(tag);
        mix_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, ctx->stream>>>((T *)x->data, (const T *)s, partner_d, lam_d,
                                                                       per_image, total);
    });
    KERNEL_CHECK();
}

/* One output value (image i, row y, column x, channel ch) of NHWC y, as resize_strided computes it. */
template <typename T>
__global__ void shrink_kernel(const T *x, T *y, int n, int c, int s, int d, int crop, int oy, int ox, float scale) {
    size_t total = (size_t)n * d * d * c;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int ch = (int)(i % c);
        size_t p = i / c;
        int xo = (int)(p % d), yo = (int)(p / d % d);
        size_t img = p / ((size_t)d * d);
        const T *in = x + img * s * s * c + ch;
#define AT(r, q) to_float(in[((size_t)(r) * s + (q)) * c])
        if (crop) {
            y[i] = in[((size_t)(oy + yo) * s + ox + xo) * c];
            continue;
        }
        float sy = fmaxf(__fsub_rn(__fmul_rn(__fadd_rn((float)yo, 0.5f), scale), 0.5f), 0.0f);
        float sx = fmaxf(__fsub_rn(__fmul_rn(__fadd_rn((float)xo, 0.5f), scale), 0.5f), 0.0f);
        int y0 = (int)sy, y1 = y0 + 1 < s ? y0 + 1 : s - 1;
        int x0 = (int)sx, x1 = x0 + 1 < s ? x0 + 1 : s - 1;
        float fy = __fsub_rn(sy, (float)y0), fx = __fsub_rn(sx, (float)x0);
        float top = __fadd_rn(AT(y0, x0), __fmul_rn(fx, __fsub_rn(AT(y0, x1), AT(y0, x0))));
        float bottom = __fadd_rn(AT(y1, x0), __fmul_rn(fx, __fsub_rn(AT(y1, x1), AT(y1, x0))));
        y[i] = from_float<T>(__fadd_rn(top, __fmul_rn(fy, __fsub_rn(bottom, top))));
#undef AT
    }
}

void cuda_shrink_batch(Backend *b, const Tensor *x, int d, int crop, int oy, int ox, Tensor *y) {
    DType dt = cuda_act_dtype(x, "shrink_batch");
    cuda_require_dtype(y, dt, "shrink_batch");
    int n = x->n, c = x->c, s = x->h;
    if (x->w != s || d > s || d < 1 || (crop && (oy < 0 || ox < 0 || oy + d > s || ox + d > s)))
        die("cuda shrink_batch: cannot make %dx%d (crop %d at %d,%d) of %dx%d", d, d, crop, oy, ox, x->h, x->w);
    cuda_set_shape(y, n, c, d, d);
    size_t total = tensor_numel(y);
    if (total == 0) return;
    float scale = (float)s / (float)d;
    cuda_dispatch(dt, "shrink_batch", [&](auto tag) {
        using T = decltype(tag);
        shrink_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>((const T *)x->data, (T *)y->data, n, c,
                                                                                  s, d, crop, oy, ox, scale);
    });
    KERNEL_CHECK();
}
