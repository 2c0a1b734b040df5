/* vec.h: wide loads and stores for the memory-bound kernels (elementwise, pooling, head, batch
 * norm). A kernel templated on L handles L consecutive elements per access: L = 1 is the plain
 * scalar kernel, L = VEC (16 bytes: 4 fp32, 8 fp16/bf16) moves them as one uint4. Values are still
 * converted one at a time with to_float/from_float, so both widths give the same bits.
 * The host chooses L (lanes_dispatch): VEC only when every pointer the kernel touches is 16-byte
 * aligned (cudaMalloc gives 256, but a caller may pass an offset pointer) and the kernel's count
 * condition holds (NHWC kernels: channels % VEC == 0; flat kernels finish the tail one by one). */
#ifndef CNN_CUDA_VEC_H
#define CNN_CUDA_VEC_H

#include <stdint.h>
#include <string.h>

#include <type_traits>

#include "dtype.h"

template <typename T> constexpr int vec_width() { return 16 / (int)sizeof(T); }

template <int Bytes> struct RawBits;
template <> struct RawBits<8> { typedef uint2 type; };
template <> struct RawBits<16> { typedef uint4 type; };

/* L elements at p (aligned to L*sizeof(T)) to floats, and back with one rounding each. */
template <typename T, int L> __device__ __forceinline__ void load_floats(const T *p, float (&f)[L]) {
    if constexpr (L == 1) {
        f[0] = to_float(p[0]);
    } else {
        typename RawBits<L * sizeof(T)>::type r = *reinterpret_cast<const typename RawBits<L * sizeof(T)>::type *>(p);
        T v[L];
        memcpy(v, &r, sizeof r);
#pragma unroll
        for (int k = 0; k < L; k++) f[k] = to_float(v[k]);
    }
}

template <typename T, int L> __device__ __forceinline__ void store_floats(T *p, const float (&f)[L]) {
    if constexpr (L == 1) {
        p[0] = from_float<T>(f[0]);
    } else {
        T v[L];
#pragma unroll
        for (int k = 0; k < L; k++) v[k] = from_float<T>(f[k]);
        typename RawBits<L * sizeof(T)>::type r;
        memcpy(&r, v, sizeof r);
        *reinterpret_cast<typename RawBits<L * sizeof(T)>::type *>(p) = r;
    }
}

/* The raw elements, for kernels that copy a value without converting it (max pooling). */
template <typename T, int L> __device__ __forceinline__ void load_raw(const T *p, T (&v)[L]) {
    if constexpr (L == 1) {
        v[0] = p[0];
    } else {
        typename RawBits<L * sizeof(T)>::type r = *reinterpret_cast<const typename RawBits<L * sizeof(T)>::type *>(p);
        memcpy(v, &r, sizeof r);
    }
}

template <typename T, int L> __device__ __forceinline__ void store_raw(T *p, const T (&v)[L]) {
    if constexpr (L == 1) {
        p[0] = v[0];
    } else {
        typename RawBits<L * sizeof(T)>::type r;
        memcpy(&r, v, sizeof r);
        *reinterpret_cast<typename RawBits<L * sizeof(T)>::type *>(p) = r;
    }
}

/* A flat grid-stride loop in groups of L: body(lanes, i) with lanes an integral_constant<int, L>
 * and i a multiple of L, then the last total % L elements one by one (lanes = 1). Launch with
 * lanes_grid(total, L) blocks of CUDA_BLOCK. */
template <int L, typename F> __device__ __forceinline__ void for_lanes(size_t total, F body) {
    size_t groups = total / L, stride = (size_t)gridDim.x * blockDim.x;
    size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (size_t g = t; g < groups; g += stride) body(std::integral_constant<int, L>{}, g * L);
    if constexpr (L > 1)
        for (size_t i = groups * L + t; i < total; i += stride) body(std::integral_constant<int, 1>{}, i);
}

static inline unsigned lanes_grid(size_t total, int lanes) { return cuda_grid((total + lanes - 1) / lanes); }

/* ---- host ---- */

template <typename... P> static inline bool aligned16(const P *...p) {
    return ((((uintptr_t)p & 15) == 0) && ...);
}

/* The 16-byte path of an NHWC kernel whose threads each take L channels of one pixel. */
template <typename T, typename... P> static inline bool channels_wide(int c, const P *...p) {
    return c % vec_width<T>() == 0 && aligned16(p...);
}

/* Calls f(std::integral_constant<int, L>{}) with L = vec_width<T>() when wide, else L = 1. */
template <typename T, typename F> static inline void lanes_dispatch(bool wide, F &&f) {
    if (wide) f(std::integral_constant<int, vec_width<T>()>{});
    else f(std::integral_constant<int, 1>{});
}

#endif
