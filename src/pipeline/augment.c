/* pipeline/augment.c: drawing the transforms of fastai's and torchvision's recipes as two maps (item affine,
 * batch homography), applied by warp_apply.c with one bilinear sample of the source per output
 * pixel, antialiased as PIL's resize where the item resize shrinks.
 *
 * Coordinates are continuous, pixel i covering [i, i+1) with its centre at i+0.5. fastai's grids
 * (affine_grid/grid_sample with align_corners=True: -1 and 1 are the centres of the border pixels)
 * and torchvision's resizes (align_corners=False: src = (dst+0.5)*in/out - 0.5) are both written
 * in it, so every map composes into plain 3x3 matrices. The geometry is computed in double and
 * stored as float. Python's round() (half to even) is rint() under the default rounding mode. */
#include "pipeline/augment.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
const float imagenet_std[3] = {0.229f, 0.224f, 0.225f};

static const char *const transform_kind_names[] = {
    [TF_FASTAI] = "fastai",
    [TF_RANDOM_RESIZED_CROP] = "rrc",
    [TF_CENTER_CROP] = "center",
    [TF_RESIZE_CENTER_CROP] = "resize",
    [TF_SQUASH_CENTER_CROP] = "squash",
};
#define N_TRANSFORM_KINDS (int)(sizeof transform_kind_names / sizeof transform_kind_names[0])

int transform_kind_parse(const char *name, TransformKind *out) {
    for (int k = 0; k < N_TRANSFORM_KINDS; k++)
        if (!strcmp(name, transform_kind_names[k])) {
            *out = (TransformKind)k;
            return 0;
        }
    return -1;
}

const char *transform_kind_name(TransformKind kind) {
    return (unsigned)kind < (unsigned)N_TRANSFORM_KINDS ? transform_kind_names[kind] : "?";
}

TransformSpec transform_defaults(TransformKind kind, int size, int train) {
    TransformSpec s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.size = size;
    s.train = train;
    /* fastai: aug_transforms' defaults. Resize has no default size (presize 0 = none), and
     * min_scale 1 adds no RandomResizedCropGPU; the Imagenette recipe sets 460 and 0.75. */
    s.presize = 0;
    s.min_scale = 1.0f;
    s.flip = 1;
    s.max_rotate = 10.0f;
    s.max_zoom = 1.1f;
    s.max_warp = 0.2f;
    s.max_lighting = 0.2f;
    s.p_affine = 0.75f;
    s.p_lighting = 0.75f;
    /* torchvision RandomResizedCrop's scale and ratio; fastai's aug_transforms asks its
     * RandomResizedCropGPU for square crops. */
    s.scale_min = 0.08f;
    s.scale_max = 1.0f;
    if (kind == TF_FASTAI) {
        s.ratio_min = s.ratio_max = 1.0f;
    } else {
        s.ratio_min = 3.0f / 4.0f;
        s.ratio_max = 4.0f / 3.0f;
    }
    s.resize_ratio = 1.0f; /* torchvision has no default; 1 = Resize(size) + CenterCrop(size) */
    if (kind == TF_SQUASH_CENTER_CROP) s.resize_ratio = 1.14f; /* fastai's val_xtra = 0.14 */
    return s;
}

/* ------------------------------------------------------------------------- 3x3 matrices */

static void mat3_mul(const double *a, const double *b, double *out) {
    double r[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) r[i * 3 + j] = a[i * 3] * b[j] + a[i * 3 + 1] * b[3 + j] + a[i * 3 + 2] * b[6 + j];
    memcpy(out, r, sizeof r);
}

static void mat3_set(double *m, double m0, double m1, double m2, double m3, double m4, double m5) {
    m[0] = m0, m[1] = m1, m[2] = m2, m[3] = m3, m[4] = m4, m[5] = m5, m[6] = 0, m[7] = 0, m[8] = 1;
}

/* Solve the 8x8 system A x = b by Gaussian elimination with partial pivoting (what
 * torch.linalg.solve's LU does, up to rounding). Returns 0, or -1 when singular. */
