/* cp_jieba.c — jieba's accurate mode in C (see cp_jieba.h for the contract).
 *
 * Mapping to jieba 0.42.1 (jieba/__init__.py, jieba/finalseg/__init__.py):
 *   gen_pfdict / add_word  -> dict_load / add_word_locked    (base/cp_strmap: word bytes -> entry)
 *   get_DAG + calc         -> route                          (DAG edges enumerated inline, DP right to left)
 *   __cut_DAG              -> cut_block_hmm                  (single-char runs buffered, then HMM or chars)
 *   __cut_DAG_NO_HMM       -> cut_block_no_hmm
 *   finalseg.cut / viterbi -> hmm_cut / viterbi_cut
 *   cut (re_han / re_skip) -> cut_locked
 * Floating point: the same binary64 operations in the same order as the Python code (no -ffast-math anywhere in
 * the build), log() from the same libm, ties broken as Python's max over (value, key) tuples.
 */
#define _GNU_SOURCE
#include "text/cp_jieba.h"

#include "base/cp_strmap.h"

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_FLOAT (-3.14e100) /* jieba.finalseg.MIN_FLOAT */
#define HAN_LO 0x4E00u        /* jieba's Han range: \u4E00-\u9FD5 */
#define HAN_HI 0x9FD5u
#define NHAN (HAN_HI - HAN_LO + 1)

enum { ST_B = 0, ST_M = 1, ST_E = 2, ST_S = 3 };
static const char ST_CHAR[4] = {'B', 'M', 'E', 'S'};
/* finalseg.PrevStatus, in its order: B <- 'ES', M <- 'MB', E <- 'BM', S <- 'SE' */
static const int PREV[4][2] = {{ST_E, ST_S}, {ST_M, ST_B}, {ST_B, ST_M}, {ST_S, ST_E}};

typedef struct {
    int64_t freq;    /* FREQ[key]; 0 for a prefix that is not a word */
    double logf;     /* log(freq or 1), what calc uses */
    int force_split; /* in finalseg.Force_Split_Words (added with freq 0; never removed, as in jieba) */
} entry;

struct cp_jieba {
    pthread_rwlock_t lock;
    cp_strmap *dict; /* UTF-8 bytes of a word or prefix -> its index in ent */
    entry *ent;
    size_t n_ent, cap_ent;
    int32_t *single; /* (0x10000) entry of each one-character key below U+10000, -1 if absent: the DAG's first step */
    int64_t total;
    size_t n_force;
    double start[4];    /* prob_start */
    double trans[4][4]; /* prob_trans, MIN_FLOAT where absent */
    double *emit;       /* (4, NHAN) prob_emit over U+4E00..U+9FD5, MIN_FLOAT where absent */
};

/* ---- small helpers ------------------------------------------------------------------------------------ */

