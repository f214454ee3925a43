// needs: cp_sentencepiece.c cp_q4.c
/* fuzz_sentencepiece — SentencePiece tokenization (cp_sp) over a real model and a byte-fallback model, models built
 * from fuzzed and mutated .model bytes, and the e5 weight-file reader (cp_e5file) over fuzzed files.
 * Input: byte 0 = mode, byte 1 = a parameter, the rest = text / model bytes / file bytes.
 * Invariants: documented statuses only; ids inside the vocabulary; encode of the normalised text's pieces
 * concatenate back to the normalised text when no unknown/byte piece is involved; batch rows = [BOS] ids [EOS]
 * then padding; a file the e5 reader accepts has every tensor inside the file and a tokenizer cp_sp accepts or
 * rejects with a status. Environment: CP_FUZZ_SP_MODEL (USE's sp.model), CP_FUZZ_SP_SMALL (a trained byte-fallback
 * model with user-defined symbols). */
#include "model/cp_q4.h"
#include "text/cp_sentencepiece.h"
#include "fuzz_common.h"

static cp_sp *g_big, *g_small;
static char *g_small_bytes;
static size_t g_small_len;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    size_t n;
    char *m = fuzz_read_env_file("CP_FUZZ_SP_MODEL", &n);
    if (cp_sp_create_model(m, n, &g_big) != CP_OK) fuzz_die("sp model: %s", cp_last_error());
    free(m);
    g_small_bytes = fuzz_read_env_file("CP_FUZZ_SP_SMALL", &g_small_len);
    if (cp_sp_create_model(g_small_bytes, g_small_len, &g_small) != CP_OK) fuzz_die("small model: %s", cp_last_error());
    return 0;
}

static void check_text(const cp_sp *t, const char *s, size_t n, unsigned param) {
    int32_t V = cp_sp_vocab_size(t), unk, bos, eos, pad;
    cp_sp_special_ids(t, &unk, &bos, &eos, &pad);
    int32_t *ids = NULL;
    size_t nid = 0;
    int rc = cp_sp_encode(t, s, n, &ids, &nid);
    fuzz_check_status(rc, "cp_sp_encode");
    if (rc != CP_OK) return;
    char *norm = NULL;
    size_t nl = 0;
    if (cp_sp_normalize(t, s, n, &norm, &nl) != CP_OK) fuzz_die("normalize failed after encode succeeded");
    /* pieces concatenate to the normalised text unless an unknown (merged) or byte piece is involved */
    int plain = 1;
    size_t pos = 0;
    for (size_t k = 0; k < nid; k++) {
        if (ids[k] < 0 || ids[k] >= V) fuzz_die("id %d outside [0,%d)", ids[k], V);
        int ty = cp_sp_piece_type(t, ids[k]);
        if (ty == CP_SP_CONTROL) fuzz_die("a control piece in encode output");
        if (ty == CP_SP_UNKNOWN || ty == CP_SP_BYTE) plain = 0;
        size_t pl;
        const char *p = cp_sp_id_to_piece(t, ids[k], &pl);
        if (plain) {
            if (pos + pl > nl || memcmp(norm + pos, p, pl) != 0) fuzz_die("pieces do not spell the normalised text");
            pos += pl;
        }
    }
    if (plain && pos != nl) fuzz_die("pieces cover %zu of %zu normalised bytes", pos, nl);
    if ((nid == 0) != (nl == 0)) fuzz_die("no ids for non-empty normalised text or the reverse");
    /* batch: the text and its first half */
    size_t L = 3 + param % 40;
    const char *texts[2] = {s, s};
    size_t lens[2] = {n, n / 2};
    int32_t *out = calloc(2 * L, sizeof(int32_t)), lengths[2] = {0, 0};
    cp_batch_status bst;
    int rb = cp_sp_encode_batch(t, texts, lens, 2, L, out, lengths, &bst);
    fuzz_check_status(rb, "cp_sp_encode_batch");
    if (rb == CP_OK) {
        const int32_t *row = out;
        size_t k = 0;
        if (bos >= 0 && row[k++] != bos) fuzz_die("row without BOS");
        size_t keep = (size_t)lengths[0] - (bos >= 0) - (eos >= 0);
        if (keep > nid || (keep && memcmp(row + k, ids, keep * sizeof(int32_t)) != 0)) fuzz_die("row ids differ from encode");
        if (eos >= 0 && row[lengths[0] - 1] != eos) fuzz_die("row without EOS");
        for (size_t j = (size_t)lengths[0]; j < L; j++)
            if (row[j] != (pad >= 0 ? pad : 0)) fuzz_die("bad padding");
    }
    free(out);
    free(norm);
    free(ids);
}

static void check_model(const char *data, size_t n) {
    cp_sp *t = NULL;
    int rc = cp_sp_create_model(data, n, &t);
    fuzz_check_status(rc, "cp_sp_create_model");
    if (rc != CP_OK) return;
    static const char *probe[] = {"a photo of a cat", "  Ｆｕｌｌ　width ", "猫の写真 🐱", "\x01\xff\xfe bad"};
    for (int i = 0; i < 4; i++) check_text(t, probe[i], strlen(probe[i]), (unsigned)i);
    cp_sp_free(t);
}

static void check_e5(const uint8_t *data, size_t n) {
    char path[512];
    fuzz_write("e5.bin", data, n, path, sizeof path);
    cp_e5file *f = NULL;
    int rc = cp_e5file_open(path, &f);
    fuzz_check_status(rc, "cp_e5file_open");
    if (rc != CP_OK) return;
    for (size_t i = 0; i < cp_e5file_count(f); i++) {
        const cp_e5_tensor *te = cp_e5file_at(f, i);
        volatile uint8_t sink = 0;
        if (te->nbytes) sink ^= ((const uint8_t *)te->data)[te->nbytes - 1]; /* inside the mapping (ASan/SEGV) */
        (void)sink;
    }
    const cp_e5_vocab *v = cp_e5file_vocab(f);
    cp_sp_table tb = {v->n_pieces, v->blob, v->offsets, v->scores, NULL, v->unk, v->bos, v->eos, v->pad,
                      v->n_rules, v->rule_cp, v->rule_off, v->rule_out};
    cp_sp *t = NULL;
    rc = cp_sp_create_table(&tb, &t);
    fuzz_check_status(rc, "cp_sp_create_table");
    if (rc == CP_OK) {
        check_text(t, "query: a photo of 猫", 22, 7);
        cp_sp_free(t);
    }
    cp_e5file_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    unsigned mode = data[0] % 5, param = data[1];
    const char *s = (const char *)data + 2;
    size_t n = size - 2;
    switch (mode) {
    case 0: check_text(g_big, s, n, param); break;
    case 1: check_text(g_small, s, n, param); break;
    case 2: check_model(s, n); break;
    case 3: { /* the small model with fuzz bytes written over it at an offset */
        char *m = malloc(g_small_len);
        memcpy(m, g_small_bytes, g_small_len);
        size_t at = ((size_t)param * 2654435761u) % g_small_len, k = n < g_small_len - at ? n : g_small_len - at;
        memcpy(m + at, s, k);
        check_model(m, g_small_len);
        free(m);
        break;
    }
    default: check_e5((const uint8_t *)s, n); break;
    }
    return 0;
}