static int solve8(double A[8][8], double *b, double *x) {
    for (int c = 0; c < 8; c++) {
        int p = c;
        for (int r = c + 1; r < 8; r++)
            if (fabs(A[r][c]) > fabs(A[p][c])) p = r;
        if (fabs(A[p][c]) < 1e-12) return -1;
        if (p != c) {
            for (int k = 0; k < 8; k++) {
                double t = A[c][k];
                A[c][k] = A[p][k], A[p][k] = t;
            }
            double t = b[c];
            b[c] = b[p], b[p] = t;
        }
        for (int r = c + 1; r < 8; r++) {
            double f = A[r][c] / A[c][c];
            for (int k = c; k < 8; k++) A[r][k] -= f * A[c][k];
            b[r] -= f * b[c];
        }
    }
    for (int c = 7; c >= 0; c--) {
        double s = b[c];
        for (int k = c + 1; k < 8; k++) s -= A[c][k] * x[k];
        x[c] = s / A[c][c];
    }
    return 0;
}

/* fastai's _WarpCoord: the homography taking the perturbed corners (targ) to the corners of the
 * normalised square (orig), as find_coeffs(orig, targ) solves it; apply_perspective then maps
 * the sampling grid through it. */
static void fastai_perspective(double xt, double yt, double *H) {
    const double orig[4][2] = {{-1, -1}, {-1, 1}, {1, -1}, {1, 1}};
    const double targ[4][2] = {{-1 - yt, -1 - xt}, {-1 + yt, 1 + xt}, {1 + yt, -1 + xt}, {1 - yt, 1 - xt}};
    double A[8][8], b[8], c[8];
    for (int i = 0; i < 4; i++) {
        double p1x = orig[i][0], p1y = orig[i][1], p2x = targ[i][0], p2y = targ[i][1];
        double r0[8] = {p2x, p2y, 1, 0, 0, 0, -p1x * p2x, -p1x * p2y};
        double r1[8] = {0, 0, 0, p2x, p2y, 1, -p1y * p2x, -p1y * p2y};
        memcpy(A[2 * i], r0, sizeof r0);
        memcpy(A[2 * i + 1], r1, sizeof r1);
        b[2 * i] = p1x;
        b[2 * i + 1] = p1y;
    }
    if (solve8(A, b, c) != 0) { /* cannot happen for |x_t|, |y_t| < 1; keep the grid unwarped */
        mat3_set(H, 1, 0, 0, 0, 1, 0);
        return;
    }
    for (int i = 0; i < 8; i++) H[i] = c[i];
    H[8] = 1;
}

/* ------------------------------------------------------------------------- composing warps */

static void warp_store(Warp *w, const double *a, int item_w, int item_h, int pad, int x0, int y0, int x1, int y1,
                       const double *h, float brightness, float contrast) {
    for (int i = 0; i < 6; i++) w->a[i] = (float)a[i];
    w->item_w = item_w;
    w->item_h = item_h;
    w->pad = pad;
    w->clip[0] = x0, w->clip[1] = y0, w->clip[2] = x1, w->clip[3] = y1;
    /* Scale so h8 = 1 where possible: the applier tests h6 = h7 = 0 for the affine fast path. */
    double s = (h[8] != 0) ? 1.0 / h[8] : 1.0;
    for (int i = 0; i < 9; i++) w->h[i] = (float)(h[i] * s);
    w->brightness = brightness;
    w->contrast = contrast;
    /* Every item map here is a crop + resize (a1 = a3 = 0) that PIL or torchvision-on-PIL
     * performs with antialiasing; the batch map after it (fastai's grid_sample) has none. */
    w->aa[0] = (float)fabs(a[0]);
    w->aa[1] = (float)fabs(a[4]);    w->pool_w = w->pool_h = 0;
    memset(w->pool_box, 0, sizeof w->pool_box);
}

