// needs: cp_json.c cp_safetensors.c cp_weights.c cp_encoder.c cp_arch_clip.c cp_arch_bert.c cp_runner_cpu.c
/* fuzz_model — the model-file readers: cp_json_parse, cp_st_open (safetensors), and the engine's loaders (the CLIP and
 * BERT families, by name and by auto-detection) with
 * either a fuzzed config.json next to valid tiny weights or fuzzed weights next to a valid tiny config; a model
 * that loads is run once (so every shape it accepted is one its forward pass can use).
 * Input: byte 0 = mode, the rest = the file. Environment: CP_FUZZ_CLIP_DIR, CP_FUZZ_MINILM_DIR (tiny valid models:
 * config.json + model.safetensors, written by tests/fuzz/seeds.py). */
#include <math.h>

#include "base/cp_json.h"
#include "model/cp_encoder.h"
#include "model/cp_runner_cpu.h"
#include "model/cp_safetensors.h"
#include "fuzz_common.h"

static const char *clip_dir, *minilm_dir;
static char *clip_cfg, *clip_st, *minilm_cfg, *minilm_st;
static size_t clip_cfg_n, clip_st_n, minilm_cfg_n, minilm_st_n;

static char *read_file(const char *dir, const char *name, size_t *n) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) fuzz_die("cannot read %s", p);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    if (fread(b, 1, (size_t)len, f) != (size_t)len) fuzz_die("short read %s", p);
    fclose(f);
    *n = (size_t)len;
    return b;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    clip_dir = fuzz_env("CP_FUZZ_CLIP_DIR");
    minilm_dir = fuzz_env("CP_FUZZ_MINILM_DIR");
    clip_cfg = read_file(clip_dir, "config.json", &clip_cfg_n);
    clip_st = read_file(clip_dir, "model.safetensors", &clip_st_n);
    minilm_cfg = read_file(minilm_dir, "config.json", &minilm_cfg_n);
    minilm_st = read_file(minilm_dir, "model.safetensors", &minilm_st_n);
    return 0;
}

static void walk(const cp_json *j, int depth) {
    if (depth > CP_JSON_MAX_DEPTH + 1) fuzz_die("json deeper than CP_JSON_MAX_DEPTH");
    if (j->type == CP_JSON_STRING && (j->string == NULL || j->string[j->length] != '\0')) fuzz_die("json string");
    if (j->type == CP_JSON_ARRAY || j->type == CP_JSON_OBJECT) {
        for (size_t k = 0; k < j->count; k++) {
            if (j->type == CP_JSON_OBJECT && j->keys[k] == NULL) fuzz_die("json key NULL");
            walk(&j->items[k], depth + 1);
        }
    }
    if (j->type == CP_JSON_NUMBER && !isfinite(j->number)) fuzz_die("json number not finite");
}

/* A model that loaded runs once: pooled output (with a mask for bidirectional towers) and hidden states. */
static void run_model(cp_encoder_model *m) {
    cp_runner_cpu *r = NULL;
    int rc = cp_runner_cpu_create(m, &r);
    fuzz_check_status(rc, "cp_runner_cpu_create");
    if (rc != CP_OK) return;
    const int64_t L = m->d.max_len < 8 ? m->d.max_len : 8, V = m->d.vocab, B = 2, W = m->d.width;
    int32_t *ids = calloc((size_t)(B * L), sizeof(int32_t)), *mask = calloc((size_t)(B * L), sizeof(int32_t));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L && t < 3 + b; t++) ids[b * L + t] = (int32_t)((t * 7 + 1) % V), mask[b * L + t] = 1;
    const int64_t D = cp_encoder_out_dim(&m->d);
    float *out = calloc((size_t)(B * D), sizeof(float)), *hid = calloc((size_t)(B * L * W), sizeof(float));
    rc = cp_runner_cpu_encode(r, ids, m->d.causal ? NULL : mask, B, L, 1, out);
    fuzz_check_status(rc, "cp_runner_cpu_encode");
    rc = cp_runner_cpu_hidden_states(r, ids, m->d.causal ? NULL : mask, B, L, -2, 1, hid);
    fuzz_check_status(rc, "cp_runner_cpu_hidden_states");
    free(out);
    free(hid);
    free(ids);
    free(mask);
    cp_runner_cpu_free(r);
}

