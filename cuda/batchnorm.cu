/* batchnorm.cu: batch norm over (n, h, w) per channel, NHWC. x, y, dy, dx are in the activation
 * dtype (fp32, fp16 or bf16); gamma, beta, the running statistics, save_mean/save_invstd and the
 * parameter gradients are always fp32.
 *
 * Two implementations:
 * - cuDNN's spatial batch norm (training, inference, backward) for fp32 and fp16. For HALF data
 *   cuDNN takes FLOAT scale/bias/mean/variance (cudnnDeriveBNTensorDescriptor derives a FLOAT
 *   descriptor from a HALF one; checked below, so a library that disagreed would stop us with a
 *   message instead of reading floats as halves).
 * - Kernels of our own for bf16 (cuDNN's legacy batch norm is not documented to take fp32
 *   parameters with BFLOAT16 data, and its derived descriptor for BFLOAT16 may be BFLOAT16), for
 *   backward through frozen statistics in every dtype (cuDNN has no such call), and for every dtype
 *   when CNNTRAIN_BN_KERNELS=own (a switch for comparing the two and for working around a cuDNN
 *   that refuses a configuration). They reduce in fp32, in a fixed order (deterministic).
 *
 * How cuDNN's conventions line up with backend.h (PyTorch's):
 * - exponentialAverageFactor is applied as running = (1-f)*running + f*batch, so f = momentum.
 * - cuDNN updates running_var with the unbiased batch variance (sum of squares / (m-1), m = n*h*w)
 *   and normalises with the biased one, as PyTorch does. The parity test checks running_var against
 *   the CPU backend, which implements backend.h's wording directly.
 * - resultSaveInvVariance is 1/sqrt(var + eps) despite its name: exactly our save_invstd.
 * Loss scaling: dgamma and dbeta come out divided by Backend.loss_scale (cuDNN: alphaParamDiff);
 * dx stays scaled, like every activation gradient.
 *
 * Fusion, not used yet: cuDNN's cudnnBatchNormalizationForwardTrainingEx / BackwardEx with
 * CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION compute relu(bn(x) + z) in one pass (and its backward gives
 * dx, dz, dgamma, dbeta from y and a reserve-space ReLU mask). They need
 * CUDNN_BATCHNORM_SPATIAL_PERSISTENT, NHWC HALF tensors with C % 4 == 0, fp32 parameters, an
 * activation descriptor (RELU) and the workspace/reserve sizes from
 * cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize / ...TrainingExReserveSpaceSize. A
 * ResNet block's "BN -> add -> ReLU" (and the "BN -> ReLU" of the convs inside it, with
 * CUDNN_BATCHNORM_OPS_BN_ACTIVATION) would map onto them, saving two full passes over the
 * activation per block forward and backward. Using them means a fused op in backend.h and
 * model.c recognising the BN/ADD/RELU pattern (plus a CPU twin); bf16 would still need our own
 * kernels. */
#include "cuda_backend.h"
#include "dtype.h"

/* ---- cuDNN ---- */

typedef struct {
    cudnnTensorDescriptor_t x, param;
} BnDescs;

/* Descriptors are host objects and cheap to make; one pair per call keeps no state. */
static BnDescs bn_descs(const Tensor *x, DType dt) {
    BnDescs d;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.param));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.x, CUDNN_TENSOR_NHWC, cuda_cudnn_dtype(dt), x->n, x->c, x->h, x->w));
    CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(d.param, d.x, CUDNN_BATCHNORM_SPATIAL));
    if (dt != DT_F32) {
        cudnnDataType_t pt;
        int pn, pc, ph, pw, sn, sc, sh, sw;
        CUDNN_CHECK(cudnnGetTensor4dDescriptor(d.param, &pt, &pn, &pc, &ph, &pw, &sn, &sc, &sh, &sw));
        if (pt != CUDNN_DATA_FLOAT)
            die("cuda batch norm: cuDNN derives parameters of data type %d, not FLOAT, for %s activations; "
                "run with CNNTRAIN_BN_KERNELS=own",
                (int)pt, dtype_name(dt));
    }
    return d;
}

