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
 * CNNTRAIN_CUDNN_FIND=1 benchmarks the algorithms instead (cudnnFind*, slower per new shape). */
static const char *FIND_ENV = "CNNTRAIN_CUDNN_FIND";
/* An algorithm that wants more workspace than this is passed over for the next candidate. */
static const size_t WORKSPACE_LIMIT = (size_t)1 << 30;

enum { DIR_FWD, DIR_BWD_DATA, DIR_BWD_FILTER, NDIR };
static const char *dir_name[NDIR] = {"forward", "backward-data", "backward-filter"};

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
    int chosen[NDIR];
    cudnnMathType_t math[NDIR]; /* per direction: the math type its algorithm was chosen with */
    cudnnConvolutionFwdAlgo_t fwd_algo;
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo;
    size_t ws_bytes[NDIR];
} ConvPlan;

struct ConvCache {
    ConvPlan **plans;
    int nplans, cap;
    int last;       /* the previous hit: consecutive calls often share a plan (forward then backward) */
    int use_find;
    int warned_tf32;
};

struct ConvCache *cuda_conv_cache_new(void) {
    struct ConvCache *c = (struct ConvCache *)xcalloc(1, sizeof *c);
    const char *e = getenv(FIND_ENV);
    c->use_find = e && e[0] && strcmp(e, "0") != 0;
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
 * for a workspace size or runs. fp16/bf16 use the math type cuDNN reported for the chosen algorithm
 * (as its documentation asks); fp32 stays FMA. */
static void use_math(ConvPlan *p, cudnnMathType_t m) { CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, m)); }

static int is_tensor_op(cudnnMathType_t m);

/* fp32 keeps FMA unless pick_algo fell back to a tensor-core algorithm (it warned): that one
 * needs its reported math type to run at all. */
static void chose(ConvPlan *p, int dir, cudnnMathType_t reported) {
    p->math[dir] = p->dt == DT_F32 && !is_tensor_op(reported) ? CUDNN_FMA_MATH : reported;
    use_math(p, p->math[dir]);
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

static int is_tensor_op(cudnnMathType_t m) {
    return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

/* Results come best first. fp32: take the first that ran, is not a tensor-core (TF32) kernel and
 * fits the workspace limit; failing that, the first that ran and fits (with a warning). fp16/bf16:
 * the first that ran and fits (tensor-core kernels are the point). */
template <typename Perf>
static int pick_algo(struct ConvCache *c, const Perf *res, int got, int dir, const ConvPlan *p) {
    for (int i = 0; i < got; i++)
        if (res[i].status == CUDNN_STATUS_SUCCESS && (p->dt != DT_F32 || !is_tensor_op(res[i].mathType)) &&
            res[i].memory <= WORKSPACE_LIMIT)
            return i;
    for (int i = 0; i < got; i++) {
        if (res[i].status == CUDNN_STATUS_SUCCESS && res[i].memory <= WORKSPACE_LIMIT) {
            if (!c->warned_tf32)
                fprintf(stderr, "cnntrain: warning: cuDNN offers only tensor-core algorithms for some fp32 "
                                "convolutions; results may carry TF32 rounding\n");
            c->warned_tf32 = 1;
            return i;
        }
    }
    die("cuda conv: cuDNN found no usable %s algorithm for cin=%d cout=%d k=%d stride=%d pad=%d input %dx%dx%d %s "
        "(%d candidates)",
        dir_name[dir], p->g.cin, p->g.cout, p->g.k, p->g.stride, p->g.pad, p->n, p->h, p->w, dtype_name(p->dt), got);
}

static void choose_fwd(CudaCtx *ctx, ConvPlan *p) {
    cudnnConvolutionFwdAlgoPerf_t res[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    use_math(p, base_math(p));
    if (ctx->conv->use_find)
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(ctx->cudnn, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                         CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, res));
    else
        CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(ctx->cudnn, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, res));
    int k = pick_algo(ctx->conv, res, got, DIR_FWD, p);
    p->fwd_algo = res[k].algo;
    chose(p, DIR_FWD, res[k].mathType);
    CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(ctx->cudnn, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                        p->fwd_algo, &p->ws_bytes[DIR_FWD]));
    p->chosen[DIR_FWD] = 1;
}

static void choose_bwd_data(CudaCtx *ctx, ConvPlan *p) {
    cudnnConvolutionBwdDataAlgoPerf_t res[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int got = 0;
    use_math(p, base_math(p));
    if (ctx->conv->use_find)
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(ctx->cudnn, p->w_desc, p->y_desc, p->conv_desc,
                                                              p->x_desc, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got,
                                                              res));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx->cudnn, p->w_desc, p->y_desc, p->conv_desc,
                                                                p->x_desc, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                                &got, res));
    int k = pick_algo(ctx->conv, res, got, DIR_BWD_DATA, p);
    p->bwd_data_algo = res[k].algo;
    chose(p, DIR_BWD_DATA, res[k].mathType);
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(ctx->cudnn, p->w_desc, p->y_desc, p->conv_desc,
                                                             p->x_desc, p->bwd_data_algo, &p->ws_bytes[DIR_BWD_DATA]));
    p->chosen[DIR_BWD_DATA] = 1;
}

