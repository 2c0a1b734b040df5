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
 *   that refuses a configuration). They reduce in fp32, in a fixed order (deterministic): training
 *   forward reads x twice (statistics by Welford/Chan in one pass, then y), backward twice (the
 *   two sums, then dx); the per-channel finish is a warp per channel; element passes move 16 bytes
 *   per access when c and the pointers allow (vec.h).
 *
 * How cuDNN's conventions line up with backend.h (PyTorch's):
 * - exponentialAverageFactor is applied as running = (1-f)*running + f*batch, so f = momentum.
 * - cuDNN updates running_var with the unbiased batch variance (sum of squares / (m-1), m = n*h*w)
 *   and normalises with the biased one, as PyTorch does. The parity test checks running_var against
 *   the CPU backend, which implements backend.h's wording directly.
 * - resultSaveInvVariance is 1/sqrt(var + eps) despite its name: exactly our save_invstd.
 * Loss scaling: dgamma, dbeta and dx all carry dy's loss scale (the optimizer divides it out).
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

extern "C" {
#include "dist/dist.h"
}
#include "dtype.h"
#include "vec.h"

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

/* ---- our kernels ----
 * Per-channel reductions over the rows (n*h*w) of an NHWC tensor, in one pass over the data:
 * - A block of bx x by threads (bx*by = CUDA_BLOCK) covers bx groups of L channels (L = 16 bytes
 *   of them when c and the pointers allow, vec.h) and a slab of rows: thread (tx, ty) takes rows
 *   slab*by + ty, then every slabs*by further. Training forward keeps a Welford mean and M2 per
 *   channel, so mean and variance come from one pass with no cancellation when |mean| >> std;
 *   backward keeps plain sums of dy and dy*(x-mean).
 * - The block merges its by rows of threads in a fixed tree (Chan's formula for mean/M2) and
 *   writes one partial per (slab, channel).
 * - A warp per channel merges the slabs: lane j takes slabs j, j+32, ... in order, then a shuffle
 *   tree, and lane 0 finishes the channel (statistics, running averages, parameter gradients).
 * Every order is fixed, so results are deterministic; everything accumulates in fp32. */

enum { BN_MAX_SLABS = 1024, BN_ROWS_PER_THREAD = 32, BN_WARPS = CUDA_BLOCK / 32 };

/* (n, mean, m2) += (nb, mb, m2b): Chan et al.'s parallel merge; an empty side changes nothing. */
__device__ static inline void chan_merge(float &n, float &mean, float &m2, float nb, float mb, float m2b) {
    if (nb == 0.0f) return;
    float nn = n + nb, d = mb - mean, f = nb / nn;
    mean += d * f;
    m2 += m2b + d * d * n * f;
    n = nn;
}

/* Training forward, pass 1: per (slab, channel) count, mean and M2 of x. */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK) bn_stats_kernel(const T *__restrict__ x, size_t rows, int c,
                                                              float *part_n, float *part_mean, float *part_m2) {
    __shared__ float s_n[CUDA_BLOCK], s_mean[L][CUDA_BLOCK], s_m2[L][CUDA_BLOCK];
    int bx = blockDim.x, by = blockDim.y, ty = threadIdx.y, tid = ty * bx + threadIdx.x;
    int ch = (blockIdx.x * bx + threadIdx.x) * L;
    float n = 0.0f, mean[L], m2[L];
#pragma unroll
    for (int l = 0; l < L; l++) mean[l] = m2[l] = 0.0f;
    if (ch < c) {
#pragma unroll 2
        for (size_t r = (size_t)blockIdx.y * by + ty; r < rows; r += (size_t)gridDim.y * by) {
            float v[L];
            load_floats(x + r * c + ch, v);
            n += 1.0f;
            float inv = 1.0f / n; /* one division for the L channels */
#pragma unroll
            for (int l = 0; l < L; l++) {
                float d = v[l] - mean[l];
                mean[l] += d * inv;
                m2[l] += d * (v[l] - mean[l]);
            }
        }
    }
    for (int half = by / 2; half > 0; half /= 2) {
        if (ty >= half && ty < 2 * half) {
            s_n[tid] = n;
#pragma unroll
            for (int l = 0; l < L; l++) {
                s_mean[l][tid] = mean[l];
                s_m2[l][tid] = m2[l];
            }
        }
        __syncthreads();
        if (ty < half) {
            int o = tid + half * bx;
            float nb = s_n[o], na = n;
#pragma unroll
            for (int l = 0; l < L; l++) {
                n = na;
                chan_merge(n, mean[l], m2[l], nb, s_mean[l][o], s_m2[l][o]);
            }
        }
        __syncthreads();
    }
    if (ty == 0 && ch < c) {
        size_t at = (size_t)blockIdx.y * c + ch;
#pragma unroll
        for (int l = 0; l < L; l++) {
            part_n[at + l] = n;
            part_mean[at + l] = mean[l];
            part_m2[at + l] = m2[l];
        }
    }
}

