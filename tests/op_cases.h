/* op_cases.h: the one table of op cases that both op suites run (ggml's test-backend-ops habit):
 * tests/test_cpu_ops.c checks each row on the cpu backend (values, the accumulate path, and the
 * backward against central finite differences), tests/gpu/gpu_parity.c checks it as the cuda
 * backend against the cpu backend in fp32, fp16 and bf16, with and without loss scaling. Each
 * suite keeps its own checking machinery; a row only says what to compute and which suites run it.
 *
 * A row: the op kind, the input's shape (n, c, h, w), the kind's parameters (the union), and flags
 * saying what to check. A new case of an existing kind is one row here. A new kind is one enum
 * value and its rows here, plus one runner in each suite: both dispatch with a switch that has no
 * default, so -Wall (-Wswitch) names the suite that lacks it.
 *
 * Inputs are drawn by each suite (its own distributions and steps); OC_TIES asks for small
 * integers instead (many tied maxima: the first-maximum rules), which finite differences cannot
 * check, so tied rows are gpu only (test_cpu_ops has hand-made tie tests). */
#ifndef CNN_OP_CASES_H
#define CNN_OP_CASES_H

#include <stdio.h>

#include "backend/backend.h"

typedef enum {
    OP_CONV,        /* conv_forward, conv_backward_data, conv_backward_filter */
    OP_BN,          /* bn_forward_train, bn_forward_infer, bn_backward, bn_backward_infer */
    OP_ELEMENTWISE, /* relu_forward/backward, add, accumulate (gpu_parity: mix_images, shrink_batch too) */
    OP_MAXPOOL,     /* maxpool_forward/backward */
    OP_AVGPOOL,     /* avgpool_forward/backward */
    OP_GAP,         /* global_avgpool_forward/backward */
    OP_CONCAT_POOL, /* concat_pool_forward/backward (fastai's head) */
    OP_DROPOUT,     /* dropout_forward/backward */
    OP_LINEAR,      /* linear_forward/backward */
    OP_XENT,        /* softmax_xent, with label smoothing and mixup */
    OP_ADAMW,       /* adamw */
} OpKind;

enum {
    OC_FD = 1 << 0,        /* test_cpu_ops: values, accumulate, and every backward against finite differences */
    OC_VALUES = 1 << 1,    /* test_cpu_ops: values and accumulate only (too big, or too wide a spread of
                            * values, for differences to beat float rounding) */
    OC_GPU = 1 << 2,       /* gpu_parity: cuda against cpu in every pass */
    OC_QUICK = 1 << 3,     /* gpu_parity: also under CNNTRAIN_GPU_QUICK=1 (the compute-sanitizer pass) */
    OC_TIES = 1 << 4,      /* inputs of small integers: many ties (pools); gpu only */
    OC_UNALIGNED = 1 << 5, /* tensors one element past an aligned pointer (the 16-byte path's fallback) */
    OC_CHUNKED = 1 << 6,   /* conv: runs in several chunks of images; test_cpu_ops checks sampled outputs */
    OC_SYNC = 1 << 7,      /* bn: with Backend.sync_bn (data-parallel statistics) on both backends: one rank, so
                            * the global batch is this one (cpu through the MPI stand-ins, cuda through an NCCL
                            * communicator of one GPU) and the results are those of plain batch norm */
};

typedef struct {
    OpKind kind;
    int flags;
    /* the input: conv, pools, bn, elementwise, head: (n, c, h, w); linear: n rows of c features;
     * xent: n samples of c classes; adamw: n values (0: 300 runs of odd lengths with gaps) */
    int n, c, h, w;
    union {
        ConvGeom conv;                                /* conv.cin == c */
        PoolGeom pool;                                /* max and avg pools */
        struct { float mean, std; } bn;               /* x's distribution (a mean, as after a conv) */
        float drop_p;                                 /* dropout probability */
        struct { int out, bias; } linear;             /* output features, with a bias */
        struct { int mixup; float smoothing; } xent;  /* labels_b and lam given; label smoothing */
        struct {                                      /* step is set by the suite; the gradients are */
            AdamWArgs adamw;                          /* drawn 1 / grad_scale times larger: a loss- */
            float grad_scale;                         /* scaled gradient that the op unscales */
        };
    };
} OpCase;

