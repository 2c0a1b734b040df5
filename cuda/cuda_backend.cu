/* cuda_backend.cu: the CUDA backend's life cycle (create/destroy), device memory, host <-> device
 * transfers (NCHW on the host, NHWC on the device) and the ops table. The ops themselves live in
 * conv.cu, batchnorm.cu, pool.cu, linear.cu and elementwise.cu. */
#include "cuda_backend.h"

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

void *cuda_buf_reserve(cudaStream_t stream, CudaBuf *b, size_t bytes) {
    if (bytes <= b->bytes) return b->p;
    if (b->p) {
        CUDA_CHECK(cudaStreamSynchronize(stream)); /* no queued op may still use the old block */
        CUDA_CHECK(cudaFree(b->p));
    }
    b->p = NULL;
    b->bytes = 0;
    const size_t MiB = (size_t)1 << 20;
    bytes = (bytes + MiB - 1) / MiB * MiB; /* whole MiBs: fewer regrowths as shapes creep up */
    CUDA_CHECK(cudaMalloc(&b->p, bytes));
    b->bytes = bytes;
    return b->p;
}

void cuda_buf_free(CudaBuf *b) {
    if (b->p) CUDA_CHECK(cudaFree(b->p));
    b->p = NULL;
    b->bytes = 0;
}

void cuda_require_f32(const Tensor *t, const char *op) {
    if (t->dtype != DT_F32) die("cuda %s: only fp32 tensors are supported (got %s)", op, dtype_name(t->dtype));
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

static void cu_release(Backend *b, void *p) {
    if (!p) return;
    CudaCtx *ctx = cuda_ctx(b);
    for (int i = ctx->nallocs - 1; i >= 0; i--) {
        if (ctx->allocs[i].p != p) continue;
        CUDA_CHECK(cudaStreamSynchronize(ctx->stream)); /* queued ops that use p finish first */
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

/* Synchronous with respect to the host buffer: it may be reused as soon as this returns, even if
 * the caller passed pinned memory (where an async copy would still be reading it). */
static void cu_upload(Backend *b, void *dst, const void *host_src, size_t bytes) {
    CudaCtx *ctx = cuda_ctx(b);
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, ctx->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

static void cu_download(Backend *b, void *host_dst, const void *src, size_t bytes) {
    CudaCtx *ctx = cuda_ctx(b);
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

static void cu_copy(Backend *b, void *dst, const void *src, size_t bytes) {
    if (dst == src || bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_ctx(b)->stream));
}

/* ---- activations: host NCHW <-> device NHWC ---- */

/* One thread per destination element, so writes are coalesced; the reads stride by h*w. */
__global__ void nchw_to_nhwc_kernel(const float *src, float *dst, int n, int c, int h, int w) {
    size_t total = (size_t)n * c * h * w;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i;
        int ci = (int)(t % c);
        t /= c;
        int wi = (int)(t % w);
        t /= w;
        int hi = (int)(t % h);
        int ni = (int)(t / h);
        dst[i] = src[(((size_t)ni * c + ci) * h + hi) * w + wi];
    }
}

__global__ void nhwc_to_nchw_kernel(const float *src, float *dst, int n, int c, int h, int w) {
    size_t total = (size_t)n * c * h * w;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i;
        int wi = (int)(t % w);
        t /= w;
        int hi = (int)(t % h);
        t /= h;
        int ci = (int)(t % c);
        int ni = (int)(t / c);
        dst[i] = src[(((size_t)ni * h + hi) * w + wi) * c + ci];
    }
}

/* With one channel or a 1x1 map, NCHW and NHWC are the same bytes (e.g. logits). */
static int same_layout(const Tensor *t) { return t->c == 1 || (t->h == 1 && t->w == 1); }

static void cu_tensor_upload(Backend *b, Tensor *dst, const float *host_nchw) {
    CudaCtx *ctx = cuda_ctx(b);
    cuda_require_f32(dst, "tensor_upload");
    size_t numel = tensor_numel(dst), bytes = numel * sizeof(float);
    if (numel == 0) return;
    if (same_layout(dst)) {
        CUDA_CHECK(cudaMemcpyAsync(dst->data, host_nchw, bytes, cudaMemcpyHostToDevice, ctx->stream));
    } else {
        float *stage = (float *)cuda_buf_reserve(ctx->stream, &ctx->stage, bytes);
        CUDA_CHECK(cudaMemcpyAsync(stage, host_nchw, bytes, cudaMemcpyHostToDevice, ctx->stream));
        nchw_to_nhwc_kernel<<<cuda_grid(numel), CUDA_BLOCK, 0, ctx->stream>>>(stage, (float *)dst->data, dst->n,
                                                                              dst->c, dst->h, dst->w);
        KERNEL_CHECK();
    }
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

static void cu_tensor_download(Backend *b, float *host_nchw, const Tensor *src) {
    CudaCtx *ctx = cuda_ctx(b);
    cuda_require_f32(src, "tensor_download");
    size_t numel = tensor_numel(src), bytes = numel * sizeof(float);
    if (numel == 0) return;
    if (same_layout(src)) {
        CUDA_CHECK(cudaMemcpyAsync(host_nchw, src->data, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    } else {
        float *stage = (float *)cuda_buf_reserve(ctx->stream, &ctx->stage, bytes);
        nhwc_to_nchw_kernel<<<cuda_grid(numel), CUDA_BLOCK, 0, ctx->stream>>>((const float *)src->data, stage,
                                                                              src->n, src->c, src->h, src->w);
        KERNEL_CHECK();
        CUDA_CHECK(cudaMemcpyAsync(host_nchw, stage, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

static void cu_sync(Backend *b) { CUDA_CHECK(cudaStreamSynchronize(cuda_ctx(b)->stream)); }

/* fp32 computes straight from the master weights: nothing to refresh. */
static void cu_weights_updated(Backend *b, const float *w, size_t count) {
    (void)b;
    (void)w;
    (void)count;
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
    free(ctx->allocs);
    cuda_conv_cache_free(ctx->conv);
    cuda_buf_free(&ctx->workspace);
    cuda_buf_free(&ctx->stage);
    cuda_buf_free(&ctx->scratch);
    CUBLAS_CHECK(cublasDestroy(ctx->cublas));
    CUDNN_CHECK(cudnnDestroy(ctx->cudnn));
    CUDA_CHECK(cudaStreamDestroy(ctx->stream));
    free(ctx);
    free(b);
}

/* Every member is a pointer; if backend.h gains an op, this fails until the table below has it. */
static_assert(sizeof(BackendOps) == 39 * sizeof(void *), "BackendOps changed: update the cuda ops table");

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
    ops.set_compute = NULL; /* fp32 only until the mixed-precision path lands */
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
    if (e != cudaSuccess) return create_failed(NULL, err, errlen, "cudaGetDeviceCount", cudaGetErrorString(e));
    if (count == 0) return create_failed(NULL, err, errlen, "cudaGetDeviceCount", "no CUDA device");

    CudaCtx *ctx = (CudaCtx *)xcalloc(1, sizeof *ctx);
    ctx->device = 0; /* pick another with CUDA_VISIBLE_DEVICES */
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

    Backend *b = (Backend *)xcalloc(1, sizeof *b);
    b->ops = cuda_ops();
    b->impl = ctx;
    b->compute = DT_F32;
    b->loss_scale = 1.0f;
    b->threads = 1;
    return b;
}
