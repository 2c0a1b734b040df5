/* pipeline/synthetic.c: the generated shapes task: ten classes drawn from a seed (see synthetic.h). */
#include "pipeline/synthetic.h"

#include <math.h>
#include <stdlib.h>

#include "pipeline/augment.h"
#include "base/util.h"

const char *const synth_class_names[SYNTH_CLASSES] = {"disc", "square", "triangle", "hstripes", "vstripes",
                                                      "dstripes", "ring", "cross", "checker", "dots"};

/* Is (x, y), in units of the image side centred on the shape, inside class cls's pattern? */
static int inside(int cls, float x, float y, float r, float period) {
    float d = sqrtf(x * x + y * y);
    switch (cls) {
    case 0: return d < r;
    case 1: return fabsf(x) < r * 0.85f && fabsf(y) < r * 0.85f;
    case 2: return y < r * 0.7f && y > -r && fabsf(x) < (y + r) * 0.6f;
    case 3: return fmodf(y + 10.0f, period) < period / 2;
    case 4: return fmodf(x + 10.0f, period) < period / 2;
    case 5: return fmodf(x + y + 20.0f, period) < period / 2;
    case 6: return d < r && d > r * 0.55f;
    case 7: return (fabsf(x) < r * 0.3f && fabsf(y) < r) || (fabsf(y) < r * 0.3f && fabsf(x) < r);
    case 8: return (fmodf(x + 10.0f, period) < period / 2) ^ (fmodf(y + 10.0f, period) < period / 2);
    default: {
        float dx = fabsf(x) - r * 0.5f;
        return dx * dx + y * y < r * r * 0.12f;
    }
    }
}

void synth_image(Rng *rng, int cls, int size, uint8_t *rgb) {
    float fg[3], bg[3];
    for (int c = 0; c < 3; c++) {
        fg[c] = 255.0f * rng_uniform(rng);
        bg[c] = 255.0f * rng_uniform(rng);
    }
    /* Keep the contrast visible: push the two colours apart in brightness. */
    if (fabsf((fg[0] + fg[1] + fg[2]) - (bg[0] + bg[1] + bg[2])) < 150.0f)
        for (int c = 0; c < 3; c++) fg[c] = 255.0f - bg[c];
    float cx = 0.3f + 0.4f * rng_uniform(rng), cy = 0.3f + 0.4f * rng_uniform(rng);
    float r = 0.18f + 0.12f * rng_uniform(rng), period = 0.12f + 0.1f * rng_uniform(rng);
    float noise = 20.0f * rng_uniform(rng);
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            float u = ((float)x + 0.5f) / (float)size - cx, v = ((float)y + 0.5f) / (float)size - cy;
            int in = inside(cls, u, v, r, period);
            for (int c = 0; c < 3; c++) {
                float p = (in ? fg[c] : bg[c]) + noise * rng_normal(rng);
                rgb[((size_t)y * size + x) * 3 + c] = (uint8_t)(p < 0 ? 0 : p > 255 ? 255 : p + 0.5f);
            }
        }
}

void synth_batch(Rng *rng, int n, int size, float *nchw, int32_t *labels) {
    uint8_t *rgb = xmalloc((size_t)size * size * 3);
    size_t plane = (size_t)size * size;
    for (int i = 0; i < n; i++) {
        labels[i] = (int32_t)rng_below(rng, SYNTH_CLASSES);
        synth_image(rng, labels[i], size, rgb);
        for (int c = 0; c < 3; c++)
            for (size_t p = 0; p < plane; p++)
                nchw[((size_t)i * 3 + c) * plane + p] = ((float)rgb[p * 3 + c] / 255.0f - imagenet_mean[c]) / imagenet_std[c];
    }
    free(rgb);
}
