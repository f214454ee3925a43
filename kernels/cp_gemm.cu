// cp_gemm.cu — GEMMs through cuBLAS (cublasGemmEx, which dispatches to cuBLASLt kernels): fp16/bf16 inputs on
// tensor cores with fp32 accumulation, fp32 inputs in true fp32 (no TF32, so fp32 parity with the CPU holds).
// v1: row-major y[M,N] = x[M,K]·W^T (W [N,K], nn.Linear) or x·W (W [K,N]) mapped onto column-major cuBLAS as
//     y^T = W^T·x^T, so no transposed copies of weights or activations are made.
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_gemm.cu
// CPU reference: cp_linear (csrc/cp_ops.c).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "base/cp_common.h"
#include "cp_cuda.h"

#define CP_BLAS_TRY(call, what)                                                                                   \
    do {                                                                                                          \
        cublasStatus_t s_ = (call);                                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                        \
            cudaGetLastError();                                                                                   \
            CP_FAIL(s_ == CUBLAS_STATUS_ALLOC_FAILED ? CP_ERR_DEVICE_OOM : CP_ERR_DEVICE, "%s: cuBLAS %s (%s)",     \
                    (what), cublasGetStatusString(s_), cublasGetStatusName(s_));                                   \
        }                                                                                                         \
    } while (0)

static cudaDataType_t blas_type(int dt) {
    return dt == CP_CUDA_F16 ? CUDA_R_16F : dt == CP_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

extern "C" int cp_cuda_blas_create(void **blas, void *stream, void *workspace, size_t ws_bytes) {
    *blas = nullptr;
    cublasHandle_t h = nullptr;
    CP_BLAS_TRY(cublasCreate(&h), "cublasCreate");
    cublasStatus_t s = cublasSetStream(h, (cudaStream_t)stream);
    if (s == CUBLAS_STATUS_SUCCESS && workspace) s = cublasSetWorkspace(h, workspace, ws_bytes);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(h);
        CP_BLAS_TRY(s, "cublas setup");
    }
    *blas = (void *)h;
    return CP_OK;
}

extern "C" void cp_cuda_blas_free(void *blas) {
    if (blas) cublasDestroy((cublasHandle_t)blas);
}

extern "C" int cp_cuda_gemm(void *blas, int dt_in, int dt_out, const void *x, int64_t ldx, int64_t M, int64_t K,
                            const void *w, int w_in_out, int64_t N, void *y, int64_t ldy, float beta) {
    if (M <= 0 || N <= 0) return CP_OK;
    if (M > 0x7fffffffLL || N > 0x7fffffffLL || K > 0x7fffffffLL || ldx > 0x7fffffffLL || ldy > 0x7fffffffLL)
        CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_gemm: %lld x %lld x %lld is beyond cuBLAS's int sizes", (long long)M,
                (long long)N, (long long)K);
    if (dt_out != dt_in && dt_out != CP_CUDA_F32)
        CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_gemm: output dtype %d for input dtype %d", dt_out, dt_in);
    const float alpha = 1.0f;
    const cublasComputeType_t ct = CUBLAS_COMPUTE_32F; // default math mode: no TF32 for fp32 inputs
    cublasOperation_t opw = w_in_out ? CUBLAS_OP_N : CUBLAS_OP_T;
    const int lda = w_in_out ? (int)N : (int)K;
    CP_BLAS_TRY(cublasGemmEx((cublasHandle_t)blas, opw, CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, w,
                             blas_type(dt_in), lda, x, blas_type(dt_in), (int)ldx, &beta, y, blas_type(dt_out),
                             (int)ldy, ct, CUBLAS_GEMM_DEFAULT),
                "cp_cuda_gemm");
    return CP_OK;
}
