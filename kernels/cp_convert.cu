// cp_convert.cu — dst[n] = (dtype) src[n] from fp32, round to nearest even: converts uploaded weights and queries
// to the runner's dtype once, on the device.
// v1: grid-stride loop, one element per thread per step.
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_convert.cu
// CPU reference: numpy astype(float16) / torch .to(bfloat16) (both round to nearest even).
#include "cp_cuda_dev.cuh"

template <typename T> static __global__ void cp_convert_v1(const float *__restrict__ src, T *__restrict__ dst, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        cp::st(dst + i, src[i]);
}

extern "C" int cp_cuda_convert(const float *src, void *dst, int dt, int64_t n, void *stream) {
    if (n <= 0) return CP_OK;
    int64_t blocks = (n + 255) / 256;
    if (blocks > 65535) blocks = 65535;
    CP_DT_DISPATCH(dt, T, cp_convert_v1<T><<<(unsigned)blocks, 256, 0, (cudaStream_t)stream>>>(src, (T *)dst, n));
    CP_CUDA_LAUNCHED("cp_cuda_convert");
    return CP_OK;
}
