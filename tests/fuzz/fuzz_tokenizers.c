// needs: cp_bpe.c cp_wordpiece.c
/* fuzz_tokenizers — CLIP BPE (cp_bpe) and BERT WordPiece (cp_wordpiece) over the real vocabularies, and both
 * built from fuzzed vocabulary text.
 * Input: byte 0 = mode, byte 1 = a size parameter, the rest = text / ids / vocabulary.
 * Invariants: documented statuses only; ids inside the vocabulary; batch rows = SOT ids.. EOT / [CLS] .. [SEP] with
 * the padding the contract gives; decode(encode(x)) succeeds. Environment: CP_FUZZ_BPE (decompressed
 * bpe_simple_vocab_16e6.txt), CP_FUZZ_VOCAB (a BERT vocab.txt). */
#include "text/cp_bpe.h"
#include "text/cp_wordpiece.h"
#include "fuzz_common.h"

static cp_bpe *g_bpe;
static cp_wordpiece *g_wp_lower, *g_wp_cased;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    size_t n;
    char *merges = fuzz_read_env_file("CP_FUZZ_BPE", &n);
    if (cp_bpe_create(merges, n, 256, &g_bpe) != CP_OK) fuzz_die("cp_bpe_create: %s", cp_last_error());
    free(merges);
    char *vocab = fuzz_read_env_file("CP_FUZZ_VOCAB", &n);
    if (cp_wordpiece_create(vocab, n, 1, &g_wp_lower) != CP_OK) fuzz_die("wordpiece: %s", cp_last_error());
    if (cp_wordpiece_create(vocab, n, 0, &g_wp_cased) != CP_OK) fuzz_die("wordpiece: %s", cp_last_error());
    free(vocab);
    return 0;
}

static void bpe_text(const cp_bpe *t, const char *s, size_t n, unsigned param) {
    int32_t V = cp_bpe_vocab_size(t);
    int32_t *ids = NULL;
    size_t nid = 0;
    int rc = cp_bpe_encode(t, s, n, &ids, &nid);
    fuzz_check_status(rc, "cp_bpe_encode");
    if (rc == CP_OK) {
        for (size_t k = 0; k < nid; k++)
            if (ids[k] < 0 || ids[k] >= V) fuzz_die("bpe id %d outside [0,%d)", ids[k], V);
        char *dec = NULL;
        size_t dl = 0;
        rc = cp_bpe_decode(t, ids, nid, &dec, &dl);
        if (rc != CP_OK) fuzz_die("decode of encode failed: %s", cp_last_error());
        size_t bad;
        if (cp_utf8_validate(dec, dl, &bad) != CP_OK) fuzz_die("decode produced invalid UTF-8");
        free(dec);
    }
    /* batch: the text and its first half, ctx from the parameter */
    size_t ctx = 2 + param % 80;
    const char *texts[2] = {s, s};
    size_t lens[2] = {n, n / 2};
    int32_t *out = calloc(2 * ctx, sizeof(int32_t));
    int32_t lengths[2] = {0, 0}, full[2] = {0, 0};
    cp_batch_status st;
    int rb = cp_bpe_encode_batch(t, texts, lens, 2, ctx, (param >> 7) == 0, out, lengths, full, &st);
    fuzz_check_status(rb, "cp_bpe_encode_batch");
    if (st.code != rb || (rb == CP_OK ? st.index != CP_BATCH_NO_INDEX : st.index > 1))
        fuzz_die("bpe batch status {%zu, %d} for %d", st.index, st.code, rb);
    if (rb == CP_OK) {
        if (rc != CP_OK) fuzz_die("batch succeeded where single failed");
        if ((size_t)full[0] != nid + 2) fuzz_die("full length %d != %zu + 2", full[0], nid);
        for (int r = 0; r < 2; r++) {
            const int32_t *row = out + r * ctx;
            if (lengths[r] < 2 || (size_t)lengths[r] > ctx) fuzz_die("row length %d", lengths[r]);
            if (row[0] != cp_bpe_sot(t) || row[lengths[r] - 1] != cp_bpe_eot(t)) fuzz_die("row without SOT/EOT");
            for (size_t k = (size_t)lengths[r]; k < ctx; k++)
                if (row[k] != 0) fuzz_die("padding not zero");
        }
        for (size_t k = 1; k + 1 < (size_t)lengths[0]; k++)
            if (out[k] != ids[k - 1]) fuzz_die("batch row 0 != encode at %zu", k);
    }
    free(out);
    free(ids);
    size_t *spans = NULL, cnt = 0;
    rc = cp_bpe_pretokenize(s, n, &spans, &cnt);
    fuzz_check_status(rc, "cp_bpe_pretokenize");
    if (rc == CP_OK)
        for (size_t k = 0; k < cnt; k++)
            if (spans[2 * k] > spans[2 * k + 1] || spans[2 * k + 1] > n) fuzz_die("pretokenize span outside");
    free(spans);
}

