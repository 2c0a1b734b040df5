/* mix.cu: mixup on the device: x_i = lam_i * x_i + (1 - lam_i) * x_partner(i), from a copy of the
 * batch (partners read the unmixed images). Computed in float with no fused multiply-add, as the
 * CPU does it, whatever the activation dtype. */
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
    char *s = (char *)cuda_buf_reserve(ctx->stream, &ctx->mix, bytes + table);
    int32_t *partner_d = (int32_t *)(s + bytes);
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
