/* cpu_conv.c: convolution on NHWC activations with [cout, k, k, cin] weights, as GEMMs.
 *
 * im2col in NHWC order makes each output pixel one row of k*k*cin values (cin contiguous, and for a
 * fixed kernel row the in-bounds part of the window is one contiguous run of x), which matches the
 * weight layout, so with W as a (cout, k*k*cin) matrix:
 *   forward          Y (rows, cout)      = col (rows, kkc) * W^T
 *   backward-data    dcol (rows, kkc)    = dY (rows, cout) * W, then col2im
 *   backward-filter  dW (cout, kkc)      = dY^T * col
 * where rows = n*oh*ow. A 1x1 stride-1 unpadded conv needs no im2col: x is already (n*h*w, cin).
 * The column buffer is the backend's scratch, filled a chunk of whole images at a time so it stays
 * under COL_BUDGET; whole images keep col2im a race-free gather.
 */
#include <string.h>

#include "cpu_backend.h"
#include "gemm.h"
#include "util.h"

#define COL_BUDGET ((size_t)64 << 20)

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
    int chunk = chunk_images(&s);
    size_t img_rows = (size_t)s.oh * s.ow;
    float *col = cpu_scratch(b, CPU_WS_COL, chunk * img_rows * s.kkc * sizeof(float));
    for (int n0 = 0; n0 < s.n; n0 += chunk) {
        int n1 = n0 + chunk < s.n ? n0 + chunk : s.n;
        im2col(&s, xd, n0, n1, col);
        int rows = (int)((n1 - n0) * img_rows);
        sgemm(1, 0, s.cout, s.kkc, rows, 1.0f, dyd + n0 * img_rows * s.cout, s.cout, col, s.kkc,
              n0 == 0 ? 0.0f : 1.0f, dw, s.kkc);
    }
}
