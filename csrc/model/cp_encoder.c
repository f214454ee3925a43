/* cp_encoder.c — the engine's model: binding through name tables, loading by family, input checks and packing
 * (see cp_encoder.h). */
#include "model/cp_encoder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/cp_common.h"

/* ---- names ------------------------------------------------------------------------------------------ */

static const char *const ACT_NAMES[] = {"quick_gelu", "gelu", "gelu_new", "relu"};

int cp_act_parse(const char *s, cp_act *out) {
    if (s == NULL) CP_FAIL(CP_ERR_MODEL_FORMAT, "no activation given");
    for (int a = 0; a < 4; a++)
        if (strcmp(s, ACT_NAMES[a]) == 0) {
            *out = (cp_act)a;
            return CP_OK;
        }
    if (strcmp(s, "gelu_pytorch_tanh") == 0 || strcmp(s, "gelu_fast") == 0) {
        *out = CP_ACT_GELU_TANH;
        return CP_OK;
    }
    CP_FAIL(CP_ERR_MODEL_FORMAT, "unsupported hidden_act \"%.60s\" (quick_gelu, gelu, gelu_new, relu)", s);
}

const char *cp_act_name(cp_act a) { return (unsigned)a < 4 ? ACT_NAMES[a] : "?"; }

const char *cp_pool_name(const cp_encoder_desc *d) {
    switch (d->pool) {
    case CP_POOL_EOT: return d->eot_argmax ? "argmax" : "eos_token_id";
    case CP_POOL_MEAN: return "mean";
    case CP_POOL_CLS: return "cls";
    }
    return "?";
}

/* ---- binding ---------------------------------------------------------------------------------------- */

const char *cp_name_table_prefix(const cp_name_table *t, const cp_st_set *st) {
    char n[512];
    for (const char *const *p = t->prefixes; *p; p++) {
        snprintf(n, sizeof n, "%s%s", *p, t->tok);
        if (cp_st_find(st, n)) return *p;
    }
    return NULL;
}

/* A name under the prefix; for per-layer formats `l` fills the %lld. */
static const char *nm(char *buf, size_t cap, const char *prefix, const char *fmt, int64_t l) {
    char tail[400];
    snprintf(tail, sizeof tail, fmt, (long long)l);
    snprintf(buf, cap, "%s%s", prefix, tail);
    return buf;
}

static const float *get1(cp_wstore *ws, const char *pre, const char *fmt, int64_t l, int64_t n0) {
    char b[512];
    return fmt ? cp_wstore_get1(ws, nm(b, sizeof b, pre, fmt, l), n0) : NULL;
}

static const float *get2(cp_wstore *ws, const char *pre, const char *fmt, int64_t l, int64_t n0, int64_t n1) {
    char b[512];
    return fmt ? cp_wstore_get2(ws, nm(b, sizeof b, pre, fmt, l), n0, n1) : NULL;
}

/* One bind pass (plan or fill). */
static void bind_pass(cp_encoder_model *m, const cp_name_table *t, const char *pre) {
    cp_wstore *ws = &m->store;
    const cp_encoder_desc *d = &m->d;
    cp_encoder_weights *w = &m->w;
    const int64_t W = d->width, F = d->ffn, D = d->proj_dim;
    w->tok = cp_wmat_f32(get2(ws, pre, t->tok, 0, d->vocab, W), d->vocab, W, CP_W_OUT_IN);
    w->pos = get2(ws, pre, t->pos, 0, d->max_pos, W);
    if (d->type_vocab > 0) {
        const float *type = get2(ws, pre, t->type, 0, d->type_vocab, W);
        w->type0 = type; /* row 0 */
    }
    if (d->emb_ln) {
        w->emb_ln_g = get1(ws, pre, t->emb_ln_g, 0, W);
        w->emb_ln_b = get1(ws, pre, t->emb_ln_b, 0, W);
    }
    for (int64_t l = 0; l < d->layers; l++) {
        cp_encoder_layer *L = &w->layers[l];
        L->ln1_g = get1(ws, pre, t->ln1_g, l, W), L->ln1_b = get1(ws, pre, t->ln1_b, l, W);
        L->ln2_g = get1(ws, pre, t->ln2_g, l, W), L->ln2_b = get1(ws, pre, t->ln2_b, l, W);
        const float *qkv, *qkv_b;
        if (t->qkv_w) {
            qkv = get2(ws, pre, t->qkv_w, l, 3 * W, W);
            qkv_b = get1(ws, pre, t->qkv_b, l, 3 * W);
        } else {
            char wn[3][512], bn[3][512];
            const char *fw[3] = {t->q_w, t->k_w, t->v_w}, *fb[3] = {t->q_b, t->k_b, t->v_b};
            const char *pw[3], *pb[3];
            for (int k = 0; k < 3; k++) pw[k] = nm(wn[k], sizeof wn[k], pre, fw[k], l), pb[k] = nm(bn[k], sizeof bn[k], pre, fb[k], l);
            qkv = cp_wstore_get_concat(ws, pw, 3, W, W); /* one (3W, W) GEMM instead of three */
            qkv_b = cp_wstore_get_concat(ws, pb, 3, W, 0);
        }
        L->qkv = cp_wmat_f32(qkv, 3 * W, W, CP_W_OUT_IN), L->qkv_b = qkv_b;
        L->o = cp_wmat_f32(get2(ws, pre, t->o_w, l, W, W), W, W, CP_W_OUT_IN);
        L->o_b = get1(ws, pre, t->o_b, l, W);
        L->fc1 = cp_wmat_f32(get2(ws, pre, t->fc1_w, l, F, W), F, W, CP_W_OUT_IN);
        L->fc1_b = get1(ws, pre, t->fc1_b, l, F);
        L->fc2 = cp_wmat_f32(get2(ws, pre, t->fc2_w, l, W, F), W, F, CP_W_OUT_IN);
        L->fc2_b = get1(ws, pre, t->fc2_b, l, W);
    }
    if (d->final_ln) {
        w->lnf_g = get1(ws, pre, t->lnf_g, 0, W);
        w->lnf_b = get1(ws, pre, t->lnf_b, 0, W);
    }
    if (D > 0) {
        const char *pp = t->proj_unprefixed ? "" : pre;
        const float *p = d->proj_layout == CP_W_OUT_IN ? get2(ws, pp, t->proj, 0, D, W) : get2(ws, pp, t->proj, 0, W, D);
        w->proj = cp_wmat_f32(p, D, W, d->proj_layout);
    } else {
        w->proj = cp_wmat_f32(NULL, 0, 0, CP_W_OUT_IN);
    }
}