void warp_resized_crop(int src_w, int src_h, int left, int top, int w, int h, int size, int flip, Warp *out) {
    /* The item is the resized crop: F.resized_crop crops, then resizes (align_corners=False), so
     * the taps clamp to the crop box. The flip mirrors the output: u = size - x. */
    double a[6] = {(double)w / size, 0, left, 0, (double)h / size, top};
    double hm[9];
    if (flip) mat3_set(hm, -1, 0, size, 0, 1, 0);
    else mat3_set(hm, 1, 0, 0, 0, 1, 0);
    int x0 = left < 0 ? 0 : left, y0 = top < 0 ? 0 : top;
    int x1 = left + w > src_w ? src_w : left + w, y1 = top + h > src_h ? src_h : top + h;
    warp_store(out, a, size, size, WARP_PAD_ZEROS, x0, y0, x1, y1, hm, 0.5f, 1.0f);
}

/* torchvision CenterCrop(size) of an item_w x item_h image (the item: the source, or the source
 * resized to it): offsets int(round((dim - size) / 2)); a crop larger than the image first pads
 * it with zeros, (size - dim) // 2 on the left/top, so the offset is minus that. */
static int center_offset(int dim, int size) {
    if (size > dim) return -((size - dim) / 2);
    return (int)rint((dim - size) / 2.0);
}

static void warp_center_crop(int src_w, int src_h, int item_w, int item_h, int size, Warp *out) {
    double a[6] = {(double)src_w / item_w, 0, 0, 0, (double)src_h / item_h, 0};
    double hm[9];
    mat3_set(hm, 1, 0, center_offset(item_w, size), 0, 1, center_offset(item_h, size));
    warp_store(out, a, item_w, item_h, WARP_PAD_ZEROS, 0, 0, src_w, src_h, hm, 0.5f, 1.0f);
}

static int resize_side(const TransformSpec *s) { return (int)rint((double)s->resize_ratio * s->size); }

/* fastai's RandomResizedCrop on the validation set: xtra = ceil(size * val_xtra / 8) * 8 pixels
 * more than size on both sides, the whole image squashed to that, then the centre size x size. */
static int squash_side(const TransformSpec *s) {
    return s->size + (int)ceil((double)(s->resize_ratio - 1.0f) * s->size / 8 - 1e-6) * 8;
}

/* torchvision Resize(r) with an int: the short side becomes r, the long side
 * int(r * long / short) (truncated); then CenterCrop(size). */
static void warp_resize_center_crop(const TransformSpec *s, int src_w, int src_h, Warp *out) {
    int r = resize_side(s);
    int shorter = src_w <= src_h ? src_w : src_h, longer = src_w <= src_h ? src_h : src_w;
    int new_long = (int)((double)r * longer / shorter);
    int nw = src_w <= src_h ? r : new_long, nh = src_w <= src_h ? new_long : r;
    warp_center_crop(src_w, src_h, nw, nh, s->size, out);
}

