/* cuda_backend.cu: the CUDA backend's life cycle (create/destroy), device memory, host <-> device
 * transfers (NCHW fp32 on the host, NHWC in the activation dtype on the device), mixed precision
 * (set_compute; the fp16/bf16 copies of the fp32 master weights that weights_updated refreshes) and
 * the ops table. The ops themselves live in conv.cu, batchnorm.cu, pool.cu, linear.cu, head.cu and
 * elementwise.cu.
 *
 * Mixed precision in one paragraph: activations and activation gradients are fp16 or bf16 (every
 * Tensor carries its dtype); parameters, their gradients, Adam moments and batch-norm statistics
 * stay fp32. Ops that take fp32 weights read the cast copy (cuda_weights). softmax_xent multiplies
 * dlogits by the loss scale; every gradient after it carries the scale, the fp32 parameter
 * gradients too, until the optimizer step divides it out (adamw's grad_scale), and an fp16
 * overflow on the way arrives there as inf/NaN. */
#include "cuda_backend.h"
#include "dtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---- */

void cuda_fail(const char *library, const char *call, int code, const char *msg, const char *file, int line) {
    fprintf(stderr, "cnntrain: %s error %d (%s) at %s:%d\n  in: %s\n", library, code, msg ? msg : "?", file, line,
            call);
    if (!strcmp(library, "cuDNN")) {
        char detail[1024];
        cudnnGetLastErrorString(detail, sizeof detail);
        if (detail[0]) fprintf(stderr, "  cuDNN says: %s\n", detail);
    }
    if (!strcmp(library, "CUDA") && code == (int)cudaErrorNoKernelImageForDevice)
        fprintf(stderr, "  hint: this binary has kernels for sm_80 and sm_90 (+PTX); set NVFLAGS for your GPU\n");
    if (code == (int)cudaErrorMemoryAllocation && !strcmp(library, "CUDA"))
        fprintf(stderr, "  hint: use a smaller batch size or image size\n");
    exit(1);
}

/* ---- shared helpers ---- */

void *cuda_buf_try_reserve(cudaStream_t stream, CudaBuf *b, size_t bytes) {
    if (bytes <= b->bytes) return b->p;
    if (b->p) {
        CUDA_CHECK(cudaStreamSynchronize(stream)); /* no queued op may still use the old block */
        CUDA_CHECK(cudaFree(b->p));
    }
    b->p = NULL;
    b->bytes = 0;
    const size_t MiB = (size_t)1 << 20;
    bytes = (bytes + MiB - 1) / MiB * MiB; /* whole MiBs: fewer regrowths as shapes creep up */
    cudaError_t e = cudaMalloc(&b->p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it, the caller decides */
        b->p = NULL;
        return NULL;
    }
    CUDA_CHECK(e);
    b->bytes = bytes;
    return b->p;
}

void *cuda_buf_reserve(cudaStream_t stream, CudaBuf *b, size_t bytes) {
    void *p = cuda_buf_try_reserve(stream, b, bytes);
    if (!p && bytes > 0) {
        size_t free_b = 0, total_b = 0;
        CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        die("cuda: out of GPU memory for a %zu-byte scratch buffer (%zu of %zu bytes free); use a smaller batch "
            "or image size",
            bytes, free_b, total_b);
    }
    return p;
}

void cuda_buf_free(CudaBuf *b) {
    if (b->p) CUDA_CHECK(cudaFree(b->p));
    b->p = NULL;
    b->bytes = 0;
}

DType cuda_act_dtype(const Tensor *t, const char *op) {
    if (t->dtype != DT_F32 && t->dtype != DT_F16 && t->dtype != DT_BF16)
        die("cuda %s: unknown tensor dtype %d", op, (int)t->dtype);
    return t->dtype;
}

void cuda_require_dtype(const Tensor *t, DType dt, const char *op) {
    if (t->dtype != dt)
        die("cuda %s: tensor dtypes differ (%s where %s is expected)", op, dtype_name(t->dtype), dtype_name(dt));
}