/* clang-format off */
#define CONV(fl, n, cin, h, w, cout, k, s, p)   {OP_CONV, fl, n, cin, h, w, .conv = {cin, cout, k, s, p}}
#define BN(fl, n, c, h, w, mean, std)            {OP_BN, fl, n, c, h, w, .bn = {mean, std}}
#define ELEM(fl, n, c, h, w)                     {OP_ELEMENTWISE, fl, n, c, h, w, .drop_p = 0}
#define MAXPOOL(fl, geom, n, c, h, w)            {OP_MAXPOOL, fl, n, c, h, w, .pool = geom}
#define AVGPOOL(fl, geom, n, c, h, w)            {OP_AVGPOOL, fl, n, c, h, w, .pool = geom}
#define GAP(fl, n, c, h, w)                      {OP_GAP, fl, n, c, h, w, .drop_p = 0}
#define CPOOL(fl, n, c, h, w)                    {OP_CONCAT_POOL, fl, n, c, h, w, .drop_p = 0}
#define DROPOUT(fl, n, c, h, w, p)               {OP_DROPOUT, fl, n, c, h, w, .drop_p = p}
#define LINEAR(fl, n, in, out, bias)             {OP_LINEAR, fl, n, in, 1, 1, .linear = {out, bias}}
#define XENT(fl, n, classes, mixup, smoothing)   {OP_XENT, fl, n, classes, 1, 1, .xent = {mixup, smoothing}}
#define ADAMW(fl, count, lr, b1, b2, eps, wd)    ADAMW_SCALED(fl, count, lr, b1, b2, eps, wd, 1.0f)
#define ADAMW_SCALED(fl, count, lr, b1, b2, eps, wd, gs) \
    {OP_ADAMW, fl, count, 1, 1, 1, .adamw = {lr, b1, b2, eps, wd, 1}, .grad_scale = gs}

/* the pools' windows */
#define MAX3      {3, 2, 1, 0} /* the stem's MaxPool(3, 2, 1) */
#define MAX3CEIL  {3, 2, 0, 1} /* ceil mode: a clipped last window */
#define AVG2CEIL  {2, 2, 0, 1} /* xresnet shortcut AvgPool2d(2, ceil_mode=True) */
#define AVG3PAD   {3, 2, 1, 0} /* padding counted in the divisor */
#define AVG3CEIL  {3, 2, 1, 1} /* padding counted, the ceil-mode overhang not */

#define BOTH  (OC_FD | OC_GPU)
#define BOTHQ (OC_FD | OC_GPU | OC_QUICK)

/* Channel counts: memory-bound cuda kernels move 16 bytes per access when c % 8 == 0 (c % 4 in
 * fp32): 64, 16, 8, 24, 2048 do, 65, 3, 7, 9 do not. */