/* Safe once the calls using them are enqueued: cuDNN reads descriptors on the host at call time. */
static void bn_descs_free(BnDescs *d) {
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(d->x));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(d->param));
}

static int use_cudnn(const CudaCtx *ctx, DType dt) { return !ctx->bn_own && (dt == DT_F32 || dt == DT_F16); }

/* ---- our kernels: per-channel sums over the rows (n*h*w) of an NHWC tensor ----
 * Pass 1: block (RED_CH, RED_ROWS) sums a slab of rows for RED_CH channels; the threads of a column
 * share a channel, so the loads of a warp are contiguous. Writes one partial per (slab, channel).
 * Pass 2: one thread per channel adds the slabs in a fixed order (deterministic). */

enum { RED_CH = 32, RED_ROWS = 8 };

/* dy == NULL: a = sum x (mean == NULL) or sum (x-mean)^2.  dy given: a = sum dy, b = sum dy*(x-mean). */
template <typename T>
__global__ void bn_partial_kernel(const T *x, const T *dy, const float *mean, size_t rows, int c, float *part_a,
                                  float *part_b) {
    __shared__ float s_a[RED_ROWS][RED_CH], s_b[RED_ROWS][RED_CH];
    int ch = blockIdx.x * RED_CH + threadIdx.x;
    float a = 0.0f, bsum = 0.0f;
    if (ch < c) {
        float m = mean ? mean[ch] : 0.0f;
        for (size_t r = (size_t)blockIdx.y * RED_ROWS + threadIdx.y; r < rows; r += (size_t)gridDim.y * RED_ROWS) {
            float v = to_float(x[r * c + ch]) - m;
            if (dy) {
                float g = to_float(dy[r * c + ch]);
                a += g;
                bsum += g * v;
            } else {
                a += mean ? v * v : v;
            }
        }
    }
    s_a[threadIdx.y][threadIdx.x] = a;
    s_b[threadIdx.y][threadIdx.x] = bsum;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        for (int i = 1; i < RED_ROWS; i++) {
            a += s_a[i][threadIdx.x];
            bsum += s_b[i][threadIdx.x];
        }
        part_a[(size_t)blockIdx.y * c + ch] = a;
        part_b[(size_t)blockIdx.y * c + ch] = bsum;
    }
}

__global__ void bn_final_kernel(const float *part_a, const float *part_b, int slabs, int c, float *sum_a,
                                float *sum_b) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float a = 0.0f, bsum = 0.0f;
    for (int s = 0; s < slabs; s++) {
        a += part_a[(size_t)s * c + ch];
        bsum += part_b[(size_t)s * c + ch];
    }
    sum_a[ch] = a;
    sum_b[ch] = bsum;
}

/* Scratch of one reduction: partials and the per-channel sums, carved from ctx->scratch. */
typedef struct {
    float *part, *sum_a, *sum_b;
    int slabs;
} BnSums;

static BnSums bn_sums_reserve(CudaCtx *ctx, size_t rows, int c) {
    size_t slabs = (rows + 32 * RED_ROWS - 1) / (32 * RED_ROWS); /* ~32 rows per thread */
    if (slabs < 1) slabs = 1;
    if (slabs > 512) slabs = 512;
    float *s = (float *)cuda_buf_reserve(ctx->stream, &ctx->scratch, (2 * slabs + 2) * (size_t)c * sizeof(float));
    BnSums r = {s, s + 2 * slabs * (size_t)c, s + (2 * slabs + 1) * (size_t)c, (int)slabs};
    return r;
}

/* sum_a, sum_b per channel of the rows of x (and dy), as bn_partial_kernel describes. */
template <typename T>
static void bn_sums(CudaCtx *ctx, const BnSums *s, const T *x, const T *dy, const float *mean, size_t rows, int c) {
    dim3 grid((unsigned)((c + RED_CH - 1) / RED_CH), (unsigned)s->slabs), block(RED_CH, RED_ROWS);
    bn_partial_kernel<T><<<grid, block, 0, ctx->stream>>>(x, dy, mean, rows, c, s->part,
                                                          s->part + (size_t)s->slabs * c);
    KERNEL_CHECK();
    bn_final_kernel<<<(c + CUDA_BLOCK - 1) / CUDA_BLOCK, CUDA_BLOCK, 0, ctx->stream>>>(
        s->part, s->part + (size_t)s->slabs * c, s->slabs, c, s->sum_a, s->sum_b);
    KERNEL_CHECK();
}