/* A warp per channel (lane 0..31 of channel ch) merges the slabs' partials: lane j takes slabs j,
 * j+32, ... in order, then a shuffle tree; lane 0 ends with the channel's count, mean and M2. */
__device__ static inline void merge_slabs(const float *part_n, const float *part_mean, const float *part_m2, int slabs,
                                          int c, int ch, int lane, float &n, float &mean, float &m2) {
    n = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (int s = lane; s < slabs; s += 32) {
        size_t at = (size_t)s * c + ch;
        chan_merge(n, mean, m2, part_n[at], part_mean[at], part_m2[at]);
    }
    for (int o = 16; o > 0; o /= 2) {
        float nb = __shfl_down_sync(0xffffffffu, n, o), mb = __shfl_down_sync(0xffffffffu, mean, o),
              m2b = __shfl_down_sync(0xffffffffu, m2, o);
        chan_merge(n, mean, m2, nb, mb, m2b);
    }
}

/* A channel's statistics over m rows: save_mean, save_invstd (biased variance) and the running
 * averages (unbiased variance). */
__device__ static inline void finish_stats(int ch, float mean, float m2, float m, float eps, float momentum,
                                           float *save_mean, float *save_invstd, float *running_mean,
                                           float *running_var) {
    save_mean[ch] = mean;
    save_invstd[ch] = rsqrtf(m2 / m + eps);
    running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * mean;
    running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * (m2 / (m - 1.0f));
}

/* Training forward, pass 1 finished: a warp per channel merges the slabs into save_mean,
 * save_invstd (biased variance, m = rows) and the running statistics (unbiased variance). */
__global__ void __launch_bounds__(CUDA_BLOCK)
    bn_stats_final_kernel(const float *part_n, const float *part_mean, const float *part_m2, int slabs, int c,
                          float m, float eps, float momentum, float *save_mean, float *save_invstd,
                          float *running_mean, float *running_var) {
    int ch = blockIdx.x * BN_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (ch >= c) return; /* the whole warp: ch is the same for its 32 lanes */
    float n, mean, m2;
    merge_slabs(part_n, part_mean, part_m2, slabs, c, ch, lane, n, mean, m2);
    if (lane != 0) return;
    finish_stats(ch, mean, m2, m, eps, momentum, save_mean, save_invstd, running_mean, running_var);
}

/* sync_bn, pass 1 finished on this rank: a warp per channel merges the slabs into the channel's
 * mean (mine[1 + ch]) and M2 (mine[1 + c + ch]); mine[0] is the rank's row count (exact in float
 * up to 2^24 rows). */
__global__ void __launch_bounds__(CUDA_BLOCK)
    bn_local_stats_kernel(const float *part_n, const float *part_mean, const float *part_m2, int slabs, int c,
                          float rows, float *mine) {
    int ch = blockIdx.x * BN_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (ch >= c) return; /* the whole warp */
    float n, mean, m2;
    merge_slabs(part_n, part_mean, part_m2, slabs, c, ch, lane, n, mean, m2);
    if (lane != 0) return;
    if (ch == 0) mine[0] = rows;
    mine[1 + ch] = mean;
    mine[1 + c + ch] = m2;
}

/* sync_bn: the ranks' (count, mean, M2) merged in rank order (the same on every rank, as the cpu
 * backend does) into the global batch's statistics, then as bn_stats_final_kernel. all: a row of
 * [count | mean c | M2 c] per rank. */
__global__ void __launch_bounds__(CUDA_BLOCK)
    bn_sync_final_kernel(const float *all, int ranks, int c, float eps, float momentum, float *save_mean,
                         float *save_invstd, float *running_mean, float *running_var) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float n = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (int r = 0; r < ranks; r++) {
        const float *row = all + (size_t)r * (1 + 2 * (size_t)c);
        chan_merge(n, mean, m2, row[0], row[1 + ch], row[1 + c + ch]);
    }
    finish_stats(ch, mean, m2, n, eps, momentum, save_mean, save_invstd, running_mean, running_var);
}

