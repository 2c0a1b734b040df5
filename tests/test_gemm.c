/* test_gemm.c: sgemm (OpenBLAS or built-in) and sgemm_builtin against a naive double-precision
 * triple loop: every transpose combination, odd sizes that leave partial register tiles, padded
 * leading dimensions, alpha/beta, and sizes that cross the KC/NC blocking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/gemm.h"
#include "base/rng.h"

typedef void (*GemmFn)(int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);

static Rng rng;

static float *rand_matrix(size_t count) {
    float *p = malloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) p[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    return p;
}

/* Runs one product and compares every element with the double reference; the tolerance scales
 * with sum |alpha * a * b| + |beta * c|, the size float rounding can reach. Returns failures. */
static int check_one(GemmFn fn, const char *name, int ta, int tb, int m, int n, int k, float alpha, float beta,
                     int nan_c) {
    int pad = 3; /* leading dimensions wider than the rows: strides must be honoured */
    int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    int arows = ta ? k : m, brows = tb ? n : k;
    float *a = rand_matrix((size_t)arows * lda), *b = rand_matrix((size_t)brows * ldb);
    float *c = rand_matrix((size_t)m * ldc), *c0 = malloc((size_t)m * ldc * sizeof(float));
    if (nan_c)
        for (size_t i = 0; i < (size_t)m * ldc; i++) c[i] = NAN;
    for (size_t i = 0; i < (size_t)m * ldc; i++) c0[i] = c[i];
    fn(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    int fails = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (int p = 0; p < k; p++) {
                double av = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double bv = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                s += av * bv;
                mag += fabs(av * bv);
            }
            double cin = c0[(size_t)i * ldc + j];
            double ref = alpha * s + (beta != 0.0f ? beta * cin : 0.0);
            double tol = 1e-5 * (fabs(alpha) * mag + (beta != 0.0f ? fabs(beta * cin) : 0.0)) + 1e-6;
            double got = c[(size_t)i * ldc + j];
            if (!(fabs(got - ref) <= tol) && fails++ < 3)
                print_error("%s ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g: C[%d][%d] = %.7g, want %.7g\n", name, ta,
                            tb, m, n, k, alpha, beta, i, j, got, ref);
        }
    /* the padding columns of C are not part of the matrix and must be untouched */
    for (int i = 0; i < m; i++)
        for (int j = n; j < ldc; j++) {
            float before = c0[(size_t)i * ldc + j], after = c[(size_t)i * ldc + j];
            if (!(before == after || (isnan(before) && isnan(after))) && fails++ < 3)
                print_error("%s wrote past column n: C[%d][%d]\n", name, i, j);
        }
    free(a), free(b), free(c), free(c0);
    return fails;
}

static void run_sizes(GemmFn fn, const char *name) {
    static const int sizes[] = {1, 3, 17, 65, 130};
    const int ns = sizeof sizes / sizeof *sizes;
    int fails = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int i = 0; i < ns; i++)
                for (int j = 0; j < ns; j++)
                    for (int l = 0; l < ns; l++) {
                        /* cycle alpha/beta so every combination meets every transpose */
                        int v = (i + j + l) % 4;
                        float alpha = v == 0 ? 1.0f : v == 1 ? 0.5f : v == 2 ? -1.5f : 1.0f;
                        float beta = v == 0 ? 0.0f : v == 1 ? 2.0f : v == 2 ? 1.0f : -0.5f;
                        fails += check_one(fn, name, ta, tb, sizes[i], sizes[j], sizes[l], alpha, beta, 0);
                    }
    assert_int_equal(fails, 0);
}

static void test_builtin_sizes(void **state) {
    (void)state;
    run_sizes(sgemm_builtin, "sgemm_builtin");
}

static void test_sgemm_sizes(void **state) {
    (void)state;
    run_sizes(sgemm, "sgemm");
}

/* beta = 0 must overwrite C, NaNs included (BLAS semantics); k = 0 and alpha = 0 only scale C. */
static void test_beta_zero_and_degenerate(void **state) {
    (void)state;
    int fails = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            fails += check_one(sgemm_builtin, "builtin nan C", ta, tb, 37, 45, 29, 1.0f, 0.0f, 1);
            fails += check_one(sgemm, "sgemm nan C", ta, tb, 37, 45, 29, 1.0f, 0.0f, 1);
        }
    fails += check_one(sgemm_builtin, "builtin k=0", 0, 0, 5, 7, 0, 1.0f, 0.5f, 0);
    fails += check_one(sgemm_builtin, "builtin alpha=0", 0, 1, 5, 7, 9, 0.0f, -2.0f, 0);
    fails += check_one(sgemm, "sgemm k=0", 1, 0, 5, 7, 0, 1.0f, 0.5f, 0);
    assert_int_equal(fails, 0);
}

/* Crosses KC (256), MC (192) and NC (4096) so several slices accumulate into C, and exercises each
 * way of splitting the work among threads: rows, columns (few rows), and slices of k with partial
 * sums (few rows and columns, a long k, like a weight gradient). */
