/* test_augment.c: the transforms' geometry on hand-computed cases, the draws' ranges and
 * probabilities, parity with torchvision in tests/ref/aug_ref.safetensors (regenerate with
 * `/usr/bin/python3 scripts/augment_reference.py`), and parity with fastai's own code in
 * tests/ref/fastai_aug.safetensors (regenerate with
 * `/work/main/reference-env/bin/python scripts/fastai_reference_aug.py`): its batch transforms
 * and item transforms run with fixed parameters, and the distributions of its random draws.
 *
 * Parity tolerances, in 0..255 units: exact-in-principle cases (one bilinear pass in both, float
 * here and float64 in torch or float32 in fastai; torchvision's antialias=True is PIL's filter
 * without its rounding) must agree within 0.05 (1/5000 of the range); PIL's fixed-point resize
 * within 1 (one uint8 step: its two uint8 passes round twice), where plain bilinear sampling
 * misses a shrinking resize by tens of units; fastai's two resampling passes (affine, then
 * RandomResizedCropGPU), which we fuse into one, are compared on linear gradients (where
 * bilinear is exact): within 3 at worst and 0.05 on average, the difference coming only from the
 * second pass interpolating across the reflection's kinks (the worst pixels are next to
 * reflected ones). fastai's area pre-pooling before a grid_sample that shrinks more than 2x
 * (_grid_sample; ours: augment_pool.c) is within half a step (our pooled image is bytes) where
 * fastai pools its one resampling's input, and within 1.5 after an item Resize (the item's PIL
 * rounding too); each such case is also checked to be far from fastai without the pooling. The
 * worst error of each case is printed. Distributions: within DIST_SIGMA standard errors (see check_dist). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/augment.h"
#include "backend/backend.h"
#include "pipeline/image.h"
#include "base/rng.h"
#include "ckpt/safetensors.h"
#include "base/util.h"

#define REF_PATH "tests/ref/aug_ref.safetensors"
#define FASTAI_REF_PATH "tests/ref/fastai_aug.safetensors"

static const double MEAN[3] = {0.485, 0.456, 0.406}, STD[3] = {0.229, 0.224, 0.225};

/* ---------------------------------------------------------------- helpers */

static Image image_new(int w, int h) {
    Image im = {w, h, xcalloc((size_t)w * h * 3, 1)};
    return im;
}

static Image image_random(int w, int h, uint64_t seed) {
    Image im = image_new(w, h);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) im.rgb[i] = (uint8_t)rng_below(&r, 256);
    return im;
}

static uint8_t px(const Image *im, int x, int y, int c) { return im->rgb[((size_t)y * im->w + x) * 3 + c]; }

/* An output value of warp_apply_f32 back in 0..255 units. */
static double denorm(float v, int c) { return ((double)v * STD[c] + MEAN[c]) * 255.0; }

static Warp warp_identity(int w, int h) {
    Warp wp = {{1, 0, 0, 0, 1, 0}, w, h, WARP_PAD_REFLECT, {0, 0, w, h}, {1, 0, 0, 0, 1, 0, 0, 0, 1}, 0.5f, 1.0f, {0, 0}, 0, 0, {0, 0, 0, 0}};
    return wp;
}

static FastaiParams fastai_neutral(void) {
    FastaiParams p;
    memset(&p, 0, sizeof p);
    p.item_pct_x = p.item_pct_y = 0.5f;
    p.zoom = 1, p.zoom_col = p.zoom_row = 0.5f;
    p.brightness = 0.5f, p.contrast = 1;
    return p;
}

static TransformSpec fastai_spec(int size, int presize, float min_scale, int train) {
    TransformSpec s = transform_defaults(TF_FASTAI, size, train);
    s.presize = presize;
    s.min_scale = min_scale;
    return s;
}

/* Both outputs of a warp: u8 HWC and f32 CHW. */
typedef struct {
    int size;
    uint8_t *u8;
    float *f32;
} Out;

static Out run(const Warp *w, const Image *src, int size) {
    Out o = {size, xmalloc((size_t)size * size * 3), xmalloc(sizeof(float) * 3 * (size_t)size * size)};
    warp_apply_u8(w, src, size, o.u8);
    warp_apply_f32(w, src, size, o.f32);
    return o;
}

static void out_free(Out *o) {
    free(o->u8);
    free(o->f32);
}

/* Output pixel (x, y) must be source pixel (sx, sy), exactly, in both outputs. */
static void expect_pixel(const Out *o, int x, int y, const Image *src, int sx, int sy) {
    size_t plane = (size_t)o->size * o->size;
    for (int c = 0; c < 3; c++) {
        uint8_t want = px(src, sx, sy, c);
        uint8_t got = o->u8[((size_t)y * o->size + x) * 3 + c];
        if (got != want) fail_msg("pixel (%d,%d) channel %d: %d, want source (%d,%d) = %d", x, y, c, got, sx, sy, want);
        double g = denorm(o->f32[c * plane + (size_t)y * o->size + x], c);
        if (fabs(g - want) > 1e-3) fail_msg("pixel (%d,%d) channel %d: f32 %.5f, want %d", x, y, c, g, want);
    }
}

/* Python's round() of k/2 for an integer k: half to even. */
static int round_half_even_half(int k) {
    int q = k >= 0 ? k / 2 : -((-k + 1) / 2);
    if (k % 2 == 0) return q;
    return (q % 2 == 0) ? q : q + 1;
}

/* ---------------------------------------------------------------- geometry */

static void test_identity(void **state) {
    (void)state;
    Image src = image_random(9, 9, 1);
    Warp w = warp_identity(9, 9);
    Out o = run(&w, &src, 9);
    for (int y = 0; y < 9; y++)
        for (int x = 0; x < 9; x++) expect_pixel(&o, x, y, &src, x, y);
    out_free(&o);
    image_free(&src);
}

static void test_downscale_2x(void **state) {
    (void)state;
    Image src = image_new(8, 8);
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) {
            src.rgb[(y * 8 + x) * 3 + 0] = (uint8_t)(16 * x + 2 * y);
            src.rgb[(y * 8 + x) * 3 + 1] = (uint8_t)(255 - 30 * y);
            src.rgb[(y * 8 + x) * 3 + 2] = (uint8_t)(7 * x * y);
        }
    Warp w;
    warp_resized_crop(8, 8, 0, 0, 8, 8, 4, 0, &w);
    assert_true(w.aa[0] == 2 && w.aa[1] == 2);
    /* Antialiased as PIL: the tent widened to +-2 source pixels around each output centre
     * (2x + 1): taps 1/8 3/8 3/8 1/8, renormalised over the pixels present at the borders. */
    static const double W[4][8] = {{3 / 7., 3 / 7., 1 / 7., 0, 0, 0, 0, 0},
                                   {0, 1 / 8., 3 / 8., 3 / 8., 1 / 8., 0, 0, 0},
                                   {0, 0, 0, 1 / 8., 3 / 8., 3 / 8., 1 / 8., 0},
                                   {0, 0, 0, 0, 0, 1 / 7., 3 / 7., 3 / 7.}};
    Out o = run(&w, &src, 4);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int c = 0; c < 3; c++) {
                double want = 0;
                for (int j = 0; j < 8; j++)
                    for (int i = 0; i < 8; i++) want += W[y][j] * W[x][i] * px(&src, i, j, c);
                assert_true(fabs(denorm(o.f32[c * 16 + y * 4 + x], c) - want) < 1e-3);
                assert_true(fabs(o.u8[(y * 4 + x) * 3 + c] - want) <= 0.5 + 1e-3);
            }
    out_free(&o);
    /* Antialiasing off (Warp.aa <= 1), plain bilinear: with align_corners=False a 2x downscale
     * samples halfway between pixel pairs, which is the 2x2 block mean. */
    w.aa[0] = w.aa[1] = 0;
    o = run(&w, &src, 4);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int c = 0; c < 3; c++) {
                double mean = (px(&src, 2 * x, 2 * y, c) + px(&src, 2 * x + 1, 2 * y, c) + px(&src, 2 * x, 2 * y + 1, c) +
                               px(&src, 2 * x + 1, 2 * y + 1, c)) / 4.0;
                assert_true(fabs(denorm(o.f32[c * 16 + y * 4 + x], c) - mean) < 1e-3);
                assert_int_equal(o.u8[(y * 4 + x) * 3 + c], (int)floor(mean + 0.5));
            }
    out_free(&o);
    image_free(&src);
}

static void test_center_crop_offsets(void **state) {
    (void)state;
    /* torchvision: int(round((dim - size) / 2)) (half to even), or minus (size - dim) // 2 of
     * zero padding when the crop is larger. */
    const int cases[][3] = {{9, 7, 4}, {10, 8, 5}, {11, 11, 6}, {13, 13, 6}, {12, 12, 5}, {10, 10, 4},
                            {4, 6, 8}, {5, 8, 8}, {40, 30, 33}, {224, 224, 224}, {500, 375, 224}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int W = cases[i][0], H = cases[i][1], S = cases[i][2];
        int ox = S > W ? -((S - W) / 2) : round_half_even_half(W - S);
        int oy = S > H ? -((S - H) / 2) : round_half_even_half(H - S);
        TransformSpec s = transform_defaults(TF_CENTER_CROP, S, 0);
        Warp w;
        transform_draw(&s, W, H, NULL, &w);
        assert_int_equal(w.item_w, W);
        assert_int_equal(w.item_h, H);
        assert_int_equal(w.pad, WARP_PAD_ZEROS);
        assert_true(w.h[0] == 1 && w.h[4] == 1 && w.h[1] == 0 && w.h[3] == 0);
        if (w.h[2] != ox || w.h[5] != oy)
            fail_msg("CenterCrop(%d) of %dx%d: offsets (%g, %g), want (%d, %d)", S, W, H, w.h[2], w.h[5], ox, oy);
        if (W * H <= 200) { /* pixels: a copy with zero padding */
            Image src = image_random(W, H, 7 + i);
            Out o = run(&w, &src, S);
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    int sx = x + ox, sy = y + oy;
                    if (sx >= 0 && sx < W && sy >= 0 && sy < H) {
                        expect_pixel(&o, x, y, &src, sx, sy);
                    } else {
                        for (int c = 0; c < 3; c++) {
                            assert_int_equal(o.u8[(y * S + x) * 3 + c], 0);
                            assert_true(fabs(o.f32[c * S * S + y * S + x] + MEAN[c] / STD[c]) < 1e-5);
                        }
                    }
                }
            out_free(&o);
            image_free(&src);
        }
    }
}

