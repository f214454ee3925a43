// cp_attention.cu — multi-head attention over packed segments for short sequences, one fused kernel per layer:
// bias add on load, scores, fp32 softmax, weighted sum of values. Causal (CLIP) or full within the segment (BERT:
// padding is never packed, so the padding mask is the segment boundary).
// v1: grid (segments x heads, row blocks of 16). A block of 4 warps stages its segment's K and V for one head in
//     shared memory (in the GEMM dtype, bias added, rows padded against bank conflicts: lane j reads key row j);
//     each warp takes every 4th query row: lanes own keys for the scores (kept in shared memory), then own head
//     dims for the weighted sum. Only keys up to the block's last row are staged when causal.
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_attention.cu
// CPU reference: cp_attention (csrc/cp_ops.c). Inputs are rounded to the dtype after the bias, as torch's fp16
// nn.Linear output is, so fp16/bf16 results track transformers' fp16/bf16 run.
#include <math.h>

#include "cp_cuda_dev.cuh"

namespace {

constexpr int NW = 4;  // warps per block
constexpr int RPW = 4; // query rows per warp
constexpr int RB = NW * RPW;

template <typename T> __device__ __forceinline__ float round_to(float v) {
    T t;
    cp::st(&t, v);
    return cp::ld(&t);
}

template <typename T> __host__ __device__ constexpr int key_stride(int dh) { return dh + (sizeof(T) == 4 ? 1 : 2); }

template <typename T> size_t smem_bytes(int64_t max_len, int64_t dh) {
    return (size_t)2 * max_len * key_stride<T>((int)dh) * sizeof(T) + (size_t)NW * dh * sizeof(float) +
           (size_t)NW * max_len * sizeof(float);
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

template <typename T>
__global__ void cp_attention_v1(const T *__restrict__ qkv, const float *__restrict__ bias, T *__restrict__ out,
                                const int32_t *__restrict__ seg_start, const int32_t *__restrict__ seg_len, int H,
                                int dh, int causal, float scale, int max_len) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int s = blockIdx.x / H, h = blockIdx.x % H;
    int n = seg_len[s];
    if (n > max_len) n = max_len; // the launcher checks; never read past the staged rows
    const int64_t st0 = seg_start[s];
    const int row0 = blockIdx.y * RB;
    if (row0 >= n) return;
    const int W = H * dh;
    const int64_t ld3 = 3 * (int64_t)W;
    const int nk = causal ? min(n, row0 + RB) : n;
    const int ks = key_stride<T>(dh);
    T *Ks = (T *)smem;
    T *Vs = Ks + (size_t)max_len * ks;
    float *Qs = (float *)(Vs + (size_t)max_len * ks);
    float *Ps = Qs + NW * dh;
    const int hk = W + h * dh, hv = 2 * W + h * dh;
    for (int idx = threadIdx.x; idx < nk * dh; idx += blockDim.x) {
        const int j = idx / dh, d = idx - j * dh;
        const T *row = qkv + (st0 + j) * ld3;
        cp::st(Ks + j * ks + d, cp::ld(row + hk + d) + bias[hk + d]);
        cp::st(Vs + j * ks + d, cp::ld(row + hv + d) + bias[hv + d]);
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *q = Qs + warp * dh, *p = Ps + (size_t)warp * max_len;
    for (int r = 0; r < RPW; r++) {
        const int i = row0 + r * NW + warp;
        if (i >= n) break;
        const T *qrow = qkv + (st0 + i) * ld3 + h * dh;
        for (int d = lane; d < dh; d += 32) q[d] = round_to<T>(cp::ld(qrow + d) + bias[h * dh + d]);
        __syncwarp();
        const int nv = causal ? i + 1 : n;
        float mx = -INFINITY;
        for (int j = lane; j < nv; j += 32) {
            const T *kr = Ks + j * ks;
            float acc = 0.f;
            for (int d = 0; d < dh; d++) acc = fmaf(q[d], cp::ld(kr + d), acc);
            acc *= scale;
            p[j] = acc;
            mx = fmaxf(mx, acc);
        }
        mx = warp_max(mx);
        float sum = 0.f;
        for (int j = lane; j < nv; j += 32) {
            const float e = expf(p[j] - mx);
            p[j] = e;
            sum += e;
        }
        const float inv = 1.0f / cp::warp_sum(sum);
        __syncwarp();
        T *orow = out + (st0 + i) * W + h * dh;
        for (int d = lane; d < dh; d += 32) {
            float o = 0.f;
            for (int j = 0; j < nv; j++) o = fmaf(p[j], cp::ld(Vs + j * ks + d), o);
            cp::st(orow + d, o * inv);
        }
        __syncwarp(); // q and p are rewritten for the next row
    }
}

// The opt-in shared memory granted to the kernel, per device and dtype: 0 until cp_cuda_attention_prepare ran
// there (outside any graph capture). Written once per (device, dtype) with the same value by any racing thread.
#define CP_ATTN_DEVICES 64
static int g_optin[CP_ATTN_DEVICES][3];

template <typename T> cudaError_t grant(int bytes) {
    return cudaFuncSetAttribute(cp_attention_v1<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

static int64_t limit_for(int optin, int64_t head_dim, int dt) {
    const size_t el = dt == CP_CUDA_F32 ? 4 : 2;
    const int64_t ks = head_dim + (el == 4 ? 1 : 2);
    const int64_t fixed = (int64_t)NW * head_dim * 4;
    const int64_t per = 2 * ks * (int64_t)el + (int64_t)NW * 4;
    return optin > fixed ? (optin - fixed) / per : 0;
}

template <typename T>
int launch(const void *qkv, const float *bias, void *out, const int32_t *seg_start, const int32_t *seg_len,
           int64_t nseg, int64_t max_len, int64_t H, int64_t dh, int causal, cudaStream_t stream) {
    const size_t smem = smem_bytes<T>(max_len, dh);
    dim3 grid((unsigned)(nseg * H), (unsigned)((max_len + RB - 1) / RB));
    const float scale = 1.0f / sqrtf((float)dh);
    cp_attention_v1<T><<<grid, NW * 32, smem, stream>>>((const T *)qkv, bias, (T *)out, seg_start, seg_len, (int)H,
                                                        (int)dh, causal, scale, (int)max_len);
    CP_CUDA_LAUNCHED("cp_cuda_attention");
    return CP_OK;
}

} // namespace

extern "C" int cp_cuda_attention_prepare(int64_t head_dim, int dt, int64_t *max_len) {
    *max_len = 0;
    if (dt < CP_CUDA_F32 || dt > CP_CUDA_BF16) CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_attention_prepare: dtype %d", dt);
    int dev = 0, optin = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e == cudaSuccess && (dev < 0 || dev >= CP_ATTN_DEVICES))
        CP_FAIL(CP_ERR_DEVICE, "cp_cuda_attention_prepare: device %d is beyond the %d this build tracks", dev,
                CP_ATTN_DEVICES);
    if (e == cudaSuccess && g_optin[dev][dt] == 0) { // once per device and dtype, checked
        e = dt == CP_CUDA_F32 ? grant<float>(optin) : dt == CP_CUDA_F16 ? grant<__half>(optin) : grant<__nv_bfloat16>(optin);
        if (e == cudaSuccess) g_optin[dev][dt] = optin;
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        CP_FAIL(CP_ERR_DEVICE, "cp_cuda_attention_prepare: cannot grant the attention kernel %d bytes of shared "
                "memory: %s", optin, cudaGetErrorString(e));
    }
    *max_len = limit_for(g_optin[dev][dt], head_dim, dt);
    return CP_OK;
}

extern "C" int64_t cp_cuda_attention_max_len(int64_t head_dim, int dt) {
    int dev = 0;
    if (dt < CP_CUDA_F32 || dt > CP_CUDA_BF16 || cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= CP_ATTN_DEVICES) {
        cudaGetLastError();
        return 0;
    }
    const int optin = g_optin[dev][dt] ? g_optin[dev][dt] : 48 * 1024; // not prepared: the default 48 KiB
    return limit_for(optin, head_dim, dt);
}

extern "C" int cp_cuda_attention(const void *qkv, const float *bias_qkv, void *out, int dt, const int32_t *seg_start,
                                 const int32_t *seg_len, int64_t nseg, int64_t max_len, int64_t heads,
                                 int64_t head_dim, int causal, void *stream) {
    if (nseg <= 0 || max_len <= 0) return CP_OK;
    if (nseg * heads > 0x7fffffffLL) CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_attention: too many segments");
    const int64_t lim = cp_cuda_attention_max_len(head_dim, dt);
    if (max_len > lim)
        CP_FAIL(CP_ERR_INVALID_ARG,
                "cp_cuda_attention: segments of %lld tokens exceed the fused kernel's shared-memory limit of %lld "
                "tokens for head size %lld on this device",
                (long long)max_len, (long long)lim, (long long)head_dim);
    CP_DT_DISPATCH(dt, T,
                   return launch<T>(qkv, bias_qkv, out, seg_start, seg_len, nseg, max_len, heads, head_dim, causal,
                                    (cudaStream_t)stream));
    return CP_OK;
}
