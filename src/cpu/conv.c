/* cpu/conv.c: convolution on NHWC activations with [cout, k, k, cin] weights, as GEMMs.
 *
 * im2col in NHWC order makes each output pixel one row of k*k*cin values (cin contiguous, and for a
 * fixed kernel row the in-bounds part of the window is one contiguous run of x), which matches the
 * weight layout, so with W as a (cout, k*k*cin) matrix:
 *   forward          Y (rows, cout)      = col (rows, kkc) * W^T
 *   backward-data    dcol (rows, kkc)    = dY (rows, cout) * W, then col2im
 *   backward-filter  dW (cout, kkc)      = dY^T * col
 * where rows = n*oh*ow. A 1x1 stride-1 unpadded conv needs no im2col: x is already (n*h*w, cin).
 *
 * Mostly the column matrix is never built (implicit GEMM): a row of it is K runs of K*cin floats of
 * the zero-padded input, one per kernel row, so the GEMM reads them through row pointers
 * (sgemm_rowa / sgemm_rowb). That saves the 9x-sized copy and its memory traffic. Backward-data at
 * stride 1 is the forward conv of dY (padded by K-1-pad) with the spatially flipped weights, cin
 * and cout swapped, so it needs no col2im either. Left on im2col: inputs with so few channels that
 * the K*cin runs are too short for the micro-kernel (the RGB stem), and strided backward-data.
 * The column and padded buffers are the backend's scratch, filled a chunk of whole images at a
 * time so they stay under budget; whole images keep col2im a race-free gather.
 */
#include <string.h>

#include "cpu/backend.h"
#include "cpu/gemm.h"
#include "base/util.h"

#define COL_BUDGET ((size_t)16 << 20)
#define PAD_BUDGET ((size_t)32 << 20)
/* Shortest K*cin run worth reading in place: each run is one k slice of the GEMM, and a short
 * slice spends more on loading and storing the C tile than on multiplying. */
#define MIN_RUN 64

typedef struct {
    int n, h, w, c;    /* input */
    int oh, ow, cout;  /* output */
    int k, stride, pad;
    int kkc;           /* row length of the column matrix */
} ConvShape;

static ConvShape conv_shape(const ConvGeom *g, int n, int h, int w, const char *op) {
    ConvShape s = {n, h, w, g->cin, 0, 0, g->cout, g->k, g->stride, g->pad, g->k * g->k * g->cin};
    s.oh = conv_out_size(h, g->k, g->stride, g->pad);
    s.ow = conv_out_size(w, g->k, g->stride, g->pad);
    if (s.oh < 1 || s.ow < 1)
        die("%s: input %dx%d too small for a %dx%d/%d pad %d conv", op, h, w, g->k, g->k, g->stride, g->pad);
    return s;
}

static int is_pointwise(const ConvShape *s) { return s->k == 1 && s->stride == 1 && s->pad == 0; }

/* Images per chunk so the column buffer stays under budget (at least one). */
static int chunk_images(const ConvShape *s) {
    size_t per_image = (size_t)s->oh * s->ow * s->kkc * sizeof(float);
    size_t c = COL_BUDGET / per_image;
    if (c < 1) c = 1;
    return c < (size_t)s->n ? (int)c : s->n;
}

/* col (rows of images [n0, n1), kkc) from x (n, h, w, c); zero where the window is in the padding. */
static void im2col(const ConvShape *s, const float *x, int n0, int n1, float *col) {
    const int C = s->c, K = s->k;
    const size_t rows = (size_t)(n1 - n0) * s->oh * s->ow;
#pragma omp parallel for schedule(static) if (rows * s->kkc >= CPU_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        int ox = (int)(r % s->ow);
        size_t t = r / s->ow;
        int oy = (int)(t % s->oh);
        int n = n0 + (int)(t / s->oh);
        float *d = col + r * s->kkc;
        int ix0 = ox * s->stride - s->pad;
        int lo = ix0 < 0 ? -ix0 : 0;                  /* first in-bounds kernel column */
        int hi = s->w - ix0 < K ? s->w - ix0 : K;     /* one past the last */
        for (int kr = 0; kr < K; kr++) {
            float *dr = d + (size_t)kr * K * C;
            int iy = oy * s->stride - s->pad + kr;
            if (iy < 0 || iy >= s->h || hi <= lo) {
                memset(dr, 0, (size_t)K * C * sizeof(float));
                continue;
            }
            if (lo > 0) memset(dr, 0, (size_t)lo * C * sizeof(float));
            memcpy(dr + (size_t)lo * C, x + (((size_t)n * s->h + iy) * s->w + ix0 + lo) * C,
                   (size_t)(hi - lo) * C * sizeof(float));
            if (hi < K) memset(dr + (size_t)hi * C, 0, (size_t)(K - hi) * C * sizeof(float));
        }
    }
}

