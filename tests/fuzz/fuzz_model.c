// needs: cp_json.c cp_safetensors.c cp_weights.c cp_clip.c cp_clip_cpu.c cp_minilm.c
/* fuzz_model — the model-file readers: cp_json_parse, cp_st_open (safetensors), and the CLIP / MiniLM loaders with
 * either a fuzzed config.json next to valid tiny weights or fuzzed weights next to a valid tiny config; a model
 * that loads is run once (so every shape it accepted is one its forward pass can use).
 * Input: byte 0 = mode, the rest = the file. Environment: CP_FUZZ_CLIP_DIR, CP_FUZZ_MINILM_DIR (tiny valid models:
 * config.json + model.safetensors, written by tests/fuzz/seeds.py). */
#include <math.h>

#include "model/cp_clip.h"
#include "base/cp_json.h"
#include "model/cp_minilm.h"
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

static void run_clip(cp_clip_model *m) {
    cp_clip_cpu *r = NULL;
    int rc = cp_clip_cpu_create(m, &r);
    fuzz_check_status(rc, "cp_clip_cpu_create");
    if (rc != CP_OK) return;
    int64_t L = m->cfg.context, V = m->cfg.vocab_size, B = 2;
    int32_t *ids = calloc((size_t)(B * L), sizeof(int32_t));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L && t < 4 + b; t++) ids[b * L + t] = (int32_t)((t * 7 + 1) % V);
    int64_t D = m->cfg.proj_dim > 0 ? m->cfg.proj_dim : m->cfg.width;
    float *out = calloc((size_t)(B * D), sizeof(float));
    rc = cp_clip_cpu_encode(r, ids, B, L, 1, out);
    fuzz_check_status(rc, "cp_clip_cpu_encode");
    free(out);
    free(ids);
    cp_clip_cpu_free(r);
}

static void run_minilm(cp_minilm_model *m) {
    cp_minilm_cpu *r = NULL;
    int rc = cp_minilm_cpu_create(m, &r);
    fuzz_check_status(rc, "cp_minilm_cpu_create");
    if (rc != CP_OK) return;
    int64_t L = m->cfg.max_seq_length < 8 ? m->cfg.max_seq_length : 8, V = m->cfg.vocab_size, B = 2;
    int32_t *ids = calloc((size_t)(B * L), sizeof(int32_t)), *mask = calloc((size_t)(B * L), sizeof(int32_t));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L && t < 3 + b; t++) ids[b * L + t] = (int32_t)((t * 5 + 2) % V), mask[b * L + t] = 1;
    float *out = calloc((size_t)(B * m->cfg.width), sizeof(float));
    rc = cp_minilm_cpu_encode(r, ids, mask, B, L, 1, out);
    fuzz_check_status(rc, "cp_minilm_cpu_encode");
    free(out);
    free(ids);
    free(mask);
    cp_minilm_cpu_free(r);
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
        cp_clip_model *m = NULL;
        if (mode == 4) {
            fuzz_write("oc/open_clip_model.safetensors", p, n, path, sizeof path);
        } else {
            fuzz_write("clip/config.json", mode == 2 ? (const void *)p : clip_cfg, mode == 2 ? n : clip_cfg_n, tmp,
                       sizeof tmp);
            fuzz_write("clip/model.safetensors", mode == 3 ? (const void *)p : clip_st, mode == 3 ? n : clip_st_n,
                       tmp, sizeof tmp);
            snprintf(path, sizeof path, "%s/clip", fuzz_dir());
        }
        rc = cp_clip_model_load(path, NULL, &m);
        fuzz_check_status(rc, "cp_clip_model_load");
        if (rc == CP_OK) {
            run_clip(m);
            cp_clip_model_free(m);
        }
        break;
    }
    default: {
        /* MiniLM: 5 fuzzed config + tiny weights; 6 tiny config + fuzzed weights */
        fuzz_write("mini/config.json", mode == 5 ? (const void *)p : minilm_cfg, mode == 5 ? n : minilm_cfg_n, tmp,
                   sizeof tmp);
        fuzz_write("mini/model.safetensors", mode == 6 ? (const void *)p : minilm_st, mode == 6 ? n : minilm_st_n, tmp,
                   sizeof tmp);
        snprintf(path, sizeof path, "%s/mini", fuzz_dir());
        cp_minilm_model *m = NULL;
        rc = cp_minilm_model_load(path, &m);
        fuzz_check_status(rc, "cp_minilm_model_load");
        if (rc == CP_OK) {
            run_minilm(m);
            cp_minilm_model_free(m);
        }
        break;
    }
    }
    return 0;
}