__global__ void bn_mean_kernel(const float *sum, int c, float inv_m, float *mean) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch < c) mean[ch] = sum[ch] * inv_m;
}

/* From the sum of squared deviations: save_invstd, and the running statistics (unbiased variance). */
__global__ void bn_var_kernel(const float *sumsq, const float *mean, int c, float m, float eps, float momentum,
                              float *invstd, float *running_mean, float *running_var) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float var = sumsq[ch] / m;
    invstd[ch] = rsqrtf(var + eps);
    running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * mean[ch];
    running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * (sumsq[ch] / (m - 1.0f));
}

/* y = gamma*(x-mean)*rstd + beta, rstd = invstd[ch] or, with invstd NULL, 1/sqrt(var[ch] + eps). */
template <typename T>
__global__ void bn_apply_kernel(const T *x, const float *gamma, const float *beta, const float *mean,
                                const float *invstd, const float *var, float eps, size_t total, int c, T *y) {
    GRID_STRIDE(i, total) {
        int ch = (int)(i % c);
        float rstd = invstd ? invstd[ch] : rsqrtf(var[ch] + eps);
        y[i] = from_float<T>(gamma[ch] * (to_float(x[i]) - mean[ch]) * rstd + beta[ch]);
    }
}

/* dgamma = sum(dy*(x-mean))*rstd, dbeta = sum(dy), both divided by the loss scale; either may be NULL. */
__global__ void bn_param_grad_kernel(const float *sum_dy, const float *sum_dyx, const float *invstd,
                                     const float *var, float eps, int c, float inv_scale, float *dgamma,
                                     float *dbeta) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float rstd = invstd ? invstd[ch] : rsqrtf(var[ch] + eps);
    if (dbeta) dbeta[ch] = sum_dy[ch] * inv_scale;
    if (dgamma) dgamma[ch] = sum_dyx[ch] * rstd * inv_scale;
}

/* Training backward: dx = gamma*rstd*(dy - sum(dy)/m - (x-mean)*rstd^2*sum(dy*(x-mean))/m). */
template <typename T>
__global__ void bn_dx_kernel(const T *x, const T *dy, const float *gamma, const float *mean, const float *invstd,
                             const float *sum_dy, const float *sum_dyx, float inv_m, size_t total, int c, T *dx,
                             int accumulate) {
    GRID_STRIDE(i, total) {
        int ch = (int)(i % c);
        float rstd = invstd[ch];
        float xmu = to_float(x[i]) - mean[ch];
        float g = gamma[ch] * rstd * (to_float(dy[i]) - sum_dy[ch] * inv_m - xmu * rstd * rstd * sum_dyx[ch] * inv_m);
        dx[i] = from_float<T>(accumulate ? to_float(dx[i]) + g : g);
    }
}

/* Backward through frozen statistics: dx = dy*gamma/sqrt(var+eps). */
template <typename T>
__global__ void bn_frozen_dx_kernel(const T *dy, const float *gamma, const float *var, float eps, size_t total, int c,
                                    T *dx, int accumulate) {
    GRID_STRIDE(i, total) {
        int ch = (int)(i % c);
        float g = to_float(dy[i]) * gamma[ch] * rsqrtf(var[ch] + eps);
        dx[i] = from_float<T>(accumulate ? to_float(dx[i]) + g : g);
    }
}

static unsigned ch_blocks(int c) { return (unsigned)((c + CUDA_BLOCK - 1) / CUDA_BLOCK); }

/* ---- the ops ---- */