static const OpCase op_cases[] = {
    /* ---- convolution (cpu: direct sums in double, then finite differences, step 0.05) ---- */
    CONV(BOTHQ, 3, 3, 15, 13, 8, 3, 2, 1),    /* xresnet stem conv, odd sizes */
    CONV(BOTH, 2, 8, 11, 11, 16, 7, 2, 3),    /* torchvision stem */
    CONV(BOTH, 2, 3, 11, 13, 8, 7, 2, 3),     /* 7x7/2 pad 3 on 3 channels */
    CONV(BOTHQ, 3, 65, 7, 7, 17, 1, 1, 0),    /* 1x1, odd channel counts */
    CONV(BOTH, 2, 16, 5, 5, 65, 3, 1, 1),     /* 3x3 same */
    CONV(BOTH, 3, 32, 7, 7, 64, 1, 2, 0),     /* strided 1x1 shortcut */
    CONV(BOTHQ, 2, 64, 8, 9, 64, 3, 2, 1),    /* strided 3x3 in a bottleneck */
    CONV(BOTH, 2, 5, 9, 7, 6, 3, 2, 1),
    CONV(BOTH, 2, 4, 6, 5, 5, 3, 1, 1),
    CONV(BOTH, 3, 3, 5, 6, 4, 3, 1, 0),
    CONV(BOTH, 2, 6, 7, 9, 4, 1, 2, 0),
    CONV(BOTH, 2, 6, 5, 5, 7, 1, 1, 0),
    CONV(BOTH, 1, 3, 10, 8, 3, 5, 3, 2),
    /* enough channels that K*cin (and K*cout) reach the cpu's implicit-GEMM paths: windows read in
     * place from a padded copy, from x itself (no padding), strided, backward-data through flipped
     * weights */
    CONV(BOTH, 2, 32, 7, 6, 24, 3, 1, 1),
    CONV(BOTH, 2, 24, 9, 7, 33, 3, 2, 1),
    CONV(BOTH, 2, 22, 6, 7, 30, 3, 1, 0),
    CONV(BOTH, 1, 16, 8, 9, 13, 5, 1, 2),
    /* several chunks of images on the cpu: im2col (its column buffer is capped at 16 MB, here 5.3 MB
     * per image), then implicit GEMM (the padded copy is capped at 32 MB, here 10 MB per image).
     * Not on the gpu: a dw summing 4*96*96 products overflows fp16 at loss scale 512. */
    CONV(OC_VALUES | OC_CHUNKED, 4, 16, 96, 96, 8, 3, 1, 1),
    CONV(OC_VALUES | OC_CHUNKED, 4, 96, 160, 160, 32, 3, 1, 1),

    /* ---- batch norm (cpu: training and inference backward); a mean of 100 with std 1 checks the
     * one-pass variance against cancellation ---- */
    BN(BOTHQ, 3, 65, 5, 5, 0.5f, 2.0f),
    BN(BOTHQ, 4, 3, 7, 7, 0.5f, 2.0f),
    BN(BOTHQ, 8, 16, 1, 1, 0.5f, 2.0f),
    BN(BOTH, 2, 32, 9, 9, 0.5f, 2.0f),
    BN(OC_VALUES | OC_GPU, 4, 64, 28, 28, 0.5f, 2.0f),
    BN(OC_VALUES | OC_GPU, 64, 8, 64, 64, 0.5f, 2.0f), /* 262144 rows: more slabs than a warp has lanes */
    /* values only on the cpu: near 100 a float's rounding (7.6e-6) swamps differences of 1e-2 steps */
    BN(OC_VALUES | OC_GPU, 2, 24, 13, 11, 100.0f, 1.0f),
    BN(BOTH, 2, 5, 3, 4, 0.5f, 2.0f),
    BN(BOTH, 4, 16, 24, 24, 0.5f, 2.0f), /* 36864 elements: the cpu's reductions split across threads */
    BN(BOTH, 3, 6, 5, 3, 0.5f, 2.0f),
    BN(BOTH | OC_SYNC, 2, 32, 9, 9, 0.5f, 2.0f),
    BN(OC_VALUES | OC_GPU | OC_SYNC, 4, 64, 28, 28, 100.0f, 1.0f),

    /* ---- ReLU, add, accumulate; sizes take the 16-byte path with a one-by-one tail ---- */
    ELEM(BOTHQ, 3, 65, 7, 7),
    ELEM(BOTHQ, 2, 3, 5, 5),
    ELEM(OC_GPU | OC_QUICK | OC_UNALIGNED, 2, 64, 3, 3),
    ELEM(BOTH, 2, 7, 5, 3),
    ELEM(BOTH, 3, 9, 40, 40), /* 43200 elements: the cpu's parallel path */

    /* ---- pooling (cpu: max pool on distinct values, a step that never reorders them) ---- */
    MAXPOOL(BOTHQ, MAX3, 3, 65, 7, 7),
    MAXPOOL(BOTHQ, MAX3, 2, 64, 9, 9),
    MAXPOOL(BOTH, MAX3, 2, 3, 8, 8),
    MAXPOOL(BOTH, MAX3, 2, 5, 6, 5),
    MAXPOOL(OC_GPU | OC_TIES, MAX3, 2, 8, 7, 6),
    MAXPOOL(OC_GPU | OC_TIES, MAX3, 2, 3, 7, 6),
    MAXPOOL(BOTH, MAX3, 2, 4, 5, 5), /* c = 4: the 16-byte path in fp32 only */
    MAXPOOL(BOTH, MAX3, 2, 5, 9, 11),
    MAXPOOL(BOTH, MAX3, 2, 70, 15, 17), /* two cpu channel blocks, parallel */
    MAXPOOL(BOTH, MAX3CEIL, 1, 3, 8, 7),
    AVGPOOL(BOTHQ, AVG2CEIL, 3, 65, 7, 7),
    AVGPOOL(BOTH, AVG2CEIL, 3, 3, 5, 5),
    AVGPOOL(BOTH, AVG2CEIL, 2, 16, 8, 6),
    AVGPOOL(BOTH, AVG2CEIL, 2, 64, 7, 7),
    AVGPOOL(BOTH, AVG2CEIL, 2, 5, 7, 5), /* odd sizes */
    AVGPOOL(BOTH, AVG2CEIL, 2, 70, 15, 17),
    AVGPOOL(BOTH, AVG3PAD, 2, 3, 7, 7),
    AVGPOOL(BOTH, AVG3PAD, 2, 8, 7, 7),
    AVGPOOL(BOTHQ, AVG3CEIL, 2, 3, 6, 6),
    AVGPOOL(BOTH, AVG3CEIL, 3, 65, 5, 5),
    AVGPOOL(BOTH, AVG3CEIL, 2, 4, 5, 5),

    /* ---- global average pool ---- */
    GAP(BOTHQ, 3, 65, 7, 7),
    GAP(BOTHQ, 2, 3, 5, 5),
    GAP(BOTHQ, 2, 16, 1, 1),
    GAP(BOTHQ, 2, 64, 7, 7),
    GAP(BOTHQ, 3, 8, 3, 2),
    GAP(BOTHQ, 3, 4, 5, 5),
    GAP(BOTH, 3, 6, 5, 7),

    /* ---- fastai's head: concat pool (cpu: finite differences on small maps only: over a large
     * spread of values a step small enough to keep the maximum in place drowns in the mean's
     * rounding) ---- */
    CPOOL(OC_VALUES | OC_GPU | OC_QUICK, 3, 65, 7, 7),
    CPOOL(BOTHQ, 2, 3, 5, 5),
    CPOOL(OC_VALUES | OC_GPU, 4, 2048, 7, 7),
    CPOOL(BOTHQ, 2, 16, 1, 1),
    CPOOL(OC_GPU | OC_QUICK | OC_TIES, 2, 64, 3, 3), /* argmax routing to the first maximum */
    CPOOL(BOTH, 3, 6, 5, 4),
    CPOOL(BOTH, 2, 5, 1, 1), /* a 1x1 map: max and mean are the value itself */
    CPOOL(OC_VALUES | OC_GPU, 4, 300, 7, 7), /* parallel on the cpu */

    /* ---- dropout: masks from rng_hash on both backends, any mask difference is an O(1) error;
     * p = 1 zeroes every gradient, which finite differences cannot check ---- */
    DROPOUT(OC_VALUES | OC_GPU, 64, 4096, 1, 1, 0.25f),
    DROPOUT(OC_VALUES | OC_GPU, 64, 512, 1, 1, 0.5f),
    DROPOUT(BOTHQ, 3, 65, 7, 7, 0.5f),
    DROPOUT(BOTHQ, 5, 7, 1, 1, 0.0f),
    DROPOUT(OC_VALUES | OC_GPU | OC_QUICK, 2, 9, 1, 1, 1.0f),
    DROPOUT(BOTHQ, 2, 24, 3, 3, 0.5f), /* the NCHW mask index on the wide path */
    DROPOUT(BOTH, 2, 5, 3, 4, 0.25f),

    /* ---- linear ---- */
    LINEAR(BOTHQ, 3, 65, 10, 1),
    LINEAR(OC_VALUES | OC_GPU, 4, 2048, 1000, 1),
    LINEAR(BOTHQ, 5, 7, 3, 0),
    LINEAR(BOTH, 5, 13, 7, 1),

    /* ---- softmax cross-entropy ---- */
    XENT(BOTHQ, 3, 10, 0, 0.0f),
    /* values only on the cpu: the loss is a float mean over 64 samples, whose rounding swamps the
     * differences of gradients of size 1/64 */
    XENT(OC_VALUES | OC_GPU, 64, 10, 0, 0.1f),
    XENT(BOTHQ, 5, 1000, 1, 0.1f),
    XENT(BOTHQ, 7, 5, 1, 0.0f),
    XENT(BOTH, 2, 1000, 0, 0.1f),
    XENT(BOTH, 4, 7, 1, 0.1f),
    XENT(BOTH, 4, 7, 0, 0.0f),

    /* ---- AdamW, 3 steps (test_cpu_ops checks the unscaled rows against hand-computed steps
     * instead, and the rows flagged for it against a double-precision AdamW) ---- */
    ADAMW(OC_GPU | OC_QUICK, 1000, 3e-3f, 0.95f, 0.99f, 1e-5f, 0.01f),  /* fastai's Adam */
    ADAMW(OC_GPU | OC_QUICK, 12345, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f), /* PyTorch AdamW, odd count */
    ADAMW(OC_GPU | OC_QUICK, 777, 1e-2f, 0.85f, 0.99f, 1e-5f, 0.0f),   /* no weight decay */
    /* many runs in one launch, as the trainer calls it: 300 runs of odd lengths with their own lr
     * and wd (no decay on every third), gaps between them (frozen parameters stay as they were) */
    ADAMW(OC_GPU | OC_QUICK, 0, 0.0f, 0.9f, 0.99f, 1e-6f, 0.0f),
    /* the g * grad_scale of a loss-scaled step (fp16's loss scaler): a power of two, which undoes
     * the scaling exactly, and a scale that is not one (1 / 1000 rounds) */
    ADAMW_SCALED(OC_VALUES | OC_GPU | OC_QUICK, 4099, 3e-3f, 0.9f, 0.99f, 1e-5f, 0.01f, 1.0f / 1024),
    ADAMW_SCALED(OC_VALUES | OC_GPU | OC_QUICK, 2053, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 1.0f / 1000),
};
/* clang-format on */

