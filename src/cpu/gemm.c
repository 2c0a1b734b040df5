/* cpu/gemm.c: sgemm: a portable blocked GEMM (the default), or OpenBLAS on request.
 *
 * The built-in GEMM follows the GotoBLAS/BLIS scheme: C is cut into NC-wide column blocks, k into
 * KC-deep slices; a KC x NC slice of op(B) is packed (it lives in L3), then MC x KC blocks of op(A)
 * (they live in L2), and an MR x NR micro-kernel keeps its tile of C in registers while streaming one
 * packed A panel and one packed B panel (L1). Threads split the product (see sgemm_builtin).
 * The micro-kernel is plain C (plus unroll/simd pragmas) that gcc unrolls over MR and vectorises over NR.
 */
#include "cpu/gemm.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

/* Register tile: MR rows x NR columns of C, sized to the vector registers: 12 x 32 floats is 24 of
 * AVX-512's 32 registers; 6 x 16 is 12 of AVX2's 16 (more would spill). */
#if defined(__AVX512F__)
#define MR 12
#define NR 32
#else
#define MR 6
#define NR 16
#endif
#define KC 256   /* depth of a slice: an NR panel of B (<= 32 KB) stays in L1 */
#define MC 192   /* rows of A per block, a multiple of MR: 192 KB in L2 */
#define NC 4096  /* columns of B per block, a multiple of NR: 4 MB slice in L3 */

/* gcc: -std=c11 turns off FMA contraction, which the micro-kernel needs; and gcc's znver tuning
 * picks 256-bit vectors unless told to use the 512-bit registers the tile was sized for. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#define HOT __attribute__((optimize("O3", "fp-contract=fast"), target("prefer-vector-width=512")))
#elif defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((optimize("O3", "fp-contract=fast")))
#else
#define HOT
#endif

static inline int imin(int a, int b) { return a < b ? a : b; }

/* An operand: dense (rows == NULL; element (i, p) at p[i*ld + p], or p[p*ld + i] when trans) or
 * read through row pointers (a RowMat, with q0 added to the segmented index). For A the pointers
 * run over m and the segments over k; for B over k and n. */
typedef struct {
    const float *p;
    int ld, trans;
    const float *const *rows;
    int seg_len, q0;
    long seg_stride;
} Mat;

static inline long seg_off(const Mat *x, int q) {
    q += x->q0;
    return (long)(q / x->seg_len) * x->seg_stride + q % x->seg_len;
}

/* Pack rows [i0, i0+mc) x cols [p0, p0+kc) of a transposed dense A as MR-row panels:
 * dst[panel][p][MR], zero padded. (Untransposed and row-pointer A are read in place.) */
static void pack_a_trans(const float *a, int lda, int i0, int mc, int p0, int kc, float *restrict dst) {
    for (int ir = 0; ir < mc; ir += MR) {
        int mr = imin(MR, mc - ir);
        float *d = dst + (size_t)ir * kc;
        for (int p = 0; p < kc; p++) {
            const float *src = a + (size_t)(p0 + p) * lda + i0 + ir;
            if (mr == MR)
                for (int i = 0; i < MR; i++) d[p * MR + i] = src[i];
            else
                for (int i = 0; i < MR; i++) d[p * MR + i] = i < mr ? src[i] : 0.0f;
        }
    }
}

/* One NR-column panel of op(B): rows [p0, p0+kc), cols [j0, j0+nr): dst[p][NR], zero padded.
 * Full-width rows copy a constant NR floats so gcc emits vector moves, not a memcpy call per row. */
static void pack_b_panel(const Mat *B, int p0, int kc, int j0, int nr, float *restrict dst) {
    if (B->rows) {
        int q = B->q0 + j0;
        if (q % B->seg_len + nr <= B->seg_len) { /* the panel lies in one segment of every row */
            long off = seg_off(B, j0);
            for (int p = 0; p < kc; p++) {
                const float *src = B->rows[p0 + p] + off;
                float *d = dst + (size_t)p * NR;
                if (nr == NR)
                    for (int j = 0; j < NR; j++) d[j] = src[j];
                else
                    for (int j = 0; j < NR; j++) d[j] = j < nr ? src[j] : 0.0f;
            }
        } else {
            long off[NR];
            for (int j = 0; j < nr; j++) off[j] = seg_off(B, j0 + j);
            for (int p = 0; p < kc; p++) {
                const float *src = B->rows[p0 + p];
                float *d = dst + (size_t)p * NR;
                for (int j = 0; j < NR; j++) d[j] = j < nr ? src[off[j]] : 0.0f;
            }
        }
    } else if (!B->trans) {
        for (int p = 0; p < kc; p++) {
            const float *src = B->p + (size_t)(p0 + p) * B->ld + j0;
            float *d = dst + (size_t)p * NR;
            if (nr == NR)
                for (int j = 0; j < NR; j++) d[j] = src[j];
            else
                for (int j = 0; j < NR; j++) d[j] = j < nr ? src[j] : 0.0f;
        }
    } else {
        for (int j = 0; j < nr; j++) {
            const float *src = B->p + (size_t)(j0 + j) * B->ld + p0;
            for (int p = 0; p < kc; p++) dst[(size_t)p * NR + j] = src[p];
        }
        for (int p = 0; p < kc; p++)
            for (int j = nr; j < NR; j++) dst[(size_t)p * NR + j] = 0.0f;
    }
}