static inline int is_ascii_alnum(uint32_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static inline int is_han(uint32_t c) { return c >= HAN_LO && c <= HAN_HI; }
/* re_han_default: [\u4E00-\u9FD5a-zA-Z0-9+#&\._%\-] */
static inline int is_block_char(uint32_t c) {
    return is_han(c) || is_ascii_alnum(c) || c == '+' || c == '#' || c == '&' || c == '.' || c == '_' || c == '%' ||
           c == '-';
}

static int read_whole_file(const char *path, char **buf, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return cp_fail(CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    if (!b) {
        fclose(f);
        return cp_fail(CP_ERR_NOMEM, "out of memory reading %s", path);
    }
    for (;;) {
        if (len == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b), fclose(f);
                return cp_fail(CP_ERR_NOMEM, "out of memory reading %s", path);
            }
            b = nb, cap *= 2;
        }
        size_t got = fread(b + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(b);
        return cp_fail(CP_ERR_IO, "error reading %s", path);
    }
    *buf = b, *n = len;
    return CP_OK;
}

/* Python bytes.strip(): ASCII space, \t, \n, \r, \v, \f */
static inline int is_bytes_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
static void strip_line(const char **s, size_t *n) {
    while (*n && is_bytes_space((*s)[0])) (*s)++, (*n)--;
    while (*n && is_bytes_space((*s)[*n - 1])) (*n)--;
}

/* Decode valid UTF-8 into code points (and optionally the byte offset of each, plus one past the end). */
static size_t decode(const char *text, size_t len, uint32_t *cps, size_t *offs) {
    size_t i = 0, n = 0;
    const unsigned char *s = (const unsigned char *)text;
    while (i < len) {
        if (offs) offs[n] = i;
        cps[n++] = cp_utf8_next(s, &i);
    }
    if (offs) offs[n] = len;
    return n;
}

/* ---- the prefix dictionary ---------------------------------------------------------------------------- */

/* The entry of word[0, n) (UTF-8), or -1. */
static inline int64_t dict_find(const cp_jieba *j, const char *word, size_t n) {
    int64_t e;
    return cp_strmap_get(j->dict, word, n, &e) ? e : -1;
}

/* Find word[0, n) or insert it with freq 0; *idx = its entry. */
static int dict_insert(cp_jieba *j, const char *word, size_t n, size_t *idx) {
    int64_t f = dict_find(j, word, n);
    if (f >= 0) {
        *idx = (size_t)f;
        return CP_OK;
    }
    if (j->n_ent >= (size_t)INT32_MAX) return cp_fail(CP_ERR_INVALID_ARG, "jieba: dictionary too large");
    if (j->n_ent == j->cap_ent) {
        size_t cap = j->cap_ent ? j->cap_ent * 2 : 1024;
        entry *ne = realloc(j->ent, cap * sizeof(entry));
        if (!ne) return cp_fail(CP_ERR_NOMEM, "jieba: out of memory");
        j->ent = ne, j->cap_ent = cap;
    }
    CP_CHECK(cp_strmap_put(j->dict, word, n, (int64_t)j->n_ent));
    j->ent[j->n_ent] = (entry){.freq = 0, .logf = 0.0, .force_split = 0};
    size_t one = 0;
    uint32_t c = cp_utf8_next((const unsigned char *)word, &one);
    if (one == n && c < 0x10000) j->single[c] = (int32_t)j->n_ent;
    *idx = j->n_ent++;
    return CP_OK;
}

/* FREQ[word] = freq, then every prefix (at code point boundaries) not yet present gets 0 (gen_pfdict / add_word).
 * word: valid UTF-8, n >= 1. */
static int set_word(cp_jieba *j, const char *word, size_t n, int64_t freq) {
    size_t idx;
    CP_CHECK(dict_insert(j, word, n, &idx));
    j->ent[idx].freq = freq;
    j->ent[idx].logf = log((double)(freq ? freq : 1));
    size_t i = 0;
    for (;;) {
        cp_utf8_next((const unsigned char *)word, &i);
        if (i >= n) return CP_OK;
        CP_CHECK(dict_insert(j, word, i, &idx));
    }
}

static int parse_freq(const char *s, size_t n, int64_t *out) {
    size_t i = 0;
    if (i < n && s[i] == '+') i++;
    if (i == n) return -1;
    int64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int dict_load(cp_jieba *j, const char *path) {
    char *buf;
    size_t n;
    CP_CHECK(read_whole_file(path, &buf, &n));
    int rc = CP_OK;
    size_t pos = 0, lineno = 0;
    while (rc == CP_OK && pos < n) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', n - pos);
        size_t ll = nl ? (size_t)(nl - line) : n - pos;
        pos += ll + (nl ? 1 : 0);
        lineno++;
        strip_line(&line, &ll);
        if (ll == 0) continue; /* jieba raises here; blank lines are harmless, so they are skipped */
        size_t bad;
        if (cp_utf8_validate(line, ll, &bad) != CP_OK) {
            rc = cp_fail(CP_ERR_INVALID_ARG, "invalid dictionary entry in %s at line %zu: not UTF-8", path, lineno);
            break;
        }
        /* word, freq = line.split(' ')[:2] */
        const char *sp = memchr(line, ' ', ll);
        if (!sp || sp == line) {
            rc = cp_fail(CP_ERR_INVALID_ARG, "invalid dictionary entry in %s at line %zu: %.*s", path, lineno,
                         (int)(ll > 80 ? 80 : ll), line);
            break;
        }
        size_t wl = (size_t)(sp - line);
        const char *fs = sp + 1, *fe = memchr(fs, ' ', ll - wl - 1);
        size_t fl = fe ? (size_t)(fe - fs) : ll - wl - 1;
        int64_t freq;
        if (parse_freq(fs, fl, &freq) != 0 || wl > 1024) {
            rc = cp_fail(CP_ERR_INVALID_ARG, "invalid dictionary entry in %s at line %zu: %.*s", path, lineno,
                         (int)(ll > 80 ? 80 : ll), line);
            break;
        }
        rc = set_word(j, line, wl, freq);
        j->total += freq;
    }
    free(buf);
    return rc;
}

static int hex_u64(const char *s, size_t n, uint64_t *out) {
    uint64_t v = 0;
    if (n == 0 || n > 16) return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static int state_index(const char *s, size_t n) {
    if (n != 1) return -1;
    for (int k = 0; k < 4; k++)
        if (ST_CHAR[k] == s[0]) return k;
    return -1;
}

static int hmm_load(cp_jieba *j, const char *path) {
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) j->trans[a][b] = MIN_FLOAT;
    for (size_t k = 0; k < 4 * (size_t)NHAN; k++) j->emit[k] = MIN_FLOAT;
    char *buf;
    size_t n;
    CP_CHECK(read_whole_file(path, &buf, &n));
    size_t pos = 0, lineno = 0, n_start = 0, n_trans = 0, n_emit = 0;
    int rc = CP_OK;
    while (pos < n) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', n - pos);
        size_t ll = nl ? (size_t)(nl - line) : n - pos;
        pos += ll + (nl ? 1 : 0);
        lineno++;
        strip_line(&line, &ll);
        if (ll == 0 || line[0] == '#') continue;
        /* split into at most 4 fields */
        const char *f[4];
        size_t fl[4], nf = 0, i = 0;
        while (i < ll && nf < 4) {
            while (i < ll && line[i] == ' ') i++;
            if (i == ll) break;
            f[nf] = line + i;
            while (i < ll && line[i] != ' ') i++;
            fl[nf] = (size_t)(line + i - f[nf]);
            nf++;
        }
        uint64_t bits, cp;
        double v;
        int ok = 0;
        if (nf == 3 && fl[0] == 5 && !memcmp(f[0], "start", 5)) {
            int s = state_index(f[1], fl[1]);
            if (s >= 0 && hex_u64(f[2], fl[2], &bits) == 0) {
                memcpy(&v, &bits, sizeof v);
                j->start[s] = v, ok = 1, n_start++;
            }
        } else if (nf == 4 && fl[0] == 5 && !memcmp(f[0], "trans", 5)) {
            int a = state_index(f[1], fl[1]), b = state_index(f[2], fl[2]);
            if (a >= 0 && b >= 0 && hex_u64(f[3], fl[3], &bits) == 0) {
                memcpy(&v, &bits, sizeof v);
                j->trans[a][b] = v, ok = 1, n_trans++;
            }
        } else if (nf == 4 && fl[0] == 4 && !memcmp(f[0], "emit", 4)) {
            int s = state_index(f[1], fl[1]);
            if (s >= 0 && hex_u64(f[2], fl[2], &cp) == 0 && hex_u64(f[3], fl[3], &bits) == 0) {
                memcpy(&v, &bits, sizeof v);
                /* only U+4E00..U+9FD5 ever reach the HMM (re_han in finalseg) */
                if (cp >= HAN_LO && cp <= HAN_HI) j->emit[(size_t)s * NHAN + (cp - HAN_LO)] = v;
                ok = 1, n_emit++;
            }
        }
        if (!ok) {
            rc = cp_fail(CP_ERR_INVALID_ARG, "bad HMM record in %s at line %zu", path, lineno);
            break;
        }
    }
    free(buf);
    if (rc == CP_OK && (n_start != 4 || n_trans == 0 || n_emit == 0))
        rc = cp_fail(CP_ERR_INVALID_ARG, "incomplete HMM model %s (%zu start, %zu trans, %zu emit records)", path,
                     n_start, n_trans, n_emit);
    return rc;
}

