/* elementwise.cu: the small ops: ReLU, residual add, gradient accumulation, softmax cross-entropy
 * with label smoothing and mixup, and the AdamW step. All layouts are flat here (NHWC or not does not
 * matter to an elementwise op; the logits are (n, classes, 1, 1), i.e. row-major [n][classes]). */
#include "cuda_backend.h"

#include <math.h>

#define GRID_STRIDE(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

/* ---- ReLU, add, accumulate ---- */

__global__ void relu_fwd_kernel(const float *x, float *y, size_t total) {
    GRID_STRIDE(i, total) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* y is the forward output: y > 0 exactly where x > 0. */
__global__ void relu_bwd_kernel(const float *y, const float *dy, float *dx, size_t total, int accumulate) {
    GRID_STRIDE(i, total) {
        float g = y[i] > 0.0f ? dy[i] : 0.0f;
        dx[i] = accumulate ? dx[i] + g : g;
    }
}

__global__ void add_kernel(const float *a, const float *b, float *y, size_t total) {
    GRID_STRIDE(i, total) y[i] = a[i] + b[i];
}

__global__ void acc_kernel(const float *src, float *dst, size_t total) {
    GRID_STRIDE(i, total) dst[i] += src[i];
}

void cuda_relu_forward(Backend *b, const Tensor *x, Tensor *y) {
    cuda_require_f32(x, "relu_forward");
    int n = x->n, c = x->c, h = x->h, w = x->w; /* y may alias x */
    cuda_set_shape(y, n, c, h, w);
    size_t total = tensor_numel(y);
    if (total == 0) return;
    relu_fwd_kernel<<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>((const float *)x->data,
                                                                              (float *)y->data, total);
    KERNEL_CHECK();
}

void cuda_relu_backward(Backend *b, const Tensor *y, const Tensor *dy, Tensor *dx, int accumulate) {
    cuda_require_f32(y, "relu_backward");
    cuda_require_f32(dy, "relu_backward");
    cuda_require_same_shape(y, dy, "relu_backward");
    int n = y->n, c = y->c, h = y->h, w = y->w;
    cuda_set_shape(dx, n, c, h, w);
    size_t total = tensor_numel(dx);
    if (total == 0) return;
    relu_bwd_kernel<<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(
        (const float *)y->data, (const float *)dy->data, (float *)dx->data, total, accumulate);
    KERNEL_CHECK();
}

void cuda_add(Backend *b, const Tensor *a, const Tensor *bt, Tensor *y) {
    cuda_require_f32(a, "add");
    cuda_require_f32(bt, "add");
    cuda_require_same_shape(a, bt, "add");
    int n = a->n, c = a->c, h = a->h, w = a->w; /* y may alias a or b */
    cuda_set_shape(y, n, c, h, w);
    size_t total = tensor_numel(y);
    if (total == 0) return;
    add_kernel<<<cuda_grid(total), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>((const float *)a->data,
                                                                         (const float *)bt->data, (float *)y->data,
                                                                         total);
    KERNEL_CHECK();
}

void cuda_accumulate(Backend *b, const Tensor *src, Tensor *dst, int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    cuda_require_f32(src, "accumulate");
    int n = src->n, c = src->c, h = src->h, w = src->w;
    cuda_set_shape(dst, n, c, h, w);
    size_t total = tensor_numel(dst);
    if (total == 0) return;
    if (!accumulate) {
        if (dst->data != src->data)
            CUDA_CHECK(cudaMemcpyAsync(dst->data, src->data, total * sizeof(float), cudaMemcpyDeviceToDevice,
                                       ctx->stream));
        return;
    }
    acc_kernel<<<cuda_grid(total), CUDA_BLOCK, 0, ctx->stream>>>((const float *)src->data, (float *)dst->data, total);
    KERNEL_CHECK();
}

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
 * dz_j = (softmax_j - target_j) / n. An out-of-range label gives a NaN loss rather than a wrong one.
 * dlogits may be NULL (no gradient wanted). */
__global__ void xent_kernel(const float *logits, const int32_t *labels_a, const int32_t *labels_b, const float *lam,
                            float smoothing, int n, int classes, float *sample_loss, float *dlogits) {
    int s = blockIdx.x;
    const float *z = logits + (size_t)s * classes;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) m = fmaxf(m, z[j]);
    m = block_reduce(m, 1);
    float se = 0.0f, sz = 0.0f;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        se += expf(z[j] - m);
        sz += z[j];
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
        float loss = valid ? (1.0f - smoothing) * (l * (lse - z[a]) + (1.0f - l) * (lse - z[bl])) +
                                 smoothing * (lse - sz / (float)classes)
                           : NAN;
        sample_loss[s] = loss;
    }
    __syncthreads();
    if (!dlogits) return; /* loss only (evaluation) */
    float *dz = dlogits + (size_t)s * classes;
    float inv_n = 1.0f / (float)n, uniform = smoothing / (float)classes;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        float t = uniform + (1.0f - smoothing) * ((j == a ? l : 0.0f) + (j == bl ? 1.0f - l : 0.0f));
        dz[j] = valid ? (expf(z[j] - lse) - t) * inv_n : NAN;
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
                       const float *lam, float smoothing, float *loss, Tensor *dlogits) {
    CudaCtx *ctx = cuda_ctx(b);
    cuda_require_f32(logits, "softmax_xent");
    /* classes = c*h*w: a row per sample whatever the shape, as the CPU backend reads it */
    int n = logits->n, classes = logits->c * logits->h * logits->w;
    if (n < 1 || classes < 1) die("cuda softmax_xent: empty logits (%d x %d)", n, classes);
    if (dlogits) cuda_set_shape(dlogits, logits->n, logits->c, logits->h, logits->w);
    float *sample_loss = (float *)cuda_buf_reserve(ctx->stream, &ctx->scratch, (size_t)n * sizeof(float));
    xent_kernel<<<n, XENT_BLOCK, 0, ctx->stream>>>((const float *)logits->data, labels_a, labels_b, lam, smoothing, n,
                                                   classes, sample_loss, dlogits ? (float *)dlogits->data : NULL);
    KERNEL_CHECK();
    mean_kernel<<<1, 1, 0, ctx->stream>>>(sample_loss, n, loss);
    KERNEL_CHECK();
}

