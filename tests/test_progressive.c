/* test_progressive.c: Composer's progressive-resizing schedule and the batch resize/crop. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backend/backend.h"
#include "train/progressive.h"

static void test_schedule(void **state) {
    (void)state;
    ProgressiveSchedule p = {0.5f, 0.5f, 0.2f, 4}; /* Composer's ResNet-50 defaults */
    assert_true(progressive_scale(&p, 0.0f) == 0.5f);
    assert_true(progressive_scale(&p, 0.49f) == 0.5f);
    assert_true(fabsf(progressive_scale(&p, 0.65f) - 0.75f) < 1e-6f); /* halfway through the ramp */
    assert_true(progressive_scale(&p, 0.81f) == 1.0f);
    assert_int_equal(progressive_side(&p, 224, 0.0f), 112);
    assert_int_equal(progressive_side(&p, 224, 0.65f), 168);
    assert_int_equal(progressive_side(&p, 224, 0.6f), 148); /* scale 2/3: 149.3 -> 148 */
    assert_int_equal(progressive_side(&p, 224, 1.0f), 224);
    assert_int_equal(progressive_side(&p, 10, 0.0f), 4);  /* 5 rounded down to a multiple of 4 */
    ProgressiveSchedule tiny = {0.01f, 0.5f, 0.2f, 8};
    assert_int_equal(progressive_side(&tiny, 64, 0.0f), 8); /* never below one increment */
}

/* The backend's shrink_batch (NHWC inside) on a host NCHW batch. */
static void shrink(const float *src, int s, float *dst, int d, int crop, int oy, int ox) {
    char err[256];
    Backend *be = backend_create("cpu", err, sizeof err);
    assert_non_null(be);
    Tensor x = {be->ops->alloc(be, 2 * 3 * (size_t)s * s * sizeof(float)), 2, 3, s, s, DT_F32};
    Tensor y = {be->ops->alloc(be, 2 * 3 * (size_t)d * d * sizeof(float)), 0, 0, 0, 0, DT_F32};
    be->ops->tensor_upload(be, &x, src);
    be->ops->shrink_batch(be, &x, d, crop, oy, ox, &y);
    assert_int_equal(y.n, 2);
    assert_int_equal(y.h, d);
    be->ops->tensor_download(be, dst, &y);
    be->ops->release(be, x.data);
    be->ops->release(be, y.data);
    backend_destroy(be);
}

static void test_resize_and_crop(void **state) {
    (void)state;
    /* a horizontal ramp x on a 4x4 plane: halving with align_corners=False averages pixel pairs */
    float src[2 * 3 * 16], dst[2 * 3 * 4], crop[2 * 3 * 4];
    for (int p = 0; p < 6; p++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) src[p * 16 + y * 4 + x] = (float)(x + 10 * y + 100 * p);
    shrink(src, 4, dst, 2, 0, 0, 0);
    for (int p = 0; p < 6; p++) {
        assert_true(fabsf(dst[p * 4 + 0] - (0.5f + 5.0f + 100 * p)) < 1e-4f);
        assert_true(fabsf(dst[p * 4 + 3] - (2.5f + 25.0f + 100 * p)) < 1e-4f);
    }
    /* same size: identity */
    float same[2 * 3 * 16];
    shrink(src, 4, same, 4, 0, 0, 0);
    for (int i = 0; i < 96; i++) assert_true(same[i] == src[i]);
    Rng rng;
    rng_seed(&rng, 1);
    int oy, ox;
    crop_offsets(&rng, 4, 2, &oy, &ox);
    assert_true(oy >= 0 && oy <= 2 && ox >= 0 && ox <= 2);
    shrink(src, 4, crop, 2, 1, oy, ox);
    assert_true(crop[0] == (float)(ox + 10 * oy));
    /* one offset for the whole batch: every plane's window starts at the same (oy, ox) */
    for (int p = 0; p < 6; p++) {
        float origin = crop[p * 4] - 100 * p;
        assert_true(origin == crop[0]);
        assert_true(crop[p * 4 + 1] == crop[p * 4] + 1);
        assert_true(crop[p * 4 + 2] == crop[p * 4] + 10);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_resize_and_crop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