static void test_resize_center_crop_sizes(void **state) {
    (void)state;
    /* torchvision Resize(r): short side r = round(ratio * size) (half to even), long side
     * int(r * long / short); then CenterCrop. {W, H, size, ratio*4, new_w, new_h, ox, oy} */
    const int cases[][8] = {
        {40, 30, 16, 5, 26, 20, 5, 2},        /* r = 20, 26.67 -> 26 */
        {30, 40, 15, 6, 22, 29, 4, 7},        /* r = round(22.5) = 22, 29.33 -> 29, round(3.5) = 4 */
        {1000, 750, 224, 5, 373, 280, 74, 28}, /* r = 280, round(74.5) = 74 */
        {500, 375, 224, 4, 298, 224, 37, 0},  /* r = 224: 298.67 -> 298 */
        {375, 500, 128, 4, 128, 170, 0, 21},  /* 170.67 -> 170 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int *c = cases[i];
        TransformSpec s = transform_defaults(TF_RESIZE_CENTER_CROP, c[2], 0);
        s.resize_ratio = c[3] / 4.0f;
        Warp w;
        transform_draw(&s, c[0], c[1], NULL, &w);
        if (w.item_w != c[4] || w.item_h != c[5] || w.h[2] != c[6] || w.h[5] != c[7])
            fail_msg("Resize+CenterCrop %dx%d size %d ratio %g: item %dx%d offsets (%g, %g), want %dx%d (%d, %d)", c[0], c[1],
                     c[2], c[3] / 4.0, w.item_w, w.item_h, w.h[2], w.h[5], c[4], c[5], c[6], c[7]);
        assert_true(fabsf(w.a[0] - (float)c[0] / c[4]) < 1e-6f && fabsf(w.a[4] - (float)c[1] / c[5]) < 1e-6f);
        assert_int_equal(transform_min_source_side(&s), 4 * (int)rint(c[3] / 4.0 * c[2]));
        assert_true(w.aa[0] == w.a[0] && w.aa[1] == w.a[4]);
    }
}

/* fastai's RandomResizedCrop validation (val_xtra 0.14): the whole image squashed to size + xtra,
 * xtra = ceil(0.14 size / 8) * 8 (64 -> 80, 112 -> 128, 224 -> 256), then the centre; aspect ratio
 * not kept. {W, H, size, squashed side, offset} */
static void test_squash_center_crop(void **state) {
    (void)state;
    const int cases[][5] = {{224, 224, 64, 80, 8}, {224, 224, 112, 128, 8}, {224, 224, 224, 256, 16}, {400, 300, 96, 112, 8}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int *c = cases[i];
        TransformSpec s;
        assert_int_equal(transform_kind_parse("squash", &s.kind), 0);
        s = transform_defaults(s.kind, c[2], 0);
        Warp w;
        transform_draw(&s, c[0], c[1], NULL, &w);
        if (w.item_w != c[3] || w.item_h != c[3] || w.h[2] != c[4] || w.h[5] != c[4])
            fail_msg("squash %dx%d size %d: item %dx%d offsets (%g, %g), want %d square at %d", c[0], c[1], c[2], w.item_w,
                     w.item_h, w.h[2], w.h[5], c[3], c[4]);
        assert_true(fabsf(w.a[0] - (float)c[0] / c[3]) < 1e-6f && fabsf(w.a[4] - (float)c[1] / c[3]) < 1e-6f);
        assert_int_equal(transform_min_source_side(&s), 4 * c[3]);
    }
}

static void test_flip_and_rotations(void **state) {
    (void)state;
    /* fastai's grids use align_corners=True: on a square image flips and quarter turns permute
     * pixels exactly. rotate_mat maps the grid by [[cos, sin], [-sin, cos]]. */
    const int N = 6;
    Image src = image_random(N, N, 3);
    TransformSpec s = fastai_spec(N, 0, 1.0f, 1);
    struct { int flip; float deg; } cases[] = {{1, 0}, {0, 90}, {0, 180}, {0, -90}, {1, 90}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        FastaiParams p = fastai_neutral();
        p.flip = cases[k].flip;
        p.rotate_deg = cases[k].deg;
        Warp w;
        fastai_warp(&s, N, N, &p, &w);
        Out o = run(&w, &src, N);
        for (int i = 0; i < N; i++) /* row */
            for (int j = 0; j < N; j++) { /* column */
                int m = N - 1, sx, sy;
                /* grid (xn, yn) -> (cos xn + sin yn, -sin xn + cos yn), then x -> -x if flipped */
                if (cases[k].deg == 0) sx = j, sy = i;
                else if (cases[k].deg == 90) sx = i, sy = m - j;
                else if (cases[k].deg == 180) sx = m - j, sy = m - i;
                else sx = m - i, sy = j;
                if (cases[k].flip) sx = m - sx;
                expect_pixel(&o, j, i, &src, sx, sy);
            }
        out_free(&o);
    }
    /* torchvision's hflip after a whole-image resized_crop */
    Warp w;
    warp_resized_crop(N, N, 0, 0, N, N, N, 1, &w);
    Out o = run(&w, &src, N);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) expect_pixel(&o, j, i, &src, N - 1 - j, i);
    out_free(&o);
    image_free(&src);
}

static int reflect_index(int k, int n) { /* about the centres of pixels 0 and n-1 */
    int period = 2 * (n - 1), m = ((k % period) + period) % period;
    return m <= n - 1 ? m : period - m;
}

static void test_reflection_padding(void **state) {
    (void)state;
    const int N = 6;
    Image src = image_random(N, N, 4);
    const int shifts[][2] = {{-2, -3}, {4, 1}, {-13, 17}, {0, -5}};
    for (size_t k = 0; k < sizeof shifts / sizeof shifts[0]; k++) {
        Warp w = warp_identity(N, N);
        w.h[2] = (float)shifts[k][0];
        w.h[5] = (float)shifts[k][1];
        Out o = run(&w, &src, N);
        for (int y = 0; y < N; y++)
            for (int x = 0; x < N; x++)
                expect_pixel(&o, x, y, &src, reflect_index(x + shifts[k][0], N), reflect_index(y + shifts[k][1], N));
        out_free(&o);
    }
    /* The taps clamp to the clip box (the crop), not to the image: a 2x upscale of a 2x2 crop
     * reads nothing outside it. */
    Warp w;
    warp_resized_crop(N, N, 2, 2, 2, 2, 4, 0, &w);
    Out o = run(&w, &src, 4);
    expect_pixel(&o, 0, 0, &src, 2, 2);
    expect_pixel(&o, 3, 3, &src, 3, 3);
    expect_pixel(&o, 3, 0, &src, 3, 2);
    out_free(&o);
    image_free(&src);
}

/* The Warp's meaning, written plainly in double: homography with its division, reflection about
 * the border pixels' centres (or zeros), item affine, taps clamped to the clip box. */
static double reflect_ref(double u, double lo, double hi) {
    double span = hi - lo;
    if (span <= 0) return lo;
    double d = fabs(u - lo), flips = floor(d / span), extra = fmod(d, span);
    double r = fmod(flips, 2) == 0 ? lo + extra : hi - extra;
    return r < lo ? lo : (r > hi ? hi : r);
}

static double tent(double t) {
    t = fabs(t);
    return t < 1 ? 1 - t : 0;
}

/* PIL's antialiased filter, written as one 2-D sum: every pixel of the clip box weighted by the
 * product of the tents, each widened by the shrink f along its axis, normalised by their sum. */
static void antialias_reference(const Warp *w, const Image *src, double u, double v, double *rgb) {
    double fx = w->aa[0] > 1 ? w->aa[0] : 1, fy = w->aa[1] > 1 ? w->aa[1] : 1;
    double cx = w->a[0] * u + w->a[1] * v + w->a[2], cy = w->a[3] * u + w->a[4] * v + w->a[5];
    cx = cx < w->clip[0] ? w->clip[0] : (cx > w->clip[2] ? w->clip[2] : cx);
    cy = cy < w->clip[1] ? w->clip[1] : (cy > w->clip[3] ? w->clip[3] : cy);
    double sum = 0, acc[3] = {0, 0, 0};
    int i0 = (int)floor(cx - fx) - 1, i1 = (int)ceil(cx + fx) + 1, j0 = (int)floor(cy - fy) - 1, j1 = (int)ceil(cy + fy) + 1;
    i0 = i0 > w->clip[0] ? i0 : w->clip[0], i1 = i1 < w->clip[2] ? i1 : w->clip[2]; /* (the rest weighs 0) */
    j0 = j0 > w->clip[1] ? j0 : w->clip[1], j1 = j1 < w->clip[3] ? j1 : w->clip[3];
    for (int j = j0; j < j1; j++) {
        double ty = tent((j + 0.5 - cy) / fy);
        for (int i = i0; i < i1; i++) {
            double t = ty * tent((i + 0.5 - cx) / fx);
            sum += t;
            for (int c = 0; c < 3; c++) acc[c] += t * px(src, i, j, c);
        }
    }
    for (int c = 0; c < 3; c++) rgb[c] = acc[c] / sum;
}

static void warp_reference(const Warp *w, const Image *src, int size, double *out) {
    const float *h = w->h;
    size_t plane = (size_t)size * size;
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            double xc = x + 0.5, yc = y + 0.5, q = h[6] * xc + h[7] * yc + h[8];
            double u = (h[0] * xc + h[1] * yc + h[2]) / q, v = (h[3] * xc + h[4] * yc + h[5]) / q;
            size_t at = (size_t)y * size + x;
            if (w->pad == WARP_PAD_ZEROS) {
                if (u < 0 || u > w->item_w || v < 0 || v > w->item_h) {
                    out[at] = out[plane + at] = out[2 * plane + at] = 0;
                    continue;
                }
            } else {
                if (u < 0.5 || u > w->item_w - 0.5) u = reflect_ref(u, 0.5, w->item_w - 0.5);
                if (v < 0.5 || v > w->item_h - 0.5) v = reflect_ref(v, 0.5, w->item_h - 0.5);
            }
            if (w->aa[0] > 1 || w->aa[1] > 1) {
                double rgb[3];
                antialias_reference(w, src, u, v, rgb);
                for (int c = 0; c < 3; c++) out[c * plane + at] = rgb[c];
                continue;
            }
            double sx = w->a[0] * u + w->a[1] * v + w->a[2] - 0.5, sy = w->a[3] * u + w->a[4] * v + w->a[5] - 0.5;
            sx = sx < w->clip[0] ? w->clip[0] : (sx > w->clip[2] - 1 ? w->clip[2] - 1 : sx);
            sy = sy < w->clip[1] ? w->clip[1] : (sy > w->clip[3] - 1 ? w->clip[3] - 1 : sy);
            int x0 = (int)floor(sx), y0 = (int)floor(sy);
            int x1 = x0 + 1 < w->clip[2] ? x0 + 1 : x0, y1 = y0 + 1 < w->clip[3] ? y0 + 1 : y0;
            double fx = sx - x0, fy = sy - y0;
            for (int c = 0; c < 3; c++)
                out[c * plane + at] = (1 - fy) * ((1 - fx) * px(src, x0, y0, c) + fx * px(src, x1, y0, c)) +
                                      fy * ((1 - fx) * px(src, x0, y1, c) + fx * px(src, x1, y1, c));
        }
}

