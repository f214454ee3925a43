/* cp_clip.h — the CLIP text tower: configuration, weights (loaded from safetensors), and the CPU forward pass.
 *
 * Shape letters: B prompts, L context length (77), T packed tokens, W width, H heads, dh = W/H head size,
 * F MLP size (4W), D projection size, V vocabulary, NL layers.
 *
 * Loading (cp_clip.c) is independent of the compute: cp_clip_model holds the config and float32 weight pointers
 * (mapped or converted once), which the CPU forward (cp_clip_cpu.c) and a device backend can both use.
 */
#ifndef CP_CLIP_H
#define CP_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "model/cp_ops.h"
#include "model/cp_weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CP_CLIP_LAYOUT_HF = 0, CP_CLIP_LAYOUT_OPENCLIP = 1 } cp_clip_layout;

typedef struct {
    int64_t vocab_size;  /* V */
    int64_t width;       /* W (hidden_size) */
    int64_t heads;       /* H */
    int64_t layers;      /* NL */
    int64_t ffn;         /* F (intermediate_size) */
    int64_t context;     /* L (max_position_embeddings) */
    int64_t proj_dim;    /* D; 0 when the checkpoint has no text projection (pooled output is then W wide) */
    float ln_eps;
    cp_act act;
    int64_t eos_token_id;
    int pool_argmax;     /* 1: pool at argmax(id) (OpenAI / open_clip, HF when eos_token_id == 2); 0: first eos id */
    cp_clip_layout layout;
} cp_clip_config;

typedef struct {
    const float *ln1_g, *ln1_b;      /* (W) */
    const float *q_w, *k_w, *v_w;    /* (W, W) each, [out, in]; for open_clip they are rows of in_proj (3W, W) */
    const float *q_b, *k_b, *v_b;    /* (W) */
    int qkv_fused;                   /* q_w/k_w/v_w (and biases) are consecutive: one (3W, W) GEMM */
    const float *o_w, *o_b;          /* (W, W), (W) */
    const float *ln2_g, *ln2_b;      /* (W) */
    const float *fc1_w, *fc1_b;      /* (F, W), (F) */
    const float *fc2_w, *fc2_b;      /* (W, F), (W) */
} cp_clip_layer;

typedef struct {
    const float *tok_emb;            /* (V, W) */
    const float *pos_emb;            /* (L, W) */
    cp_clip_layer *layers;           /* (NL) */
    const float *lnf_g, *lnf_b;      /* (W) */
    const float *proj;               /* HF (D, W) or open_clip (W, D); NULL without projection */
    cp_wlayout proj_layout;
} cp_clip_weights;

typedef struct {
    cp_clip_config cfg;
    cp_clip_weights w;
    cp_wstore store;                 /* owns the mapping and converted weights */
    uint64_t weights_hash;           /* sample hash of the bound tensors (see cp_weights.h) */
} cp_clip_model;

typedef struct {
    int act;                         /* -1: from config; else a cp_act (open_clip files carry no activation) */
    int64_t heads;                   /* 0: from config / W/64 for open_clip */
} cp_clip_options;

/** Load from a HF directory (config.json + model.safetensors[.index.json]: CLIPTextModel,
 *  CLIPTextModelWithProjection or CLIPModel, text tower only) or an open_clip / OpenAI .safetensors file.
 *  opt may be NULL. Free with cp_clip_model_free. */
int cp_clip_model_load(const char *path, const cp_clip_options *opt, cp_clip_model **out);
void cp_clip_model_free(cp_clip_model *m);

/** Pooling position of each prompt (EOT) following the config's rule; ids (B, L). */
void cp_clip_pool_positions(const cp_clip_config *cfg, const int32_t *ids, int64_t B, int64_t L, int64_t *pos);

/* ---- CPU forward ---------------------------------------------------------------------------------- */

typedef struct cp_clip_cpu cp_clip_cpu;

/** CPU runner over a loaded model (borrowed; must outlive the runner). Owns its activation arena; calls on one
 *  runner are serialised by an internal lock. */
int cp_clip_cpu_create(const cp_clip_model *m, cp_clip_cpu **out);
void cp_clip_cpu_free(cp_clip_cpu *r);

/** Pooled (and projected) output: out (B, D or W). Computes only tokens up to each prompt's EOT, packing prompts
 *  of different lengths together. normalize: L2-normalise each row. */
int cp_clip_cpu_encode(cp_clip_cpu *r, const int32_t *ids, int64_t B, int64_t L, int normalize, float *out);

/** Hidden states (B, L, W) after `layer` blocks with the final LayerNorm applied: layer -1 = last_hidden_state,
 *  -2 = penultimate (clip-skip 1), k >= 0 = HF hidden_states[k] (0: embeddings). */
int cp_clip_cpu_hidden_states(cp_clip_cpu *r, const int32_t *ids, int64_t B, int64_t L, int layer, float *out);

/** Bytes currently held by the runner's arena. */
size_t cp_clip_cpu_arena_bytes(const cp_clip_cpu *r);

/** CP_ERR_INVALID_ARG unless 0 < L <= context and every id is inside the vocabulary (shared with the CUDA runner). */
int cp_clip_check_ids(const cp_clip_config *c, const int32_t *ids, int64_t B, int64_t L);

#ifdef __cplusplus
}
#endif
#endif /* CP_CLIP_H */
