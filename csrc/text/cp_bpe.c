/* cp_bpe.c — CLIP byte-level BPE (see cp_bpe.h): merges/vocabulary tables, OpenAI's pre-tokenizer, BPE by merge
 * rank with an incremental pair-rank array, a bounded striped-lock word cache, batch encode over OpenMP, decode.
 *
 * Shapes: a piece of m bytes starts as m symbols (vocab ids); rank[i]/mid[i] hold the merge rank / merged id of the
 * pair (sym[i], sym[i+1]) and are recomputed only next to merged symbols.
 */
#include "text/cp_bpe.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/cp_common.h"
#include "base/cp_hash.h"
#include "base/cp_strmap.h"
#include "base/cp_utf8.h"
#include "text/cp_normalize.h"
#include "text/cp_textutil.h"
#include "text/cp_tokenizer_tables.h"

#define CP_BPE_N_MERGES (49152 - 256 - 2)
#define CP_BPE_NO_RANK INT32_MAX
#define CP_BPE_CACHE_KEY 30 /* pieces up to this many bytes are cached */
#define CP_BPE_CACHE_IDS 12 /* ... when they give at most this many ids */
#define CP_BPE_STRIPES 64

/* ---- word cache: direct-mapped slots, one mutex per stripe of slots ---------------------------------------- */

typedef struct {
    uint64_t h;
    uint8_t klen, nids; /* klen == 0: empty slot */
    char key[CP_BPE_CACHE_KEY];
    int32_t ids[CP_BPE_CACHE_IDS];
} cp_bpe_slot;

typedef struct {
    pthread_mutex_t mu;
    uint64_t hits, misses;
    char pad[64];
} cp_bpe_stripe;

struct cp_bpe {
    int32_t n_vocab, sot, eot;
    int32_t sym_id[256]; /* byte -> id of its one-byte symbol                    */
    int32_t eow_id[256]; /* byte -> id of the same symbol + "</w>"               */
    /* merge pairs: key (a << 32 | b) -> rank << 32 | merged id (base/cp_strmap.h, int64 keys) */
    cp_strmap *pairs;
    /* decode: id -> raw bytes (with "</w>" as 4 bytes) */
    uint32_t *tok_off; /* (n_vocab + 1)                                          */
    uint8_t *tok_ok;   /* (n_vocab): 1 when the id is the one the vocabulary maps its string to */
    char *tok_pool;
    /* word cache */
    cp_bpe_slot *slots; /* (slot_mask + 1), NULL when disabled                   */
    size_t slot_mask;
    cp_bpe_stripe *stripes; /* (CP_BPE_STRIPES)                                  */
};

int32_t cp_bpe_vocab_size(const cp_bpe *t) { return t->n_vocab; }
int32_t cp_bpe_sot(const cp_bpe *t) { return t->sot; }
int32_t cp_bpe_eot(const cp_bpe *t) { return t->eot; }

static inline int32_t cp_bpe_pair(const cp_bpe *t, int32_t a, int32_t b, int32_t *merged) {
    int64_t v;
    if (!cp_strmap_get_int(t->pairs, (int64_t)(((uint64_t)(uint32_t)a << 32) | (uint32_t)b), &v))
        return CP_BPE_NO_RANK;
    *merged = (int32_t)(uint32_t)v;
    return (int32_t)(v >> 32);
}

/* ---- building ------------------------------------------------------------------------------------------- */

/* OpenAI's bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100.. in byte order. Returns the
 * code point of byte b; the vocabulary's first 256 entries are the bytes in "printable first" order. */
static void cp_bpe_byte_order(uint32_t cp_of[256], uint8_t order[256]) {
    int k = 0, n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (printable) cp_of[b] = (uint32_t)b, order[k++] = (uint8_t)b;
    }
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (!printable) cp_of[b] = 256u + (uint32_t)n++, order[k++] = (uint8_t)b;
    }
}