/* C tile (mr, nr) = alpha * acc + beta * C; beta == 0 never reads C. */
static inline __attribute__((always_inline)) void store_tile(float acc[MR][NR], float *restrict c, int ldc, int mr,
                                                             int nr, float alpha, float beta) {
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; i++) {
            float *ci = c + (size_t)i * ldc;
            if (beta == 0.0f)
                for (int j = 0; j < NR; j++) ci[j] = alpha * acc[i][j];
            else
                for (int j = 0; j < NR; j++) ci[j] = alpha * acc[i][j] + beta * ci[j];
        }
    } else {
        for (int i = 0; i < mr; i++) {
            float *ci = c + (size_t)i * ldc;
            if (beta == 0.0f)
                for (int j = 0; j < nr; j++) ci[j] = alpha * acc[i][j];
            else
                for (int j = 0; j < nr; j++) ci[j] = alpha * acc[i][j] + beta * ci[j];
        }
    }
}

/* C tile = alpha * Apanel * Bpanel + beta * C, A packed as [p][MR]. */
HOT static void micro_kernel(int kc, const float *restrict a, const float *restrict b, float *restrict c, int ldc,
                             int mr, int nr, float alpha, float beta) {
    float acc[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = 0.0f;
    for (int p = 0; p < kc; p++) {
        const float *ap = a + (size_t)p * MR, *bp = b + (size_t)p * NR;
        /* unrolled rows, vector columns: without the pragmas gcc's SLP pass picks narrow vectors
         * and spills the tile for AVX2 / SSE targets */
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            float ai = ap[i];
#pragma omp simd
            for (int j = 0; j < NR; j++) acc[i][j] += ai * bp[j];
        }
    }
    store_tile(acc, c, ldc, mr, nr, alpha, beta);
}

/* The same with A read in place: row i of the tile is ap[i][0..kc). The a values are broadcast,
 * so they need no packing; rows past mr repeat row 0 and are not stored. */
HOT static void micro_kernel_rows(int kc, const float *const *arows, const float *restrict b, float *restrict c,
                                  int ldc, int mr, int nr, float alpha, float beta) {
    const float *ap[MR];
    for (int i = 0; i < MR; i++) ap[i] = arows[i < mr ? i : 0];
    float acc[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = 0.0f;
    for (int p = 0; p < kc; p++) {
        const float *bp = b + (size_t)p * NR;
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            float ai = ap[i][p];
#pragma omp simd
            for (int j = 0; j < NR; j++) acc[i][j] += ai * bp[j];
        }
    }
    store_tile(acc, c, ldc, mr, nr, alpha, beta);
}

static void scale_c(int m, int n, float beta, float *c, int ldc) {
    for (int i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        if (beta == 0.0f)
            memset(ci, 0, (size_t)n * sizeof(float));
        else if (beta != 1.0f)
            for (int j = 0; j < n; j++) ci[j] *= beta;
    }
}

/* Per-thread buffers, reused across calls; OpenMP keeps its worker threads, so each keeps its own. */
typedef struct {
    void *p;
    size_t cap;
} Buf;
static _Thread_local Buf tl_pack, tl_partial, tl_arows;

static void *buf_get(Buf *b, size_t bytes) {
    if (bytes > b->cap) {
        free(b->p);
        b->p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!b->p) die("out of memory allocating GEMM buffers (%zu bytes)", bytes);
        b->cap = bytes;
    }
    return b->p;
}

/* Sub-operands for the thread splits: rows [r0, ...) of A, columns [c0, ...) of B, and depth
 * [k0, ...) of either. */
