/* loss.cu: softmax cross-entropy with label smoothing and mixup (src/cpu/loss.c's twin). The logits
 * are (n, classes, 1, 1), i.e. row-major [n][classes], in fp32, fp16 or bf16 (computed in float,
 * see dtype.h). */
#include "cuda_backend.h"
#include "dtype.h"

#include <math.h>

/* ---- softmax cross-entropy ---- */

enum { XENT_BLOCK = 256 };

__device__ static float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ static float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block-wide reduction for XENT_BLOCK threads; every thread gets the result. */
__device__ static float block_reduce(float v, int is_max) {
    __shared__ float part[XENT_BLOCK / 32];
    v = is_max ? warp_max(v) : warp_sum(v);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads(); /* part may still be read from the previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    float r = part[0];
    for (int i = 1; i < XENT_BLOCK / 32; i++) r = is_max ? fmaxf(r, part[i]) : r + part[i];
    return r;
}

/* One block per sample. target_j = (1-eps)*(lam*[j==a] + (1-lam)*[j==b]) + eps/classes, so
 * loss = sum_j target_j*(lse - z_j) = (1-eps)*(lam*(lse-z_a) + (1-lam)*(lse-z_b)) + eps*(lse - mean z),
 * dz_j = scale * (softmax_j - target_j) / n, scale = the loss scale. An out-of-range label gives a
 * NaN loss rather than a wrong one. dlogits may be NULL (no gradient wanted). Logits and dlogits are
 * T (the activation dtype); everything in between is fp32. */
template <typename T>
__global__ void xent_kernel(const T *logits, const int32_t *labels_a, const int32_t *labels_b, const float *lam,
                            float smoothing, int n, int classes, float scale, float *sample_loss, T *dlogits) {
    int s = blockIdx.x;
    const T *z = logits + (size_t)s * classes;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) m = fmaxf(m, to_float(z[j]));
    m = block_reduce(m, 1);
    float se = 0.0f, sz = 0.0f;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        float zj = to_float(z[j]);
        se += expf(zj - m);
        sz += zj;
    }
    se = block_reduce(se, 0);
    sz = block_reduce(sz, 0);
    float lse = m + logf(se);

    int a = labels_a[s];
    int mix = labels_b && lam;
    int bl = mix ? labels_b[s] : a;
    float l = mix ? lam[s] : 1.0f;
    int valid = a >= 0 && a < classes && bl >= 0 && bl < classes;
    if (threadIdx.x == 0) {
        /* read z_a, z_b before any thread writes dz: dlogits may alias logits */
        float loss = valid ? (1.0f - smoothing) * (l * (lse - to_float(z[a])) + (1.0f - l) * (lse - to_float(z[bl]))) +
                                 smoothing * (lse - sz / (float)classes)
                           : NAN;
        sample_loss[s] = loss;
    }
    __syncthreads();
    if (!dlogits) return; /* loss only (evaluation) */
    T *dz = dlogits + (size_t)s * classes;
    float inv_n = 1.0f / (float)n, uniform = smoothing / (float)classes;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        float t = uniform + (1.0f - smoothing) * ((j == a ? l : 0.0f) + (j == bl ? 1.0f - l : 0.0f));
        dz[j] = from_float<T>(valid ? (expf(to_float(z[j]) - lse) - t) * inv_n * scale : NAN);
    }
}

/* The batch mean in a fixed order (deterministic), by one thread: n is a batch size. */
__global__ void mean_kernel(const float *v, int n, float *out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += v[i];
    *out = s / (float)n;
}

void cuda_softmax_xent(Backend *b, const Tensor *logits, const int32_t *labels_a, const int32_t *labels_b,
                       const float *lam, float smoothing, float scale, float *loss, Tensor *dlogits) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(logits, "softmax_xent");
    /* classes = c*h*w: a row per sample whatever the shape, as the CPU backend reads it */
    int n = logits->n, classes = logits->c * logits->h * logits->w;
    if (n < 1 || classes < 1) die("cuda softmax_xent: empty logits (%d x %d)", n, classes);
    if (dlogits) {
        cuda_require_dtype(dlogits, dt, "softmax_xent");
        cuda_set_shape(dlogits, logits->n, logits->c, logits->h, logits->w);
    }
    float *sample_loss = (float *)cuda_buf_reserve(ctx->stream, &ctx->scratch, (size_t)n * sizeof(float));
    cuda_dispatch(dt, "softmax_xent", [&](auto tag) {
        using T = decltype(tag);
        xent_kernel<T><<<n, XENT_BLOCK, 0, ctx->stream>>>((const T *)logits->data, labels_a, labels_b, lam, smoothing,
                                                          n, classes, scale, sample_loss,
                                                          dlogits ? (T *)dlogits->data : NULL);
    });
    KERNEL_CHECK();
    mean_kernel<<<1, 1, 0, ctx->stream>>>(sample_loss, n, loss);
    KERNEL_CHECK();
}