int cp_jieba_create(cp_jieba **out, const char *dict_path, const char *hmm_path) {
    *out = NULL;
    cp_jieba *j = calloc(1, sizeof *j);
    if (!j) return cp_fail(CP_ERR_NOMEM, "jieba: out of memory");
    if (pthread_rwlock_init(&j->lock, NULL) != 0) {
        free(j);
        return cp_fail(CP_ERR_INTERNAL, "jieba: pthread_rwlock_init failed");
    }
    int rc = CP_OK;
    j->emit = malloc(4 * (size_t)NHAN * sizeof(double));
    if (!j->emit) rc = cp_fail(CP_ERR_NOMEM, "jieba: out of memory");
    j->single = malloc(0x10000 * sizeof(int32_t));
    if (rc == CP_OK && !j->single) rc = cp_fail(CP_ERR_NOMEM, "jieba: out of memory");
    if (rc == CP_OK) memset(j->single, 0xFF, 0x10000 * sizeof(int32_t)); /* all -1 */
    if (rc == CP_OK) rc = cp_strmap_create(&j->dict, CP_STRMAP_BYTES, 1u << 19); /* ~349k words + prefixes */
    if (rc == CP_OK) rc = dict_load(j, dict_path);
    if (rc == CP_OK) rc = hmm_load(j, hmm_path);
    if (rc != CP_OK) {
        cp_jieba_free(j);
        return rc;
    }
    *out = j;
    return CP_OK;
}