static Mat a_rows_from(Mat A, int r0) {
    if (A.rows) A.rows += r0;
    else A.p += A.trans ? (size_t)r0 : (size_t)r0 * A.ld;
    return A;
}
static Mat a_depth_from(Mat A, int k0) {
    if (A.rows) A.q0 += k0;
    else A.p += A.trans ? (size_t)k0 * A.ld : (size_t)k0;
    return A;
}
static Mat b_cols_from(Mat B, int c0) {
    if (B.rows) B.q0 += c0;
    else B.p += B.trans ? (size_t)c0 * B.ld : (size_t)c0;
    return B;
}
static Mat b_depth_from(Mat B, int k0) {
    if (B.rows) B.rows += k0;
    else B.p += B.trans ? (size_t)k0 : (size_t)k0 * B.ld;
    return B;
}

/* The blocked GEMM on the calling thread: jc (NC columns) > pc (KC deep, pack B) > ic (MC rows,
 * pack A or point at its rows) > micro-tiles. With row-pointer A a k slice never crosses a segment,
 * so each row of the slice is contiguous. */
static void gemm_serial(int m, int n, int k, float alpha, const Mat *A, const Mat *B, float beta, float *c, int ldc) {
    int nc_max = imin(NC, (n + NR - 1) / NR * NR);
    int packed_a = !A->rows && A->trans;
    float *bpack = buf_get(&tl_pack, ((size_t)KC * nc_max + (size_t)KC * MC) * sizeof(float));
    float *apack = bpack + (size_t)KC * nc_max;
    const float **arows = packed_a ? NULL : buf_get(&tl_arows, MC * sizeof(float *));
    for (int jc = 0; jc < n; jc += NC) {
        int nc = imin(NC, n - jc);
        for (int pc = 0; pc < k;) {
            int kc = imin(KC, k - pc);
            if (A->rows) kc = imin(kc, A->seg_len - (A->q0 + pc) % A->seg_len);
            float beta_eff = pc == 0 ? beta : 1.0f; /* later slices add to the first */
            for (int jr = 0; jr < nc; jr += NR)
                pack_b_panel(B, pc, kc, jc + jr, imin(NR, nc - jr), bpack + (size_t)jr * kc);
            for (int ic = 0; ic < m; ic += MC) {
                int mc = imin(MC, m - ic);
                if (packed_a) {
                    pack_a_trans(A->p, A->ld, ic, mc, pc, kc, apack);
                } else if (A->rows) {
                    long off = seg_off(A, pc);
                    for (int i = 0; i < mc; i++) arows[i] = A->rows[ic + i] + off;
                } else {
                    for (int i = 0; i < mc; i++) arows[i] = A->p + (size_t)(ic + i) * A->ld + pc;
                }
                for (int jr = 0; jr < nc; jr += NR)
                    for (int ir = 0; ir < mc; ir += MR) {
                        float *ct = c + (size_t)(ic + ir) * ldc + jc + jr;
                        int mr = imin(MR, mc - ir), nr = imin(NR, nc - jr);
                        if (packed_a)
                            micro_kernel(kc, apack + (size_t)ir * kc, bpack + (size_t)jr * kc, ct, ldc, mr, nr, alpha,
                                         beta_eff);
                        else
                            micro_kernel_rows(kc, arows + ir, bpack + (size_t)jr * kc, ct, ldc, mr, nr, alpha,
                                              beta_eff);
                    }
            }
            pc += kc;
        }
    }
}

enum { SPLIT_ROWS, SPLIT_COLS, SPLIT_DEPTH };

/* Threads work on independent sub-products (a band of rows, of columns, or a slice of k with
 * private partial sums added at the end), so a call has one fork/join and at most one barrier:
 * on a 2-core machine shared with other processes, per-block barriers cost far more than the
 * duplicated packing of the small operand. */
