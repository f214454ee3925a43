/* cp_wordpiece.c — BERT BasicTokenizer + greedy WordPiece (see cp_wordpiece.h) over utf8proc.
 *
 * Work happens on code-point arrays in a per-thread workspace (grown, never freed per token): a = cleaned segment,
 * b = its NFC, c = one lowercased word, d = its NFD, key = UTF-8 of a word piece with room for a "##" prefix.
 */
#include "text/cp_wordpiece.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "base/cp_common.h"
#include "base/cp_strmap.h"
#include "base/cp_utf8.h"
#include "text/cp_textutil.h"
#include "text/cp_tokenizer_tables.h"

#define CP_WP_MAX_WORD_CHARS 100

static const char *const cp_wp_specials[5] = {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"};

struct cp_wordpiece {
    int lowercase;
    int32_t n;          /* vocabulary size (lines)                        */
    char *pool;         /* token strings, NUL-terminated                  */
    uint32_t *off;      /* (n + 1) offsets into pool                      */
    cp_strmap *vocab;   /* token string -> id (later duplicates win)      */
    size_t max_bytes;   /* longest token in bytes: bounds the greedy scan */
    int32_t special_id[5]; /* ids of cp_wp_specials (unk when absent)     */
    int32_t cls, sep, pad, unk;
};

int32_t cp_wordpiece_vocab_size(const cp_wordpiece *t) { return t->n; }

void cp_wordpiece_special_ids(const cp_wordpiece *t, int32_t *cls, int32_t *sep, int32_t *pad, int32_t *unk) {
    if (cls) *cls = t->cls;
    if (sep) *sep = t->sep;
    if (pad) *pad = t->pad;
    if (unk) *unk = t->unk;
}

const char *cp_wordpiece_id_to_token(const cp_wordpiece *t, int32_t id) {
    return id >= 0 && id < t->n ? t->pool + t->off[id] : NULL;
}

static inline int32_t cp_wp_find(const cp_wordpiece *t, const char *s, size_t n) {
    int64_t id;
    return cp_strmap_get(t->vocab, s, n, &id) ? (int32_t)id : -1;
}

void cp_wordpiece_free(cp_wordpiece *t) {
    if (!t) return;
    free(t->pool), free(t->off);
    cp_strmap_free(t->vocab);
    free(t);
}

int cp_wordpiece_create(const char *vocab, size_t n, int lowercase, cp_wordpiece **out) {
    *out = NULL;
    size_t bad;
    if (cp_utf8_validate(vocab, n, &bad) != CP_OK)
        CP_FAIL(CP_ERR_TOKENIZER, "vocabulary is not valid UTF-8 (byte offset %zu)", bad);
    /* lines as Python's universal newlines see them: \n, \r\n and \r end a line */
    size_t lines = 0;
    for (size_t i = 0; i < n; i++)
        if (vocab[i] == '\n' || (vocab[i] == '\r' && (i + 1 >= n || vocab[i + 1] != '\n'))) lines++;
    if (n > 0 && vocab[n - 1] != '\n' && vocab[n - 1] != '\r') lines++;
    if (lines == 0 || lines > INT32_MAX / 2) CP_FAIL(CP_ERR_TOKENIZER, "vocabulary is empty");
    cp_wordpiece *t = calloc(1, sizeof *t);
    if (!t) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    t->lowercase = lowercase;
    t->pool = malloc(n + lines + 1);
    t->off = malloc(sizeof(uint32_t) * (lines + 1));
    if (!t->pool || !t->off || cp_strmap_create(&t->vocab, CP_STRMAP_BYTES, lines) != CP_OK) {
        cp_wordpiece_free(t);
        CP_FAIL(CP_ERR_NOMEM, "out of memory for a vocabulary of %zu tokens", lines);
    }
    size_t pl = 0, id = 0, i = 0;
    while (i < n && id < lines) {
        size_t e = i;
        while (e < n && vocab[e] != '\n' && vocab[e] != '\r') e++;
        t->off[id] = (uint32_t)pl;
        memcpy(t->pool + pl, vocab + i, e - i), pl += e - i;
        t->pool[pl++] = '\0';
        if (e - i > t->max_bytes) t->max_bytes = e - i;
        id++;
        if (e < n && vocab[e] == '\r' && e + 1 < n && vocab[e + 1] == '\n') e++;
        i = e + 1;
    }
    t->n = (int32_t)id;
    t->off[id] = (uint32_t)pl;
    for (int32_t k = 0; k < t->n; k++) { /* later duplicates win, like load_vocab's dict */
        int rc = cp_strmap_put(t->vocab, t->pool + t->off[k], t->off[k + 1] - t->off[k] - 1, k);
        if (rc != CP_OK) {
            cp_wordpiece_free(t);
            return rc;
        }
    }
    int32_t ids[5];
    for (int k = 0; k < 5; k++) ids[k] = cp_wp_find(t, cp_wp_specials[k], strlen(cp_wp_specials[k]));
    t->cls = ids[0], t->sep = ids[1], t->pad = ids[2] >= 0 ? ids[2] : 0, t->unk = ids[4];
    if (t->cls < 0 || t->sep < 0 || t->unk < 0) {
        cp_wordpiece_free(t);
        CP_FAIL(CP_ERR_TOKENIZER, "vocabulary has no %s token: not a BERT vocab.txt",
                ids[0] < 0 ? "[CLS]" : ids[1] < 0 ? "[SEP]" : "[UNK]");
    }
    for (int k = 0; k < 5; k++) t->special_id[k] = ids[k] >= 0 ? ids[k] : t->unk;
    *out = t;
    return CP_OK;
}

/* ---- character classes (Python's unicodedata semantics) -------------------------------------------------- */

static inline int cp_wp_cat(uint32_t c) { return (int)utf8proc_category((utf8proc_int32_t)c); }

static inline int cp_wp_is_control(uint32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    if (c < 128) return c < 32 || c == 127;
    int k = cp_wp_cat(c);
    return k == UTF8PROC_CATEGORY_CN || k >= UTF8PROC_CATEGORY_CC;
}

static inline int cp_wp_is_whitespace(uint32_t c) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return 1;
    return c >= 128 && cp_wp_cat(c) == UTF8PROC_CATEGORY_ZS;
}

