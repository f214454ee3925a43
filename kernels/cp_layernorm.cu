// cp_layernorm.cu — LayerNorm over rows of x[M,N] fp32 with fp32 statistics; output fp32 (in place allowed)
// and/or in the GEMM dtype (fp16/bf16/fp32).
// v1: one block per row (about N/4 threads), two-pass mean/variance through block reductions (cp::ln_row).
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_layernorm.cu
// CPU reference: cp_layernorm (csrc/cp_ops.c).
#include "cp_cuda_dev.cuh"

template <typename T>
static __global__ void cp_layernorm_v1(const float *x, int64_t N, const float *__restrict__ g,
                                       const float *__restrict__ b, float eps, float *y32, T *ydt) {
    __shared__ float red[33];
    const int64_t r = blockIdx.x;
    cp::ln_row<T>(x + r * N, N, g, b, eps, y32 ? y32 + r * N : nullptr, ydt ? ydt + r * N : nullptr, red);
}

extern "C" int cp_cuda_layernorm(const float *x, int64_t M, int64_t N, const float *g, const float *b, float eps,
                                 float *y32, void *ydt, int dt, void *stream) {
    if (M <= 0 || N <= 0) return CP_OK;
    CP_CUDA_ROWS_OK("cp_cuda_layernorm", M);
    const int th = cp::row_threads(N);
    CP_DT_DISPATCH(dt, T,
                   cp_layernorm_v1<T><<<(unsigned)M, th, 0, (cudaStream_t)stream>>>(x, N, g, b, eps, y32, (T *)ydt));
    CP_CUDA_LAUNCHED("cp_cuda_layernorm");
    return CP_OK;
}
