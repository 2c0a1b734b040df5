/* linear.cu: the fully connected layer, y = x w^T + b, through cuBLAS. x is (n, in, 1, 1), which in
 * NHWC is a row-major [n][in] matrix (an (n, c, h, w) x is taken as in = c*h*w, in NHWC order, as the
 * CPU backend does); w is row-major [out][in] as in PyTorch.
 *
 * cuBLAS is column-major, and a row-major [r][c] matrix is the column-major c x r matrix (its
 * transpose) with leading dimension c. Every product below is the row-major formula transposed:
 *   forward   y  = x w^T   ->  y^T (out x n)  = w_cm^T   x_cm          (T, N)
 *   dx        dx = dy w    ->  dx^T (in x n)  = w_cm     dy_cm         (N, N)
 *   dw        dw = dy^T x  ->  dw^T (in x out) = x_cm    dy_cm^T       (N, T)
 * where a_cm is the column-major view of row-major a.
 *
 * Precision. fp32: cublasSgemm with the default math mode (no TF32), as before mixed precision.
 * fp16/bf16: cublasGemmEx, A and B in CUDA_R_16F / CUDA_R_16BF (x, dy, and the backend's
 * low-precision copy of w), CUBLAS_COMPUTE_32F with fp32 alpha/beta; C is fp32 for dw (the fp32
 * parameter gradient, written directly) and for the forward product (an fp32 scratch, to which a
 * kernel adds the fp32 bias before one rounding to the activation type), and the activation type for
 * dx (beta = 1 accumulates). dw and db come out divided by the loss scale (alpha = 1/scale). */
#include "cuda_backend.h"
#include "dtype.h"

__global__ void add_bias_kernel(float *y, const float *bias, int rows, int cols) {
    size_t total = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] += bias[i % cols];
}

/* y = T(acc + bias): the low-precision forward's epilogue; bias may be NULL. */
template <typename T> __global__ void bias_cast_kernel(const float *acc, const float *bias, int rows, int cols, T *y) {
    GRID_STRIDE(i, (size_t)rows * cols) y[i] = from_float<T>(acc[i] + (bias ? bias[i % cols] : 0.0f));
}

/* db[j] = sum over the batch of dy[i][j]; one thread per output, batch order fixed (deterministic). */
template <typename T> __global__ void bias_grad_kernel(const T *dy, float *db, int rows, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float s = 0.0f;
    for (int i = 0; i < rows; i++) s += to_float(dy[(size_t)i * cols + j]);
    db[j] = s;
}

void cuda_linear_forward(Backend *b, const Tensor *x, const float *w, const float *bias, Tensor *y) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(x, "linear_forward");
    cuda_require_dtype(y, dt, "linear_forward");
    /* out features come from y's channel count (the caller sizes y; w's shape is not in the call) */
    int n = x->n, in = x->c * x->h * x->w, out = y->c;
    if (out < 1) die("cuda linear_forward: y must carry the output feature count in c (got %d)", out);
    cuda_set_shape(y, n, out, 1, 1);
    if (n == 0) return;
    const float one = 1.0f, zero = 0.0f;
    if (dt == DT_F32) {
        CUBLAS_CHECK(cublasSgemm(ctx->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w, in,
                                 (const float *)x->data, in, &zero, (float *)y->data, out));
        if (bias) {
            add_bias_kernel<<<cuda_grid((size_t)n * out), CUDA_BLOCK, 0, ctx->stream>>>((float *)y->data, bias, n,
                                                                                       out);
            KERNEL_CHECK();
        }
        return;
    }
    const void *wd = cuda_weights(b, w, (size_t)out * in, dt, "linear_forward");
    cudaDataType_t t = cuda_blas_dtype(dt);
    float *acc = (float *)cuda_buf_reserve(ctx->stream, &ctx->convert, (size_t)n * out * sizeof(float));
    CUBLAS_CHECK(cublasGemmEx(ctx->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, wd, t, in, x->data, t, in,
                              &zero, acc, CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    cuda_dispatch(dt, "linear_forward", [&](auto tag) {
        using T = decltype(tag);
        bias_cast_kernel<T><<<cuda_grid((size_t)n * out), CUDA_BLOCK, 0, ctx->stream>>>(acc, bias, n, out,
                                                                                        (T *)y->data);
    });
    KERNEL_CHECK();
}

/* dw and db are overwritten; dx takes accumulate. Any of dw, db, dx may be NULL (not wanted). */
void cuda_linear_backward(Backend *b, const Tensor *x, const Tensor *dy, const float *w, float *dw, float *db,
                          Tensor *dx, int accumulate) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = cuda_act_dtype(x, "linear_backward");
    cuda_require_dtype(dy, dt, "linear_backward");
    if (dy->n != x->n || dy->h != 1 || dy->w != 1)
        die("cuda linear_backward: dy is %dx%dx%dx%d, expected (%d, out, 1, 1)", dy->n, dy->c, dy->h, dy->w, x->n);
    int n = x->n, in = x->c * x->h * x->w, out = dy->c;
    if (n == 0) return;
    const float one = 1.0f, zero = 0.0f;
    cudaDataType_t t = cuda_blas_dtype(dt);
    if (dw) {
        if (dt == DT_F32)
            CUBLAS_CHECK(cublasSgemm(ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one,
                                     (const float *)x->data, in, (const float *)dy->data, out, &zero, dw, in));
        else
            CUBLAS_CHECK(cublasGemmEx(ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, x->data, t, in,
                                      dy->data, t, out, &zero, dw, CUDA_R_32F, in, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
    }
    if (db) {
        cuda_dispatch(dt, "linear_backward", [&](auto tag) {
            using T = decltype(tag);
            bias_grad_kernel<T><<<(out + CUDA_BLOCK - 1) / CUDA_BLOCK, CUDA_BLOCK, 0, ctx->stream>>>(
                (const T *)dy->data, db, n, out);
        });
        KERNEL_CHECK();
    }
    if (dx) {
        cuda_require_dtype(dx, dt, "linear_backward");
        cuda_set_shape(dx, x->n, x->c, x->h, x->w);
        const float beta = accumulate ? 1.0f : 0.0f;
        if (dt == DT_F32) {
            CUBLAS_CHECK(cublasSgemm(ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, w, in,
                                     (const float *)dy->data, out, &beta, (float *)dx->data, in));
        } else {
            const void *wd = cuda_weights(b, w, (size_t)out * in, dt, "linear_backward");
            CUBLAS_CHECK(cublasGemmEx(ctx->cublas, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, wd, t, in, dy->data, t,
                                      out, &beta, dx->data, t, in, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
    }
}
