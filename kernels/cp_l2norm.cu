// cp_l2norm.cu — row-wise L2 normalisation in place, x[n, d] fp32.
// v1: one block per row, blockDim 256, fp32 sum of squares reduced through warp shuffles + shared memory.
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_l2norm.cu
// CPU reference: cp_l2_normalize_rows (csrc/). Rows of norm 0 stay 0 (as torch.nn.functional.normalize with eps).
#include <cuda_runtime.h>

#include "base/cp_common.h"
#include "cp_cuda.h"

static __global__ void cp_l2norm_rows_v1(float *x, int64_t d) {
    float *row = x + (int64_t)blockIdx.x * d;
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += row[j] * row[j];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    __shared__ float warp_sums[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < (int)(blockDim.x >> 5) ? warp_sums[lane] : 0.f;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) warp_sums[0] = s;
    }
    __syncthreads();
    float inv = 1.f / fmaxf(sqrtf(warp_sums[0]), 1e-12f);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) row[j] *= inv;
}

extern "C" int cp_cuda_l2_normalize(float *x, int64_t n, int64_t d, void *stream) {
    if (n <= 0 || d <= 0) return CP_OK;
    if (n > 0x7fffffff) CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_l2_normalize: n=%lld rows exceeds the grid limit", (long long)n);
    cp_l2norm_rows_v1<<<(unsigned)n, 256, 0, (cudaStream_t)stream>>>(x, d);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) CP_FAIL(CP_ERR_DEVICE, "cp_cuda_l2_normalize launch failed: %s", cudaGetErrorString(e));
    return CP_OK;
}
