// cp_embed.cu — embedding gather + position add for packed tokens: x[t] = tok_emb[tok[t]] + pos_emb[pos[t]]
// (+ the token-type row for BERT), fp32 (the residual stream stays fp32 whatever the GEMM dtype).
// v1: one block per token row, float4 loads when W is a multiple of 4; tok[t] < 0 writes zeros (the padding rows
//     that let one captured CUDA graph serve every batch of the same bucket).
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_embed.cu
// CPU reference: embed() in csrc/model/cp_runner_cpu.c.
#include "cp_cuda_dev.cuh"

static __global__ void cp_embed_v1(const float *__restrict__ tok_emb, const float *__restrict__ pos_emb,
                                   const float *__restrict__ type_row, const int32_t *__restrict__ tok,
                                   const int32_t *__restrict__ pos, int64_t W, float *__restrict__ x) {
    const int64_t t = blockIdx.x;
    const int32_t id = tok[t];
    float *o = x + t * W;
    if (id < 0) {
        for (int64_t j = threadIdx.x; j < W; j += blockDim.x) o[j] = 0.f;
        return;
    }
    const float *te = tok_emb + (int64_t)id * W, *pe = pos_emb + (int64_t)pos[t] * W;
    if ((W & 3) == 0) {
        const float4 *te4 = (const float4 *)te, *pe4 = (const float4 *)pe, *ty4 = (const float4 *)type_row;
        float4 *o4 = (float4 *)o;
        for (int64_t j = threadIdx.x; j < W / 4; j += blockDim.x) {
            float4 a = te4[j], b = pe4[j];
            // torch adds word + token_type first, then position (BERT); for CLIP token + position
            if (type_row) {
                float4 c = ty4[j];
                a.x += c.x, a.y += c.y, a.z += c.z, a.w += c.w;
            }
            o4[j] = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
        }
    } else {
        for (int64_t j = threadIdx.x; j < W; j += blockDim.x) o[j] = (type_row ? te[j] + type_row[j] : te[j]) + pe[j];
    }
}

extern "C" int cp_cuda_embed(const float *tok_emb, const float *pos_emb, const float *type_row, const int32_t *tok,
                             const int32_t *pos, int64_t T, int64_t W, float *x, void *stream) {
    if (T <= 0) return CP_OK;
    CP_CUDA_ROWS_OK("cp_cuda_embed", T);
    cp_embed_v1<<<(unsigned)T, 128, 0, (cudaStream_t)stream>>>(tok_emb, pos_emb, type_row, tok, pos, W, x);
    CP_CUDA_LAUNCHED("cp_cuda_embed");
    return CP_OK;
}
