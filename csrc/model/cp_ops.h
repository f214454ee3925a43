/* cp_ops.h — the CPU building blocks of the encoder engine's forward pass (model/cp_runner_cpu.c).
 *
 * Shapes: M rows (tokens) x N features, row-major, float32. GEMMs go through cblas_sgemm (OpenBLAS); the
 * element-wise and attention loops are plain C written for the compiler to vectorise (built once per ISA level with
 * target_clones) and parallelised with OpenMP over rows or over (segment, head) pairs.
 */
#ifndef CP_OPS_H
#define CP_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How a weight matrix is stored. */
typedef enum {
    CP_W_OUT_IN = 0, /* [N, K] (torch nn.Linear.weight, HF text_projection.weight): y = x W^T */
    CP_W_IN_OUT = 1  /* [K, N] (open_clip text_projection):                         y = x W   */
} cp_wlayout;

/** y[M,N] = x[M,K] · W (+ b[N]); with accumulate, y += x · W (+ b). ldx/ldy: row strides (>= K / N). */
void cp_linear(const float *x, int64_t ldx, int64_t M, int64_t K, const float *w, cp_wlayout layout, int64_t N,
               const float *b, float *y, int64_t ldy, int accumulate);

/** y = LayerNorm(x) over the last dim N with gain g and bias b (in place allowed: y == x). */
void cp_layernorm(const float *x, int64_t ldx, float *y, int64_t ldy, int64_t M, int64_t N, const float *g,
                  const float *b, float eps);

typedef enum { CP_ACT_QUICK_GELU = 0, CP_ACT_GELU_ERF = 1, CP_ACT_GELU_TANH = 2, CP_ACT_RELU = 3 } cp_act;

/** x = act(x), n elements. */
void cp_activation(float *x, int64_t n, cp_act act);

/** Multi-head attention over packed segments. Segment s covers rows [start[s], start[s] + len[s]).
 *  qkv: rows of [q(H*dh) | k(H*dh) | v(H*dh)] with row stride ldqkv; out: rows of H*dh with stride ldo.
 *  causal: token i sees tokens <= i of its segment; otherwise the whole segment (padding is simply not packed).
 *  Segment lengths must be <= CP_ATTN_MAX_LEN. */
#define CP_ATTN_MAX_LEN 4096
void cp_attention(const float *qkv, int64_t ldqkv, float *out, int64_t ldo, const int64_t *start, const int64_t *len,
                  int64_t nseg, int64_t heads, int64_t head_dim, int causal);

/** Divide each row of x[M,N] by its L2 norm (rows of zeros stay zero). */
void cp_l2_normalize_rows(float *x, int64_t M, int64_t N);

/** Add b[N] to each row of x[M,N] (stride ldx). */
void cp_add_bias_rows(float *x, int64_t ldx, int64_t M, int64_t N, const float *b);

/* ---- weight matrices of any storage type ---------------------------------------------------------- */

/** How a weight matrix is stored. Loaders create only the types whose cp_matmul path is compiled in. */
typedef enum {
    CP_WT_F32 = 0,  /* float32, layout CP_W_OUT_IN [N, K] or CP_W_IN_OUT [K, N]                                   */
    CP_WT_BF16 = 1, /* bfloat16 (reduced-precision engine)                                                       */
    CP_WT_S8 = 2,   /* int8 with per-output-row float scales (reduced-precision engine)                          */
    CP_WT_Q4 = 3    /* 4-bit blocks with per-block float scales (multilingual e5's file format)                   */
} cp_wtype;
#define CP_WT_COUNT 4

/** A weight matrix for y = x · W^T: n output features, k input features. For CP_WT_F32 `data` is the float32
 *  matrix in `layout`; the other types describe their own `data`/`scale`/`aux` (see their implementation files);
 *  `block` is the quantisation block (values per scale) where the type has one. Borrowed memory: the model that
 *  built the cp_wmat owns it. */
typedef struct cp_wmat {
    cp_wtype type;
    cp_wlayout layout;
    int64_t n, k;
    const void *data;
    const float *scale;
    const void *aux;
    int64_t block;
} cp_wmat;

/** A float32 cp_wmat over `w` (NULL w gives an empty matrix: n = k = 0, data NULL). */
static inline cp_wmat cp_wmat_f32(const float *w, int64_t n, int64_t k, cp_wlayout layout) {
    cp_wmat m = {CP_WT_F32, layout, w ? n : 0, w ? k : 0, w, NULL, NULL, 0};
    return m;
}

/** Matrix multiply for a cp_wmat of any type: y[M, n] = x[M, k] · W^T (+ b[n]); with accumulate, y += ...
 *  x and y are float32 (ldx >= k, ldy >= n). Dispatches on w->type through the table of kernels registered below;
 *  a type with no registered kernel is a loader bug (the loader refused such weights) and aborts. */
void cp_matmul(const float *x, int64_t ldx, int64_t M, const cp_wmat *w, const float *b, float *y, int64_t ldy,
               int accumulate);

/** Dequantise row r (0 <= r < n) of an out-in matrix into out[k] (embedding lookups; device uploads). */
void cp_wmat_row(const cp_wmat *w, int64_t r, float *out);

/** Kernels for the non-float32 types: a part that implements a type registers its matmul and row functions once
 *  (at load, before any model of that type exists). Thread safety: register before use; reads are lock-free. */
typedef void (*cp_matmul_fn)(const float *x, int64_t ldx, int64_t M, const cp_wmat *w, const float *b, float *y,
                             int64_t ldy, int accumulate);
typedef void (*cp_wmat_row_fn)(const cp_wmat *w, int64_t r, float *out);
void cp_wtype_register(cp_wtype t, cp_matmul_fn mm, cp_wmat_row_fn row);

#ifdef __cplusplus
}
#endif
#endif /* CP_OPS_H */
