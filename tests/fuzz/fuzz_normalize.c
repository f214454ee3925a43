// needs: cp_normalize.c
/* fuzz_normalize — cp_normalize under every option combination, cp_clip_clean, and the batch forms.
 * Input: byte 0 = option bits, byte 1 = more bits, the rest = text (any bytes: invalid UTF-8 must be rejected).
 * Invariants: only documented statuses; output valid UTF-8, NUL-terminated at out_len; batch == single with the
 * batch status naming the failing text; cp_utf8_replace_invalid gives valid UTF-8 (the input itself when valid). */
#include "text/cp_normalize.h"
#include "fuzz_common.h"

static void check_out(const char *out, size_t len, const char *what) {
    if (out == NULL) fuzz_die("%s: CP_OK with NULL output", what);
    if (out[len] != '\0') fuzz_die("%s: output not NUL-terminated at out_len", what);
    size_t bad;
    if (cp_utf8_validate(out, len, &bad) != CP_OK) fuzz_die("%s: output is invalid UTF-8 at %zu", what, bad);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    unsigned b0 = data[0], b1 = data[1];
    char *text = fuzz_dup(data + 2, size - 2);
    size_t n = size - 2;

    cp_normalize_opts o;
    cp_normalize_opts_default(&o);
    o.form = (int)(b0 % 3);
    o.lowercase = (b0 >> 2) & 1;
    o.fullwidth = (b0 >> 3) & 1;
    o.html_unescape = (int)((b0 >> 4) & 3);
    o.ftfy = (b0 >> 6) & 1;
    o.collapse_ws = (b0 >> 7) & 1;
    o.script_spaces = b1 & 1;
    o.empty_is_error = (b1 >> 1) & 1;

    /* the one UTF-8 decoder: replacement decoding always gives valid UTF-8, and the input itself when it is valid */
    unsigned char *rep = (unsigned char *)malloc(3 * n + 1);
    size_t rep_len = cp_utf8_replace_invalid((const unsigned char *)text, n, rep), bad_at;
    if (cp_utf8_validate((const char *)rep, rep_len, &bad_at) != CP_OK) fuzz_die("replacement decoding is invalid UTF-8");
    if (cp_utf8_validate(text, n, &bad_at) == CP_OK && (rep_len != n || memcmp(rep, text, n) != 0))
        fuzz_die("replacement decoding changed valid UTF-8");
    cp_clear_error();
    free(rep);

    char *out = NULL;
    size_t out_len = 0;
    int rc = cp_normalize(text, n, &o, &out, &out_len);
    fuzz_check_status(rc, "cp_normalize");
    if (rc == CP_OK) check_out(out, out_len, "cp_normalize");

    char *clean = NULL;
    size_t clean_len = 0;
    int rc2 = cp_clip_clean(text, n, &clean, &clean_len);
    fuzz_check_status(rc2, "cp_clip_clean");
    if (rc2 == CP_OK) check_out(clean, clean_len, "cp_clip_clean");

    if (b1 & 4) {
        /* batch of two: the text and its first half; results must equal the single calls */
        const char *texts[2] = {text, text};
        size_t lens[2] = {n, n / 2};
        char *outs[2] = {NULL, NULL};
        size_t olens[2] = {0, 0};
        cp_batch_status st;
        int rb = cp_normalize_batch(texts, lens, 2, &o, outs, olens, &st);
        fuzz_check_status(rb, "cp_normalize_batch");
        if (st.code != rb) fuzz_die("batch status code %d != returned %d", st.code, rb);
        if (rb == CP_OK ? st.index != CP_BATCH_NO_INDEX : st.index > 1) fuzz_die("batch status index %zu", st.index);
        if (rb != CP_OK && rc != CP_OK && st.index != 0) fuzz_die("the first text failed alone, not first in the batch");
        if (rb == CP_OK) {
            if (rc != CP_OK) fuzz_die("batch succeeded where single failed");
            if (olens[0] != out_len || memcmp(outs[0], out, out_len) != 0) fuzz_die("batch != single");
            free(outs[0]);
            free(outs[1]);
        } else if (outs[0] || outs[1]) {
            fuzz_die("failed batch left outputs allocated");
        }
    }
    free(out);
    free(clean);
    free(text);
    return 0;
}
