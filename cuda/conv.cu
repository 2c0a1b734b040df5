/* conv.cu: convolution forward, backward-data and backward-filter through cuDNN, NHWC, filters
 * K,R,S,C. Choosing an algorithm costs far more than running one, and progressive resizing changes
 * shapes between steps, so each (geometry, n, h, w, dtype) gets a plan, built once: descriptors, and
 * per direction the chosen algorithm and its workspace size. All plans share one grow-only workspace.
 *
 * Precision. fp32: FLOAT tensors and filter, FLOAT compute, FMA math only (no TF32). fp16 / bf16:
 * x, y and the filter in HALF / BFLOAT16, FLOAT compute type (cuDNN's "pseudo half" and bf16
 * configurations: products accumulate in fp32), tensor-core math allowed. The filter comes from the
 * backend's low-precision copy of the master weights (cuda_weights). cuDNN wants dw in the filter's
 * dtype, so backward-filter writes fp16/bf16 dw into a scratch buffer and a kernel widens it to the
 * fp32 gradient, dividing by the loss scale there (an fp16 overflow is inf by then and stays inf). */
#include "cuda_backend.h"
#include "dtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Heuristics (cudnnGet*_v7) by default: cheap enough to run for every new shape. Setting
 * CNNTRAIN_CUDNN_FIND=1 benchmarks the algorithms instead (cudnnFind*, slower per new shape).
 * CNNTRAIN_CUDNN_LOG=1 prints, per plan and direction, the algorithm and math type that ran and
 * every candidate passed over on the way, with the reason. */
static const char *FIND_ENV = "CNNTRAIN_CUDNN_FIND";
static const char *LOG_ENV = "CNNTRAIN_CUDNN_LOG";
/* An algorithm that wants more workspace than this is passed over for the next candidate. */
static const size_t WORKSPACE_LIMIT = (size_t)1 << 30;

enum { DIR_FWD, DIR_BWD_DATA, DIR_BWD_FILTER, NDIR };
static const char *dir_name[NDIR] = {"forward", "backward-data", "backward-filter"};
enum { MAX_CANDIDATES = 16 }; /* more than any direction's ALGO_COUNT */

/* One algorithm cuDNN offered for a direction, as its perf results give it. */
typedef struct {
    int algo;
    cudnnMathType_t math;
    cudnnStatus_t status;
    size_t memory;
} Candidate;

typedef struct {
    /* key */
    ConvGeom g;
    int n, h, w;  /* input (x / dx) size */
    DType dt;     /* x, y and filter */
    /* derived */
    int oh, ow;
    cudnnTensorDescriptor_t x_desc, y_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    /* per direction, once an algorithm has run: it, its math type and workspace */
    int chosen[NDIR];
    int algo[NDIR];
    cudnnMathType_t math[NDIR];
    size_t ws_bytes[NDIR];
} ConvPlan;

struct ConvCache {
    ConvPlan **plans;
    int nplans, cap;
    int last;       /* the previous hit: consecutive calls often share a plan (forward then backward) */
    int use_find, log;
};

struct ConvCache *cuda_conv_cache_new(void) {
    struct ConvCache *c = (struct ConvCache *)xcalloc(1, sizeof *c);
    const char *e = getenv(FIND_ENV);
    c->use_find = e && e[0] && strcmp(e, "0") != 0;
    e = getenv(LOG_ENV);
    c->log = e && e[0] && strcmp(e, "0") != 0;
    return c;
}

void cuda_conv_cache_free(struct ConvCache *c) {
    if (!c) return;
    for (int i = 0; i < c->nplans; i++) {
        ConvPlan *p = c->plans[i];
        CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->x_desc));
        CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->y_desc));
        CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->w_desc));
        CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->conv_desc));
        free(p);
    }
    free(c->plans);
    free(c);
}

static int plan_matches(const ConvPlan *p, const ConvGeom *g, int n, int h, int w, DType dt) {
    return p->g.cin == g->cin && p->g.cout == g->cout && p->g.k == g->k && p->g.stride == g->stride &&
           p->g.pad == g->pad && p->n == n && p->h == h && p->w == w && p->dt == dt;
}

/* The math type a plan searches with: FMA only for fp32, tensor cores allowed for fp16/bf16. */
static cudnnMathType_t base_math(const ConvPlan *p) {
    return p->dt == DT_F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
}

