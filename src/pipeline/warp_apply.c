/* pipeline/warp_apply.c: applying a drawn Warp (augment.h) to a decoded image: one bilinear sample of
 * the source per output pixel, antialiased as PIL's resize where the item resize shrinks, reflection
 * or zero padding, fastai's lighting and the normalisation. The GPU kernel (cuda/augment.cu) mirrors
 * this file's arithmetic from the same WarpPlan. fastai's area pre-pooling comes first where a
 * Warp asks for it (augment_pool.c). */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/augment.h"
#include "base/util.h"

/* ------------------------------------------------------------------------- applying */

/* A row is sampled in blocks of BLK pixels, in phases written so the compiler vectorises all
 * but the gather: item coordinates (one division per pixel only for a perspective warp), the
 * rare reflection or zero fill, the tap offsets and weights, the scalar loads of the four taps
 * (4 bytes each: R, G, B and one spare), and the interpolation into three channel arrays. */
#define BLK WARP_BLK

typedef struct {
    WarpPlan p;                       /* everything but the pixels (shared with the GPU kernel) */
    const uint8_t *px;
    size_t total;                     /* bytes in the image */
    int32_t stride;
} Sampler;

typedef struct {
    float u[BLK], v[BLK], fx[BLK], fy[BLK];
    int32_t off[BLK], dx[BLK], dy[BLK];
    uint32_t q[4][BLK];
    uint8_t zero[BLK];
    float val[3][BLK];                /* the block's samples, 0..255 */
} Block;

void warp_plan(const Warp *w, int src_w, int src_h, WarpPlan *s) {
    if (w->pool_w > 0 || w->pool_h > 0) die("warp_plan: a Warp with pooling left (%dx%d): warp_prepool first", w->pool_w, w->pool_h);
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 6; i++) s->a[i] = s->wa[i] = w->a[i];
    s->a[2] -= 0.5f;
    s->a[5] -= 0.5f;
    /* Keep the clip box inside the image whatever the Warp says: the taps never read outside. */
    int x0 = w->clip[0], y0 = w->clip[1], x1 = w->clip[2], y1 = w->clip[3];
    x0 = x0 < 0 ? 0 : (x0 > src_w - 1 ? src_w - 1 : x0);
    y0 = y0 < 0 ? 0 : (y0 > src_h - 1 ? src_h - 1 : y0);
    x1 = x1 > src_w ? src_w : (x1 <= x0 ? x0 + 1 : x1);
    y1 = y1 > src_h ? src_h : (y1 <= y0 ? y0 + 1 : y1);
    s->box[0] = x0, s->box[1] = y0, s->box[2] = x1, s->box[3] = y1;
    s->sx_lo = (float)x0, s->sx_hi = (float)(x1 - 1), s->x_last = (float)(x1 - 1);
    s->sy_lo = (float)y0, s->sy_hi = (float)(y1 - 1), s->y_last = (float)(y1 - 1);
    s->pad = w->pad;
    if (w->pad == WARP_PAD_ZEROS) {
        s->u_lo = 0, s->u_hi = (float)w->item_w, s->v_lo = 0, s->v_hi = (float)w->item_h;
    } else {
        s->u_lo = 0.5f, s->u_hi = w->item_w - 0.5f, s->v_lo = 0.5f, s->v_hi = w->item_h - 0.5f;
    }
    memcpy(s->h, w->h, sizeof s->h);
    s->affine = w->h[6] == 0 && w->h[7] == 0;
    if (s->affine && w->h[8] != 1) { /* an affine map scaled by hand: normalise once */
        float r = 1.0f / w->h[8];
        for (int i = 0; i < 9; i++) s->h[i] *= r;
    }
    if (w->aa[0] > 1.0f || w->aa[1] > 1.0f) {
        s->f[0] = w->aa[0] > 1.0f ? w->aa[0] : 1.0;
        s->f[1] = w->aa[1] > 1.0f ? w->aa[1] : 1.0;
        int sep = s->affine && s->h[1] == 0 && s->h[3] == 0 && w->a[1] == 0 && w->a[3] == 0;
        s->aa = sep ? WARP_AA_SEPARABLE : WARP_AA_GENERAL;
    }
    s->light = w->brightness != 0.5f || w->contrast != 1.0f;
}