int cp_encoder_bind(cp_encoder_model *m, const cp_name_table *t, const char *prefix, const char *what) {
    for (int pass = 0; pass < 2; pass++) {
        bind_pass(m, t, prefix);
        CP_CHECK(pass == 0 ? cp_wstore_finish_plan(&m->store, what) : cp_wstore_finish_fill(&m->store));
    }
    m->d.layout = t->layout;
    m->weights_hash = m->store.hash;
    return CP_OK;
}

/* ---- loading ---------------------------------------------------------------------------------------- */

int cp_encoder_alloc(cp_st_set *st, int64_t layers, cp_encoder_model **out) {
    *out = NULL;
    cp_encoder_model *m = calloc(1, sizeof *m);
    cp_encoder_layer *L = layers > 0 ? calloc((size_t)layers, sizeof *L) : NULL;
    if (!m || (layers > 0 && !L)) {
        free(m);
        free(L);
        cp_st_close(st);
        CP_FAIL(CP_ERR_NOMEM, "out of memory for a %lld-layer model", (long long)layers);
    }
    cp_wstore_init(&m->store, st);
    m->w.layers = L;
    *out = m;
    return CP_OK;
}

void cp_encoder_free(cp_encoder_model *m) {
    if (m == NULL) return;
    free(m->w.layers);
    cp_wstore_release(&m->store);
    if (m->free_extra) m->free_extra(m->extra);
    if (m->free_lowp) m->free_lowp(m->lowp);
    free(m);
}

int cp_encoder_desc_check(const cp_encoder_desc *d, const char *what) {
    const int64_t pos_need = d->max_len + (d->pos == CP_POS_PADDED ? d->pad_id + 1 : 0);
    const char *bad = NULL;
    if (d->width <= 0 || d->width > 16384) bad = "hidden size";
    else if (d->heads <= 0 || d->width % d->heads != 0) bad = "number of attention heads (must divide the width)";
    else if (d->layers <= 0 || d->layers > 512) bad = "number of layers";
    else if (d->ffn <= 0 || d->ffn > 262144) bad = "intermediate (FFN) size";
    else if (d->vocab <= 0 || d->vocab > (1 << 24)) bad = "vocabulary size";
    else if (d->max_pos <= 0 || d->max_pos > (1 << 20)) bad = "number of positions";
    else if (d->max_len <= 0 || d->max_len > CP_ATTN_MAX_LEN || pos_need > d->max_pos) bad = "longest input";
    else if (d->type_vocab < 0 || d->type_vocab > 1024) bad = "token-type vocabulary";
    else if (d->proj_dim < 0 || d->proj_dim > 65536) bad = "projection size";
    else if (!(d->ln_eps > 0.0f && d->ln_eps < 1.0f)) bad = "layer_norm_eps";
    else if ((unsigned)d->act > CP_ACT_RELU) bad = "activation";
    else if (d->pos == CP_POS_PADDED && (d->pad_id < 0 || d->pad_id >= d->max_pos)) bad = "padding index";
    char fam[16] = "?";
    for (size_t i = 0; d->family && d->family[i] && i + 1 < sizeof fam; i++)
        fam[i] = (char)(d->family[i] >= 'a' && d->family[i] <= 'z' ? d->family[i] - 32 : d->family[i]), fam[i + 1] = 0;
    if (bad)
        CP_FAIL(CP_ERR_MODEL_FORMAT,
                "%s: unsupported %s text config: %s (hidden %lld, heads %lld, layers %lld, intermediate %lld, "
                "vocab %lld, positions %lld, longest input %lld, projection %lld, eps %g)",
                what, fam, bad, (long long)d->width, (long long)d->heads,
                (long long)d->layers, (long long)d->ffn, (long long)d->vocab, (long long)d->max_pos,
                (long long)d->max_len, (long long)d->proj_dim, (double)d->ln_eps);
    return CP_OK;
}