void fastai_warp(const TransformSpec *s, int src_w, int src_h, const FastaiParams *p, Warp *out) {
    /* Item: Resize(presize, ResizeMethod.Crop): the largest square (int(m*presize) with m the short
     * side over presize) at int(pct * slack), resized by PIL (crop first: taps clamp to the box). */
    double a[6];
    int iw, ih, box[4];
    if (s->presize > 0) {
        int P = s->presize;
        double mw = (double)src_w / P, mh = (double)src_h / P;
        double m = mw < mh ? mw : mh;
        int cw = (int)(m * P), ch = cw;
        int tlx = (int)((double)p->item_pct_x * (src_w - cw)), tly = (int)((double)p->item_pct_y * (src_h - ch));
        a[0] = (double)cw / P, a[1] = 0, a[2] = tlx, a[3] = 0, a[4] = (double)ch / P, a[5] = tly;
        iw = ih = P;
        box[0] = tlx, box[1] = tly, box[2] = tlx + cw, box[3] = tly + ch;
    } else {
        a[0] = 1, a[1] = 0, a[2] = 0, a[3] = 0, a[4] = 1, a[5] = 0;
        iw = src_w, ih = src_h;
        box[0] = 0, box[1] = 0, box[2] = src_w, box[3] = src_h;
    }

    /* Batch: output pixel centre -> affine_grid coordinate g of the last resampling (linspace
     * -1..1 over `size` pixels; torch gives 0 for a single pixel). */
    int S = s->size;
    double m[9], t[9];
    if (S > 1) mat3_set(m, 2.0 / (S - 1), 0, -1 - 1.0 / (S - 1), 0, 2.0 / (S - 1), -1 - 1.0 / (S - 1));
    else mat3_set(m, 0, 0, 0, 0, 0, 0);
    if (s->min_scale != 1.0f) {
        /* RandomResizedCropGPU: the box of the item-sized affine output, resized with an identity
         * align_corners=True grid: index = x0 + (g+1)/2*(w-1); then back to the affine stage's
         * normalised grid over the item: n = -1 + 2*index/(item-1). */
        double kx = 0.5 * (p->crop_w - 1), ky = 0.5 * (p->crop_h - 1);
        double nx = iw > 1 ? 2.0 / (iw - 1) : 0, ny = ih > 1 ? 2.0 / (ih - 1) : 0;
        mat3_set(t, nx * kx, 0, nx * (p->crop_x + kx) - (iw > 1 ? 1 : 0), 0, ny * ky,
                 ny * (p->crop_y + ky) - (ih > 1 ? 1 : 0));
        mat3_mul(t, m, m);
    }
    /* aff_m = flip @ rotate @ zoom, then _prepare_mat's aspect correction for a non-square item. */
    double A[9], R[9];
    mat3_set(A, p->flip ? -1 : 1, 0, 0, 0, 1, 0);
    double th = (double)p->rotate_deg * M_PI / 180.0;
    mat3_set(R, cos(th), sin(th), 0, -sin(th), cos(th), 0);
    mat3_mul(A, R, A);
    double zs = p->zoom > 0 ? 1.0 / p->zoom : 1.0;
    mat3_set(R, zs, 0, (1 - zs) * (2.0 * p->zoom_col - 1), 0, zs, (1 - zs) * (2.0 * p->zoom_row - 1));
    mat3_mul(A, R, A);
    A[1] *= (double)ih / iw;
    A[3] *= (double)iw / ih;
    mat3_mul(A, m, m);
    if (p->warp_x != 0 || p->warp_y != 0) {
        fastai_perspective(p->warp_x, p->warp_y, t);
        mat3_mul(t, m, m);
    }
    /* grid_sample with align_corners=True on the item: u = (n+1)/2*(item-1) + 0.5. */
    mat3_set(t, 0.5 * (iw - 1), 0, 0.5 * (iw - 1) + 0.5, 0, 0.5 * (ih - 1), 0.5 * (ih - 1) + 0.5);
    mat3_mul(t, m, m);
    warp_store(out, a, iw, ih, WARP_PAD_REFLECT, box[0], box[1], box[2], box[3], m, p->brightness, p->contrast);
    /* _grid_sample's area pre-pooling (augment_pool.c), for the last resampling's input: the crop
     * (RandomResizedCropGPU) or the item, in double as Python computes it. fastai's
     * d = min(x.shape[-2] / coords.shape[-2], x.shape[-1] / coords.shape[-1]) / 2 divides the
     * input's height by the grid's width and its width by 2 (the grid's last axis holds x, y):
     * in effect the height ratio alone, both sides then scaled by 1/d. fastai also skips it
     * where d <= 2 / (the batch's coordinate range), a zoom-in beyond d; in a batch with any
     * image neither zoomed nor warped inward that range is >= 2, so here: d > 1. With a crop,
     * fastai pools the crop of the affine stage's output; we pool the item with the crop's grid
     * of windows before the one fused resampling (the same where the affine part is the
     * identity, validation included). */
    int crop = s->min_scale != 1.0f;
    int bx = crop ? p->crop_x : 0, by = crop ? p->crop_y : 0, bw = crop ? p->crop_w : iw, bh = crop ? p->crop_h : ih;
    double d = ((double)bh / S < bw / 2.0 ? (double)bh / S : bw / 2.0) / 2;
    if (d > 1) {
        out->pool_w = (int)floor(bw * (1 / d));
        out->pool_h = (int)floor(bh * (1 / d));
        out->pool_box[0] = bx, out->pool_box[1] = by, out->pool_box[2] = bw, out->pool_box[3] = bh;
    }
}

