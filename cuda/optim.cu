/* optim.cu: the optimizer's ops on the fp32 parameter blocks: the AdamW step and the non-finite
 * scan of the gradient check (src/cpu/optim.c's twins). */
#include "cuda_backend.h"
#include "dtype.h"

#include <math.h>

/* ---- AdamW ---- */

/* g *= grad_scale (the unscaling of a loss-scaled gradient), p -= lr*wd*p (decoupled), then the
 * Adam step with bias corrections bc1 = 1-beta1^t, bc2 = 1-beta2^t:
 * p -= (lr/bc1) * m / (sqrt(v/bc2) + eps), which is lr * mhat / (sqrt(vhat) + eps).
 * All runs in one launch: element i of the concatenated runs finds its run by binary search over
 * the runs' first indices (a few hundred runs: ~9 cached reads). */
typedef struct {
    size_t first;       /* index of the run's first element among all runs' elements */
    size_t offset;      /* where the run starts in the parameter block */
    float decay, step_size;
} AdamWRunDev;

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, const AdamWRunDev *runs, int nruns,
                             size_t total, float beta1, float beta2, float inv_bc2, float eps, float grad_scale) {
    GRID_STRIDE(i, total) {
        int lo = 0, hi = nruns - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (runs[mid].first <= i) lo = mid;
            else hi = mid - 1;
        }
        const AdamWRunDev r = runs[lo];
        size_t k = r.offset + (i - r.first);
        float gi = g[k] * grad_scale;
        float mi = beta1 * m[k] + (1.0f - beta1) * gi;
        float vi = beta2 * v[k] + (1.0f - beta2) * gi * gi;
        m[k] = mi;
        v[k] = vi;
        float pk = p[k] * r.decay;
        p[k] = pk - r.step_size * mi / (sqrtf(vi * inv_bc2) + eps);
    }
}

void cuda_adamw(Backend *b, float *p, const float *g, float *m, float *v, const AdamWRun *runs, int nruns,
                const AdamWArgs *a, float grad_scale) {
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
                                                                       (float)(1.0 / bc2), a->eps, grad_scale);
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
