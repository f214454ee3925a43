/* cp_clip.c — loading the CLIP text tower: config (config.json / open_clip shapes) and weight binding. */
#include "model/cp_clip.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/cp_common.h"
#include "base/cp_json.h"

static int parse_act(const char *s, cp_act *out) {
    if (s == NULL || strcmp(s, "quick_gelu") == 0) *out = CP_ACT_QUICK_GELU;
    else if (strcmp(s, "gelu") == 0) *out = CP_ACT_GELU_ERF;
    else if (strcmp(s, "gelu_new") == 0 || strcmp(s, "gelu_pytorch_tanh") == 0 || strcmp(s, "gelu_fast") == 0)
        *out = CP_ACT_GELU_TANH;
    else if (strcmp(s, "relu") == 0) *out = CP_ACT_RELU;
    else CP_FAIL(CP_ERR_MODEL_FORMAT, "unsupported hidden_act \"%s\" (quick_gelu, gelu, gelu_new, relu)", s);
    return CP_OK;
}

static int check_config(const cp_clip_config *c, const char *what) {
    if (c->width <= 0 || c->width > 16384 || c->heads <= 0 || c->width % c->heads != 0 || c->layers <= 0 ||
        c->layers > 512 || c->ffn <= 0 || c->ffn > 262144 || c->vocab_size <= 0 || c->vocab_size > (1 << 24) ||
        c->context <= 0 || c->context > CP_ATTN_MAX_LEN || c->proj_dim < 0 || c->proj_dim > 65536 ||
        !(c->ln_eps > 0.0f && c->ln_eps < 1.0f))
        CP_FAIL(CP_ERR_MODEL_FORMAT,
                "%s: unsupported CLIP text config (hidden_size %lld, heads %lld, layers %lld, intermediate %lld, "
                "vocab %lld, positions %lld, projection %lld, eps %g)",
                what, (long long)c->width, (long long)c->heads, (long long)c->layers, (long long)c->ffn,
                (long long)c->vocab_size, (long long)c->context, (long long)c->proj_dim, (double)c->ln_eps);
    return CP_OK;
}

/* Reads the text config of a CLIPTextConfig / CLIPConfig dict into cfg (shapes checked later against tensors). */
static int read_hf_config(const cp_json *root, const char *path, cp_clip_config *c) {
    const cp_json *tc = cp_json_get(root, "text_config");
    if (tc == NULL || tc->type != CP_JSON_OBJECT) tc = root;
    int64_t v;
    double d;
    const char *act = NULL;
    CP_CHECK(cp_json_get_int(tc, "vocab_size", 49408, &c->vocab_size));
    CP_CHECK(cp_json_get_int(tc, "hidden_size", 512, &c->width));
    CP_CHECK(cp_json_get_int(tc, "intermediate_size", 2048, &c->ffn));
    CP_CHECK(cp_json_get_int(tc, "num_hidden_layers", 12, &c->layers));
    CP_CHECK(cp_json_get_int(tc, "num_attention_heads", 8, &c->heads));
    CP_CHECK(cp_json_get_int(tc, "max_position_embeddings", 77, &c->context));
    CP_CHECK(cp_json_get_number(tc, "layer_norm_eps", 1e-5, &d));
    c->ln_eps = (float)d;
    CP_CHECK(cp_json_get_string(tc, "hidden_act", &act));
    CP_CHECK(parse_act(act, &c->act));
    const cp_json *eos = cp_json_get(tc, "eos_token_id");
    if (eos && eos->type == CP_JSON_ARRAY) /* a list of ids: HF compares with the first */
        eos = eos->count ? &eos->items[0] : NULL;
    if (eos == NULL || eos->type == CP_JSON_NULL) v = 49407;
    else if (eos->type == CP_JSON_NUMBER && eos->is_integer) v = eos->integer;
    else CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: eos_token_id must be an integer", path);
    c->eos_token_id = v;
    c->pool_argmax = (v == 2);
    /* projection_dim: in text_config for CLIPTextModelWithProjection, at the top for CLIPModel */
    int64_t pd_top, pd_text;
    CP_CHECK(cp_json_get_int(root, "projection_dim", -1, &pd_top));
    CP_CHECK(cp_json_get_int(tc, "projection_dim", -1, &pd_text));
    c->proj_dim = tc != root && pd_top > 0 ? pd_top : (pd_text > 0 ? pd_text : (pd_top > 0 ? pd_top : 512));
    c->layout = CP_CLIP_LAYOUT_HF;
    return CP_OK;
}

