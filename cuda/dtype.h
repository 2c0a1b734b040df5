/* dtype.h: what the .cu files need to run one kernel over fp32, fp16 or bf16 activations.
 * Kernels are templates on the element type T and compute in float: load with to_float(), store
 * with from_float<T>() (round to nearest even; a value past fp16's range becomes inf, which the
 * loss scaler wants to see). cuda_dispatch() turns a Tensor's DType into the template argument:
 *
 *     cuda_dispatch(x->dtype, "relu_forward", [&](auto tag) {
 *         using T = decltype(tag);
 *         relu_fwd_kernel<T><<<...>>>((const T *)x->data, ...);
 *     });
 *
 * Host side: the matching cuDNN and cuBLAS type codes. */
#ifndef CNN_CUDA_DTYPE_H
#define CNN_CUDA_DTYPE_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_backend.h"

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

/* An fp32 parameter gradient from a low-precision one (still carrying the loss scale: the optimizer
 * divides it out). cuDNN may saturate an overflowing fp16 result at +-65504 instead of making it
 * inf, which would hide the overflow from the loss scaler: for fp16, |v| >= 65504 (fp16's largest
 * finite value) becomes inf. NaN stays NaN. bf16 has fp32's range: nothing to map. */
__device__ __forceinline__ float widen_grad(float v) { return v; }
__device__ __forceinline__ float widen_grad(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float widen_grad(__half v) {
    float f = __half2float(v);
    if (fabsf(f) >= 65504.0f) f = copysignf(INFINITY, f);
    return f;
}

/* Calls f(T{}) with T = float, __half or __nv_bfloat16 for dt; any other value is a fatal error. */
template <typename F> static inline void cuda_dispatch(DType dt, const char *op, F &&f) {
    switch (dt) {
    case DT_F32: f(float{}); return;
    case DT_F16: f(__half{}); return;
    case DT_BF16: f(__nv_bfloat16{}); return;
    }
    die("cuda %s: unknown dtype %d", op, (int)dt);
}

static inline cudnnDataType_t cuda_cudnn_dtype(DType dt) {
    return dt == DT_F16 ? CUDNN_DATA_HALF : dt == DT_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

static inline cudaDataType_t cuda_blas_dtype(DType dt) {
    return dt == DT_F16 ? CUDA_R_16F : dt == DT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

#ifndef GRID_STRIDE
#define GRID_STRIDE(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)
#endif

#endif