void cuda_require_same_shape(const Tensor *a, const Tensor *b, const char *op) {
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        die("cuda %s: shape mismatch (%d,%d,%d,%d) vs (%d,%d,%d,%d)", op, a->n, a->c, a->h, a->w, b->n, b->c, b->h,
            b->w);
}

/* ---- memory ---- */

static void *cu_alloc(Backend *b, size_t bytes) {
    CudaCtx *ctx = cuda_ctx(b);
    if (bytes == 0) bytes = 1; /* a distinct, releasable pointer */
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        size_t free_b = 0, total_b = 0;
        (void)cudaGetLastError(); /* clear it so the query below reports its own status */
        CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        die("cuda: out of GPU memory allocating %zu bytes (%zu in use through the backend; %zu of %zu free)", bytes,
            b->bytes_in_use, free_b, total_b);
    }
    CUDA_CHECK(e);
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ctx->stream));
    if (ctx->nallocs == ctx->cap_allocs) {
        ctx->cap_allocs = ctx->cap_allocs ? 2 * ctx->cap_allocs : 64;
        ctx->allocs = (CudaAlloc *)xrealloc(ctx->allocs, (size_t)ctx->cap_allocs * sizeof *ctx->allocs);
    }
    ctx->allocs[ctx->nallocs].p = p;
    ctx->allocs[ctx->nallocs].bytes = bytes;
    ctx->nallocs++;
    b->bytes_in_use += bytes;
    if (b->bytes_in_use > b->peak_bytes) b->peak_bytes = b->bytes_in_use;
    return p;
}

static void wcopy_free(Backend *b, int i);

static void cu_release(Backend *b, void *p) {
    if (!p) return;
    CudaCtx *ctx = cuda_ctx(b);
    for (int i = ctx->nallocs - 1; i >= 0; i--) {
        if (ctx->allocs[i].p != p) continue;
        CUDA_CHECK(cudaStreamSynchronize(ctx->stream)); /* queued ops that use p finish first */
        for (int k = ctx->nwcopies - 1; k >= 0; k--)
            if ((const void *)ctx->wcopies[k].master == p) wcopy_free(b, k);
        CUDA_CHECK(cudaFree(p));
        b->bytes_in_use -= ctx->allocs[i].bytes;
        ctx->allocs[i] = ctx->allocs[--ctx->nallocs];
        return;
    }
    die("cuda release: %p was not allocated by this backend", p);
}

static void cu_zero(Backend *b, void *p, size_t bytes) {
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cuda_ctx(b)->stream));
}

/* Whether p is page-locked host memory (cudaHostAlloc / cudaHostRegister). */
static int host_is_pinned(const void *p) {
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        (void)cudaGetLastError(); /* an unknown pointer: ordinary host memory */
        return 0;
    }
    return a.type == cudaMemoryTypeHost;
}

/* Synchronous with respect to the host buffer: it may be reused as soon as this returns. From
 * ordinary (pageable) memory cudaMemcpyAsync already is (the runtime stages the bytes before it
 * returns), so the device is not waited for: the labels uploaded before every step do not stall
 * it. From pinned memory the copy reads the buffer later, so that waits for the stream. */
static void cu_upload(Backend *b, void *dst, const void *host_src, size_t bytes) {
    CudaCtx *ctx = cuda_ctx(b);
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, ctx->stream));
    if (host_is_pinned(host_src)) CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