/* Binds every tensor for the config; called twice (plan, fill). */
static void bind_hf(cp_clip_model *m, const char *pre, int with_proj) {
    cp_wstore *ws = &m->store;
    const cp_clip_config *c = &m->cfg;
    const int64_t W = c->width, F = c->ffn;
    char n[256];
#define NAME(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
    m->w.tok_emb = cp_wstore_get2(ws, NAME("%sembeddings.token_embedding.weight", pre), c->vocab_size, W);
    m->w.pos_emb = cp_wstore_get2(ws, NAME("%sembeddings.position_embedding.weight", pre), c->context, W);
    for (int64_t l = 0; l < c->layers; l++) {
        cp_clip_layer *L = &m->w.layers[l];
        const char *p = pre;
#define LN(s) NAME("%sencoder.layers.%lld." s, p, (long long)l)
        L->ln1_g = cp_wstore_get1(ws, LN("layer_norm1.weight"), W);
        L->ln1_b = cp_wstore_get1(ws, LN("layer_norm1.bias"), W);
        {
            /* Q, K, V fused into one (3W, W) block: one GEMM instead of three */
            char qn[3][256], bn[3][256];
            const char *qp[3] = {qn[0], qn[1], qn[2]}, *bp[3] = {bn[0], bn[1], bn[2]};
            for (int k = 0; k < 3; k++) {
                snprintf(qn[k], sizeof qn[k], "%sencoder.layers.%lld.self_attn.%c_proj.weight", p, (long long)l, "qkv"[k]);
                snprintf(bn[k], sizeof bn[k], "%sencoder.layers.%lld.self_attn.%c_proj.bias", p, (long long)l, "qkv"[k]);
            }
            const float *wq = cp_wstore_get_concat(ws, qp, 3, W, W), *bq = cp_wstore_get_concat(ws, bp, 3, W, 0);
            L->q_w = wq, L->k_w = wq ? wq + W * W : NULL, L->v_w = wq ? wq + 2 * W * W : NULL;
            L->q_b = bq, L->k_b = bq ? bq + W : NULL, L->v_b = bq ? bq + 2 * W : NULL;
        }
        L->o_w = cp_wstore_get2(ws, LN("self_attn.out_proj.weight"), W, W);
        L->o_b = cp_wstore_get1(ws, LN("self_attn.out_proj.bias"), W);
        L->ln2_g = cp_wstore_get1(ws, LN("layer_norm2.weight"), W);
        L->ln2_b = cp_wstore_get1(ws, LN("layer_norm2.bias"), W);
        L->fc1_w = cp_wstore_get2(ws, LN("mlp.fc1.weight"), F, W);
        L->fc1_b = cp_wstore_get1(ws, LN("mlp.fc1.bias"), F);
        L->fc2_w = cp_wstore_get2(ws, LN("mlp.fc2.weight"), W, F);
        L->fc2_b = cp_wstore_get1(ws, LN("mlp.fc2.bias"), W);
        L->qkv_fused = 1;
#undef LN
    }
    m->w.lnf_g = cp_wstore_get1(ws, NAME("%sfinal_layer_norm.weight", pre), W);
    m->w.lnf_b = cp_wstore_get1(ws, NAME("%sfinal_layer_norm.bias", pre), W);
    m->w.proj = with_proj ? cp_wstore_get2(ws, "text_projection.weight", c->proj_dim, W) : NULL;
    m->w.proj_layout = CP_W_OUT_IN;
}

static void bind_openclip(cp_clip_model *m, const char *pre) {
    cp_wstore *ws = &m->store;
    const cp_clip_config *c = &m->cfg;
    const int64_t W = c->width, F = c->ffn;
    char n[256];
    m->w.tok_emb = cp_wstore_get2(ws, NAME("%stoken_embedding.weight", pre), c->vocab_size, W);
    m->w.pos_emb = cp_wstore_get2(ws, NAME("%spositional_embedding", pre), c->context, W);
    for (int64_t l = 0; l < c->layers; l++) {
        cp_clip_layer *L = &m->w.layers[l];
#define LN(s) NAME("%stransformer.resblocks.%lld." s, pre, (long long)l)
        L->ln1_g = cp_wstore_get1(ws, LN("ln_1.weight"), W);
        L->ln1_b = cp_wstore_get1(ws, LN("ln_1.bias"), W);
        const float *in_w = cp_wstore_get2(ws, LN("attn.in_proj_weight"), 3 * W, W);
        const float *in_b = cp_wstore_get1(ws, LN("attn.in_proj_bias"), 3 * W);
        L->q_w = in_w, L->k_w = in_w ? in_w + W * W : NULL, L->v_w = in_w ? in_w + 2 * W * W : NULL;
        L->q_b = in_b, L->k_b = in_b ? in_b + W : NULL, L->v_b = in_b ? in_b + 2 * W : NULL;
        L->qkv_fused = 1;
        L->o_w = cp_wstore_get2(ws, LN("attn.out_proj.weight"), W, W);
        L->o_b = cp_wstore_get1(ws, LN("attn.out_proj.bias"), W);
        L->ln2_g = cp_wstore_get1(ws, LN("ln_2.weight"), W);
        L->ln2_b = cp_wstore_get1(ws, LN("ln_2.bias"), W);
        L->fc1_w = cp_wstore_get2(ws, LN("mlp.c_fc.weight"), F, W);
        L->fc1_b = cp_wstore_get1(ws, LN("mlp.c_fc.bias"), F);
        L->fc2_w = cp_wstore_get2(ws, LN("mlp.c_proj.weight"), W, F);
        L->fc2_b = cp_wstore_get1(ws, LN("mlp.c_proj.bias"), W);
#undef LN
    }
    m->w.lnf_g = cp_wstore_get1(ws, NAME("%sln_final.weight", pre), W);
    m->w.lnf_b = cp_wstore_get1(ws, NAME("%sln_final.bias", pre), W);
    m->w.proj = c->proj_dim > 0 ? cp_wstore_get2(ws, NAME("%stext_projection", pre), W, c->proj_dim) : NULL;
    m->w.proj_layout = CP_W_IN_OUT;
#undef NAME
}