/* Worst |warp_apply_f32 - reference| (0..255 units), and the u8 output within one step. */
static double check_against_reference(const Warp *w, const Image *src, int size) {
    size_t plane = (size_t)size * size;
    double *want = xmalloc(sizeof(double) * 3 * plane);
    warp_reference(w, src, size, want);
    Warp plain = *w; /* the reference has no lighting */
    plain.brightness = 0.5f, plain.contrast = 1;
    Out o = run(&plain, src, size);
    double worst = 0;
    for (size_t i = 0; i < 3 * plane; i++) {
        double e = fabs(denorm(o.f32[i], (int)(i / plane)) - want[i]);
        worst = e > worst ? e : worst;
        size_t pix = i % plane, c = i / plane;
        int u8 = o.u8[pix * 3 + c];
        if (fabs(u8 - want[i]) > 0.5 + 0.05) fail_msg("u8 output %d, reference %.4f", u8, want[i]);
    }
    out_free(&o);
    free(want);
    return worst;
}

static void test_against_reference(void **state) {
    (void)state;
    /* Random recipe warps at sizes across the sampler's 64-pixel blocks, from sources of every
     * shape down to one pixel (the 4-byte tap loads must not read past the image). */
    Rng r;
    rng_seed(&r, 21);
    const int srcs[][2] = {{460, 460}, {500, 375}, {97, 131}, {1, 1}, {1, 7}, {7, 1}, {2, 2}, {3, 5}};
    const int sizes[] = {150, 65, 64, 31, 8};
    double worst = 0, worst_aa = 0;
    int n_aa = 0;
    for (size_t k = 0; k < sizeof srcs / sizeof srcs[0]; k++) {
        Image src = image_random(srcs[k][0], srcs[k][1], 30 + k);
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
            enum { NS = 6 };
            TransformSpec specs[NS];
            specs[0] = fastai_spec(sizes[j], 0, 0.75f, 1);
            specs[1] = fastai_spec(sizes[j], 460, 0.35f, 1);
            specs[1].max_warp = 0.4f, specs[1].max_rotate = 45, specs[1].p_affine = 1; /* reflect a lot */
            specs[2] = transform_defaults(TF_RANDOM_RESIZED_CROP, sizes[j], 1);
            specs[3] = transform_defaults(TF_RESIZE_CENTER_CROP, sizes[j], 0);
            specs[3].resize_ratio = 0.75f; /* crop larger than the resized image: zeros */
            /* an item resize that shrinks, then fastai's rotations and warps (the antialiased
             * sampler's general path), or on the validation set its axis-aligned resize */
            specs[4] = fastai_spec(sizes[j], 40, 0.5f, 1);
            specs[4].max_warp = 0.4f, specs[4].max_rotate = 45, specs[4].p_affine = 1;
            specs[5] = fastai_spec(sizes[j], 40, 1.0f, 0);
            for (int t = 0; t < NS; t++)
                for (int rep = 0; rep < 2; rep++) {
                    Warp w;
                    transform_draw(&specs[t], src.w, src.h, &r, &w);
                    w.pool_w = w.pool_h = 0; /* the sampler alone; pooling: test_parity_fastai */
                    /* as drawn (antialiased where the item resize shrinks), and with plain bilinear */
                    for (int plain = 0; plain < 2; plain++) {
                        int aa = !plain && (w.aa[0] > 1 || w.aa[1] > 1);
                        if (plain) w.aa[0] = w.aa[1] = 0;
                        double e = check_against_reference(&w, &src, sizes[j]);
                        if (e > 0.05)
                            fail_msg("source %dx%d size %d spec %d%s: worst %.4f", src.w, src.h, sizes[j], t,
                                     aa ? " (antialiased)" : "", e);
                        if (aa) worst_aa = e > worst_aa ? e : worst_aa, n_aa++;
                        else worst = e > worst ? e : worst;
                    }
                }
        }
        image_free(&src);
    }
    printf("sampler against the double-precision reference: worst %.4f bilinear, %.4f antialiased (%d warps) "
           "(0..255 units)\n", worst, worst_aa, n_aa);
    assert_true(n_aa > 100);
}

static void test_antialias_paths(void **state) {
    (void)state;
    /* The general path (a rotated map: the filter at each pixel's point) agrees with the
     * separable one (an axis-aligned map): fastai's item Resize(16) shrinking a 40x40 image
     * 2.5x, with and without a quarter turn, which permutes pixels exactly. */
    const int N = 16;
    Image src = image_random(40, 40, 8);
    TransformSpec s = fastai_spec(N, N, 1.0f, 1);
    FastaiParams p = fastai_neutral();
    Warp w0, w90;
    fastai_warp(&s, 40, 40, &p, &w0);
    p.rotate_deg = 90;
    fastai_warp(&s, 40, 40, &p, &w90);
    assert_true(w0.aa[0] == 2.5f && w0.aa[1] == 2.5f && w90.h[1] != 0);
    Out o0 = run(&w0, &src, N), o90 = run(&w90, &src, N);
    double worst = 0;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) { /* rotated (row i, col j) = unrotated (row N-1-j, col i) */
                double e = fabs(o90.f32[c * N * N + i * N + j] - o0.f32[c * N * N + (N - 1 - j) * N + i]);
                worst = e > worst ? e : worst;
            }
    printf("antialiased: general path against the separable one: worst %.2e (normalised units)\n", worst);
    assert_true(worst < 1e-4);
    out_free(&o0);
    out_free(&o90);
    image_free(&src);
}

/* ---------------------------------------------------------------- values */

static void test_normalisation(void **state) {
    (void)state;
    const int vals[] = {0, 128, 255};
    for (int k = 0; k < 3; k++) {
        Image src = image_new(4, 4);
        memset(src.rgb, vals[k], 4 * 4 * 3);
        Warp w = warp_identity(4, 4);
        Out o = run(&w, &src, 4);
        for (int c = 0; c < 3; c++) {
            double want = (vals[k] / 255.0 - MEAN[c]) / STD[c];
            for (int i = 0; i < 16; i++) assert_true(fabs(o.f32[c * 16 + i] - want) < 1e-5);
        }
        out_free(&o);
        image_free(&src);
    }
    /* the constants themselves: ImageNet's mean and std */
    Image src = image_new(2, 2);
    Warp w = warp_identity(2, 2);
    float out[12];
    warp_apply_f32(&w, &src, 2, out);
    assert_true(fabs(out[0] - (-0.485 / 0.229)) < 1e-5 && fabs(out[4] - (-0.456 / 0.224)) < 1e-5 &&
                fabs(out[8] - (-0.406 / 0.225)) < 1e-5);
    image_free(&src);
}

static double fastai_lighting(double x, double b, double c) {
    x = x < 1e-7 ? 1e-7 : (x > 1 - 1e-7 ? 1 - 1e-7 : x);
    double z = c * (-log(1 / x - 1) + log(b / (1 - b)));
    return 1 / (1 + exp(-z));
}

static void test_lighting(void **state) {
    (void)state;
    /* every uint8 value once, through fastai's brightness then contrast in logit space */
    Image src = image_new(16, 16);
    for (int i = 0; i < 256; i++) src.rgb[i * 3] = src.rgb[i * 3 + 1] = src.rgb[i * 3 + 2] = (uint8_t)i;
    const float cases[][2] = {{0.6f, 1.2f}, {0.4f, 0.8f}, {0.6f, 1.25f}, {0.4f, 1.0f}, {0.5f, 0.8f}, {0.55f, 1.1f}};
    double worst = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        Warp w = warp_identity(16, 16);
        w.brightness = cases[k][0];
        w.contrast = cases[k][1];
        Out o = run(&w, &src, 16);
        for (int i = 0; i < 256; i++)
            for (int c = 0; c < 3; c++) {
                double want = fastai_lighting(i / 255.0, cases[k][0], cases[k][1]);
                double got = denorm(o.f32[c * 256 + i], c) / 255.0;
                double e = fabs(got - want);
                worst = e > worst ? e : worst;
                assert_int_equal(o.u8[i * 3 + c], i); /* the u8 output carries no lighting */
            }
        out_free(&o);
    }
    printf("lighting: worst error %.2e (in 0..1 units) against fastai's formula\n", worst);
    assert_true(worst < 1e-5);
    image_free(&src);
}

