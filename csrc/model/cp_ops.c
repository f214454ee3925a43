/* cp_ops.c — sgemm wrapper, LayerNorm, activations, packed-segment attention, L2 norm (see cp_ops.h). */
#include "model/cp_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(CP_SANITIZE)
#define CP_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CP_MULTIVERSION
#endif

void cp_add_bias_rows(float *x, int64_t ldx, int64_t M, int64_t N, const float *b) {
    for (int64_t i = 0; i < M; i++) {
        float *r = x + i * ldx;
        for (int64_t j = 0; j < N; j++) r[j] += b[j];
    }
}

static void cp_fill_bias_rows(float *x, int64_t ldx, int64_t M, int64_t N, const float *b) {
    for (int64_t i = 0; i < M; i++) memcpy(x + i * ldx, b, (size_t)N * sizeof(float));
}


/* ---- small-M linear: y[M,N] += x[M,K] · W^T with W (N, K) row-major ------------------------------------
 * For a few rows (B=1 prompts: M = tokens up to EOT, ~16) sgemm is dominated by packing the weight matrix, and the
 * whole forward pass streams every weight once: the floor is bytes(W) / memory bandwidth. This kernel reads each W
 * row exactly once, computing 4 output columns x 4 rows at a time against x rows that stay in L1/L2, with 16-wide
 * vector accumulators (AVX-512 / AVX2 clones through CP_MULTIVERSION) reduced once per dot product.
 * Results differ from sgemm only by summation order (fp32; parity tests bound it). */
#define CP_SMALL_M_MAX 24

typedef float cp_v16 __attribute__((vector_size(64)));

static inline cp_v16 cp_ld16(const float *p) {
    cp_v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float cp_hsum16(cp_v16 v) {
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

__attribute__((optimize("fp-contract=fast"))) CP_MULTIVERSION static void
cp_linear_small_m_cols(const float *x, int64_t ldx, int64_t M, int64_t K, const float *w, int64_t n0, int64_t n1,
                       float *y, int64_t ldy) {
    const int64_t K16 = K & ~(int64_t)15;
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
        const float *w0 = w + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) {
            cp_v16 a[4][4];
            memset(a, 0, sizeof a);
            for (int64_t k = 0; k < K16; k += 16) {
                const cp_v16 v0 = cp_ld16(w0 + k), v1 = cp_ld16(w1 + k), v2 = cp_ld16(w2 + k), v3 = cp_ld16(w3 + k);
                for (int i = 0; i < 4; i++) {
                    const cp_v16 xv = cp_ld16(x + (m + i) * ldx + k);
                    a[i][0] += xv * v0, a[i][1] += xv * v1, a[i][2] += xv * v2, a[i][3] += xv * v3;
                }
            }
            for (int i = 0; i < 4; i++) {
                const float *xr = x + (m + i) * ldx;
                float *yr = y + (m + i) * ldy + n;
                const float *wr[4] = {w0, w1, w2, w3};
                for (int j = 0; j < 4; j++) {
                    float s = cp_hsum16(a[i][j]);
                    for (int64_t k = K16; k < K; k++) s += xr[k] * wr[j][k];
                    yr[j] += s;
                }
            }
        }
        for (; m < M; m++) { /* leftover rows */
            const float *xr = x + m * ldx;
            cp_v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t k = 0; k < K16; k += 16) {
                const cp_v16 xv = cp_ld16(xr + k);
                a0 += xv * cp_ld16(w0 + k), a1 += xv * cp_ld16(w1 + k);
                a2 += xv * cp_ld16(w2 + k), a3 += xv * cp_ld16(w3 + k);
            }
            float s[4] = {cp_hsum16(a0), cp_hsum16(a1), cp_hsum16(a2), cp_hsum16(a3)};
            const float *wr[4] = {w0, w1, w2, w3};
            for (int j = 0; j < 4; j++) {
                for (int64_t k = K16; k < K; k++) s[j] += xr[k] * wr[j][k];
                y[m * ldy + n + j] += s[j];
            }
        }
    }
    for (; n < n1; n++) { /* leftover columns */
        const float *wr = w + n * K;
        for (int64_t m = 0; m < M; m++) {
            const float *xr = x + m * ldx;
            cp_v16 a = {0};
            for (int64_t k = 0; k < K16; k += 16) a += cp_ld16(xr + k) * cp_ld16(wr + k);
            float s = cp_hsum16(a);
            for (int64_t k = K16; k < K; k++) s += xr[k] * wr[k];
            y[m * ldy + n] += s;
        }
    }
}

/* Columns split across threads in chunks of 64 (each thread streams its own slice of W). */
static void cp_linear_small_m(const float *x, int64_t ldx, int64_t M, int64_t K, const float *w, int64_t N, float *y,
                              int64_t ldy) {
    const int64_t chunk = 64, nchunks = (N + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (nchunks > 1 && N * K >= (1 << 18))
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t n0 = c * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
        cp_linear_small_m_cols(x, ldx, M, K, w, n0, n1, y, ldy);
    }
}