/* Infers an open_clip text config from tensor shapes (+ open_clip_config.json beside the file when present). */
static int infer_openclip(cp_clip_model *m, const char *pre, const char *file, const cp_clip_options *opt) {
    cp_clip_config *c = &m->cfg;
    const cp_st_set *st = m->store.st;
    char n[256];
    snprintf(n, sizeof n, "%stoken_embedding.weight", pre);
    const cp_st_tensor *te = cp_st_find(st, n);
    snprintf(n, sizeof n, "%spositional_embedding", pre);
    const cp_st_tensor *pe = cp_st_find(st, n);
    snprintf(n, sizeof n, "%stransformer.resblocks.0.mlp.c_fc.weight", pre);
    const cp_st_tensor *fc = cp_st_find(st, n);
    snprintf(n, sizeof n, "%stext_projection", pre);
    const cp_st_tensor *tp = cp_st_find(st, n);
    if (te == NULL || te->ndim != 2 || pe == NULL || pe->ndim != 2 || fc == NULL || fc->ndim != 2)
        CP_FAIL(CP_ERR_MODEL_FORMAT,
                "%s: not a CLIP text checkpoint: needs %stoken_embedding.weight (V, W), %spositional_embedding (L, W) "
                "and %stransformer.resblocks.0.mlp.c_fc.weight (open_clip layout), or text_model.* tensors with a "
                "config.json (Hugging Face layout)",
                file, pre, pre, pre);
    c->vocab_size = te->shape[0];
    c->width = te->shape[1];
    c->context = pe->shape[0];
    c->ffn = fc->shape[0];
    c->layers = 0;
    for (;;) {
        snprintf(n, sizeof n, "%stransformer.resblocks.%lld.ln_1.weight", pre, (long long)c->layers);
        if (!cp_st_find(st, n)) break;
        c->layers++;
    }
    c->proj_dim = tp ? (tp->ndim == 2 ? tp->shape[1] : -1) : 0;
    c->heads = c->width / 64;
    c->act = CP_ACT_QUICK_GELU; /* OpenAI's weights; open_clip models trained with nn.GELU need hidden_act="gelu" */
    /* open_clip_config.json (as published on the HF hub next to open_clip_model.safetensors) */
    char cfgpath[4096];
    const char *slash = strrchr(file, '/');
    int dl = slash ? (int)(slash - file) : 1;
    snprintf(cfgpath, sizeof cfgpath, "%.*s/open_clip_config.json", dl, slash ? file : ".");
    struct stat sb;
    if (stat(cfgpath, &sb) == 0) {
        cp_json *root = NULL;
        CP_CHECK(cp_json_parse_file(cfgpath, &root));
        const cp_json *mc = cp_json_get(root, "model_cfg");
        const cp_json *tc = cp_json_get(mc, "text_cfg");
        int64_t heads = 0;
        int rc = cp_json_get_int(tc, "heads", 0, &heads);
        if (rc == CP_OK && heads > 0) c->heads = heads;
        const cp_json *qg = cp_json_get(mc, "quick_gelu");
        if (qg && qg->type == CP_JSON_BOOL) c->act = qg->boolean ? CP_ACT_QUICK_GELU : CP_ACT_GELU_ERF;
        cp_json_free(root);
        CP_CHECK(rc);
    }
    if (opt && opt->heads > 0) c->heads = opt->heads;
    if (opt && opt->act >= 0) c->act = (cp_act)opt->act;
    c->ln_eps = 1e-5f;
    c->eos_token_id = 49407;
    c->pool_argmax = 1;
    c->layout = CP_CLIP_LAYOUT_OPENCLIP;
    return CP_OK;
}

