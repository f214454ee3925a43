/* cp_cuda.h — the one header between csrc/ (C) and kernels/ (CUDA C++).
 *
 * Plain C declarations only (no CUDA headers), so csrc/ compiles without the toolkit. Streams travel as
 * void* (a cudaStream_t), cuBLAS handles and graph executables likewise. Every launcher returns a cp status
 * (CP_OK, CP_ERR_DEVICE, CP_ERR_DEVICE_OOM or CP_ERR_INVALID_ARG) and records the CUDA/cuBLAS message with
 * cp_fail. The CPU function in csrc/ is the reference for every kernel here (named in each declaration).
 *
 * Data types: activations that feed GEMMs are in the runner's dtype (CP_CUDA_F32/F16/BF16); the residual stream,
 * LayerNorm statistics, softmax, biases, LayerNorm parameters and every output copied back are float32.
 * Shape letters as in csrc/: T packed tokens, W width, H heads, dh head size, F MLP size, S segments (prompts).
 */
#ifndef CP_CUDA_H
#define CP_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { CP_CUDA_F32 = 0, CP_CUDA_F16 = 1, CP_CUDA_BF16 = 2 };

/** Bytes per element of a CP_CUDA_* dtype (0 for an unknown code). */
size_t cp_cuda_dtype_size(int dt);

/* ---- runtime: devices, memory, streams, graphs (cp_cuda_runtime.cu) ------------------------------ */

typedef struct {
    int compiled_major, compiled_minor; /* CUDA toolkit the kernels were built with           */
    int runtime_version;                /* cudaRuntimeGetVersion, e.g. 13000                  */
    int driver_version;                 /* cudaDriverGetVersion, 0 when no driver is present   */
    int device_count;                   /* 0 when there is no usable GPU                       */
    char device_error[256];             /* why device_count is 0 ("" otherwise)                */
    int cublas_major, cublas_minor, cublas_patch;
    size_t cudnn_version;               /* cudnnGetVersion(), e.g. 92700                       */
} cp_cuda_info;

/** Fill *info. Never fails: a missing GPU or driver is reported in device_count/device_error. */
void cp_cuda_get_info(cp_cuda_info *info);

/** CP_OK when at least one GPU is usable, else CP_ERR_DEVICE with the reason. */
int cp_cuda_require_device(void);

/** Check that GPU `device` exists and make it current for this thread (CP_ERR_DEVICE with the reason). */
int cp_cuda_set_device(int device);

/** Name and compute capability of `device` into name[n] / *cc (e.g. 90). */
int cp_cuda_device_name(int device, char *name, size_t n, int *cc);

/** cudaMalloc; failure -> CP_ERR_DEVICE_OOM naming `what` and the bytes asked (the CUDA error is cleared, so
 *  the caller's objects stay usable). *p = NULL for bytes == 0. */
int cp_cuda_malloc(void **p, size_t bytes, const char *what);
void cp_cuda_free(void *p);
/** Page-locked host memory (for asynchronous copies); failure -> CP_ERR_NOMEM. */
int cp_cuda_host_malloc(void **p, size_t bytes);
void cp_cuda_host_free(void *p);

int cp_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes, void *stream);
int cp_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes, void *stream);
int cp_cuda_memcpy_d2d(void *dst, const void *src, size_t bytes, void *stream);
int cp_cuda_memset(void *dst, int value, size_t bytes, void *stream);

/** A non-blocking stream of the current device. */
int cp_cuda_stream_create(void **stream);
void cp_cuda_stream_free(void *stream);
/** Wait for the stream; a failure of any earlier asynchronous work surfaces here with CUDA's message. */
int cp_cuda_stream_sync(void *stream);

/** Record every launch on `stream` into a graph until cp_cuda_capture_end, which instantiates it. */
int cp_cuda_capture_begin(void *stream);
int cp_cuda_capture_end(void *stream, void **exec);
int cp_cuda_graph_launch(void *exec, void *stream);
void cp_cuda_graph_free(void *exec);

/** Events for timing: ms between two events recorded on a stream. */
int cp_cuda_event_create(void **ev);
void cp_cuda_event_free(void *ev);
int cp_cuda_event_record(void *ev, void *stream);
int cp_cuda_event_elapsed(void *start, void *stop, float *ms);

/* ---- GEMM (cp_gemm.cu) ------------------------------------------------------------------------------ */

/** A cuBLAS handle bound to `stream`, using `workspace` (device, ws_bytes) so graph capture never allocates.
 *  Math mode: fp16/bf16 inputs use tensor cores with fp32 accumulation; fp32 inputs stay true fp32 (no TF32). */
int cp_cuda_blas_create(void **blas, void *stream, void *workspace, size_t ws_bytes);
void cp_cuda_blas_free(void *blas);

/** y[M,N] (dtype dt_out, row stride ldy) = x[M,K] (dt_in, row stride ldx) · W^T + beta·y, where W is [N,K]
 *  (w_in_out = 0, torch nn.Linear layout) or x·W with W [K,N] (w_in_out = 1). Reference: cp_linear.
 *  dt_out is dt_in or CP_CUDA_F32. */
int cp_cuda_gemm(void *blas, int dt_in, int dt_out, const void *x, int64_t ldx, int64_t M, int64_t K, const void *w,
                 int w_in_out, int64_t N, void *y, int64_t ldy, float beta);

/* ---- element-wise and row kernels (one file each) ------------------------------------------------------ */

/** dst[n] (dtype dt) = src[n] (fp32), round to nearest even (cp_convert.cu). */
int cp_cuda_convert(const float *src, void *dst, int dt, int64_t n, void *stream);