void cp_jieba_free(cp_jieba *j) {
    if (!j) return;
    pthread_rwlock_destroy(&j->lock);
    cp_strmap_free(j->dict);
    free(j->ent), free(j->emit), free(j->single);
    free(j);
}

/* ---- segmentation ------------------------------------------------------------------------------------- */

typedef struct {
    const cp_jieba *j;
    const char *text;  /* the UTF-8 text: dictionary keys are its byte ranges */
    const uint32_t *s; /* (n) code points of the text */
    const size_t *off; /* (n+1) byte offset of each code point */
    double logtotal;
    double *rv;      /* (n+1) route value */
    int32_t *rx;     /* (n+1) route: end index (inclusive) of the word starting here */
    double *V;       /* (n, 4) Viterbi scores */
    uint8_t *bp;     /* (n, 4) Viterbi back pointers */
    cp_spans *out;
} work;

static inline int emit_tok(work *w, size_t a, size_t b) { return cp_spans_push(w->out, w->off[a], w->off[b] - w->off[a]); }

/* the entry of the word made of code points [a, b) */
static inline int64_t find_range(const work *w, size_t a, size_t b) {
    return dict_find(w->j, w->text + w->off[a], w->off[b] - w->off[a]);
}

/* get_DAG + calc over the block s[a, a+N): route relative to a. */
static void route(work *w, size_t a, size_t N) {
    const uint32_t *s = w->s + a;
    const cp_jieba *j = w->j;
    double *rv = w->rv;
    int32_t *rx = w->rx;
    double logtotal = w->logtotal;
    rv[N] = 0.0, rx[N] = 0;
    const char *text = w->text;
    const size_t *off = w->off + a;
    for (size_t idx = N; idx-- > 0;) {
        double best = 0.0;
        size_t bestx = 0;
        int any = 0;
        for (size_t i = idx; i < N; i++) {
            int64_t e = i == idx && s[i] < 0x10000 ? j->single[s[i]]
                                                   : dict_find(j, text + off[idx], off[i + 1] - off[idx]);
            if (e < 0) break;
            if (j->ent[e].freq) {
                double v = j->ent[e].logf - logtotal + rv[i + 1];
                if (!any || v >= best) best = v, bestx = i; /* ties: the larger end index, as max over tuples */
                any = 1;
            }
        }
        if (!any) best = 0.0 - logtotal + rv[idx + 1], bestx = idx; /* log(FREQ.get(c) or 1) == 0 */
        rv[idx] = best, rx[idx] = (int32_t)bestx;
    }
}

/* One HMM word: split into characters if it is in Force_Split_Words. */
static int hmm_word(work *w, size_t a, size_t b) {
    if (w->j->n_force && b - a > 1) {
        int64_t e = find_range(w, a, b);
        if (e >= 0 && w->j->ent[e].force_split) {
            for (size_t k = a; k < b; k++) CP_CHECK(emit_tok(w, k, k + 1));
            return CP_OK;
        }
    }
    return emit_tok(w, a, b);
}