/* ------------------------------------------------------------------------- drawing */

static double uniform(Rng *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }
static int randint(Rng *r, int lo, int hi) { return lo + (int)rng_below(r, (uint32_t)(hi - lo + 1)); } /* inclusive */

/* fastai RandomResizedCropGPU.before_call on a w x h image: ten tries of an area fraction in
 * [min_scale, 1] and a log-uniform ratio, rounded half to even; then (and always on the
 * validation set) the centre crop of the ratio range, with int() truncation. */
static void fastai_rrc(const TransformSpec *s, int w, int h, Rng *r, FastaiParams *p) {
    double r0 = s->ratio_min, r1 = s->ratio_max;
    for (int attempt = 0; s->train && attempt < 10; attempt++) {
        double area = uniform(r, s->min_scale, 1.0) * w * h;
        double ratio = exp(uniform(r, log(r0), log(r1)));
        int nw = (int)rint(sqrt(area * ratio)), nh = (int)rint(sqrt(area / ratio));
        if (nw <= w && nh <= h && nw > 0 && nh > 0) { /* (fastai would crash on an empty crop) */
            p->crop_w = nw, p->crop_h = nh;
            p->crop_y = randint(r, 0, h - nh);
            p->crop_x = randint(r, 0, w - nw);
            return;
        }
    }
    if ((double)w / h < r0) p->crop_h = (int)(w / r0), p->crop_w = w;
    else if ((double)w / h > r1) p->crop_h = h, p->crop_w = (int)(h * r1);
    else p->crop_h = h, p->crop_w = w;
    p->crop_y = (h - p->crop_h) / 2;
    p->crop_x = (w - p->crop_w) / 2;
}

void fastai_draw(const TransformSpec *s, int src_w, int src_h, Rng *r, FastaiParams *p) {
    memset(p, 0, sizeof *p);
    p->zoom = 1.0f, p->zoom_col = p->zoom_row = 0.5f;
    p->brightness = 0.5f, p->contrast = 1.0f;
    /* Item: Resize's pcts, random on the training set, (0.5, 0.5) on the validation set. */
    p->item_pct_x = s->train ? rng_uniform(r) : 0.5f;
    p->item_pct_y = s->train ? rng_uniform(r) : 0.5f;
    int iw = s->presize > 0 ? s->presize : src_w, ih = s->presize > 0 ? s->presize : src_h;
    if (s->train) {
        /* Each part is drawn, then kept with its probability (mask_tensor's Bernoulli), else set
         * to its neutral value: Flip p=0.5; Rotate, Zoom and each warp axis p_affine. */
        if (s->flip) p->flip = rng_uniform(r) < 0.5f;
        if (s->max_rotate != 0) {
            double deg = uniform(r, -s->max_rotate, s->max_rotate);
            p->rotate_deg = rng_uniform(r) < s->p_affine ? (float)deg : 0.0f;
        }
        if (s->max_zoom > 1) {
            double z = uniform(r, 1.0, s->max_zoom);
            p->zoom = rng_uniform(r) < s->p_affine ? (float)z : 1.0f;
            p->zoom_col = rng_uniform(r);
            p->zoom_row = rng_uniform(r);
        }
        if (s->max_warp != 0) {
            double x = uniform(r, -s->max_warp, s->max_warp), y = uniform(r, -s->max_warp, s->max_warp);
            p->warp_x = rng_uniform(r) < s->p_affine ? (float)x : 0.0f;
            p->warp_y = rng_uniform(r) < s->p_affine ? (float)y : 0.0f;
        }
    }
    if (s->min_scale != 1.0f) fastai_rrc(s, iw, ih, r, p);
    if (s->train && s->max_lighting != 0) {
        /* Brightness: a logit-space shift logit(b), b uniform in 0.5*(1 -+ L); Contrast: a scale
         * c, log c uniform in +-log(1-L); each kept with p_lighting. */
        double L = s->max_lighting;
        double b = uniform(r, 0.5 * (1 - L), 0.5 * (1 + L));
        p->brightness = rng_uniform(r) < s->p_lighting ? (float)b : 0.5f;
        double c = exp(uniform(r, log(1 - L), -log(1 - L)));
        p->contrast = rng_uniform(r) < s->p_lighting ? (float)c : 1.0f;
    }
}

