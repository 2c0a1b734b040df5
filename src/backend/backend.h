/* backend/backend.h: the one interface every compute backend implements (cpu in src/cpu/, cuda in cuda/).
 *
 * Conventions, fixed here because every backend and every model depends on them:
 * - All pointers passed to ops are backend memory (from ops->alloc), never host memory, unless
 *   the parameter says "host".
 * - Activations are Tensors with a logical shape (n, c, h, w). Their memory layout is the
 *   backend's private choice: cpu and cuda both use NHWC (channels-last). What crosses to the host
 *   goes through tensor_upload / tensor_download and is always NCHW float32 (PyTorch's layout).
 * - Parameters are fp32 master copies in one contiguous block. Conv weights are stored K,R,S,C
 *   ("channels-last" filters, what cuDNN's NHWC kernels want); checkpoints convert to PyTorch's
 *   K,C,R,S. Linear weights are [out, in] as in PyTorch. A backend that computes in fp16/bf16
 *   keeps its own cast copy of the weights and refreshes it in weights_updated().
 * - Parameter gradient outputs (dw, dgamma, dbeta, db) are overwritten, never accumulated.
 *   Input gradient outputs (dx) take `accumulate`: 0 = overwrite, 1 = add into dx. A value read
 *   by two layers (a residual block's input) gets its gradient as overwrite + accumulate.
 * - Shapes: forward ops set their output's shape from the input and the geometry (linear reads its
 *   output width from y->c). Backward ops whose input size cannot be recovered from dy (conv
 *   backward-data, average-pool and global-pool backward: stride 2 maps two sizes to one) need dx
 *   to carry the input's shape already; model.c sets every shape before a pass.
 * - Outputs are never NULL, except a linear layer's b/db (no bias) and softmax_xent's labels_b/lam
 *   (no mixup).
 * - Ops are asynchronous on a device backend; sync() waits for all of them.
 */
#ifndef CNN_BACKEND_H
#define CNN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum { DT_F32 = 0, DT_F16, DT_BF16 } DType;

typedef struct {
    void *data;      /* backend memory, sized by the caller for the largest shape it will hold */
    int n, c, h, w;  /* current logical shape */
    DType dtype;
} Tensor;

static inline size_t tensor_numel(const Tensor *t) { return (size_t)t->n * t->c * t->h * t->w; }
size_t dtype_size(DType dt);
const char *dtype_name(DType dt);

/* Square kernels; no bias, no groups, no dilation (a ResNet needs none). */
typedef struct { int cin, cout, k, stride, pad; } ConvGeom;
/* Pooling window. ceil_mode and the divisor follow PyTorch: padding counts in the average
 * (count_include_pad), the part of a ceil-mode window past the padded input does not. */
typedef struct { int k, stride, pad, ceil_mode; } PoolGeom;

/* Output side of a conv or pool, PyTorch's formulas. Returns < 1 when the input is too small. */
int conv_out_size(int in, int k, int stride, int pad);
int pool_out_size(int in, const PoolGeom *g);

typedef struct {
    float lr, beta1, beta2, eps, wd; /* wd is decoupled: p -= lr*wd*p before the Adam step */
    int step;                        /* 1-based, for the bias corrections */
} AdamWArgs;

/* A run of parameters for the AdamW op: count floats from offset in the parameter block, with their
 * own lr and wd (parameter groups, no decay on batch norm and biases). */
typedef struct {
    size_t offset, count;
    float lr, wd;
} AdamWRun;

typedef struct Backend Backend;

/* One decoded image in a packed uint8 buffer (warp_batch): rows of w*channels bytes (HWC), the
 * first byte at `offset`. channels: 3 (RGB) or 1 (grey, taken as R = G = B). */
typedef struct {
    size_t offset;
    int w, h, channels;
} ImageSlot;
struct Warp; /* augment.h: one image's drawn transform */