static void load_and_run(const char *path, const char *family, const char *what) {
    cp_encoder_options opt = {family, -1, 0};
    cp_encoder_model *m = NULL;
    int rc = cp_encoder_load(path, &opt, &m);
    fuzz_check_status(rc, what);
    if (rc == CP_OK) {
        run_model(m);
        cp_encoder_free(m);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned mode = data[0] % 7;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    char path[600], tmp[600];
    int rc;
    switch (mode) {
    case 0: {
        char *s = fuzz_dup(p, n);
        cp_json *root = NULL;
        rc = cp_json_parse(s, n, "fuzz", &root);
        fuzz_check_status(rc, "cp_json_parse");
        if (rc == CP_OK) {
            walk(root, 0);
            int64_t v;
            double d;
            const char *str;
            fuzz_check_status(cp_json_get_int(root, "hidden_size", 7, &v), "get_int");
            fuzz_check_status(cp_json_get_number(root, "layer_norm_eps", 1.0, &d), "get_number");
            fuzz_check_status(cp_json_get_string(root, "hidden_act", &str), "get_string");
        }
        cp_json_free(root);
        free(s);
        break;
    }
    case 1: {
        fuzz_write("t.safetensors", p, n, path, sizeof path);
        cp_st_set *st = NULL;
        rc = cp_st_open(path, &st);
        fuzz_check_status(rc, "cp_st_open");
        if (rc == CP_OK) {
            for (size_t k = 0; k < cp_st_count(st); k++) {
                const cp_st_tensor *t = cp_st_at(st, k);
                if (cp_st_find(st, t->name) == NULL) fuzz_die("tensor %zu not found by name", k);
                if (t->numel < 0 || t->numel > (1 << 20)) continue;
                float *dst = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
                int rc2 = cp_st_to_f32(t, dst);
                fuzz_check_status(rc2, "cp_st_to_f32");
                free(dst);
            }
            cp_st_close(st);
        }
        break;
    }
    case 2: case 3: case 4: {
        /* CLIP: 2 fuzzed config + tiny weights; 3 tiny config + fuzzed weights; 4 a fuzzed open_clip-layout file */
        if (mode == 4) {
            fuzz_write("oc/open_clip_model.safetensors", p, n, path, sizeof path);
        } else {
            fuzz_write("clip/config.json", mode == 2 ? (const void *)p : clip_cfg, mode == 2 ? n : clip_cfg_n, tmp,
                       sizeof tmp);
            fuzz_write("clip/model.safetensors", mode == 3 ? (const void *)p : clip_st, mode == 3 ? n : clip_st_n,
                       tmp, sizeof tmp);
            snprintf(path, sizeof path, "%s/clip", fuzz_dir());
        }
        load_and_run(path, "clip", "cp_encoder_load(clip)");
        load_and_run(path, "auto", "cp_encoder_load(auto)");
        break;
    }
    default: {
        /* BERT: 5 fuzzed config + tiny weights; 6 tiny config + fuzzed weights */
        fuzz_write("mini/config.json", mode == 5 ? (const void *)p : minilm_cfg, mode == 5 ? n : minilm_cfg_n, tmp,
                   sizeof tmp);
        fuzz_write("mini/model.safetensors", mode == 6 ? (const void *)p : minilm_st, mode == 6 ? n : minilm_st_n, tmp,
                   sizeof tmp);
        snprintf(path, sizeof path, "%s/mini", fuzz_dir());
        load_and_run(path, "bert", "cp_encoder_load(bert)");
        load_and_run(path, "auto", "cp_encoder_load(auto)");
        break;
    }
    }
    return 0;
}