/* finalseg.viterbi + __cut over the Han run s[a, b). */
static int viterbi_cut(work *w, size_t a, size_t b) {
    const cp_jieba *j = w->j;
    size_t T = b - a;
    double *V = w->V;
    uint8_t *bp = w->bp;
    for (int y = 0; y < 4; y++) V[y] = j->start[y] + j->emit[(size_t)y * NHAN + (w->s[a] - HAN_LO)];
    for (size_t t = 1; t < T; t++) {
        size_t c = w->s[a + t] - HAN_LO;
        for (int y = 0; y < 4; y++) {
            double em = j->emit[(size_t)y * NHAN + c];
            int y0 = PREV[y][0], y1 = PREV[y][1];
            double p0 = V[(t - 1) * 4 + y0] + j->trans[y0][y] + em;
            double p1 = V[(t - 1) * 4 + y1] + j->trans[y1][y] + em;
            /* max((p0, y0), (p1, y1)): larger value, ties to the larger state letter */
            int pick1 = p1 > p0 || (p1 == p0 && ST_CHAR[y1] > ST_CHAR[y0]);
            V[t * 4 + y] = pick1 ? p1 : p0;
            bp[t * 4 + y] = (uint8_t)(pick1 ? y1 : y0);
        }
    }
    /* max((V[T-1][y], y) for y in 'ES'): ties to 'S' */
    int st = V[(T - 1) * 4 + ST_S] >= V[(T - 1) * 4 + ST_E] ? ST_S : ST_E;
    uint8_t *pos = w->bp + 4 * T; /* (T) the best state path, in the scratch after the back pointers */
    pos[T - 1] = (uint8_t)st;
    for (size_t t = T - 1; t > 0; t--) pos[t - 1] = bp[t * 4 + pos[t]];
    size_t begin = 0, nexti = 0;
    for (size_t t = 0; t < T; t++) {
        int p = pos[t];
        if (p == ST_B) {
            begin = t;
        } else if (p == ST_E) {
            CP_CHECK(hmm_word(w, a + begin, a + t + 1));
            nexti = t + 1;
        } else if (p == ST_S) {
            CP_CHECK(hmm_word(w, a + t, a + t + 1));
            nexti = t + 1;
        }
    }
    if (nexti < T) CP_CHECK(hmm_word(w, a + nexti, b));
    return CP_OK;
}

/* finalseg's re_skip split of a non-Han run: ([a-zA-Z0-9]+(?:\.\d+)?%?) tokens and the gaps between them. */
static int skip_split(work *w, size_t a, size_t b) {
    const uint32_t *s = w->s;
    size_t p = a, gap = a;
    while (p < b) {
        if (!is_ascii_alnum(s[p])) {
            p++;
            continue;
        }
        size_t q = p;
        while (q < b && is_ascii_alnum(s[q])) q++;
        if (q + 1 < b && s[q] == '.' && s[q + 1] >= '0' && s[q + 1] <= '9') {
            q++;
            while (q < b && s[q] >= '0' && s[q] <= '9') q++;
        }
        if (q < b && s[q] == '%') q++;
        if (gap < p) CP_CHECK(emit_tok(w, gap, p));
        CP_CHECK(emit_tok(w, p, q));
        p = gap = q;
    }
    if (gap < b) CP_CHECK(emit_tok(w, gap, b));
    return CP_OK;
}

/* finalseg.cut over s[a, b) */
static int hmm_cut(work *w, size_t a, size_t b) {
    size_t i = a;
    while (i < b) {
        size_t k = i;
        if (is_han(w->s[i])) {
            while (k < b && is_han(w->s[k])) k++;
            CP_CHECK(viterbi_cut(w, i, k));
        } else {
            while (k < b && !is_han(w->s[k])) k++;
            CP_CHECK(skip_split(w, i, k));
        }
        i = k;
    }
    return CP_OK;
}

/* A buffered run of single-character route steps s[a, b) (__cut_DAG's `buf`). */
static int flush_buf(work *w, size_t a, size_t b) {
    if (b - a == 1) return emit_tok(w, a, b);
    int64_t e = find_range(w, a, b);
    if (e < 0 || w->j->ent[e].freq == 0) return hmm_cut(w, a, b);
    for (size_t k = a; k < b; k++) CP_CHECK(emit_tok(w, k, k + 1));
    return CP_OK;
}

static int cut_block_hmm(work *w, size_t a, size_t N) {
    route(w, a, N);
    size_t x = 0, buf0 = 0, nbuf = 0;
    while (x < N) {
        size_t y = (size_t)w->rx[x] + 1;
        if (y - x == 1) {
            if (!nbuf) buf0 = x;
            nbuf++;
        } else {
            if (nbuf) CP_CHECK(flush_buf(w, a + buf0, a + buf0 + nbuf));
            nbuf = 0;
            CP_CHECK(emit_tok(w, a + x, a + y));
        }
        x = y;
    }
    if (nbuf) CP_CHECK(flush_buf(w, a + buf0, a + buf0 + nbuf));
    return CP_OK;
}

