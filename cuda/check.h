/* check.h: every CUDA runtime, cuDNN and cuBLAS return code goes through one of these macros.
 * They all end in cuda_fail(), which prints where and what failed and exits: a failed device call
 * leaves the stream in an unknown state, so there is nothing sensible to continue with. */
#ifndef CNN_CUDA_CHECK_H
#define CNN_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

/* library: "CUDA", "cuDNN" or "cuBLAS"; call: the source text of the call; msg: the library's
 * own error string. Never returns. */
[[noreturn]] void cuda_fail(const char *library, const char *call, int code, const char *msg, const char *file,
                            int line);

#define CUDA_CHECK(call)                                                                    \
    do {                                                                                    \
        cudaError_t cnn_e_ = (call);                                                        \
        if (cnn_e_ != cudaSuccess)                                                          \
            cuda_fail("CUDA", #call, (int)cnn_e_, cudaGetErrorString(cnn_e_), __FILE__, __LINE__); \
    } while (0)

#define CUDNN_CHECK(call)                                                                   \
    do {                                                                                    \
        cudnnStatus_t cnn_s_ = (call);                                                      \
        if (cnn_s_ != CUDNN_STATUS_SUCCESS)                                                 \
            cuda_fail("cuDNN", #call, (int)cnn_s_, cudnnGetErrorString(cnn_s_), __FILE__, __LINE__); \
    } while (0)

#define CUBLAS_CHECK(call)                                                                  \
    do {                                                                                    \
        cublasStatus_t cnn_s_ = (call);                                                     \
        if (cnn_s_ != CUBLAS_STATUS_SUCCESS)                                                \
            cuda_fail("cuBLAS", #call, (int)cnn_s_, cublasGetStatusString(cnn_s_), __FILE__, __LINE__); \
    } while (0)

/* After a kernel launch: catches bad launch configurations at the launch site (execution errors
 * surface at the next synchronising call, which is checked too). */
#define KERNEL_CHECK() CUDA_CHECK(cudaGetLastError())

#endif