/* dx (images [n0, n1)) = (accumulate ? dx : 0) + the sum of every dcol entry that im2col would have
 * read from that pixel: a gather over the windows covering each input pixel, so no two threads
 * write the same element. */
static void col2im(const ConvShape *s, const float *dcol, int n0, int n1, float *dx, int accumulate) {
    const int C = s->c, K = s->k, S = s->stride;
    const size_t pixels = (size_t)(n1 - n0) * s->h * s->w;
#pragma omp parallel for schedule(static) if (pixels * C * K * K >= CPU_PAR_MIN)
    for (size_t q = 0; q < pixels; q++) {
        int ix = (int)(q % s->w);
        size_t t = q / s->w;
        int iy = (int)(t % s->h);
        int nl = (int)(t / s->h);
        float *d = dx + ((size_t)n0 * s->h * s->w + q) * C;
        if (!accumulate) memset(d, 0, (size_t)C * sizeof(float));
        for (int kr = 0; kr < K; kr++) {
            int ty = iy + s->pad - kr;
            if (ty < 0 || ty % S) continue;
            int oy = ty / S;
            if (oy >= s->oh) continue;
            for (int ks = 0; ks < K; ks++) {
                int tx = ix + s->pad - ks;
                if (tx < 0 || tx % S) continue;
                int ox = tx / S;
                if (ox >= s->ow) continue;
                const float *src = dcol + (((size_t)nl * s->oh + oy) * s->ow + ox) * s->kkc + (size_t)(kr * K + ks) * C;
                for (int c = 0; c < C; c++) d[c] += src[c];
            }
        }
    }
}

/* dst (images [n0, n1) of x, h+2*pad, w+2*pad, c): x with a zero border. */
static void pad_images(const float *x, int n0, int n1, int h, int w, int c, int pad, float *dst) {
    const int hp = h + 2 * pad, wp = w + 2 * pad;
    const size_t prow = (size_t)wp * c, rows = (size_t)(n1 - n0) * hp;
#pragma omp parallel for schedule(static) if (rows * prow >= CPU_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        int y = (int)(r % hp) - pad;
        size_t n = n0 + r / hp;
        float *d = dst + r * prow;
        if (y < 0 || y >= h) {
            memset(d, 0, prow * sizeof(float));
            continue;
        }
        memset(d, 0, (size_t)pad * c * sizeof(float));
        memcpy(d + (size_t)pad * c, x + ((n * h + y) * w) * c, (size_t)w * c * sizeof(float));
        memset(d + (size_t)(pad + w) * c, 0, (size_t)pad * c * sizeof(float));
    }
}

/* rows[r] = the top-left corner in xp (nimg, hp, wp, c) of output pixel r's window. */
static void window_rows(const float *xp, int nimg, int hp, int wp, int c, int oh, int ow, int stride,
                        const float **rows) {
    const size_t total = (size_t)nimg * oh * ow;
#pragma omp parallel for schedule(static) if (total >= CPU_PAR_MIN)
    for (size_t r = 0; r < total; r++) {
        int ox = (int)(r % ow);
        size_t t = r / ow;
        int oy = (int)(t % oh);
        size_t n = t / oh;
        rows[r] = xp + ((n * hp + (size_t)oy * stride) * wp + (size_t)ox * stride) * c;
    }
}

/* Images per chunk so a padded copy of (h, w, c) images stays under budget, or all of them when
 * there is no padding (the windows are read from x itself). */
static int pad_chunk(int n, int h, int w, int c, int pad) {
    if (pad == 0) return n;
    size_t per = (size_t)(h + 2 * pad) * (w + 2 * pad) * c * sizeof(float);
    size_t k = PAD_BUDGET / per;
    if (k < 1) k = 1;
    return k < (size_t)n ? (int)k : n;
}

/* Y (images of x, oh*ow, cout) = conv of x (n, h, w, c) read in place, with weights as a GEMM
 * operand: op(B) (K*K*c, cout). beta 0 overwrites, 1 adds. Used for forward and backward-data. */