#define OP_NCASES ((int)(sizeof op_cases / sizeof op_cases[0]))

static inline const char *op_kind_name(OpKind k) {
    switch (k) {
    case OP_CONV: return "conv";
    case OP_BN: return "bn";
    case OP_ELEMENTWISE: return "elementwise";
    case OP_MAXPOOL: return "maxpool";
    case OP_AVGPOOL: return "avgpool";
    case OP_GAP: return "global_avgpool";
    case OP_CONCAT_POOL: return "concat_pool";
    case OP_DROPOUT: return "dropout";
    case OP_LINEAR: return "linear";
    case OP_XENT: return "softmax_xent";
    case OP_ADAMW: return "adamw";
    }
    return "?";
}

/* "conv 2x3x11x13 k7 s2 p3 -> 8": the kind, the input's shape and the kind's parameters (for the
 * names of test_cpu_ops's tests). */
static inline void op_case_name(const OpCase *oc, char *out, size_t len) {
    int at = snprintf(out, len, "%s %dx%dx%dx%d", op_kind_name(oc->kind), oc->n, oc->c, oc->h, oc->w);
    if (at < 0 || (size_t)at >= len) return;
    char *p = out + at;
    size_t left = len - (size_t)at;
    switch (oc->kind) {
    case OP_CONV: snprintf(p, left, " k%d s%d p%d -> %d", oc->conv.k, oc->conv.stride, oc->conv.pad, oc->conv.cout); break;
    case OP_BN: snprintf(p, left, " mean %g std %g", oc->bn.mean, oc->bn.std); break;
    case OP_MAXPOOL:
    case OP_AVGPOOL:
        snprintf(p, left, " k%d s%d p%d ceil %d", oc->pool.k, oc->pool.stride, oc->pool.pad, oc->pool.ceil_mode);
        break;
    case OP_DROPOUT: snprintf(p, left, " p %g", oc->drop_p); break;
    case OP_LINEAR: snprintf(p, left, " -> %d%s", oc->linear.out, oc->linear.bias ? " +bias" : ""); break;
    case OP_XENT: snprintf(p, left, " smoothing %g%s", oc->xent.smoothing, oc->xent.mixup ? " mixup" : ""); break;
    case OP_ADAMW: {
        int k = snprintf(p, left, " lr %g wd %g", oc->adamw.lr, oc->adamw.wd);
        if (oc->grad_scale != 1.0f && k >= 0 && (size_t)k < left)
            snprintf(p + k, left - (size_t)k, " grad_scale 1/%g", 1.0 / oc->grad_scale);
        break;
    }
    case OP_ELEMENTWISE:
    case OP_GAP:
    case OP_CONCAT_POOL: break;
    }
}

#endif
