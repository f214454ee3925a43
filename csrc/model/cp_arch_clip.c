/* cp_arch_clip.c — the CLIP text tower as an encoder description: config readers (HF config.json / open_clip
 * shapes + open_clip_config.json) and the name tables of the HF and open_clip / OpenAI layouts.
 *
 * CLIP: pre-LN blocks, causal attention, learned absolute positions, no token types, final LayerNorm, pooled at
 * EOT (the first eos_token_id, or argmax(id) for OpenAI / open_clip and HF configs with eos_token_id == 2),
 * optional projection. SDXL's OpenCLIP bigG/14 (width 1280, 32 layers, gelu) is the same description.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/cp_common.h"
#include "base/cp_json.h"
#include "model/cp_encoder.h"

static const char *const HF_PREFIXES[] = {"text_model.", "", NULL};
static const cp_name_table HF = {
    .layout = "hf", .prefixes = HF_PREFIXES,
    .tok = "embeddings.token_embedding.weight", .pos = "embeddings.position_embedding.weight",
    .lnf_g = "final_layer_norm.weight", .lnf_b = "final_layer_norm.bias",
    .proj = "text_projection.weight", .proj_unprefixed = 1,
    .ln1_g = "encoder.layers.%lld.layer_norm1.weight", .ln1_b = "encoder.layers.%lld.layer_norm1.bias",
    .ln2_g = "encoder.layers.%lld.layer_norm2.weight", .ln2_b = "encoder.layers.%lld.layer_norm2.bias",
    .q_w = "encoder.layers.%lld.self_attn.q_proj.weight", .q_b = "encoder.layers.%lld.self_attn.q_proj.bias",
    .k_w = "encoder.layers.%lld.self_attn.k_proj.weight", .k_b = "encoder.layers.%lld.self_attn.k_proj.bias",
    .v_w = "encoder.layers.%lld.self_attn.v_proj.weight", .v_b = "encoder.layers.%lld.self_attn.v_proj.bias",
    .o_w = "encoder.layers.%lld.self_attn.out_proj.weight", .o_b = "encoder.layers.%lld.self_attn.out_proj.bias",
    .fc1_w = "encoder.layers.%lld.mlp.fc1.weight", .fc1_b = "encoder.layers.%lld.mlp.fc1.bias",
    .fc2_w = "encoder.layers.%lld.mlp.fc2.weight", .fc2_b = "encoder.layers.%lld.mlp.fc2.bias",
};

static const char *const OC_PREFIXES[] = {"", "text.", NULL};
static const cp_name_table OPENCLIP = {
    .layout = "open_clip", .prefixes = OC_PREFIXES,
    .tok = "token_embedding.weight", .pos = "positional_embedding",
    .lnf_g = "ln_final.weight", .lnf_b = "ln_final.bias", .proj = "text_projection",
    .ln1_g = "transformer.resblocks.%lld.ln_1.weight", .ln1_b = "transformer.resblocks.%lld.ln_1.bias",
    .ln2_g = "transformer.resblocks.%lld.ln_2.weight", .ln2_b = "transformer.resblocks.%lld.ln_2.bias",
    .qkv_w = "transformer.resblocks.%lld.attn.in_proj_weight", .qkv_b = "transformer.resblocks.%lld.attn.in_proj_bias",
    .o_w = "transformer.resblocks.%lld.attn.out_proj.weight", .o_b = "transformer.resblocks.%lld.attn.out_proj.bias",
    .fc1_w = "transformer.resblocks.%lld.mlp.c_fc.weight", .fc1_b = "transformer.resblocks.%lld.mlp.c_fc.bias",
    .fc2_w = "transformer.resblocks.%lld.mlp.c_proj.weight", .fc2_b = "transformer.resblocks.%lld.mlp.c_proj.bias",
};

/* The fixed part of every CLIP description. */
static void clip_base(cp_encoder_desc *d) {
    d->family = "clip";
    d->pre_ln = 1, d->causal = 1, d->pos = CP_POS_ABSOLUTE, d->type_vocab = 0, d->emb_ln = 0, d->final_ln = 1;
    d->pool = CP_POOL_EOT;
}