static void test_builtin_blocking(void **state) {
    (void)state;
    int fails = 0;
    fails += check_one(sgemm_builtin, "builtin big", 0, 0, 203, 4133, 301, 1.0f, 0.0f, 0);
    fails += check_one(sgemm_builtin, "builtin big tt", 1, 1, 397, 150, 530, -0.5f, 1.0f, 0);
    fails += check_one(sgemm_builtin, "builtin wgrad", 1, 0, 20, 300, 2000, 1.0f, 0.0f, 0);
    fails += check_one(sgemm_builtin, "builtin k-split", 1, 0, 20, 40, 3000, 1.0f, 0.0f, 0);
    fails += check_one(sgemm_builtin, "builtin k-split beta", 0, 1, 13, 33, 2100, 0.5f, -1.0f, 0);
    assert_int_equal(fails, 0);
}

/* sgemm_rowa / sgemm_rowb: the row-pointer operand is a dense matrix scattered into segments of
 * seg_len floats seg_stride apart, at rows in shuffled order; the result must equal sgemm_builtin on
 * the dense matrix. m, n, k pick the thread split (rows, columns, k slices), and segments that do
 * not divide the register panels and k slices make both cross them. */
static int check_rows(int which, int m, int n, int k, int seg_len, int trans, float beta) {
    int rrows = which == 0 ? m : k, rlen = which == 0 ? k : n; /* the row-pointer operand */
    int nseg = (rlen + seg_len - 1) / seg_len;
    long seg_stride = seg_len + 5;
    size_t row_span = (size_t)nseg * seg_stride;
    float *store = rand_matrix((size_t)rrows * row_span), *dense = malloc((size_t)rrows * rlen * sizeof(float));
    const float **rows = malloc((size_t)rrows * sizeof *rows);
    for (int r = 0; r < rrows; r++) {
        rows[r] = store + (size_t)((r * 7919) % rrows) * row_span; /* any order */
        for (int q = 0; q < rlen; q++) dense[(size_t)r * rlen + q] = rows[r][(q / seg_len) * seg_stride + q % seg_len];
    }
    RowMat rm = {rows, seg_len, seg_stride};
    int olen = which == 0 ? n : m, ok_ = k; /* the dense operand op(X) is (k, n) for rowa, (m, k) for rowb */
    float *x = rand_matrix((size_t)olen * ok_);
    float *c = rand_matrix((size_t)m * n), *c2 = malloc((size_t)m * n * sizeof(float));
    memcpy(c2, c, (size_t)m * n * sizeof(float));
    if (which == 0) {
        int ldx = trans ? k : n; /* B stored (n, k) when transposed */
        sgemm_rowa(m, n, k, &rm, trans, x, ldx, beta, c, n);
        sgemm_builtin(0, trans, m, n, k, 1.0f, dense, k, x, ldx, beta, c2, n);
    } else {
        int ldx = trans ? m : k; /* A stored (k, m) when transposed */
        sgemm_rowb(trans, m, n, k, x, ldx, &rm, beta, c, n);
        sgemm_builtin(trans, 0, m, n, k, 1.0f, x, ldx, dense, n, beta, c2, n);
    }
    int fails = 0;
    for (size_t i = 0; i < (size_t)m * n; i++)
        if (!(fabs(c[i] - c2[i]) <= 1e-4 * (fabs(c2[i]) + 1.0)) && fails++ < 3)
            print_error("sgemm_row%c m=%d n=%d k=%d seg=%d: C[%zu] = %.7g, want %.7g\n", which ? 'b' : 'a', m, n, k,
                        seg_len, i, c[i], c2[i]);
    free(store), free(dense), free(rows), free(x), free(c), free(c2);
    return fails;
}

static void test_row_operands(void **state) {
    (void)state;
    int fails = 0;
    for (int t = 0; t < 2; t++) {
        fails += check_rows(0, 301, 70, 300, 96, t, 0.0f);  /* rows split */
        fails += check_rows(0, 13, 300, 290, 100, t, 1.0f); /* columns split */
        fails += check_rows(0, 7, 20, 1500, 70, t, 0.0f);   /* k slices */
        fails += check_rows(0, 5, 3, 27, 9, t, 0.5f);       /* tiny, one thread */
        fails += check_rows(1, 200, 70, 300, 96, t, 0.0f);
        fails += check_rows(1, 20, 300, 400, 27, t, 1.0f);
        fails += check_rows(1, 9, 27, 3000, 9, t, 0.0f);
        fails += check_rows(1, 32, 576, 5000, 192, t, 0.0f);
    }
    assert_int_equal(fails, 0);
}

int main(void) {
    rng_seed(&rng, 20240611);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_sizes),
        cmocka_unit_test(test_sgemm_sizes),
        cmocka_unit_test(test_beta_zero_and_degenerate),
        cmocka_unit_test(test_builtin_blocking),
        cmocka_unit_test(test_row_operands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