/* The three directions share one convolution descriptor, so each sets its math type before it asks
 * for a workspace size or runs. */
static void use_math(ConvPlan *p, cudnnMathType_t m) { CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, m)); }

static int is_tensor_op(cudnnMathType_t m) {
    return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

static const char *math_name(cudnnMathType_t m) {
    switch (m) {
    case CUDNN_DEFAULT_MATH: return "default";
    case CUDNN_TENSOR_OP_MATH: return "tensor-op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor-op-allow-conversion";
    case CUDNN_FMA_MATH: return "fma";
    }
    return "?";
}

static const char *algo_name(int dir, int a) {
    static const char *fwd[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING",
                                "WINOGRAD", "WINOGRAD_NONFUSED"};
    static const char *bwd_data[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
    static const char *bwd_filter[] = {"ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED",
                                       "FFT_TILING"};
    const char *const *t = dir == DIR_FWD ? fwd : dir == DIR_BWD_DATA ? bwd_data : bwd_filter;
    int n = dir == DIR_FWD ? 8 : dir == DIR_BWD_DATA ? 6 : 7;
    return a >= 0 && a < n ? t[a] : "?";
}

static ConvPlan *plan_new(const ConvGeom *g, int n, int h, int w, DType dt) {
    int oh = conv_out_size(h, g->k, g->stride, g->pad), ow = conv_out_size(w, g->k, g->stride, g->pad);
    if (g->cin < 1 || g->cout < 1 || g->k < 1 || g->stride < 1 || g->pad < 0 || n < 1 || oh < 1 || ow < 1)
        die("cuda conv: invalid geometry cin=%d cout=%d k=%d stride=%d pad=%d for input %dx%dx%d", g->cin, g->cout,
            g->k, g->stride, g->pad, n, h, w);
    ConvPlan *p = (ConvPlan *)xcalloc(1, sizeof *p);
    p->g = *g;
    p->n = n;
    p->h = h;
    p->w = w;
    p->oh = oh;
    p->ow = ow;
    p->dt = dt;
    cudnnDataType_t data = cuda_cudnn_dtype(dt);
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y_desc));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w_desc));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x_desc, CUDNN_TENSOR_NHWC, data, n, g->cin, h, w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y_desc, CUDNN_TENSOR_NHWC, data, n, g->cout, oh, ow));
    /* NHWC filter format = memory order K,R,S,C, the layout of our weights */
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w_desc, data, CUDNN_TENSOR_NHWC, g->cout, g->cin, g->k, g->k));
    /* compute type FLOAT for every data type: fp32 accumulation (PSEUDO_HALF / bf16 configurations) */
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv_desc, g->pad, g->pad, g->stride, g->stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    /* The default math type lets cuDNN use TF32 tensor cores for fp32 on Ampere and later (10-bit
     * mantissa); fp32 here means fp32, so restrict it to FMA kernels. fp16/bf16 data is what tensor
     * cores are for. */
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, base_math(p)));
    int cn, cc, ch, cw;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->conv_desc, p->x_desc, p->w_desc, &cn, &cc, &ch, &cw));
    if (cn != n || cc != g->cout || ch != oh || cw != ow)
        die("cuda conv: cuDNN's output shape %dx%dx%dx%d differs from conv_out_size's %dx%dx%dx%d", cn, cc, ch, cw, n,
            g->cout, oh, ow);
    return p;
}

static ConvPlan *plan_get(CudaCtx *ctx, const ConvGeom *g, int n, int h, int w, DType dt) {
    struct ConvCache *c = ctx->conv;
    if (c->last < c->nplans && plan_matches(c->plans[c->last], g, n, h, w, dt)) return c->plans[c->last];
    for (int i = 0; i < c->nplans; i++) {
        if (plan_matches(c->plans[i], g, n, h, w, dt)) {
            c->last = i;
            return c->plans[i];
        }
    }
    if (c->nplans == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->plans = (ConvPlan **)xrealloc(c->plans, (size_t)c->cap * sizeof *c->plans);
    }
    c->plans[c->nplans] = plan_new(g, n, h, w, dt);
    c->last = c->nplans;
    return c->plans[c->nplans++];
}

/* cuDNN's results (best first) as candidates in the order to try them: for fp32 the plain fp32
 * (FMA) kernels first and tensor-core (TF32) ones after, as a last resort; fp16/bf16 in cuDNN's
 * order. Results cuDNN itself marks as failed are left out. */