/* Backward, pass 1: per (slab, channel) sum of dy and of dy*(x-mean). */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK)
    bn_grad_sums_kernel(const T *__restrict__ x, const T *__restrict__ dy, const float *__restrict__ mean,
                        size_t rows, int c, float *part_a, float *part_b) {
    __shared__ float s_a[L][CUDA_BLOCK], s_b[L][CUDA_BLOCK];
    int bx = blockDim.x, by = blockDim.y, ty = threadIdx.y, tid = ty * bx + threadIdx.x;
    int ch = (blockIdx.x * bx + threadIdx.x) * L;
    float a[L], b[L], mu[L];
#pragma unroll
    for (int l = 0; l < L; l++) a[l] = b[l] = mu[l] = 0.0f;
    if (ch < c) {
#pragma unroll
        for (int l = 0; l < L; l++) mu[l] = mean[ch + l];
#pragma unroll 4
        for (size_t r = (size_t)blockIdx.y * by + ty; r < rows; r += (size_t)gridDim.y * by) {
            float v[L], g[L];
            load_floats(x + r * c + ch, v);
            load_floats(dy + r * c + ch, g);
#pragma unroll
            for (int l = 0; l < L; l++) {
                a[l] += g[l];
                b[l] += g[l] * (v[l] - mu[l]);
            }
        }
    }
    for (int half = by / 2; half > 0; half /= 2) {
        if (ty >= half && ty < 2 * half) {
#pragma unroll
            for (int l = 0; l < L; l++) {
                s_a[l][tid] = a[l];
                s_b[l][tid] = b[l];
            }
        }
        __syncthreads();
        if (ty < half) {
            int o = tid + half * bx;
#pragma unroll
            for (int l = 0; l < L; l++) {
                a[l] += s_a[l][o];
                b[l] += s_b[l][o];
            }
        }
        __syncthreads();
    }
    if (ty == 0 && ch < c) {
        size_t at = (size_t)blockIdx.y * c + ch;
#pragma unroll
        for (int l = 0; l < L; l++) {
            part_a[at + l] = a[l];
            part_b[at + l] = b[l];
        }
    }
}

/* Backward, pass 1 finished: a warp per channel adds the slabs into sum_dy and sum_dyx, and writes
 * dgamma = sum_dyx*rstd and dbeta = sum_dy (either may be NULL);
 * rstd = invstd[ch] or, with invstd NULL, 1/sqrt(var[ch] + eps). */
__global__ void __launch_bounds__(CUDA_BLOCK)
    bn_grad_final_kernel(const float *part_a, const float *part_b, int slabs, int c, const float *invstd,
                         const float *var, float eps, float *sum_dy, float *sum_dyx, float *dgamma, float *dbeta) {
    int ch = blockIdx.x * BN_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (ch >= c) return; /* the whole warp */
    float a = 0.0f, b = 0.0f;
    for (int s = lane; s < slabs; s += 32) {
        a += part_a[(size_t)s * c + ch];
        b += part_b[(size_t)s * c + ch];
    }
    for (int o = 16; o > 0; o /= 2) {
        a += __shfl_down_sync(0xffffffffu, a, o);
        b += __shfl_down_sync(0xffffffffu, b, o);
    }
    if (lane != 0) return;
    sum_dy[ch] = a;
    sum_dyx[ch] = b;
    float rstd = invstd ? invstd[ch] : rsqrtf(var[ch] + eps);
    if (dbeta) dbeta[ch] = a;
    if (dgamma) dgamma[ch] = b * rstd;
}

/* Scratch of one reduction, carved from ctx->scratch: three partials per (slab, channel) (the
 * forward's n, mean, M2; the backward uses the first two) and two sums per channel. */
typedef struct {
    float *part[3], *sum_a, *sum_b;
    dim3 grid, block;
    int lanes;
} BnReduce;