/* decode one byte-encoded symbol string (UTF-8 of bytes_to_unicode chars) into raw bytes; -1 if not such a string */
static long cp_bpe_unmap(const char *s, size_t n, const int16_t *byte_of_cp, char *dst) {
    size_t i = 0;
    long k = 0;
    while (i < n) {
        uint32_t c;
        size_t r;
        if (cp_utf8_decode((const unsigned char *)s + i, n - i, &c, &r) != CP_UTF8_OK || c >= 0x144 ||
            byte_of_cp[c] < 0)
            return -1;
        dst[k++] = (char)byte_of_cp[c];
        i += r;
    }
    return k;
}

static void cp_bpe_free_tables(cp_bpe *t) {
    cp_strmap_free(t->pairs);
    free(t->tok_off), free(t->tok_ok), free(t->tok_pool);
    if (t->stripes)
        for (int i = 0; i < CP_BPE_STRIPES; i++) pthread_mutex_destroy(&t->stripes[i].mu);
    free(t->stripes);
    free(t->slots);
}

void cp_bpe_free(cp_bpe *t) {
    if (!t) return;
    cp_bpe_free_tables(t);
    free(t);
}

int cp_bpe_create(const char *merges, size_t n, size_t cache_slots, cp_bpe **out) {
    *out = NULL;
    uint32_t cp_of[256];
    uint8_t order[256];
    int16_t byte_of_cp[0x144];
    cp_bpe_byte_order(cp_of, order);
    for (int i = 0; i < 0x144; i++) byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++) byte_of_cp[cp_of[b]] = (int16_t)b;

    cp_bpe *t = calloc(1, sizeof *t);
    const size_t nv_max = 512 + CP_BPE_N_MERGES + 2;
    uint32_t *mrg_a = malloc(sizeof(uint32_t) * 2 * CP_BPE_N_MERGES); /* (split offset, end) per merge in pool */
    char *pool = malloc(n + 4096 + 8 * 512);
    uint32_t *off = malloc(sizeof(uint32_t) * (nv_max + 1)), *len = malloc(sizeof(uint32_t) * nv_max);
    cp_strmap *m = NULL; /* string -> id while building */
    int rc = t && mrg_a && pool && off && len ? cp_strmap_create(&m, CP_STRMAP_BYTES, nv_max) : CP_ERR_NOMEM;
    if (rc != CP_OK) {
        free(mrg_a), free(pool), free(off), free(len), free(t);
        CP_FAIL(CP_ERR_NOMEM, "out of memory building the BPE tables");
    }
    size_t pl = 0, nv = 0;
    /* 0..255 bytes, 256..511 bytes + "</w>" */
    for (int i = 0; i < 256; i++) off[nv] = (uint32_t)pl, pool[pl++] = (char)order[i], len[nv++] = 1;
    for (int i = 0; i < 256; i++) {
        off[nv] = (uint32_t)pl;
        pool[pl++] = (char)order[i];
        memcpy(pool + pl, "</w>", 4), pl += 4;
        len[nv++] = 5;
    }
    /* merges: lines 1 .. CP_BPE_N_MERGES after the header */
    size_t pos = 0, line = 0, n_merges = 0;
    while (pos <= n && n_merges < CP_BPE_N_MERGES) {
        size_t e = pos;
        while (e < n && merges[e] != '\n') e++;
        if (line >= 1) {
            /* split on whitespace into exactly two fields */
            const char *f[3];
            size_t fl[3], nf = 0, i = pos;
            while (i < e) {
                while (i < e && (merges[i] == ' ' || merges[i] == '\t' || merges[i] == '\r')) i++;
                if (i >= e) break;
                size_t st = i;
                while (i < e && !(merges[i] == ' ' || merges[i] == '\t' || merges[i] == '\r')) i++;
                if (nf < 3) f[nf] = merges + st, fl[nf] = i - st;
                nf++;
            }
            if (nf != 2) {
                rc = cp_fail(CP_ERR_TOKENIZER, "BPE merges line %zu: expected two symbols, found %zu", line + 1, nf);
                goto done;
            }
            long ka = cp_bpe_unmap(f[0], fl[0], byte_of_cp, pool + pl);
            long kb = ka < 0 ? -1 : cp_bpe_unmap(f[1], fl[1], byte_of_cp, pool + pl + ka);
            if (ka <= 0 || kb <= 0) {
                rc = cp_fail(CP_ERR_TOKENIZER, "BPE merges line %zu: not a byte-level symbol pair", line + 1);
                goto done;
            }
            off[nv] = (uint32_t)pl, len[nv] = (uint32_t)(ka + kb);
            mrg_a[2 * n_merges] = (uint32_t)ka;
            pl += (size_t)(ka + kb), nv++, n_merges++;
        }
        line++;
        pos = e + 1;
    }
    if (n_merges != CP_BPE_N_MERGES) {
        rc = cp_fail(CP_ERR_TOKENIZER, "BPE merges: found %zu merges, need %d (is this bpe_simple_vocab_16e6?)",
                     n_merges, CP_BPE_N_MERGES);
        goto done;
    }
    static const char *specials[2] = {"<|startoftext|>", "<|endoftext|>"};
    for (int i = 0; i < 2; i++) {
        size_t sl = strlen(specials[i]);
        off[nv] = (uint32_t)pl, memcpy(pool + pl, specials[i], sl), pl += sl, len[nv++] = (uint32_t)sl;
    }
    off[nv] = (uint32_t)pl;
    t->n_vocab = (int32_t)nv, t->sot = (int32_t)nv - 2, t->eot = (int32_t)nv - 1;

    /* string -> id, later ids win (as dict(zip(vocab, ids))) */
    for (size_t id = 0; id < nv && rc == CP_OK; id++) rc = cp_strmap_put(m, pool + off[id], len[id], (int64_t)id);
    if (rc != CP_OK) goto done;
    t->tok_ok = malloc(nv);
    t->tok_off = malloc(sizeof(uint32_t) * (nv + 1));
    t->tok_pool = malloc(pl ? pl : 1);
    if (!t->tok_ok || !t->tok_off || !t->tok_pool) {
        rc = cp_fail(CP_ERR_NOMEM, "out of memory building the BPE tables");
        goto done;
    }
    if ((rc = cp_strmap_create(&t->pairs, CP_STRMAP_INT64, n_merges)) != CP_OK) goto done;
    memcpy(t->tok_pool, pool, pl), memcpy(t->tok_off, off, sizeof(uint32_t) * (nv + 1));
    for (size_t id = 0; id < nv; id++) {
        int64_t got;
        t->tok_ok[id] = cp_strmap_get(m, pool + off[id], len[id], &got) && got == (int64_t)id;
    }
    for (int b = 0; b < 256; b++) {
        char s[5] = {(char)b, '<', '/', 'w', '>'};
        int64_t a = -1, e = -1;
        cp_strmap_get(m, s, 1, &a), cp_strmap_get(m, s, 5, &e);
        t->sym_id[b] = (int32_t)a, t->eow_id[b] = (int32_t)e;
    }
    for (size_t r = 0; r < n_merges && rc == CP_OK; r++) {
        size_t id = 512 + r;
        const char *s = pool + off[id];
        size_t ka = mrg_a[2 * r], kb = len[id] - ka;
        int64_t a, b, merged = -1;
        if (!cp_strmap_get(m, s, ka, &a) || !cp_strmap_get(m, s + ka, kb, &b))
            continue; /* a symbol no word can contain: the pair never occurs */
        cp_strmap_get(m, s, ka + kb, &merged);
        uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
        rc = cp_strmap_put_int(t->pairs, (int64_t)key, (int64_t)(((uint64_t)r << 32) | (uint32_t)merged)); /* later ranks win */
    }
    if (rc != CP_OK) goto done;
    if (cache_slots > 0) {
        size_t cap = 64;
        while (cap < cache_slots && cap < ((size_t)1 << 24)) cap <<= 1;
        t->slots = calloc(cap, sizeof(cp_bpe_slot));
        t->stripes = calloc(CP_BPE_STRIPES, sizeof(cp_bpe_stripe));
        if (!t->slots || !t->stripes) {
            free(t->slots), free(t->stripes), t->slots = NULL, t->stripes = NULL;
            rc = cp_fail(CP_ERR_NOMEM, "out of memory for the BPE word cache (%zu slots)", cap);
            goto done;
        }
        for (int i = 0; i < CP_BPE_STRIPES; i++) pthread_mutex_init(&t->stripes[i].mu, NULL);
        t->slot_mask = cap - 1;
    }