/* Reads the text config of a CLIPTextConfig / CLIPConfig dict (shapes are checked against the tensors later). */
static int read_hf_config(const cp_json *root, const char *path, cp_encoder_desc *d) {
    const cp_json *tc = cp_json_get(root, "text_config");
    if (tc == NULL || tc->type != CP_JSON_OBJECT) tc = root;
    double eps;
    const char *act = NULL;
    clip_base(d);
    CP_CHECK(cp_json_get_int(tc, "vocab_size", 49408, &d->vocab));
    CP_CHECK(cp_json_get_int(tc, "hidden_size", 512, &d->width));
    CP_CHECK(cp_json_get_int(tc, "intermediate_size", 2048, &d->ffn));
    CP_CHECK(cp_json_get_int(tc, "num_hidden_layers", 12, &d->layers));
    CP_CHECK(cp_json_get_int(tc, "num_attention_heads", 8, &d->heads));
    CP_CHECK(cp_json_get_int(tc, "max_position_embeddings", 77, &d->max_pos));
    d->max_len = d->max_pos;
    CP_CHECK(cp_json_get_number(tc, "layer_norm_eps", 1e-5, &eps));
    d->ln_eps = (float)eps;
    CP_CHECK(cp_json_get_string(tc, "hidden_act", &act));
    CP_CHECK(cp_act_parse(act ? act : "quick_gelu", &d->act));
    const cp_json *eos = cp_json_get(tc, "eos_token_id");
    if (eos && eos->type == CP_JSON_ARRAY) /* a list of ids: HF compares with the first */
        eos = eos->count ? &eos->items[0] : NULL;
    if (eos == NULL || eos->type == CP_JSON_NULL) d->eos_id = 49407;
    else if (eos->type == CP_JSON_NUMBER && eos->is_integer) d->eos_id = eos->integer;
    else CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: eos_token_id must be an integer", path);
    d->eot_argmax = d->eos_id == 2; /* HF's legacy rule for configs saved before eos_token_id was fixed */
    /* projection_dim: in text_config for CLIPTextModelWithProjection, at the top for CLIPModel */
    int64_t pd_top, pd_text;
    CP_CHECK(cp_json_get_int(root, "projection_dim", -1, &pd_top));
    CP_CHECK(cp_json_get_int(tc, "projection_dim", -1, &pd_text));
    d->proj_dim = tc != root && pd_top > 0 ? pd_top : (pd_text > 0 ? pd_text : (pd_top > 0 ? pd_top : 512));
    d->proj_layout = CP_W_OUT_IN;
    return CP_OK;
}

/* Infers an open_clip text config from tensor shapes (+ open_clip_config.json beside the file when present). */
static int infer_openclip(const cp_st_set *st, const char *pre, const char *file, const cp_encoder_options *opt,
                          cp_encoder_desc *d) {
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
    clip_base(d);
    d->vocab = te->shape[0];
    d->width = te->shape[1];
    d->max_pos = d->max_len = pe->shape[0];
    d->ffn = fc->shape[0];
    d->layers = 0;
    for (;;) {
        snprintf(n, sizeof n, "%stransformer.resblocks.%lld.ln_1.weight", pre, (long long)d->layers);
        if (!cp_st_find(st, n)) break;
        d->layers++;
    }
    if (tp && tp->ndim != 2)
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: tensor \"%stext_projection\" must be 2-D (W, D)", file, pre);
    d->proj_dim = tp ? tp->shape[1] : 0;
    d->proj_layout = CP_W_IN_OUT;
    d->heads = d->width / 64;
    d->act = CP_ACT_QUICK_GELU; /* OpenAI's weights; open_clip models trained with nn.GELU need hidden_act="gelu" */
    /* open_clip_config.json (as published on the HF hub next to open_clip_model.safetensors) */
    char cfgpath[4096];
    const char *slash = strrchr(file, '/');
    snprintf(cfgpath, sizeof cfgpath, "%.*s/open_clip_config.json", slash ? (int)(slash - file) : 1, slash ? file : ".");
    struct stat sb;
    if (stat(cfgpath, &sb) == 0) {
        cp_json *root = NULL;
        CP_CHECK(cp_json_parse_file(cfgpath, &root));
        const cp_json *mc = cp_json_get(root, "model_cfg");
        const cp_json *tc = cp_json_get(mc, "text_cfg");
        int64_t heads = 0;
        int rc = cp_json_get_int(tc, "heads", 0, &heads);
        if (rc == CP_OK && heads > 0) d->heads = heads;
        const cp_json *qg = cp_json_get(mc, "quick_gelu");
        if (qg && qg->type == CP_JSON_BOOL) d->act = qg->boolean ? CP_ACT_QUICK_GELU : CP_ACT_GELU_ERF;
        cp_json_free(root);
        CP_CHECK(rc);
    }
    if (opt && opt->heads > 0) d->heads = opt->heads;
    d->ln_eps = 1e-5f;
    d->eos_id = 49407;
    d->eot_argmax = 1;
    return CP_OK;
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* A directory whose config.json says model_type clip*, an open_clip hub directory, or a .safetensors file in
 * either layout. */