/* ---------------------------------------------------------------- draws */

typedef struct { int left, top, w, h, flip; } Box;

static Box box_of(const Warp *w, int size) { /* recover warp_resized_crop's arguments */
    Box b = {(int)lrintf(w->a[2]), (int)lrintf(w->a[5]), (int)lrintf(w->a[0] * size), (int)lrintf(w->a[4] * size),
             w->h[0] < 0};
    return b;
}

static void test_rrc_distribution(void **state) {
    (void)state;
    const int W = 500, H = 375, S = 224, n = 20000;
    TransformSpec s = transform_defaults(TF_RANDOM_RESIZED_CROP, S, 1);
    Rng r;
    rng_seed(&r, 11);
    double fmin = 1e9, fmax = 0, rmin = 1e9, rmax = 0;
    int flips = 0;
    for (int i = 0; i < n; i++) {
        Warp w;
        transform_draw(&s, W, H, &r, &w);
        Box b = box_of(&w, S);
        assert_true(b.w > 0 && b.w <= W && b.h > 0 && b.h <= H);
        assert_true(b.left >= 0 && b.left <= W - b.w && b.top >= 0 && b.top <= H - b.h);
        assert_true(w.clip[0] == b.left && w.clip[1] == b.top && w.clip[2] == b.left + b.w && w.clip[3] == b.top + b.h);
        assert_int_equal(w.item_w, S);
        /* the drawn area and ratio are in range; the box's are, up to rounding each side */
        assert_true((b.w + 0.5) * (b.h + 0.5) >= s.scale_min * W * H && (b.w - 0.5) * (b.h - 0.5) <= s.scale_max * W * H);
        assert_true((b.w + 0.5) / (b.h - 0.5) >= s.ratio_min && (b.w - 0.5) / (b.h + 0.5) <= s.ratio_max);
        double f = (double)b.w * b.h / (W * H), q = (double)b.w / b.h;
        fmin = f < fmin ? f : fmin, fmax = f > fmax ? f : fmax;
        rmin = q < rmin ? q : rmin, rmax = q > rmax ? q : rmax;
        flips += b.flip;
    }
    printf("RandomResizedCrop: area fraction %.3f..%.3f, ratio %.3f..%.3f, flipped %.4f\n", fmin, fmax, rmin, rmax,
           (double)flips / n);
    assert_true(fmin < 0.085 && fmax > 0.97 && rmin < 0.76 && rmax > 1.31);
    assert_true(fabs((double)flips / n - 0.5) < 0.015);
}

static void test_rrc_fallback(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 12);
    TransformSpec s = transform_defaults(TF_RANDOM_RESIZED_CROP, 32, 1);
    s.flip = 0;
    /* too wide or too tall for any crop of at least 8%: the centre crop of the extreme ratio */
    const int cases[][6] = {{1000, 10, 493, 0, 13, 10}, {10, 1000, 0, 493, 10, 13}};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 50; i++) {
            Warp w;
            transform_draw(&s, cases[k][0], cases[k][1], &r, &w);
            Box b = box_of(&w, 32);
            assert_true(b.left == cases[k][2] && b.top == cases[k][3] && b.w == cases[k][4] && b.h == cases[k][5]);
        }
    /* areas larger than the image never fit: the whole image when its ratio is in range, else
     * the in-range centre crop (round(100 / (3/4)) = 133) */
    s.scale_min = 1.5f, s.scale_max = 2.0f;
    Warp w;
    transform_draw(&s, 100, 80, &r, &w);
    Box b = box_of(&w, 32);
    assert_true(b.left == 0 && b.top == 0 && b.w == 100 && b.h == 80);
    transform_draw(&s, 100, 200, &r, &w);
    b = box_of(&w, 32);
    assert_true(b.left == 0 && b.top == 33 && b.w == 100 && b.h == 133);
}

static void test_fastai_draws(void **state) {
    (void)state;
    const int n = 20000, P = 460;
    TransformSpec s = fastai_spec(224, P, 0.75f, 1);
    Rng r;
    rng_seed(&r, 13);
    int flip = 0, rot = 0, zoom = 0, wx = 0, wy = 0, bri = 0, con = 0;
    double logc = 0, minf = 1;
    for (int i = 0; i < n; i++) {
        FastaiParams p;
        fastai_draw(&s, 500, 375, &r, &p);
        assert_true(p.item_pct_x >= 0 && p.item_pct_x < 1 && p.item_pct_y >= 0 && p.item_pct_y < 1);
        assert_true(fabsf(p.rotate_deg) <= 10 && p.zoom >= 1 && p.zoom <= 1.1f);
        assert_true(p.zoom_col >= 0 && p.zoom_col < 1 && p.zoom_row >= 0 && p.zoom_row < 1);
        assert_true(fabsf(p.warp_x) <= 0.2f && fabsf(p.warp_y) <= 0.2f);
        assert_true(p.brightness >= 0.4f && p.brightness <= 0.6f && p.contrast >= 0.8f - 1e-6f && p.contrast <= 1.25f + 1e-6f);
        /* RandomResizedCropGPU with aug_transforms' ratio (1, 1): squares of 75..100% of the item */
        assert_int_equal(p.crop_w, p.crop_h);
        assert_true(p.crop_x >= 0 && p.crop_x + p.crop_w <= P && p.crop_y >= 0 && p.crop_y + p.crop_h <= P);
        double f = (double)p.crop_w * p.crop_h / (P * P);
        assert_true((p.crop_w + 0.5) * (p.crop_w + 0.5) >= 0.75 * P * P && f <= 1);
        minf = f < minf ? f : minf;
        flip += p.flip, rot += p.rotate_deg != 0, zoom += p.zoom != 1, wx += p.warp_x != 0, wy += p.warp_y != 0;
        bri += p.brightness != 0.5f, con += p.contrast != 1;
        logc += log(p.contrast);
    }
    printf("fastai: flip %.3f rotate %.3f zoom %.3f warp %.3f/%.3f brightness %.3f contrast %.3f, min crop area %.3f\n",
           (double)flip / n, (double)rot / n, (double)zoom / n, (double)wx / n, (double)wy / n, (double)bri / n, (double)con / n,
           minf);
    assert_true(fabs((double)flip / n - 0.5) < 0.015);
    const int parts[] = {rot, zoom, wx, wy, bri, con};
    for (int k = 0; k < 6; k++) assert_true(fabs((double)parts[k] / n - 0.75) < 0.015);
    assert_true(fabs(logc / n) < 0.01 && minf < 0.76);

    /* transform_draw is fastai_draw + fastai_warp */
    Rng r1, r2;
    rng_seed(&r1, 99);
    r2 = r1;
    Warp w1, w2;
    FastaiParams p;
    transform_draw(&s, 500, 375, &r1, &w1);
    fastai_draw(&s, 500, 375, &r2, &p);
    fastai_warp(&s, 500, 375, &p, &w2);
    assert_memory_equal(&w1, &w2, sizeof w1);

    /* validation: centre square of the short side, the whole item resized with align_corners=True */
    s.train = 0;
    fastai_draw(&s, 500, 375, &r, &p);
    assert_true(p.item_pct_x == 0.5f && !p.flip && p.rotate_deg == 0 && p.zoom == 1 && p.warp_x == 0 && p.warp_y == 0);
    assert_true(p.brightness == 0.5f && p.contrast == 1 && p.crop_x == 0 && p.crop_y == 0 && p.crop_w == P && p.crop_h == P);
    Warp w;
    fastai_warp(&s, 500, 375, &p, &w);
    assert_true(w.item_w == P && w.clip[0] == 62 && w.clip[2] == 437 && w.clip[1] == 0 && w.clip[3] == 375);
    assert_true(fabsf(w.a[0] - 375.0f / P) < 1e-6f && w.a[2] == 62);
    double k = (P - 1.0) / (224 - 1.0);
    assert_true(fabs(w.h[0] - k) < 1e-5 && fabs(w.h[2] - (0.5 - 0.5 * k)) < 1e-4 && w.h[1] == 0 && w.h[6] == 0);
}

static void test_min_source_side(void **state) {
    (void)state;
    /* 4x the resize's output side: a DCT-scaled decode leaves the antialiased resize a shrink of
     * at least 4 */
    TransformSpec s = fastai_spec(224, 460, 0.75f, 1);
    assert_int_equal(transform_min_source_side(&s), 4 * 460);
    s.presize = 0;
    assert_int_equal(transform_min_source_side(&s), 0);
    s = transform_defaults(TF_RANDOM_RESIZED_CROP, 224, 1);
    assert_int_equal(transform_min_source_side(&s), 0);
    s = transform_defaults(TF_CENTER_CROP, 224, 0);
    assert_int_equal(transform_min_source_side(&s), 0);
    s = transform_defaults(TF_RESIZE_CENTER_CROP, 224, 0);
    s.resize_ratio = 1.25f;
    assert_int_equal(transform_min_source_side(&s), 4 * 280);
    s = transform_defaults(TF_RANDOM_RESIZED_CROP, 64, 0); /* its validation: Resize + CenterCrop */
    s.resize_ratio = 1.14f;
    assert_int_equal(transform_min_source_side(&s), 4 * 73);
}

static void test_defaults(void **state) {
    (void)state;
    TransformSpec f = transform_defaults(TF_FASTAI, 224, 1);
    assert_true(f.min_scale == 1 && f.presize == 0 && f.flip && f.max_rotate == 10 && f.max_zoom == 1.1f &&
                f.max_warp == 0.2f && f.max_lighting == 0.2f && f.p_affine == 0.75f && f.p_lighting == 0.75f &&
                f.ratio_min == 1 && f.ratio_max == 1);
    TransformSpec t = transform_defaults(TF_RANDOM_RESIZED_CROP, 224, 1);
    assert_true(t.scale_min == 0.08f && t.scale_max == 1 && t.ratio_min == 0.75f && t.ratio_max == 4.0f / 3 && t.flip);
}

/* ---------------------------------------------------------------- parity with torch */

