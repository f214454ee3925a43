// cp_cuda_dev.cuh — device-side helpers shared by kernels/*.cu: dtype load/store, warp/block sums, the launch
// check. Included by .cu files only (never by csrc/).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "base/cp_common.h"
#include "cp_cuda.h"

namespace cp {

// Element types per CP_CUDA_* code; loads widen to float, stores round to nearest even.
__device__ __forceinline__ float ld(const float *p) { return *p; }
__device__ __forceinline__ float ld(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float *p, float v) { *p = v; }
__device__ __forceinline__ void st(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result. `red` holds 33 floats.
__device__ __forceinline__ float block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (int)(blockDim.x >> 5);
    v = warp_sum(v);
    __syncthreads(); // red may still be read by a previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < nw ? red[lane] : 0.f;
        s = warp_sum(s);
        if (lane == 0) red[32] = s;
    }
    __syncthreads();
    return red[32];
}

// LayerNorm of one row v[N] (fp32, global memory) by the whole block, fp32 two-pass statistics (mean, then the
// mean of squared deviations, as torch computes them); writes y32 (may alias v) and/or ydt. Each thread touches the
// same columns in every loop, so in-place use is safe.
template <typename T>
__device__ __forceinline__ void ln_row(const float *v, int64_t N, const float *__restrict__ g,
                                       const float *__restrict__ b, float eps, float *y32, T *ydt, float *red) {
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) s += v[j];
    const float mean = block_sum(s, red) / (float)N;
    float q = 0.f;
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
        const float d = v[j] - mean;
        q += d * d;
    }
    const float rstd = 1.0f / sqrtf(block_sum(q, red) / (float)N + eps);
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
        const float o = (v[j] - mean) * rstd * g[j] + b[j];
        if (y32) y32[j] = o;
        if (ydt) st(ydt + j, o);
    }
}

// Threads per row for the row kernels: a multiple of 32, about N/4 (at least 64, at most 512).
static inline int row_threads(int64_t N) {
    int64_t t = ((N / 4 + 31) / 32) * 32;
    return (int)(t < 64 ? 64 : t > 512 ? 512 : t);
}

} // namespace cp

// Dispatch a dtype code to a kernel template: CP_DT_DISPATCH(dt, T, { launch<T>(...); })
#define CP_DT_DISPATCH(dt, T, ...)                                                                                \
    do {                                                                                                          \
        if ((dt) == CP_CUDA_F32) {                                                                                \
            using T = float;                                                                                      \
            __VA_ARGS__;                                                                                          \
        } else if ((dt) == CP_CUDA_F16) {                                                                         \
            using T = __half;                                                                                     \
            __VA_ARGS__;                                                                                          \
        } else if ((dt) == CP_CUDA_BF16) {                                                                        \
            using T = __nv_bfloat16;                                                                              \
            __VA_ARGS__;                                                                                          \
        } else {                                                                                                  \
            CP_FAIL(CP_ERR_INVALID_ARG, "%s: unknown device dtype code %d", __func__, (int)(dt));                 \
        }                                                                                                         \
    } while (0)

// After a launch: a launch error becomes CP_ERR_DEVICE with CUDA's message (and the error is cleared).
#define CP_CUDA_LAUNCHED(what)                                                                                    \
    do {                                                                                                          \
        cudaError_t e_ = cudaGetLastError();                                                                      \
        if (e_ != cudaSuccess)                                                                                    \
            CP_FAIL(CP_ERR_DEVICE, "%s: kernel launch failed: %s (%s)", (what), cudaGetErrorString(e_),           \
                    cudaGetErrorName(e_));                                                                        \
    } while (0)

// Grid sizes are int; row counts beyond that are refused rather than truncated.
#define CP_CUDA_ROWS_OK(what, n)                                                                                  \
    do {                                                                                                          \
        if ((n) < 0 || (n) > 0x7fffffffLL)                                                                        \
            CP_FAIL(CP_ERR_INVALID_ARG, "%s: %lld rows is outside the grid limit", (what), (long long)(n));       \
    } while (0)