static void cu_download(Backend *b, void *host_dst, const void *src, size_t bytes) {
    CudaCtx *ctx = cuda_ctx(b);
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

/* On the compute stream, so it follows every op issued before; the slot's event says when it
 * has landed. */
static void cu_read_async(Backend *b, void *host_dst, const void *src, size_t bytes, int slot) {
    CudaCtx *ctx = cuda_ctx(b);
    if (slot != 0 && slot != 1) die("cuda read_async: slot %d (want 0 or 1)", slot);
    if (!ctx->read_done[slot]) CUDA_CHECK(cudaEventCreateWithFlags(&ctx->read_done[slot], cudaEventDisableTiming));
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_CHECK(cudaEventRecord(ctx->read_done[slot], ctx->stream));
}

static void cu_read_wait(Backend *b, int slot) {
    CudaCtx *ctx = cuda_ctx(b);
    if (slot != 0 && slot != 1) die("cuda read_wait: slot %d (want 0 or 1)", slot);
    if (ctx->read_done[slot]) CUDA_CHECK(cudaEventSynchronize(ctx->read_done[slot]));
}

static void cu_copy(Backend *b, void *dst, const void *src, size_t bytes) {
    if (dst == src || bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_ctx(b)->stream));
}

/* ---- activations: host NCHW <-> device NHWC ---- */

/* One thread per destination element, so writes are coalesced; the reads stride by h*w. The host
 * side is always fp32; the device side is T (converted here, round to nearest even). */
template <typename T> __global__ void nchw_to_nhwc_kernel(const float *src, T *dst, int n, int c, int h, int w) {
    size_t total = (size_t)n * c * h * w;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i;
        int ci = (int)(t % c);
        t /= c;
        int wi = (int)(t % w);
        t /= w;
        int hi = (int)(t % h);
        int ni = (int)(t / h);
        dst[i] = from_float<T>(src[(((size_t)ni * c + ci) * h + hi) * w + wi]);
    }
}

template <typename T> __global__ void nhwc_to_nchw_kernel(const T *src, float *dst, int n, int c, int h, int w) {
    size_t total = (size_t)n * c * h * w;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i;
        int wi = (int)(t % w);
        t /= w;
        int hi = (int)(t % h);
        t /= h;
        int ci = (int)(t % c);
        int ni = (int)(t / c);
        dst[i] = to_float(src[(((size_t)ni * h + hi) * w + wi) * c + ci]);
    }
}

/* With one channel or a 1x1 map, NCHW and NHWC are the same bytes (e.g. logits). */
static int same_layout(const Tensor *t) { return t->c == 1 || (t->h == 1 && t->w == 1); }

/* fp32 with the same layout on both sides is one copy; anything else goes through the fp32 stage
 * and one kernel that reorders and converts. */
static void cu_tensor_upload(Backend *b, Tensor *dst, const float *host_nchw) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(dst, "tensor_upload");
    size_t numel = tensor_numel(dst), bytes = numel * sizeof(float);
    if (numel == 0) return;
    if (dt == DT_F32 && same_layout(dst)) {
        CUDA_CHECK(cudaMemcpyAsync(dst->data, host_nchw, bytes, cudaMemcpyHostToDevice, ctx->stream));
    } else {
        float *stage = (float *)cuda_buf_reserve(ctx->stream, &ctx->stage, bytes);
        CUDA_CHECK(cudaMemcpyAsync(stage, host_nchw, bytes, cudaMemcpyHostToDevice, ctx->stream));
        cuda_dispatch(dt, "tensor_upload", [&](auto tag) {
            using T = decltype(tag);
            nchw_to_nhwc_kernel<T><<<cuda_grid(numel), CUDA_BLOCK, 0, ctx->stream>>>(stage, (T *)dst->data, dst->n,
                                                                                     dst->c, dst->h, dst->w);
        });
        KERNEL_CHECK();
    }
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