static StFile ref;

/* Read a reference file, giving each tensor its own malloc'd copy: a tensor's data in the file need
 * not be aligned for its type (U8 tensors come between float ones), and the tests read them as
 * floats and ints. 0, or -1 after a message that says how to regenerate the file. */
static int ref_file_open(StFile *f, const char *path, const char *regenerate) {
    char err[256];
    if (st_read(path, f, err, sizeof err) != 0) {
        fprintf(stderr, "%s (regenerate with %s)\n", err, regenerate);
        return -1;
    }
    for (int i = 0; i < f->count; i++)
        f->tensors[i].data = memcpy(xmalloc(f->tensors[i].bytes + 1), f->tensors[i].data, f->tensors[i].bytes);
    return 0;
}

static void ref_file_close(StFile *f) {
    for (int i = 0; i < f->count; i++) free((void *)f->tensors[i].data);
    st_close(f);
}

/* The tensor named fmt % i followed by field ("rc%d", 3, ".out" -> "rc3.out"), or NULL. */
static const StTensor *ref_file_get(const StFile *f, const char *fmt, int i, const char *field) {
    char name[64];
    snprintf(name, sizeof name, fmt, i);
    strncat(name, field, sizeof name - strlen(name) - 1);
    return st_find(f, name);
}

/* A stored uint8 HWC RGB image. */
static Image ref_file_image(const StFile *f, const char *name) {
    const StTensor *t = st_find(f, name);
    assert_non_null(t);
    assert_true(t->dtype == ST_U8 && t->ndim == 3 && t->shape[2] == 3);
    Image im = image_new((int)t->shape[1], (int)t->shape[0]);
    memcpy(im.rgb, t->data, t->bytes);
    return im;
}

static int ref_setup(void **state) {
    (void)state;
    return ref_file_open(&ref, REF_PATH, "/usr/bin/python3 scripts/augment_reference.py");
}

static int ref_teardown(void **state) {
    (void)state;
    ref_file_close(&ref);
    return 0;
}

static const StTensor *ref_get(const char *fmt, int i, const char *field) { return ref_file_get(&ref, fmt, i, field); }
static Image ref_image(const char *name) { return ref_file_image(&ref, name); }

/* Largest and mean |ours - torch| over an output, in 0..255 units; fails past tol or mean_tol.
 * Returns the mean. */
static double compare(const char *label, const Warp *w, const Image *src, int size, const StTensor *want, double tol,
                    double mean_tol) {
    assert_non_null(want);
    assert_true(want->dtype == ST_F32 && want->ndim == 3 && want->shape[0] == 3 && want->shape[1] == size &&
                want->shape[2] == size);
    float *out = xmalloc(sizeof(float) * 3 * (size_t)size * size);
    warp_apply_f32(w, src, size, out);
    const float *ref_v = want->data;
    double worst = 0, sum = 0;
    size_t plane = (size_t)size * size, at = 0;
    for (size_t i = 0; i < 3 * plane; i++) {
        double e = fabs(denorm(out[i], (int)(i / plane)) - ref_v[i]);
        sum += e;
        if (e > worst) worst = e, at = i;
    }
    printf("%-6s %2dx%-2d  worst %.4f (at c%zu y%zu x%zu)  mean %.5f\n", label, size, size, worst, at / plane,
           (at % plane) / size, at % size, sum / (3 * plane));
    free(out);
    if (!(worst <= tol)) fail_msg("%s: worst error %.4f over the tolerance %.4f", label, worst, tol);
    if (!(sum / (3 * plane) <= mean_tol)) fail_msg("%s: mean error %.4f over %.4f", label, sum / (3 * plane), mean_tol);
    return sum / (3 * plane);
}

static void test_parity_torchvision(void **state) {
    (void)state;
    Image src = ref_image("src"), tall = ref_image("tall");
    char label[16];
    for (int i = 0; ref_get("rc%d", i, ".params"); i++) { /* resized_crop (+ hflip) */
        const int32_t *p = ref_get("rc%d", i, ".params")->data;
        Warp w;
        warp_resized_crop(src.w, src.h, p[0], p[1], p[2], p[3], p[4], p[5], &w);
        snprintf(label, sizeof label, "rc%d", i);
        compare(label, &w, &src, p[4], ref_get("rc%d", i, ".out"), 0.05, 0.01);
        w.aa[0] = w.aa[1] = 0; /* plain bilinear against torch's antialias=False */
        snprintf(label, sizeof label, "rcp%d", i);
        compare(label, &w, &src, p[4], ref_get("rcp%d", i, ".out"), 0.05, 0.01);
    }
    for (int i = 0; ref_get("rcc%d", i, ".params"); i++) { /* Resize + CenterCrop */
        const int32_t *p = ref_get("rcc%d", i, ".params")->data;
        const Image *im = p[1] ? &tall : &src;
        TransformSpec s = transform_defaults(TF_RESIZE_CENTER_CROP, p[0], 0);
        s.resize_ratio = *(const float *)ref_get("rcc%d", i, ".ratio")->data;
        Warp w;
        transform_draw(&s, im->w, im->h, NULL, &w);
        snprintf(label, sizeof label, "rcc%d", i);
        compare(label, &w, im, p[0], ref_get("rcc%d", i, ".out"), 0.05, 0.01);
    }
    for (int i = 0; ref_get("cc%d", i, ".params"); i++) { /* CenterCrop, zero padding */
        const int32_t *p = ref_get("cc%d", i, ".params")->data;
        const Image *im = p[1] ? &tall : &src;
        TransformSpec s = transform_defaults(TF_CENTER_CROP, p[0], 0);
        Warp w;
        transform_draw(&s, im->w, im->h, NULL, &w);
        snprintf(label, sizeof label, "cc%d", i);
        compare(label, &w, im, p[0], ref_get("cc%d", i, ".out"), 1e-3, 1e-3);
    }
    image_free(&src);
    image_free(&tall);
}

/* Our outputs against a PIL uint8 output: worst and mean |f32 - PIL| (0..255 units), worst
 * |u8 - PIL|. PIL rounds to uint8 after each of its passes: within 1 of exact. */
typedef struct {
    double worst_f32, mean_f32;
    int worst_u8;
} PilErr;

static PilErr pil_error(const Warp *w, const Image *src, int size, const StTensor *want) {
    assert_non_null(want);
    assert_true(want->dtype == ST_U8 && want->ndim == 3 && want->shape[0] == size && want->shape[1] == size &&
                want->shape[2] == 3);
    const uint8_t *ref_v = want->data;
    Out o = run(w, src, size);
    PilErr e = {0, 0, 0};
    size_t plane = (size_t)size * size;
    for (size_t k = 0; k < 3 * plane; k++) { /* HWC */
        int c = (int)(k % 3);
        size_t pix = k / 3;
        double d = fabs(denorm(o.f32[c * plane + pix], c) - ref_v[k]);
        e.worst_f32 = d > e.worst_f32 ? d : e.worst_f32;
        e.mean_f32 += d / (3 * plane);
        int du = abs((int)o.u8[k] - (int)ref_v[k]);
        e.worst_u8 = du > e.worst_u8 ? du : e.worst_u8;
    }
    out_free(&o);
    return e;
}

static void test_parity_pil(void **state) {
    (void)state;
    /* torchvision's RandomResizedCrop on PIL images, as the PyTorch peers train: PIL's
     * antialiased bilinear resize of the crop. Plain bilinear sampling (the sampler before
     * antialiasing, Warp.aa off) must fail the same tolerance wherever the crop shrinks. */
    Image src = ref_image("src"), tall = ref_image("tall");
    int n = 0;
    for (int i = 0; ref_get("pilrc%d", i, ".params"); i++, n++) {
        const int32_t *p = ref_get("pilrc%d", i, ".params")->data;
        const Image *im = p[6] ? &tall : &src;
        Warp w;
        warp_resized_crop(im->w, im->h, p[0], p[1], p[2], p[3], p[4], p[5], &w);
        PilErr e = pil_error(&w, im, p[4], ref_get("pilrc%d", i, ".out"));
        Warp plain = w;
        plain.aa[0] = plain.aa[1] = 0;
        PilErr old = pil_error(&plain, im, p[4], ref_get("pilrc%d", i, ".out"));
        printf("pilrc%d %2dx%-2d  shrink %.2f x %.2f: worst %d (uint8) %.3f, mean %.3f; plain bilinear: worst %d, "
               "mean %.3f\n", i, p[4], p[4], w.aa[0], w.aa[1], e.worst_u8, e.worst_f32, e.mean_f32, old.worst_u8,
               old.mean_f32);
        if (!(e.worst_u8 <= 1 && e.worst_f32 <= 1.001 && e.mean_f32 <= 0.5))
            fail_msg("pilrc%d: worst %d (uint8), %.3f, mean %.3f from PIL's: over 1, 1.001, 0.5", i, e.worst_u8,
                     e.worst_f32, e.mean_f32);
        if ((w.aa[0] > 1.2f || w.aa[1] > 1.2f) && !(old.worst_u8 > 1))
            fail_msg("pilrc%d: plain bilinear within PIL's tolerance: the case does not test antialiasing", i);
    }
    assert_true(n >= 6);
    image_free(&src);
    image_free(&tall);
}

/* ---------------------------------------------------------------- parity with fastai's own code */

/* tests/ref/fastai_aug.safetensors, from scripts/fastai_reference_aug.py: fastai's transforms run
 * with fixed parameters, and the distributions of their random draws. */
static StFile fref;

static int fref_setup(void **state) {
    (void)state;
    return ref_file_open(&fref, FASTAI_REF_PATH, "reference-env/bin/python scripts/fastai_reference_aug.py");
}

static int fref_teardown(void **state) {
    (void)state;
    ref_file_close(&fref);
    return 0;
}

static const StTensor *fa_get(const char *fmt, int i, const char *field) { return ref_file_get(&fref, fmt, i, field); }
static Image fa_image(const char *name) { return ref_file_image(&fref, name); }

