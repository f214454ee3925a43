// needs: cp_segment.c cp_jieba.c cp_mecab.c
/* fuzz_segment — cp_segment_text / cp_segment_join (auto, zh, ja, none) over the bundled jieba data and MeCab, and
 * jieba user dictionaries (cp_jieba_load_userdict_text, cp_jieba_add_word) on a private small segmenter.
 * Input: byte 0 = mode, the rest = text / user dictionary.
 * Invariants: documented statuses only; spans increasing, inside the text, on UTF-8 boundaries, non-empty;
 * join == the spans joined by single spaces. Environment: CP_FUZZ_JIEBA_DIR (dict.txt + hmm_model.txt). */
#include "text/cp_jieba.h"
#include "text/cp_mecab.h"
#include "text/cp_segment.h"
#include "fuzz_common.h"

static char small_dict[512], hmm_path[512];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *dir = fuzz_env("CP_FUZZ_JIEBA_DIR");
    if (cp_jieba_set_data_dir(dir) != CP_OK) fuzz_die("cp_jieba_set_data_dir: %s", cp_last_error());
    /* a small dictionary (first 3000 entries) for the user-dictionary mode: cheap to build once per input */
    char p[600];
    snprintf(p, sizeof p, "%s/dict.txt", dir);
    FILE *f = fopen(p, "rb");
    if (!f) fuzz_die("cannot read %s", p);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap), line[4096];
    for (int k = 0; k < 3000 && fgets(line, sizeof line, f); k++) {
        size_t l = strlen(line);
        if (n + l + 1 > cap) buf = realloc(buf, cap *= 2);
        memcpy(buf + n, line, l), n += l;
    }
    fclose(f);
    fuzz_write("small_dict.txt", buf, n, small_dict, sizeof small_dict);
    free(buf);
    snprintf(hmm_path, sizeof hmm_path, "%s/hmm_model.txt", dir);
    return 0;
}

static void check_spans(const char *text, size_t n, const cp_spans *s, const char *what) {
    size_t prev_end = 0;
    for (size_t k = 0; k < s->n; k++) {
        size_t a = s->v[k].start, l = s->v[k].len;
        if (l == 0) fuzz_die("%s: empty token %zu", what, k);
        if (a < prev_end || a > n || l > n - a) fuzz_die("%s: token %zu [%zu,+%zu) outside/overlapping", what, k, a, l);
        if ((a < n && ((unsigned char)text[a] & 0xC0) == 0x80) ||
            (a + l < n && ((unsigned char)text[a + l] & 0xC0) == 0x80))
            fuzz_die("%s: token %zu not on a UTF-8 boundary", what, k);
        prev_end = a + l;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned mode = data[0];
    size_t n = size - 1;
    char *text = fuzz_dup(data + 1, n);
    unsigned kind = mode % 8;
    if (kind < 4) {
        /* 0 auto, 1 zh, 2 ja, 3 none */
        cp_lang lang = kind == 0 ? CP_LANG_AUTO : kind == 1 ? CP_LANG_ZH : kind == 2 ? CP_LANG_JA : CP_LANG_NONE;
        cp_spans s = {0};
        int rc = cp_segment_text(text, n, lang, &s);
        fuzz_check_status(rc, "cp_segment_text");
        if (rc == CP_OK) {
            check_spans(text, n, &s, "cp_segment_text");
            char *j = NULL;
            size_t jl = 0;
            int rj = cp_segment_join(text, n, lang, &j, &jl);
            if (rj != CP_OK) fuzz_die("join failed (%d: %s) where segment succeeded", rj, cp_last_error());
            size_t pos = 0;
            for (size_t k = 0; k < s.n; k++) {
                if (k) {
                    if (pos >= jl || j[pos] != ' ') fuzz_die("join: missing separator");
                    pos++;
                }
                if (pos + s.v[k].len > jl || memcmp(j + pos, text + s.v[k].start, s.v[k].len) != 0)
                    fuzz_die("join != spans at token %zu", k);
                pos += s.v[k].len;
            }
            if (pos != jl || j[jl] != '\0') fuzz_die("join: length %zu != %zu", jl, pos);
            free(j);
        }
        cp_spans_free(&s);
    } else if (kind < 6) {
        /* jieba directly, HMM on/off (text must be valid UTF-8: the caller validates) */
        size_t bad;
        if (cp_utf8_validate(text, n, &bad) == CP_OK) {
            cp_jieba *j = NULL;
            int rc = cp_jieba_default(&j);
            if (rc != CP_OK) fuzz_die("cp_jieba_default: %s", cp_last_error());
            cp_spans s = {0};
            rc = cp_jieba_cut(j, text, n, kind == 4, &s);
            fuzz_check_status(rc, "cp_jieba_cut");
            if (rc == CP_OK) {
                check_spans(text, n, &s, "cp_jieba_cut");
                size_t covered = 0; /* jieba keeps every character, whitespace included */
                for (size_t k = 0; k < s.n; k++) covered += s.v[k].len;
                if (covered != n) fuzz_die("cp_jieba_cut: tokens cover %zu of %zu bytes", covered, n);
            }
            cp_spans_free(&s);
        } else {
            cp_clear_error();
        }
    } else {
        /* a user dictionary on a private segmenter, then a cut of the same bytes */
        cp_jieba *j = NULL;
        int rc = cp_jieba_create(&j, small_dict, hmm_path);
        if (rc != CP_OK) fuzz_die("cp_jieba_create: %s", cp_last_error());
        if (kind == 6) {
            rc = cp_jieba_load_userdict_text(j, text, n, "fuzz");
            fuzz_check_status(rc, "cp_jieba_load_userdict_text");
        } else {
            /* add_word(first half, freq from byte) */
            size_t bad;
            if (cp_utf8_validate(text, n / 2, &bad) == CP_OK) {
                int64_t used = 0;
                rc = cp_jieba_add_word(j, text, n / 2, (mode & 0x80) ? -1 : (int64_t)(mode >> 3), &used);
                fuzz_check_status(rc, "cp_jieba_add_word");
            } else {
                cp_clear_error();
            }
        }
        size_t bad;
        if (cp_utf8_validate(text, n, &bad) == CP_OK) {
            cp_spans s = {0};
            rc = cp_jieba_cut(j, text, n, 1, &s);
            fuzz_check_status(rc, "cp_jieba_cut(user)");
            if (rc == CP_OK) check_spans(text, n, &s, "cp_jieba_cut(user)");
            cp_spans_free(&s);
        } else {
            cp_clear_error();
        }
        cp_jieba_free(j);
    }
    free(text);
    return 0;
}
