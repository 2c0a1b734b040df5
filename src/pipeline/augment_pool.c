/* pipeline/augment_pool.c: fastai's area pre-pooling (warp_prepool, augment.h), as its own step before the
 * one bilinear sample of warp_apply.c, so the CPU appliers and the GPU kernel sample it unchanged.
 *
 * Why: fastai's _grid_sample ("hack to get smoother downwards resampling"), before a bilinear
 * grid_sample that shrinks its input by 2d > 2 (d as fastai_warp computes it), first calls
 * F.interpolate(scale_factor=1/d, mode='area', recompute_scale_factor=True): adaptive average
 * pooling to floor(in / d) per side, so the bilinear taps that follow skip no pixels. Without it,
 * the Imagenette recipe's 460-px items sampled at 128 px alias (on random pixels, 28-35 of 255
 * mean difference from fastai's output). fastai_warp decides where it applies (Warp.pool_w/h);
 * this file makes the pooled image and the map into it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/augment.h"
#include "base/util.h"

/* The item as fastai holds it: src through w's item map (PIL's Resize: a uint8 image), or src
 * itself where the map is the identity over the whole image (no item resize). */
static Image item_image(const Warp *w, const Image *src, int *owned) {
    int iw = w->item_w, ih = w->item_h;
    const float *a = w->a;
    if (a[0] == 1 && a[1] == 0 && a[2] == 0 && a[3] == 0 && a[4] == 1 && a[5] == 0 && iw == src->w &&
        ih == src->h && w->clip[0] <= 0 && w->clip[1] <= 0 && w->clip[2] >= src->w && w->clip[3] >= src->h) {
        *owned = 0;
        return *src;
    }
    /* The item map alone: output pixel centres are item pixel centres (h the identity), at the
     * square side that holds the item, of which the top-left item_w x item_h is the item. */
    Warp it = *w;
    static const float identity[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    memcpy(it.h, identity, sizeof it.h);
    it.brightness = 0.5f, it.contrast = 1.0f;
    it.pool_w = it.pool_h = 0;
    int side = iw > ih ? iw : ih;
    uint8_t *sq = xmalloc((size_t)side * side * 3);
    warp_apply_u8(&it, src, side, sq);
    Image item = {iw, ih, sq};
    if (iw != side) /* rows of side pixels -> rows of iw pixels (ih = side here) */
        for (int y = 1; y < ih; y++) memmove(sq + (size_t)y * iw * 3, sq + (size_t)y * side * 3, (size_t)iw * 3);
    *owned = 1;
    return item;
}

/* One axis of the pooling grid: box [o, o + n) of an item side of L pixels, pooled to m (fastai's
 * F.interpolate(mode='area') of the box: window j is [o + floor(j n / m), o + ceil((j + 1) n / m))),
 * the windows numbered on past the box both ways while they still hold item pixels: j in
 * [lo, hi), each clipped to [0, L). */
typedef struct {
    int o, n, m, L, lo, hi;
} Grid;

static long floor_div(long a, long b) { return a / b - (a % b != 0 && a < 0); } /* b > 0 */
static int win_start(const Grid *g, int j) {
    long v = g->o + floor_div((long)j * g->n, g->m);
    return (int)(v < 0 ? 0 : v);
}
static int win_end(const Grid *g, int j) {
    long v = g->o - floor_div(-(long)(j + 1) * g->n, g->m);
    return (int)(v > g->L ? g->L : v);
}

static Grid grid_make(int o, int n, int m, int L) {
    Grid g = {o, n, m, L, 0, m};
    while (g.o - floor_div(-(long)g.lo * g.n, g.m) > 0) g.lo--; /* window lo - 1 ends inside the item */
    while (g.o + floor_div((long)g.hi * g.n, g.m) < L) g.hi++;  /* window hi starts inside it */
    return g;
}

/* The pooled image: pixel (x, y) the mean of window (gx.lo + x, gy.lo + y), exact sums of bytes,
 * rounded half up in integers ((2 sum + n) / 2n). Separable: a pooled row's window of item rows is
 * summed into column sums (vectorised), then each pooled pixel sums its columns. */
static Image area_pool(const Image *in, const Grid *gx, const Grid *gy) {
    int pw = gx->hi - gx->lo, ph = gy->hi - gy->lo;
    Image out = {pw, ph, xmalloc((size_t)pw * ph * 3)};
    int *x0 = xmalloc(sizeof(int) * 2 * (size_t)pw), *x1 = x0 + pw;
    for (int ox = 0; ox < pw; ox++) x0[ox] = win_start(gx, gx->lo + ox), x1[ox] = win_end(gx, gx->lo + ox);
    int c0 = x0[0], span = x1[pw - 1] - c0; /* windows are in order: the columns any of them reads */
    size_t col_bytes = sizeof(uint32_t) * 3 * (size_t)(span > 0 ? span : 1);
    uint32_t *col = xmalloc(col_bytes);
    for (int oy = 0; oy < ph; oy++) {
        int y0 = win_start(gy, gy->lo + oy), y1 = win_end(gy, gy->lo + oy);
        memset(col, 0, col_bytes);
        for (int y = y0; y < y1; y++) {
            const uint8_t *p = in->rgb + ((size_t)y * in->w + c0) * 3;
            for (int k = 0; k < 3 * span; k++) col[k] += p[k];
        }
        uint8_t *o = out.rgb + (size_t)oy * pw * 3;
        for (int ox = 0; ox < pw; ox++, o += 3) {
            uint32_t sum[3] = {0, 0, 0};
            for (int x = x0[ox]; x < x1[ox]; x++) {
                const uint32_t *q = col + (size_t)(x - c0) * 3;
                sum[0] += q[0], sum[1] += q[1], sum[2] += q[2];
            }
            uint32_t n = (uint32_t)(y1 - y0) * (uint32_t)(x1[ox] - x0[ox]);
            for (int c = 0; c < 3; c++) o[c] = n ? (uint8_t)((2 * sum[c] + n) / (2 * n)) : 0;
        }
    }
    free(col);
    free(x0);
    return out;
}

int warp_prepool(Warp *w, const Image *src, Image *pooled) {
    if (w->pool_w <= 0 || w->pool_h <= 0) return 0;
    const int *b = w->pool_box;
    int iw = w->item_w, ih = w->item_h;
    if (b[2] < 2 || b[3] < 2 || w->pool_w < 2 || w->pool_h < 2 || b[0] < 0 || b[1] < 0 || b[0] + b[2] > iw ||
        b[1] + b[3] > ih)
        die("warp_prepool: box %d,%d %dx%d of a %dx%d item cannot be pooled to %dx%d", b[0], b[1], b[2], b[3], iw, ih,
            w->pool_w, w->pool_h);
    Grid gx = grid_make(b[0], b[2], w->pool_w, iw), gy = grid_make(b[1], b[3], w->pool_h, ih);
    int owned;
    Image item = item_image(w, src, &owned);
    *pooled = area_pool(&item, &gx, &gy);
    if (owned) image_free(&item);
    /* grid_sample's align_corners=True grid on the pooled box: box pixel c (item pixel o + c) at
     * pooled index c (m - 1) / (n - 1), which is pixel (that - lo) of *pooled; in continuous
     * coordinates (centres at +0.5) the item map is s = (u - 0.5 - o) k + 0.5 - lo. */
    double kx = (double)(w->pool_w - 1) / (b[2] - 1), ky = (double)(w->pool_h - 1) / (b[3] - 1); /* box >= 2 */
    w->a[0] = (float)kx, w->a[1] = 0, w->a[2] = (float)(0.5 - gx.lo - (0.5 + b[0]) * kx);
    w->a[3] = 0, w->a[4] = (float)ky, w->a[5] = (float)(0.5 - gy.lo - (0.5 + b[1]) * ky);
    w->clip[0] = w->clip[1] = 0, w->clip[2] = pooled->w, w->clip[3] = pooled->h;
    w->aa[0] = w->aa[1] = 0;
    w->pool_w = w->pool_h = 0;
    return 1;
}