static void memset_rows(float *y, int64_t ldy, int64_t M, int64_t N) {
    for (int64_t i = 0; i < M; i++) memset(y + i * ldy, 0, (size_t)N * sizeof(float));
}

static int cp_small_m_enabled = -1; /* -1: not read yet; CLIPPROMPT_SMALL_M=0 turns the kernel off (A/B checks) */

void cp_linear(const float *x, int64_t ldx, int64_t M, int64_t K, const float *w, cp_wlayout layout, int64_t N,
               const float *b, float *y, int64_t ldy, int accumulate) {
    if (M <= 0 || N <= 0) return;
    float beta = 0.0f;
    if (accumulate) {
        if (b) cp_add_bias_rows(y, ldy, M, N, b);
        beta = 1.0f;
    } else if (b) {
        /* y = b + x W, the order torch's addmm uses */
        cp_fill_bias_rows(y, ldy, M, N, b);
        beta = 1.0f;
    }
    if (cp_small_m_enabled < 0) {
        const char *e = getenv("CLIPPROMPT_SMALL_M");
        cp_small_m_enabled = !(e && e[0] == '0'); /* benign race: every thread computes the same value */
    }
    if (layout == CP_W_OUT_IN && M <= CP_SMALL_M_MAX && cp_small_m_enabled) {
        if (!accumulate && !b) memset_rows(y, ldy, M, N);
        cp_linear_small_m(x, ldx, M, K, w, N, y, ldy);
        return;
    }
    if (layout == CP_W_OUT_IN)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x, (int)ldx, w, (int)K, beta,
                    y, (int)ldy);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, x, (int)ldx, w, (int)N,
                    beta, y, (int)ldy);
}

CP_MULTIVERSION
static void ln_row(const float *x, float *y, int64_t N, const float *g, const float *b, float eps) {
    double s = 0.0;
    for (int64_t j = 0; j < N; j++) s += x[j];
    const float mean = (float)(s / (double)N);
    double v = 0.0;
    for (int64_t j = 0; j < N; j++) {
        const double d = (double)x[j] - (double)mean;
        v += d * d;
    }
    const float rstd = (float)(1.0 / sqrt(v / (double)N + (double)eps));
    for (int64_t j = 0; j < N; j++) y[j] = (x[j] - mean) * rstd * g[j] + b[j];
}

void cp_layernorm(const float *x, int64_t ldx, float *y, int64_t ldy, int64_t M, int64_t N, const float *g,
                  const float *b, float eps) {
    for (int64_t i = 0; i < M; i++) ln_row(x + i * ldx, y + i * ldy, N, g, b, eps);
}

/* exp(x) in a form the compiler vectorises (Cephes expf: range reduction by ln 2, degree-6 polynomial, ~1 ulp);
 * libm's expf/erff are scalar calls that otherwise dominate the element-wise work. */
static inline float cp_expf(float x) {
    x = x < -87.33f ? -87.33f : (x > 88.3f ? 88.3f : x); /* 2^-126 .. 2^127: scale stays finite */
    const float n = __builtin_rintf(x * 1.44269504088896341f);
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale;
    /* a NaN input must not reach the float -> int conversion (undefined behaviour); it still propagates through p */
    scale.i = ((int32_t)(n == n ? n : 0.0f) + 127) << 23;
    return p * scale.f;
}

/* GELU(x) = 0.5 x erfc(-x / sqrt 2), with erfc from the Chebyshev fit of Numerical Recipes (erfcc, fractional error
 * < 1.2e-7 everywhere): written as x - 0.5 x erfc(x/sqrt2) for x >= 0 and 0.5 x erfc(|x|/sqrt2) for x < 0. */
static inline float cp_gelu_erf(float x) {
    const float z = (x < 0.0f ? -x : x) * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    const float erfc = t * cp_expf(-z * z + p);
    return x >= 0.0f ? x - 0.5f * x * erfc : 0.5f * x * erfc;
}

CP_MULTIVERSION
void cp_activation(float *x, int64_t n, cp_act act) {
    switch (act) {
    case CP_ACT_QUICK_GELU:
        for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + cp_expf(-1.702f * x[i]));
        break;
    case CP_ACT_GELU_ERF:
        for (int64_t i = 0; i < n; i++) x[i] = cp_gelu_erf(x[i]);
        break;
    case CP_ACT_GELU_TANH:
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i];
            x[i] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        }
        break;
    case CP_ACT_RELU:
        for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    }
}

