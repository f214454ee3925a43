// cp_topk.cu — top-k selection for flat inner-product search, run after each cuBLAS score tile so that the full
// [nq, N] score matrix never exists: stage 1 keeps the best k of every chunk of a tile's columns, stage 2 merges
// the candidates of all chunks (all tiles) into the final k per query. Order: score descending, then row
// ascending (the CPU index breaks ties the same way); -inf / -1 pad.
// v1 (k <= 16): one block per (chunk, query). Each thread keeps a sorted list of its best k (16 entries, 128 bytes)
//     fed by a strided scan with a threshold test; then k rounds of a block arg-best pop the heads.
// v2 (16 < k <= 256): one block per (chunk, query) over a 2048-entry tile in shared memory (16 KiB): the tile holds
//     the best k so far in its first k slots and the next columns after them; a block-wide bitonic sort (best first)
//     per tile. No per-thread arrays: nothing spills to local memory whatever k is.
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_topk.cu
// CPU reference: the heap search of cp_index_search (csrc/store/cp_index.c).
#include <math.h>

#include "cp_cuda_dev.cuh"

namespace {

// a is better than b (b may be empty: row < 0)
__device__ __forceinline__ bool better(float sa, int ra, float sb, int rb) {
    if (ra < 0) return false;
    if (rb < 0) return true;
    return sa > sb || (sa == sb && ra < rb);
}

template <int KMAX, bool PAIRS>
__global__ void cp_topk_v1(const float *__restrict__ S, const int32_t *__restrict__ R, int64_t lds, int64_t ncols,
                           int64_t row0, int64_t chunk, int k, float *__restrict__ out_s, int32_t *__restrict__ out_r,
                           int64_t out_ld, int64_t out_off) {
    __shared__ float bs[33];
    __shared__ int br[33], bt[33];
    const int64_t q = blockIdx.y, c = blockIdx.x;
    const float *srow = S + q * lds;
    const int32_t *rrow = PAIRS ? R + q * lds : nullptr;
    const int64_t j0 = c * chunk, j1 = min(ncols, j0 + chunk);
    float ls[KMAX];
    int lr[KMAX];
    int cnt = 0;
    for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
        const float s = srow[j];
        const int r = PAIRS ? rrow[j] : (int)(row0 + j);
        if (r < 0) continue;
        if (cnt == k && !better(s, r, ls[k - 1], lr[k - 1])) continue;
        int pos = cnt < k ? cnt : k - 1;
        while (pos > 0 && better(s, r, ls[pos - 1], lr[pos - 1])) {
            ls[pos] = ls[pos - 1], lr[pos] = lr[pos - 1];
            pos--;
        }
        ls[pos] = s, lr[pos] = r;
        if (cnt < k) cnt++;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (int)(blockDim.x >> 5);
    float *os = out_s + q * out_ld + (out_off + c) * k;
    int32_t *orr = out_r + q * out_ld + (out_off + c) * k;
    int head = 0;
    for (int round = 0; round < k; round++) {
        float s = head < cnt ? ls[head] : -INFINITY;
        int r = head < cnt ? lr[head] : -1, t = threadIdx.x;
        for (int o = 16; o > 0; o >>= 1) {
            const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
            const int r2 = __shfl_xor_sync(0xffffffffu, r, o), t2 = __shfl_xor_sync(0xffffffffu, t, o);
            if (better(s2, r2, s, r)) s = s2, r = r2, t = t2;
        }
        if (lane == 0) bs[warp] = s, br[warp] = r, bt[warp] = t;
        __syncthreads();
        if (warp == 0) {
            s = lane < nw ? bs[lane] : -INFINITY;
            r = lane < nw ? br[lane] : -1;
            t = lane < nw ? bt[lane] : -1;
            for (int o = 16; o > 0; o >>= 1) {
                const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
                const int r2 = __shfl_xor_sync(0xffffffffu, r, o), t2 = __shfl_xor_sync(0xffffffffu, t, o);
                if (better(s2, r2, s, r)) s = s2, r = r2, t = t2;
            }
            if (lane == 0) bs[32] = s, br[32] = r, bt[32] = t;
        }
        __syncthreads();
        const int wr = br[32];
        if (wr < 0) { // nothing left anywhere: pad the rest
            for (int i = round + threadIdx.x; i < k; i += blockDim.x) os[i] = -INFINITY, orr[i] = -1;
            return;
        }
        if (threadIdx.x == 0) os[round] = bs[32], orr[round] = wr;
        if ((int)threadIdx.x == bt[32]) head++;
    }
}

constexpr int TILE = 2048;

template <bool PAIRS>
__global__ void cp_topk_v2(const float *__restrict__ S, const int32_t *__restrict__ R, int64_t lds, int64_t ncols,
                           int64_t row0, int64_t chunk, int k, float *__restrict__ out_s, int32_t *__restrict__ out_r,
                           int64_t out_ld, int64_t out_off) {
    __shared__ float ts[TILE];
    __shared__ int tr[TILE];
    const int64_t q = blockIdx.y, c = blockIdx.x;
    const float *srow = S + q * lds;
    const int32_t *rrow = PAIRS ? R + q * lds : nullptr;
    const int64_t j0 = c * chunk, j1 = min(ncols, j0 + chunk);
    for (int i = threadIdx.x; i < TILE; i += blockDim.x) ts[i] = -INFINITY, tr[i] = -1;
    __syncthreads();
    for (int64_t j = j0, round = 0; j < j1; round++) {
        const int base = round == 0 ? 0 : k; // after the first tile, slots [0, k) keep the best so far
        const int64_t take = min((int64_t)(TILE - base), j1 - j);
        for (int i = threadIdx.x; i < TILE - base; i += blockDim.x) {
            float s = -INFINITY;
            int r = -1;
            if (i < take) {
                r = PAIRS ? rrow[j + i] : (int)(row0 + j + i);
                s = r < 0 ? -INFINITY : srow[j + i];
                if (r < 0) r = -1;
            }
            ts[base + i] = s, tr[base + i] = r;
        }
        __syncthreads();
        for (int size = 2; size <= TILE; size <<= 1) // bitonic sort, best first
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                for (int i = threadIdx.x; i < TILE; i += blockDim.x) {
                    const int p = i ^ stride;
                    if (p <= i) continue;
                    const bool first_half = (i & size) == 0;
                    const bool swap = first_half ? better(ts[p], tr[p], ts[i], tr[i]) : better(ts[i], tr[i], ts[p], tr[p]);
                    if (swap) {
                        const float s = ts[i];
                        const int r = tr[i];
                        ts[i] = ts[p], tr[i] = tr[p], ts[p] = s, tr[p] = r;
                    }
                }
                __syncthreads();
            }
        j += take;
    }
    float *os = out_s + q * out_ld + (out_off + c) * k;
    int32_t *orr = out_r + q * out_ld + (out_off + c) * k;
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        os[i] = tr[i] < 0 ? -INFINITY : ts[i];
        orr[i] = tr[i];
    }
}