done:
    free(mrg_a), free(pool), free(off), free(len), cp_strmap_free(m);
    if (rc != CP_OK) {
        cp_bpe_free(t);
        return rc;
    }
    *out = t;
    return CP_OK;
}

void cp_bpe_cache_stats(const cp_bpe *t, uint64_t *hits, uint64_t *misses, size_t *slots) {
    uint64_t h = 0, ms = 0;
    if (t->stripes)
        for (int i = 0; i < CP_BPE_STRIPES; i++) {
            cp_bpe_stripe *s = &t->stripes[i];
            pthread_mutex_lock(&s->mu);
            h += s->hits, ms += s->misses;
            pthread_mutex_unlock(&s->mu);
        }
    if (hits) *hits = h;
    if (misses) *misses = ms;
    if (slots) *slots = t->slots ? t->slot_mask + 1 : 0;
}

/* ---- the pre-tokenizer ---------------------------------------------------------------------------------- */

enum { CLS_L = 'L', CLS_N = 'N', CLS_S = 'S', CLS_O = 'O', CLS_X = 'X' };

static inline int cp_clip_class(uint32_t c) {
    if (c < 128) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CLS_L;
        if (c >= '0' && c <= '9') return CLS_N;
        if (c == ' ' || (c >= 9 && c <= 13)) return CLS_S;
        return CLS_O;
    }
    size_t lo = 0, hi = sizeof cp_clip_class_overrides / sizeof cp_clip_class_overrides[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < cp_clip_class_overrides[mid].lo)
            hi = mid;
        else if (c > cp_clip_class_overrides[mid].hi)
            lo = mid + 1;
        else
            return cp_clip_class_overrides[mid].cls;
    }
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    if (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) return CLS_L;
    if (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) return CLS_N;
    return CLS_O;
}