/* ---- AdamW ---- */

/* p -= lr*wd*p (decoupled), then the Adam step with bias corrections bc1 = 1-beta1^t, bc2 = 1-beta2^t:
 * p -= (lr/bc1) * m / (sqrt(v/bc2) + eps), which is lr * mhat / (sqrt(vhat) + eps). */
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t count, float decay, float beta1,
                             float beta2, float step_size, float inv_bc2, float eps) {
    GRID_STRIDE(i, count) {
        float gi = g[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] * decay;
        p[i] = pi - step_size * mi / (sqrtf(vi * inv_bc2) + eps);
    }
}

void cuda_adamw(Backend *b, float *p, const float *g, float *m, float *v, size_t count, const AdamWArgs *a) {
    if (a->step < 1) die("cuda adamw: step must be >= 1 (got %d)", a->step);
    if (count == 0) return;
    double bc1 = 1.0 - pow((double)a->beta1, a->step), bc2 = 1.0 - pow((double)a->beta2, a->step);
    float decay = (float)(1.0 - (double)a->lr * a->wd);
    float step_size = (float)(a->lr / bc1), inv_bc2 = (float)(1.0 / bc2);
    adamw_kernel<<<cuda_grid(count), CUDA_BLOCK, 0, cuda_ctx(b)->stream>>>(p, g, m, v, count, decay, a->beta1,
                                                                           a->beta2, step_size, inv_bc2, a->eps);
    KERNEL_CHECK();
}

/* ---- finiteness ---- */

__global__ void count_nonfinite_kernel(const float *x, size_t count, unsigned long long *bad) {
    unsigned long long mine = 0;
    GRID_STRIDE(i, count) mine += !isfinite(x[i]);
    if (mine) atomicAdd(bad, mine);
}

size_t cuda_count_nonfinite(Backend *b, const float *x, size_t count) {
    if (count == 0) return 0;
    CudaCtx *ctx = cuda_ctx(b);
    unsigned long long *bad =
        (unsigned long long *)cuda_buf_reserve(ctx->stream, &ctx->scratch, sizeof(unsigned long long));
    CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof *bad, ctx->stream));
    count_nonfinite_kernel<<<cuda_grid(count), CUDA_BLOCK, 0, ctx->stream>>>(x, count, bad);
    KERNEL_CHECK();
    unsigned long long host = 0;
    CUDA_CHECK(cudaMemcpyAsync(&host, bad, sizeof host, cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return (size_t)host;
}