template <bool PAIRS>
int launch(const float *S, const int32_t *R, int64_t nq, int64_t ncols, int64_t lds, int64_t row0, int64_t chunk,
           int64_t k, float *out_s, int32_t *out_r, int64_t out_ld, int64_t out_off, cudaStream_t st) {
    const int64_t nchunks = (ncols + chunk - 1) / chunk;
    if (nq > 65535 || nchunks > 0x7fffffffLL)
        CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_topk: %lld queries x %lld chunks is beyond the grid", (long long)nq,
                (long long)nchunks);
    dim3 grid((unsigned)nchunks, (unsigned)nq);
    const int kk = (int)k;
    static_assert(CP_CUDA_TOPK_MAX < TILE / 2, "the v2 tile must hold the best k and new columns");
    if (k <= 16) cp_topk_v1<16, PAIRS><<<grid, 256, 0, st>>>(S, R, lds, ncols, row0, chunk, kk, out_s, out_r, out_ld, out_off);
    else cp_topk_v2<PAIRS><<<grid, 256, 0, st>>>(S, R, lds, ncols, row0, chunk, kk, out_s, out_r, out_ld, out_off);
    CP_CUDA_LAUNCHED("cp_cuda_topk");
    return CP_OK;
}

} // namespace

extern "C" int cp_cuda_topk_chunks(const float *S, int64_t nq, int64_t ncols, int64_t lds, int64_t row0,
                                   int64_t chunk, int64_t k, float *cand_s, int32_t *cand_r, int64_t cand_ld,
                                   int64_t cand_off, void *stream) {
    if (nq <= 0 || ncols <= 0) return CP_OK;
    if (k < 1 || k > CP_CUDA_TOPK_MAX || chunk < 1)
        CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_topk_chunks: k=%lld (1..%d), chunk=%lld", (long long)k, CP_CUDA_TOPK_MAX,
                (long long)chunk);
    if (row0 + ncols > 0x7fffffffLL) CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_topk_chunks: rows beyond int32");
    return launch<false>(S, nullptr, nq, ncols, lds, row0, chunk, k, cand_s, cand_r, cand_ld, cand_off,
                         (cudaStream_t)stream);
}

extern "C" int cp_cuda_topk_merge(const float *cand_s, const int32_t *cand_r, int64_t nq, int64_t ncand,
                                  int64_t cand_ld, int64_t k, float *D, int32_t *R, void *stream) {
    if (nq <= 0) return CP_OK;
    if (k < 1 || k > CP_CUDA_TOPK_MAX)
        CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_topk_merge: k=%lld (1..%d)", (long long)k, CP_CUDA_TOPK_MAX);
    if (ncand <= 0) CP_FAIL(CP_ERR_INVALID_ARG, "cp_cuda_topk_merge: no candidates");
    return launch<true>(cand_s, cand_r, nq, ncand, cand_ld, 0, ncand, k, D, R, k, 0, (cudaStream_t)stream);
}