/* The launch shape for rows x c with L = lanes channels per thread (c % lanes == 0). */
static BnReduce bn_reduce_plan(CudaCtx *ctx, size_t rows, int c, int lanes) {
    int groups = c / lanes, bx = 1;
    while (bx < groups && bx < 32) bx *= 2;
    int by = CUDA_BLOCK / bx;
    size_t slabs = (rows + (size_t)by * BN_ROWS_PER_THREAD - 1) / ((size_t)by * BN_ROWS_PER_THREAD);
    if (slabs < 1) slabs = 1;
    if (slabs > BN_MAX_SLABS) slabs = BN_MAX_SLABS;
    size_t per = slabs * (size_t)c;
    float *s = (float *)cuda_buf_reserve(ctx->stream, &ctx->scratch, (3 * per + 2 * (size_t)c) * sizeof(float));
    BnReduce r;
    for (int k = 0; k < 3; k++) r.part[k] = s + k * per;
    r.sum_a = s + 3 * per;
    r.sum_b = r.sum_a + c;
    r.grid = dim3((unsigned)((groups + bx - 1) / bx), (unsigned)slabs);
    r.block = dim3((unsigned)bx, (unsigned)by);
    r.lanes = lanes;
    return r;
}

static unsigned warp_blocks(int c) { return (unsigned)((c + BN_WARPS - 1) / BN_WARPS); }

/* y = gamma*(x-mean)*rstd + beta, rstd = invstd[ch] or, with invstd NULL, 1/sqrt(var[ch] + eps).
 * L channels of one row per thread (c % L == 0). No __restrict__ on x, y: the contract does not
 * forbid y == x. */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK)
    bn_apply_kernel(const T *x, const float *gamma, const float *beta, const float *mean, const float *invstd,
                    const float *var, float eps, size_t total, int c, T *y) {
    GRID_STRIDE(g, total / L) {
        size_t i = g * L;
        int ch = (int)(i % c);
        float v[L];
        load_floats(x + i, v);
#pragma unroll
        for (int l = 0; l < L; l++) {
            float rstd = invstd ? invstd[ch + l] : rsqrtf(var[ch + l] + eps);
            v[l] = gamma[ch + l] * (v[l] - mean[ch + l]) * rstd + beta[ch + l];
        }
        store_floats(y + i, v);
    }
}

/* Training backward: dx = gamma*rstd*(dy - sum(dy)/m - (x-mean)*rstd^2*sum(dy*(x-mean))/m). */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK)
    bn_dx_kernel(const T *x, const T *dy, const float *gamma, const float *mean, const float *invstd,
                 const float *sum_dy, const float *sum_dyx, float inv_m, size_t total, int c, T *dx, int accumulate) {
    GRID_STRIDE(gi, total / L) {
        size_t i = gi * L;
        int ch = (int)(i % c);
        float v[L], d[L], old[L];
        load_floats(x + i, v);
        load_floats(dy + i, d);
        if (accumulate) load_floats(dx + i, old);
#pragma unroll
        for (int l = 0; l < L; l++) {
            int k = ch + l;
            float rstd = invstd[k];
            float xmu = v[l] - mean[k];
            float g = gamma[k] * rstd * (d[l] - sum_dy[k] * inv_m - xmu * rstd * rstd * sum_dyx[k] * inv_m);
            d[l] = accumulate ? old[l] + g : g;
        }
        store_floats(dx + i, d);
    }
}

/* Backward through frozen statistics: dx = dy*gamma/sqrt(var+eps). */
template <typename T, int L>
__global__ void __launch_bounds__(CUDA_BLOCK) bn_frozen_dx_kernel(const T *dy, const float *gamma, const float *var,
                                                                  float eps, size_t total, int c, T *dx,
                                                                  int accumulate) {
    GRID_STRIDE(gi, total / L) {
        size_t i = gi * L;
        int ch = (int)(i % c);
        float d[L], old[L];
        load_floats(dy + i, d);
        if (accumulate) load_floats(dx + i, old);
#pragma unroll
        for (int l = 0; l < L; l++) {
            float g = d[l] * gamma[ch + l] * rsqrtf(var[ch + l] + eps);
            d[l] = accumulate ? old[l] + g : g;
        }
        store_floats(dx + i, d);
    }
}

/* ---- launches of our kernels ---- */

