/* batchnorm.cu: batch norm over (n, h, w) per channel, NHWC fp32. Training, inference and backward
 * through cuDNN's spatial batch norm; backward through frozen (running) statistics with kernels of
 * our own, since cuDNN has no such call.
 *
 * How cuDNN's conventions line up with backend.h (PyTorch's):
 * - exponentialAverageFactor is applied as running = (1-f)*running + f*batch, so f = momentum.
 * - cuDNN updates running_var with the unbiased batch variance (sum of squares / (m-1), m = n*h*w)
 *   and normalises with the biased one, as PyTorch does. The parity test checks running_var against
 *   the CPU backend, which implements backend.h's wording directly.
 * - resultSaveInvVariance is 1/sqrt(var + eps) despite its name: exactly our save_invstd.
 */
#include "cuda_backend.h"

typedef struct {
    cudnnTensorDescriptor_t x, param;
} BnDescs;

/* Descriptors are host objects and cheap to make; one pair per call keeps no state. */
static BnDescs bn_descs(const Tensor *x, const char *op) {
    cuda_require_f32(x, op);
    BnDescs d;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.param));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, x->n, x->c, x->h, x->w));
    CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(d.param, d.x, CUDNN_BATCHNORM_SPATIAL));
    return d;
}

/* Safe once the calls using them are enqueued: cuDNN reads descriptors on the host at call time. */
static void bn_descs_free(BnDescs *d) {
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(d->x));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(d->param));
}

void cuda_bn_forward_train(Backend *b, const Tensor *x, const float *gamma, const float *beta, float *running_mean,
                           float *running_var, float momentum, float eps, float *save_mean, float *save_invstd,
                           Tensor *y) {
    CudaCtx *ctx = cuda_ctx(b);
    if ((size_t)x->n * x->h * x->w < 2)
        die("cuda bn_forward_train: need more than one value per channel to train (input %dx%dx%dx%d)", x->n, x->c,
            x->h, x->w);
    BnDescs d = bn_descs(x, "bn_forward_train");
    cuda_set_shape(y, x->n, x->c, x->h, x->w);
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(ctx->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d.x, x->data,
                                                       d.x, y->data, d.param, gamma, beta, (double)momentum,
                                                       running_mean, running_var, (double)eps, save_mean,
                                                       save_invstd));
    bn_descs_free(&d);
}

void cuda_bn_forward_infer(Backend *b, const Tensor *x, const float *gamma, const float *beta,
                           const float *running_mean, const float *running_var, float eps, Tensor *y) {
    CudaCtx *ctx = cuda_ctx(b);
    BnDescs d = bn_descs(x, "bn_forward_infer");
    cuda_set_shape(y, x->n, x->c, x->h, x->w);
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnBatchNormalizationForwardInference(ctx->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d.x,
                                                        x->data, d.x, y->data, d.param, gamma, beta, running_mean,
                                                        running_var, (double)eps));
    bn_descs_free(&d);
}

void cuda_bn_backward(Backend *b, const Tensor *x, const Tensor *dy, const float *gamma, const float *save_mean,
                      const float *save_invstd, float *dgamma, float *dbeta, Tensor *dx, int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    cuda_require_f32(dy, "bn_backward");
    cuda_require_same_shape(x, dy, "bn_backward");
    BnDescs d = bn_descs(x, "bn_backward");
    cuda_set_shape(dx, x->n, x->c, x->h, x->w);
    /* cuDNN always writes the parameter gradients: give it scratch when the caller wants none. */
    if (!dgamma || !dbeta) {
        float *s = (float *)cuda_buf_reserve(ctx->stream, &ctx->scratch, 2 * (size_t)x->c * sizeof(float));
        if (!dgamma) dgamma = s;
        if (!dbeta) dbeta = s + x->c;
    }
    const float one = 1.0f, zero = 0.0f, data_beta = accumulate ? 1.0f : 0.0f;
    /* The interface passes no eps: with the saved mean and inverse std given, cuDNN takes the
     * statistics from them, and eps (required >= CUDNN_BN_MIN_EPSILON) only has to be valid. */
    const double eps_unused = 1e-5;
    CUDNN_CHECK(cudnnBatchNormalizationBackward(ctx->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &data_beta, &one, &zero,
                                                d.x, x->data, d.x, dy->data, d.x, dx->data, d.param, gamma, dgamma,
                                                dbeta, eps_unused, save_mean, save_invstd));
    bn_descs_free(&d);
}

/* ---- backward through frozen statistics: y = gamma*(x-mean)*rstd + beta, rstd = 1/sqrt(var+eps) ----
 * dx = dy*gamma*rstd;  dgamma = sum(dy*(x-mean))*rstd;  dbeta = sum(dy), sums over n*h*w. */

