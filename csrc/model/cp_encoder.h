/* cp_encoder.h — the encoder engine's model: a text tower as data.
 *
 * A text tower is a *description* (cp_encoder_desc: every architectural choice as a field) plus its weights
 * (cp_encoder_weights: the same fields for every family), bound from a checkpoint through a *name table*
 * (cp_name_table: how one checkpoint layout spells each tensor). One CPU runner (model/cp_runner_cpu.h) and one CUDA
 * runner (device/cp_device.h) execute any description. A family (CLIP, BERT, XLM-R, ...) is a file
 * model/cp_arch_<family>.c that reads its config into a description and names its tables; nothing else knows it.
 *
 * Shape letters: B prompts, L columns of the id matrix, T packed tokens, W width, H heads, dh = W/H, F FFN width,
 * V vocabulary, P position rows, D output width (projection, else W), NL layers.
 *
 * Packing (shared by every runner): each prompt contributes only the tokens that can change its output — under a
 * mask the masked-in columns; for a causal tower pooled at EOT the columns 0..EOT; otherwise all L columns — and
 * prompts of different lengths are packed into one token batch of segments.
 *
 * Thread safety: a loaded cp_encoder_model is immutable; any number of runners may read it concurrently.
 */
#ifndef CP_ENCODER_H
#define CP_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "model/cp_ops.h"
#include "model/cp_weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CP_POOL_EOT = 0, CP_POOL_MEAN = 1, CP_POOL_CLS = 2 } cp_pool;

typedef enum {
    CP_POS_ABSOLUTE = 0, /* position id = column index (CLIP, BERT)                                             */
    CP_POS_PADDED = 1    /* RoBERTa / XLM-R: pad_id + 1 + index among the computed tokens (fairseq's offset)      */
} cp_pos_scheme;

/** Everything a text tower is. Filled by a family's config reader; checked by cp_encoder_desc_check. */
typedef struct {
    const char *family;     /* "clip", "bert", "xlmr", ... (static string) */
    const char *layout;     /* the name table bound: "hf", "open_clip", "hf-bert", "hf-roberta", ... */
    int64_t vocab;          /* V */
    int64_t width;          /* W */
    int64_t heads;          /* H (W % H == 0) */
    int64_t layers;         /* NL */
    int64_t ffn;            /* F */
    int64_t max_pos;        /* P: rows of the position table */
    int64_t max_len;        /* longest id row accepted (CLIP: context; BERT: max_seq_length) */
    int64_t type_vocab;     /* rows of the token-type table (row 0 is added); 0: no token types */
    int64_t proj_dim;       /* D of the output projection; 0: no projection */
    float ln_eps;
    cp_act act;
    int pre_ln;             /* 1: x += f(LN(x)) (CLIP); 0: x = LN(x + f(x)) (BERT) */
    int causal;             /* token i attends to tokens <= i of its segment */
    cp_pos_scheme pos;
    int64_t pad_id;         /* CP_POS_PADDED: positions start at pad_id + 1 */
    int emb_ln;             /* LayerNorm after the embedding sum (BERT) */
    int final_ln;           /* LayerNorm on the output rows (CLIP's final_layer_norm) */
    cp_pool pool;
    int64_t eos_id;         /* CP_POOL_EOT: the first id == eos_id is pooled ... */
    int eot_argmax;         /* ... or, when set, the first position of the largest id (OpenAI / open_clip) */
    cp_wlayout proj_layout; /* CP_W_OUT_IN (HF text_projection.weight) or CP_W_IN_OUT (open_clip) */
} cp_encoder_desc;

/** One block. Pre-LN: ln1 before attention, ln2 before the MLP. Post-LN: ln1 after attention, ln2 after the MLP. */
typedef struct {
    const float *ln1_g, *ln1_b, *ln2_g, *ln2_b; /* (W) */
    cp_wmat qkv, o, fc1, fc2;                   /* (3W, W) q|k|v fused, (W, W), (F, W), (W, F): out-in */
    const float *qkv_b, *o_b, *fc1_b, *fc2_b;   /* (3W), (W), (F), (W) */
} cp_encoder_layer;

typedef struct {
    cp_wmat tok;                       /* (V, W) token embeddings (any type: rows are dequantised on lookup) */
    const float *pos;                  /* (P, W) */
    const float *type0;                /* (W): token type 0's row; NULL without token types */
    const float *emb_ln_g, *emb_ln_b;  /* (W); NULL without emb_ln */
    cp_encoder_layer *layers;          /* (NL) */
    const float *lnf_g, *lnf_b;        /* (W); NULL without final_ln */
    cp_wmat proj;                      /* (D, W) in proj_layout; n == 0 without projection */
} cp_encoder_weights;

typedef struct cp_encoder_model {
    cp_encoder_desc d;
    cp_encoder_weights w;
    cp_wstore store;                   /* owns the mapping and converted weights */
    uint64_t weights_hash;             /* sample hash of the bound tensors (cp_weights.h) */
    void *extra;                       /* family-owned memory (e.g. a quantised file), freed by free_extra */
    void (*free_extra)(void *extra);
    void *lowp;                        /* reduced-precision weights (model/cp_lowp.h), freed by free_lowp */
    void (*free_lowp)(void *lowp);
} cp_encoder_model;

/* ---- name tables ------------------------------------------------------------------------------------ */