static int cut_block_no_hmm(work *w, size_t a, size_t N) {
    route(w, a, N);
    size_t x = 0, buf0 = 0, nbuf = 0;
    while (x < N) {
        size_t y = (size_t)w->rx[x] + 1;
        if (y - x == 1 && is_ascii_alnum(w->s[a + x])) {
            if (!nbuf) buf0 = x;
            nbuf++;
        } else {
            if (nbuf) CP_CHECK(emit_tok(w, a + buf0, a + buf0 + nbuf));
            nbuf = 0;
            CP_CHECK(emit_tok(w, a + x, a + y));
        }
        x = y;
    }
    if (nbuf) CP_CHECK(emit_tok(w, a + buf0, a + buf0 + nbuf));
    return CP_OK;
}

/* Tokenizer.cut over code points s[0, n) (caller holds the lock, read or write). */
static int cut_cps(const cp_jieba *j, const char *text, const uint32_t *s, const size_t *off, size_t n, int hmm,
                   cp_spans *out) {
    /* scratch: rv (n+1) doubles, V (4n) doubles, rx (n+1) int32, bp (4n) + pos (n) bytes */
    size_t bytes = (n + 1) * sizeof(double) + 4 * n * sizeof(double) + (n + 1) * sizeof(int32_t) + 5 * n + 16;
    char stackbuf[4096];
    char *mem = bytes <= sizeof stackbuf ? stackbuf : malloc(bytes);
    if (!mem) return cp_fail(CP_ERR_NOMEM, "jieba: out of memory for a %zu-character text", n);
    work w = {.j = j, .text = text, .s = s, .off = off, .out = out};
    w.logtotal = log((double)j->total);
    w.rv = (double *)mem;
    w.V = w.rv + (n + 1);
    w.rx = (int32_t *)(w.V + 4 * n);
    w.bp = (uint8_t *)(w.rx + (n + 1));
    int rc = CP_OK;
    size_t i = 0;
    while (i < n && rc == CP_OK) {
        if (is_block_char(s[i])) {
            size_t k = i;
            while (k < n && is_block_char(s[k])) k++;
            rc = hmm ? cut_block_hmm(&w, i, k - i) : cut_block_no_hmm(&w, i, k - i);
            i = k;
        } else if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') { /* re_skip_default: (\r\n|\s) */
            rc = emit_tok(&w, i, i + 2);
            i += 2;
        } else {
            rc = emit_tok(&w, i, i + 1);
            i++;
        }
    }
    if (mem != stackbuf) free(mem);
    return rc;
}

/* Decode `text` and cut it; caller holds the lock. */
static int cut_locked(const cp_jieba *j, const char *text, size_t len, int hmm, cp_spans *out) {
    if (len == 0) return CP_OK;
    if (len > (size_t)INT32_MAX) return cp_fail(CP_ERR_INVALID_ARG, "jieba: text of %zu bytes is too long", len);
    uint32_t cps_stack[256];
    size_t offs_stack[257];
    uint32_t *cps = len <= 256 ? cps_stack : malloc(len * sizeof(uint32_t));
    size_t *offs = len <= 256 ? offs_stack : malloc((len + 1) * sizeof(size_t));
    int rc;
    if (!cps || !offs) {
        rc = cp_fail(CP_ERR_NOMEM, "jieba: out of memory");
    } else {
        size_t n = decode(text, len, cps, offs);
        rc = cut_cps(j, text, cps, offs, n, hmm, out);
    }
    if (cps != cps_stack) free(cps);
    if (offs != offs_stack) free(offs);
    return rc;
}

int cp_jieba_cut(cp_jieba *j, const char *text, size_t len, int hmm, cp_spans *out) {
    size_t bad;
    CP_CHECK(cp_utf8_validate(text, len, &bad));
    pthread_rwlock_rdlock(&j->lock);
    int rc = cut_locked(j, text, len, hmm, out);
    pthread_rwlock_unlock(&j->lock);
    return rc;
}

/* ---- user words --------------------------------------------------------------------------------------- */

