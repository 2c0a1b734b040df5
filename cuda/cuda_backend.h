/* cuda_backend.h: what the .cu files in cuda/ share: the backend's private state, its grow-only
 * device buffers, launch helpers, and the op entry points the ops table in cuda_backend.cu holds.
 * Not part of the program's interface (that is src/backend/backend.h). */
#ifndef CNN_CUDA_BACKEND_H
#define CNN_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend/backend.h"
#include "base/util.h"
}

#include "check.h"

/* A device buffer that only grows: scratch space whose contents do not outlive one op. Growing
 * waits for the stream before freeing the old block, so no queued kernel still reads it. Not
 * counted in Backend.bytes_in_use (that counts ops->alloc only). */
typedef struct {
    void *p;
    size_t bytes;
} CudaBuf;
void *cuda_buf_reserve(cudaStream_t stream, CudaBuf *b, size_t bytes);
/* The same, but NULL instead of exiting when the device is out of memory (b is then empty). */
void *cuda_buf_try_reserve(cudaStream_t stream, CudaBuf *b, size_t bytes);
void cuda_buf_free(CudaBuf *b);

struct ConvCache; /* conv.cu */

typedef struct {
    void *p;
    size_t bytes;
} CudaAlloc;

/* Mixed precision: the low-precision copy (fp16/bf16, Backend.compute) of one ops->alloc block of
 * fp32 master weights, registered by the first weights_updated() inside the block and refreshed by
 * every later one. Ops that take `const float *w` find their copy at the same element offset
 * (cuda_weights). Freed with the master block. Counted in Backend.bytes_in_use. */
typedef struct {
    const float *master;
    size_t count;             /* floats in the master block */
    void *lp;                 /* count elements of dt */
    DType dt;
} CudaWeightCopy;

typedef struct {
    int device;
    cudaStream_t stream;      /* every op runs on this one stream, so ops are ordered */
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    CudaBuf workspace;        /* cuDNN convolution workspace, shared by every plan */
    CudaBuf stage;            /* NCHW <-> NHWC staging for tensor_upload / tensor_download */
    CudaBuf scratch;          /* small reductions (per-sample losses, partial channel sums) */
    CudaBuf mix;              /* mix_images: the batch's unmixed copy, partners and weights */
    struct ConvCache *conv;   /* per-shape convolution plans */
    CudaAlloc *allocs;        /* live ops->alloc blocks, to know their sizes on release */
    int nallocs, cap_allocs;
    CudaWeightCopy *wcopies;  /* low-precision weight copies (empty in fp32) */
    int nwcopies, cap_wcopies;
    CudaBuf convert;          /* low-precision temporaries: a conv's dw before the cast to fp32, fp32 GEMM output */
    int bn_own;               /* batch norm through our kernels for every dtype (CNNTRAIN_BN_KERNELS=own) */
    struct CudaFeed *feed;    /* augment.cu: copy stream, upload events, warp_batch buffers (made on first use) */
    cudaEvent_t read_done[2]; /* read_async: each slot's last copy (made on first use) */
    struct CudaNccl *nccl;    /* nccl.cu: the data-parallel all-reduce (made on first use) */
} CudaCtx;

static inline CudaCtx *cuda_ctx(Backend *b) { return (CudaCtx *)b->impl; }

/* Grid-stride launches: a fixed block size and enough blocks to cover n (capped; the kernels loop). */
enum { CUDA_BLOCK = 256 };
static inline unsigned cuda_grid(size_t n) {
    size_t blocks = (n + CUDA_BLOCK - 1) / CUDA_BLOCK;
    if (blocks < 1) blocks = 1;
    return (unsigned)(blocks < 65536 ? blocks : 65536);
}

/* Checks shared by the op files. An activation is fp32, fp16 or bf16 (Backend.compute; every
 * tensor carries its own); an op's outputs have its inputs' dtype, and the caller sized their
 * memory for it, so a mismatch is a fatal error rather than something an op may change.
 * cuda_act_dtype returns t's dtype after checking it is one of the three. */
DType cuda_act_dtype(const Tensor *t, const char *op);
void cuda_require_dtype(const Tensor *t, DType dt, const char *op);
void cuda_require_same_shape(const Tensor *a, const Tensor *b, const char *op);
/* Sets an output's shape; its dtype is the caller's (see cuda_require_dtype). */
static inline void cuda_set_shape(Tensor *t, int n, int c, int h, int w) {
    t->n = n;
    t->c = c;
    t->h = h;
    t->w = w;
}
/* The weights an op computing in dt reads for the fp32 master weights [w, w+count): w itself in
 * fp32, else the registered low-precision copy (dies when weights_updated never covered w). */
const void *cuda_weights(Backend *, const float *w, size_t count, DType dt, const char *op);

/* conv.cu */
struct ConvCache *cuda_conv_cache_new(void);
void cuda_conv_cache_free(struct ConvCache *);
void cuda_conv_forward(Backend *, const ConvGeom *, const Tensor *x, const float *w, Tensor *y);
void cuda_conv_backward_data(Backend *, const ConvGeom *, const Tensor *dy, const float *w, Tensor *dx, int accumulate);
void cuda_conv_backward_filter(Backend *, const ConvGeom *, const Tensor *x, const Tensor *dy, float *dw);