template <typename Perf> static int candidates(const ConvPlan *p, const Perf *res, int got, Candidate *out) {
    int n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < got && n < MAX_CANDIDATES; i++) {
            if (res[i].status != CUDNN_STATUS_SUCCESS) continue;
            int tf32 = p->dt == DT_F32 && is_tensor_op(res[i].mathType);
            if (tf32 != pass) continue; /* pass 0: all that are not TF32; pass 1: the TF32 ones */
            out[n].algo = (int)res[i].algo;
            out[n].math = res[i].mathType;
            out[n].status = res[i].status;
            out[n].memory = res[i].memory;
            n++;
        }
    return n;
}

/* cuDNN's candidates for one direction (heuristics, or cudnnFind* with CNNTRAIN_CUDNN_FIND=1). */
static int list_candidates(CudaCtx *ctx, ConvPlan *p, int dir, Candidate *out) {
    int got = 0;
    use_math(p, base_math(p));
    cudnnHandle_t h = ctx->cudnn;
    int find = ctx->conv->use_find;
    if (dir == DIR_FWD) {
        cudnnConvolutionFwdAlgoPerf_t res[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        if (find)
            CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(h, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, res));
        else
            CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                               CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, res));
        return candidates(p, res, got, out);
    }
    if (dir == DIR_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t res[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        if (find)
            CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(h, p->w_desc, p->y_desc, p->conv_desc, p->x_desc,
                                                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, res));
        else
            CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->w_desc, p->y_desc, p->conv_desc, p->x_desc,
                                                                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got,
                                                                    res));
        return candidates(p, res, got, out);
    }
    cudnnConvolutionBwdFilterAlgoPerf_t res[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    if (find)
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(h, p->x_desc, p->y_desc, p->conv_desc, p->w_desc,
                                                                CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, res));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p->x_desc, p->y_desc, p->conv_desc, p->w_desc,
                                                                  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got,
                                                                  res));
    return candidates(p, res, got, out);
}