typedef struct BackendOps {
    const char *name;
    void (*destroy)(Backend *);   /* frees the backend's own state; buffers must be released first */

    /* memory */
    void *(*alloc)(Backend *, size_t bytes);         /* zero-filled; exits with a message when out of memory */
    void (*release)(Backend *, void *p);
    void (*zero)(Backend *, void *p, size_t bytes);
    void (*upload)(Backend *, void *dst, const void *host_src, size_t bytes);
    void (*download)(Backend *, void *host_dst, const void *src, size_t bytes);
    void (*copy)(Backend *, void *dst, const void *src, size_t bytes);
    /* Activations: host NCHW float32 <-> the backend's layout and dtype. dst->data must be allocated;
     * the shape of dst (upload) or src (download) says how much to move. */
    void (*tensor_upload)(Backend *, Tensor *dst, const float *host_nchw);
    void (*tensor_download)(Backend *, float *host_nchw, const Tensor *src);
    void (*sync)(Backend *);
    /* Called after the optimizer changed the fp32 weights in [w, w+count). */
    void (*weights_updated)(Backend *, const float *w, size_t count);

    /* convolution; w is [cout, k, k, cin] */
    void (*conv_forward)(Backend *, const ConvGeom *, const Tensor *x, const float *w, Tensor *y);
    void (*conv_backward_data)(Backend *, const ConvGeom *, const Tensor *dy, const float *w, Tensor *dx,
                               int accumulate);
    void (*conv_backward_filter)(Backend *, const ConvGeom *, const Tensor *x, const Tensor *dy, float *dw);

    /* batch norm over (n, h, w) per channel. Training: normalise with the biased batch variance,
     * running = (1-momentum)*running + momentum*batch with the unbiased variance; save_mean and
     * save_invstd (c floats each) are kept for backward. */
    void (*bn_forward_train)(Backend *, const Tensor *x, const float *gamma, const float *beta,
                             float *running_mean, float *running_var, float momentum, float eps,
                             float *save_mean, float *save_invstd, Tensor *y);
    void (*bn_forward_infer)(Backend *, const Tensor *x, const float *gamma, const float *beta,
                             const float *running_mean, const float *running_var, float eps, Tensor *y);
    void (*bn_backward)(Backend *, const Tensor *x, const Tensor *dy, const float *gamma,
                        const float *save_mean, const float *save_invstd, float *dgamma, float *dbeta,
                        Tensor *dx, int accumulate);
    /* backward through a batch norm that used its running statistics (frozen, FixRes) */
    void (*bn_backward_infer)(Backend *, const Tensor *x, const Tensor *dy, const float *gamma,
                              const float *running_mean, const float *running_var, float eps,
                              float *dgamma, float *dbeta, Tensor *dx, int accumulate);

    /* y may alias x */
    void (*relu_forward)(Backend *, const Tensor *x, Tensor *y);
    void (*relu_backward)(Backend *, const Tensor *y, const Tensor *dy, Tensor *dx, int accumulate);

    void (*maxpool_forward)(Backend *, const PoolGeom *, const Tensor *x, Tensor *y);
    void (*maxpool_backward)(Backend *, const PoolGeom *, const Tensor *x, const Tensor *y, const Tensor *dy,
                             Tensor *dx, int accumulate);
    void (*avgpool_forward)(Backend *, const PoolGeom *, const Tensor *x, Tensor *y);
    void (*avgpool_backward)(Backend *, const PoolGeom *, const Tensor *dy, Tensor *dx, int accumulate);

    /* y: (n, c, 1, 1) */
    void (*global_avgpool_forward)(Backend *, const Tensor *x, Tensor *y);
    void (*global_avgpool_backward)(Backend *, const Tensor *dy, Tensor *dx, int accumulate);

    /* fastai's AdaptiveConcatPool2d(1): y (n, 2c, 1, 1) = [max over h,w | mean over h,w] per channel,
     * the max half first. Backward takes the forward's y: the max half's gradient goes to the first
     * maximum in row-major (h, w) order, as PyTorch's adaptive max pool keeps the first strict
     * maximum; a NaN maximum propagates forward but routes no gradient. */
    void (*concat_pool_forward)(Backend *, const Tensor *x, Tensor *y);
    void (*concat_pool_backward)(Backend *, const Tensor *x, const Tensor *y, const Tensor *dy, Tensor *dx,
                                 int accumulate);

    /* Inverted dropout, training mode only (eval mode is the identity, the caller's business).
     * Element i, counted in NCHW order, is kept when u = (rng_hash(seed, i) >> 40) * 2^-24 >= p,
     * and kept elements are scaled by 1/(1-p) (p = 1 zeros everything). No mask is stored: backward
     * redraws it from the same seed. y may alias x, dx may alias dy. */
    void (*dropout_forward)(Backend *, const Tensor *x, float p, uint64_t seed, Tensor *y);
    void (*dropout_backward)(Backend *, const Tensor *dy, float p, uint64_t seed, Tensor *dx, int accumulate);

    /* x: (n, in, 1, 1), w: [out, in], b: [out] or NULL, y: (n, out, 1, 1) */
    void (*linear_forward)(Backend *, const Tensor *x, const float *w, const float *b, Tensor *y);
    void (*linear_backward)(Backend *, const Tensor *x, const Tensor *dy, const float *w, float *dw, float *db,
                            Tensor *dx, int accumulate);

    /* y = a + b (y may alias a or b); dst = src or dst += src */
    void (*add)(Backend *, const Tensor *a, const Tensor *b, Tensor *y);
    void (*accumulate)(Backend *, const Tensor *src, Tensor *dst, int accumulate);

    /* Mean softmax cross-entropy over the batch, with label smoothing eps and mixup:
     * per sample, target = lam*onehot(a) + (1-lam)*onehot(b), smoothed as (1-eps)*target + eps/classes.
     * labels_b and lam may be NULL (no mixup). logits and dlogits are (n, classes, 1, 1); loss is one
     * float of backend memory; dlogits = scale * d(loss)/d(logits). scale is the loss scale (1 for
     * none): in fp16 it keeps the backward pass's small gradients from underflowing. Every gradient
     * computed from dlogits then carries it, the parameter gradients too (no op divides it out):
     * the optimizer step does, once (adamw's grad_scale), and an overflow on the way arrives in the
     * fp32 parameter gradients as inf or NaN (scan_nonfinite). */
    void (*softmax_xent)(Backend *, const Tensor *logits, const int32_t *labels_a, const int32_t *labels_b,
                         const float *lam, float smoothing, float scale, float *loss, Tensor *dlogits);

    /* One AdamW step over nruns runs of a parameter block (p, g, m, v: the block's bases; runs: host,
     * not overlapping), each with its own lr and wd (a's lr and wd are not used): one launch on a
     * device, whatever the number of runs. Parameters outside every run (frozen) are untouched.
     * The step uses g * grad_scale as the gradient (1 / the loss scale; g itself is left as it is). */
    void (*adamw)(Backend *, float *p, const float *g, float *m, float *v, const AdamWRun *runs, int nruns,
                  const AdamWArgs *a, float grad_scale);

    /* How many of x[0..count) are NaN or infinite (fp32 backend memory; waits for the result). */
    size_t (*count_nonfinite)(Backend *, const float *x, size_t count);
    /* The same without waiting: once the ops issued before it have run, out (backend memory, two
     * uint64) holds the count and the index of the first NaN or infinite value (UINT64_MAX when
     * there is none). Read it back with read_async. */
    void (*scan_nonfinite)(Backend *, const float *x, size_t count, uint64_t *out);
    /* Copy bytes of backend memory to host memory without making the host wait for the device:
     * the copy runs after every op issued before this call; read_wait(slot) blocks until the last
     * read_async through slot (0 or 1) has landed (at once when there was none). With host_dst
     * from alloc_host the host goes on at once on cuda; from other memory the call may wait for
     * the copy. cpu: a memcpy, done on return. Lets a trainer read step s's results while step
     * s+1 runs. */
    void (*read_async)(Backend *, void *host_dst, const void *src, size_t bytes, int slot);
    void (*read_wait)(Backend *, int slot);

    /* Optional (NULL: fp32 only). Switch the activation dtype to dt before any model is attached;
     * returns 0, or -1 when the device cannot compute in dt. */
    int (*set_compute)(Backend *, DType dt);

    /* ---- input pipeline: uint8 images to the device, augmented there ---- */

    /* Augment a batch: output image i is params[i] (augment.h's Warp, as transform_draw drew it
     * for an image of slots[i].w x slots[i].h) applied to decoded image i, exactly as
     * warp_apply_f32 applies it (bilinear, antialiased where the Warp says, padding, lighting),
     * normalised per channel as (v/255 - mean[c]) / std[c] (lighting: (l(v) - mean[c]) / std[c]).
     * images: backend memory, the packed uint8 images (ImageSlot says where each one is); slots,
     * params, mean, std: host. Sets y's shape to (n, 3, out_side, out_side) and writes y->data in
     * the backend's layout (NHWC) and in y->dtype: DT_F32 on every backend; DT_F16 and DT_BF16 on
     * cuda (rounded to nearest even from the fp32 value). y->data must hold n*3*out_side^2 values;
     * n = 0 only sets the shape. Equal to the cpu backend's output within 1e-5 absolute in fp32
     * (the same operations in the same order; only the lighting table's exp differs), and within
     * one unit in the last place of fp16/bf16 beyond that. */
    void (*warp_batch)(Backend *, const uint8_t *images, const ImageSlot *slots, const struct Warp *params, int n,
                       int out_side, const float mean[3], const float std[3], Tensor *y);

    /* Host staging memory: page-locked on cuda (cudaHostAlloc), so upload_async really is
     * asynchronous; plain memory on cpu. Exits with a message when out of memory. free_host
     * waits for every upload_async still reading from memory of this backend. NULL is ignored. */
    void *(*alloc_host)(Backend *, size_t bytes);
    void (*free_host)(Backend *, void *p);
    /* Copy bytes from host_src to dst (backend memory) without blocking the host, on a copy
     * stream of its own, through staging slot `slot` (0 or 1). Ordering (the double-buffer
     * protocol):
     * - every op issued after this call sees the copied bytes (the compute stream waits for the
     *   copy on the device; the host does not wait);
     * - the copy itself starts only after every op issued before the PREVIOUS upload_async call
     *   (whatever its slot) has finished. So a consumer that alternates between two destination
     *   buffers, uploading into one and then issuing the ops that read it, never has a buffer
     *   overwritten while an op reading it may still run (the copy overlaps the ops issued
     *   between the two calls: the previous batch's step). An op on dst issued after the previous
     *   call is not waited for: sync() first if there is one (e.g. the zero fill of a fresh alloc);
     * - host_src must stay unchanged until upload_wait(slot) returns (or a later sync()): with two
     *   slots, the host fills slot k's host buffer while slot 1-k's copy runs.
     * host_src may be any host memory; from alloc_host it is copied by DMA, otherwise the copy
     * may block the host. cpu: a memcpy, done on return. */
    void (*upload_async)(Backend *, void *dst, const void *host_src, size_t bytes, int slot);
    /* Block the host until the last upload_async through slot has finished reading its host
     * buffer (at once when there was none). */
    void (*upload_wait)(Backend *, int slot);

    /* Mixup in place: image i of x becomes lam[i] * x_i + (1 - lam[i]) * x_partner[i], the
     * partners as they were before the call, computed in float without fused multiply-add (so the
     * cpu backend equals the trainer's host mixup bit for bit). partner, lam: host, x->n each. */
    void (*mix_images)(Backend *, Tensor *x, const int32_t *partner, const float *lam);

    /* Progressive resizing: y (n, c, d, d) from x (n, c, s, s), d <= s: with crop, the d x d
     * window at (oy, ox) of every image; else the bilinear resize of progressive.h's
     * resize_strided (align_corners = False, no antialiasing), computed in float without fused
     * multiply-add in that order. y must not alias x. */
    void (*shrink_batch)(Backend *, const Tensor *x, int d, int crop, int oy, int ox, Tensor *y);

    /* ---- data-parallel training (dist/dist.h), optional: NULL where the backend has none (cpu:
     * the trainer all-reduces its gradients in host memory after the backward pass) ---- */

    /* Start the sum over the ranks of weight * x[0..count) (fp32 backend memory, in place) after
     * every op issued before this call, without making later ops wait: it overlaps them (on cuda,
     * NCCL on a stream of its own). Every rank must make the same calls in the same order. */
    void (*grad_allreduce)(Backend *, float *x, size_t count, float weight);
    /* Every op issued after this call sees the sums of every grad_allreduce before it. */
    void (*grad_allreduce_wait)(Backend *);
} BackendOps;