/* one code point of valid UTF-8 at p (the text was cleaned or validated); returns its length */
static inline size_t cp_u8(const uint8_t *p, uint32_t *c) {
    size_t k = 0;
    *c = cp_utf8_next(p, &k);
    return k;
}

/* case-insensitive match of an ASCII pattern at p, as the regex module does it (only ASCII case pairs, plus U+017F
 * for 's': checked exhaustively by csrc/tools/gen_tokenizer_tables.py). Returns bytes matched or 0. */
static size_t cp_match_ci(const uint8_t *p, const uint8_t *end, const char *pat) {
    const uint8_t *q = p;
    for (; *pat; pat++) {
        if (q >= end) return 0;
        uint32_t c;
        size_t k = cp_u8(q, &c);
        uint32_t pc = (uint8_t)*pat;
        int ok = c == pc;
        if (!ok && pc >= 'a' && pc <= 'z') ok = c == pc - 32 || (pc == 's' && c == 0x17F);
        if (!ok) return 0;
        q += k;
    }
    return (size_t)(q - p);
}

/* The next piece at or after *pos: [*start, *stop). Returns 0 at the end. *special: 1 SOT, 2 EOT, else 0. */
static int cp_next_piece(const uint8_t *s, const uint8_t *end, const uint8_t **pos, const uint8_t **start,
                         const uint8_t **stop, int *special) {
    static const char *const contractions[7] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    const uint8_t *p = *pos;
    (void)s;
    *special = 0;
    while (p < end) {
        uint32_t c;
        size_t k = cp_u8(p, &c);
        if (c == '<') {
            size_t m = cp_match_ci(p, end, "<|startoftext|>");
            int which = 1;
            if (!m) m = cp_match_ci(p, end, "<|endoftext|>"), which = 2;
            if (m) {
                if (m == (which == 1 ? 15u : 13u) && memcmp(p, which == 1 ? "<|startoftext|>" : "<|endoftext|>", m) == 0)
                    *special = which;
                *start = p, *stop = *pos = p + m;
                return 1;
            }
        } else if (c == '\'') {
            for (int i = 0; i < 7; i++) {
                size_t m = cp_match_ci(p, end, contractions[i]);
                if (m) {
                    *start = p, *stop = *pos = p + m;
                    return 1;
                }
            }
        }
        int cls = cp_clip_class(c);
        if (cls == CLS_L || cls == CLS_O) {
            const uint8_t *q = p + k;
            while (q < end) {
                uint32_t d;
                size_t kd = cp_u8(q, &d);
                if (cp_clip_class(d) != cls) break;
                q += kd;
            }
            *start = p, *stop = *pos = q;
            return 1;
        }
        if (cls == CLS_N) {
            *start = p, *stop = *pos = p + k;
            return 1;
        }
        p += k; /* \s, or U+0345 which no alternative matches */
    }
    *pos = end;
    return 0;
}