/* torchvision RandomResizedCrop.get_params, then RandomHorizontalFlip(0.5). */
static void tv_random_resized_crop(const TransformSpec *s, int W, int H, Rng *r, Warp *out) {
    double area = (double)W * H;
    double rmin = s->ratio_min < s->ratio_max ? s->ratio_min : s->ratio_max;
    double rmax = s->ratio_min < s->ratio_max ? s->ratio_max : s->ratio_min;
    int top = -1, left = 0, w = 0, h = 0;
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * uniform(r, s->scale_min, s->scale_max);
        double ratio = exp(uniform(r, log(s->ratio_min), log(s->ratio_max)));
        w = (int)rint(sqrt(target * ratio));
        h = (int)rint(sqrt(target / ratio));
        if (0 < w && w <= W && 0 < h && h <= H) {
            top = (int)rng_below(r, (uint32_t)(H - h + 1));
            left = (int)rng_below(r, (uint32_t)(W - w + 1));
            break;
        }
    }
    if (top < 0) { /* the fallback: a centre crop of the nearest ratio in range, rounded */
        double in_ratio = (double)W / H;
        if (in_ratio < rmin) w = W, h = (int)rint(w / rmin);
        else if (in_ratio > rmax) h = H, w = (int)rint(h * rmax);
        else w = W, h = H;
        top = (H - h) / 2;
        left = (W - w) / 2;
    }
    int flip = s->flip && rng_uniform(r) < 0.5f;
    warp_resized_crop(W, H, left, top, w, h, s->size, flip, out);
}

void transform_draw(const TransformSpec *s, int src_w, int src_h, Rng *r, Warp *out) {
    switch (s->kind) {
    case TF_FASTAI: {
        FastaiParams p;
        fastai_draw(s, src_w, src_h, r, &p);
        fastai_warp(s, src_w, src_h, &p, out);
        break;
    }
    case TF_RANDOM_RESIZED_CROP:
        if (s->train) tv_random_resized_crop(s, src_w, src_h, r, out);
        else warp_resize_center_crop(s, src_w, src_h, out); /* its evaluation pair */
        break;
    case TF_CENTER_CROP:
        warp_center_crop(src_w, src_h, src_w, src_h, s->size, out);
        break;
    case TF_RESIZE_CENTER_CROP:
        warp_resize_center_crop(s, src_w, src_h, out);
        break;
    case TF_SQUASH_CENTER_CROP:
        warp_center_crop(src_w, src_h, squash_side(s), squash_side(s), s->size, out);
        break;
    }
}

/* A DCT-scaled decode is a different low-pass from PIL's antialiased resize of the full image
 * (libjpeg's 1/8 scale is the 8x8 block mean): decoding at 1/2 and resizing the remaining 1x-2x
 * left outputs 1-3.5/255 from PIL's on average, at 1/8 down to ~36 px, 10/255. So the decode is
 * scaled only as far as still leaves the resize after it a shrink of at least DCT_MARGIN, where
 * the resize's own filter dominates (4x: 0.40/255, against 0.26 for PIL's own rounding). */
#define DCT_MARGIN 4

int transform_min_source_side(const TransformSpec *s) {
    switch (s->kind) {
    case TF_FASTAI: return s->presize > 0 ? DCT_MARGIN * s->presize : 0; /* the item is presize square */
    case TF_RANDOM_RESIZED_CROP: return s->train ? 0 : DCT_MARGIN * resize_side(s); /* crops go down to 8% */
    case TF_CENTER_CROP: return 0;                               /* source pixels, unresized */
    case TF_RESIZE_CENTER_CROP: return DCT_MARGIN * resize_side(s);
    case TF_SQUASH_CENTER_CROP: return DCT_MARGIN * squash_side(s);
    }
    return 0;
}
