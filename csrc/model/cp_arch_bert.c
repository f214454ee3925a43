/* cp_arch_bert.c — BERT-family sentence encoders as encoder descriptions: BERT (all-MiniLM-L6-v2 and other
 * BertModel checkpoints, sentence-transformers directories) and RoBERTa / XLM-R (position ids offset by the padding
 * index, as fairseq and HF's create_position_ids_from_input_ids do).
 *
 * BERT: word + position + token-type-0 embeddings, LayerNorm, post-LN blocks, bidirectional attention over the
 * attention mask, then mean pooling (or CLS when the sentence-transformers pooling config says so).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/cp_common.h"
#include "base/cp_json.h"
#include "model/cp_encoder.h"

static const char *const BERT_PREFIXES[] = {"", "bert.", "roberta.", "model.", NULL};

#define BERT_NAMES                                                                                                   \
    .prefixes = BERT_PREFIXES, .tok = "embeddings.word_embeddings.weight",                                            \
    .pos = "embeddings.position_embeddings.weight", .type = "embeddings.token_type_embeddings.weight",                \
    .emb_ln_g = "embeddings.LayerNorm.weight", .emb_ln_b = "embeddings.LayerNorm.bias",                               \
    .q_w = "encoder.layer.%lld.attention.self.query.weight", .q_b = "encoder.layer.%lld.attention.self.query.bias",   \
    .k_w = "encoder.layer.%lld.attention.self.key.weight", .k_b = "encoder.layer.%lld.attention.self.key.bias",       \
    .v_w = "encoder.layer.%lld.attention.self.value.weight", .v_b = "encoder.layer.%lld.attention.self.value.bias",   \
    .o_w = "encoder.layer.%lld.attention.output.dense.weight", .o_b = "encoder.layer.%lld.attention.output.dense.bias", \
    .ln1_g = "encoder.layer.%lld.attention.output.LayerNorm.weight",                                                  \
    .ln1_b = "encoder.layer.%lld.attention.output.LayerNorm.bias",                                                    \
    .fc1_w = "encoder.layer.%lld.intermediate.dense.weight", .fc1_b = "encoder.layer.%lld.intermediate.dense.bias",   \
    .fc2_w = "encoder.layer.%lld.output.dense.weight", .fc2_b = "encoder.layer.%lld.output.dense.bias",               \
    .ln2_g = "encoder.layer.%lld.output.LayerNorm.weight", .ln2_b = "encoder.layer.%lld.output.LayerNorm.bias"

static const cp_name_table BERT = {.layout = "hf-bert", BERT_NAMES};
static const cp_name_table ROBERTA = {.layout = "hf-roberta", BERT_NAMES};

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* model_type -> 0 (BERT), 1 (RoBERTa / XLM-R), -1 (not this family). */
static int kind_of(const char *mt) {
    if (mt == NULL || strcmp(mt, "bert") == 0) return 0;
    if (strcmp(mt, "roberta") == 0 || strcmp(mt, "xlm-roberta") == 0 || strcmp(mt, "camembert") == 0) return 1;
    return -1;
}

static int bert_probe(const char *path) {
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", path);
    cp_json *root = NULL;
    if (cp_json_parse_file(p, &root) != CP_OK) return 0;
    const char *mt = NULL;
    int ok = cp_json_get_string(root, "model_type", &mt) == CP_OK && mt && kind_of(mt) >= 0;
    cp_json_free(root);
    return ok;
}

/* sentence-transformers files beside the weights: max_seq_length, and the pooling mode (1_Pooling/config.json). */
static int read_st_configs(const char *dir, cp_encoder_desc *d) {
    char path[4096];
    snprintf(path, sizeof path, "%s/sentence_bert_config.json", dir);
    if (exists(path)) {
        cp_json *root = NULL;
        CP_CHECK(cp_json_parse_file(path, &root));
        int64_t msl = 0;
        int rc = cp_json_get_int(root, "max_seq_length", d->max_len, &msl);
        cp_json_free(root);
        CP_CHECK(rc);
        if (msl <= 0 || msl > d->max_len)
            CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: max_seq_length %lld outside 1..%lld", path, (long long)msl,
                    (long long)d->max_len);
        d->max_len = msl;
    }
    snprintf(path, sizeof path, "%s/1_Pooling/config.json", dir);
    if (exists(path)) {
        cp_json *root = NULL;
        CP_CHECK(cp_json_parse_file(path, &root));
        const cp_json *cls = cp_json_get(root, "pooling_mode_cls_token");
        const cp_json *mean = cp_json_get(root, "pooling_mode_mean_tokens");
        int is_cls = cls && cls->type == CP_JSON_BOOL && cls->boolean;
        int is_mean = mean && mean->type == CP_JSON_BOOL && mean->boolean;
        cp_json_free(root);
        if (is_cls && is_mean)
            CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: CLS and mean pooling together are not supported", path);
        if (is_cls) d->pool = CP_POOL_CLS;
    }
    return CP_OK;
}

