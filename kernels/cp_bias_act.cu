// cp_bias_act.cu — fused bias + activation in place on the MLP-up GEMM output: y = act(y + b), computed in fp32
// and stored in the GEMM dtype. Activations: QuickGELU x·σ(1.702x) (CLIP), GELU erf (BERT), GELU tanh, ReLU.
// v1: 2-D grid (column blocks of 256 x rows), each thread one element; the bias index is the column.
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_bias_act.cu
// CPU reference: cp_linear's bias + cp_activation (csrc/cp_ops.c).
#include "cp_cuda_dev.cuh"
#include "model/cp_ops.h"

template <typename T, int ACT>
static __global__ void cp_bias_act_v1(T *y, int64_t M, int64_t N, const float *__restrict__ b) {
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
        T *p = y + r * N + j;
        float v = cp::ld(p) + (b ? b[j] : 0.f);
        if (ACT == CP_ACT_QUICK_GELU) v = v / (1.0f + expf(-1.702f * v));
        else if (ACT == CP_ACT_GELU_ERF) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        else if (ACT == CP_ACT_GELU_TANH) v = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        else if (ACT == CP_ACT_RELU) v = v > 0.f ? v : 0.f;
        cp::st(p, v);
    }
}

template <typename T> static int launch(T *y, int64_t M, int64_t N, const float *b, int act, cudaStream_t s) {
    dim3 grid((unsigned)((N + 255) / 256), (unsigned)(M < 65535 ? M : 65535));
    switch (act) {
    case CP_ACT_QUICK_GELU: cp_bias_act_v1<T, CP_ACT_QUICK_GELU><<<grid, 256, 0, s>>>(y, M, N, b); break;
    case CP_ACT_GELU_ERF: cp_bias_act_v1<T, CP_ACT_GELU_ERF><<<grid, 256, 0, s>>>(y, M, N, b); break;
    case CP_ACT_GELU_TANH: cp_bias_act_v1<T, CP_ACT_GELU_TANH><<<grid, 256, 0, s>>>(y, M, N, b); break;
    case CP_ACT_RELU: cp_bias_act_v1<T, CP_ACT_RELU><<<grid, 256, 0, s>>>(y, M, N, b); break;
    default: CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_bias_act: unknown activation %d", act);
    }
    CP_CUDA_LAUNCHED("cp_cuda_bias_act");
    return CP_OK;
}

extern "C" int cp_cuda_bias_act(void *y, int dt, int64_t M, int64_t N, const float *b, int act, void *stream) {
    if (M <= 0 || N <= 0) return CP_OK;
    CP_DT_DISPATCH(dt, T, return launch<T>((T *)y, M, N, b, act, (cudaStream_t)stream));
    return CP_OK;
}