void cuda_bn_forward_train(Backend *b, const Tensor *x, const float *gamma, const float *beta, float *running_mean,
                           float *running_var, float momentum, float eps, float *save_mean, float *save_invstd,
                           Tensor *y) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(x, "bn_forward_train");
    cuda_require_dtype(y, dt, "bn_forward_train");
    size_t rows = (size_t)x->n * x->h * x->w, total = rows * x->c;
    if (rows < 2)
        die("cuda bn_forward_train: need more than one value per channel to train (input %dx%dx%dx%d)", x->n, x->c,
            x->h, x->w);
    cuda_set_shape(y, x->n, x->c, x->h, x->w);
    if (x->c == 0) return;
    if (use_cudnn(ctx, dt)) {
        BnDescs d = bn_descs(x, dt);
        const float one = 1.0f, zero = 0.0f;
        CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(ctx->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d.x,
                                                           x->data, d.x, y->data, d.param, gamma, beta,
                                                           (double)momentum, running_mean, running_var, (double)eps,
                                                           save_mean, save_invstd));
        bn_descs_free(&d);
        return;
    }
    int c = x->c;
    BnSums s = bn_sums_reserve(ctx, rows, c);
    cuda_dispatch(dt, "bn_forward_train", [&](auto tag) {
        using T = decltype(tag);
        const T *xd = (const T *)x->data;
        /* two passes (mean, then squared deviations): no cancellation when |mean| >> std */
        bn_sums<T>(ctx, &s, xd, NULL, NULL, rows, c);
        bn_mean_kernel<<<ch_blocks(c), CUDA_BLOCK, 0, ctx->stream>>>(s.sum_a, c, 1.0f / (float)rows, save_mean);
        KERNEL_CHECK();
        bn_sums<T>(ctx, &s, xd, NULL, save_mean, rows, c);
        bn_var_kernel<<<ch_blocks(c), CUDA_BLOCK, 0, ctx->stream>>>(s.sum_a, save_mean, c, (float)rows, eps, momentum,
                                                                    save_invstd, running_mean, running_var);
        KERNEL_CHECK();
        bn_apply_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, ctx->stream>>>(xd, gamma, beta, save_mean, save_invstd,
                                                                             NULL, eps, total, c, (T *)y->data);
        KERNEL_CHECK();
    });
}

void cuda_bn_forward_infer(Backend *b, const Tensor *x, const float *gamma, const float *beta,
                           const float *running_mean, const float *running_var, float eps, Tensor *y) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(x, "bn_forward_infer");
    cuda_require_dtype(y, dt, "bn_forward_infer");
    cuda_set_shape(y, x->n, x->c, x->h, x->w);
    size_t total = tensor_numel(x);
    if (total == 0) return;
    if (use_cudnn(ctx, dt)) {
        BnDescs d = bn_descs(x, dt);
        const float one = 1.0f, zero = 0.0f;
        CUDNN_CHECK(cudnnBatchNormalizationForwardInference(ctx->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d.x,
                                                            x->data, d.x, y->data, d.param, gamma, beta, running_mean,
                                                            running_var, (double)eps));
        bn_descs_free(&d);
        return;
    }
    cuda_dispatch(dt, "bn_forward_infer", [&](auto tag) {
        using T = decltype(tag);
        bn_apply_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, ctx->stream>>>(
            (const T *)x->data, gamma, beta, running_mean, NULL, running_var, eps, total, x->c, (T *)y->data);
    });
    KERNEL_CHECK();
}