static void sampler_init(Sampler *s, const Warp *w, const Image *src) {
    warp_plan(w, src->w, src->h, &s->p);
    s->px = src->rgb;
    s->total = (size_t)src->w * src->h * 3;
    s->stride = src->w * 3;
}

/* grid_sample's reflect_coordinates (about lo and hi), then its clip; NaN goes to lo. */
static float reflect_coord(float u, float lo, float hi) {
    float span = hi - lo;
    if (!(span > 0)) return lo;
    float d = fabsf(u - lo);
    float flips = floorf(d / span), extra = fmodf(d, span);
    float r = fmodf(flips, 2.0f) == 0.0f ? lo + extra : hi - extra;
    return r > lo ? (r < hi ? r : hi) : lo;
}

static inline uint32_t load4(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Item coordinates of pixels x0 .. x0+n-1 of output row y into b->u, b->v, reflected into the
 * item or (zero padding) flagged in b->zero; returns whether any pixel fell outside the item. */
static inline int block_coords(const Sampler *s, int y, int x0, int n, Block *b) {
    const float *h = s->p.h;
    double yc = y + 0.5, xc = x0 + 0.5;
    /* the block's first pixel in double, then increments in float */
    float u0 = (float)((double)h[0] * xc + (double)h[1] * yc + h[2]);
    float v0 = (float)((double)h[3] * xc + (double)h[4] * yc + h[5]);
    float du = h[0], dv = h[3];
    if (s->p.affine) {
        for (int i = 0; i < n; i++) {
            b->u[i] = u0 + (float)i * du;
            b->v[i] = v0 + (float)i * dv;
        }
    } else {
        float w0 = (float)((double)h[6] * xc + (double)h[7] * yc + h[8]), dw = h[6];
        for (int i = 0; i < n; i++) {
            float r = 1.0f / (w0 + (float)i * dw);
            b->u[i] = (u0 + (float)i * du) * r;
            b->v[i] = (v0 + (float)i * dv) * r;
        }
    }
    /* Outside the item: rare, so detected in bulk and fixed one by one. A NaN (a degenerate
     * homography) is not caught here; the tap clamps below send it to the clip box's corner. */
    int out = 0;
    for (int i = 0; i < n; i++)
        out |= (b->u[i] < s->p.u_lo) | (b->u[i] > s->p.u_hi) | (b->v[i] < s->p.v_lo) | (b->v[i] > s->p.v_hi);
    if (out) {
        for (int i = 0; i < n; i++) {
            float u = b->u[i], v = b->v[i];
            b->zero[i] = 0;
            if (!(u < s->p.u_lo || u > s->p.u_hi || v < s->p.v_lo || v > s->p.v_hi)) continue;
            if (s->p.pad == WARP_PAD_ZEROS) {
                b->zero[i] = 1;
            } else {
                b->u[i] = reflect_coord(u, s->p.u_lo, s->p.u_hi);
                b->v[i] = reflect_coord(v, s->p.v_lo, s->p.v_hi);
            }
        }
    }
    return out;
}

/* Pixels x0 .. x0+n-1 of output row y into b->val: plain bilinear. */
static void sample_block(const Sampler *s, int y, int x0, int n, Block *b) {
    int out = block_coords(s, y, x0, n, b);
    /* Tap offsets and weights: clamped so that no coordinate, NaN included, leaves the box. */
    for (int i = 0; i < n; i++) {
        float sx = s->p.a[0] * b->u[i] + s->p.a[1] * b->v[i] + s->p.a[2];
        float sy = s->p.a[3] * b->u[i] + s->p.a[4] * b->v[i] + s->p.a[5];
        sx = sx > s->p.sx_lo ? sx : s->p.sx_lo;
        sx = sx < s->p.sx_hi ? sx : s->p.sx_hi;
        sy = sy > s->p.sy_lo ? sy : s->p.sy_lo;
        sy = sy < s->p.sy_hi ? sy : s->p.sy_hi;
        float fx0 = truncf(sx), fy0 = truncf(sy); /* >= 0: floor */
        b->fx[i] = sx - fx0;
        b->fy[i] = sy - fy0;
        int32_t ix = (int32_t)fx0, iy = (int32_t)fy0;
        b->off[i] = iy * s->stride + ix * 3;
        b->dx[i] = fx0 < s->p.x_last ? 3 : 0;
        b->dy[i] = fy0 < s->p.y_last ? s->stride : 0;
    }
    /* The taps: four 4-byte loads; only a tap ending at the image's last byte reads bytewise. */
    const uint8_t *px = s->px;
    for (int i = 0; i < n; i++) {
        size_t o = (size_t)b->off[i], dx = (size_t)b->dx[i], dy = (size_t)b->dy[i];
        if (o + dx + dy + 4 <= s->total) {
            b->q[0][i] = load4(px + o);
            b->q[1][i] = load4(px + o + dx);
            b->q[2][i] = load4(px + o + dy);
            b->q[3][i] = load4(px + o + dy + dx);
        } else {
            const size_t at[4] = {o, o + dx, o + dy, o + dy + dx};
            for (int k = 0; k < 4; k++)
                b->q[k][i] = px[at[k]] | (uint32_t)px[at[k] + 1] << 8 | (uint32_t)px[at[k] + 2] << 16;
        }
    }
    for (int c = 0; c < 3; c++) {
        int sh = 8 * c;
        for (int i = 0; i < n; i++) {
            float p00 = (float)((b->q[0][i] >> sh) & 255), p01 = (float)((b->q[1][i] >> sh) & 255);
            float p10 = (float)((b->q[2][i] >> sh) & 255), p11 = (float)((b->q[3][i] >> sh) & 255);
            float t = p00 + b->fx[i] * (p01 - p00), d = p10 + b->fx[i] * (p11 - p10);
            b->val[c][i] = t + b->fy[i] * (d - t);
        }
    }
    if (out && s->p.pad == WARP_PAD_ZEROS)
        for (int i = 0; i < n; i++)
            if (b->zero[i]) b->val[0][i] = b->val[1][i] = b->val[2][i] = 0;
}

/* ------------------------------------------------------------------------- antialiasing */

/* Why: PIL's resize (torchvision's transforms on PIL images, fastai's item Resize) antialiases:
 * shrinking by f = source pixels per output pixel, it widens its tent filter from +-1 to +-f
 * source pixels, so every source pixel contributes. Plain bilinear reads only the 2x2 pixels
 * around each sample: RandomResizedCrop at 64 px from 224 px images shrinks 1.8x to 3.5x, and
 * the output aliased (5.4/255 mean difference from PIL's). Where Warp.aa says the item resize
 * shrinks along an axis, the taps are PIL's (ImagingResample): along that axis, the source
 * pixels i in [floor(c - f + 0.5), floor(c + f + 0.5)) of the clip box around the sample point
 * c, weighted tent((i + 0.5 - c) / f) and normalised over the pixels present (the clamp at the
 * box's borders). f = 1 on the other axis: that is bilinear. torchvision's warps are
 * axis-aligned and go through two separable passes (a vertical one per output row into a row
 * buffer, then a horizontal one); fastai's, rotated or warped after an item resize that
 * shrinks, evaluate the same separable filter at each output pixel's point in the source. */

/* The taps along one axis at source coordinate c (pixel i covering [i, i+1)), filter scale
 * f >= 1, box [lo, hi): writes the weights to w and the first tap to *first, returns the count
 * (at least 1: c is clamped into the box, NaN to lo, and the nearest pixel weighs >= 1/2). */
static int tent_taps(double c, double f, int lo, int hi, int *first, float *w) {
    c = c > lo ? c : lo;
    c = c < hi ? c : hi;
    int a = (int)floor(c - f + 0.5), b = (int)floor(c + f + 0.5);
    a = a > lo ? a : lo;
    b = b < hi ? b : hi;
    double sum = 0, inv = 1.0 / f;
    for (int i = a; i < b; i++) {
        double t = fabs((i + 0.5 - c) * inv);
        sum += t < 1 ? 1 - t : 0;
    }
    for (int i = a; i < b; i++) {
        double t = fabs((i + 0.5 - c) * inv);
        w[i - a] = (float)((t < 1 ? 1 - t : 0) / sum);
    }
    *first = a;
    return b - a;
}

static int taps_max(double f) { return (int)ceil(2 * f) + 2; }

typedef struct {
    double f[2];            /* filter scale along source x and y, >= 1 */
    int kx, ky;             /* weights stored per column / row (per pixel: general path) */
    int sep;                /* axis-aligned map: the separable passes */
    /* separable: per output column (x) and row (y) */
    int32_t *x0, *nx, *y0, *ny;
    float *wx, *wy;
    uint8_t *zx, *zy;       /* column / row outside the item (zero padding) */
    int rx0, rx1;           /* source columns the vertical pass fills */
    float *row;             /* its output for the current row: (rx1 - rx0) * 3 values */
} Aa;

/* Whether the plan takes an antialiased path; if so, set it up in *aa. */
static int aa_init(Aa *aa, const Sampler *s, int size) {
    if (s->p.aa == WARP_AA_NONE) return 0;
    memset(aa, 0, sizeof *aa);
    aa->f[0] = s->p.f[0];
    aa->f[1] = s->p.f[1];
    aa->kx = taps_max(aa->f[0]);
    aa->ky = taps_max(aa->f[1]);
    aa->sep = s->p.aa == WARP_AA_SEPARABLE;
    int n = aa->sep ? size : 1;
    aa->x0 = xmalloc(sizeof(int32_t) * 2 * n);
    aa->nx = aa->x0 + n;
    aa->y0 = xmalloc(sizeof(int32_t) * 2 * n);
    aa->ny = aa->y0 + n;
    aa->wx = xmalloc(sizeof(float) * (size_t)n * aa->kx);
    aa->wy = xmalloc(sizeof(float) * (size_t)n * aa->ky);
    if (!aa->sep) return 1;
    aa->zx = xcalloc((size_t)2 * size, 1);
    aa->zy = aa->zx + size;
    /* u depends on x only, v on y only: the same code as block_coords, in double */
    int zeros = s->p.pad == WARP_PAD_ZEROS;
    aa->rx0 = s->p.box[2], aa->rx1 = s->p.box[0];
    for (int i = 0; i < size; i++) {
        double u = (double)s->p.h[0] * (i + 0.5) + s->p.h[2], v = (double)s->p.h[4] * (i + 0.5) + s->p.h[5];
        if (u < s->p.u_lo || u > s->p.u_hi) {
            if (zeros) aa->zx[i] = 1;
            else u = reflect_coord((float)u, s->p.u_lo, s->p.u_hi);
        }
        if (v < s->p.v_lo || v > s->p.v_hi) {
            if (zeros) aa->zy[i] = 1;
            else v = reflect_coord((float)v, s->p.v_lo, s->p.v_hi);
        }
        int a;
        aa->nx[i] = tent_taps((double)s->p.wa[0] * u + s->p.wa[2], aa->f[0], s->p.box[0], s->p.box[2], &a, aa->wx + (size_t)i * aa->kx);
        aa->x0[i] = a;
        aa->ny[i] = tent_taps((double)s->p.wa[4] * v + s->p.wa[5], aa->f[1], s->p.box[1], s->p.box[3], &a, aa->wy + (size_t)i * aa->ky);
        aa->y0[i] = a;
        if (!aa->zx[i]) {
            aa->rx0 = aa->x0[i] < aa->rx0 ? aa->x0[i] : aa->rx0;
            aa->rx1 = aa->x0[i] + aa->nx[i] > aa->rx1 ? aa->x0[i] + aa->nx[i] : aa->rx1;
        }
    }
    if (aa->rx1 < aa->rx0) aa->rx1 = aa->rx0;
    aa->row = xmalloc(sizeof(float) * ((size_t)(aa->rx1 - aa->rx0) * 3 + 1));
    return 1;
}

static void aa_free(Aa *aa) {
    free(aa->x0);
    free(aa->y0);
    free(aa->wx);
    free(aa->wy);
    free(aa->zx);
    free(aa->row);
}

/* Separable, vertical pass: output row y's source rows into aa->row. */
static void aa_row(Aa *aa, const Sampler *s, int y) {
    size_t n = (size_t)(aa->rx1 - aa->rx0) * 3;
    float *row = aa->row;
    if (aa->zy[y]) return;
    const float *wy = aa->wy + (size_t)y * aa->ky;
    const uint8_t *p = s->px + (size_t)aa->y0[y] * s->stride + (size_t)aa->rx0 * 3;
    for (size_t j = 0; j < n; j++) row[j] = wy[0] * (float)p[j];
    for (int k = 1; k < aa->ny[y]; k++) {
        p += s->stride;
        float wk = wy[k];
        for (size_t j = 0; j < n; j++) row[j] += wk * (float)p[j];
    }
}

/* Separable, horizontal pass: pixels x0 .. x0+n-1 of row y (after aa_row) into b->val. */
static void aa_sep_block(const Aa *aa, int y, int x0, int n, Block *b) {
    for (int i = 0; i < n; i++) {
        int x = x0 + i;
        float r = 0, g = 0, bl = 0;
        if (!aa->zy[y] && !aa->zx[x]) {
            const float *wx = aa->wx + (size_t)x * aa->kx, *p = aa->row + (size_t)(aa->x0[x] - aa->rx0) * 3;
            for (int k = 0; k < aa->nx[x]; k++, p += 3) {
                r += wx[k] * p[0];
                g += wx[k] * p[1];
                bl += wx[k] * p[2];
            }
        }
        /* a convex combination of bytes, up to rounding: keep it in [0, 255] for the lighting table */
        b->val[0][i] = r < 255.0f ? r : 255.0f;
        b->val[1][i] = g < 255.0f ? g : 255.0f;
        b->val[2][i] = bl < 255.0f ? bl : 255.0f;
    }
}

/* General map (fastai's batch transforms after an item resize that shrinks): the separable
 * filter at each pixel's source point. */
static void aa_block(Aa *aa, const Sampler *s, int y, int x0, int n, Block *b) {
    int out = block_coords(s, y, x0, n, b);
    for (int i = 0; i < n; i++) {
        float acc[3] = {0, 0, 0};
        if (!(out && s->p.pad == WARP_PAD_ZEROS && b->zero[i])) {
            double u = b->u[i], v = b->v[i];
            int xa, ya;
            int nx = tent_taps((double)s->p.wa[0] * u + (double)s->p.wa[1] * v + s->p.wa[2], aa->f[0], s->p.box[0], s->p.box[2], &xa, aa->wx);
            int ny = tent_taps((double)s->p.wa[3] * u + (double)s->p.wa[4] * v + s->p.wa[5], aa->f[1], s->p.box[1], s->p.box[3], &ya, aa->wy);
            for (int k = 0; k < ny; k++) {
                const uint8_t *p = s->px + (size_t)(ya + k) * s->stride + (size_t)xa * 3;
                float r = 0, g = 0, bl = 0;
                for (int j = 0; j < nx; j++, p += 3) {
                    r += aa->wx[j] * p[0];
                    g += aa->wx[j] * p[1];
                    bl += aa->wx[j] * p[2];
                }
                acc[0] += aa->wy[k] * r, acc[1] += aa->wy[k] * g, acc[2] += aa->wy[k] * bl;
            }
        }
        for (int c = 0; c < 3; c++) b->val[c][i] = acc[c] < 255.0f ? acc[c] : 255.0f;
    }
}

/* One block of output row y, by the path the warp needs. */
static void fill_block(const Sampler *s, Aa *aa, int y, int x0, int n, Block *b) {
    if (!aa) {
        sample_block(s, y, x0, n, b);
    } else if (aa->sep) {
        if (x0 == 0) aa_row(aa, s, y);
        aa_sep_block(aa, y, x0, n, b);
    } else {
        aa_block(aa, s, y, x0, n, b);
    }
}

/* fastai's lighting on [0, 1] values: sigmoid(c * (logit(x) + logit(b))), logit clamped to
 * [1e-7, 1-1e-7] as fastai's is. Evaluated through a table over x with linear interpolation:
 * within 2e-6 of the formula over the draws' ranges (the test measures it). */
#define LIGHT_N WARP_LIGHT_N

double warp_light_logit(int i) {
    double x = (double)i / LIGHT_N;
    x = x < 1e-7 ? 1e-7 : (x > 1 - 1e-7 ? 1 - 1e-7 : x);
    return log(x / (1 - x));
}

double warp_light_shift(float brightness) { return log(brightness / (1.0 - brightness)); }

static void lighting_table(float brightness, float contrast, float *lut) {
    double lb = warp_light_shift(brightness), c = contrast;
    for (int i = 0; i <= LIGHT_N; i++) {
        double z = c * (warp_light_logit(i) + lb);
        lut[i] = (float)(1.0 / (1.0 + exp(-z)));
    }
    lut[LIGHT_N + 1] = lut[LIGHT_N + 2] = lut[LIGHT_N];
}

/* The normalised output, channel c of pixel (x, y) at out[c * cs + (y * size + x) * ps]: inlined
 * with constant strides by both callers (CHW: cs = size^2, ps = 1; HWC: cs = 1, ps = 3). */
static inline void apply_norm(const Warp *w, const Image *src, int size, const float *mean, const float *std,
                              float *out, size_t cs, size_t ps) {
    Sampler s;
    sampler_init(&s, w, src);
    Aa aa_state, *aa = aa_init(&aa_state, &s, size) ? &aa_state : NULL;
    Block b;
    int light = s.p.light;
    float lut[LIGHT_N + 3];
    if (light) lighting_table(w->brightness, w->contrast, lut);
    for (int y = 0; y < size; y++)
        for (int x0 = 0; x0 < size; x0 += BLK) {
            int n = size - x0 < BLK ? size - x0 : BLK;
            fill_block(&s, aa, y, x0, n, &b);
            for (int c = 0; c < 3; c++) {
                float *o = out + c * cs + ((size_t)y * size + x0) * ps;
                const float *v = b.val[c];
                float bias = -mean[c] / std[c];
                if (light) {
                    float k = 1.0f / std[c];
                    /* v is a convex combination of bytes: in [0, 255] up to the last bit, which
                     * the table's guard entry absorbs, so the index needs no clamp. */
                    for (int i = 0; i < n; i++) {
                        float t = v[i] * (LIGHT_N / 255.0f);
                        int j = (int)t;
                        float f = lut[j] + (t - (float)j) * (lut[j + 1] - lut[j]);
                        o[i * ps] = f * k + bias;
                    }
                } else {
                    float k = 1.0f / (255.0f * std[c]);
                    for (int i = 0; i < n; i++) o[i * ps] = v[i] * k + bias;
                }
            }
        }
    if (aa) aa_free(aa);
}

/* The image w samples: src, or fastai's pooled item (augment_pool.c) in *pooled, w rewritten to
 * sample it. image_free(pooled) afterwards either way. */
static const Image *pool_first(Warp *w, const Image *src, Image *pooled) {
    *pooled = (Image){0, 0, NULL};
    return warp_prepool(w, src, pooled) ? pooled : src;
}

void warp_apply_f32(const Warp *w, const Image *src, int size, float *out_chw) {
    Warp pw = *w;
    Image pooled;
    const Image *img = pool_first(&pw, src, &pooled);
    apply_norm(&pw, img, size, imagenet_mean, imagenet_std, out_chw, (size_t)size * size, 1);
    image_free(&pooled);
}

void warp_apply_nhwc(const Warp *w, const Image *src, int size, const float mean[3], const float std[3],
                     float *out_hwc) {
    Warp pw = *w;
    Image pooled;
    const Image *img = pool_first(&pw, src, &pooled);
    apply_norm(&pw, img, size, mean, std, out_hwc, 1, 3);
    image_free(&pooled);
}

void warp_apply_u8(const Warp *w0, const Image *src0, int size, uint8_t *out_hwc) {
    Warp pw = *w0, *w = &pw;
    Image pooled;
    const Image *src = pool_first(w, src0, &pooled);
    Sampler s;
    sampler_init(&s, w, src);
    Aa aa_state, *aa = aa_init(&aa_state, &s, size) ? &aa_state : NULL;
    Block b;
    for (int y = 0; y < size; y++)
        for (int x0 = 0; x0 < size; x0 += BLK) {
            int n = size - x0 < BLK ? size - x0 : BLK;
            fill_block(&s, aa, y, x0, n, &b);
            uint8_t *o = out_hwc + ((size_t)y * size + x0) * 3;
            for (int i = 0; i < n; i++)
                for (int c = 0; c < 3; c++) {
                    float v = b.val[c][i] + 0.5f;
                    o[3 * i + c] = (uint8_t)(v < 255.0f ? v : 255.0f);
                }
        }
    if (aa) aa_free(aa);
    image_free(&pooled);
}