static int bert_load(const char *dir, const cp_encoder_options *opt, cp_encoder_model **out) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cp_json *root = NULL;
    int rc = cp_json_parse_file(path, &root);
    if (rc == CP_ERR_IO) {
        if (!exists(dir)) CP_FAIL(CP_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: no readable config.json", dir);
    }
    CP_CHECK(rc);
    cp_encoder_desc d = {0};
    const char *mt = NULL, *act = NULL, *pet = NULL;
    double eps = 1e-12;
    int kind = 0;
    d.family = "bert";
    d.pre_ln = 0, d.causal = 0, d.emb_ln = 1, d.final_ln = 0, d.pool = CP_POOL_MEAN, d.proj_dim = 0;
    if (rc == CP_OK) rc = cp_json_get_string(root, "model_type", &mt);
    if (rc == CP_OK && (kind = kind_of(mt)) < 0)
        rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: model_type \"%.40s\" is not supported (bert, roberta, xlm-roberta)",
                     path, mt);
    if (rc == CP_OK) rc = cp_json_get_int(root, "vocab_size", 30522, &d.vocab);
    if (rc == CP_OK) rc = cp_json_get_int(root, "hidden_size", 768, &d.width);
    if (rc == CP_OK) rc = cp_json_get_int(root, "num_attention_heads", 12, &d.heads);
    if (rc == CP_OK) rc = cp_json_get_int(root, "num_hidden_layers", 12, &d.layers);
    if (rc == CP_OK) rc = cp_json_get_int(root, "intermediate_size", 3072, &d.ffn);
    if (rc == CP_OK) rc = cp_json_get_int(root, "max_position_embeddings", 512, &d.max_pos);
    if (rc == CP_OK) rc = cp_json_get_int(root, "type_vocab_size", 2, &d.type_vocab);
    if (rc == CP_OK) rc = cp_json_get_int(root, "pad_token_id", kind ? 1 : 0, &d.pad_id);
    if (rc == CP_OK) rc = cp_json_get_number(root, "layer_norm_eps", 1e-12, &eps);
    if (rc == CP_OK) rc = cp_json_get_string(root, "hidden_act", &act);
    if (rc == CP_OK) rc = cp_json_get_string(root, "position_embedding_type", &pet);
    if (rc == CP_OK && pet && strcmp(pet, "absolute") != 0)
        rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: position_embedding_type \"%.40s\" is not supported (absolute)", path, pet);
    if (rc == CP_OK) rc = cp_act_parse(act ? act : "gelu", &d.act);
    cp_json_free(root);
    CP_CHECK(rc);
    if (opt && opt->act >= 0) d.act = (cp_act)opt->act;
    if (opt && opt->heads > 0) d.heads = opt->heads;
    d.ln_eps = (float)eps;
    if (kind == 1) {
        d.family = "xlmr";
        d.pos = CP_POS_PADDED;
        d.max_len = d.max_pos - d.pad_id - 1;
    } else {
        d.pos = CP_POS_ABSOLUTE;
        d.max_len = d.max_pos;
    }
    if (d.max_len > CP_ATTN_MAX_LEN) d.max_len = CP_ATTN_MAX_LEN;
    CP_CHECK(cp_encoder_desc_check(&d, path));
    CP_CHECK(read_st_configs(dir, &d));
    cp_st_set *st = NULL;
    CP_CHECK(cp_st_open(dir, &st));
    const cp_name_table *table = kind ? &ROBERTA : &BERT;
    const char *pre = cp_name_table_prefix(table, st);
    cp_encoder_model *m = NULL;
    CP_CHECK(cp_encoder_alloc(st, d.layers, &m));
    m->d = d;
    rc = cp_encoder_bind(m, table, pre ? pre : "", dir);
    if (rc != CP_OK) {
        cp_encoder_free(m);
        return rc;
    }
    *out = m;
    return CP_OK;
}

const cp_encoder_family cp_encoder_family_bert = {"bert", bert_probe, bert_load};