static void conv_implicit(Backend *b, const float *x, int n, int h, int w, int c, int k, int stride, int pad,
                          int oh, int ow, int cout, int transb, const float *wb, int ldb, float beta, float *y) {
    const int hp = h + 2 * pad, wp = w + 2 * pad, chunk = pad_chunk(n, h, w, c, pad);
    const size_t img_rows = (size_t)oh * ow;
    float *xp = pad ? cpu_scratch(b, CPU_WS_COL, (size_t)chunk * hp * wp * c * sizeof(float)) : NULL;
    const float **rows = cpu_scratch(b, CPU_WS_ROWS, chunk * img_rows * sizeof(float *));
    for (int n0 = 0; n0 < n; n0 += chunk) {
        int n1 = n0 + chunk < n ? n0 + chunk : n;
        const float *src = x + (size_t)n0 * h * w * c;
        if (pad) pad_images(x, n0, n1, h, w, c, pad, xp), src = xp;
        window_rows(src, n1 - n0, hp, wp, c, oh, ow, stride, rows);
        RowMat a = {rows, k * c, (long)wp * c};
        sgemm_rowa((int)((n1 - n0) * img_rows), cout, k * k * c, &a, transb, wb, ldb, beta,
                   y + n0 * img_rows * cout, cout);
    }
}

void cpu_conv_forward(Backend *b, const ConvGeom *g, const Tensor *x, const float *w, Tensor *y) {
    if (x->c != g->cin) die("conv_forward: input has %d channels, conv expects %d", x->c, g->cin);
    ConvShape s = conv_shape(g, x->n, x->h, x->w, "conv_forward");
    cpu_set_shape(y, s.n, s.cout, s.oh, s.ow);
    const float *xd = x->data; // (n*h*w, cin)
    float *yd = y->data;       // (n*oh*ow, cout)
    if (is_pointwise(&s)) {
        sgemm(0, 1, s.n * s.h * s.w, s.cout, s.c, 1.0f, xd, s.c, w, s.c, 0.0f, yd, s.cout);
        return;
    }
    if (s.k * s.c >= MIN_RUN) {
        conv_implicit(b, xd, s.n, s.h, s.w, s.c, s.k, s.stride, s.pad, s.oh, s.ow, s.cout, 1, w, s.kkc, 0.0f, yd);
        return;
    }
    int chunk = chunk_images(&s);
    size_t img_rows = (size_t)s.oh * s.ow;
    float *col = cpu_scratch(b, CPU_WS_COL, chunk * img_rows * s.kkc * sizeof(float)); // (chunk*oh*ow, kkc)
    for (int n0 = 0; n0 < s.n; n0 += chunk) {
        int n1 = n0 + chunk < s.n ? n0 + chunk : s.n;
        im2col(&s, xd, n0, n1, col);
        int rows = (int)((n1 - n0) * img_rows);
        sgemm(0, 1, rows, s.cout, s.kkc, 1.0f, col, s.kkc, w, s.kkc, 0.0f, yd + n0 * img_rows * s.cout, s.cout);
    }
}