static int clip_probe(const char *path) {
    char p[4096];
    if (is_dir(path)) {
        snprintf(p, sizeof p, "%s/config.json", path);
        if (!exists(p)) {
            snprintf(p, sizeof p, "%s/open_clip_model.safetensors", path);
            return exists(p);
        }
        cp_json *root = NULL;
        if (cp_json_parse_file(p, &root) != CP_OK) return 0;
        const char *mt = NULL;
        int ok = cp_json_get_string(root, "model_type", &mt) == CP_OK && mt && strncmp(mt, "clip", 4) == 0;
        cp_json_free(root);
        return ok;
    }
    cp_st_set *st = NULL;
    if (cp_st_open(path, &st) != CP_OK) return 0;
    int ok = 0;
    for (const char *const *pre = HF_PREFIXES; *pre && !ok; pre++) {
        snprintf(p, sizeof p, "%s%s", *pre, HF.tok);
        ok = cp_st_find(st, p) != NULL;
    }
    for (const char *const *pre = OC_PREFIXES; *pre && !ok; pre++) {
        snprintf(p, sizeof p, "%s%s", *pre, OPENCLIP.tok);
        ok = cp_st_find(st, p) != NULL;
    }
    cp_st_close(st);
    return ok;
}

static int clip_load(const char *path, const cp_encoder_options *opt, cp_encoder_model **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) CP_FAIL(CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    char cfgpath[4096];
    int is_hf = 0;
    cp_st_set *st = NULL;
    if (S_ISDIR(sb.st_mode)) {
        snprintf(cfgpath, sizeof cfgpath, "%s/config.json", path);
        char alt[4096];
        snprintf(alt, sizeof alt, "%s/open_clip_model.safetensors", path);
        if (!exists(cfgpath) && exists(alt)) {
            CP_CHECK(cp_st_open(alt, &st)); /* an open_clip hub directory */
        } else {
            CP_CHECK(cp_st_open(path, &st));
            is_hf = 1;
        }
    } else {
        CP_CHECK(cp_st_open(path, &st));
        if (cp_st_find(st, "text_model.embeddings.token_embedding.weight") ||
            cp_st_find(st, "embeddings.token_embedding.weight")) {
            const char *slash = strrchr(path, '/');
            snprintf(cfgpath, sizeof cfgpath, "%.*s/config.json", slash ? (int)(slash - path) : 1, slash ? path : ".");
            is_hf = 1;
        }
    }
    const char *file = cp_st_count(st) > 0 ? cp_st_at(st, 0)->file : path;
    cp_encoder_desc d = {0};
    const cp_name_table *table = is_hf ? &HF : &OPENCLIP;
    const char *pre = cp_name_table_prefix(table, st);
    int rc = CP_OK;
    if (is_hf) {
        cp_json *root = NULL;
        rc = cp_json_parse_file(cfgpath, &root);
        if (rc == CP_ERR_IO) rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: no readable config.json beside the weights", path);
        if (rc == CP_OK) rc = read_hf_config(root, cfgpath, &d);
        cp_json_free(root);
        if (rc == CP_OK && !cp_st_find(st, "text_projection.weight")) d.proj_dim = 0;
        if (pre == NULL) pre = "";
    } else {
        if (pre == NULL) pre = "";
        rc = infer_openclip(st, pre, file, opt, &d);
    }
    if (rc == CP_OK && opt && opt->act >= 0) d.act = (cp_act)opt->act;
    if (rc == CP_OK) rc = cp_encoder_desc_check(&d, path);
    if (rc != CP_OK) {
        cp_st_close(st);
        return rc;
    }
    cp_encoder_model *m = NULL;
    CP_CHECK(cp_encoder_alloc(st, d.layers, &m));
    m->d = d;
    rc = cp_encoder_bind(m, table, pre, path);
    if (rc != CP_OK) {
        cp_encoder_free(m);
        return rc;
    }
    *out = m;
    return CP_OK;
}

const cp_encoder_family cp_encoder_family_clip = {"clip", clip_probe, clip_load};
