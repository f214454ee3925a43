/* cp_minilm.c — BERT encoder: loading (config + weights) and the CPU forward (post-LN blocks, mean pooling). */
#include "model/cp_minilm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/cp_common.h"
#include "base/cp_json.h"

/* ---- loading -------------------------------------------------------------------------------------- */

static void bind(cp_minilm_model *m, const char *pre) {
    cp_wstore *ws = &m->store;
    const cp_minilm_config *c = &m->cfg;
    const int64_t W = c->width, F = c->ffn;
    char n[256];
#define NAME(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
    m->w.word_emb = cp_wstore_get2(ws, NAME("%sembeddings.word_embeddings.weight", pre), c->vocab_size, W);
    m->w.pos_emb = cp_wstore_get2(ws, NAME("%sembeddings.position_embeddings.weight", pre), c->max_pos, W);
    m->w.type_emb = cp_wstore_get2(ws, NAME("%sembeddings.token_type_embeddings.weight", pre), c->type_vocab, W);
    m->w.emb_ln_g = cp_wstore_get1(ws, NAME("%sembeddings.LayerNorm.weight", pre), W);
    m->w.emb_ln_b = cp_wstore_get1(ws, NAME("%sembeddings.LayerNorm.bias", pre), W);
    for (int64_t l = 0; l < c->layers; l++) {
        cp_minilm_layer *L = &m->w.layers[l];
#define LN(s) NAME("%sencoder.layer.%lld." s, pre, (long long)l)
        {
            /* query, key, value fused into one (3W, W) block: one GEMM instead of three */
            static const char *const part[3] = {"query", "key", "value"};
            char qn[3][256], bn[3][256];
            const char *qp[3] = {qn[0], qn[1], qn[2]}, *bp[3] = {bn[0], bn[1], bn[2]};
            for (int k = 0; k < 3; k++) {
                snprintf(qn[k], sizeof qn[k], "%sencoder.layer.%lld.attention.self.%s.weight", pre, (long long)l, part[k]);
                snprintf(bn[k], sizeof bn[k], "%sencoder.layer.%lld.attention.self.%s.bias", pre, (long long)l, part[k]);
            }
            const float *wq = cp_wstore_get_concat(ws, qp, 3, W, W), *bq = cp_wstore_get_concat(ws, bp, 3, W, 0);
            L->q_w = wq, L->k_w = wq ? wq + W * W : NULL, L->v_w = wq ? wq + 2 * W * W : NULL;
            L->q_b = bq, L->k_b = bq ? bq + W : NULL, L->v_b = bq ? bq + 2 * W : NULL;
        }
        L->o_w = cp_wstore_get2(ws, LN("attention.output.dense.weight"), W, W);
        L->o_b = cp_wstore_get1(ws, LN("attention.output.dense.bias"), W);
        L->ln1_g = cp_wstore_get1(ws, LN("attention.output.LayerNorm.weight"), W);
        L->ln1_b = cp_wstore_get1(ws, LN("attention.output.LayerNorm.bias"), W);
        L->fc1_w = cp_wstore_get2(ws, LN("intermediate.dense.weight"), F, W);
        L->fc1_b = cp_wstore_get1(ws, LN("intermediate.dense.bias"), F);
        L->fc2_w = cp_wstore_get2(ws, LN("output.dense.weight"), W, F);
        L->fc2_b = cp_wstore_get1(ws, LN("output.dense.bias"), W);
        L->ln2_g = cp_wstore_get1(ws, LN("output.LayerNorm.weight"), W);
        L->ln2_b = cp_wstore_get1(ws, LN("output.LayerNorm.bias"), W);
#undef LN
    }
#undef NAME
}

void cp_minilm_model_free(cp_minilm_model *m) {
    if (m == NULL) return;
    free(m->w.layers);
    cp_wstore_release(&m->store);
    free(m);
}