int cp_bpe_pretokenize(const char *s, size_t n, size_t **spans, size_t *count) {
    *spans = NULL, *count = 0;
    size_t bad;
    CP_CHECK(cp_utf8_validate(s, n, &bad));
    const uint8_t *b = (const uint8_t *)s, *end = b + n, *pos = b, *st, *sp;
    size_t cap = 16, k = 0;
    size_t *out = malloc(sizeof(size_t) * 2 * cap);
    if (!out) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    int special;
    while (cp_next_piece(b, end, &pos, &st, &sp, &special)) {
        if (k == cap) {
            size_t *o2 = realloc(out, sizeof(size_t) * 4 * cap);
            if (!o2) {
                free(out);
                CP_FAIL(CP_ERR_NOMEM, "out of memory");
            }
            out = o2, cap *= 2;
        }
        out[2 * k] = (size_t)(st - b), out[2 * k + 1] = (size_t)(sp - b), k++;
    }
    *spans = out, *count = k;
    return CP_OK;
}

/* ---- BPE ------------------------------------------------------------------------------------------------ */

typedef struct {
    int32_t *ids; /* (ids_cap) output of one prompt */
    size_t ids_cap, n_ids;
    int32_t *sym, *rank, *mid; /* (word_cap) */
    size_t word_cap;
    /* a private, lock-free first level in front of the shared cache, for one batch call on one thread: frequent
     * words ("a", "the") then never touch the shared stripes' mutexes (no cache-line ping-pong between cores) */
    cp_bpe_slot *local; /* (CP_BPE_LOCAL_SLOTS) or NULL */
} cp_bpe_ws;

#define CP_BPE_LOCAL_SLOTS 2048
#define CP_BPE_LOCAL_MIN_BATCH 64 /* batches at least this long (per call) get the private level */

static void cp_bpe_ws_free(cp_bpe_ws *w) {
    free(w->ids), free(w->sym), free(w->rank), free(w->mid), free(w->local);
    memset(w, 0, sizeof *w);
}