void cp_clip_model_free(cp_clip_model *m) {
    if (m == NULL) return;
    free(m->w.layers);
    cp_wstore_release(&m->store);
    free(m);
}

int cp_clip_model_load(const char *path, const cp_clip_options *opt, cp_clip_model **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) CP_FAIL(CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    cp_clip_model *m = calloc(1, sizeof *m);
    if (!m) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    char cfgpath[4096], what[4200];
    int rc = CP_OK, is_hf = 0;
    cp_st_set *st = NULL;
    const char *file = path;
    if (S_ISDIR(sb.st_mode)) {
        snprintf(cfgpath, sizeof cfgpath, "%s/config.json", path);
        char alt[4096];
        snprintf(alt, sizeof alt, "%s/open_clip_model.safetensors", path);
        struct stat s2;
        if (stat(cfgpath, &s2) != 0 && stat(alt, &s2) == 0) {
            rc = cp_st_open(alt, &st); /* an open_clip hub directory */
        } else {
            rc = cp_st_open(path, &st);
            is_hf = 1;
        }
    } else {
        rc = cp_st_open(path, &st);
        if (rc == CP_OK && (cp_st_find(st, "text_model.embeddings.token_embedding.weight") ||
                            cp_st_find(st, "embeddings.token_embedding.weight"))) {
            const char *slash = strrchr(path, '/');
            snprintf(cfgpath, sizeof cfgpath, "%.*s/config.json", slash ? (int)(slash - path) : 1,
                     slash ? path : ".");
            is_hf = 1;
        }
    }
    if (rc) {
        free(m);
        return rc;
    }
    cp_wstore_init(&m->store, st);
    if (st && cp_st_count(st) > 0) file = cp_st_at(st, 0)->file;
    snprintf(what, sizeof what, "%s", path);

    const char *pre = "";
    if (is_hf) {
        cp_json *root = NULL;
        rc = cp_json_parse_file(cfgpath, &root);
        if (rc == CP_ERR_IO) rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: no readable config.json beside the weights", path);
        if (rc == CP_OK) {
            rc = read_hf_config(root, cfgpath, &m->cfg);
            cp_json_free(root);
        }
        if (rc == CP_OK && opt && opt->act >= 0) m->cfg.act = (cp_act)opt->act;
        pre = cp_st_find(st, "text_model.embeddings.token_embedding.weight") ? "text_model." : "";
    } else {
        pre = cp_st_find(st, "token_embedding.weight") ? "" : (cp_st_find(st, "text.token_embedding.weight") ? "text." : "");
        rc = infer_openclip(m, pre, file, opt);
    }
    int with_proj = 0;
    if (rc == CP_OK) {
        if (is_hf) {
            with_proj = cp_st_find(st, "text_projection.weight") != NULL;
            if (!with_proj) m->cfg.proj_dim = 0;
        } else if (m->cfg.proj_dim < 0) {
            rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: tensor \"%stext_projection\" must be 2-D (W, D)", path, pre);
        }
    }
    if (rc == CP_OK) rc = check_config(&m->cfg, path);
    if (rc == CP_OK) {
        m->w.layers = calloc((size_t)m->cfg.layers, sizeof *m->w.layers);
        if (!m->w.layers) rc = cp_fail(CP_ERR_NOMEM, "out of memory");
    }
    for (int pass = 0; rc == CP_OK && pass < 2; pass++) {
        if (is_hf) bind_hf(m, pre, with_proj);
        else bind_openclip(m, pre);
        rc = pass == 0 ? cp_wstore_finish_plan(&m->store, what) : cp_wstore_finish_fill(&m->store);
    }
    if (rc) {
        cp_clip_model_free(m);
        return rc;
    }
    m->weights_hash = m->store.hash;
    *out = m;
    return CP_OK;
}

void cp_clip_pool_positions(const cp_clip_config *cfg, const int32_t *ids, int64_t B, int64_t L, int64_t *pos) {
    for (int64_t b = 0; b < B; b++) {
        const int32_t *r = ids + b * L;
        int64_t best = 0;
        if (cfg->pool_argmax) {
            for (int64_t t = 1; t < L; t++)
                if (r[t] > r[best]) best = t; /* first maximum, like torch.argmax */
        } else {
            for (int64_t t = 0; t < L; t++)
                if (r[t] == cfg->eos_token_id) {
                    best = t;
                    break;
                }
        }
        pos[b] = best;
    }
}