struct Backend {
    const BackendOps *ops;
    void *impl;        /* the backend's private state */
    DType compute;     /* activation dtype this backend computes in */
    int threads;       /* host threads the backend may use */
    size_t bytes_in_use, peak_bytes;  /* device memory through ops->alloc, for the benchmarks */
    /* fp32 operations that run on TF32 tensor cores (10-bit significand) because no plain fp32
     * kernel would run for their shape (cuda; 0 elsewhere): their results then differ from exact
     * fp32 by about 1e-3 relative, and comparisons must allow for it. */
    int tf32_ops;
    /* Data-parallel training (dist/dist.h), set by the training step: image_offset is the position
     * of this rank's first image in the global batch (dropout draws each element's mask from its
     * global index, the mask one process draws); sync_bn makes training-mode batch norm reduce its
     * statistics across the ranks (the cpu backend; PyTorch's SyncBatchNorm). 0 in one process. */
    long image_offset;
    int sync_bn;
};

/* Create a backend by name: "cpu", "cuda", or "auto" (cuda when built in and a GPU is present,
 * else cpu). Returns NULL with a message in err when the name is unknown or the device is missing. */
Backend *backend_create(const char *name, char *err, size_t errlen);
/* Compute in dt (fp32, fp16, bf16) where the backend can; returns the dtype it will use (fp32 when
 * the backend has no low-precision path). Call before model_attach. */
DType backend_set_precision(Backend *, DType dt);
void backend_destroy(Backend *);
/* Names of the backends compiled into this binary, e.g. "cpu cuda". */
const char *backend_list(void);

#endif