static void choose_bwd_filter(CudaCtx *ctx, ConvPlan *p) {
    cudnnConvolutionBwdFilterAlgoPerf_t res[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int got = 0;
    use_math(p, base_math(p));
    if (ctx->conv->use_find)
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(ctx->cudnn, p->x_desc, p->y_desc, p->conv_desc,
                                                                p->w_desc, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                                &got, res));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx->cudnn, p->x_desc, p->y_desc, p->conv_desc,
                                                                  p->w_desc, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                                  &got, res));
    int k = pick_algo(ctx->conv, res, got, DIR_BWD_FILTER, p);
    p->bwd_filter_algo = res[k].algo;
    chose(p, DIR_BWD_FILTER, res[k].mathType);
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(ctx->cudnn, p->x_desc, p->y_desc, p->conv_desc,
                                                               p->w_desc, p->bwd_filter_algo,
                                                               &p->ws_bytes[DIR_BWD_FILTER]));
    p->chosen[DIR_BWD_FILTER] = 1;
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
    if (!p->chosen[DIR_FWD]) choose_fwd(ctx, p);
    const void *wd = cuda_weights(b, w, filter_count(g), dt, "conv_forward");
    cuda_set_shape(y, x->n, g->cout, p->oh, p->ow);
    void *ws = cuda_buf_reserve(ctx->stream, &ctx->workspace, p->ws_bytes[DIR_FWD]);
    const float one = 1.0f, zero = 0.0f;
    use_math(p, p->math[DIR_FWD]);
    CUDNN_CHECK(cudnnConvolutionForward(ctx->cudnn, &one, p->x_desc, x->data, p->w_desc, wd, p->conv_desc,
                                        p->fwd_algo, ws, p->ws_bytes[DIR_FWD], &zero, p->y_desc, y->data));
}

/* dx's shape (set by the caller) says the input size: stride > 1 makes it ambiguous from dy. */
void cuda_conv_backward_data(Backend *b, const ConvGeom *g, const Tensor *dy, const float *w, Tensor *dx,
                             int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = check_in(g, dx, "conv_backward_data");
    ConvPlan *p = plan_get(ctx, g, dx->n, dx->h, dx->w, dt);
    check_out(p, dy, "conv_backward_data");
    if (!p->chosen[DIR_BWD_DATA]) choose_bwd_data(ctx, p);
    const void *wd = cuda_weights(b, w, filter_count(g), dt, "conv_backward_data");
    void *ws = cuda_buf_reserve(ctx->stream, &ctx->workspace, p->ws_bytes[DIR_BWD_DATA]);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f; /* beta 1: dx += result */
    use_math(p, p->math[DIR_BWD_DATA]);
    CUDNN_CHECK(cudnnConvolutionBackwardData(ctx->cudnn, &one, p->w_desc, wd, p->y_desc, dy->data, p->conv_desc,
                                             p->bwd_data_algo, ws, p->ws_bytes[DIR_BWD_DATA], &beta, p->x_desc,
                                             dx->data));
}

/* dw (fp32) = the low-precision dw * inv_scale. */
template <typename T> __global__ void widen_grad_kernel(const T *src, float *dst, size_t count, float inv_scale) {
    GRID_STRIDE(i, count) dst[i] = to_float(src[i]) * inv_scale;
}

void cuda_conv_backward_filter(Backend *b, const ConvGeom *g, const Tensor *x, const Tensor *dy, float *dw) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = check_in(g, x, "conv_backward_filter");
    ConvPlan *p = plan_get(ctx, g, x->n, x->h, x->w, dt);
    check_out(p, dy, "conv_backward_filter");
    if (!p->chosen[DIR_BWD_FILTER]) choose_bwd_filter(ctx, p);
    void *ws = cuda_buf_reserve(ctx->stream, &ctx->workspace, p->ws_bytes[DIR_BWD_FILTER]);
    /* parameter gradients are overwritten (beta 0) and come out divided by the loss scale */
    const float inv_scale = 1.0f / b->loss_scale, one = 1.0f, zero = 0.0f;
    use_math(p, p->math[DIR_BWD_FILTER]);
    if (dt == DT_F32) {
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx->cudnn, &inv_scale, p->x_desc, x->data, p->y_desc, dy->data,
                                                   p->conv_desc, p->bwd_filter_algo, ws, p->ws_bytes[DIR_BWD_FILTER],
                                                   &zero, p->w_desc, dw));
        return;
    }
    size_t count = filter_count(g);
    void *lp = cuda_buf_reserve(ctx->stream, &ctx->convert, count * dtype_size(dt));
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx->cudnn, &one, p->x_desc, x->data, p->y_desc, dy->data,
                                               p->conv_desc, p->bwd_filter_algo, ws, p->ws_bytes[DIR_BWD_FILTER],
                                               &zero, p->w_desc, lp));
    cuda_dispatch(dt, "conv_backward_filter", [&](auto tag) {
        using T = decltype(tag);
        widen_grad_kernel<T><<<cuda_grid(count), CUDA_BLOCK, 0, ctx->stream>>>((const T *)lp, dw, count, inv_scale);
    });
    KERNEL_CHECK();
}