static inline int cp_wp_is_punct(uint32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return 1;
    if (c < 128) return 0;
    int k = cp_wp_cat(c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

static inline int cp_wp_is_cjk(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* str.split()'s whitespace */
static inline int cp_wp_py_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 28 && c <= 32) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* 'I' case-ignorable, 'C' cased, 0 neither — for str.lower()'s Final_Sigma rule */
static inline int cp_wp_sigma_class(uint32_t c) {
    size_t lo = 0, hi = sizeof cp_sigma_context / sizeof cp_sigma_context[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < cp_sigma_context[mid].lo)
            hi = mid;
        else if (c > cp_sigma_context[mid].hi)
            lo = mid + 1;
        else
            return cp_sigma_context[mid].cls;
    }
    return 0;
}

/* ---- workspace ------------------------------------------------------------------------------------------- */

typedef struct {
    int32_t *a, *b, *c, *d; /* code points, (cap) each              */
    size_t cap;
    char *key; /* UTF-8 scratch, (key_cap)                               */
    size_t key_cap;
    uint32_t *coff; /* (CP_WP_MAX_WORD_CHARS + 1) byte offsets of chars */
    int32_t *ids;   /* output, (ids_cap)                                 */
    size_t ids_cap, n_ids;
} cp_wp_ws;

static void cp_wp_ws_free(cp_wp_ws *w) {
    free(w->a), free(w->b), free(w->c), free(w->d), free(w->key), free(w->coff), free(w->ids);
    memset(w, 0, sizeof *w);
}

/* room for m code points in a/b/c/d (+1 for utf8proc_reencode's NUL) and 4m+8 bytes of key */
static int cp_wp_ws_reserve(cp_wp_ws *w, size_t m) {
    if (m + 2 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < m + 2) cap *= 2;
        int32_t **arr[4] = {&w->a, &w->b, &w->c, &w->d};
        for (int i = 0; i < 4; i++) {
            int32_t *p = realloc(*arr[i], sizeof(int32_t) * cap);
            if (!p) CP_FAIL(CP_ERR_NOMEM, "out of memory");
            *arr[i] = p;
        }
        w->cap = cap;
    }
    if (4 * m + 8 > w->key_cap) {
        size_t cap = 4 * m + 8 < 1024 ? 1024 : 4 * m + 8;
        char *p = realloc(w->key, cap);
        if (!p) CP_FAIL(CP_ERR_NOMEM, "out of memory");
        w->key = p, w->key_cap = cap;
    }
    if (!w->coff && !(w->coff = malloc(sizeof(uint32_t) * (CP_WP_MAX_WORD_CHARS + 2))))
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    return CP_OK;
}