/* A pooled case: within tol / mean_tol of fastai's output, and (the case tests the pooling) a mean
 * error over min_effect without it. Returns the warp without pooling. */
static Warp expect_pooled(const char *label, const Warp *w, const Image *im, int size, const StTensor *want,
                          double tol, double mean_tol, double min_effect) {
    compare(label, w, im, size, want, tol, mean_tol);
    Warp plain = *w;
    plain.pool_w = plain.pool_h = 0;
    char nolabel[48];
    snprintf(nolabel, sizeof nolabel, "%s-nopool", label);
    double mean = compare(nolabel, &plain, im, size, want, 255, 60);
    if (!(mean > min_effect)) fail_msg("%s: mean %.3f without pooling: the case does not test it", label, mean);
    return plain;
}

/* flip rot zoom col row warp_x warp_y brightness contrast, as the fa/fr cases store them */
static FastaiParams params_from(const float *v) {
    FastaiParams p = fastai_neutral();
    p.flip = v[0] != 0;
    p.rotate_deg = v[1], p.zoom = v[2], p.zoom_col = v[3], p.zoom_row = v[4], p.warp_x = v[5], p.warp_y = v[6];
    p.brightness = v[7], p.contrast = v[8];
    return p;
}

/* fastai's aug_transforms on a batch, through its own Flip/Warp/Rotate/Zoom/Brightness/Contrast
 * with fixed draws, against fastai_warp + warp_apply_f32 with the same FastaiParams. */
static void test_parity_fastai(void **state) {
    (void)state;
    Image imgs[4] = {fa_image("src"), fa_image("tall"), fa_image("grad"), fa_image("gradw")};
    char label[32];
    int n = 0, n_pooled = 0;
    for (int i = 0; fa_get("fa%d", i, ".params"); i++, n++) {
        /* min_scale 1: one grid_sample from the item to size x size, then the lighting: exact in
         * principle (fastai in float32, we in float with a lighting table within 2e-6 of 1):
         * 0.05 worst, 0.01 mean, as the torchvision cases. */
        FastaiParams p = params_from(fa_get("fa%d", i, ".params")->data);
        const int32_t *sz = fa_get("fa%d", i, ".size")->data;
        const Image *im = &imgs[sz[1]];
        TransformSpec s = fastai_spec(sz[0], 0, 1.0f, 1);
        Warp w;
        fastai_warp(&s, im->w, im->h, &p, &w);
        snprintf(label, sizeof label, "fa%d%s", i, sz[2] ? "-pool" : "");
        /* fastai area-pools (F.interpolate(mode='area')) where it shrinks the item more than 2x:
         * we decide the same */
        if ((w.pool_w > 0) != (sz[2] != 0))
            fail_msg("%s: pooling %dx%d where fastai %s", label, w.pool_w, w.pool_h, sz[2] ? "pooled" : "did not");
        if (!sz[2]) {
            compare(label, &w, im, sz[0], fa_get("fa%d", i, ".out"), 0.05, 0.01);
            continue;
        }
        /* Pooled: our pooled image is rounded to bytes (so any backend's warp_batch samples it as
         * an image), fastai's is float: within half a byte's step, 0.25 on average. Without the
         * pooling, the difference is that of an area pre-filter on random pixels (measured mean
         * 27.6 and 17.6): the case tests the pooling. */
        n_pooled++;
        Warp plain = expect_pooled(label, &w, im, sz[0], fa_get("fa%d", i, ".out"), 0.51, 0.25, 5);
        snprintf(label, sizeof label, "fa%d-both-without", i); /* and against fastai without it */
        compare(label, &plain, im, sz[0], fa_get("fa%d", i, ".out_plain"), 0.05, 0.01);
    }
    for (int i = 0; fa_get("fr%d", i, ".params"); i++, n++) {
        /* fastai resamples twice (affine at item size, then RandomResizedCropGPU's crop to
         * size), cnntrain once: on linear gradients, where bilinear is exact, the two agree but
         * for the second pass interpolating across the reflection's kinks: 3 worst, 0.05 mean. */
        FastaiParams p = params_from(fa_get("fr%d", i, ".params")->data);
        const int32_t *c = fa_get("fr%d", i, ".crop")->data;
        const Image *im = &imgs[c[5] == 2 ? 0 : 2 + c[5]]; /* grad, gradw, src */
        p.crop_x = c[0], p.crop_y = c[1], p.crop_w = c[2], p.crop_h = c[3];
        TransformSpec s = fastai_spec(c[4], 0, 0.75f, 1);
        Warp w;
        fastai_warp(&s, im->w, im->h, &p, &w);
        snprintf(label, sizeof label, "fr%d%s", i, c[6] ? "-pool" : "");
        if ((w.pool_w > 0) != (c[6] != 0))
            fail_msg("%s: pooling %dx%d where fastai %s", label, w.pool_w, w.pool_h, c[6] ? "pooled" : "did not");
        if (c[5] == 2) {
            /* random pixels, the affine part the identity: one resampling in fastai too, of the
             * crop area-pooled (crop > 2 x size): we pool the item on the crop's grid of windows,
             * so exact but for our pooled bytes' rounding, as fa5-6 */
            expect_pooled(label, &w, im, c[4], fa_get("fr%d", i, ".out"), 0.51, 0.25, 5);
        } else {
            /* pre-pooled (crop > 2 x size): fastai pools the crop after its affine pass, we the
             * item on the crop's grid of windows before our one: on a gradient within 3.5 worst
             * and 0.8 mean (measured 2.92 and 0.62) */
            compare(label, &w, im, c[4], fa_get("fr%d", i, ".out"), 3.5, c[6] ? 0.8 : 0.05);
        }
        n_pooled += c[6];
    }
    assert_true(n >= 12 && n_pooled >= 3);
    for (int k = 0; k < 4; k++) image_free(&imgs[k]);
}

/* The Imagenette recipe's path (transform = fastai): fastai's Resize(presize) on a PIL image, then
 * its batch transforms shrinking that item more than 2x, where _grid_sample area-pools it first:
 * with fixed draws at min_scale 1, and RandomResizedCropGPU on the validation set. */
static void test_parity_fastai_presize(void **state) {
    (void)state;
    Image imgs[2] = {fa_image("img80"), fa_image("img45")};
    char label[32];
    int n = 0;
    for (int i = 0; fa_get("fp%d", i, ".params"); i++, n++) {
        const float *v = fa_get("fp%d", i, ".params")->data;
        int P = (int)v[0], size = (int)v[4], kind = (int)v[5], pooled = v[6] != 0;
        const Image *im = &imgs[(int)v[3]];
        TransformSpec s = fastai_spec(size, P, kind == 0 ? 1.0f : 0.35f, kind == 0);
        FastaiParams p;
        if (kind == 0) {
            p = params_from(v + 7);
        } else {
            fastai_draw(&s, im->w, im->h, NULL, &p); /* the validation set's: no randomness */
        }
        p.item_pct_x = v[1], p.item_pct_y = v[2];
        Warp w;
        fastai_warp(&s, im->w, im->h, &p, &w);
        snprintf(label, sizeof label, "fp%d", i);
        if (!pooled || !(w.pool_w > 0))
            fail_msg("%s: fastai %s, we pool to %dx%d: the case must test pooling in both", label,
                     pooled ? "pooled" : "did not pool", w.pool_w, w.pool_h);
        /* Our item is PIL's within one byte (expect_pil), the pooled image rounded to bytes: the
         * item's and the pooling's rounding, through a bilinear resampling (measured: worst 0.87,
         * mean 0.24; at most 1 + 0.5) */
        expect_pooled(label, &w, im, size, fa_get("fp%d", i, ".out"), 1.5, 0.3, 3);
    }
    assert_true(n >= 4);
    for (int k = 0; k < 2; k++) image_free(&imgs[k]);
}

/* fastai's item transforms on PIL images (uint8, PIL's fixed-point two-pass resize: within one
 * step of exact), against our transform for each: worst 1 (uint8) and 1.001 (float), mean 0.5.
 * Where the resize shrinks, plain bilinear (Warp.aa off) must fail that tolerance. */
static void expect_pil(const char *label, const Warp *w, const Image *im, int size, const StTensor *want) {
    PilErr e = pil_error(w, im, size, want);
    Warp plain = *w;
    plain.aa[0] = plain.aa[1] = 0;
    PilErr old = pil_error(&plain, im, size, want);
    printf("%-6s %2dx%-2d from %2dx%-2d shrink %.2f x %.2f: worst %d (uint8) %.3f, mean %.3f; plain bilinear: "
           "worst %d\n", label, size, size, im->w, im->h, w->aa[0], w->aa[1], e.worst_u8, e.worst_f32, e.mean_f32,
           old.worst_u8);
    if (!(e.worst_u8 <= 1 && e.worst_f32 <= 1.001 && e.mean_f32 <= 0.5))
        fail_msg("%s: worst %d (uint8), %.3f, mean %.3f from fastai's: over 1, 1.001, 0.5", label, e.worst_u8,
                 e.worst_f32, e.mean_f32);
    if ((w->aa[0] > 1.2f || w->aa[1] > 1.2f) && !(old.worst_u8 > 1))
        fail_msg("%s: plain bilinear within PIL's tolerance: the case does not test antialiasing", label);
}

