/* conv.cu: convolution forward, backward-data and backward-filter through cuDNN, NHWC fp32, filters
 * K,R,S,C. Choosing an algorithm costs far more than running one, and progressive resizing changes
 * shapes between steps, so each (geometry, n, h, w) gets a plan, built once: descriptors, and per
 * direction the chosen algorithm and its workspace size. All plans share one grow-only workspace. */
#include "cuda_backend.h"

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
    /* derived */
    int oh, ow;
    cudnnTensorDescriptor_t x_desc, y_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    int chosen[NDIR];
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

static int plan_matches(const ConvPlan *p, const ConvGeom *g, int n, int h, int w) {
    return p->g.cin == g->cin && p->g.cout == g->cout && p->g.k == g->k && p->g.stride == g->stride &&
           p->g.pad == g->pad && p->n == n && p->h == h && p->w == w;
}

static ConvPlan *plan_new(const ConvGeom *g, int n, int h, int w) {
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
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y_desc));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w_desc));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x_desc, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, n, g->cin, h, w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y_desc, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, n, g->cout, oh, ow));
    /* NHWC filter format = memory order K,R,S,C, the layout of our weights */
    CUDNN_CHECK(
        cudnnSetFilter4dDescriptor(p->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, g->cout, g->cin, g->k, g->k));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv_desc, g->pad, g->pad, g->stride, g->stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    /* The default math type lets cuDNN use TF32 tensor cores for fp32 on Ampere and later (10-bit
     * mantissa); fp32 here means fp32, so restrict it to FMA kernels. */
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, CUDNN_FMA_MATH));
    int cn, cc, ch, cw;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->conv_desc, p->x_desc, p->w_desc, &cn, &cc, &ch, &cw));
    if (cn != n || cc != g->cout || ch != oh || cw != ow)
        die("cuda conv: cuDNN's output shape %dx%dx%dx%d differs from conv_out_size's %dx%dx%dx%d", cn, cc, ch, cw, n,
            g->cout, oh, ow);
    return p;
}

static ConvPlan *plan_get(CudaCtx *ctx, const ConvGeom *g, int n, int h, int w) {
    struct ConvCache *c = ctx->conv;
    if (c->last < c->nplans && plan_matches(c->plans[c->last], g, n, h, w)) return c->plans[c->last];
    for (int i = 0; i < c->nplans; i++) {
        if (plan_matches(c->plans[i], g, n, h, w)) {
            c->last = i;
            return c->plans[i];
        }
    }
    if (c->nplans == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->plans = (ConvPlan **)xrealloc(c->plans, (size_t)c->cap * sizeof *c->plans);
    }
    c->plans[c->nplans] = plan_new(g, n, h, w);
    c->last = c->nplans;
    return c->plans[c->nplans++];
}

static int is_tensor_op(cudnnMathType_t m) {
    return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

/* Results come best first. Take the first that ran, is not a tensor-core (TF32) kernel and fits
 * the workspace limit; failing that, the first that ran and fits (with a warning). */
template <typename Perf>
static int pick_algo(struct ConvCache *c, const Perf *res, int got, int dir, const ConvPlan *p) {
    for (int i = 0; i < got; i++)
        if (res[i].status == CUDNN_STATUS_SUCCESS && !is_tensor_op(res[i].mathType) && res[i].memory <= WORKSPACE_LIMIT)
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
    die("cuda conv: cuDNN found no usable %s algorithm for cin=%d cout=%d k=%d stride=%d pad=%d input %dx%dx%d "
        "(%d candidates)",
        dir_name[dir], p->g.cin, p->g.cout, p->g.k, p->g.stride, p->g.pad, p->n, p->h, p->w, got);
}

static void choose_fwd(CudaCtx *ctx, ConvPlan *p) {
    cudnnConvolutionFwdAlgoPerf_t res[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    if (ctx->conv->use_find)
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(ctx->cudnn, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                         CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, res));
    else
        CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(ctx->cudnn, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, res));
    p->fwd_algo = res[pick_algo(ctx->conv, res, got, DIR_FWD, p)].algo;
    CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(ctx->cudnn, p->x_desc, p->w_desc, p->conv_desc, p->y_desc,
                                                        p->fwd_algo, &p->ws_bytes[DIR_FWD]));
    p->chosen[DIR_FWD] = 1;
}

static void choose_bwd_data(CudaCtx *ctx, ConvPlan *p) {
    cudnnConvolutionBwdDataAlgoPerf_t res[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int got = 0;
    if (ctx->conv->use_find)
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(ctx->cudnn, p->w_desc, p->y_desc, p->conv_desc,
                                                              p->x_desc, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got,
                                                              res));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx->cudnn, p->w_desc, p->y_desc, p->conv_desc,
                                                                p->x_desc, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                                &got, res));
    p->bwd_data_algo = res[pick_algo(ctx->conv, res, got, DIR_BWD_DATA, p)].algo;
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(ctx->cudnn, p->w_desc, p->y_desc, p->conv_desc,
                                                             p->x_desc, p->bwd_data_algo, &p->ws_bytes[DIR_BWD_DATA]));
    p->chosen[DIR_BWD_DATA] = 1;
}