static int cp_bpe_ws_reserve(cp_bpe_ws *w, size_t add) {
    if (w->n_ids + add > w->ids_cap) {
        size_t cap = w->ids_cap ? w->ids_cap : 256;
        while (cap < w->n_ids + add) cap *= 2;
        int32_t *p = realloc(w->ids, sizeof(int32_t) * cap);
        if (!p) CP_FAIL(CP_ERR_NOMEM, "out of memory");
        w->ids = p, w->ids_cap = cap;
    }
    if (add > w->word_cap) {
        size_t cap = w->word_cap ? w->word_cap : 64;
        while (cap < add) cap *= 2;
        int32_t *a = realloc(w->sym, sizeof(int32_t) * cap);
        if (a) w->sym = a;
        int32_t *b = realloc(w->rank, sizeof(int32_t) * cap);
        if (b) w->rank = b;
        int32_t *c = realloc(w->mid, sizeof(int32_t) * cap);
        if (c) w->mid = c;
        if (!a || !b || !c) CP_FAIL(CP_ERR_NOMEM, "out of memory");
        w->word_cap = cap;
    }
    return CP_OK;
}

/* BPE of one piece of m >= 1 bytes into out (at most m ids); returns the count. */
static size_t cp_bpe_word(const cp_bpe *t, const uint8_t *w, size_t m, cp_bpe_ws *ws, int32_t *out) {
    int32_t *sym = ws->sym, *rank = ws->rank, *mid = ws->mid;
    for (size_t i = 0; i + 1 < m; i++) sym[i] = t->sym_id[w[i]];
    sym[m - 1] = t->eow_id[w[m - 1]];
    for (size_t i = 0; i + 1 < m; i++) rank[i] = cp_bpe_pair(t, sym[i], sym[i + 1], &mid[i]);
    while (m > 1) {
        int32_t best = CP_BPE_NO_RANK;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] < best) best = rank[i];
        if (best == CP_BPE_NO_RANK) break;
        /* merge every occurrence of the best pair, left to right, in place */
        size_t wn = 0, i = 0;
        int prev_changed = 0;
        while (i < m) {
            int32_t s;
            int changed;
            size_t src = i;
            if (i + 1 < m && rank[i] == best)
                s = mid[i], changed = 1, i += 2;
            else
                s = sym[i], changed = 0, i += 1;
            sym[wn] = s;
            if (wn > 0) {
                if (!changed && !prev_changed)
                    rank[wn - 1] = rank[src - 1], mid[wn - 1] = mid[src - 1];
                else
                    rank[wn - 1] = cp_bpe_pair(t, sym[wn - 1], s, &mid[wn - 1]);
            }
            prev_changed = changed;
            wn++;
        }
        m = wn;
    }
    memcpy(out, sym, sizeof(int32_t) * m);
    return m;
}

static inline void cp_bpe_slot_fill(cp_bpe_slot *s, uint64_t h, const uint8_t *p, size_t m, const int32_t *ids,
                                    size_t k) {
    s->h = h, s->klen = (uint8_t)m, s->nids = (uint8_t)k;
    memcpy(s->key, p, m);
    memcpy(s->ids, ids, sizeof(int32_t) * k);
}

/* a piece -> ids appended to ws->ids, through the private level (if any) and the shared cache */
static int cp_bpe_piece(const cp_bpe *t, const uint8_t *p, size_t m, cp_bpe_ws *ws) {
    CP_CHECK(cp_bpe_ws_reserve(ws, m));
    int32_t *dst = ws->ids + ws->n_ids;
    if (!t->slots || m > CP_BPE_CACHE_KEY) {
        ws->n_ids += cp_bpe_word(t, p, m, ws, dst);
        return CP_OK;
    }
    uint64_t h = cp_hash64(p, m, 0);
    cp_bpe_slot *mine = NULL;
    if (ws->local) {
        mine = &ws->local[(h >> 40) & (CP_BPE_LOCAL_SLOTS - 1)];
        if (mine->klen == m && mine->h == h && memcmp(mine->key, p, m) == 0) {
            memcpy(dst, mine->ids, sizeof(int32_t) * mine->nids);
            ws->n_ids += mine->nids;
            return CP_OK;
        }
    }
    size_t si = (size_t)h & t->slot_mask;
    cp_bpe_slot *slot = &t->slots[si];
    cp_bpe_stripe *stripe = &t->stripes[si & (CP_BPE_STRIPES - 1)];
    size_t k = 0;
    int hit = 0;
    pthread_mutex_lock(&stripe->mu);
    if (slot->klen == m && slot->h == h && memcmp(slot->key, p, m) == 0) {
        k = slot->nids, hit = 1;
        memcpy(dst, slot->ids, sizeof(int32_t) * k);
        stripe->hits++;
    } else {
        stripe->misses++;
    }
    pthread_mutex_unlock(&stripe->mu);
    if (!hit) {
        k = cp_bpe_word(t, p, m, ws, dst);
        if (k <= CP_BPE_CACHE_IDS) {
            pthread_mutex_lock(&stripe->mu);
            cp_bpe_slot_fill(slot, h, p, m, dst, k);
            pthread_mutex_unlock(&stripe->mu);
        }
    }
    if (mine && k <= CP_BPE_CACHE_IDS) cp_bpe_slot_fill(mine, h, p, m, dst, k);
    ws->n_ids += k;
    return CP_OK;
}

