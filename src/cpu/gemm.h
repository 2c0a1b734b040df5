/* cpu/gemm.h: single-precision matrix multiply, row-major, BLAS semantics:
 *   C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C
 * op(X) is X (trans = 0) or X^T (trans != 0); lda/ldb/ldc are row strides of the stored matrices.
 * beta == 0 overwrites C without reading it (NaNs in C do not leak through). */
#ifndef CNN_GEMM_H
#define CNN_GEMM_H

/* sgemm_builtin; or OpenBLAS when built with -DHAVE_OPENBLAS and run with CNN_GEMM=openblas
 * (see gemm.c for why the built-in one is the default). */
void sgemm(int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
           int ldb, float beta, float *c, int ldc);

/* Which GEMM sgemm uses: "built-in" or "OpenBLAS". */
const char *sgemm_name(void);

/* The portable cache-blocked, OpenMP-parallel GEMM; always compiled so tests can check it. */
void sgemm_builtin(int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc);

/* A matrix read through row pointers, so a convolution can take its windows straight from the
 * (padded) input instead of an im2col copy: element (r, q) = rows[r][(q / seg_len) * seg_stride +
 * q % seg_len], i.e. each row is a run of seg_len-long contiguous segments seg_stride apart
 * (one segment per kernel row). */
typedef struct {
    const float *const *rows;
    int seg_len;
    long seg_stride;
} RowMat;

/* C (m, n) = A (m, k) * op(B) (k, n) + beta * C, A given by rows (m row pointers). */
void sgemm_rowa(int m, int n, int k, const RowMat *a, int transb, const float *b, int ldb, float beta, float *c,
                int ldc);
/* C (m, n) = op(A) (m, k) * B (k, n) + beta * C, B given by rows (k row pointers, n columns). */
void sgemm_rowb(int transa, int m, int n, int k, const float *a, int lda, const RowMat *b, float beta, float *c,
                int ldc);

#endif