/* batchnorm.cu */
void cuda_bn_forward_train(Backend *, const Tensor *x, const float *gamma, const float *beta, float *running_mean,
                           float *running_var, float momentum, float eps, float *save_mean, float *save_invstd,
                           Tensor *y);
void cuda_bn_forward_infer(Backend *, const Tensor *x, const float *gamma, const float *beta,
                           const float *running_mean, const float *running_var, float eps, Tensor *y);
void cuda_bn_backward(Backend *, const Tensor *x, const Tensor *dy, const float *gamma, const float *save_mean,
                      const float *save_invstd, float *dgamma, float *dbeta, Tensor *dx, int accumulate);
void cuda_bn_backward_infer(Backend *, const Tensor *x, const Tensor *dy, const float *gamma,
                            const float *running_mean, const float *running_var, float eps, float *dgamma,
                            float *dbeta, Tensor *dx, int accumulate);

/* pool.cu */
void cuda_maxpool_forward(Backend *, const PoolGeom *, const Tensor *x, Tensor *y);
void cuda_maxpool_backward(Backend *, const PoolGeom *, const Tensor *x, const Tensor *y, const Tensor *dy,
                           Tensor *dx, int accumulate);
void cuda_avgpool_forward(Backend *, const PoolGeom *, const Tensor *x, Tensor *y);
void cuda_avgpool_backward(Backend *, const PoolGeom *, const Tensor *dy, Tensor *dx, int accumulate);
void cuda_global_avgpool_forward(Backend *, const Tensor *x, Tensor *y);
void cuda_global_avgpool_backward(Backend *, const Tensor *dy, Tensor *dx, int accumulate);

/* head.cu */
void cuda_concat_pool_forward(Backend *, const Tensor *x, Tensor *y);
void cuda_concat_pool_backward(Backend *, const Tensor *x, const Tensor *y, const Tensor *dy, Tensor *dx,
                               int accumulate);
void cuda_dropout_forward(Backend *, const Tensor *x, float p, uint64_t seed, Tensor *y);
void cuda_dropout_backward(Backend *, const Tensor *dy, float p, uint64_t seed, Tensor *dx, int accumulate);

/* linear.cu */
void cuda_linear_forward(Backend *, const Tensor *x, const float *w, const float *b, Tensor *y);
void cuda_linear_backward(Backend *, const Tensor *x, const Tensor *dy, const float *w, float *dw, float *db,
                          Tensor *dx, int accumulate);

/* elementwise.cu */
void cuda_relu_forward(Backend *, const Tensor *x, Tensor *y);
void cuda_relu_backward(Backend *, const Tensor *y, const Tensor *dy, Tensor *dx, int accumulate);
void cuda_add(Backend *, const Tensor *a, const Tensor *b, Tensor *y);
void cuda_accumulate(Backend *, const Tensor *src, Tensor *dst, int accumulate);

/* loss.cu */
void cuda_softmax_xent(Backend *, const Tensor *logits, const int32_t *labels_a, const int32_t *labels_b,
                       const float *lam, float smoothing, float scale, float *loss, Tensor *dlogits);

/* optim.cu */
size_t cuda_count_nonfinite(Backend *, const float *x, size_t count);
void cuda_scan_nonfinite(Backend *, const float *x, size_t count, uint64_t *out);
void cuda_adamw(Backend *, float *p, const float *g, float *m, float *v, const AdamWRun *runs, int nruns,
                const AdamWArgs *a, float grad_scale);

/* augment.cu: the input pipeline (backend.h: warp_batch, alloc_host, free_host, upload_async,
 * upload_wait); cuda_feed_free releases ctx->feed (called by destroy after the stream sync). */
void cuda_warp_batch(Backend *, const uint8_t *images, const ImageSlot *slots, const struct Warp *params, int n,
                     int out_side, const float mean[3], const float std[3], Tensor *y);
void *cuda_alloc_host(Backend *, size_t bytes);
void cuda_free_host(Backend *, void *p);
void cuda_upload_async(Backend *, void *dst, const void *host_src, size_t bytes, int slot);
void cuda_upload_wait(Backend *, int slot);
void cuda_feed_free(CudaCtx *);

/* batch.cu */
void cuda_mix_images(Backend *, Tensor *x, const int32_t *partner, const float *lam);
void cuda_shrink_batch(Backend *, const Tensor *x, int d, int crop, int oy, int ox, Tensor *y);

/* nccl.cu: the data-parallel gradient all-reduce (ops grad_allreduce, grad_allreduce_wait, with
 * NCCL only), its teardown, and the GPU a rank uses. */
void cu_grad_allreduce(Backend *b, float *x, size_t count, float weight);
void cu_grad_allreduce_wait(Backend *b);
void cuda_nccl_free(CudaCtx *ctx);
/* Backend.sync_bn's reductions over the ranks, ordered on the compute stream (exit with a message
 * without NCCL): every rank's count floats gathered in rank order; a sum in place. */
void cuda_sync_allgather(CudaCtx *ctx, const float *mine, float *all, size_t count);
void cuda_sync_allreduce(CudaCtx *ctx, float *x, size_t count);
int cuda_device_for_rank(int device_count);

#endif
