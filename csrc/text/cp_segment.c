/* cp_segment.c — language by script and the piecewise segmenter over cp_jieba / cp_mecab (see cp_segment.h). */
#include "text/cp_segment.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>

#include "text/cp_jieba.h"
#include "text/cp_mecab.h"

static const char *const LANG_NAMES[] = {"auto", "zh", "ja", "none"};

int cp_lang_parse(const char *name, cp_lang *out) {
    for (int k = 0; k < 4; k++)
        if (name && strcmp(name, LANG_NAMES[k]) == 0) {
            *out = (cp_lang)k;
            return CP_OK;
        }
    return cp_fail(CP_ERR_INVALID_ARG, "unknown segmentation language %s%.40s%s: use \"auto\", \"zh\", \"ja\" or \"none\"",
                   name ? "\"" : "", name ? name : "(null)", name ? "\"" : "");
}

const char *cp_lang_name(cp_lang lang) { return (unsigned)lang < 4 ? LANG_NAMES[lang] : "?"; }

/* Hiragana and katakana (not the katakana middle dot U+30FB or U+30A0, which Chinese text borrows too),
 * katakana phonetic extensions, halfwidth katakana. */
static inline int is_kana(uint32_t c) {
    return (c >= 0x3041 && c <= 0x309F) || (c >= 0x30A1 && c <= 0x30FA) || (c >= 0x30FC && c <= 0x30FF) ||
           (c >= 0x31F0 && c <= 0x31FF) || (c >= 0xFF66 && c <= 0xFF9F);
}

/* Han ideographs: unified (+ extension A, B..H), compatibility, and 々 〇 */
static inline int is_han_any(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0xF900 && c <= 0xFAFF) ||
           (c >= 0x20000 && c <= 0x323AF) || c == 0x3005 || c == 0x3007;
}

cp_lang cp_segment_detect(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    int han = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t c = cp_utf8_next(s, &i);
        if (is_kana(c)) return CP_LANG_JA;
        han |= is_han_any(c);
    }
    return han ? CP_LANG_ZH : CP_LANG_NONE;
}

/* Append the tokens of one segmenter over text[a, b), dropping whitespace tokens (jieba emits them). */
static int cut_range(const char *text, size_t a, size_t b, cp_lang lang, cp_spans *tmp, cp_spans *out) {
    tmp->n = 0;
    if (lang == CP_LANG_ZH) {
        cp_jieba *j;
        CP_CHECK(cp_jieba_default(&j));
        CP_CHECK(cp_jieba_cut(j, text + a, b - a, 1, tmp));
    } else {
        CP_CHECK(cp_mecab_cut(text + a, b - a, tmp));
    }
    for (size_t k = 0; k < tmp->n; k++) {
        const cp_span *t = &tmp->v[k];
        size_t i = t->start;
        uint32_t c0 = cp_utf8_next((const unsigned char *)text + a, &i);
        if (cp_is_py_space(c0)) continue; /* jieba's whitespace tokens: one \s char or "\r\n" */
        CP_CHECK(cp_spans_push(out, a + t->start, t->len));
    }
    return CP_OK;
}

/* Is the whitespace-free chunk text[a, b) one to segment (has Han or kana)? */
static int chunk_is_cjk(const unsigned char *s, size_t a, size_t b) {
    for (size_t i = a; i < b;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t c = cp_utf8_next(s, &i);
        if (is_kana(c) || is_han_any(c)) return 1;
    }
    return 0;
}

int cp_segment_text(const char *text, size_t len, cp_lang lang, cp_spans *out) {
    out->n = 0;
    size_t bad;
    if ((unsigned)lang > CP_LANG_NONE) return cp_fail(CP_ERR_INVALID_ARG, "unknown segmentation language %d", (int)lang);
    CP_CHECK(cp_utf8_validate(text, len, &bad));
    const unsigned char *s = (const unsigned char *)text;
    cp_lang use = lang == CP_LANG_AUTO ? cp_segment_detect(text, len) : lang;
    cp_spans seg = {0};
    int rc = CP_OK;
    /* the language's segmenter runs over the whole text (MeCab's lattice sees across spaces), whitespace tokens
     * dropped; an explicit language keeps all its tokens */
    if (use == CP_LANG_ZH || use == CP_LANG_JA) {
        cp_spans tmp = {0};
        rc = cut_range(text, 0, len, use, &tmp, lang == CP_LANG_AUTO ? &seg : out);
        cp_spans_free(&tmp);
    }
    if (rc == CP_OK && lang != CP_LANG_ZH && lang != CP_LANG_JA) {
        /* none / auto: whitespace-separated chunks; a chunk with Han or kana takes the segmenter's tokens that start
         * in it, any other chunk (Latin words, numbers, emoji) stays whole */
        size_t i = 0, k = 0;
        while (i < len && rc == CP_OK) {
            size_t j = i;
            uint32_t c = cp_utf8_next(s, &j);
            if (cp_is_py_space(c)) {
                i = j;
                continue;
            }
            size_t start = i;
            while (i < len) {
                j = i;
                if (cp_is_py_space(cp_utf8_next(s, &j))) break;
                i = j;
            }
            size_t end = i;
            while (k < seg.n && seg.v[k].start < start) k++;
            if (seg.n && chunk_is_cjk(s, start, end)) {
                for (; k < seg.n && seg.v[k].start < end && rc == CP_OK; k++) {
                    size_t tl = seg.v[k].len, te = seg.v[k].start + tl;
                    if (te > end) tl = end - seg.v[k].start; /* never leave the chunk */
                    rc = cp_spans_push(out, seg.v[k].start, tl);
                }
            } else {
                rc = cp_spans_push(out, start, end - start);
            }
        }
    }
    cp_spans_free(&seg);
    if (rc == CP_OK && out->n == 0) rc = cp_fail(CP_ERR_EMPTY, "segment: the text is empty or only whitespace");
    return rc;
}

