// cp_bias_residual.cu — fused bias + residual (+ LayerNorm) after the attention-output and MLP-down GEMMs:
//   PLAIN:   x += y + b
//   PRE_LN:  x += y + b;  h = LN(x)          (CLIP's pre-LN blocks: h feeds the next GEMM)
//   POST_LN: x = LN(x + y + b);  h = x       (BERT's post-LN blocks)
// x and y are fp32 (the GEMM writes fp32 here, so the residual stream never rounds to fp16/bf16); h is in the
// GEMM dtype.
// v1: one block per row; the row sum goes to x first, then cp::ln_row reads it back (L1/L2 hits).
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_bias_residual.cu
// CPU reference: cp_linear(..., accumulate = 1) followed by cp_layernorm (csrc/cp_ops.c).
#include "cp_cuda_dev.cuh"

template <typename T>
static __global__ void cp_bias_residual_v1(float *x, const float *__restrict__ y, const float *__restrict__ b,
                                           int64_t N, int mode, const float *__restrict__ g,
                                           const float *__restrict__ beta, float eps, T *h) {
    __shared__ float red[33];
    const int64_t r = blockIdx.x;
    float *xr = x + r * N;
    const float *yr = y + r * N;
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) xr[j] = (xr[j] + (b ? b[j] : 0.f)) + yr[j];
    if (mode == CP_CUDA_RES_PRE_LN) cp::ln_row<T>(xr, N, g, beta, eps, nullptr, h ? h + r * N : nullptr, red);
    else if (mode == CP_CUDA_RES_POST_LN) cp::ln_row<T>(xr, N, g, beta, eps, xr, h ? h + r * N : nullptr, red);
}

extern "C" int cp_cuda_bias_residual(float *x, const float *y, const float *b, int64_t M, int64_t N, int mode,
                                     const float *g, const float *beta, float eps, void *h, int dt, void *stream) {
    if (M <= 0 || N <= 0) return CP_OK;
    CP_CUDA_ROWS_OK("cp_cuda_bias_residual", M);
    if (mode != CP_CUDA_RES_PLAIN && (g == nullptr || beta == nullptr))
        CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_bias_residual: LayerNorm mode %d without gain/bias", mode);
    const int th = cp::row_threads(N);
    CP_DT_DISPATCH(dt, T,
                   cp_bias_residual_v1<T><<<(unsigned)M, th, 0, (cudaStream_t)stream>>>(x, y, b, N, mode, g, beta,
                                                                                          eps, (T *)h));
    CP_CUDA_LAUNCHED("cp_cuda_bias_residual");
    return CP_OK;
}
