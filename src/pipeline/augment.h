/* pipeline/augment.h: the transforms of the seeds' recipes, as parameters drawn on the host and applied by
 * one sampling pass per image, so the GPU backend can later apply the same parameters in a kernel.
 *
 * A transform is two maps: an item map (an affine crop+scale from the decoded source image to an
 * "item" image of item_w x item_h, fastai's per-item Resize(presize)), and a batch map (a
 * homography from output pixels to item coordinates, fastai's per-batch aug_transforms: random
 * resized crop, flip, rotate, zoom, perspective warp), with reflection padding at the item's
 * borders, then lighting and ImageNet normalisation. The CPU path fuses both maps into one
 * bilinear sample of the source, with the item resize's antialiasing (PIL's: the tent widened by
 * the shrink, Warp.aa). The GPU path (backend op warp_batch) applies the same Warp to the decoded
 * uint8 image in a kernel that mirrors this file's arithmetic (WarpPlan below). */
#ifndef CNN_AUGMENT_H
#define CNN_AUGMENT_H

#include <stdint.h>

#include "pipeline/image.h"
#include "base/rng.h"

typedef enum {
    TF_FASTAI,          /* Resize(presize) per item + aug_transforms(size, min_scale, ...) per batch */
    TF_RANDOM_RESIZED_CROP, /* torchvision RandomResizedCrop(size, scale, ratio) + horizontal flip */
    TF_CENTER_CROP,     /* torchvision CenterCrop(size) of the unresized image */
    TF_RESIZE_CENTER_CROP, /* torchvision Resize(round(resize_ratio*size), short side) + CenterCrop(size) */
    TF_SQUASH_CENTER_CROP, /* fastai RandomResizedCrop's validation: the whole image squashed to a square of
                            * size + ceil((resize_ratio - 1) * size / 8) * 8 (val_xtra 0.14: ratio 1.14),
                            * then CenterCrop(size) */
} TransformKind;

/* The kinds' names on the command line and in configs: "fastai", "rrc", "center", "resize", "squash".
 * transform_kind_parse: 0 and the kind in *out, or -1 (*out untouched) for any other name.
 * transform_kind_name: the name, or "?" for a value that is not a TransformKind. */
int transform_kind_parse(const char *name, TransformKind *out);
const char *transform_kind_name(TransformKind kind);

typedef struct {
    TransformKind kind;
    int size;           /* output side */
    int train;          /* 1: random training version; 0: the deterministic validation version */
    /* fastai */
    int presize;        /* item Resize side (the Imagenette recipe: 460); 0 = no item resize */
    float min_scale;    /* aug_transforms' min_scale (recipe 0.75; aug_transforms' default 1.0 = no
                         * RandomResizedCropGPU: the affine part then outputs size x size directly) */
    int flip;           /* p = 0.5 horizontal flip */
    float max_rotate;   /* degrees (10) */
    float max_zoom;     /* (1.1) */
    float max_warp;     /* perspective (0.2) */
    float max_lighting; /* brightness and contrast (0.2) */
    float p_affine, p_lighting; /* (0.75, 0.75) */
    /* torchvision RandomResizedCrop: (0.08, 1, 3/4, 4/3). TF_FASTAI uses ratio_min/max as the
     * ratio of its RandomResizedCropGPU: aug_transforms passes (1, 1), square crops. */
    float scale_min, scale_max, ratio_min, ratio_max;
    /* Resize + CenterCrop */
    float resize_ratio; /* short side = resize_ratio * size (FixRes test: 1.25; 1.0 = plain resize) */
} TransformSpec;

/* ImageNet's channel statistics, as torchvision and fastai normalise (RGB, on 0..1 values). */
extern const float imagenet_mean[3], imagenet_std[3];

/* The library defaults of each kind (fastai's / torchvision's), for output side `size`. */
TransformSpec transform_defaults(TransformKind kind, int size, int train);

/* Coordinates are continuous with pixel i covering [i, i+1), its centre at i+0.5 (PyTorch's
 * align_corners=False convention); fastai's align_corners=True grids are converted into it. */