int cp_minilm_model_load(const char *dir, cp_minilm_model **out) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cp_json *root = NULL;
    int rc = cp_json_parse_file(path, &root);
    if (rc == CP_ERR_IO) {
        struct stat sb;
        if (stat(dir, &sb) != 0) CP_FAIL(CP_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: no readable config.json", dir);
    }
    CP_CHECK(rc);
    cp_minilm_model *m = calloc(1, sizeof *m);
    if (!m) {
        cp_json_free(root);
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    }
    cp_minilm_config *c = &m->cfg;
    const char *mt = NULL, *act = NULL, *pet = NULL;
    double eps = 1e-12;
    if (rc == CP_OK) rc = cp_json_get_string(root, "model_type", &mt);
    if (rc == CP_OK) rc = cp_json_get_int(root, "vocab_size", 30522, &c->vocab_size);
    if (rc == CP_OK) rc = cp_json_get_int(root, "hidden_size", 768, &c->width);
    if (rc == CP_OK) rc = cp_json_get_int(root, "num_attention_heads", 12, &c->heads);
    if (rc == CP_OK) rc = cp_json_get_int(root, "num_hidden_layers", 12, &c->layers);
    if (rc == CP_OK) rc = cp_json_get_int(root, "intermediate_size", 3072, &c->ffn);
    if (rc == CP_OK) rc = cp_json_get_int(root, "max_position_embeddings", 512, &c->max_pos);
    if (rc == CP_OK) rc = cp_json_get_int(root, "type_vocab_size", 2, &c->type_vocab);
    if (rc == CP_OK) rc = cp_json_get_number(root, "layer_norm_eps", 1e-12, &eps);
    if (rc == CP_OK) rc = cp_json_get_string(root, "hidden_act", &act);
    if (rc == CP_OK) rc = cp_json_get_string(root, "position_embedding_type", &pet);
    if (rc == CP_OK && mt && strcmp(mt, "bert") != 0)
        rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: model_type \"%s\" is not supported (bert)", path, mt);
    if (rc == CP_OK && pet && strcmp(pet, "absolute") != 0)
        rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: position_embedding_type \"%s\" is not supported (absolute)", path, pet);
    if (rc == CP_OK) {
        if (act == NULL || strcmp(act, "gelu") == 0) c->act = CP_ACT_GELU_ERF;
        else if (strcmp(act, "gelu_new") == 0 || strcmp(act, "gelu_pytorch_tanh") == 0) c->act = CP_ACT_GELU_TANH;
        else if (strcmp(act, "relu") == 0) c->act = CP_ACT_RELU;
        else rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: unsupported hidden_act \"%s\"", path, act);
    }
    c->ln_eps = (float)eps;
    cp_json_free(root);
    if (rc == CP_OK && (c->width <= 0 || c->width > 16384 || c->heads <= 0 || c->width % c->heads || c->layers <= 0 ||
                        c->layers > 512 || c->ffn <= 0 || c->ffn > 262144 || c->vocab_size <= 0 ||
                        c->vocab_size > (1 << 24) || c->max_pos <= 0 || c->max_pos > CP_ATTN_MAX_LEN ||
                        c->type_vocab <= 0 || !(c->ln_eps > 0 && c->ln_eps < 1)))
        rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: unsupported BERT config (hidden %lld, heads %lld, layers %lld)", path,
                     (long long)c->width, (long long)c->heads, (long long)c->layers);
    c->max_seq_length = c->max_pos;
    if (rc == CP_OK) {
        snprintf(path, sizeof path, "%s/sentence_bert_config.json", dir);
        struct stat sb;
        if (stat(path, &sb) == 0) {
            cp_json *sb_root = NULL;
            rc = cp_json_parse_file(path, &sb_root);
            if (rc == CP_OK) rc = cp_json_get_int(sb_root, "max_seq_length", c->max_pos, &c->max_seq_length);
            cp_json_free(sb_root);
            if (rc == CP_OK && (c->max_seq_length <= 0 || c->max_seq_length > c->max_pos))
                rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: max_seq_length %lld outside 1..%lld", path,
                             (long long)c->max_seq_length, (long long)c->max_pos);
        }
    }
    cp_st_set *st = NULL;
    if (rc == CP_OK) rc = cp_st_open(dir, &st);
    if (rc) {
        free(m);
        return rc;
    }
    cp_wstore_init(&m->store, st);
    m->w.layers = calloc((size_t)c->layers, sizeof *m->w.layers);
    if (!m->w.layers) rc = cp_fail(CP_ERR_NOMEM, "out of memory");
    const char *pre = cp_st_find(st, "bert.embeddings.word_embeddings.weight") ? "bert." : "";
    for (int pass = 0; rc == CP_OK && pass < 2; pass++) {
        bind(m, pre);
        rc = pass == 0 ? cp_wstore_finish_plan(&m->store, dir) : cp_wstore_finish_fill(&m->store);
    }
    if (rc) {
        cp_minilm_model_free(m);
        return rc;
    }
    m->weights_hash = m->store.hash;
    *out = m;
    return CP_OK;
}

/* ---- CPU forward ---------------------------------------------------------------------------------- */

struct cp_minilm_cpu {
    const cp_minilm_model *m;
    pthread_mutex_t lock;
    int64_t tok_cap, arena_tokens;
    float *arena;  /* x (T, W) | h (T, W) | big (T, max(3W, F)) */
    int64_t *seg;  /* start | len | row (packed row -> sentence) */
    size_t arena_bytes;
};