int cp_segment_join(const char *text, size_t len, cp_lang lang, char **out, size_t *out_len) {
    *out = NULL, *out_len = 0;
    cp_spans sp = {0};
    int rc = cp_segment_text(text, len, lang, &sp);
    if (rc != CP_OK) {
        cp_spans_free(&sp);
        return rc;
    }
    size_t total = 0;
    for (size_t k = 0; k < sp.n; k++) total += sp.v[k].len + 1;
    char *buf = malloc(total + 1);
    if (!buf) {
        cp_spans_free(&sp);
        return cp_fail(CP_ERR_NOMEM, "out of memory");
    }
    size_t o = 0;
    for (size_t k = 0; k < sp.n; k++) {
        if (k) buf[o++] = ' ';
        memcpy(buf + o, text + sp.v[k].start, sp.v[k].len);
        o += sp.v[k].len;
    }
    buf[o] = '\0';
    cp_spans_free(&sp);
    *out = buf, *out_len = o;
    return CP_OK;
}

/* cp_segment_batch runs on plain pthreads pulling chunks of texts from an atomic counter: nobody spins at a barrier
 * (OpenMP's default active wait cost more than it saved on a busy machine). */
typedef struct {
    const char *const *texts;
    const size_t *lens;
    size_t n;
    cp_lang lang;
    cp_spans *outs;
    atomic_size_t next;
    cp_batch_errors errs;
} batch_job;

#define BATCH_CHUNK 16

static void *batch_worker(void *arg) {
    batch_job *b = arg;
    for (;;) {
        size_t i0 = atomic_fetch_add(&b->next, BATCH_CHUNK);
        if (i0 >= b->n) break;
        size_t i1 = i0 + BATCH_CHUNK < b->n ? i0 + BATCH_CHUNK : b->n;
        for (size_t i = i0; i < i1; i++) {
            int rc = cp_segment_text(b->texts[i], b->lens[i], b->lang, &b->outs[i]);
            if (rc != CP_OK) {
                char inner[900];
                snprintf(inner, sizeof inner, "%s", cp_last_error());
                cp_fail(rc, "text %zu: %s", i, inner);
                cp_batch_errors_note(&b->errs, i, rc);
            }
        }
    }
    return NULL;
}

int cp_segment_batch(const char *const *texts, const size_t *lens, size_t n, cp_lang lang, cp_spans *outs,
                     cp_batch_status *status) {
    cp_batch_status_clear(status);
    if (lang == CP_LANG_ZH) { /* load once up front: a missing dictionary fails once, not per text */
        cp_jieba *j;
        int rc = cp_jieba_default(&j);
        if (rc != CP_OK) {
            if (status) status->index = CP_BATCH_NO_INDEX, status->code = rc;
            return rc;
        }
    }
    batch_job b = {.texts = texts, .lens = lens, .n = n, .lang = lang, .outs = outs};
    atomic_init(&b.next, 0);
    cp_batch_errors_init(&b.errs);
    size_t nthreads = (size_t)cp_get_num_threads();
    if (nthreads > n / (4 * BATCH_CHUNK)) nthreads = n / (4 * BATCH_CHUNK); /* at least 4 chunks a thread */
    if (nthreads > 64) nthreads = 64;
    pthread_t tids[64];
    size_t started = 0;
    for (size_t t = 1; t < nthreads; t++) /* the calling thread is worker 0 */
        if (pthread_create(&tids[started], NULL, batch_worker, &b) == 0) started++;
    batch_worker(&b);
    for (size_t t = 0; t < started; t++) pthread_join(tids[t], NULL);
    return cp_batch_errors_finish(&b.errs, status);
}