void cpu_conv_backward_data(Backend *b, const ConvGeom *g, const Tensor *dy, const float *w, Tensor *dx,
                            int accumulate) {
    if (dx->c != g->cin || dy->c != g->cout || dx->n != dy->n)
        die("conv_backward_data: dx (%d,%d) / dy (%d,%d) do not match conv %d->%d", dx->n, dx->c, dy->n, dy->c,
            g->cin, g->cout);
    ConvShape s = conv_shape(g, dx->n, dx->h, dx->w, "conv_backward_data");
    if (s.oh != dy->h || s.ow != dy->w)
        die("conv_backward_data: dx %dx%d gives a %dx%d output, dy is %dx%d (set dx to the input's shape)", dx->h,
            dx->w, s.oh, s.ow, dy->h, dy->w);
    const float *dyd = dy->data; // (n*oh*ow, cout)
    float *dxd = dx->data;       // (n*h*w, cin)
    if (is_pointwise(&s)) {
        sgemm(0, 0, s.n * s.h * s.w, s.c, s.cout, 1.0f, dyd, s.cout, w, s.c, accumulate ? 1.0f : 0.0f, dxd, s.c);
        return;
    }
    if (s.stride == 1 && s.pad <= s.k - 1 && s.k * s.cout >= MIN_RUN) {
        /* dx = conv(dY padded by K-1-pad, W') with W' as a (K*K*cout, cin) matrix:
         * W'[kr][ks][k][c] = W[k][K-1-kr][K-1-ks][c] */
        const int K = s.k;
        float *wf = cpu_scratch(b, CPU_WS_WFLIP, (size_t)s.cout * s.kkc * sizeof(float));
        for (int kr = 0; kr < K; kr++)
            for (int ks = 0; ks < K; ks++)
                for (int k = 0; k < s.cout; k++)
                    memcpy(wf + (((size_t)kr * K + ks) * s.cout + k) * s.c,
                           w + (((size_t)k * K + (K - 1 - kr)) * K + (K - 1 - ks)) * s.c, (size_t)s.c * sizeof(float));
        conv_implicit(b, dyd, s.n, s.oh, s.ow, s.cout, K, 1, K - 1 - s.pad, s.h, s.w, s.c, 0, wf, s.c,
                      accumulate ? 1.0f : 0.0f, dxd);
        return;
    }
    int chunk = chunk_images(&s);
    size_t img_rows = (size_t)s.oh * s.ow;
    float *dcol = cpu_scratch(b, CPU_WS_COL, chunk * img_rows * s.kkc * sizeof(float)); // (chunk*oh*ow, kkc)
    for (int n0 = 0; n0 < s.n; n0 += chunk) {
        int n1 = n0 + chunk < s.n ? n0 + chunk : s.n;
        int rows = (int)((n1 - n0) * img_rows);
        sgemm(0, 0, rows, s.kkc, s.cout, 1.0f, dyd + n0 * img_rows * s.cout, s.cout, w, s.kkc, 0.0f, dcol, s.kkc);
        col2im(&s, dcol, n0, n1, dxd, accumulate);
    }
}

void cpu_conv_backward_filter(Backend *b, const ConvGeom *g, const Tensor *x, const Tensor *dy, float *dw) {
    if (x->c != g->cin || dy->c != g->cout || x->n != dy->n)
        die("conv_backward_filter: x (%d,%d) / dy (%d,%d) do not match conv %d->%d", x->n, x->c, dy->n, dy->c,
            g->cin, g->cout);
    ConvShape s = conv_shape(g, x->n, x->h, x->w, "conv_backward_filter");
    if (s.oh != dy->h || s.ow != dy->w)
        die("conv_backward_filter: x %dx%d gives a %dx%d output, dy is %dx%d", x->h, x->w, s.oh, s.ow, dy->h, dy->w);
    const float *xd = x->data, *dyd = dy->data; // (n*h*w, cin), (n*oh*ow, cout); dw (cout, kkc)
    if (is_pointwise(&s)) {
        sgemm(1, 0, s.cout, s.c, s.n * s.h * s.w, 1.0f, dyd, s.cout, xd, s.c, 0.0f, dw, s.c);
        return;
    }
    /* dW = dY^T * col with col's rows read in place from the padded input */
    const int hp = s.h + 2 * s.pad, wp = s.w + 2 * s.pad, chunk = pad_chunk(s.n, s.h, s.w, s.c, s.pad);
    const size_t img_rows = (size_t)s.oh * s.ow;
    float *xp = s.pad ? cpu_scratch(b, CPU_WS_COL, (size_t)chunk * hp * wp * s.c * sizeof(float)) : NULL;
    const float **rows = cpu_scratch(b, CPU_WS_ROWS, chunk * img_rows * sizeof(float *));
    for (int n0 = 0; n0 < s.n; n0 += chunk) {
        int n1 = n0 + chunk < s.n ? n0 + chunk : s.n;
        const float *src = xd + (size_t)n0 * s.h * s.w * s.c;
        if (s.pad) pad_images(xd, n0, n1, s.h, s.w, s.c, s.pad, xp), src = xp;
        window_rows(src, n1 - n0, hp, wp, s.c, s.oh, s.ow, s.stride, rows);
        RowMat bm = {rows, s.k * s.c, (long)wp * s.c};
        sgemm_rowb(1, s.cout, s.kkc, (int)((n1 - n0) * img_rows), dyd + n0 * img_rows * s.cout, s.cout, &bm,
                   n0 == 0 ? 0.0f : 1.0f, dw, s.kkc);
    }
}