static void wp_text(const cp_wordpiece *t, const char *s, size_t n, unsigned param) {
    int32_t V = cp_wordpiece_vocab_size(t), cls, sep, pad, unk;
    cp_wordpiece_special_ids(t, &cls, &sep, &pad, &unk);
    int32_t *ids = NULL;
    size_t nid = 0;
    int rc = cp_wordpiece_encode(t, s, n, &ids, &nid);
    fuzz_check_status(rc, "cp_wordpiece_encode");
    if (rc == CP_OK)
        for (size_t k = 0; k < nid; k++) {
            if (ids[k] < 0 || ids[k] >= V) fuzz_die("wordpiece id %d outside [0,%d)", ids[k], V);
            if (!cp_wordpiece_id_to_token(t, ids[k])) fuzz_die("id without token");
        }
    size_t L = 2 + param % 64;
    const char *texts[2] = {s, s};
    size_t lens[2] = {n, n / 2};
    int32_t *out = calloc(2 * L, sizeof(int32_t));
    int32_t lengths[2] = {0, 0};
    cp_batch_status st;
    int rb = cp_wordpiece_encode_batch(t, texts, lens, 2, L, out, lengths, &st);
    fuzz_check_status(rb, "cp_wordpiece_encode_batch");
    if (st.code != rb || (rb == CP_OK ? st.index != CP_BATCH_NO_INDEX : st.index > 1))
        fuzz_die("wordpiece batch status {%zu, %d} for %d", st.index, st.code, rb);
    if (rb != CP_OK && rc != CP_OK && st.index != 0) fuzz_die("the first prompt failed alone, not in the batch");
    if (rb == CP_OK && rc == CP_OK) {
        for (int r = 0; r < 2; r++) {
            const int32_t *row = out + r * L;
            if (lengths[r] < 2 || (size_t)lengths[r] > L) fuzz_die("row length %d", lengths[r]);
            if (row[0] != cls || row[lengths[r] - 1] != sep) fuzz_die("row without CLS/SEP");
            for (size_t k = (size_t)lengths[r]; k < L; k++)
                if (row[k] != pad) fuzz_die("padding not [PAD]");
        }
        size_t m = nid < L - 2 ? nid : L - 2;
        for (size_t k = 0; k < m; k++)
            if (out[1 + k] != ids[k]) fuzz_die("batch row 0 != encode at %zu", k);
    }
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    unsigned mode = data[0] % 6, param = data[1];
    size_t n = size - 2;
    char *s = fuzz_dup(data + 2, n);
    switch (mode) {
    case 0: bpe_text(g_bpe, s, n, param); break;
    case 1: {
        /* decode arbitrary ids (some out of range) */
        size_t nid = n / 4;
        int32_t *ids = malloc((nid ? nid : 1) * sizeof(int32_t));
        for (size_t k = 0; k < nid; k++) {
            uint32_t v;
            memcpy(&v, s + 4 * k, 4);
            ids[k] = (param & 1) ? (int32_t)v : (int32_t)(v % 49500u);
        }
        char *dec = NULL;
        size_t dl = 0;
        int rc = cp_bpe_decode(g_bpe, ids, nid, &dec, &dl);
        fuzz_check_status(rc, "cp_bpe_decode");
        if (rc == CP_OK) {
            size_t bad;
            if (cp_utf8_validate(dec, dl, &bad) != CP_OK) fuzz_die("decode produced invalid UTF-8");
        }
        free(dec);
        free(ids);
        break;
    }
    case 2: wp_text(g_wp_lower, s, n, param); break;
    case 3: wp_text(g_wp_cased, s, n, param); break;
    case 4: {
        /* a merges file from the input */
        cp_bpe *t = NULL;
        int rc = cp_bpe_create(s, n, param & 1 ? 16 : 0, &t);
        fuzz_check_status(rc, "cp_bpe_create");
        if (rc == CP_OK) {
            static const char probe[] = "a photo of a cat, <|endoftext|> 猫 éé 123";
            bpe_text(t, probe, sizeof probe - 1, param);
            bpe_text(t, s, n < 256 ? n : 256, param);
            cp_bpe_free(t);
        }
        break;
    }
    default: {
        /* a vocab.txt from the input */
        cp_wordpiece *t = NULL;
        int rc = cp_wordpiece_create(s, n, param & 1, &t);
        fuzz_check_status(rc, "cp_wordpiece_create");
        if (rc == CP_OK) {
            static const char probe[] = "A photo of a [MASK] cat, ÉCOLE 猫 123 unaffable";
            wp_text(t, probe, sizeof probe - 1, param);
            wp_text(t, s, n < 256 ? n : 256, param);
            cp_wordpiece_free(t);
        }
        break;
    }
    }
    free(s);
    return 0;
}