static void gemm_driver(int m, int n, int k, float alpha, const Mat *A, const Mat *B, float beta, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    int nt = 1;
#ifdef _OPENMP
    if (!omp_in_parallel() && (double)m * n * k > 2e5) nt = omp_get_max_threads();
#endif
    if (nt == 1) {
        gemm_serial(m, n, k, alpha, A, B, beta, c, ldc);
        return;
    }
    /* Rows or columns when they give every thread several register tiles (balance within a tile);
     * else slices of k if the partial results are small; else the longer of rows and columns. */
    int tm = (m + MR - 1) / MR, tn = (n + NR - 1) / NR, split;
    if (tm >= 4 * nt)
        split = SPLIT_ROWS;
    else if (tn >= 4 * nt)
        split = SPLIT_COLS;
    else if (k >= 2 * KC * nt && (size_t)m * n <= ((size_t)1 << 20))
        split = SPLIT_DEPTH;
    else
        split = (size_t)tm * MR >= (size_t)tn * NR ? SPLIT_ROWS : SPLIT_COLS;
    float *partial = split == SPLIT_DEPTH ? buf_get(&tl_partial, (size_t)nt * m * n * sizeof(float)) : NULL;

#pragma omp parallel num_threads(nt)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), T = omp_get_num_threads();
#endif
        if (split == SPLIT_ROWS) {
            int r0 = imin(m, (int)((long)tm * t / T) * MR), r1 = imin(m, (int)((long)tm * (t + 1) / T) * MR);
            Mat As = a_rows_from(*A, r0);
            if (r1 > r0) gemm_serial(r1 - r0, n, k, alpha, &As, B, beta, c + (size_t)r0 * ldc, ldc);
        } else if (split == SPLIT_COLS) {
            int c0 = imin(n, (int)((long)tn * t / T) * NR), c1 = imin(n, (int)((long)tn * (t + 1) / T) * NR);
            Mat Bs = b_cols_from(*B, c0);
            if (c1 > c0) gemm_serial(m, c1 - c0, k, alpha, A, &Bs, beta, c + c0, ldc);
        } else {
            int k0 = (int)((long)k * t / T), k1 = (int)((long)k * (t + 1) / T);
            float *mine = partial + (size_t)t * m * n; // (m, n)
            Mat As = a_depth_from(*A, k0), Bs = b_depth_from(*B, k0);
            gemm_serial(m, n, k1 - k0, 1.0f, &As, &Bs, 0.0f, mine, n);
#pragma omp barrier
            /* C = alpha * (sum of the partials, in thread order) + beta * C, rows split again */
            for (int i = m * t / T; i < m * (t + 1) / T; i++) {
                float *ci = c + (size_t)i * ldc;
                for (int j = 0; j < n; j++) {
                    float s = 0.0f;
                    for (int u = 0; u < T; u++) s += partial[((size_t)u * m + i) * n + j];
                    ci[j] = beta == 0.0f ? alpha * s : alpha * s + beta * ci[j];
                }
            }
        }
    }
}

void sgemm_builtin(int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc) {
    Mat A = {a, lda, transa, NULL, 1, 0, 0}, B = {b, ldb, transb, NULL, 1, 0, 0};
    gemm_driver(m, n, k, alpha, &A, &B, beta, c, ldc);
}

void sgemm_rowa(int m, int n, int k, const RowMat *a, int transb, const float *b, int ldb, float beta, float *c,
                int ldc) {
    Mat A = {NULL, 0, 0, a->rows, a->seg_len, 0, a->seg_stride}, B = {b, ldb, transb, NULL, 1, 0, 0};
    gemm_driver(m, n, k, 1.0f, &A, &B, beta, c, ldc);
}

void sgemm_rowb(int transa, int m, int n, int k, const float *a, int lda, const RowMat *b, float beta, float *c,
                int ldc) {
    Mat A = {a, lda, transa, NULL, 1, 0, 0}, B = {NULL, 0, 0, b->rows, b->seg_len, 0, b->seg_stride};
    gemm_driver(m, n, k, 1.0f, &A, &B, beta, c, ldc);
}

#ifdef HAVE_OPENBLAS
/* The built-in GEMM is the default even where OpenBLAS is linked. Measured on the 2-core AMD EPYC
 * (Zen 5) dev box: OpenBLAS 0.3.21 does not know the CPU and runs its AVX2 Haswell kernels, and its
 * pthreads pool fights libgomp's threads for the two cores (sched_yield storms), so a ResNet-50 step
 * ran 3x slower than with the built-in GEMM. CNN_GEMM=openblas brings OpenBLAS back. */
static int use_openblas(void) {
    static int choice = -1; /* read once; a racing first read stores the same value */
    if (choice < 0) {
        const char *e = getenv("CNN_GEMM");
        choice = e && !strcmp(e, "openblas");
    }
    return choice;
}
#endif

void sgemm(int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
           int ldb, float beta, float *c, int ldc) {
#ifdef HAVE_OPENBLAS
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || !use_openblas()) { /* (BLAS also rejects lda < 1 when k = 0) */
        sgemm_builtin(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, a, lda, b, ldb, beta, c, ldc);
#else
    sgemm_builtin(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

const char *sgemm_name(void) {
#ifdef HAVE_OPENBLAS
    if (use_openblas()) return "OpenBLAS (CNN_GEMM=openblas)";
    return "built-in (OpenBLAS linked; CNN_GEMM=openblas selects it)";
#else
    return "built-in";
#endif
}