/* Training statistics of x: save_mean, save_invstd and the running averages. */
template <typename T>
static void bn_stats(CudaCtx *ctx, const T *x, size_t rows, int c, float eps, float momentum, float *save_mean,
                     float *save_invstd, float *running_mean, float *running_var) {
    lanes_dispatch<T>(channels_wide<T>(c, x), [&](auto lanes) {
        constexpr int L = decltype(lanes)::value;
        BnReduce r = bn_reduce_plan(ctx, rows, c, L);
        bn_stats_kernel<T, L><<<r.grid, r.block, 0, ctx->stream>>>(x, rows, c, r.part[0], r.part[1], r.part[2]);
        KERNEL_CHECK();
        bn_stats_final_kernel<<<warp_blocks(c), CUDA_BLOCK, 0, ctx->stream>>>(
            r.part[0], r.part[1], r.part[2], (int)r.grid.y, c, (float)rows, eps, momentum, save_mean, save_invstd,
            running_mean, running_var);
        KERNEL_CHECK();
    });
}

/* sync_bn (Backend.sync_bn, data-parallel): the statistics of the global batch. This rank's row
 * count and per-channel mean and M2 (pass 1 as bn_stats), every rank's gathered through NCCL on the
 * compute stream, merged in rank order: no wait for the host. */
template <typename T>
static void bn_stats_sync(CudaCtx *ctx, const T *x, size_t rows, int c, float eps, float momentum, float *save_mean,
                          float *save_invstd, float *running_mean, float *running_var) {
    int ranks = dist_size();
    size_t row = 1 + 2 * (size_t)c;
    lanes_dispatch<T>(channels_wide<T>(c, x), [&](auto lanes) {
        constexpr int L = decltype(lanes)::value;
        BnReduce r = bn_reduce_plan(ctx, rows, c, L);
        size_t per = (size_t)r.grid.y * c;
        /* the partials, then this rank's row, then every rank's */
        float *s = (float *)cuda_buf_reserve(ctx->stream, &ctx->scratch, (3 * per + row * (ranks + 1)) * sizeof(float));
        float *part[3] = {s, s + per, s + 2 * per}, *mine = s + 3 * per, *all = mine + row;
        bn_stats_kernel<T, L><<<r.grid, r.block, 0, ctx->stream>>>(x, rows, c, part[0], part[1], part[2]);
        KERNEL_CHECK();
        bn_local_stats_kernel<<<warp_blocks(c), CUDA_BLOCK, 0, ctx->stream>>>(part[0], part[1], part[2],
                                                                              (int)r.grid.y, c, (float)rows, mine);
        KERNEL_CHECK();
        cuda_sync_allgather(ctx, mine, all, row);
        bn_sync_final_kernel<<<(unsigned)((c + CUDA_BLOCK - 1) / CUDA_BLOCK), CUDA_BLOCK, 0, ctx->stream>>>(
            all, ranks, c, eps, momentum, save_mean, save_invstd, running_mean, running_var);
        KERNEL_CHECK();
    });
}

/* sum(dy) and sum(dy*(x-mean)) per channel (in scratch: valid until the next op) and the parameter
 * gradients (NULL: not wanted); rstd as bn_grad_final_kernel takes it. */
template <typename T>
static BnReduce bn_grad_sums(CudaCtx *ctx, const T *x, const T *dy, const float *mean, size_t rows, int c,
                             const float *invstd, const float *var, float eps, float *dgamma, float *dbeta) {
    BnReduce r;
    lanes_dispatch<T>(channels_wide<T>(c, x, dy), [&](auto lanes) {
        constexpr int L = decltype(lanes)::value;
        r = bn_reduce_plan(ctx, rows, c, L);
        bn_grad_sums_kernel<T, L><<<r.grid, r.block, 0, ctx->stream>>>(x, dy, mean, rows, c, r.part[0], r.part[1]);
        KERNEL_CHECK();
        bn_grad_final_kernel<<<warp_blocks(c), CUDA_BLOCK, 0, ctx->stream>>>(
            r.part[0], r.part[1], (int)r.grid.y, c, invstd, var, eps, r.sum_a, r.sum_b, dgamma, dbeta);
        KERNEL_CHECK();
    });
    return r;
}

