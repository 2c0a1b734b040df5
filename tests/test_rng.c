/* test_rng.c: the generator's streams and distributions (mixup draws Beta(alpha, alpha)). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "base/rng.h"

static void test_streams_are_reproducible_and_distinct(void **state) {
    (void)state;
    Rng a, b;
    rng_seed(&a, 5);
    rng_seed(&b, 5);
    for (int i = 0; i < 100; i++) assert_true(rng_u64(&a) == rng_u64(&b));
    Rng s1 = rng_split(&a, 1), s2 = rng_split(&a, 2), s1b = rng_split(&a, 1);
    uint64_t x1 = rng_u64(&s1), x2 = rng_u64(&s2);
    assert_true(x1 != x2);
    assert_true(x1 == rng_u64(&s1b));
}

static void test_below_and_uniform(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 1);
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) counts[rng_below(&r, 7)]++;
    for (int k = 0; k < 7; k++) assert_true(abs(counts[k] - 10000) < 400);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        float u = rng_uniform(&r);
        assert_true(u >= 0.0f && u < 1.0f);
        sum += u;
    }
    assert_true(fabs(sum / 100000 - 0.5) < 0.005);
}

/* Mean and variance of Beta(a, b): a/(a+b) and ab/((a+b)^2 (a+b+1)); Gamma(k): k and k. */
static void test_gamma_and_beta_moments(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 2);
    const float shapes[] = {0.4f, 1.0f, 3.5f};
    for (int s = 0; s < 3; s++) {
        double m = 0, v = 0;
        const int n = 200000;
        for (int i = 0; i < n; i++) {
            double g = rng_gamma(&r, shapes[s]);
            assert_true(g >= 0);
            m += g;
            v += g * g;
        }
        m /= n;
        v = v / n - m * m;
        assert_true(fabs(m - shapes[s]) < 0.02 * shapes[s] + 0.005);
        assert_true(fabs(v - shapes[s]) < 0.05 * shapes[s] + 0.01);
    }
    double m = 0, v = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double x = rng_beta(&r, 0.4f, 0.4f);
        assert_true(x >= 0 && x <= 1);
        m += x;
        v += x * x;
    }
    m /= n;
    v = v / n - m * m;
    assert_true(fabs(m - 0.5) < 0.005);
    assert_true(fabs(v - 0.25 / 1.8) < 0.005); /* 0.4*0.4 / (0.8^2 * 1.8) = 0.1389 */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streams_are_reproducible_and_distinct),
        cmocka_unit_test(test_below_and_uniform),
        cmocka_unit_test(test_gamma_and_beta_moments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