/* encode one prompt into ws->ids (no SOT/EOT) */
static int cp_bpe_encode_ws(const cp_bpe *t, const char *s, size_t n, cp_bpe_ws *ws) {
    char *clean = NULL;
    size_t clen = 0;
    ws->n_ids = 0;
    CP_CHECK(cp_clip_clean(s, n, &clean, &clen));
    const uint8_t *b = (const uint8_t *)clean, *end = b + clen, *pos = b, *st, *sp;
    int special, rc = CP_OK;
    while (cp_next_piece(b, end, &pos, &st, &sp, &special)) {
        if (special) {
            if ((rc = cp_bpe_ws_reserve(ws, 1)) != CP_OK) break;
            ws->ids[ws->n_ids++] = special == 1 ? t->sot : t->eot;
            continue;
        }
        if ((rc = cp_bpe_piece(t, st, (size_t)(sp - st), ws)) != CP_OK) break;
    }
    free(clean);
    if (rc == CP_OK && ws->n_ids == 0) rc = cp_fail(CP_ERR_EMPTY, "the prompt is empty after cleaning");
    return rc;
}

int cp_bpe_encode(const cp_bpe *t, const char *s, size_t n, int32_t **ids, size_t *n_ids) {
    *ids = NULL, *n_ids = 0;
    cp_bpe_ws ws = {0};
    int rc = cp_bpe_encode_ws(t, s, n, &ws);
    if (rc != CP_OK) {
        cp_bpe_ws_free(&ws);
        return rc;
    }
    *ids = ws.ids, *n_ids = ws.n_ids;
    ws.ids = NULL;
    cp_bpe_ws_free(&ws);
    return CP_OK;
}

/* One row of a batch. A failure's message names the prompt (index and prefix), composed here on the worker. */
static int cp_bpe_row(const cp_bpe *t, size_t index, const char *s, size_t n, size_t ctx, int truncate, cp_bpe_ws *ws,
                      int32_t *row, int32_t *len, int32_t *full) {
    int rc = cp_bpe_encode_ws(t, s, n, ws);
    if (rc != CP_OK) return cp_prompt_fail(rc, index, s, n);
    size_t total = ws->n_ids + 2;
    if (full) *full = total > INT32_MAX ? INT32_MAX : (int32_t)total;
    if (total > ctx && !truncate) {
        char prefix[64];
        cp_prompt_prefix(s, n, prefix, sizeof prefix);
        return cp_fail(CP_ERR_TOKENIZER,
                       "prompt %zu (\"%s\") is %zu tokens long with SOT/EOT, more than context_length %zu "
                       "(pass truncate=True to cut it)",
                       index, prefix, total, ctx);
    }
    size_t keep = total > ctx ? ctx - 2 : ws->n_ids;
    row[0] = t->sot;
    memcpy(row + 1, ws->ids, sizeof(int32_t) * keep);
    row[keep + 1] = t->eot;
    if (keep + 2 < ctx) memset(row + keep + 2, 0, sizeof(int32_t) * (ctx - keep - 2));
    *len = (int32_t)(keep + 2);
    return CP_OK;
}

