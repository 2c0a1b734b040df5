/* cpu/batch.c: whole-batch ops on the device copy of a batch: mixup's blend and progressive
 * resizing's shrink (cuda/batch.cu's twins).
 * Inner loops run over the contiguous channel dimension so gcc vectorises them; outer loops are
 * OpenMP-parallel once the tensor is big enough to pay for a fork/join. */
#include <math.h>
#include <string.h>

#include "cpu/backend.h"
#include "base/util.h"

/* One plane of s x s pixels, `step` floats apart (1 planar, channels interleaved), to d x d:
 * bilinear, align_corners = False (F.interpolate's convention), no antialiasing. */
static void resize_strided(const float *in, int s, float *out, int d, size_t step) {
    float scale = (float)s / (float)d;
#define AT(y, x) in[((size_t)(y) * s + (x)) * step]
    for (int y = 0; y < d; y++) {
        /* source coordinate of the output pixel centre, clamped at the border as PyTorch does */
        float sy = fmaxf(((float)y + 0.5f) * scale - 0.5f, 0.0f);
        int y0 = (int)sy, y1 = y0 + 1 < s ? y0 + 1 : s - 1;
        float fy = sy - (float)y0;
        for (int x = 0; x < d; x++) {
            float sx = fmaxf(((float)x + 0.5f) * scale - 0.5f, 0.0f);
            int x0 = (int)sx, x1 = x0 + 1 < s ? x0 + 1 : s - 1;
            float fx = sx - (float)x0;
            float top = AT(y0, x0) + fx * (AT(y0, x1) - AT(y0, x0));
            float bottom = AT(y1, x0) + fx * (AT(y1, x1) - AT(y1, x0));
            out[((size_t)y * d + x) * step] = top + fy * (bottom - top);
        }
    }
#undef AT
}

/* ---- mixup ---- */

void cpu_mix_images(Backend *b, Tensor *x, const int32_t *partner, const float *lam) {
    const int n = x->n;
    const size_t per = n ? tensor_numel(x) / (size_t)n : 0;
    float *d = x->data, *orig = cpu_scratch(b, CPU_WS_MIX, tensor_numel(x) * sizeof(float));
    memcpy(orig, d, tensor_numel(x) * sizeof(float));
#pragma omp parallel for schedule(static) if (tensor_numel(x) >= CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float l = lam[i], *xi = orig + (size_t)i * per, *xj = orig + (size_t)partner[i] * per;
        float *o = d + (size_t)i * per;
        for (size_t k = 0; k < per; k++) o[k] = l * xi[k] + (1.0f - l) * xj[k];
    }
}

void cpu_shrink_batch(Backend *b, const Tensor *x, int d, int crop, int oy, int ox, Tensor *y) {
    (void)b;
    const int n = x->n, c = x->c, s = x->h;
    if (x->w != s || d > s || d < 1 || (crop && (oy < 0 || ox < 0 || oy + d > s || ox + d > s)))
        die("shrink_batch: cannot make %dx%d (crop %d at %d,%d) of %dx%d", d, d, crop, oy, ox, x->h, x->w);
    cpu_set_shape(y, n, c, d, d);
    const float *src = x->data;
    float *dst = y->data;
#pragma omp parallel for schedule(static) if ((size_t)n * c * d * d >= CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *in = src + (size_t)i * s * s * c;
        float *out = dst + (size_t)i * d * d * c;
        if (crop)
            for (int r = 0; r < d; r++)
                memcpy(out + (size_t)r * d * c, in + ((size_t)(oy + r) * s + ox) * c, (size_t)d * c * sizeof(float));
        else
            for (int ch = 0; ch < c; ch++) resize_strided(in + ch, s, out + ch, d, (size_t)c);
    }
}
