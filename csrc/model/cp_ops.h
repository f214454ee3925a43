/* cp_ops.h — the CPU building blocks of the transformer forward passes (CLIP text, BERT/MiniLM).
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

/* ---- activation arenas of the CPU encoder runners (cp_clip_cpu.c, cp_minilm.c) ---- */

/** Most packed tokens per chunk for width W and FFN size F: the arena near 64 MiB (16M floats over (2W + max(3W, F))
 *  floats per token), at most 8192, at least min_tokens (one full context). */
int64_t cp_arena_tok_cap(int64_t W, int64_t F, int64_t min_tokens);

/** Grow an arena (floats x | h | big: T * (2W + max(3W, F)); int64 seg: 3T) to hold T tokens when *tokens < T.
 *  On failure (CP_ERR_NOMEM) the old arena is kept. *bytes: both allocations together. */
int cp_arena_reserve(int64_t T, int64_t W, int64_t F, float **arena, int64_t **seg, int64_t *tokens, size_t *bytes);

#ifdef __cplusplus
}
#endif
#endif /* CP_OPS_H */
