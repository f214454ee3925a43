/* cp_minilm.h — BERT-family sentence encoder (all-MiniLM-L6-v2 and other BertModel checkpoints): config, weights
 * from safetensors, and the CPU forward with mean pooling.
 *
 * Shape letters: B sentences, L padded length, T packed (unmasked) tokens, W hidden, H heads, F intermediate,
 * V vocabulary, P max positions, NL layers.
 */
#ifndef CP_MINILM_H
#define CP_MINILM_H

#include <stddef.h>
#include <stdint.h>

#include "model/cp_ops.h"
#include "model/cp_weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t vocab_size, width, heads, layers, ffn, max_pos, type_vocab;
    float ln_eps;
    cp_act act;
    int64_t max_seq_length; /* sentence_bert_config.json (default: max_pos) */
} cp_minilm_config;

typedef struct {
    const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b; /* (W, W), (W); consecutive: one (3W, W) block */
    const float *o_w, *o_b;                          /* (W, W), (W) */
    const float *ln1_g, *ln1_b;                      /* attention.output.LayerNorm (W) */
    const float *fc1_w, *fc1_b;                      /* (F, W), (F) */
    const float *fc2_w, *fc2_b;                      /* (W, F), (W) */
    const float *ln2_g, *ln2_b;                      /* output.LayerNorm (W) */
} cp_minilm_layer;

typedef struct {
    const float *word_emb;      /* (V, W) */
    const float *pos_emb;       /* (P, W) */
    const float *type_emb;      /* (type_vocab, W); row 0 is used */
    const float *emb_ln_g, *emb_ln_b;
    cp_minilm_layer *layers;    /* (NL) */
} cp_minilm_weights;

typedef struct {
    cp_minilm_config cfg;
    cp_minilm_weights w;
    cp_wstore store;
    uint64_t weights_hash;
} cp_minilm_model;

/** Load a directory with config.json + model.safetensors (+ sentence_bert_config.json). */
int cp_minilm_model_load(const char *dir, cp_minilm_model **out);
void cp_minilm_model_free(cp_minilm_model *m);

typedef struct cp_minilm_cpu cp_minilm_cpu;
int cp_minilm_cpu_create(const cp_minilm_model *m, cp_minilm_cpu **out);
void cp_minilm_cpu_free(cp_minilm_cpu *r);
size_t cp_minilm_cpu_arena_bytes(const cp_minilm_cpu *r);

/** Mean-pooled sentence vectors out (B, W) from ids / mask (B, L) (mask 1 = token, 0 = padding; only masked-in
 *  tokens are computed, at their column's position id). normalize: L2-normalise rows. */
int cp_minilm_cpu_encode(cp_minilm_cpu *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                         int normalize, float *out);

/** CP_ERR_INVALID_ARG unless 0 < L <= max_pos, the mask is 0/1 and every masked-in id is inside the vocabulary
 *  (shared with the CUDA runner). */
int cp_minilm_check_input(const cp_minilm_config *c, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L);

#ifdef __cplusplus
}
#endif
#endif /* CP_MINILM_H */