static void choose_bwd_filter(CudaCtx *ctx, ConvPlan *p) {
    cudnnConvolutionBwdFilterAlgoPerf_t res[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int got = 0;
    if (ctx->conv->use_find)
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(ctx->cudnn, p->x_desc, p->y_desc, p->conv_desc,
                                                                p->w_desc, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                                &got, res));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx->cudnn, p->x_desc, p->y_desc, p->conv_desc,
                                                                  p->w_desc, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                                  &got, res));
    p->bwd_filter_algo = res[pick_algo(ctx->conv, res, got, DIR_BWD_FILTER, p)].algo;
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(ctx->cudnn, p->x_desc, p->y_desc, p->conv_desc,
                                                               p->w_desc, p->bwd_filter_algo,
                                                               &p->ws_bytes[DIR_BWD_FILTER]));
    p->chosen[DIR_BWD_FILTER] = 1;
}

/* dy must be the conv's output for an input of the plan's size. */
static void check_out(const ConvPlan *p, const Tensor *dy, const char *op) {
    cuda_require_f32(dy, op);
    if (dy->n != p->n || dy->c != p->g.cout || dy->h != p->oh || dy->w != p->ow)
        die("cuda %s: dy is %dx%dx%dx%d, expected %dx%dx%dx%d for input %dx%dx%dx%d", op, dy->n, dy->c, dy->h, dy->w,
            p->n, p->g.cout, p->oh, p->ow, p->n, p->g.cin, p->h, p->w);
}

static void check_in(const ConvGeom *g, const Tensor *x, const char *op) {
    cuda_require_f32(x, op);
    if (x->c != g->cin) die("cuda %s: input has %d channels, the conv expects %d", op, x->c, g->cin);
}

void cuda_conv_forward(Backend *b, const ConvGeom *g, const Tensor *x, const float *w, Tensor *y) {
    CudaCtx *ctx = cuda_ctx(b);
    check_in(g, x, "conv_forward");
    ConvPlan *p = plan_get(ctx, g, x->n, x->h, x->w);
    if (!p->chosen[DIR_FWD]) choose_fwd(ctx, p);
    cuda_set_shape(y, x->n, g->cout, p->oh, p->ow);
    void *ws = cuda_buf_reserve(ctx->stream, &ctx->workspace, p->ws_bytes[DIR_FWD]);
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionForward(ctx->cudnn, &one, p->x_desc, x->data, p->w_desc, w, p->conv_desc,
                                        p->fwd_algo, ws, p->ws_bytes[DIR_FWD], &zero, p->y_desc, y->data));
}

/* dx's shape (set by the caller) says the input size: stride > 1 makes it ambiguous from dy. */
void cuda_conv_backward_data(Backend *b, const ConvGeom *g, const Tensor *dy, const float *w, Tensor *dx,
                             int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    check_in(g, dx, "conv_backward_data");
    ConvPlan *p = plan_get(ctx, g, dx->n, dx->h, dx->w);
    check_out(p, dy, "conv_backward_data");
    if (!p->chosen[DIR_BWD_DATA]) choose_bwd_data(ctx, p);
    void *ws = cuda_buf_reserve(ctx->stream, &ctx->workspace, p->ws_bytes[DIR_BWD_DATA]);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f; /* beta 1: dx += result */
    CUDNN_CHECK(cudnnConvolutionBackwardData(ctx->cudnn, &one, p->w_desc, w, p->y_desc, dy->data, p->conv_desc,
                                             p->bwd_data_algo, ws, p->ws_bytes[DIR_BWD_DATA], &beta, p->x_desc,
                                             dx->data));
}

void cuda_conv_backward_filter(Backend *b, const ConvGeom *g, const Tensor *x, const Tensor *dy, float *dw) {
    CudaCtx *ctx = cuda_ctx(b);
    check_in(g, x, "conv_backward_filter");
    ConvPlan *p = plan_get(ctx, g, x->n, x->h, x->w);
    check_out(p, dy, "conv_backward_filter");
    if (!p->chosen[DIR_BWD_FILTER]) choose_bwd_filter(ctx, p);
    void *ws = cuda_buf_reserve(ctx->stream, &ctx->workspace, p->ws_bytes[DIR_BWD_FILTER]);
    const float one = 1.0f, zero = 0.0f; /* parameter gradients are overwritten */
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx->cudnn, &one, p->x_desc, x->data, p->y_desc, dy->data,
                                               p->conv_desc, p->bwd_filter_algo, ws, p->ws_bytes[DIR_BWD_FILTER],
                                               &zero, p->w_desc, dw));
}
