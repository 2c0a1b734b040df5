/* pipeline/augment.c: drawing the transforms of fastai's and torchvision's recipes as two maps (item affine,
 * batch homography) and applying them with one bilinear sample of the source per output pixel,
 * antialiased as PIL's resize where the item resize shrinks (see "antialiasing" below).
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

void warp_apply_f32(const Warp *w, const Image *src, int size, float *out_chw) {
    Warp pw = *w;
    Image pooled;
    int pool = warp_prepool(&pw, src, &pooled);
    apply_norm(&pw, pool ? &pooled : src, size, imagenet_mean, imagenet_std, out_chw, (size_t)size * size, 1);
    if (pool) image_free(&pooled);
}

void warp_apply_nhwc(const Warp *w, const Image *src, int size, const float mean[3], const float std[3],
                     float *out_hwc) {
    Warp pw = *w;
    Image pooled;
    int pool = warp_prepool(&pw, src, &pooled);
    apply_norm(&pw, pool ? &pooled : src, size, mean, std, out_hwc, 1, 3);
    if (pool) image_free(&pooled);
}

void warp_apply_u8(const Warp *w0, const Image *src0, int size, uint8_t *out_hwc) {
    Warp pw = *w0, *w = &pw;
    Image pooled;
    int pool = warp_prepool(w, src0, &pooled);
    const Image *src = pool ? &pooled : src0;
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
    if (pool) image_free(&pooled);
}
