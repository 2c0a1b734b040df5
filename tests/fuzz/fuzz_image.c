/* fuzz_image.c: image_decode_mem on the input (PNG, WebP or JPEG, told from its first bytes; at most
 * 4 Mpx), then what the loader does with a decoded image: draw transforms (fastai with a presize,
 * torchvision's random resized crop, the validation resize + center crop) and sample them. An
 * error names the file and returns no image; an image is within the limit and samples to finite
 * values. fuzz_jpeg covers JPEG's DCT scales; this one mainly libpng's and libwebp's error paths. */
#include "fuzz.h"

#include <math.h>

#include "pipeline/augment.h"
#include "pipeline/image.h"
#include "base/rng.h"

#ifndef FUZZ_ENTRY
#define FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

#define IMG_SIZE 10
#define IMG_MAX_PIXELS (4L << 20)

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    JpegOptions o = {0, IMG_MAX_PIXELS, 0};
    Image im;
    char err[512];
    int scale = 0;
    err[0] = 0;
    if (image_decode_mem(data, size, "fuzz.img", &o, &im, &scale, err, sizeof err)) {
        FUZZ_CHECK(fuzz_names(err, "fuzz.img: "), "the error does not name the file: %s", err);
        FUZZ_CHECK(!im.rgb && !im.w && !im.h, "a failed decode returned an image");
        return 0;
    }
    FUZZ_CHECK(im.w > 0 && im.h > 0 && (long)im.w * im.h <= IMG_MAX_PIXELS, "decoded %dx%d", im.w, im.h);
    FUZZ_CHECK(scale == 1, "scale 1/%d without a min_short_side", scale);
    TransformSpec tf[3] = {transform_defaults(TF_FASTAI, IMG_SIZE, 1), transform_defaults(TF_RANDOM_RESIZED_CROP, IMG_SIZE, 1),
                           transform_defaults(TF_RESIZE_CENTER_CROP, IMG_SIZE, 0)};
    tf[0].presize = 2 * IMG_SIZE;
    tf[0].min_scale = 0.5f;
    float out[3 * IMG_SIZE * IMG_SIZE];
    Rng rng;
    rng_seed(&rng, size);
    for (int k = 0; k < 3; k++) {
        Warp w;
        transform_draw(&tf[k], im.w, im.h, &rng, &w);
        warp_apply_f32(&w, &im, IMG_SIZE, out);
        for (int i = 0; i < 3 * IMG_SIZE * IMG_SIZE; i++)
            FUZZ_CHECK(isfinite(out[i]), "transform %d of a %dx%d image: value %d is %g", k, im.w, im.h, i, out[i]);
    }
    image_free(&im);
    return 0;
}