static void test_parity_fastai_items(void **state) {
    (void)state;
    Image imgs[2] = {fa_image("img80"), fa_image("img45")};
    char label[32];
    int n = 0;
    for (int i = 0; fa_get("rrct%d", i, ".params"); i++, n++) {
        /* RandomResizedCrop (training) with its box fixed, after FlipItem when flip: fastai flips
         * the source before cropping (FlipItem's order 0 < 1), we flip the output, so our box
         * is the mirror of fastai's. */
        const int32_t *p = fa_get("rrct%d", i, ".params")->data;
        const Image *im = &imgs[p[6]];
        int left = p[5] ? im->w - p[0] - p[2] : p[0];
        Warp w;
        warp_resized_crop(im->w, im->h, left, p[1], p[2], p[3], p[4], p[5], &w);
        snprintf(label, sizeof label, "rrct%d", i);
        expect_pil(label, &w, im, p[4], fa_get("rrct%d", i, ".out"));
    }
    for (int i = 0; fa_get("rrcv%d", i, ".params"); i++, n++) {
        /* RandomResizedCrop's validation = valid_transform squash (val_xtra 0.14) */
        const int32_t *p = fa_get("rrcv%d", i, ".params")->data;
        const Image *im = &imgs[p[1]];
        TransformSpec s = transform_defaults(TF_SQUASH_CENTER_CROP, p[0], 0);
        Warp w;
        transform_draw(&s, im->w, im->h, NULL, &w);
        snprintf(label, sizeof label, "rrcv%d", i);
        expect_pil(label, &w, im, p[0], fa_get("rrcv%d", i, ".out"));
    }
    for (int i = 0; fa_get("rsc%d", i, ".params"); i++, n++) {
        /* Resize(size, method=crop): our TF_FASTAI item Resize(presize) with no batch part */
        const float *v = fa_get("rsc%d", i, ".params")->data;
        const Image *im = &imgs[(int)v[3]];
        int P = (int)v[0];
        TransformSpec s = fastai_spec(P, P, 1.0f, 0);
        FastaiParams p = fastai_neutral();
        p.item_pct_x = v[1], p.item_pct_y = v[2];
        Warp w;
        fastai_warp(&s, im->w, im->h, &p, &w);
        snprintf(label, sizeof label, "rsc%d", i);
        expect_pil(label, &w, im, P, fa_get("rsc%d", i, ".out"));
    }
    for (int i = 0; fa_get("rss%d", i, ".params"); i++, n++) {
        /* Resize(size, method=squish): squash with no margin (resize_ratio 1) */
        const int32_t *p = fa_get("rss%d", i, ".params")->data;
        const Image *im = &imgs[p[1]];
        TransformSpec s = transform_defaults(TF_SQUASH_CENTER_CROP, p[0], 0);
        s.resize_ratio = 1.0f;
        Warp w;
        transform_draw(&s, im->w, im->h, NULL, &w);
        snprintf(label, sizeof label, "rss%d", i);
        expect_pil(label, &w, im, p[0], fa_get("rss%d", i, ".out"));
    }
    assert_true(n >= 15);
    for (int k = 0; k < 2; k++) image_free(&imgs[k]);
}

/* ---------------------------------------------------------------- fastai's draws: distributions */

enum { N_DRAWS = 20000 };
#define DIST_SIGMA 4.5 /* about 40 statistics x 19 points: a false failure ~1e-3 at most (and the
                        * draws are seeded, so a pass is reproducible) */

static double dist_worst; /* the largest z-score seen, printed */