int cp_minilm_cpu_create(const cp_minilm_model *m, cp_minilm_cpu **out) {
    *out = NULL;
    cp_minilm_cpu *r = calloc(1, sizeof *r);
    if (!r) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    r->m = m;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        CP_FAIL(CP_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    r->tok_cap = cp_arena_tok_cap(m->cfg.width, m->cfg.ffn, m->cfg.max_pos);
    *out = r;
    return CP_OK;
}

void cp_minilm_cpu_free(cp_minilm_cpu *r) {
    if (r == NULL) return;
    pthread_mutex_destroy(&r->lock);
    cp_free_aligned(r->arena);
    free(r->seg);
    free(r);
}

size_t cp_minilm_cpu_arena_bytes(const cp_minilm_cpu *r) { return r->arena_bytes; }

static int arena_reserve(cp_minilm_cpu *r, int64_t T) {
    return cp_arena_reserve(T, r->m->cfg.width, r->m->cfg.ffn, &r->arena, &r->seg, &r->arena_tokens, &r->arena_bytes);
}

int cp_minilm_check_input(const cp_minilm_config *c, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L) {
    if (L <= 0 || L > c->max_pos)
        CP_FAIL(CP_ERR_INVALID_ARG, "input has %lld columns; this model takes at most %lld", (long long)L,
                (long long)c->max_pos);
    for (int64_t i = 0; i < B * L; i++) {
        if (mask[i] != 0 && mask[i] != 1)
            CP_FAIL(CP_ERR_INVALID_ARG, "attention_mask must be 0/1, found %d at [%lld, %lld]", mask[i],
                    (long long)(i / L), (long long)(i % L));
        if (mask[i] && (ids[i] < 0 || ids[i] >= c->vocab_size))
            CP_FAIL(CP_ERR_INVALID_ARG, "token id %d at [%lld, %lld] is outside the vocabulary (0..%lld)", ids[i],
                    (long long)(i / L), (long long)(i % L), (long long)c->vocab_size - 1);
    }
    return CP_OK;
}

int cp_minilm_cpu_encode(cp_minilm_cpu *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                         int normalize, float *out) {
    const cp_minilm_model *m = r->m;
    const cp_minilm_config *c = &m->cfg;
    const int64_t W = c->width, F = c->ffn, H = c->heads, dh = W / H;
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_minilm_check_input(c, ids, mask, B, L));
    pthread_mutex_lock(&r->lock);
    int rc = CP_OK;
    int64_t b0 = 0;
    while (b0 < B && rc == CP_OK) {
        int64_t T = 0, b1 = b0;
        while (b1 < B) {
            int64_t n = 0;
            for (int64_t t = 0; t < L; t++) n += mask[b1 * L + t];
            if (T + n > r->tok_cap && b1 > b0) break;
            T += n;
            b1++;
        }
        const int64_t nseg = b1 - b0;
        rc = arena_reserve(r, T > nseg ? T : nseg);
        if (rc) break;
        int64_t *start = r->seg, *len = r->seg + r->arena_tokens;
        float *x = r->arena, *h = x + r->arena_tokens * W, *big = h + r->arena_tokens * W;
        /* embeddings: word + position (column index) + token type 0, then LayerNorm */
        int64_t t = 0;
        for (int64_t s = 0; s < nseg; s++) {
            start[s] = t;
            const int32_t *ir = ids + (b0 + s) * L, *mr = mask + (b0 + s) * L;
            for (int64_t p = 0; p < L; p++) {
                if (!mr[p]) continue;
                const float *we = m->w.word_emb + (int64_t)ir[p] * W, *pe = m->w.pos_emb + p * W, *te = m->w.type_emb;
                float *o = x + t * W;
                for (int64_t j = 0; j < W; j++) o[j] = we[j] + te[j] + pe[j];
                t++;
            }
            len[s] = t - start[s];
        }
        cp_layernorm(x, W, x, W, T, W, m->w.emb_ln_g, m->w.emb_ln_b, c->ln_eps);
        for (int64_t l = 0; l < c->layers; l++) {
            const cp_minilm_layer *Ly = &m->w.layers[l];
            cp_linear(x, W, T, W, Ly->q_w, CP_W_OUT_IN, 3 * W, Ly->q_b, big, 3 * W, 0); /* q | k | v fused */
            cp_attention(big, 3 * W, h, W, start, len, nseg, H, dh, 0);
            cp_linear(h, W, T, W, Ly->o_w, CP_W_OUT_IN, W, Ly->o_b, x, W, 1);
            cp_layernorm(x, W, x, W, T, W, Ly->ln1_g, Ly->ln1_b, c->ln_eps);
            cp_linear(x, W, T, W, Ly->fc1_w, CP_W_OUT_IN, F, Ly->fc1_b, big, F, 0);
            cp_activation(big, T * F, c->act);
            cp_linear(big, F, T, F, Ly->fc2_w, CP_W_OUT_IN, W, Ly->fc2_b, x, W, 1);
            cp_layernorm(x, W, x, W, T, W, Ly->ln2_g, Ly->ln2_b, c->ln_eps);
        }
        /* mean over each sentence's tokens (a sentence with no tokens gives zeros, as sentence-transformers'
         * clamp(min=1e-9) division does) */
        for (int64_t s = 0; s < nseg; s++) {
            float *o = out + (b0 + s) * W;
            for (int64_t j = 0; j < W; j++) o[j] = 0.0f;
            for (int64_t p = 0; p < len[s]; p++) {
                const float *xr = x + (start[s] + p) * W;
                for (int64_t j = 0; j < W; j++) o[j] += xr[j];
            }
            if (len[s] > 0)
                for (int64_t j = 0; j < W; j++) o[j] /= (float)len[s];
        }
        if (normalize) cp_l2_normalize_rows(out + b0 * W, nseg, W);
        b0 = b1;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}