typedef enum {
    WARP_PAD_REFLECT = 0, /* item coords outside the item reflect about the centres of its border
                           * pixels (grid_sample's reflection with align_corners=True: fastai) */
    WARP_PAD_ZEROS = 1,   /* outside the item the value is 0 (torchvision CenterCrop's fill) */
} WarpPad;

typedef struct Warp {
    float a[6];           /* item -> source pixel coordinates: sx = a0*u + a1*v + a2, sy = a3*u + a4*v + a5 */
    int item_w, item_h;   /* item image size (reflection borders) */
    int pad;              /* WarpPad */
    int clip[4];          /* source box x0, y0, x1, y1 (exclusive) the item is cut from: the bilinear
                           * taps clamp to it, as PIL/torch crop first and then resize */
    float h[9];           /* output pixel centre (x+0.5, y+0.5, 1) -> item coords (u, v, w), row-major;
                           * affine when h6 = h7 = 0 */
    float brightness;     /* fastai lighting in logit space: 0.5 = unchanged */
    float contrast;       /* 1 = unchanged */
    float aa[2];          /* the item resize's shrink along source x and y (source pixels per item
                           * pixel, |a0| and |a4|): where either is > 1 the bilinear tent is
                           * widened by it along that axis, PIL's antialiased resize (torchvision
                           * on PIL images, fastai's item Resize); <= 1 (0: off) plain bilinear */
    int pool_w, pool_h;   /* > 0: fastai's area pre-pooling (warp_prepool): the item box pool_box
                           * (x, y, w, h: the crop of the last resampling, or the whole item) is
                           * averaged down to pool_w x pool_h, that grid of windows extended over
                           * the whole item, and the batch map samples the result; 0: off (every
                           * kind but TF_FASTAI) */
    int pool_box[4];
} Warp;

/* Draw the parameters for one image of src_w x src_h. The Rng is untouched (may be NULL) for the
 * deterministic versions: train = 0, TF_CENTER_CROP, TF_RESIZE_CENTER_CROP. */
void transform_draw(const TransformSpec *, int src_w, int src_h, Rng *, Warp *out);

/* fastai's drawn parameters, separate from their composition so tests and tools can build a
 * chosen transform. transform_draw(TF_FASTAI) = fastai_draw + fastai_warp. */
typedef struct {
    float item_pct_x, item_pct_y;  /* Resize(presize) crop position in [0, 1) (0.5 = valid's centre) */
    int flip;                      /* Flip: x -> -x in the normalised grid */
    float rotate_deg;              /* rotate_mat's angle (0 = not applied) */
    float zoom, zoom_col, zoom_row; /* zoom_mat's factor (1 = not applied) and centre fractions */
    float warp_x, warp_y;          /* _WarpCoord's x_t, y_t (0 = not applied) */
    int crop_x, crop_y, crop_w, crop_h; /* RandomResizedCropGPU's box in the affine output, which
                                    * is item-sized; used only when min_scale != 1 */
    float brightness, contrast;    /* 0.5, 1 = unchanged */
} FastaiParams;
void fastai_draw(const TransformSpec *, int src_w, int src_h, Rng *, FastaiParams *out);
void fastai_warp(const TransformSpec *, int src_w, int src_h, const FastaiParams *, Warp *out);
/* torchvision resized_crop(top, left, h, w -> size x size), then hflip when flip. */
void warp_resized_crop(int src_w, int src_h, int left, int top, int w, int h, int size, int flip, Warp *out);

/* fastai's _grid_sample, before a bilinear resampling that shrinks its input more than 2x, first
 * averages the input down to about twice the output (F.interpolate(mode='area'), adaptive average
 * pooling); fastai_warp sets Warp.pool_* where it does. If w has pooling: *pooled = the item (src
 * through w's item map, rounded to uint8 as PIL's item image is) averaged over pool_box's grid of
 * windows, extended over the item (each mean rounded to uint8), and *w rewritten with its item map
 * into *pooled (a, clip; no antialiasing, no pooling; h and the item's size, hence the reflection,
 * unchanged), so that applying the new w to *pooled is applying the old one to src; returns 1
 * (image_free *pooled). Returns 0, touching nothing, for a Warp without pooling. warp_apply_f32/u8/nhwc call it
 * themselves; the loader calls it before a batch leaves for a backend's warp_batch, which
 * refuses a Warp that still has pooling. */