/* One (segment, head): rows q_i . k_j over j in the visible range, softmax, weighted sum of v_j. */
CP_MULTIVERSION
static void attn_head(const float *qkv, int64_t ldqkv, float *out, int64_t ldo, int64_t n, int64_t hidden,
                      int64_t head_dim, int64_t off, int causal, float scale, float *scores) {
    for (int64_t i = 0; i < n; i++) {
        const float *q = qkv + i * ldqkv + off;
        const int64_t nv = causal ? i + 1 : n;
        float mx = -INFINITY;
        for (int64_t j = 0; j < nv; j++) {
            const float *k = qkv + j * ldqkv + hidden + off;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t d = 0; d < head_dim; d++) acc += q[d] * k[d];
            acc *= scale;
            scores[j] = acc;
            mx = acc > mx ? acc : mx;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < nv; j++) {
            scores[j] = cp_expf(scores[j] - mx);
            sum += scores[j];
        }
        const float inv = 1.0f / sum;
        float *o = out + i * ldo + off;
        for (int64_t d = 0; d < head_dim; d++) o[d] = 0.0f;
        for (int64_t j = 0; j < nv; j++) {
            const float p = scores[j] * inv;
            const float *v = qkv + j * ldqkv + 2 * hidden + off;
#pragma omp simd
            for (int64_t d = 0; d < head_dim; d++) o[d] += p * v[d];
        }
    }
}

/* Parallel attention only pays when there is real work: a parallel region wakes threads that then compete with
 * OpenBLAS's own (spinning) workers for the same cores. */
static int cp_attn_parallel(const int64_t *len, int64_t nseg, int64_t heads, int64_t head_dim) {
    double flops = 0.0;
    for (int64_t s = 0; s < nseg; s++) flops += (double)len[s] * (double)len[s];
    return flops * (double)heads * (double)head_dim * 2.0 > 2e7;
}

void cp_attention(const float *qkv, int64_t ldqkv, float *out, int64_t ldo, const int64_t *start, const int64_t *len,
                  int64_t nseg, int64_t heads, int64_t head_dim, int causal) {
    const int64_t hidden = heads * head_dim;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int64_t work = nseg * heads;
#pragma omp parallel for schedule(dynamic, 1) if (work > 1 && cp_attn_parallel(len, nseg, heads, head_dim))
    for (int64_t w = 0; w < work; w++) {
        float scores[CP_ATTN_MAX_LEN];
        const int64_t s = w / heads, h = w % heads;
        attn_head(qkv + start[s] * ldqkv, ldqkv, out + start[s] * ldo, ldo, len[s], hidden, head_dim, h * head_dim,
                  causal, scale, scores);
    }
}

void cp_l2_normalize_rows(float *x, int64_t M, int64_t N) {
    for (int64_t i = 0; i < M; i++) {
        float *r = x + i * N;
        double s = 0.0;
        for (int64_t j = 0; j < N; j++) s += (double)r[j] * r[j];
        if (s > 0.0) {
            const float inv = (float)(1.0 / sqrt(s));
            for (int64_t j = 0; j < N; j++) r[j] *= inv;
        }
    }
}

/* ---- activation arenas ---------------------------------------------------------------------------- */

/* ---- cp_wmat ---------------------------------------------------------------------------------------- */

static void matmul_f32(const float *x, int64_t ldx, int64_t M, const cp_wmat *w, const float *b, float *y,
                       int64_t ldy, int accumulate) {
    cp_linear(x, ldx, M, w->k, (const float *)w->data, w->layout, w->n, b, y, ldy, accumulate);
}

static void row_f32(const cp_wmat *w, int64_t r, float *out) {
    const float *d = (const float *)w->data;
    if (w->layout == CP_W_OUT_IN) {
        memcpy(out, d + r * w->k, (size_t)w->k * sizeof(float));
    } else {
        for (int64_t j = 0; j < w->k; j++) out[j] = d[j * w->n + r];
    }
}

static cp_matmul_fn g_matmul[CP_WT_COUNT] = {matmul_f32};
static cp_wmat_row_fn g_row[CP_WT_COUNT] = {row_f32};

void cp_wtype_register(cp_wtype t, cp_matmul_fn mm, cp_wmat_row_fn row) {
    if ((unsigned)t < CP_WT_COUNT && t != CP_WT_F32) g_matmul[t] = mm, g_row[t] = row;
}

void cp_matmul(const float *x, int64_t ldx, int64_t M, const cp_wmat *w, const float *b, float *y, int64_t ldy,
               int accumulate) {
    if ((unsigned)w->type >= CP_WT_COUNT || g_matmul[w->type] == NULL) abort(); /* see cp_ops.h */
    g_matmul[w->type](x, ldx, M, w, b, y, ldy, accumulate);
}

void cp_wmat_row(const cp_wmat *w, int64_t r, float *out) {
    if ((unsigned)w->type >= CP_WT_COUNT || g_row[w->type] == NULL) abort();
    g_row[w->type](w, r, out);
}
