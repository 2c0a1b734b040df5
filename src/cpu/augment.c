/* cpu/augment.c: the CPU backend's input pipeline ops: warp_batch (warp_apply.c's warp per image, into
 * NHWC fp32) and the host staging ops, which on a CPU are plain memory and memcpy. The oracle the
 * CUDA warp_batch (cuda/augment.cu) is tested against. */
#include <stdlib.h>
#include <string.h>

#include "pipeline/augment.h"
#include "cpu/backend.h"
#include "base/util.h"

void cpu_warp_batch(Backend *b, const uint8_t *images, const ImageSlot *slots, const Warp *params, int n,
                    int out_side, const float mean[3], const float std[3], Tensor *y) {
    (void)b;
    if (y->dtype != DT_F32) die("cpu backend: warp_batch output has dtype %s; the cpu backend computes in fp32",
                                dtype_name(y->dtype));
    if (n < 0 || out_side < 1) die("cpu backend: warp_batch of %d images at side %d", n, out_side);
    for (int i = 0; i < n; i++)
        if (slots[i].w < 1 || slots[i].h < 1 || (slots[i].channels != 1 && slots[i].channels != 3))
            die("cpu backend: warp_batch image %d is %dx%d with %d channels (want 1 or 3)", i, slots[i].w,
                slots[i].h, slots[i].channels);
    cpu_set_shape(y, n, 3, out_side, out_side);
    size_t per_image = (size_t)3 * out_side * out_side;
    float *out = y->data;
#pragma omp parallel for schedule(dynamic) if (n > 1 && per_image * n >= CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const ImageSlot *s = &slots[i];
        Image im = {s->w, s->h, (uint8_t *)(images + s->offset)}; /* read only */
        uint8_t *rgb = NULL;
        if (s->channels == 1) { /* grey: the warp of its RGB expansion, which the decoder would give */
            size_t px = (size_t)s->w * s->h;
            rgb = xmalloc(px * 3);
            for (size_t p = 0; p < px; p++) rgb[3 * p] = rgb[3 * p + 1] = rgb[3 * p + 2] = im.rgb[p];
            im.rgb = rgb;
        }
        warp_apply_nhwc(&params[i], &im, out_side, mean, std, out + (size_t)i * per_image);
        free(rgb);
    }
}

void *cpu_alloc_host(Backend *b, size_t bytes) {
    (void)b;
    return xmalloc(bytes ? bytes : 1);
}

void cpu_free_host(Backend *b, void *p) {
    (void)b;
    free(p);
}

void cpu_upload_async(Backend *b, void *dst, const void *host_src, size_t bytes, int slot) {
    (void)b;
    if (slot != 0 && slot != 1) die("cpu backend: upload_async slot %d (want 0 or 1)", slot);
    if (bytes) memcpy(dst, host_src, bytes);
}

void cpu_upload_wait(Backend *b, int slot) {
    (void)b;
    if (slot != 0 && slot != 1) die("cpu backend: upload_wait slot %d (want 0 or 1)", slot);
}