int warp_prepool(Warp *w, const Image *src, Image *pooled);

/* The smallest source short side for this transform's JPEG DCT scale (JpegOptions.min_short_side),
 * chosen before the image's size is known: DCT_MARGIN (4) times the side the resize outputs, so
 * the antialiased resize after the decode still does most of the shrinking; 0 = full size. */
int transform_min_source_side(const TransformSpec *);
/* Apply: out is size x size, normalised with ImageNet mean/std, planar CHW float (out_chw) or
 * un-normalised HWC uint8 without lighting (out_hwc, for show-batch).
 * Sampling is bilinear, antialiased as PIL's resize where Warp.aa says the item resize shrinks. */
void warp_apply_f32(const Warp *, const Image *src, int size, float *out_chw);
void warp_apply_u8(const Warp *, const Image *src, int size, uint8_t *out_hwc);
/* warp_apply_f32 with any channel statistics, into HWC (out_hwc[(y*size + x)*3 + c]): the values
 * are bit-identical to warp_apply_f32's with mean/std = imagenet_mean/std. The backends'
 * warp_batch (src/cpu/augment.c) applies it per image. */
void warp_apply_nhwc(const Warp *, const Image *src, int size, const float mean[3], const float std[3],
                     float *out_hwc);

/* ---- what a GPU kernel needs to apply a Warp exactly as the functions above do ----
 * The CPU sampler itself starts from a WarpPlan, so both take the same path with the same
 * constants. The arithmetic the kernel must then mirror, operation by operation and rounded the
 * same way (no fused multiply-adds): see cuda/augment.cu, which follows warp_apply.c's appliers. */
enum {
    WARP_BLK = 64,        /* item coordinates are computed in double at the first pixel of each run
                           * of WARP_BLK output pixels of a row (x0 = x - x % WARP_BLK), then
                           * advanced in float: u = u0 + (float)(x - x0) * h0 */
    WARP_LIGHT_N = 1024,  /* the lighting table: WARP_LIGHT_N + 3 floats (two guard entries) */
};
typedef enum { WARP_AA_NONE = 0, WARP_AA_SEPARABLE = 1, WARP_AA_GENERAL = 2 } WarpAaPath;

typedef struct {
    float a[6];                       /* item -> tap index coordinates: Warp.a with 0.5 taken off a2, a5 */
    float wa[6];                      /* Warp.a unchanged: the antialiased paths use it */
    float sx_lo, sx_hi, sy_lo, sy_hi; /* clamp of the tap coordinates: the clip box's pixel centres */
    float x_last, y_last;             /* last tap index in the clip box */
    int box[4];                       /* the clip box, inside the image: x0, y0, x1, y1 */
    int pad;                          /* WarpPad */
    float u_lo, u_hi, v_lo, v_hi;     /* item bounds: border centres (reflect) or edges (zeros) */
    float h[9];                       /* Warp.h, divided by h8 when affine (h6 = h7 = 0) and h8 != 1 */
    int affine;
    int aa;                           /* WarpAaPath */
    double f[2];                      /* antialiasing filter scales along x, y (>= 1) when aa != NONE */
    int light;                        /* lighting is not the identity (brightness != 0.5 or contrast != 1) */
} WarpPlan;

/* The plan for applying w to an image of src_w x src_h (>= 1 each). */
void warp_plan(const Warp *w, int src_w, int src_h, WarpPlan *out);
/* The lighting of warp_apply_f32, a table over the sample value v (0..255): t = v * (WARP_LIGHT_N /
 * 255.0f), j = (int)t, value = lut[j] + (t - j) * (lut[j+1] - lut[j]); entry i <= WARP_LIGHT_N is
 * (float)(1 / (1 + exp(-z))), z = contrast * (warp_light_logit(i) + warp_light_shift(brightness)),
 * both in double, and lut[N+1] = lut[N+2] = lut[N]. */
double warp_light_logit(int i);            /* log(x / (1 - x)), x = i / WARP_LIGHT_N clamped to [1e-7, 1-1e-7] */
double warp_light_shift(float brightness); /* log(b / (1 - b)) */

#endif