int cp_encoder_load(const char *path, const cp_encoder_options *opt, cp_encoder_model **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) CP_FAIL(CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    const char *want = opt && opt->family && strcmp(opt->family, "auto") != 0 ? opt->family : NULL;
    if (want) {
        for (const cp_encoder_family *const *f = cp_encoder_families; *f; f++)
            if (strcmp((*f)->name, want) == 0) return (*f)->load(path, opt, out);
        char names[256] = "";
        for (const cp_encoder_family *const *f = cp_encoder_families; *f; f++) {
            strncat(names, names[0] ? ", " : "", sizeof names - strlen(names) - 1);
            strncat(names, (*f)->name, sizeof names - strlen(names) - 1);
        }
        CP_FAIL(CP_ERR_INVALID_ARG, "unknown model family \"%.40s\" (auto, %s)", want, names);
    }
    for (const cp_encoder_family *const *f = cp_encoder_families; *f; f++)
        if ((*f)->probe(path)) return (*f)->load(path, opt, out);
    CP_FAIL(CP_ERR_MODEL_FORMAT,
            "%s: not a text-tower checkpoint this build knows (a Hugging Face directory with config.json and "
            "safetensors weights of CLIP or BERT/RoBERTa, or an open_clip .safetensors file)",
            path);
}

/* The families this build knows, tried in this order by "auto" (adding a model family = one line here). */
extern const cp_encoder_family cp_encoder_family_clip, cp_encoder_family_bert, cp_encoder_family_e5,
    cp_encoder_family_e5_f32;
const cp_encoder_family *const cp_encoder_families[] = {&cp_encoder_family_clip, &cp_encoder_family_bert,
                                                         &cp_encoder_family_e5, &cp_encoder_family_e5_f32, NULL};

/* ---- inputs and packing ----------------------------------------------------------------------------- */

int64_t cp_encoder_eot(const cp_encoder_desc *d, const int32_t *row, int64_t L) {
    int64_t best = 0;
    if (d->eot_argmax) {
        for (int64_t t = 1; t < L; t++)
            if (row[t] > row[best]) best = t; /* first maximum, like torch.argmax */
        return best;
    }
    for (int64_t t = 0; t < L; t++)
        if (row[t] == d->eos_id) return t;
    return 0;
}

int64_t cp_encoder_columns(const cp_encoder_desc *d, const int32_t *row, const int32_t *mask_row, int64_t L,
                           int pooled, int32_t *cols, int64_t *pool_at) {
    int64_t n = 0, at = 0;
    const int eot = d->pool == CP_POOL_EOT;
    const int64_t e = eot ? cp_encoder_eot(d, row, L) : -1;
    const int64_t end = pooled && eot && d->causal && !mask_row ? e + 1 : L; /* causal: later tokens cannot matter */
    for (int64_t c = 0; c < end; c++) {
        if (mask_row && !mask_row[c]) continue;
        if (c == e) at = n;
        if (cols) cols[n] = (int32_t)c;
        n++;
    }
    if (pool_at) *pool_at = at;
    return n;
}

int cp_encoder_check_input(const cp_encoder_desc *d, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L) {
    if (B < 0) CP_FAIL(CP_ERR_INVALID_ARG, "negative batch size %lld", (long long)B);
    if (L <= 0 || L > d->max_len)
        CP_FAIL(CP_ERR_INVALID_ARG, "token ids have %lld columns; this model takes 1..%lld", (long long)L,
                (long long)d->max_len);
    for (int64_t i = 0; i < B * L; i++) {
        if (mask && mask[i] != 0 && mask[i] != 1)
            CP_FAIL(CP_ERR_INVALID_ARG, "attention_mask must be 0/1, found %d at [%lld, %lld]", mask[i],
                    (long long)(i / L), (long long)(i % L));
        if ((!mask || mask[i]) && (ids[i] < 0 || ids[i] >= d->vocab))
            CP_FAIL(CP_ERR_INVALID_ARG, "token id %d at [%lld, %lld] is outside the vocabulary (0..%lld)", ids[i],
                    (long long)(i / L), (long long)(i % L), (long long)d->vocab - 1);
    }
    return CP_OK;
}

int cp_encoder_layers_for(const cp_encoder_desc *d, int layer, int64_t *nrun) {
    const int64_t NL = d->layers;
    const int64_t n = layer >= 0 ? layer : NL + 1 + layer;
    if (n < 0 || n > NL)
        CP_FAIL(CP_ERR_INVALID_ARG, "layer %d out of range for a %lld-layer model (use -%lld..%lld)", layer,
                (long long)NL, (long long)NL + 1, (long long)NL);
    *nrun = n;
    return CP_OK;
}