static int cp_wp_push(cp_wp_ws *w, int32_t id) {
    if (w->n_ids == w->ids_cap) {
        size_t cap = w->ids_cap ? 2 * w->ids_cap : 256;
        int32_t *p = realloc(w->ids, sizeof(int32_t) * cap);
        if (!p) CP_FAIL(CP_ERR_NOMEM, "out of memory");
        w->ids = p, w->ids_cap = cap;
    }
    w->ids[w->n_ids++] = id;
    return CP_OK;
}

static size_t cp_wp_encode_cps(const int32_t *cps, size_t n, char *dst) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += cp_utf8_put((unsigned char *)dst + k, (uint32_t)cps[i]);
    return k;
}

/* ---- WordPiece ------------------------------------------------------------------------------------------- */

/* greedy longest-match-first over one word (code points), appending ids */
static int cp_wp_wordpiece(const cp_wordpiece *t, const int32_t *w, size_t m, cp_wp_ws *ws) {
    if (m == 0) return CP_OK;
    if (m > CP_WP_MAX_WORD_CHARS) return cp_wp_push(ws, t->unk);
    /* key = "##" slot + UTF-8 bytes of the word; char i starts at key + 2 + coff[i] */
    char *buf = ws->key;
    uint32_t *coff = ws->coff;
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        coff[i] = (uint32_t)k;
        k += cp_utf8_put((unsigned char *)buf + 2 + k, (uint32_t)w[i]);
    }
    coff[m] = (uint32_t)k;
    size_t mark = ws->n_ids, start = 0;
    while (start < m) {
        char *key;
        size_t prefix;
        if (start == 0) {
            key = buf + 2, prefix = 0;
        } else {
            key = buf + coff[start]; /* overwrite the bytes of already-consumed characters with "##" */
            key[0] = '#', key[1] = '#', prefix = 2;
        }
        size_t end = m;
        while (end > start && prefix + coff[end] - coff[start] > t->max_bytes) end--;
        int32_t found = -1;
        for (; end > start; end--) {
            found = cp_wp_find(t, key, prefix + coff[end] - coff[start]);
            if (found >= 0) break;
        }
        if (found < 0) {
            ws->n_ids = mark; /* the whole word is [UNK] */
            return cp_wp_push(ws, t->unk);
        }
        CP_CHECK(cp_wp_push(ws, found));
        start = end;
    }
    return CP_OK;
}

/* ---- BasicTokenizer on one segment (no special tokens inside) -------------------------------------------- */

/* Python str.lower() of w[0:m) into out (at most 2m code points) */
static size_t cp_wp_lower(const int32_t *w, size_t m, int32_t *out) {
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        int32_t c = w[i];
        if (c < 128) {
            out[k++] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        } else if (c == 0x130) {
            out[k++] = 'i', out[k++] = 0x307;
        } else if (c == 0x3A3) {
            /* Final_Sigma: cased (+ ignorable*) before, and no (ignorable*) + cased after */
            size_t j = i;
            int cls = 0;
            while (j > 0 && (cls = cp_wp_sigma_class((uint32_t)w[j - 1])) == 'I') j--;
            int final = j > 0 && cls == 'C';
            if (final) {
                size_t q = i + 1;
                while (q < m && (cls = cp_wp_sigma_class((uint32_t)w[q])) == 'I') q++;
                final = q == m || cls != 'C';
            }
            out[k++] = final ? 0x3C2 : 0x3C3;
        } else {
            out[k++] = utf8proc_tolower(c);
        }
    }
    return k;
}

static int cp_wp_is_special_word(const int32_t *w, size_t m) {
    for (int s = 0; s < 5; s++) {
        const char *p = cp_wp_specials[s];
        size_t l = strlen(p);
        if (l != m) continue;
        size_t i = 0;
        while (i < m && w[i] == (uint8_t)p[i]) i++;
        if (i == m) return 1;
    }
    return 0;
}