static cudnnStatus_t workspace_size(CudaCtx *ctx, ConvPlan *p, int dir, int algo, size_t *bytes) {
    cudnnHandle_t h = ctx->cudnn;
    if (dir == DIR_FWD)
        return cudnnGetConvolutionForwardWorkspaceSize(h, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    if (dir == DIR_BWD_DATA)
        return cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->w_desc, p->y_desc, p->conv_desc, p->x_desc,
                                                            (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p->x_desc, p->y_desc, p->conv_desc, p->w_desc,
                                                          (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
}

static void plan_label(const ConvPlan *p, char *buf, size_t len) {
    snprintf(buf, len, "cin=%d cout=%d k=%d stride=%d pad=%d input %dx%dx%d %s", p->g.cin, p->g.cout, p->g.k,
             p->g.stride, p->g.pad, p->n, p->h, p->w, dtype_name(p->dt));
}

/* Runs direction dir of plan p: run(algo, workspace, bytes) enqueues the cuDNN call. The first
 * time, cuDNN's candidates are tried in order (as PyTorch's Conv_v7.cpp does): one whose workspace
 * size cannot be had, that wants more than WORKSPACE_LIMIT, whose call returns an error, or whose
 * kernels fail to launch (checked by waiting for it, once) is passed over for the next; the first
 * that runs is kept for every later call. Only when none runs is it fatal, naming each one tried.
 * (A candidate that returned an error wrote nothing; an accumulating backward-data call is safe.) */
template <typename Run> static void run_dir(Backend *b, ConvPlan *p, int dir, Run &&run) {
    CudaCtx *ctx = cuda_ctx(b);
    if (p->chosen[dir]) {
        use_math(p, p->math[dir]);
        void *ws = cuda_buf_reserve(ctx->stream, &ctx->workspace, p->ws_bytes[dir]);
        CUDNN_CHECK(run(p->algo[dir], ws, p->ws_bytes[dir]));
        return;
    }
    struct ConvCache *c = ctx->conv;
    Candidate cand[MAX_CANDIDATES];
    int n = list_candidates(ctx, p, dir, cand);
    char skipped[1024] = "";
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        const char *why = NULL;
        char why_buf[160];
        size_t bytes = 0;
        use_math(p, cand[i].math);
        cudnnStatus_t st = workspace_size(ctx, p, dir, cand[i].algo, &bytes);
        void *ws = NULL;
        if (st != CUDNN_STATUS_SUCCESS) {
            snprintf(why_buf, sizeof why_buf, "workspace size: %s", cudnnGetErrorString(st));
            why = why_buf;
        } else if (bytes > WORKSPACE_LIMIT) {
            snprintf(why_buf, sizeof why_buf, "wants %zu MiB of workspace", bytes >> 20);
            why = why_buf;
        } else if (bytes > 0 && !(ws = cuda_buf_try_reserve(ctx->stream, &ctx->workspace, bytes))) {
            snprintf(why_buf, sizeof why_buf, "%zu MiB of workspace not available", bytes >> 20);
            why = why_buf;
        } else if ((st = run(cand[i].algo, ws, bytes)) != CUDNN_STATUS_SUCCESS) {
            snprintf(why_buf, sizeof why_buf, "%s", cudnnGetErrorString(st));
            why = why_buf;
        } else {
            /* a launch that failed shows at the next sync; a failure that is not sticky is cleared */
            cudaError_t e = cudaStreamSynchronize(ctx->stream);
            if (e == cudaSuccess) e = cudaGetLastError();
            if (e != cudaSuccess) {
                (void)cudaGetLastError();
                CUDA_CHECK(cudaStreamSynchronize(ctx->stream)); /* a sticky error: nothing can go on */
                snprintf(why_buf, sizeof why_buf, "launch failed: %s", cudaGetErrorString(e));
                why = why_buf;
            }
        }
        if (why) {
            used += (size_t)snprintf(skipped + used, used < sizeof skipped ? sizeof skipped - used : 0, "%s%s (%s): %s",
                                     used ? "; " : "", algo_name(dir, cand[i].algo), math_name(cand[i].math), why);
            if (used >= sizeof skipped) used = sizeof skipped - 1;
            continue;
        }
        p->chosen[dir] = 1;
        p->algo[dir] = cand[i].algo;
        p->math[dir] = cand[i].math;
        p->ws_bytes[dir] = bytes;
        int tf32 = p->dt == DT_F32 && is_tensor_op(cand[i].math);
        char label[160];
        plan_label(p, label, sizeof label);
        if (tf32) {
            b->tf32_ops++;
            if (b->tf32_ops == 1)
                fprintf(stderr,
                        "cnntrain: warning: no plain fp32 kernel ran for the %s convolution %s; it runs on TF32 "
                        "tensor cores (about 1e-3 relative error), as may others (CNNTRAIN_CUDNN_LOG=1 lists them)\n",
                        dir_name[dir], label);
        }
        if (c->log)
            fprintf(stderr, "cnntrain: cudnn %s %s: %s, math %s, workspace %zu bytes%s%s%s\n", dir_name[dir], label,
                    algo_name(dir, cand[i].algo), math_name(cand[i].math), bytes, tf32 ? " (TF32)" : "",
                    used ? "; passed over: " : "", skipped);
        return;
    }
    char label[160];
    plan_label(p, label, sizeof label);
    die("cuda conv: no %s algorithm ran for %s (%d candidates from cuDNN%s%s)", dir_name[dir], label, n,
        used ? ": " : "", skipped);
}

/* dy must be the conv's output for an input of the plan's size, in the plan's dtype. */
static void check_out(const ConvPlan *p, const Tensor *dy, const char *op) {
    cuda_require_dtype(dy, p->dt, op);
    if (dy->n != p->n || dy->c != p->g.cout || dy->h != p->oh || dy->w != p->ow)
        die("cuda %s: dy is %dx%dx%dx%d, expected %dx%dx%dx%d for input %dx%dx%dx%d", op, dy->n, dy->c, dy->h, dy->w,
            p->n, p->g.cout, p->oh, p->ow, p->n, p->g.cin, p->h, p->w);
}

/* Returns x's dtype. */
static DType check_in(const ConvGeom *g, const Tensor *x, const char *op) {
    DType dt = cuda_act_dtype(x, op);
    if (x->c != g->cin) die("cuda %s: input has %d channels, the conv expects %d", op, x->c, g->cin);
    return dt;
}

static size_t filter_count(const ConvGeom *g) { return (size_t)g->cout * g->k * g->k * g->cin; }

/* alpha and beta are floats for every data type here (cuDNN: float scaling for HALF/BFLOAT16/FLOAT). */
void cuda_conv_forward(Backend *b, const ConvGeom *g, const Tensor *x, const float *w, Tensor *y) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = check_in(g, x, "conv_forward");
    cuda_require_dtype(y, dt, "conv_forward");
    ConvPlan *p = plan_get(ctx, g, x->n, x->h, x->w, dt);
    const void *wd = cuda_weights(b, w, filter_count(g), dt, "conv_forward");
    cuda_set_shape(y, x->n, g->cout, p->oh, p->ow);
    const float one = 1.0f, zero = 0.0f;
    run_dir(b, p, DIR_FWD, [&](int algo, void *ws, size_t bytes) {
        return cudnnConvolutionForward(ctx->cudnn, &one, p->x_desc, x->data, p->w_desc, wd, p->conv_desc,
                                       (cudnnConvolutionFwdAlgo_t)algo, ws, bytes, &zero, p->y_desc, y->data);
    });
}

/* dx's shape (set by the caller) says the input size: stride > 1 makes it ambiguous from dy. */
void cuda_conv_backward_data(Backend *b, const ConvGeom *g, const Tensor *dy, const float *w, Tensor *dx,
                             int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = check_in(g, dx, "conv_backward_data");
    ConvPlan *p = plan_get(ctx, g, dx->n, dx->h, dx->w, dt);
    check_out(p, dy, "conv_backward_data");
    const void *wd = cuda_weights(b, w, filter_count(g), dt, "conv_backward_data");
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f; /* beta 1: dx += result */
    run_dir(b, p, DIR_BWD_DATA, [&](int algo, void *ws, size_t bytes) {
        return cudnnConvolutionBackwardData(ctx->cudnn, &one, p->w_desc, wd, p->y_desc, dy->data, p->conv_desc,
                                            (cudnnConvolutionBwdDataAlgo_t)algo, ws, bytes, &beta, p->x_desc,
                                            dx->data);
    });
}

/* dw (fp32) = the low-precision dw, widened. cuDNN may saturate an fp16 result that overflowed
 * at +-65504 instead of making it inf; the loss scaler must see the overflow, so for fp16 a
 * magnitude of 65504 or more becomes inf here (65504 itself is a sum that reached the top of the
 * range: treating it as an overflow only halves the scale once more). bf16 has fp32's range. */
template <typename T> __global__ void widen_grad_kernel(const T *src, float *dst, size_t count) {
    GRID_STRIDE(i, count) dst[i] = widen_grad(src[i]);
}

void cuda_conv_backward_filter(Backend *b, const ConvGeom *g, const Tensor *x, const Tensor *dy, float *dw) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = check_in(g, x, "conv_backward_filter");
    ConvPlan *p = plan_get(ctx, g, x->n, x->h, x->w, dt);
    check_out(p, dy, "conv_backward_filter");
    /* parameter gradients are overwritten (beta 0), carrying dy's loss scale */
    const float one = 1.0f, zero = 0.0f;
    if (dt == DT_F32) {
        run_dir(b, p, DIR_BWD_FILTER, [&](int algo, void *ws, size_t bytes) {
            return cudnnConvolutionBackwardFilter(ctx->cudnn, &one, p->x_desc, x->data, p->y_desc, dy->data,
                                                  p->conv_desc, (cudnnConvolutionBwdFilterAlgo_t)algo, ws, bytes,
                                                  &zero, p->w_desc, dw);
        });
        return;
    }
    size_t count = filter_count(g);
    void *lp = cuda_buf_reserve(ctx->stream, &ctx->convert, count * dtype_size(dt));
    run_dir(b, p, DIR_BWD_FILTER, [&](int algo, void *ws, size_t bytes) {
        return cudnnConvolutionBackwardFilter(ctx->cudnn, &one, p->x_desc, x->data, p->y_desc, dy->data,
                                              p->conv_desc, (cudnnConvolutionBwdFilterAlgo_t)algo, ws, bytes, &zero,
                                              p->w_desc, lp);
    });
    cuda_dispatch(dt, "conv_backward_filter", [&](auto tag) {
        using T = decltype(tag);
        widen_grad_kernel<T><<<cuda_grid(count), CUDA_BLOCK, 0, ctx->stream>>>((const T *)lp, dw, count);
    });
    KERNEL_CHECK();
}
