/* cuda/nccl.cu: the gradients' all-reduce between the ranks of a data-parallel run (backend.h's
 * grad_allreduce, issue 17): NCCL on a stream of its own, so a bucket of gradients reduces while
 * the compute stream goes on with the rest of the backward pass (the trainer hands over buckets as
 * the backward pass finishes them: net/grad_buckets.h). The communicator is made on first use:
 * rank 0's NCCL id reaches the others through MPI (dist_broadcast). Each rank's gradients are
 * weighted by its share of the global batch inside the reduction (NCCL's pre-multiplied sum), so
 * no extra pass over them is needed. Without NCCL (NCCL=0) the ops are absent and the trainer
 * all-reduces through host memory. */
#include "cuda_backend.h"

extern "C" {
#include "dist/dist.h"
}

#ifdef CNN_HAVE_NCCL
#include <nccl.h>

#define NCCL_CHECK(call)                                                                    \
    do {                                                                                    \
        ncclResult_t cnn_r_ = (call);                                                       \
        if (cnn_r_ != ncclSuccess)                                                          \
            cuda_fail("NCCL", #call, (int)cnn_r_, ncclGetErrorString(cnn_r_), __FILE__, __LINE__); \
    } while (0)

struct CudaNccl {
    ncclComm_t comm;
    cudaStream_t stream;   /* the reductions' stream */
    cudaEvent_t issued;    /* the compute stream's ops before a reduction */
    cudaEvent_t reduced;   /* the reductions issued so far */
    int pending;           /* a reduction since the last wait */
};

static CudaNccl *nccl_get(CudaCtx *ctx) {
    if (ctx->nccl) return ctx->nccl;
    int count = 0;
    CUDA_CHECK(cudaGetDeviceCount(&count));
    if (dist_local_size() > count)
        die("rank %d: %d ranks on this machine share its %d GPU%s: NCCL needs a GPU of its own for each rank (start at "
            "most %d ranks per machine)",
            dist_rank(), dist_local_size(), count, count == 1 ? "" : "s", count);
    CudaNccl *c = (CudaNccl *)xcalloc(1, sizeof *c);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (dist_rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    dist_broadcast(&id, sizeof id, 0);
    NCCL_CHECK(ncclCommInitRank(&c->comm, dist_size(), id, dist_rank()));
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&c->issued, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&c->reduced, cudaEventDisableTiming));
    ctx->nccl = c;
    return c;
}

void cu_grad_allreduce(Backend *b, float *x, size_t count, float weight) {
    CudaCtx *ctx = cuda_ctx(b);
    CudaNccl *c = nccl_get(ctx);
    /* after the ops that wrote x: the compute stream's work so far */
    CUDA_CHECK(cudaEventRecord(c->issued, ctx->stream));
    CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->issued, 0));
    ncclRedOp_t op;
    NCCL_CHECK(ncclRedOpCreatePreMulSum(&op, &weight, ncclFloat32, ncclScalarHostImmediate, c->comm));
    NCCL_CHECK(ncclAllReduce(x, x, count, ncclFloat32, op, c->comm, c->stream));
    NCCL_CHECK(ncclRedOpDestroy(op, c->comm)); /* allowed once the call that took it has returned */
    c->pending = 1;
}

/* The compute stream's later ops wait for every reduction issued so far. */
static void wait_for_reductions(CudaCtx *ctx, CudaNccl *c) {
    if (!c || !c->pending) return;
    CUDA_CHECK(cudaEventRecord(c->reduced, c->stream));
    CUDA_CHECK(cudaStreamWaitEvent(ctx->stream, c->reduced, 0));
    c->pending = 0;
}

void cu_grad_allreduce_wait(Backend *b) {
    CudaCtx *ctx = cuda_ctx(b);
    wait_for_reductions(ctx, ctx->nccl);
}

/* sync_bn's reductions: on the compute stream itself (the next kernel needs the result), after any
 * gradient bucket still reducing on the NCCL stream (one communicator: calls in one order). */
static CudaNccl *compute_stream_ready(CudaCtx *ctx) {
    CudaNccl *c = nccl_get(ctx);
    wait_for_reductions(ctx, c);
    return c;
}

void cuda_sync_allgather(CudaCtx *ctx, const float *mine, float *all, size_t count) {
    CudaNccl *c = compute_stream_ready(ctx);
    NCCL_CHECK(ncclAllGather(mine, all, count, ncclFloat32, c->comm, ctx->stream));
}

void cuda_sync_allreduce(CudaCtx *ctx, float *x, size_t count) {
    CudaNccl *c = compute_stream_ready(ctx);
    NCCL_CHECK(ncclAllReduce(x, x, count, ncclFloat32, ncclSum, c->comm, ctx->stream));
}

void cuda_nccl_free(CudaCtx *ctx) {
    CudaNccl *c = ctx->nccl;
    if (!c) return;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    NCCL_CHECK(ncclCommDestroy(c->comm));
    CUDA_CHECK(cudaEventDestroy(c->issued));
    CUDA_CHECK(cudaEventDestroy(c->reduced));
    CUDA_CHECK(cudaStreamDestroy(c->stream));
    free(c);
    ctx->nccl = NULL;
}
#else
void cuda_nccl_free(CudaCtx *ctx) { (void)ctx; }
[[noreturn]] static void no_nccl(void) {
    die("cuda: [run] sync_bn = yes reduces batch-norm statistics through NCCL, and this build has none (NCCL=0, or "
        "nccl.h was not found): rebuild with NCCL, or use sync_bn = no");
}
void cuda_sync_allgather(CudaCtx *, const float *, float *, size_t) { no_nccl(); }
void cuda_sync_allreduce(CudaCtx *, float *, size_t) { no_nccl(); }
#endif

int cuda_device_for_rank(int count) {
    /* a data-parallel rank takes the GPU of its place on its machine; one process takes GPU 0
     * (another through CUDA_VISIBLE_DEVICES) */
    return dist_active() && count > 0 ? dist_local_rank() % count : 0;
}
