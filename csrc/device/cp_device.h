/* cp_device.h — the CUDA backend's C runners: the encoder engine's runner (any cp_encoder_model: CLIP, BERT,
 * XLM-R, ...) and flat index search on one GPU. The encoder runner takes a model loaded by model/cp_encoder.h (the
 * same description and weights the CPU runner executes; it shares the input checks and the packing through
 * cp_encoder.h, never the CPU runner itself), uploads the weights once (GEMM weights converted to the runner's dtype; embeddings, biases,
 * LayerNorm parameters and the text projection stay float32), and keep one device arena of activations, one
 * stream and one cuBLAS handle per runner. Packing is the CPU's (cp_encoder_columns): a causal EOT-pooled prompt
 * is computed only up to its EOT, a masked one only over its mask, prompts of different lengths packed together.
 *
 * Every function compiles without CUDA (CP_WITH_CUDA undefined): then the constructors fail with CP_ERR_DEVICE
 * ("built without CUDA"). Errors: no GPU/driver -> CP_ERR_DEVICE with the reason at construction; CUDA/cuBLAS
 * failures -> CP_ERR_DEVICE with the library's message; a failed device allocation -> CP_ERR_DEVICE_OOM with the
 * bytes asked, and the runner stays usable (its previous arena is kept). Calls on one runner are serialised by a
 * lock; separate runners run concurrently on their own streams.
 */
#ifndef CP_DEVICE_H
#define CP_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "model/cp_encoder.h"
#include "store/cp_index.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dtype codes: the same numbers as kernels/cp_cuda.h's CP_CUDA_F32/F16/BF16 */
enum { CP_DEVICE_FLOAT32 = 0, CP_DEVICE_FLOAT16 = 1, CP_DEVICE_BFLOAT16 = 2 };
/* attention implementations */
enum { CP_DEVICE_ATTN_FUSED = 0, CP_DEVICE_ATTN_CUDNN = 1 };

typedef struct {
    int device;               /* CUDA device index */
    int dtype;                /* CP_DEVICE_* (GEMM inputs and the attention's staging) */
    int attention;            /* CP_DEVICE_ATTN_*; CUDNN is refused in this build (see README, "gpu") */
    int graph_max_batch;      /* batches of at most this many prompts run as captured CUDA graphs (0: never) */
    int64_t max_tokens;       /* packed tokens per device pass (0: 32768); longer batches run in chunks */
} cp_device_options;

/** Defaults: device 0, float32, fused attention, graphs up to 64 prompts, 32768 tokens. */
void cp_device_options_init(cp_device_options *o);

/** "float32"/"fp32", "float16"/"fp16"/"half", "bfloat16"/"bf16" -> CP_DEVICE_*; else CP_ERR_INVALID_ARG. */
int cp_device_parse_dtype(const char *s, int *dtype);
const char *cp_device_dtype_name(int dtype);

/** CP_ERR_INVALID_ARG for unknown codes; CP_ERR_DEVICE (with the reason) for attention=CUDNN, which this build
 *  does not provide. Called first by every constructor, also in builds without CUDA. */
int cp_device_check_options(const cp_device_options *o);

/** Is this build CUDA-enabled (CP_WITH_CUDA)? */
int cp_device_compiled(void);

/* ---- the encoder engine's CUDA runner (any cp_encoder_model) -------------------------------------------- */

typedef struct cp_encoder_cuda cp_encoder_cuda;

/** Upload m's weights to the device (m is borrowed and must outlive the runner): GEMM weights in the runner dtype
 *  (dequantised first when the model stores another type), embeddings, biases, LayerNorm parameters and the
 *  projection float32. Free with cp_encoder_cuda_free. */
int cp_encoder_cuda_create(const cp_encoder_model *m, const cp_device_options *opt, cp_encoder_cuda **out);
void cp_encoder_cuda_free(cp_encoder_cuda *r);
/** As cp_runner_cpu_encode: out (B, D) float32 host memory. */
int cp_encoder_cuda_encode(cp_encoder_cuda *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                           int normalize, float *out);
/** As cp_runner_cpu_hidden_states: out (B, L, W) float32 host memory. */
int cp_encoder_cuda_hidden_states(cp_encoder_cuda *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                                  int layer, int final_norm, float *out);
/** Device bytes held: weights; activation arena (+ cuBLAS workspace). */
size_t cp_encoder_cuda_weight_bytes(const cp_encoder_cuda *r);
size_t cp_encoder_cuda_arena_bytes(const cp_encoder_cuda *r);
/** Number of CUDA graphs currently captured (for tests). */
int cp_encoder_cuda_graphs(const cp_encoder_cuda *r);

/* ---- flat inner-product index search ------------------------------------------------------------------ */

typedef struct cp_index_cuda cp_index_cuda;

/** A device mirror of a cp_index (rows in the index's storage dtype: float32 or float16). The host index stays the
 *  owner of the data (add / remove / save); the mirror re-syncs before a search when the index changed (appended
 *  rows are uploaded alone; a removal or reset re-uploads everything). */
int cp_index_cuda_create(int device, cp_index_cuda **out);
void cp_index_cuda_free(cp_index_cuda *c);
/** Largest k the device search takes (larger k: use cp_index_search). */
int64_t cp_index_cuda_max_k(void);
/** Same contract as cp_index_search (distances [nq, k], labels [nq, k], -inf / -1 pad). Score tiles are sized so
 *  the [nq, N] fp32 score matrix is never materialised beyond `tile_bytes` (0: 256 MiB). */
int cp_index_cuda_search(cp_index_cuda *c, cp_index *ix, const float *q, int64_t nq, int64_t k, float *distances,
                         int64_t *labels);
/** Test knob: bytes of one score tile and columns per top-k chunk (0: defaults). */
void cp_index_cuda_set_knobs(cp_index_cuda *c, size_t tile_bytes, int64_t chunk);
size_t cp_index_cuda_bytes(const cp_index_cuda *c);

#ifdef __cplusplus
}
#endif
#endif /* CP_DEVICE_H */