/** x[t] = tok_emb[tok[t]] + pos_emb[pos[t]] (+ type_row) for t < T, fp32 (W wide); tok[t] < 0 -> a zero row
 *  (padding rows of a graph-bucketed batch). Reference: embed() of model/cp_runner_cpu.c
 *  (cp_embed.cu). */
int cp_cuda_embed(const float *tok_emb, const float *pos_emb, const float *type_row, const int32_t *tok,
                  const int32_t *pos, int64_t T, int64_t W, float *x, void *stream);

/** LayerNorm over rows of x[M,N] (fp32) with fp32 statistics; writes y32 (fp32, may alias x) and/or ydt
 *  (dtype dt) — either may be NULL. Reference: cp_layernorm (cp_layernorm.cu). */
int cp_cuda_layernorm(const float *x, int64_t M, int64_t N, const float *g, const float *b, float eps, float *y32,
                      void *ydt, int dt, void *stream);

/** y[M,N] (dtype dt) = act(y + b) in place; act is a cp_act (CP_ACT_*); b may be NULL. Reference: cp_activation
 *  after the bias of cp_linear (cp_bias_act.cu). */
int cp_cuda_bias_act(void *y, int dt, int64_t M, int64_t N, const float *b, int act, void *stream);

enum {
    CP_CUDA_RES_PLAIN = 0,  /* x += y + b                                      */
    CP_CUDA_RES_PRE_LN = 1, /* x += y + b;  h = LN(x)      (CLIP: next block's LayerNorm)  */
    CP_CUDA_RES_POST_LN = 2 /* x = LN(x + y + b); h = x    (BERT: post-LN blocks)         */
};
/** Fused bias + residual (+ LayerNorm) over rows of x[M,N] fp32, y[M,N] fp32 (a GEMM output), b[N]; h (dtype dt)
 *  gets the LayerNorm output (may be NULL for PLAIN). Reference: cp_linear(accumulate) + cp_layernorm
 *  (cp_bias_residual.cu). */
int cp_cuda_bias_residual(float *x, const float *y, const float *b, int64_t M, int64_t N, int mode, const float *g,
                          const float *beta, float eps, void *h, int dt, void *stream);

/** Multi-head attention over packed segments (segment s: rows seg_start[s] .. + seg_len[s]); qkv rows are
 *  [q | k | v] (3W, dtype dt) without bias, bias_qkv (3W, fp32) is added on load; out rows are W wide (dtype dt).
 *  causal: token i sees tokens <= i of its segment (CLIP); else the whole segment (BERT, padding never packed).
 *  Softmax in fp32. max_len: an upper bound of seg_len (sets the grid, so a captured graph can be replayed for
 *  any lengths up to it). Reference: cp_attention (cp_attention.cu). */
int cp_cuda_attention(const void *qkv, const float *bias_qkv, void *out, int dt, const int32_t *seg_start,
                      const int32_t *seg_len, int64_t nseg, int64_t max_len, int64_t heads, int64_t head_dim,
                      int causal, void *stream);
/** Grant the attention kernel the device's opt-in shared memory for dtype dt on the current device (once per device
 *  and dtype; errors checked) and give the longest segment it then takes for this head size. Call it outside any
 *  graph capture (runners do, at construction); CP_ERR_DEVICE with CUDA's reason on failure. */
int cp_cuda_attention_prepare(int64_t head_dim, int dt, int64_t *max_len);
/** The longest segment cp_cuda_attention takes for this head size and dtype on the current device (its keys and
 *  values live in shared memory): the prepared limit, or the default 48 KiB's before cp_cuda_attention_prepare.
 *  Never calls into the CUDA API beyond cudaGetDevice, so it is safe inside a capture. */
int64_t cp_cuda_attention_max_len(int64_t head_dim, int dt);

/** out[i] = x[rows[i]] (fp32 rows W wide), i < n: the EOT gather of CLIP pooling (cp_pool.cu). */
int cp_cuda_gather_rows(const float *x, int64_t W, const int32_t *rows, int64_t n, float *out, void *stream);
/** out[s] = mean of x rows of segment s (zeros for an empty segment): masked mean pooling over the packed
 *  tokens (padding is never packed). Reference: pool_rows() of model/cp_runner_cpu.c (cp_pool.cu). */
int cp_cuda_mean_pool(const float *x, int64_t W, const int32_t *seg_start, const int32_t *seg_len, int64_t nseg,
                      float *out, void *stream);

/** Row-wise L2 normalisation in place: x is [n, d] fp32 on the device; rows with norm 0 stay 0.
 *  The CPU reference is cp_l2_normalize_rows in csrc/ (cp_l2norm.cu). */
int cp_cuda_l2_normalize(float *x, int64_t n, int64_t d, void *stream);

/* ---- top-k for index search (cp_topk.cu) ----------------------------------------------------------- */

#define CP_CUDA_TOPK_MAX 256

/** Stage 1: S is a score tile [nq, ncols] fp32 (row stride lds) whose column j is database row row0 + j. Each
 *  chunk of `chunk` columns of each query gives its best k (score desc, row asc) into cand_s/cand_r at
 *  [q * cand_ld + (cand_off + c) * k ...]; missing entries are -inf / -1. k <= CP_CUDA_TOPK_MAX. */
int cp_cuda_topk_chunks(const float *S, int64_t nq, int64_t ncols, int64_t lds, int64_t row0, int64_t chunk,
                        int64_t k, float *cand_s, int32_t *cand_r, int64_t cand_ld, int64_t cand_off, void *stream);
/** Stage 2: the best k of the first ncand candidates of each query (row stride cand_ld) into D[nq,k], R[nq,k]
 *  (-inf / -1 pad). */
int cp_cuda_topk_merge(const float *cand_s, const int32_t *cand_r, int64_t nq, int64_t ncand, int64_t cand_ld,
                       int64_t k, float *D, int32_t *R, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* CP_CUDA_H */