static int cp_wp_segment(const cp_wordpiece *t, const char *s, size_t n, cp_wp_ws *ws) {
    CP_CHECK(cp_wp_ws_reserve(ws, 3 * n + 4));
    /* 1. clean + CJK spacing -> a */
    int32_t *a = ws->a;
    size_t na = 0, i = 0;
    int ascii = 1;
    while (i < n) {
        int32_t c = (int32_t)cp_utf8_next((const unsigned char *)s, &i); /* validated by cp_wp_encode_ws */
        if (c == 0 || c == 0xFFFD || cp_wp_is_control((uint32_t)c)) continue;
        if (cp_wp_is_whitespace((uint32_t)c)) {
            a[na++] = ' ';
        } else if (c >= 0x3400 && cp_wp_is_cjk((uint32_t)c)) {
            a[na++] = ' ', a[na++] = c, a[na++] = ' ', ascii = 0;
        } else {
            if (c >= 128) ascii = 0;
            a[na++] = c;
        }
    }
    /* 2. NFC -> b */
    int32_t *b = a;
    size_t nb = na;
    if (!ascii) {
        size_t u8 = cp_wp_encode_cps(a, na, ws->key);
        utf8proc_ssize_t r = utf8proc_decompose((const utf8proc_uint8_t *)ws->key, (utf8proc_ssize_t)u8, ws->b,
                                                (utf8proc_ssize_t)ws->cap - 1, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (r < 0) CP_FAIL(CP_ERR_TOKENIZER, "NFC failed: %s", utf8proc_errmsg(r));
        if ((size_t)r > ws->cap - 1) {
            CP_CHECK(cp_wp_ws_reserve(ws, (size_t)r + 4));
            u8 = cp_wp_encode_cps(ws->a, na, ws->key);
            r = utf8proc_decompose((const utf8proc_uint8_t *)ws->key, (utf8proc_ssize_t)u8, ws->b,
                                   (utf8proc_ssize_t)ws->cap - 1, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (r < 0) CP_FAIL(CP_ERR_TOKENIZER, "NFC failed: %s", utf8proc_errmsg(r));
        }
        r = utf8proc_normalize_utf32(ws->b, r, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (r < 0) CP_FAIL(CP_ERR_TOKENIZER, "NFC failed: %s", utf8proc_errmsg(r));
        b = ws->b, nb = (size_t)r;
        /* the words below need 2x (lowercase) and NFD room */
        CP_CHECK(cp_wp_ws_reserve(ws, 4 * nb + 4));
        b = ws->b;
    }
    /* 3. words */
    size_t p = 0;
    while (p < nb) {
        while (p < nb && cp_wp_py_space((uint32_t)b[p])) p++;
        if (p >= nb) break;
        size_t q = p;
        int wascii = 1;
        while (q < nb && !cp_wp_py_space((uint32_t)b[q])) wascii &= b[q] < 128, q++;
        const int32_t *w = b + p;
        size_t m = q - p;
        p = q;
        if (cp_wp_is_special_word(w, m)) {
            CP_CHECK(cp_wp_wordpiece(t, w, m, ws));
            continue;
        }
        if (t->lowercase) {
            if (wascii) {
                int32_t *c = ws->c;
                for (size_t k = 0; k < m; k++) c[k] = (w[k] >= 'A' && w[k] <= 'Z') ? w[k] + 32 : w[k];
                w = c;
            } else {
                /* need room: 2m for lower, NFD up to ~4x; key holds UTF-8 of the lowered word */
                int in_b = b == ws->b;
                CP_CHECK(cp_wp_ws_reserve(ws, 8 * m + 8));
                b = in_b ? ws->b : ws->a, w = b + (q - m);
                size_t nl = cp_wp_lower(w, m, ws->c);
                size_t u8 = cp_wp_encode_cps(ws->c, nl, ws->key);
                utf8proc_ssize_t r = utf8proc_decompose((const utf8proc_uint8_t *)ws->key, (utf8proc_ssize_t)u8,
                                                        ws->d, (utf8proc_ssize_t)ws->cap - 1,
                                                        UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
                if (r < 0 || (size_t)r > ws->cap - 1) CP_FAIL(CP_ERR_TOKENIZER, "NFD failed on a word");
                size_t nd = 0;
                for (utf8proc_ssize_t k = 0; k < r; k++)
                    if (cp_wp_cat((uint32_t)ws->d[k]) != UTF8PROC_CATEGORY_MN) ws->d[nd++] = ws->d[k];
                w = ws->d, m = nd;
            }
        }
        /* split off punctuation */
        size_t st = 0;
        for (size_t k = 0; k < m; k++) {
            if (cp_wp_is_punct((uint32_t)w[k])) {
                CP_CHECK(cp_wp_wordpiece(t, w + st, k - st, ws));
                CP_CHECK(cp_wp_wordpiece(t, w + k, 1, ws));
                st = k + 1;
            }
        }
        CP_CHECK(cp_wp_wordpiece(t, w + st, m - st, ws));
    }
    return CP_OK;
}

/* one prompt -> ws->ids (no [CLS]/[SEP]) */
static int cp_wp_encode_ws(const cp_wordpiece *t, const char *s, size_t n, cp_wp_ws *ws) {
    ws->n_ids = 0;
    size_t bad;
    CP_CHECK(cp_utf8_validate(s, n, &bad));
    size_t seg = 0, i = 0;
    while (i < n) {
        int hit = -1;
        if (s[i] == '[')
            for (int k = 0; k < 5; k++) {
                size_t l = strlen(cp_wp_specials[k]);
                if (i + l <= n && memcmp(s + i, cp_wp_specials[k], l) == 0) {
                    hit = k;
                    break;
                }
            }
        if (hit < 0) {
            i++;
            continue;
        }
        if (i > seg) CP_CHECK(cp_wp_segment(t, s + seg, i - seg, ws));
        CP_CHECK(cp_wp_push(ws, t->special_id[hit]));
        i += strlen(cp_wp_specials[hit]);
        seg = i;
    }
    if (n > seg) CP_CHECK(cp_wp_segment(t, s + seg, n - seg, ws));
    if (ws->n_ids == 0) CP_FAIL(CP_ERR_EMPTY, "the prompt has no tokens after BERT's cleaning");
    return CP_OK;
}

int cp_wordpiece_encode(const cp_wordpiece *t, const char *s, size_t n, int32_t **ids, size_t *n_ids) {
    *ids = NULL, *n_ids = 0;
    cp_wp_ws ws = {0};
    int rc = cp_wp_encode_ws(t, s, n, &ws);
    if (rc == CP_OK) *ids = ws.ids, *n_ids = ws.n_ids, ws.ids = NULL;
    cp_wp_ws_free(&ws);
    return rc;
}

/* One row of a batch; a failure is noted in errs with a message naming the prompt (index and prefix). */
static int cp_wp_row(const cp_wordpiece *t, size_t index, const char *s, size_t n, size_t L, cp_wp_ws *ws,
                     int32_t *row, int32_t *len, cp_batch_errors *errs) {
    int rc = cp_wp_encode_ws(t, s, n, ws);
    if (rc != CP_OK) {
        cp_batch_errors_note(errs, index, cp_prompt_fail(rc, index, s, n));
        return rc;
    }
    size_t keep = ws->n_ids < L - 2 ? ws->n_ids : L - 2;
    row[0] = t->cls;
    memcpy(row + 1, ws->ids, sizeof(int32_t) * keep);
    row[keep + 1] = t->sep;
    for (size_t k = keep + 2; k < L; k++) row[k] = t->pad;
    *len = (int32_t)(keep + 2);
    return CP_OK;
}

int cp_wordpiece_encode_batch(const cp_wordpiece *t, const char *const *texts, const size_t *lens, size_t n,
                              size_t max_length, int32_t *out, int32_t *lengths, cp_batch_status *status) {
    cp_batch_status_clear(status);
    if (max_length < 2)
        return cp_batch_fail(status, CP_BATCH_NO_INDEX, CP_ERR_INVALID_ARG,
                             "max_length must be at least 2 ([CLS] and [SEP]), got %zu", max_length);
    cp_batch_errors errs;
    cp_batch_errors_init(&errs);
    int nt = cp_get_num_threads();
    if ((size_t)nt > n / 8 + 1) nt = (int)(n / 8 + 1);
    if (nt <= 1) {
        cp_wp_ws ws = {0};
        for (size_t i = 0; i < n; i++)
            if (cp_wp_row(t, i, texts[i], lens[i], max_length, &ws, out + i * max_length, &lengths[i], &errs) != CP_OK)
                break;
        cp_wp_ws_free(&ws);
    } else {
#pragma omp parallel num_threads(nt)
        {
            cp_wp_ws ws = {0};
#pragma omp for schedule(dynamic, 16)
            for (size_t i = 0; i < n; i++)
                cp_wp_row(t, i, texts[i], lens[i], max_length, &ws, out + i * max_length, &lengths[i], &errs);
            cp_wp_ws_free(&ws);
        }
    }
    return cp_batch_errors_finish(&errs, status);
}