static void cu_tensor_download(Backend *b, float *host_nchw, const Tensor *src) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(src, "tensor_download");
    size_t numel = tensor_numel(src), bytes = numel * sizeof(float);
    if (numel == 0) return;
    if (dt == DT_F32 && same_layout(src)) {
        CUDA_CHECK(cudaMemcpyAsync(host_nchw, src->data, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    } else {
        float *stage = (float *)cuda_buf_reserve(ctx->stream, &ctx->stage, bytes);
        cuda_dispatch(dt, "tensor_download", [&](auto tag) {
            using T = decltype(tag);
            nhwc_to_nchw_kernel<T><<<cuda_grid(numel), CUDA_BLOCK, 0, ctx->stream>>>((const T *)src->data, stage,
                                                                                     src->n, src->c, src->h, src->w);
        });
        KERNEL_CHECK();
        CUDA_CHECK(cudaMemcpyAsync(host_nchw, stage, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

static void cu_sync(Backend *b) { CUDA_CHECK(cudaStreamSynchronize(cuda_ctx(b)->stream)); }

/* ---- mixed precision: low-precision copies of the fp32 master weights ---- */

template <typename T> __global__ void cast_weights_kernel(const float *src, T *dst, size_t count) {
    GRID_STRIDE(i, count) dst[i] = from_float<T>(src[i]);
}

/* Casts master[from, from+count) of copy k into its low-precision block. */
static void wcopy_cast(CudaCtx *ctx, const CudaWeightCopy *c, size_t from, size_t count) {
    if (count == 0) return;
    cuda_dispatch(c->dt, "weights_updated", [&](auto tag) {
        using T = decltype(tag);
        cast_weights_kernel<T><<<cuda_grid(count), CUDA_BLOCK, 0, ctx->stream>>>(c->master + from, (T *)c->lp + from,
                                                                                 count);
    });
    KERNEL_CHECK();
}

static void wcopy_free(Backend *b, int i) {
    CudaCtx *ctx = cuda_ctx(b);
    CudaWeightCopy *c = &ctx->wcopies[i];
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    CUDA_CHECK(cudaFree(c->lp));
    b->bytes_in_use -= c->count * dtype_size(c->dt);
    *c = ctx->wcopies[--ctx->nwcopies];
}

static int wcopy_find(const CudaCtx *ctx, const float *w, size_t count) {
    for (int i = 0; i < ctx->nwcopies; i++) {
        const CudaWeightCopy *c = &ctx->wcopies[i];
        if (w >= c->master && w < c->master + c->count) return w + count <= c->master + c->count ? i : -2;
    }
    return -1;
}

/* fp32 computes straight from the master weights: nothing to refresh. In fp16/bf16 the first call
 * inside an ops->alloc block registers the whole block (and casts all of it: the master is current
 * by definition); later calls cast [w, w+count) only. */
static void cu_weights_updated(Backend *b, const float *w, size_t count) {
    CudaCtx *ctx = cuda_ctx(b);
    if (b->compute == DT_F32 || count == 0) return;
    int k = wcopy_find(ctx, w, count);
    if (k == -2)
        die("cuda weights_updated: [%p, +%zu floats) runs past its registered weight block", (const void *)w, count);
    if (k >= 0) {
        wcopy_cast(ctx, &ctx->wcopies[k], (size_t)(w - ctx->wcopies[k].master), count);
        return;
    }
    const CudaAlloc *blk = NULL;
    for (int i = 0; i < ctx->nallocs && !blk; i++) {
        const char *p = (const char *)ctx->allocs[i].p;
        if ((const char *)w >= p && (const char *)(w + count) <= p + ctx->allocs[i].bytes) blk = &ctx->allocs[i];
    }
    if (!blk)
        die("cuda weights_updated: %p (+%zu floats) is not inside one block from ops->alloc", (const void *)w, count);
    if (ctx->nwcopies == ctx->cap_wcopies) {
        ctx->cap_wcopies = ctx->cap_wcopies ? 2 * ctx->cap_wcopies : 8;
        ctx->wcopies = (CudaWeightCopy *)xrealloc(ctx->wcopies, (size_t)ctx->cap_wcopies * sizeof *ctx->wcopies);
    }
    CudaWeightCopy *c = &ctx->wcopies[ctx->nwcopies];
    c->master = (const float *)blk->p;
    c->count = blk->bytes / sizeof(float);
    c->dt = b->compute;
    size_t bytes = (c->count ? c->count : 1) * dtype_size(c->dt);
    cudaError_t e = cudaMalloc(&c->lp, bytes);
    if (e == cudaErrorMemoryAllocation)
        die("cuda: out of GPU memory for the %s copy of the weights (%zu bytes)", dtype_name(c->dt), bytes);
    CUDA_CHECK(e);
    b->bytes_in_use += c->count * dtype_size(c->dt);
    if (b->bytes_in_use > b->peak_bytes) b->peak_bytes = b->bytes_in_use;
    ctx->nwcopies++;
    wcopy_cast(ctx, c, 0, c->count);
}

const void *cuda_weights(Backend *b, const float *w, size_t count, DType dt, const char *op) {
    if (dt == DT_F32) return w;
    CudaCtx *ctx = cuda_ctx(b);
    int k = wcopy_find(ctx, w, count);
    if (k < 0)
        die("cuda %s: no %s copy of the weights at %p: call ops->weights_updated after writing fp32 weights", op,
            dtype_name(dt), (const void *)w);
    const CudaWeightCopy *c = &ctx->wcopies[k];
    if (c->dt != dt)
        die("cuda %s: the weights' copy is %s but the activations are %s", op, dtype_name(c->dt), dtype_name(dt));
    return (const char *)c->lp + (size_t)(w - c->master) * dtype_size(dt);
}

/* Activations in dt from now on (call before a model is attached: model_attach sizes its buffers
 * with Backend.compute). Existing weight copies follow: recast in the new dtype, or dropped for
 * fp32. fp32 also resets the loss scale to 1. */
static int cu_set_compute(Backend *b, DType dt) {
    CudaCtx *ctx = cuda_ctx(b);
    if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16) return -1;
    /* tensor-core fp16/bf16 (and cuDNN's bf16 kernels) need sm_80; this binary has no older code anyway */
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx->device));
    if (dt != DT_F32 && prop.major < 8) return -1;
    if (dt == DT_F32) {
        while (ctx->nwcopies > 0) wcopy_free(b, ctx->nwcopies - 1);
        b->compute = dt;
        return 0;
    }
    if (dt == b->compute) return 0;
    b->compute = dt;
    for (int i = 0; i < ctx->nwcopies; i++) { /* fp16 <-> bf16: same size, new contents */
        ctx->wcopies[i].dt = dt;
        wcopy_cast(ctx, &ctx->wcopies[i], 0, ctx->wcopies[i].count);
    }
    return 0;
}

/* ---- life cycle ---- */

static void cu_destroy(Backend *b) {
    if (!b) return;
    CudaCtx *ctx = cuda_ctx(b);
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    if (ctx->nallocs > 0) {
        fprintf(stderr, "cnntrain: warning: cuda backend destroyed with %d buffers (%zu bytes) still allocated\n",
                ctx->nallocs, b->bytes_in_use);
        for (int i = 0; i < ctx->nallocs; i++) CUDA_CHECK(cudaFree(ctx->allocs[i].p));
    }
    while (ctx->nwcopies > 0) wcopy_free(b, ctx->nwcopies - 1);
    free(ctx->wcopies);
    free(ctx->allocs);
    cuda_conv_cache_free(ctx->conv);
    cuda_buf_free(&ctx->convert);
    cuda_buf_free(&ctx->workspace);
    cuda_buf_free(&ctx->stage);
    cuda_buf_free(&ctx->scratch);
    cuda_buf_free(&ctx->mix);
    cuda_feed_free(ctx);
    cuda_nccl_free(ctx);
    for (int i = 0; i < 2; i++)
        if (ctx->read_done[i]) CUDA_CHECK(cudaEventDestroy(ctx->read_done[i]));
    CUBLAS_CHECK(cublasDestroy(ctx->cublas));
    CUDNN_CHECK(cudnnDestroy(ctx->cudnn));
    CUDA_CHECK(cudaStreamDestroy(ctx->stream));
    free(ctx);
    free(b);
}

/* Every member is a pointer; if backend.h gains an op, this fails until the table below has it. */
static_assert(sizeof(BackendOps) == 51 * sizeof(void *), "BackendOps changed: update the cuda ops table");

static const BackendOps *cuda_ops(void) {
    static BackendOps ops;
    if (ops.name) return &ops;
    ops.destroy = cu_destroy;
    ops.alloc = cu_alloc;
    ops.release = cu_release;
    ops.zero = cu_zero;
    ops.upload = cu_upload;
    ops.download = cu_download;
    ops.copy = cu_copy;
    ops.tensor_upload = cu_tensor_upload;
    ops.tensor_download = cu_tensor_download;
    ops.sync = cu_sync;
    ops.weights_updated = cu_weights_updated;
    ops.conv_forward = cuda_conv_forward;
    ops.conv_backward_data = cuda_conv_backward_data;
    ops.conv_backward_filter = cuda_conv_backward_filter;
    ops.bn_forward_train = cuda_bn_forward_train;
    ops.bn_forward_infer = cuda_bn_forward_infer;
    ops.bn_backward = cuda_bn_backward;
    ops.bn_backward_infer = cuda_bn_backward_infer;
    ops.relu_forward = cuda_relu_forward;
    ops.relu_backward = cuda_relu_backward;
    ops.maxpool_forward = cuda_maxpool_forward;
    ops.maxpool_backward = cuda_maxpool_backward;
    ops.avgpool_forward = cuda_avgpool_forward;
    ops.avgpool_backward = cuda_avgpool_backward;
    ops.global_avgpool_forward = cuda_global_avgpool_forward;
    ops.global_avgpool_backward = cuda_global_avgpool_backward;
    ops.concat_pool_forward = cuda_concat_pool_forward;
    ops.concat_pool_backward = cuda_concat_pool_backward;
    ops.dropout_forward = cuda_dropout_forward;
    ops.dropout_backward = cuda_dropout_backward;
    ops.linear_forward = cuda_linear_forward;
    ops.linear_backward = cuda_linear_backward;
    ops.add = cuda_add;
    ops.accumulate = cuda_accumulate;
    ops.softmax_xent = cuda_softmax_xent;
    ops.adamw = cuda_adamw;
    ops.count_nonfinite = cuda_count_nonfinite;
    ops.scan_nonfinite = cuda_scan_nonfinite;
    ops.read_async = cu_read_async;
    ops.read_wait = cu_read_wait;
    ops.set_compute = cu_set_compute;
    ops.warp_batch = cuda_warp_batch;
    ops.alloc_host = cuda_alloc_host;
    ops.free_host = cuda_free_host;
    ops.upload_async = cuda_upload_async;
    ops.upload_wait = cuda_upload_wait;
    ops.mix_images = cuda_mix_images;
    ops.shrink_batch = cuda_shrink_batch;
#ifdef CNN_HAVE_NCCL
    ops.grad_allreduce = cu_grad_allreduce;
    ops.grad_allreduce_wait = cu_grad_allreduce_wait;
#endif
    ops.name = "cuda"; /* last: marks the table as filled */
    return &ops;
}

/* A kernel that exists only so create() can ask whether this binary has code for the device. */
__global__ void probe_kernel(int *p) {
    if (p) *p = 1;
}

/* Creation reports failure through err instead of exiting: "auto" falls back to the CPU. */
static Backend *create_failed(CudaCtx *ctx, char *err, size_t errlen, const char *what, const char *msg) {
    snprintf(err, errlen, "cuda: %s failed: %s", what, msg);
    if (ctx) {
        if (ctx->cublas) cublasDestroy(ctx->cublas);
        if (ctx->cudnn) cudnnDestroy(ctx->cudnn);
        if (ctx->stream) cudaStreamDestroy(ctx->stream);
        free(ctx);
    }
    return NULL;
}

extern "C" Backend *cuda_backend_create(char *err, size_t errlen) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    /* No GPU or no driver: CUDA's words for it ("CUDA driver version is insufficient for CUDA runtime
     * version" where there is no driver at all) do not say what to do. */
    int driver = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0; /* 0: no driver installed */
    if (e == cudaErrorInsufficientDriver && driver > 0) {
        snprintf(err, errlen, "cuda: the NVIDIA driver supports CUDA %d.%d, older than this build's CUDA %d.%d: update the "
                 "driver, or use cpu (--device cpu, or [run] device = cpu)", driver / 1000, driver % 1000 / 10,
                 CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
        return NULL;
    }
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorStubLibrary ||
        (e == cudaSuccess && count == 0)) {
        snprintf(err, errlen, "cuda: no NVIDIA GPU/driver found; use cpu (--device cpu, or [run] device = cpu)");
        return NULL;
    }
    if (e != cudaSuccess) return create_failed(NULL, err, errlen, "cudaGetDeviceCount", cudaGetErrorString(e));

    CudaCtx *ctx = (CudaCtx *)xcalloc(1, sizeof *ctx);
    ctx->device = cuda_device_for_rank(count); /* one process: 0 (pick another with CUDA_VISIBLE_DEVICES) */
    if ((e = cudaSetDevice(ctx->device)) != cudaSuccess)
        return create_failed(ctx, err, errlen, "cudaSetDevice", cudaGetErrorString(e));
    cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, ctx->device)) != cudaSuccess)
        return create_failed(ctx, err, errlen, "cudaGetDeviceProperties", cudaGetErrorString(e));
    cudaFuncAttributes attr;
    if ((e = cudaFuncGetAttributes(&attr, (const void *)probe_kernel)) != cudaSuccess) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s (device %s is sm_%d%d; built for sm_80, sm_90)", cudaGetErrorString(e),
                 prop.name, prop.major, prop.minor);
        return create_failed(ctx, err, errlen, "finding this binary's kernels for the GPU", msg);
    }
    if ((e = cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking)) != cudaSuccess)
        return create_failed(ctx, err, errlen, "cudaStreamCreate", cudaGetErrorString(e));
    cudnnStatus_t ds = cudnnCreate(&ctx->cudnn);
    if (ds != CUDNN_STATUS_SUCCESS) {
        ctx->cudnn = NULL;
        return create_failed(ctx, err, errlen, "cudnnCreate", cudnnGetErrorString(ds));
    }
    if ((ds = cudnnSetStream(ctx->cudnn, ctx->stream)) != CUDNN_STATUS_SUCCESS)
        return create_failed(ctx, err, errlen, "cudnnSetStream", cudnnGetErrorString(ds));
    cublasStatus_t bs = cublasCreate(&ctx->cublas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        ctx->cublas = NULL;
        return create_failed(ctx, err, errlen, "cublasCreate", cublasGetStatusString(bs));
    }
    if ((bs = cublasSetStream(ctx->cublas, ctx->stream)) != CUBLAS_STATUS_SUCCESS)
        return create_failed(ctx, err, errlen, "cublasSetStream", cublasGetStatusString(bs));
    /* plain fp32 GEMMs: no TF32, so results match the CPU to fp32 rounding */
    if ((bs = cublasSetMathMode(ctx->cublas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS)
        return create_failed(ctx, err, errlen, "cublasSetMathMode", cublasGetStatusString(bs));
    ctx->conv = cuda_conv_cache_new();
    const char *bn = getenv("CNNTRAIN_BN_KERNELS");
    ctx->bn_own = bn && !strcmp(bn, "own");

    Backend *b = (Backend *)xcalloc(1, sizeof *b);
    b->ops = cuda_ops();
    b->impl = ctx;
    b->compute = DT_F32;
    b->threads = 1;
    return b;
}