enum { RED_CH = 32, RED_ROWS = 8 };

/* Pass 1: block (RED_CH, RED_ROWS) sums a slab of rows for RED_CH channels; the threads of a column
 * share a channel, so the loads of a warp are contiguous. Writes one partial per (slab, channel). */
__global__ void bn_frozen_partial_kernel(const float *x, const float *dy, const float *mean, size_t rows, int c,
                                         float *part_dy, float *part_dyx) {
    __shared__ float s_dy[RED_ROWS][RED_CH], s_dyx[RED_ROWS][RED_CH];
    int ch = blockIdx.x * RED_CH + threadIdx.x;
    float a = 0.0f, bsum = 0.0f;
    if (ch < c) {
        float m = mean[ch];
        for (size_t r = (size_t)blockIdx.y * RED_ROWS + threadIdx.y; r < rows; r += (size_t)gridDim.y * RED_ROWS) {
            float g = dy[r * c + ch];
            a += g;
            bsum += g * (x[r * c + ch] - m);
        }
    }
    s_dy[threadIdx.y][threadIdx.x] = a;
    s_dyx[threadIdx.y][threadIdx.x] = bsum;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        for (int i = 1; i < RED_ROWS; i++) {
            a += s_dy[i][threadIdx.x];
            bsum += s_dyx[i][threadIdx.x];
        }
        part_dy[(size_t)blockIdx.y * c + ch] = a;
        part_dyx[(size_t)blockIdx.y * c + ch] = bsum;
    }
}

/* Pass 2: one thread per channel adds the slabs in a fixed order (deterministic). */
__global__ void bn_frozen_final_kernel(const float *part_dy, const float *part_dyx, int slabs, int c,
                                       const float *var, float eps, float *dgamma, float *dbeta) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float a = 0.0f, bsum = 0.0f;
    for (int s = 0; s < slabs; s++) {
        a += part_dy[(size_t)s * c + ch];
        bsum += part_dyx[(size_t)s * c + ch];
    }
    if (dbeta) dbeta[ch] = a;
    if (dgamma) dgamma[ch] = bsum * rsqrtf(var[ch] + eps);
}

__global__ void bn_frozen_dx_kernel(const float *dy, const float *gamma, const float *var, float eps, size_t total,
                                    int c, float *dx, int accumulate) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int ch = (int)(i % c);
        float g = dy[i] * gamma[ch] * rsqrtf(var[ch] + eps);
        dx[i] = accumulate ? dx[i] + g : g;
    }
}

void cuda_bn_backward_infer(Backend *b, const Tensor *x, const Tensor *dy, const float *gamma,
                            const float *running_mean, const float *running_var, float eps, float *dgamma,
                            float *dbeta, Tensor *dx, int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    cuda_require_f32(x, "bn_backward_infer");
    cuda_require_f32(dy, "bn_backward_infer");
    cuda_require_same_shape(x, dy, "bn_backward_infer");
    size_t rows = (size_t)x->n * x->h * x->w, total = rows * x->c;
    int c = x->c;
    if (total == 0) return;
    if (dgamma || dbeta) {
        size_t slabs = (rows + 32 * RED_ROWS - 1) / (32 * RED_ROWS); /* ~32 rows per thread */
        if (slabs > 512) slabs = 512;
        float *part = (float *)cuda_buf_reserve(ctx->stream, &ctx->scratch, 2 * slabs * (size_t)c * sizeof(float));
        dim3 grid((unsigned)((c + RED_CH - 1) / RED_CH), (unsigned)slabs), block(RED_CH, RED_ROWS);
        bn_frozen_partial_kernel<<<grid, block, 0, ctx->stream>>>((const float *)x->data, (const float *)dy->data,
                                                                  running_mean, rows, c, part, part + slabs * c);
        KERNEL_CHECK();
        bn_frozen_final_kernel<<<(c + CUDA_BLOCK - 1) / CUDA_BLOCK, CUDA_BLOCK, 0, ctx->stream>>>(
            part, part + slabs * c, (int)slabs, c, running_var, eps, dgamma, dbeta);
        KERNEL_CHECK();
    }
    if (dx) {
        cuda_set_shape(dx, x->n, x->c, x->h, x->w);
        bn_frozen_dx_kernel<<<cuda_grid(total), CUDA_BLOCK, 0, ctx->stream>>>(
            (const float *)dy->data, gamma, running_var, eps, total, c, (float *)dx->data, accumulate);
        KERNEL_CHECK();
    }
}