int cp_bpe_encode_batch(const cp_bpe *t, const char *const *texts, const size_t *lens, size_t n, size_t ctx,
                        int truncate, int32_t *out, int32_t *lengths, int32_t *full_lengths, cp_batch_status *status) {
    cp_batch_status_clear(status);
    if (ctx < 2)
        return cp_batch_fail(status, CP_BATCH_NO_INDEX, CP_ERR_INVALID_ARG,
                             "context_length must be at least 2 (SOT and EOT), got %zu", ctx);
    cp_batch_errors errs;
    cp_batch_errors_init(&errs);
    int nt = cp_get_num_threads();
    if ((size_t)nt > n / 8 + 1) nt = (int)(n / 8 + 1);
    int local = t->slots && n >= CP_BPE_LOCAL_MIN_BATCH;
    if (nt <= 1) {
        cp_bpe_ws ws = {0};
        if (local) ws.local = calloc(CP_BPE_LOCAL_SLOTS, sizeof(cp_bpe_slot)); /* NULL: simply not used */
        for (size_t i = 0; i < n; i++) {
            int rc = cp_bpe_row(t, i, texts[i], lens[i], ctx, truncate, &ws, out + i * ctx, &lengths[i],
                                full_lengths ? &full_lengths[i] : NULL);
            if (rc != CP_OK) {
                cp_batch_errors_note(&errs, i, rc);
                break;
            }
        }
        cp_bpe_ws_free(&ws);
    } else {
#pragma omp parallel num_threads(nt)
        {
            cp_bpe_ws ws = {0};
            if (local) ws.local = calloc(CP_BPE_LOCAL_SLOTS, sizeof(cp_bpe_slot));
#pragma omp for schedule(dynamic, 16)
            for (size_t i = 0; i < n; i++) {
                int rc = cp_bpe_row(t, i, texts[i], lens[i], ctx, truncate, &ws, out + i * ctx, &lengths[i],
                                    full_lengths ? &full_lengths[i] : NULL);
                if (rc != CP_OK) cp_batch_errors_note(&errs, i, rc);
            }
            cp_bpe_ws_free(&ws);
        }
    }
    return cp_batch_errors_finish(&errs, status);
}

/* ---- decode --------------------------------------------------------------------------------------------- */

int cp_bpe_decode(const cp_bpe *t, const int32_t *ids, size_t n, char **out, size_t *out_len) {
    *out = NULL, *out_len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab || !t->tok_ok[id])
            CP_FAIL(CP_ERR_INVALID_ARG, "token id %d at position %zu is not in the vocabulary (0..%d)", (int)id, i,
                    (int)t->n_vocab - 1);
        total += t->tok_off[id + 1] - t->tok_off[id];
    }
    char *raw = malloc(total ? total : 1), *txt = malloc(3 * total + 1);
    if (!raw || !txt) {
        free(raw), free(txt);
        CP_FAIL(CP_ERR_NOMEM, "out of memory decoding %zu tokens", n);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = t->tok_off[ids[i] + 1] - t->tok_off[ids[i]];
        memcpy(raw + k, t->tok_pool + t->tok_off[ids[i]], l), k += l;
    }
    size_t m = cp_utf8_replace_invalid((const unsigned char *)raw, k, (unsigned char *)txt);
    free(raw);
    /* "</w>" -> " ", left to right */
    size_t j = 0;
    for (size_t i = 0; i < m;) {
        if (i + 4 <= m && memcmp(txt + i, "</w>", 4) == 0)
            txt[j++] = ' ', i += 4;
        else
            txt[j++] = txt[i++];
    }
    txt[j] = '\0';
    *out = txt, *out_len = j;
    return CP_OK;
}