static void check_p(const char *name, int applied, int n_all) {
    char key[64];
    snprintf(key, sizeof key, "%s.p", name);
    const StTensor *t = st_find(&fref, key);
    if (!t) fail_msg("%s: not in %s", key, FASTAI_REF_PATH);
    double pr = *(const float *)t->data, po = (double)applied / n_all;
    /* both estimates from N_DRAWS draws: SE of the difference sqrt(p(1-p) 2/N) */
    double se = sqrt((pr * (1 - pr) > 1e-4 ? pr * (1 - pr) : 1e-4) * 2.0 / N_DRAWS), z = fabs(po - pr) / se;
    dist_worst = z > dist_worst ? z : dist_worst;
    if (z > DIST_SIGMA) fail_msg("%s: applied with p %.4f, fastai %.4f (%.1f standard errors)", name, po, pr, z);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Our n values (of n_all draws) against fastai's: the fraction applied, and at each of fastai's
 * quantiles x (5%..95%) our empirical fractions < x and <= x against fastai's (the two differ
 * at the atoms of the crops' integer sizes), each within DIST_SIGMA standard errors of a
 * difference of two binomial proportions, sqrt(F(1-F)(1/n + 1/n_ref)). */
static void check_dist(const char *name, float *v, int n, int n_all) {
    char key[64];
    check_p(name, n, n_all);
    snprintf(key, sizeof key, "%s.x", name);
    const StTensor *tx = st_find(&fref, key);
    snprintf(key, sizeof key, "%s.lt", name);
    const StTensor *tlt = st_find(&fref, key);
    snprintf(key, sizeof key, "%s.le", name);
    const StTensor *tle = st_find(&fref, key);
    snprintf(key, sizeof key, "%s.n", name);
    const StTensor *tn = st_find(&fref, key);
    assert_true(tx && tlt && tle && tn && tx->shape[0] == 19);
    const float *x = tx->data, *lt = tlt->data, *le = tle->data;
    int nr = *(const int32_t *)tn->data;
    assert_true(n > 100 && nr > 100);
    qsort(v, (size_t)n, sizeof *v, cmp_float);
    double worst = 0;
    int at = 0;
    for (int k = 0; k < 19; k++) {
        int a = 0, b;
        while (a < n && v[a] < x[k]) a++;
        for (b = a; b < n && v[b] <= x[k]; b++) {}
        const double ours[2] = {(double)a / n, (double)b / n}, ref_v[2] = {lt[k], le[k]};
        for (int j = 0; j < 2; j++) {
            double F = ref_v[j], var = F * (1 - F) > 1e-4 ? F * (1 - F) : 1e-4;
            double z = fabs(ours[j] - F) / sqrt(var * (1.0 / n + 1.0 / nr));
            if (z > worst) worst = z, at = k;
        }
    }
    printf("  %-18s p %.4f  median %9.5f (fastai %9.5f)  worst %.2f SE at the %d%% quantile\n", name,
           (double)n / n_all, v[n / 2], x[9], worst, 5 * (at + 1));
    dist_worst = worst > dist_worst ? worst : dist_worst;
    if (worst > DIST_SIGMA)
        fail_msg("%s: our distribution differs from fastai's at its %d%% quantile %g (%.1f standard errors)", name,
                 5 * (at + 1), x[at], worst);
}

typedef struct {
    float *v;
    int n;
} Sample;

static void sample_add(Sample *s, float x) { s->v[s->n++] = x; }

/* fastai_draw for aug_transforms(size=64, min_scale) after Resize(460), against fastai's own
 * aug_transforms draws (prefix da075 / da100). */
static void dist_fastai(const char *prefix, float min_scale) {
    enum { ROT, ZOOM, COL, ROW, WX, WY, BRI, CON, AREA, CX, CY, PX, PY, NQ };
    static const char *const names[NQ] = {"rotate", "zoom", "zoom_col", "zoom_row", "warp_x", "warp_y", "brightness",
                                          "contrast", "crop_area", "crop_cx", "crop_cy", "item_pct_x", "item_pct_y"};
    Sample q[NQ];
    for (int k = 0; k < NQ; k++) q[k].v = xmalloc(sizeof(float) * N_DRAWS), q[k].n = 0;
    TransformSpec s = fastai_spec(64, 460, min_scale, 1);
    Rng r;
    rng_seed(&r, 4242);
    int flips = 0;
    const double P = 460;
    for (int i = 0; i < N_DRAWS; i++) {
        FastaiParams p;
        fastai_draw(&s, 500, 375, &r, &p);
        flips += p.flip;
        if (p.rotate_deg != 0) sample_add(&q[ROT], p.rotate_deg);
        if (p.zoom != 1) {
            sample_add(&q[ZOOM], p.zoom);
            sample_add(&q[COL], p.zoom_col);
            sample_add(&q[ROW], p.zoom_row);
        }
        if (p.warp_x != 0) sample_add(&q[WX], p.warp_x);
        if (p.warp_y != 0) sample_add(&q[WY], p.warp_y);
        if (p.brightness != 0.5f) sample_add(&q[BRI], p.brightness);
        if (p.contrast != 1) sample_add(&q[CON], p.contrast);
        if (min_scale != 1) { /* computed as the generator does: double, then float */
            sample_add(&q[AREA], (float)((double)p.crop_w * p.crop_h / (P * P)));
            sample_add(&q[CX], (float)((p.crop_x + p.crop_w / 2.0) / P));
            sample_add(&q[CY], (float)((p.crop_y + p.crop_h / 2.0) / P));
        }
        sample_add(&q[PX], p.item_pct_x);
        sample_add(&q[PY], p.item_pct_y);
    }
    char name[64];
    snprintf(name, sizeof name, "%s.flip", prefix);
    check_p(name, flips, N_DRAWS);
    for (int k = 0; k < NQ; k++) {
        if (q[k].n || k < AREA || k > CY) {
            snprintf(name, sizeof name, "%s.%s", prefix, names[k]);
            check_dist(name, q[k].v, q[k].n, N_DRAWS);
        }
        free(q[k].v);
    }
    snprintf(name, sizeof name, "%s.crop_area.x", prefix); /* min_scale 1: fastai has no crop either */
    assert_true((st_find(&fref, name) != NULL) == (min_scale != 1));
}

/* transform_draw(rrc, scale_min 0.35) on W x H against fastai's RandomResizedCrop(min_scale=0.35)
 * and FlipItem(0.5) (prefix drrc / drrct). */
static void dist_rrc(const char *prefix, int W, int H) {
    enum { AREA, ASPECT, CX, CY, NQ };
    static const char *const names[NQ] = {"area", "aspect", "cx", "cy"};
    Sample q[NQ];
    for (int k = 0; k < NQ; k++) q[k].v = xmalloc(sizeof(float) * N_DRAWS), q[k].n = 0;
    TransformSpec s = transform_defaults(TF_RANDOM_RESIZED_CROP, 64, 1);
    s.scale_min = 0.35f;
    Rng r;
    rng_seed(&r, 4343);
    int flips = 0;
    for (int i = 0; i < N_DRAWS; i++) {
        Warp w;
        transform_draw(&s, W, H, &r, &w);
        Box b = box_of(&w, 64);
        /* (fastai's box is drawn independently of FlipItem, in the frame of the image it is
         * given, flipped or not: compare the boxes as drawn, unmirrored, so a position draw
         * that is not uniform is not hidden by the flip's symmetry) */
        flips += b.flip;
        sample_add(&q[AREA], (float)((double)b.w * b.h / ((double)W * H)));
        sample_add(&q[ASPECT], (float)((double)b.w / b.h));
        sample_add(&q[CX], (float)((b.left + b.w / 2.0) / W));
        sample_add(&q[CY], (float)((b.top + b.h / 2.0) / H));
    }
    char name[64];
    snprintf(name, sizeof name, "%s.flip", prefix);
    check_p(name, flips, N_DRAWS);
    for (int k = 0; k < NQ; k++) {
        snprintf(name, sizeof name, "%s.%s", prefix, names[k]);
        check_dist(name, q[k].v, q[k].n, N_DRAWS);
        free(q[k].v);
    }
}

static void test_fastai_distributions(void **state) {
    (void)state;
    dist_worst = 0;
    printf("fastai's draws against ours, %d each (fractions below/at fastai's quantiles, in standard errors):\n",
           N_DRAWS);
    dist_fastai("da075", 0.75f);
    dist_fastai("da100", 1.0f);
    dist_rrc("drrc", 400, 300);
    dist_rrc("drrct", 300, 400);
    printf("fastai's draws: worst %.2f standard errors (limit %.1f)\n", dist_worst, DIST_SIGMA);
}

/* ---------------------------------------------------------------- speed */

static void bench(int src_side, int size, double seconds, int rrc) {
    Image src = image_random(src_side, src_side, 5);
    TransformSpec s = fastai_spec(size, 0, 0.75f, 1); /* the recipe's warps, item = the source */
    if (rrc) { /* RandomResizedCrop(scale 0.35-1): antialiased where the crop shrinks */
        s = transform_defaults(TF_RANDOM_RESIZED_CROP, size, 1);
        s.scale_min = 0.35f;
    }
    Rng r;
    rng_seed(&r, 6);
    enum { NW = 64 };
    Warp w[NW];
    int persp = 0;
    for (int i = 0; i < NW; i++) {
        transform_draw(&s, src.w, src.h, &r, &w[i]);
        persp += w[i].h[6] != 0 || w[i].h[7] != 0;
    }
    float *out = xmalloc(sizeof(float) * 3 * (size_t)size * size);
    long n = 0;
    double t0 = now_seconds(), t;
    do {
        for (int i = 0; i < 16; i++, n++) warp_apply_f32(&w[n % NW], &src, size, out);
        t = now_seconds() - t0;
    } while (t < seconds);
    printf("warp_apply_f32 %s: %3dx%-3d from %3dx%-3d: %6.0f images/s on one core (%d/%d warps perspective)\n",
           rrc ? "rrc   " : "fastai", size, size, src_side, src_side, n / t, persp, NW);
    free(out);
    image_free(&src);
}

static void test_speed(void **state) {
    (void)state;
    /* A figure, not a check: AUGMENT_BENCH=1 runs it long enough to quote. */
    double sec = getenv("AUGMENT_BENCH") ? 2.0 : 0.1;
    const int sides[][3] = {{224, 128, 0}, {224, 224, 0}, {460, 128, 0}, {460, 224, 0},
                            {224, 64, 1},  {224, 96, 1},  {224, 128, 1}};
    for (int i = 0; i < 7; i++) bench(sides[i][0], sides[i][1], sec, sides[i][2]);
}

/* ---------------------------------------------------------------- backend warp_batch */

/* The cpu backend's warp_batch (the oracle of the GPU one): NHWC, bit for bit warp_apply_f32
 * with ImageNet's statistics; a grey image packed with one channel gives what its RGB expansion
 * gives; other statistics are the same values renormalised. */
static void test_warp_batch_cpu(void **state) {
    (void)state;
    char err[256];
    Backend *be = backend_create("cpu", err, sizeof err);
    assert_non_null(be);
    enum { N = 12, S = 37 };
    static const float mean2[3] = {0.5f, 0.25f, 0.0f}, std2[3] = {0.5f, 0.125f, 1.0f};
    Image src[N];
    ImageSlot slots[N], slots3[N];
    Warp warps[N];
    size_t bytes = 0, bytes3 = 0;
    Rng r;
    rng_seed(&r, 31);
    for (int i = 0; i < N; i++) {
        int w = 1 + (int)rng_below(&r, 120), h = 1 + (int)rng_below(&r, 90);
        src[i] = image_random(w, h, 100 + (uint64_t)i);
        int grey = i % 3 == 0;
        if (grey)
            for (size_t p = 0; p < (size_t)w * h; p++) src[i].rgb[3 * p + 1] = src[i].rgb[3 * p + 2] = src[i].rgb[3 * p];
        ImageSlot s = {bytes, w, h, grey ? 1 : 3}, s3 = {bytes3, w, h, 3};
        slots[i] = s;
        slots3[i] = s3;
        bytes += (size_t)w * h * s.channels;
        bytes3 += (size_t)w * h * 3;
        static const TransformKind kinds[4] = {TF_FASTAI, TF_RANDOM_RESIZED_CROP, TF_CENTER_CROP, TF_RESIZE_CENTER_CROP};
        TransformSpec tf = transform_defaults(kinds[i % 4], S, 1);
        if (i % 4 == 0) tf.presize = i % 8 ? 24 : 50, tf.min_scale = 0.75f;
        transform_draw(&tf, w, h, &r, &warps[i]);
    }
    uint8_t *packed = be->ops->alloc_host(be, bytes), *packed3 = be->ops->alloc_host(be, bytes3);
    for (int i = 0; i < N; i++) {
        size_t px = (size_t)src[i].w * src[i].h;
        for (size_t p = 0; p < px; p++)
            for (int c = 0; c < slots[i].channels; c++) packed[slots[i].offset + p * slots[i].channels + c] = src[i].rgb[3 * p + c];
        memcpy(packed3 + slots3[i].offset, src[i].rgb, px * 3);
    }
    uint8_t *dev = be->ops->alloc(be, bytes), *dev3 = be->ops->alloc(be, bytes3);
    be->ops->upload_async(be, dev, packed, bytes, 0);
    be->ops->upload_async(be, dev3, packed3, bytes3, 1);
    be->ops->upload_wait(be, 0);
    be->ops->upload_wait(be, 1);
    size_t per = (size_t)3 * S * S;
    Tensor y = {be->ops->alloc(be, N * per * sizeof(float)), 0, 0, 0, 0, DT_F32};
    Tensor y3 = {be->ops->alloc(be, N * per * sizeof(float)), 0, 0, 0, 0, DT_F32};
    Tensor y2 = {be->ops->alloc(be, N * per * sizeof(float)), 0, 0, 0, 0, DT_F32};
    be->ops->warp_batch(be, dev, slots, warps, N, S, imagenet_mean, imagenet_std, &y);
    be->ops->warp_batch(be, dev3, slots3, warps, N, S, imagenet_mean, imagenet_std, &y3);
    be->ops->warp_batch(be, dev, slots, warps, N, S, mean2, std2, &y2);
    assert_int_equal(y.n, N);
    assert_int_equal(y.c, 3);
    assert_int_equal(y.h, S);
    assert_int_equal(y.w, S);
    assert_memory_equal(y.data, y3.data, N * per * sizeof(float)); /* grey: 1 channel = 3 equal ones */
    float *chw = xmalloc(per * sizeof(float)), *nchw = xmalloc(N * per * sizeof(float));
    be->ops->tensor_download(be, nchw, &y);
    const float *hwc2 = y2.data;
    double worst = 0;
    for (int i = 0; i < N; i++) {
        warp_apply_f32(&warps[i], &src[i], S, chw);
        assert_memory_equal(nchw + i * per, chw, per * sizeof(float));
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < S * S; p++) {
                double v = (double)chw[c * S * S + p] * imagenet_std[c] + imagenet_mean[c]; /* 0..1 */
                double want = (v - mean2[c]) / std2[c];
                double d = fabs(hwc2[i * per + (size_t)p * 3 + c] - want);
                worst = d > worst ? d : worst;
            }
    }
    assert_true(worst < 2e-5);
    free(chw);
    free(nchw);
    be->ops->release(be, y.data);
    be->ops->release(be, y2.data);
    be->ops->release(be, y3.data);
    be->ops->release(be, dev);
    be->ops->release(be, dev3);
    be->ops->free_host(be, packed);
    be->ops->free_host(be, packed3);
    for (int i = 0; i < N; i++) image_free(&src[i]);
    assert_int_equal(be->bytes_in_use, 0);
    backend_destroy(be);
}

int main(void) {
    const struct CMUnitTest geometry[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_downscale_2x),
        cmocka_unit_test(test_center_crop_offsets),
        cmocka_unit_test(test_resize_center_crop_sizes),
        cmocka_unit_test(test_squash_center_crop),
        cmocka_unit_test(test_flip_and_rotations),
        cmocka_unit_test(test_reflection_padding),
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_antialias_paths),
        cmocka_unit_test(test_normalisation),
        cmocka_unit_test(test_lighting),
        cmocka_unit_test(test_rrc_distribution),
        cmocka_unit_test(test_rrc_fallback),
        cmocka_unit_test(test_fastai_draws),
        cmocka_unit_test(test_min_source_side),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_warp_batch_cpu),
        cmocka_unit_test(test_speed),
    };
    const struct CMUnitTest parity[] = {
        cmocka_unit_test(test_parity_torchvision),
        cmocka_unit_test(test_parity_pil),
    };
    const struct CMUnitTest fastai[] = {
        cmocka_unit_test(test_parity_fastai),
        cmocka_unit_test(test_parity_fastai_presize),
        cmocka_unit_test(test_parity_fastai_items),
        cmocka_unit_test(test_fastai_distributions),
    };
    int failed = cmocka_run_group_tests_name("augment", geometry, NULL, NULL);
    failed += cmocka_run_group_tests_name("augment parity", parity, ref_setup, ref_teardown);
    failed += cmocka_run_group_tests_name("augment parity with fastai", fastai, fref_setup, fref_teardown);
    return failed ? 1 : 0;
}