template <typename T>
static void bn_apply(CudaCtx *ctx, const T *x, const float *gamma, const float *beta, const float *mean,
                     const float *invstd, const float *var, float eps, size_t total, int c, T *y) {
    lanes_dispatch<T>(channels_wide<T>(c, x, y), [&](auto lanes) {
        constexpr int L = decltype(lanes)::value;
        bn_apply_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, ctx->stream>>>(x, gamma, beta, mean, invstd,
                                                                                    var, eps, total, c, y);
        KERNEL_CHECK();
    });
}

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
    if (b->sync_bn) { /* the global batch's statistics: our kernels, reduced through NCCL */
        cuda_dispatch(dt, "bn_forward_train", [&](auto tag) {
            using T = decltype(tag);
            const T *xd = (const T *)x->data;
            bn_stats_sync<T>(ctx, xd, rows, x->c, eps, momentum, save_mean, save_invstd, running_mean, running_var);
            bn_apply<T>(ctx, xd, gamma, beta, save_mean, save_invstd, NULL, eps, total, x->c, (T *)y->data);
        });
        return;
    }
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
    cuda_dispatch(dt, "bn_forward_train", [&](auto tag) {
        using T = decltype(tag);
        const T *xd = (const T *)x->data;
        /* two passes: the statistics (one read, Welford), then y */
        bn_stats<T>(ctx, xd, rows, c, eps, momentum, save_mean, save_invstd, running_mean, running_var);
        bn_apply<T>(ctx, xd, gamma, beta, save_mean, save_invstd, NULL, eps, total, c, (T *)y->data);
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
        bn_apply<T>(ctx, (const T *)x->data, gamma, beta, running_mean, NULL, running_var, eps, total, x->c,
                    (T *)y->data);
    });
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
    if (use_cudnn(ctx, dt) && !b->sync_bn) {
        BnDescs d = bn_descs(x, dt);
        /* cuDNN always writes the parameter gradients: give it scratch when the caller wants none. */
        if (!dgamma || !dbeta) {
            float *s = (float *)cuda_buf_reserve(ctx->stream, &ctx->scratch, 2 * (size_t)c * sizeof(float));
            if (!dgamma) dgamma = s;
            if (!dbeta) dbeta = s + c;
        }
        const float one = 1.0f, zero = 0.0f, data_beta = accumulate ? 1.0f : 0.0f;
        /* The interface passes no eps: with the saved mean and inverse std given, cuDNN takes the
         * statistics from them, and eps (required >= CUDNN_BN_MIN_EPSILON) only has to be valid. */
        const double eps_unused = 1e-5;
        CUDNN_CHECK(cudnnBatchNormalizationBackward(ctx->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &data_beta, &one,
                                                    &zero, d.x, x->data, d.x, dy->data, d.x, dx->data, d.param, gamma,
                                                    dgamma, dbeta, eps_unused, save_mean, save_invstd));
        bn_descs_free(&d);
        return;
    }
    cuda_dispatch(dt, "bn_backward", [&](auto tag) {
        using T = decltype(tag);
        const T *xd = (const T *)x->data, *dyd = (const T *)dy->data;
        BnReduce r = bn_grad_sums<T>(ctx, xd, dyd, save_mean, rows, c, save_invstd, NULL, 0.0f, dgamma,
                                     dbeta);
        double m = (double)rows;
        if (b->sync_bn) { /* dx takes the global batch's sums (sum_b follows sum_a); dgamma, dbeta stay this rank's */
            cuda_sync_allreduce(ctx, r.sum_a, 2 * (size_t)c);
            dist_allreduce_sum_f64(&m, 1);
        }
        lanes_dispatch<T>(channels_wide<T>(c, xd, dyd, dx->data), [&](auto lanes) {
            constexpr int L = decltype(lanes)::value;
            bn_dx_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, ctx->stream>>>(
                xd, dyd, gamma, save_mean, save_invstd, r.sum_a, r.sum_b, (float)(1.0 / m), total, c, (T *)dx->data,
                accumulate);
            KERNEL_CHECK();
        });
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
        const T *xd = (const T *)x->data, *dyd = (const T *)dy->data;
        if (dgamma || dbeta)
            bn_grad_sums<T>(ctx, xd, dyd, running_mean, rows, c, NULL, running_var, eps,
                            dgamma, dbeta);
        if (dx) {
            cuda_require_dtype(dx, dt, "bn_backward_infer");
            cuda_set_shape(dx, x->n, x->c, x->h, x->w);
            lanes_dispatch<T>(channels_wide<T>(c, dyd, dx->data), [&](auto lanes) {
                constexpr int L = decltype(lanes)::value;
                bn_frozen_dx_kernel<T, L><<<cuda_grid(total / L), CUDA_BLOCK, 0, ctx->stream>>>(
                    dyd, gamma, running_var, eps, total, c, (T *)dx->data, accumulate);
                KERNEL_CHECK();
            });
        }
    });
}