static int suggest_locked(cp_jieba *j, const char *word, size_t len, int64_t *out) {
    cp_spans segs = {0};
    CP_CHECK(cut_locked(j, word, len, 0, &segs)); /* self.cut(word, HMM=False) */
    double ftotal = (double)j->total, freq = 1.0;
    for (size_t k = 0; k < segs.n; k++) {
        int64_t e = dict_find(j, word + segs.v[k].start, segs.v[k].len);
        int64_t f = e >= 0 ? j->ent[e].freq : 1; /* FREQ.get(seg, 1) */
        freq *= (double)f / ftotal;
    }
    int64_t e = dict_find(j, word, len);
    int64_t fw = e >= 0 ? j->ent[e].freq : 1; /* FREQ.get(word, 1) */
    int64_t f = (int64_t)(freq * (double)j->total) + 1;
    *out = f > fw ? f : fw;
    cp_spans_free(&segs);
    return CP_OK;
}

static int add_word_locked(cp_jieba *j, const char *word, size_t len, int64_t freq, int64_t *used) {
    if (freq < 0) CP_CHECK(suggest_locked(j, word, len, &freq));
    CP_CHECK(set_word(j, word, len, freq));
    j->total += freq;
    if (freq == 0) {
        int64_t e = dict_find(j, word, len);
        if (e >= 0 && !j->ent[e].force_split) j->ent[e].force_split = 1, j->n_force++;
    }
    if (used) *used = freq;
    return CP_OK;
}

static int check_word(const char *word, size_t len) {
    size_t bad;
    if (len == 0) return cp_fail(CP_ERR_INVALID_ARG, "add_word: the word is empty");
    if (len > 4096) return cp_fail(CP_ERR_INVALID_ARG, "add_word: word of %zu bytes is too long (max 4096)", len);
    return cp_utf8_validate(word, len, &bad);
}

int cp_jieba_add_word(cp_jieba *j, const char *word, size_t len, int64_t freq, int64_t *used) {
    CP_CHECK(check_word(word, len));
    pthread_rwlock_wrlock(&j->lock);
    int rc = add_word_locked(j, word, len, freq, used);
    pthread_rwlock_unlock(&j->lock);
    return rc;
}

int cp_jieba_suggest_freq(cp_jieba *j, const char *word, size_t len, int64_t *out) {
    CP_CHECK(check_word(word, len));
    pthread_rwlock_rdlock(&j->lock);
    int rc = suggest_locked(j, word, len, out);
    pthread_rwlock_unlock(&j->lock);
    return rc;
}

/* re_userdict = ^(.+?)( [0-9]+)?( [a-z]+)?$ : does `rest` match ( [0-9]+)?( [a-z]+)?$ ? Sets the freq span. */
static int userdict_rest(const char *r, size_t n, const char **fs, size_t *fl) {
    size_t i = 0;
    *fs = NULL, *fl = 0;
    if (i < n && r[i] == ' ' && i + 1 < n && r[i + 1] >= '0' && r[i + 1] <= '9') {
        size_t k = i + 1;
        while (k < n && r[k] >= '0' && r[k] <= '9') k++;
        *fs = r + i + 1, *fl = k - i - 1;
        i = k;
    }
    if (i < n && r[i] == ' ' && i + 1 < n && r[i + 1] >= 'a' && r[i + 1] <= 'z') {
        size_t k = i + 1;
        while (k < n && r[k] >= 'a' && r[k] <= 'z') k++;
        i = k;
    }
    return i == n;
}

int cp_jieba_load_userdict_text(cp_jieba *j, const char *buf, size_t n, const char *path) {
    pthread_rwlock_wrlock(&j->lock);
    size_t pos = 0, lineno = 0;
    int rc = CP_OK;
    while (rc == CP_OK && pos < n) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', n - pos);
        size_t ll = nl ? (size_t)(nl - line) : n - pos;
        pos += ll + (nl ? 1 : 0);
        lineno++;
        strip_line(&line, &ll);
        size_t bad;
        if (cp_utf8_validate(line, ll, &bad) != CP_OK) {
            rc = cp_fail(CP_ERR_INVALID_ARG, "dictionary file %s must be utf-8 (line %zu, byte %zu)", path, lineno,
                         bad);
            break;
        }
        while (ll >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) line += 3, ll -= 3; /* .lstrip('\ufeff') */
        if (ll == 0) continue;
        /* lazy (.+?): the shortest word (at least one character) whose rest matches */
        size_t first = 1;
        while (first < ll && ((unsigned char)line[first] & 0xC0) == 0x80) first++;
        const char *fs = NULL;
        size_t fl = 0, wl = ll;
        for (size_t e = first; e <= ll; e++) {
            if (e < ll && line[e] != ' ') continue;
            if (userdict_rest(line + e, ll - e, &fs, &fl)) {
                wl = e;
                break;
            }
        }
        int64_t freq = -1;
        if (fs && parse_freq(fs, fl, &freq) != 0) {
            rc = cp_fail(CP_ERR_INVALID_ARG, "%s line %zu: frequency %.*s is out of range", path, lineno, (int)fl, fs);
            break;
        }
        if (wl > 4096) {
            rc = cp_fail(CP_ERR_INVALID_ARG, "%s line %zu: word too long", path, lineno);
            break;
        }
        rc = add_word_locked(j, line, wl, freq, NULL);
    }
    pthread_rwlock_unlock(&j->lock);
    return rc;
}

