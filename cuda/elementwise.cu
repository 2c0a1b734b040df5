/* elementwise.cu: the small ops: ReLU, residual add, gradient accumulation, softmax cross-entropy
 * with label smoothing and mixup, and the AdamW step. All layouts are flat here (NHWC or not does not
 * matter to an elementwise op; the logits are (n, classes, 1, 1), i.e. row-major [n][classes]).
 * Activations may be fp32, fp16 or bf16 (kernels are templates computing in float, see dtype.h);
 * AdamW and count_nonfinite work on the fp32 parameter blocks. ReLU, add and accumulate move 16
 * bytes per access when their pointers allow (vec.h), with the same per-element float math. */
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
 * dz_j = scale * (softmax_j - target_j) / n, scale = Backend.loss_scale. An out-of-range label gives a
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
                       const float *lam, float smoothing, float *loss, Tensor *dlogits) {
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
                                                          n, classes, b->loss_scale, sample_loss,
                                                          dlogits ? (T *)dlogits->data : NULL);
    });
    KERNEL_CHECK();
    mean_kernel<<<1, 1, 0, ctx->stream>>>(sample_loss, n, loss);
    KERNEL_CHECK();
}

/* ---- AdamW ---- */

/* p -= lr*wd*p (decoupled), then the Adam step with bias corrections bc1 = 1-beta1^t, bc2 = 1-beta2^t:
 * p -= (lr/bc1) * m / (sqrt(v/bc2) + eps), which is lr * mhat / (sqrt(vhat) + eps).
 * All runs in one launch: element i of the concatenated runs finds its run by binary search over
 * the runs' first indices (a few hundred runs: ~9 cached reads). */
typedef struct {
    size_t first;       /* index of the run's first element among all runs' elements */
    size_t offset;      /* where the run starts in the parameter block */
    float decay, step_size;
} AdamWRunDev;

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, const AdamWRunDev *runs, int nruns,
                             size_t total, float beta1, float beta2, float inv_bc2, float eps) {
    GRID_STRIDE(i, total) {
        int lo = 0, hi = nruns - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (runs[mid].first <= i) lo = mid;
            else hi = mid - 1;
        }
        const AdamWRunDev r = runs[lo];
        size_t k = r.offset + (i - r.first);
        float gi = g[k];
        float mi = beta1 * m[k] + (1.0f - beta1) * gi;
        float vi = beta2 * v[k] + (1.0f - beta2) * gi * gi;
        m[k] = mi;
        v[k] = vi;
        float pk = p[k] * r.decay;
        p[k] = pk - r.step_size * mi / (sqrtf(vi * inv_bc2) + eps);
    }
}

void cuda_adamw(Backend *b, float *p, const float *g, float *m, float *v, const AdamWRun *runs, int nruns,
                const AdamWArgs *a) {
    if (a->step < 1) die("cuda adamw: step must be >= 1 (got %d)", a->step);
    CudaCtx *ctx = cuda_ctx(b);
    double bc1 = 1.0 - pow((double)a->beta1, a->step), bc2 = 1.0 - pow((double)a->beta2, a->step);
    AdamWRunDev *host = (AdamWRunDev *)xmalloc((size_t)(nruns > 0 ? nruns : 1) * sizeof *host);
    size_t total = 0;
    int used = 0;
    for (int r = 0; r < nruns; r++) {
        if (!runs[r].count) continue;
        host[used].first = total;
        host[used].offset = runs[r].offset;
        host[used].decay = (float)(1.0 - (double)runs[r].lr * runs[r].wd);
        host[used].step_size = (float)(runs[r].lr / bc1);
        total += runs[r].count;
        used++;
    }
    if (total) {
        size_t bytes = (size_t)used * sizeof *host;
        AdamWRunDev *dev = (AdamWRunDev *)cuda_buf_reserve(ctx->stream, &ctx->scratch, bytes);
        /* from pageable memory: staged before the call returns, so host can go at once */
        CUDA_CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, ctx->stream));
        adamw_kernel<<<cuda_grid(total), CUDA_BLOCK, 0, ctx->stream>>>(p, g, m, v, dev, used, total, a->beta1, a->beta2,
                                                                       (float)(1.0 / bc2), a->eps);
        KERNEL_CHECK();
    }
    free(host);
}

/* ---- finiteness ---- */

/* out[0] += the non-finite values a thread saw, out[1] = min(out[1], the first one's index) */
__global__ void scan_nonfinite_kernel(const float *x, size_t count, unsigned long long *out) {
    unsigned long long mine = 0, first = ~0ULL;
    GRID_STRIDE(i, count) {
        if (!isfinite(x[i])) {
            mine++;
            if (i < first) first = i;
        }
    }
    if (mine) {
        atomicAdd(&out[0], mine);
        atomicMin(&out[1], first);
    }
}

void cuda_scan_nonfinite(Backend *b, const float *x, size_t count, uint64_t *out) {
    CudaCtx *ctx = cuda_ctx(b);
    static_assert(sizeof(uint64_t) == sizeof(unsigned long long), "uint64_t is unsigned long long here");
    unsigned long long *o = (unsigned long long *)out;
    CUDA_CHECK(cudaMemsetAsync(o, 0, sizeof *o, ctx->stream));            /* count 0 */
    CUDA_CHECK(cudaMemsetAsync(o + 1, 0xFF, sizeof *o, ctx->stream));     /* first: UINT64_MAX */
    if (count == 0) return;
    scan_nonfinite_kernel<<<cuda_grid(count), CUDA_BLOCK, 0, ctx->stream>>>(x, count, o);
    KERNEL_CHECK();
}

size_t cuda_count_nonfinite(Backend *b, const float *x, size_t count) {
    if (count == 0) return 0;
    CudaCtx *ctx = cuda_ctx(b);
    uint64_t *r = (uint64_t *)cuda_buf_reserve(ctx->stream, &ctx->scratch, 2 * sizeof(uint64_t));
    cuda_scan_nonfinite(b, x, count, r);
    uint64_t host[2];
    CUDA_CHECK(cudaMemcpyAsync(host, r, sizeof host, cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return (size_t)host[0];
}