/** How one checkpoint layout names the tensors. Per-layer names are printf formats with one %lld (the layer);
 *  every name gets the detected prefix in front. NULL: the layout has no such tensor. Q, K and V are either three
 *  tensors (q_w/k_w/v_w, fused into one (3W, W) block at load) or one (qkv_w: open_clip's in_proj). */
typedef struct {
    const char *layout;
    const char *const *prefixes;       /* candidates tried in order (NULL-terminated); the first under which `tok`
                                          exists is used */
    const char *tok, *pos, *type, *emb_ln_g, *emb_ln_b, *lnf_g, *lnf_b, *proj;
    const char *ln1_g, *ln1_b, *ln2_g, *ln2_b;
    const char *q_w, *k_w, *v_w, *q_b, *k_b, *v_b, *qkv_w, *qkv_b;
    const char *o_w, *o_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    int proj_unprefixed;               /* the projection lives outside the prefix (HF text_projection.weight) */
} cp_name_table;

/** The prefix of `t` present in `st` (NULL when the table's token embedding is absent under every prefix). */
const char *cp_name_table_prefix(const cp_name_table *t, const cp_st_set *st);

/** Bind every tensor of `t` (under `prefix`) for m->d into m->w through m->store: the two passes of cp_weights.h.
 *  m->w.layers must be allocated for d.layers blocks. CP_ERR_MODEL_FORMAT lists every missing tensor / bad shape. */
int cp_encoder_bind(cp_encoder_model *m, const cp_name_table *t, const char *prefix, const char *what);

/* ---- loading ---------------------------------------------------------------------------------------- */

typedef struct {
    const char *family;  /* NULL or "auto": detect; else "clip", "bert", ... */
    int act;             /* -1: from the config; else a cp_act (open_clip files carry no activation) */
    int64_t heads;       /* 0: from the config (open_clip: open_clip_config.json, else W / 64) */
} cp_encoder_options;

/** A family: probes a path and loads it. probe returns 1 when the path looks like this family's checkpoint. */
typedef struct {
    const char *name;
    int (*probe)(const char *path);
    int (*load)(const char *path, const cp_encoder_options *opt, cp_encoder_model **out);
} cp_encoder_family;

/** The registered families (model/cp_arch_*.c), NULL-terminated. */
extern const cp_encoder_family *const cp_encoder_families[];

/** Load a text tower from `path` (a directory or a .safetensors file). opt may be NULL (auto-detect, config
 *  defaults). Errors: CP_ERR_IO (unreadable path), CP_ERR_MODEL_FORMAT (unknown family, bad config, missing or
 *  mis-shaped tensors — the message names them), CP_ERR_INVALID_ARG (unknown family name), CP_ERR_NOMEM. */
int cp_encoder_load(const char *path, const cp_encoder_options *opt, cp_encoder_model **out);
void cp_encoder_free(cp_encoder_model *m);

/** Allocate a model with `layers` zeroed blocks over the opened set st (owned from now on, also on error). */
int cp_encoder_alloc(cp_st_set *st, int64_t layers, cp_encoder_model **out);

/** CP_ERR_MODEL_FORMAT naming the field when a description is out of the supported ranges. */
int cp_encoder_desc_check(const cp_encoder_desc *d, const char *what);

/** Output width: D with a projection, else W. */
static inline int64_t cp_encoder_out_dim(const cp_encoder_desc *d) { return d->proj_dim > 0 ? d->proj_dim : d->width; }

/** Activation names: "quick_gelu", "gelu", "gelu_new" (also "gelu_pytorch_tanh", "gelu_fast"), "relu". */
int cp_act_parse(const char *s, cp_act *out);
const char *cp_act_name(cp_act a);
const char *cp_pool_name(const cp_encoder_desc *d); /* "argmax" | "eos_token_id" | "mean" | "cls" */

/* ---- inputs and packing (shared by every runner) ---------------------------------------------------- */

/** CP_ERR_INVALID_ARG unless 0 < L <= max_len, mask (may be NULL) holds only 0/1, and every id that will be
 *  computed is inside the vocabulary. */
int cp_encoder_check_input(const cp_encoder_desc *d, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L);

/** The EOT column of one id row (CP_POOL_EOT rule; 0 when no EOS id is found, as HF's argmax of a boolean). */
int64_t cp_encoder_eot(const cp_encoder_desc *d, const int32_t *row, int64_t L);

/** The columns of one id row that are computed (see the header comment): cols[0..n) (may be NULL to count only);
 *  *pool_at: the index within the segment of the row pooled by CP_POOL_EOT (0 for the other pools). `pooled`: the
 *  caller wants the pooled output (a causal EOT tower then stops at EOT). Returns n (may be 0 under a mask). */
int64_t cp_encoder_columns(const cp_encoder_desc *d, const int32_t *row, const int32_t *mask_row, int64_t L,
                           int pooled, int32_t *cols, int64_t *pool_at);

/** The position id of the k-th computed token of a segment, found at column `col`. */
static inline int64_t cp_encoder_position(const cp_encoder_desc *d, int64_t col, int64_t k) {
    return d->pos == CP_POS_PADDED ? d->pad_id + 1 + k : col;
}

/** Layers to run for hidden states at `layer` (-1 = all, -2 = all but the last, k >= 0 = the first k), or
 *  CP_ERR_INVALID_ARG naming the valid range. */
int cp_encoder_layers_for(const cp_encoder_desc *d, int layer, int64_t *nrun);

#ifdef __cplusplus
}
#endif
#endif /* CP_ENCODER_H */
