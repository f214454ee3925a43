// cp_pool.cu — pooling of packed token rows (fp32): the EOT gather of CLIP (one row per prompt) and the masked
// mean of sentence-transformers (mean over a segment's packed rows; padding is never packed, so the mask is the
// segment itself; an empty segment gives zeros, as the clamp(min=1e-9) division does).
// v1: one block per output row, threads over columns; the mean sums rows in order (same order as the CPU loop).
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_pool.cu
// CPU reference: pool_rows() in csrc/model/cp_runner_cpu.c (EOT / CLS row, mean).
#include "cp_cuda_dev.cuh"

static __global__ void cp_gather_rows_v1(const float *__restrict__ x, int64_t W, const int32_t *__restrict__ rows,
                                         float *__restrict__ out) {
    const float *src = x + (int64_t)rows[blockIdx.x] * W;
    float *dst = out + (int64_t)blockIdx.x * W;
    for (int64_t j = threadIdx.x; j < W; j += blockDim.x) dst[j] = src[j];
}

static __global__ void cp_mean_pool_v1(const float *__restrict__ x, int64_t W, const int32_t *__restrict__ seg_start,
                                       const int32_t *__restrict__ seg_len, float *__restrict__ out) {
    const int64_t s = blockIdx.x, start = seg_start[s];
    const int n = seg_len[s];
    for (int64_t j = threadIdx.x; j < W; j += blockDim.x) {
        float acc = 0.f;
        for (int t = 0; t < n; t++) acc += x[(start + t) * W + j];
        out[s * W + j] = n > 0 ? acc / (float)n : 0.f;
    }
}

extern "C" int cp_cuda_gather_rows(const float *x, int64_t W, const int32_t *rows, int64_t n, float *out,
                                   void *stream) {
    if (n <= 0) return CP_OK;
    CP_CUDA_ROWS_OK("cp_cuda_gather_rows", n);
    cp_gather_rows_v1<<<(unsigned)n, 128, 0, (cudaStream_t)stream>>>(x, W, rows, out);
    CP_CUDA_LAUNCHED("cp_cuda_gather_rows");
    return CP_OK;
}

extern "C" int cp_cuda_mean_pool(const float *x, int64_t W, const int32_t *seg_start, const int32_t *seg_len,
                                 int64_t nseg, float *out, void *stream) {
    if (nseg <= 0) return CP_OK;
    CP_CUDA_ROWS_OK("cp_cuda_mean_pool", nseg);
    cp_mean_pool_v1<<<(unsigned)nseg, 128, 0, (cudaStream_t)stream>>>(x, W, seg_start, seg_len, out);
    CP_CUDA_LAUNCHED("cp_cuda_mean_pool");
    return CP_OK;
}
