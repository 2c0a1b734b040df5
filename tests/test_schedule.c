/* test_schedule.c: fastai's one-cycle curves against hand-computed values. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "train/schedule.h"

static void close_to(float got, double want) {
    if (fabs(got - want) > 1e-6 * fabs(want) + 1e-12) fail_msg("got %.9g, want %.9g", got, want);
}

/* fit_one_cycle(lr_max=1e-3): lr cosine 1e-3/25 -> 1e-3 over the first 25%, then 1e-3 -> 1e-3/1e5;
 * beta1 cosine 0.95 -> 0.85 -> 0.95. Halfway through a cosine phase is the mean of its ends. */
static void test_one_cycle_defaults(void **state) {
    (void)state;
    OneCycle c = one_cycle_default(1e-3f);
    close_to(one_cycle_lr(&c, 0.0f), 4e-5);
    close_to(one_cycle_lr(&c, 0.125f), (4e-5 + 1e-3) / 2);
    close_to(one_cycle_lr(&c, 0.25f), 1e-3);
    close_to(one_cycle_lr(&c, 0.625f), (1e-3 + 1e-8) / 2);
    close_to(one_cycle_lr(&c, 1.0f), 1e-8);
    /* a quarter into the first phase: start + (1 - cos(pi/4)) / 2 * (end - start) */
    close_to(one_cycle_lr(&c, 0.0625f), 4e-5 + (1 - cos(M_PI / 4)) / 2 * (1e-3 - 4e-5));
    close_to(one_cycle_mom(&c, 0.0f), 0.95);
    close_to(one_cycle_mom(&c, 0.125f), 0.90);
    close_to(one_cycle_mom(&c, 0.25f), 0.85);
    close_to(one_cycle_mom(&c, 0.625f), 0.90);
    close_to(one_cycle_mom(&c, 1.0f), 0.95);
}

/* fine_tune's unfrozen fit: pct_start 0.3, div 5 */
static void test_fine_tune_cycle(void **state) {
    (void)state;
    OneCycle c = one_cycle_default(5e-4f);
    c.pct_start = 0.3f;
    c.div = 5.0f;
    close_to(one_cycle_lr(&c, 0.0f), 1e-4);
    close_to(one_cycle_lr(&c, 0.15f), (1e-4 + 5e-4) / 2);
    close_to(one_cycle_lr(&c, 0.3f), 5e-4);
    close_to(one_cycle_lr(&c, 0.65f), (5e-4 + 5e-9) / 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_cycle_defaults),
        cmocka_unit_test(test_fine_tune_cycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
