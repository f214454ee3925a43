/* cp_runner_cpu.h — the encoder engine's CPU runner: executes any cp_encoder_model (model/cp_encoder.h).
 *
 * Per chunk of packed tokens: embeddings (token + position [+ token type 0], [LayerNorm]) -> NL blocks, pre-LN
 * (x += Wo·attn(LN1 x); x += W2·act(W1·LN2 x)) or post-LN (x = LN1(x + Wo·attn x); x = LN2(x + W2·act(W1 x))), with
 * causal or bidirectional attention per segment -> pooling (EOT / mean / CLS) -> [final LayerNorm] -> [projection]
 * -> [L2 normalisation]. GEMMs go through cp_matmul (any weight type); LayerNorm, softmax and the residual stream
 * are float32. Activations live in one arena per runner, sized for at most `tok_cap` packed tokens (about 64 MiB,
 * at most 8192 tokens, at least one longest input); longer batches run in chunks.
 *
 * Thread safety: calls on one runner are serialised by its lock (GEMMs and attention use OpenMP threads inside);
 * separate runners over the same model run concurrently.
 */
#ifndef CP_RUNNER_CPU_H
#define CP_RUNNER_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "model/cp_encoder.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_runner_cpu cp_runner_cpu;

/** A runner over m (borrowed: m must outlive the runner). CP_ERR_NOMEM, CP_ERR_INTERNAL. */
int cp_runner_cpu_create(const cp_encoder_model *m, cp_runner_cpu **out);
void cp_runner_cpu_free(cp_runner_cpu *r);

/** Pooled output out (B, D) for ids (B, L) and an optional 0/1 mask (B, L) (NULL: every column is a token).
 *  A prompt with no tokens under the mask gives a zero row. normalize: L2-normalise each row.
 *  Errors: CP_ERR_INVALID_ARG (cp_encoder_check_input), CP_ERR_NOMEM (arena; the runner stays usable). */
int cp_runner_cpu_encode(cp_runner_cpu *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                         int normalize, float *out);

/** Token states out (B, L, W) after `layer` blocks (-1: all = last_hidden_state, -2: penultimate, k >= 0: the
 *  first k, 0 = embeddings), with the final LayerNorm applied when the model has one and final_norm is set.
 *  Columns outside the mask are zero. Errors as cp_runner_cpu_encode, and CP_ERR_INVALID_ARG for `layer`. */
int cp_runner_cpu_hidden_states(cp_runner_cpu *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                                int layer, int final_norm, float *out);

/** Bytes currently held by the runner's arena. */
size_t cp_runner_cpu_arena_bytes(const cp_runner_cpu *r);

#ifdef __cplusplus
}
#endif
#endif /* CP_RUNNER_CPU_H */