void cuda_bn_backward(Backend *b, const Tensor *x, const Tensor *dy, const float *gamma, const float *save_mean,
                      const float *save_invstd, float *dgamma, float *dbeta, Tensor *dx, int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(x, "bn_backward");
    cuda_require_dtype(dy, dt, "bn_backward");
    cuda_require_dtype(dx, dt, "bn_backward");
    cuda_require_same_shape(x, dy, "bn_backward");
    cuda_set_shape(dx, x->n, x->c, x->h, x->w);
    size_t rows = (size_t)x->n * x->h * x->w, total = rows * x->c;
    int c = x->c;
    if (total == 0) return;
    const float inv_scale = 1.0f / b->loss_scale;
    if (use_cudnn(ctx, dt)) {
        BnDescs d = bn_descs(x, dt);
        /* cuDNN always writes the parameter gradients: give it scratch when the caller wants none. */
        if (!dgamma || !dbeta) {
            float *s = (float *)cuda_buf_reserve(ctx->stream, &ctx->scratch, 2 * (size_t)c * sizeof(float));
            if (!dgamma) dgamma = s;
            if (!dbeta) dbeta = s + c;
        }
        const float one = 1.0f, zero = 0.0f, data_beta = accumulate ? 1.0f : 0.0f;
        /* The interface passes no eps: with the saved mean and inverse std given, cuDNN takes the
         * statistics from them, and eps (required >= CUDNN_BN_MIN_EPSILON) only has to be valid.
         * alphaParamDiff = 1/loss_scale unscales dgamma and dbeta (1 in fp32: bit for bit as before). */
        const double eps_unused = 1e-5;
        CUDNN_CHECK(cudnnBatchNormalizationBackward(ctx->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &data_beta, &inv_scale,
                                                    &zero, d.x, x->data, d.x, dy->data, d.x, dx->data, d.param, gamma,
                                                    dgamma, dbeta, eps_unused, save_mean, save_invstd));
        bn_descs_free(&d);
        return;
    }
    BnSums s = bn_sums_reserve(ctx, rows, c);
    cuda_dispatch(dt, "bn_backward", [&](auto tag) {
        using T = decltype(tag);
        bn_sums<T>(ctx, &s, (const T *)x->data, (const T *)dy->data, save_mean, rows, c);
        if (dgamma || dbeta) {
            bn_param_grad_kernel<<<ch_blocks(c), CUDA_BLOCK, 0, ctx->stream>>>(s.sum_a, s.sum_b, save_invstd, NULL,
                                                                               0.0f, c, inv_scale, dgamma, dbeta);
            KERNEL_CHECK();
        }
        bn_dx_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, ctx->stream>>>(
            (const T *)x->data, (const T *)dy->data, gamma, save_mean, save_invstd, s.sum_a, s.sum_b,
            1.0f / (float)rows, total, c, (T *)dx->data, accumulate);
        KERNEL_CHECK();
    });
}

/* ---- backward through frozen statistics: y = gamma*(x-mean)*rstd + beta, rstd = 1/sqrt(var+eps) ----
 * dx = dy*gamma*rstd;  dgamma = sum(dy*(x-mean))*rstd;  dbeta = sum(dy), sums over n*h*w. */
void cuda_bn_backward_infer(Backend *b, const Tensor *x, const Tensor *dy, const float *gamma,
                            const float *running_mean, const float *running_var, float eps, float *dgamma,
                            float *dbeta, Tensor *dx, int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(x, "bn_backward_infer");
    cuda_require_dtype(dy, dt, "bn_backward_infer");
    cuda_require_same_shape(x, dy, "bn_backward_infer");
    size_t rows = (size_t)x->n * x->h * x->w, total = rows * x->c;
    int c = x->c;
    if (total == 0) return;
    cuda_dispatch(dt, "bn_backward_infer", [&](auto tag) {
        using T = decltype(tag);
        if (dgamma || dbeta) {
            BnSums s = bn_sums_reserve(ctx, rows, c);
            bn_sums<T>(ctx, &s, (const T *)x->data, (const T *)dy->data, running_mean, rows, c);
            bn_param_grad_kernel<<<ch_blocks(c), CUDA_BLOCK, 0, ctx->stream>>>(
                s.sum_a, s.sum_b, NULL, running_var, eps, c, 1.0f / b->loss_scale, dgamma, dbeta);
            KERNEL_CHECK();
        }
        if (dx) {
            cuda_require_dtype(dx, dt, "bn_backward_infer");
            cuda_set_shape(dx, x->n, x->c, x->h, x->w);
            bn_frozen_dx_kernel<T><<<cuda_grid(total), CUDA_BLOCK, 0, ctx->stream>>>(
                (const T *)dy->data, gamma, running_var, eps, total, c, (T *)dx->data, accumulate);
            KERNEL_CHECK();
        }
    });
}
