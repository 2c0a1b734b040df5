/* augment.h: the transforms of the seeds' recipes, as parameters drawn on the host and applied by
 * one sampling pass per image, so the GPU backend can later apply the same parameters in a kernel.
 *
 * A transform is two maps: an item map (an affine crop+scale from the decoded source image to an
 * "item" image of item_w x item_h, fastai's per-item Resize(presize)), and a batch map (a
 * homography from output pixels to item coordinates, fastai's per-batch aug_transforms: random
 * resized crop, flip, rotate, zoom, perspective warp), with reflection padding at the item's
 * borders, then lighting and ImageNet normalisation. The CPU path fuses both maps into one
 * bilinear sample of the source; the GPU path can materialise the uint8 item image first. */
#ifndef CNN_AUGMENT_H
#define CNN_AUGMENT_H

#include <stdint.h>

#include "image.h"
#include "rng.h"

typedef enum {
    TF_FASTAI,          /* Resize(presize) per item + aug_transforms(size, min_scale, ...) per batch */
    TF_RANDOM_RESIZED_CROP, /* torchvision RandomResizedCrop(size, scale, ratio) + horizontal flip */
    TF_CENTER_CROP,     /* torchvision CenterCrop(size) of the unresized image */
    TF_RESIZE_CENTER_CROP, /* torchvision Resize(round(resize_ratio*size), short side) + CenterCrop(size) */
} TransformKind;

typedef struct {
    TransformKind kind;
    int size;           /* output side */
    int train;          /* 1: random training version; 0: the deterministic validation version */
    /* fastai */
    int presize;        /* item Resize side (the Imagenette recipe: 460); 0 = no item resize */
    float min_scale;    /* aug_transforms' RandomResizedCrop min_scale (recipe 0.75; fastai default 0.08) */
    int flip;           /* p = 0.5 horizontal flip */
    float max_rotate;   /* degrees (10) */
    float max_zoom;     /* (1.1) */
    float max_warp;     /* perspective (0.2) */
    float max_lighting; /* brightness and contrast (0.2) */
    float p_affine, p_lighting; /* (0.75, 0.75) */
    /* torchvision RandomResizedCrop */
    float scale_min, scale_max, ratio_min, ratio_max; /* (0.08, 1, 3/4, 4/3) */
    /* Resize + CenterCrop */
    float resize_ratio; /* short side = resize_ratio * size (FixRes test: 1.25; 1.0 = plain resize) */
} TransformSpec;

/* The library defaults of each kind (fastai's / torchvision's), for output side `size`. */
TransformSpec transform_defaults(TransformKind kind, int size, int train);

typedef struct {
    float a[6];           /* item -> source pixel coordinates: sx = a0*u + a1*v + a2, sy = a3*u + a4*v + a5 */
    int item_w, item_h;   /* item image size (reflection borders) */
    float h[9];           /* output pixel centre (x+0.5, y+0.5, 1) -> item coords (u, v, w), row-major */
    float brightness;     /* fastai lighting in logit space: 0.5 = unchanged */
    float contrast;       /* 1 = unchanged */
} Warp;

/* Draw the parameters for one image of src_w x src_h. */
void transform_draw(const TransformSpec *, int src_w, int src_h, Rng *, Warp *out);
/* The smallest source short side that keeps full detail for this transform, to choose the JPEG
 * DCT scale (JpegOptions.min_short_side) before the image's size is known; 0 = full size. */
int transform_min_source_side(const TransformSpec *);
/* Apply: out is size x size, normalised with ImageNet mean/std, planar CHW float (out_chw) or
 * un-normalised HWC uint8 without lighting (out_hwc, for show-batch and the GPU path). */
void warp_apply_f32(const Warp *, const Image *src, int size, float *out_chw);
void warp_apply_u8(const Warp *, const Image *src, int size, uint8_t *out_hwc);

#endif