int cp_jieba_load_userdict(cp_jieba *j, const char *path) {
    char *buf;
    size_t n;
    CP_CHECK(read_whole_file(path, &buf, &n));
    int rc = cp_jieba_load_userdict_text(j, buf, n, path);
    free(buf);
    return rc;
}

int cp_jieba_get_freq(cp_jieba *j, const char *word, size_t len, int64_t *freq, int *found) {
    size_t bad;
    CP_CHECK(cp_utf8_validate(word, len, &bad));
    pthread_rwlock_rdlock(&j->lock);
    int64_t e = dict_find(j, word, len);
    *found = e >= 0;
    *freq = e >= 0 ? j->ent[e].freq : 0;
    pthread_rwlock_unlock(&j->lock);
    return CP_OK;
}

int64_t cp_jieba_total(cp_jieba *j) {
    pthread_rwlock_rdlock(&j->lock);
    int64_t t = j->total;
    pthread_rwlock_unlock(&j->lock);
    return t;
}

size_t cp_jieba_size(cp_jieba *j) {
    pthread_rwlock_rdlock(&j->lock);
    size_t n = j->n_ent;
    pthread_rwlock_unlock(&j->lock);
    return n;
}

/* ---- the process-wide instance ------------------------------------------------------------------------ */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(cp_jieba *) g_default;
static char *g_dir;

int cp_jieba_set_data_dir(const char *dir) {
    pthread_mutex_lock(&g_mu);
    int rc = CP_OK;
    if (atomic_load(&g_default)) {
        rc = cp_fail(CP_ERR_INVALID_ARG, "jieba: the dictionary is already loaded; set the data folder before first use");
    } else {
        char *d = strdup(dir);
        if (!d) rc = cp_fail(CP_ERR_NOMEM, "out of memory");
        else free(g_dir), g_dir = d;
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

static int default_dir(char *buf, size_t cap) {
    const char *d = g_dir ? g_dir : getenv("CLIPPROMPT_JIEBA_DIR");
    if (d && d[0]) {
        if ((size_t)snprintf(buf, cap, "%s", d) >= cap) return cp_fail(CP_ERR_INVALID_ARG, "jieba: path too long");
        return CP_OK;
    }
    Dl_info info;
    if (!dladdr((void *)&cp_jieba_default, &info) || !info.dli_fname)
        return cp_fail(CP_ERR_IO, "jieba: cannot locate the clipprompt data folder (set CLIPPROMPT_JIEBA_DIR)");
    const char *slash = strrchr(info.dli_fname, '/');
    int dl = slash ? (int)(slash - info.dli_fname) : 1;
    const char *base = slash ? info.dli_fname : ".";
    if ((size_t)snprintf(buf, cap, "%.*s/data/jieba", dl, base) >= cap)
        return cp_fail(CP_ERR_INVALID_ARG, "jieba: path too long");
    return CP_OK;
}

int cp_jieba_default(cp_jieba **out) {
    cp_jieba *j = atomic_load_explicit(&g_default, memory_order_acquire);
    if (j) {
        *out = j;
        return CP_OK;
    }
    pthread_mutex_lock(&g_mu);
    int rc = CP_OK;
    j = atomic_load(&g_default);
    if (!j) {
        char dir[4096], dict[4200], hmm[4200];
        rc = default_dir(dir, sizeof dir);
        if (rc == CP_OK) {
            snprintf(dict, sizeof dict, "%s/dict.txt", dir);
            snprintf(hmm, sizeof hmm, "%s/hmm_model.txt", dir);
            rc = cp_jieba_create(&j, dict, hmm);
        }
        if (rc == CP_OK) atomic_store_explicit(&g_default, j, memory_order_release);
    }
    pthread_mutex_unlock(&g_mu);
    *out = j;
    return rc;
}
