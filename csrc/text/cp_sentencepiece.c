/* cp_sentencepiece.c — SentencePiece unigram tokenizer (contract in cp_sentencepiece.h).
 *
 * Owns: the .model protobuf reader (only the fields encoding needs), the piece trie (BFS-numbered nodes whose
 * children are contiguous and sorted by byte, built from the sorted pieces), the two normalisers (darts-clone
 * charsmap walk, per-code-point rules), SentencePiece's whitespace handling, the optimized Viterbi and the
 * unknown / byte-fallback post-pass. Behaviour follows sentencepiece's normalizer.cc, unigram_model.cc
 * (EncodeOptimized), model_interface.cc (InitializePieces) and sentencepiece_processor.cc
 * (PopulateSentencePieceText); the comments name the places where exactness depends on a detail.
 */
#include "text/cp_sentencepiece.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_batch.h"
#include "base/cp_common.h"
#include "text/cp_textutil.h"

#define CP_SP_MAX_PIECES (1 << 24)

struct cp_sp {
    int32_t n;            /* pieces */
    char *blob;           /* piece bytes */
    uint32_t *off;        /* [n + 1] */
    float *score;         /* [n] */
    uint8_t *type;        /* [n] CP_SP_* */
    /* trie over NORMAL / USER_DEFINED / UNUSED pieces: node 0 = root; children of node i are the nodes
     * [first[i], first[i + 1]), sorted by label */
    uint32_t n_nodes;
    uint32_t *first;      /* [n_nodes + 1] */
    uint8_t *label;       /* [n_nodes] */
    int32_t *node_id;     /* [n_nodes] piece id ending here, -1 none */
    uint32_t root_child[256]; /* node of each first byte, 0 = none */
    /* normaliser: a darts-clone charsmap ... */
    uint32_t *units;
    size_t n_units;
    char *repl;           /* NUL-terminated replacement strings */
    size_t repl_len;
    /* ... or per-code-point rules (rule i: code point rcp[i] -> UTF-8 rbytes[roff[i] .. roff[i+1])) */
    size_t n_rules;
    uint32_t *rcp, *roff;
    char *rbytes;
    int add_dummy_prefix, remove_ws, escape_ws, ws_suffix, byte_fallback, has_user;
    int32_t byte_id[256];
    int32_t unk, bos, eos, pad;
    float min_score, max_score;
};

/* ---- UTF-8 as sentencepiece's util.cc decodes it -------------------------------------------------- */

/* OneCharLen: length from the lead byte alone */
static size_t sp_one_char_len(unsigned char c) { return (size_t)"\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[c >> 4]; }

static int sp_trail(unsigned char c) { return (c & 0xC0) == 0x80; }

/* IsValidDecodeUTF8: returns the length of a valid character at s, 0 if invalid (-> U+FFFD, 1 byte) */
static size_t sp_valid_char(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    uint32_t v;
    if (n >= 2 && (c & 0xE0) == 0xC0) {
        v = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
        if (sp_trail(s[1]) && v >= 0x80) return *cp = v, 2;
    } else if (n >= 3 && (c & 0xF0) == 0xE0) {
        v = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if (sp_trail(s[1]) && sp_trail(s[2]) && v >= 0x800 && (v < 0xD800 || v >= 0xE000)) return *cp = v, 3;
    } else if (n >= 4 && (c & 0xF8) == 0xF0) {
        v = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
            (s[3] & 0x3F);
        if (sp_trail(s[1]) && sp_trail(s[2]) && sp_trail(s[3]) && v >= 0x10000 && v <= 0x10FFFF)
            return *cp = v, 4;
    }
    return 0;
}

static size_t sp_put_utf8(uint32_t c, char *o) {
    if (c < 0x80) return o[0] = (char)c, 1;
    if (c < 0x800) return o[0] = (char)(0xC0 | (c >> 6)), o[1] = (char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12)), o[1] = (char)(0x80 | ((c >> 6) & 0x3F)), o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18)), o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F)), o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- protobuf reading ------------------------------------------------------------------------------ */

typedef struct {
    const unsigned char *p, *end;
} sp_pb;

static int sp_varint(sp_pb *b, uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: truncated varint");
        unsigned char c = *b->p++;
        r |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return CP_OK;
        }
    }
    CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: varint longer than 10 bytes");
}

/* next field: *field, *wire; for wire 2 the payload in *sub; for 0 the value in *v; 5 the 4 bytes in *v */
static int sp_field(sp_pb *b, uint32_t *field, int *wire, uint64_t *v, sp_pb *sub, const char *where) {
    uint64_t tag = 0;
    int rc = sp_varint(b, &tag);
    if (rc != CP_OK) return rc;
    *field = (uint32_t)(tag >> 3), *wire = (int)(tag & 7);
    if (*field == 0) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: field number 0 in %s", where);
    switch (*wire) {
    case 0: return sp_varint(b, v);
    case 1:
        if (b->end - b->p < 8) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: truncated 64-bit field in %s", where);
        memcpy(v, b->p, 8), b->p += 8;
        return CP_OK;
    case 2: {
        uint64_t len = 0;
        if ((rc = sp_varint(b, &len)) != CP_OK) return rc;
        if (len > (uint64_t)(b->end - b->p))
            CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: field %u of %s runs %llu bytes past the end", *field,
                    where, (unsigned long long)(len - (uint64_t)(b->end - b->p)));
        sub->p = b->p, sub->end = b->p + len, b->p += len;
        return CP_OK;
    }
    case 5: {
        uint32_t w;
        if (b->end - b->p < 4) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: truncated 32-bit field in %s", where);
        memcpy(&w, b->p, 4), b->p += 4, *v = w;
        return CP_OK;
    }
    default: CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: unsupported wire type %d in %s", *wire, where);
    }
}

/* ---- building ------------------------------------------------------------------------------------- */

static cp_sp *sp_alloc(void) {
    cp_sp *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->add_dummy_prefix = t->remove_ws = t->escape_ws = 1;
    t->unk = t->bos = t->eos = t->pad = -1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    return t;
}

void cp_sp_free(cp_sp *t) {
    if (!t) return;
    free(t->blob), free(t->off), free(t->score), free(t->type);
    free(t->first), free(t->label), free(t->node_id);
    free(t->units), free(t->repl);
    free(t->rcp), free(t->roff), free(t->rbytes);
    free(t);
}

typedef struct {
    const char *s;
    uint32_t len;
    int32_t id;
} sp_key;

static int sp_key_cmp(const void *a, const void *b) {
    const sp_key *x = a, *y = b;
    size_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, m);
    if (c) return c;
    return (x->len > y->len) - (x->len < y->len);
}

static int sp_in_trie(int type) { return type == CP_SP_NORMAL || type == CP_SP_USER_DEFINED || type == CP_SP_UNUSED; }

/* The pieces are in t (blob/off/score/type, n); check them like InitializePieces and build the trie. */
static int sp_finish(cp_sp *t) {
    int32_t n = t->n;
    if (n <= 0) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: no pieces");
    size_t m = 0, total = 0;
    t->min_score = FLT_MAX, t->max_score = FLT_MIN; /* FLT_MIN, as the library: a tiny positive floor */
    int32_t unk = -1;
    for (int32_t i = 0; i < n; i++) {
        uint32_t len = t->off[i + 1] - t->off[i];
        int ty = t->type[i];
        if (len == 0) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: piece %d is empty", (int)i);
        if (memchr(t->blob + t->off[i], 0, len))
            CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: piece %d contains a NUL byte", (int)i);
        if (ty < CP_SP_NORMAL || ty > CP_SP_BYTE)
            CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: piece %d has unknown type %d", (int)i, ty);
        if (ty == CP_SP_NORMAL) {
            if (t->score[i] < t->min_score) t->min_score = t->score[i];
            if (t->score[i] > t->max_score) t->max_score = t->score[i];
        }
        if (ty == CP_SP_UNKNOWN) {
            if (unk >= 0) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: two unknown pieces (%d and %d)", (int)unk, (int)i);
            unk = i;
        }
        if (ty == CP_SP_USER_DEFINED) t->has_user = 1;
        if (ty == CP_SP_BYTE) {
            const char *p = t->blob + t->off[i];
            unsigned v = 0;
            int ok = len == 6 && memcmp(p, "<0x", 3) == 0 && p[5] == '>';
            for (int k = 3; ok && k < 5; k++) {
                char c = p[k];
                int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (d < 0) ok = 0;
                v = v * 16 + (unsigned)(d < 0 ? 0 : d);
            }
            if (!t->byte_fallback)
                CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: byte piece %d found although byte_fallback is off", (int)i);
            if (!ok) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: byte piece %d is not of the form <0xXX>", (int)i);
            if (t->byte_id[v] < 0) t->byte_id[v] = i;
        }
        if (sp_in_trie(ty)) m++, total += len;
    }
    if (unk < 0) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: no unknown piece (<unk>)");
    t->unk = unk;
    if (t->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] < 0)
                CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: byte_fallback is on but the piece <0x%02X> is missing", b);
    if (m == 0) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: no normal pieces");

    sp_key *keys = malloc(sizeof *keys * (n ? (size_t)n : 1));
    if (!keys) CP_FAIL(CP_ERR_NOMEM, "SentencePiece model: out of memory");
    size_t k = 0;
    for (int32_t i = 0; i < n; i++) keys[k].s = t->blob + t->off[i], keys[k].len = t->off[i + 1] - t->off[i], keys[k++].id = i;
    /* duplicates are checked within each group (trie pieces / reserved ones), as InitializePieces does */
    qsort(keys, k, sizeof *keys, sp_key_cmp);
    for (size_t i = 1; i < k; i++)
        if (keys[i].len == keys[i - 1].len && memcmp(keys[i].s, keys[i - 1].s, keys[i].len) == 0 &&
            sp_in_trie(t->type[keys[i].id]) == sp_in_trie(t->type[keys[i - 1].id])) {
            int a = keys[i - 1].id < keys[i].id ? keys[i - 1].id : keys[i].id;
            int b = keys[i - 1].id < keys[i].id ? keys[i].id : keys[i - 1].id;
            free(keys);
            CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: pieces %d and %d are the same string", a, b);
        }
    /* keep the trie pieces, still sorted */
    size_t w = 0;
    for (size_t i = 0; i < k; i++)
        if (sp_in_trie(t->type[keys[i].id])) keys[w++] = keys[i];
    /* BFS build: node i covers keys[lo[i], hi[i]) sharing their first depth[i] bytes */
    size_t cap = total + 1;
    uint32_t *lo = malloc(sizeof(uint32_t) * cap), *hi = malloc(sizeof(uint32_t) * cap);
    uint32_t *depth = malloc(sizeof(uint32_t) * cap);
    t->first = malloc(sizeof(uint32_t) * (cap + 1));
    t->label = malloc(cap);
    t->node_id = malloc(sizeof(int32_t) * cap);
    if (!lo || !hi || !depth || !t->first || !t->label || !t->node_id) {
        free(lo), free(hi), free(depth), free(keys);
        CP_FAIL(CP_ERR_NOMEM, "SentencePiece model: out of memory for the piece trie");
    }
    uint32_t nn = 1;
    lo[0] = 0, hi[0] = (uint32_t)w, depth[0] = 0, t->label[0] = 0;
    for (uint32_t i = 0; i < nn; i++) {
        uint32_t a = lo[i], b = hi[i], d = depth[i];
        t->node_id[i] = -1;
        if (a < b && keys[a].len == d) t->node_id[i] = keys[a++].id;
        t->first[i] = nn;
        while (a < b) {
            unsigned char c = (unsigned char)keys[a].s[d];
            uint32_t e = a + 1;
            while (e < b && (unsigned char)keys[e].s[d] == c) e++;
            lo[nn] = a, hi[nn] = e, depth[nn] = d + 1, t->label[nn] = c;
            if (i == 0) t->root_child[c] = nn;
            nn++;
            a = e;
        }
    }
    t->first[nn] = nn;
    t->n_nodes = nn;
    free(lo), free(hi), free(depth), free(keys);
    return CP_OK;
}

/* bos/eos/pad as the processor reports them: the id of "<s>"/"</s>"/"<pad>" when that piece is CONTROL */
static int32_t sp_control_named(const cp_sp *t, const char *name, size_t len) {
    for (int32_t i = 0; i < t->n; i++)
        if (t->type[i] == CP_SP_CONTROL && t->off[i + 1] - t->off[i] == len && memcmp(t->blob + t->off[i], name, len) == 0)
            return i;
    return -1;
}

/* the precompiled charsmap: <u32 trie bytes><darts-clone units><NUL-terminated replacements>; units are
 * bounds-checked during the walk, replacements cut at the blob's end */
static int sp_set_charsmap(cp_sp *t, const unsigned char *p, size_t n) {
    if (n == 0) return CP_OK;
    uint32_t trie;
    if (n <= 4) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: precompiled charsmap of %zu bytes is broken", n);
    memcpy(&trie, p, 4);
    if (trie < 4 || trie % 4 != 0 || (size_t)trie > n - 4)
        CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: charsmap trie size %u does not fit its %zu bytes", trie, n);
    t->n_units = trie / 4;
    t->units = malloc(trie);
    t->repl_len = n - 4 - trie;
    t->repl = malloc(t->repl_len + 1);
    if (!t->units || !t->repl) CP_FAIL(CP_ERR_NOMEM, "SentencePiece model: out of memory");
    memcpy(t->units, p + 4, trie);
    memcpy(t->repl, p + 4 + trie, t->repl_len);
    t->repl[t->repl_len] = 0; /* a replacement running off the end stops there */
    return CP_OK;
}

int cp_sp_create_model(const void *data, size_t n, cp_sp **out) {
    *out = NULL;
    if (!data || n == 0) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece model: empty file");
    cp_sp *t = sp_alloc();
    if (!t) CP_FAIL(CP_ERR_NOMEM, "SentencePiece model: out of memory");
    int rc;
    sp_pb top = {data, (const unsigned char *)data + n}, sub, inner;
    uint32_t f;
    int wire;
    uint64_t v;
    /* pass 1: count pieces and their bytes; read the specs */
    size_t npieces = 0, nbytes = 0;
    int model_type = 1;
    const unsigned char *cm = NULL;
    size_t cm_len = 0;
    while (top.p < top.end) {
        if ((rc = sp_field(&top, &f, &wire, &v, &sub, "ModelProto")) != CP_OK) goto fail;
        if (f == 1 && wire == 2) {
            npieces++;
            nbytes += (size_t)(sub.end - sub.p);
        } else if (f == 2 && wire == 2) {
            while (sub.p < sub.end) {
                if ((rc = sp_field(&sub, &f, &wire, &v, &inner, "TrainerSpec")) != CP_OK) goto fail;
                if (wire != 0) continue;
                if (f == 3) model_type = (int)v;
                else if (f == 35) t->byte_fallback = v != 0;
                else if (f == 24) t->ws_suffix = v != 0;
            }
        } else if (f == 3 && wire == 2) {
            while (sub.p < sub.end) {
                if ((rc = sp_field(&sub, &f, &wire, &v, &inner, "NormalizerSpec")) != CP_OK) goto fail;
                if (f == 2 && wire == 2) cm = inner.p, cm_len = (size_t)(inner.end - inner.p);
                else if (f == 3 && wire == 0) t->add_dummy_prefix = v != 0;
                else if (f == 4 && wire == 0) t->remove_ws = v != 0;
                else if (f == 5 && wire == 0) t->escape_ws = v != 0;
            }
        }
    }
    if (model_type != 1) {
        rc = cp_fail(CP_ERR_TOKENIZER, "SentencePiece model: model_type %d is not unigram (1); only unigram models are "
                                       "supported", model_type);
        goto fail;
    }
    if (npieces == 0 || npieces > CP_SP_MAX_PIECES) {
        rc = cp_fail(CP_ERR_TOKENIZER, "SentencePiece model: %zu pieces (need 1..%d)", npieces, CP_SP_MAX_PIECES);
        goto fail;
    }
    t->n = (int32_t)npieces;
    t->blob = malloc(nbytes + 1);
    t->off = malloc(sizeof(uint32_t) * (npieces + 1));
    t->score = malloc(sizeof(float) * npieces);
    t->type = malloc(npieces);
    if (!t->blob || !t->off || !t->score || !t->type) {
        rc = cp_fail(CP_ERR_NOMEM, "SentencePiece model: out of memory for %zu pieces", npieces);
        goto fail;
    }
    /* pass 2: the pieces */
    top.p = data;
    size_t i = 0, pos = 0;
    while (top.p < top.end) {
        if ((rc = sp_field(&top, &f, &wire, &v, &sub, "ModelProto")) != CP_OK) goto fail;
        if (!(f == 1 && wire == 2)) continue;
        const unsigned char *ps = NULL;
        size_t pl = 0;
        int have_piece = 0;
        float score = 0.0f;
        uint64_t type = CP_SP_NORMAL;
        while (sub.p < sub.end) {
            if ((rc = sp_field(&sub, &f, &wire, &v, &inner, "SentencePiece")) != CP_OK) goto fail;
            if (f == 1 && wire == 2) ps = inner.p, pl = (size_t)(inner.end - inner.p), have_piece = 1;
            else if (f == 2 && wire == 5) {
                uint32_t u = (uint32_t)v;
                memcpy(&score, &u, 4);
            } else if (f == 3 && wire == 0) type = v;
        }
        if (!have_piece) {
            rc = cp_fail(CP_ERR_TOKENIZER, "SentencePiece model: piece %zu has no string", i);
            goto fail;
        }
        if (type < CP_SP_NORMAL || type > CP_SP_BYTE) {
            rc = cp_fail(CP_ERR_TOKENIZER, "SentencePiece model: piece %zu has unknown type %llu", i, (unsigned long long)type);
            goto fail;
        }
        t->off[i] = (uint32_t)pos;
        if (pl) memcpy(t->blob + pos, ps, pl);
        pos += pl;
        t->score[i] = score;
        t->type[i] = (uint8_t)type;
        i++;
    }
    t->off[i] = (uint32_t)pos;
    if ((rc = sp_set_charsmap(t, cm, cm_len)) != CP_OK) goto fail;
    if ((rc = sp_finish(t)) != CP_OK) goto fail;
    t->bos = sp_control_named(t, "<s>", 3);
    t->eos = sp_control_named(t, "</s>", 4);
    t->pad = sp_control_named(t, "<pad>", 5);
    *out = t;
    return CP_OK;
fail:
    cp_sp_free(t);
    return rc;
}

int cp_sp_create_table(const cp_sp_table *tb, cp_sp **out) {
    *out = NULL;
    if (!tb || tb->n_pieces <= 0 || tb->n_pieces > CP_SP_MAX_PIECES || !tb->blob || !tb->offsets || !tb->scores)
        CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece piece table: no pieces");
    int32_t n = tb->n_pieces;
    for (int32_t i = 0; i < n; i++)
        if (tb->offsets[i + 1] < tb->offsets[i])
            CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece piece table: offsets decrease at piece %d", (int)i);
    int32_t sp_ids[4] = {tb->unk_id, tb->bos_id, tb->eos_id, tb->pad_id};
    for (int k = 0; k < 4; k++)
        if (sp_ids[k] < -1 || sp_ids[k] >= n || (k == 0 && sp_ids[k] < 0))
            CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece piece table: special id %d outside [0, %d)", (int)sp_ids[k], (int)n);
    cp_sp *t = sp_alloc();
    if (!t) CP_FAIL(CP_ERR_NOMEM, "SentencePiece piece table: out of memory");
    int rc = CP_OK;
    size_t nbytes = tb->offsets[n] - tb->offsets[0];
    t->n = n;
    t->blob = malloc(nbytes + 1);
    t->off = malloc(sizeof(uint32_t) * ((size_t)n + 1));
    t->score = malloc(sizeof(float) * (size_t)n);
    t->type = malloc((size_t)n);
    if (!t->blob || !t->off || !t->score || !t->type) {
        rc = cp_fail(CP_ERR_NOMEM, "SentencePiece piece table: out of memory");
        goto fail;
    }
    memcpy(t->blob, tb->blob + tb->offsets[0], nbytes);
    for (int32_t i = 0; i <= n; i++) t->off[i] = tb->offsets[i] - tb->offsets[0];
    memcpy(t->score, tb->scores, sizeof(float) * (size_t)n);
    for (int32_t i = 0; i < n; i++) t->type[i] = tb->types ? tb->types[i] : CP_SP_NORMAL;
    if (!tb->types) {
        t->type[tb->unk_id] = CP_SP_UNKNOWN;
        for (int k = 1; k < 4; k++)
            if (sp_ids[k] >= 0) t->type[sp_ids[k]] = CP_SP_CONTROL;
    }
    /* rules -> UTF-8 replacements */
    if (tb->n_rules) {
        size_t nr = tb->n_rules;
        if (!tb->rule_cp || !tb->rule_off || !tb->rule_out) {
            rc = cp_fail(CP_ERR_TOKENIZER, "SentencePiece piece table: normalisation rules without arrays");
            goto fail;
        }
        uint32_t nout = tb->rule_off[nr];
        t->rcp = malloc(sizeof(uint32_t) * nr);
        t->roff = malloc(sizeof(uint32_t) * (nr + 1));
        t->rbytes = malloc((size_t)nout * 4 + 1);
        if (!t->rcp || !t->roff || !t->rbytes) {
            rc = cp_fail(CP_ERR_NOMEM, "SentencePiece piece table: out of memory");
            goto fail;
        }
        size_t pos = 0;
        for (size_t i = 0; i < nr; i++) {
            if ((i > 0 && tb->rule_cp[i] <= tb->rule_cp[i - 1]) || tb->rule_off[i + 1] < tb->rule_off[i] ||
                tb->rule_off[i + 1] > nout) {
                rc = cp_fail(CP_ERR_TOKENIZER, "SentencePiece piece table: normalisation rule %zu is out of order", i);
                goto fail;
            }
            t->rcp[i] = tb->rule_cp[i], t->roff[i] = (uint32_t)pos;
            for (uint32_t k = tb->rule_off[i]; k < tb->rule_off[i + 1]; k++) {
                uint32_t c = tb->rule_out[k];
                if (c == 0 || c > 0x10FFFF || (c >= 0xD800 && c < 0xE000)) {
                    rc = cp_fail(CP_ERR_TOKENIZER, "SentencePiece piece table: rule %zu maps to invalid code point 0x%X",
                                 i, (unsigned)c);
                    goto fail;
                }
                pos += sp_put_utf8(c, t->rbytes + pos);
            }
        }
        t->roff[nr] = (uint32_t)pos;
        t->n_rules = nr;
    }
    if ((rc = sp_finish(t)) != CP_OK) goto fail;
    t->bos = tb->bos_id, t->eos = tb->eos_id, t->pad = tb->pad_id;
    *out = t;
    return CP_OK;
fail:
    cp_sp_free(t);
    return rc;
}

int32_t cp_sp_vocab_size(const cp_sp *t) { return t->n; }

void cp_sp_special_ids(const cp_sp *t, int32_t *unk, int32_t *bos, int32_t *eos, int32_t *pad) {
    if (unk) *unk = t->unk;
    if (bos) *bos = t->bos;
    if (eos) *eos = t->eos;
    if (pad) *pad = t->pad;
}

const char *cp_sp_id_to_piece(const cp_sp *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n) return NULL;
    if (len) *len = t->off[id + 1] - t->off[id];
    return t->blob + t->off[id];
}

int cp_sp_piece_type(const cp_sp *t, int32_t id) { return (id < 0 || id >= t->n) ? 0 : t->type[id]; }

/* ---- trie ------------------------------------------------------------------------------------------ */

static uint32_t sp_child(const cp_sp *t, uint32_t node, unsigned char c) {
    if (node == 0) return t->root_child[c];
    uint32_t a = t->first[node], b = t->first[node + 1];
    while (a < b) {
        uint32_t m = a + (b - a) / 2;
        if (t->label[m] < c) a = m + 1;
        else b = m;
    }
    return (a < t->first[node + 1] && t->label[a] == c) ? a : 0;
}

/* ---- normalisation ----------------------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap, limit;
} sp_buf;

static int sp_buf_put(sp_buf *b, const char *s, size_t n) {
    if (b->n + n > b->limit)
        CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece: normalisation grows the text past %zu bytes (a hostile charsmap?)",
                b->limit);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) CP_FAIL(CP_ERR_NOMEM, "SentencePiece: out of memory normalising");
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return CP_OK;
}

/* darts-clone DoubleArray unit fields */
static uint32_t da_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

/* NormalizePrefix: the replacement for the longest rule at s[0..n) and the bytes it consumes */
static void sp_norm_prefix(const cp_sp *t, const unsigned char *s, size_t n, const char **rep, size_t *rep_len,
                           size_t *consumed) {
    static const char kFFFD[] = "\xEF\xBF\xBD";
    if (t->has_user) { /* user-defined symbols pass through unnormalised: longest one that is a prefix */
        uint32_t node = 0;
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            node = sp_child(t, node, s[i]);
            if (!node) break;
            int32_t id = t->node_id[node];
            if (id >= 0 && t->type[id] == CP_SP_USER_DEFINED) best = i + 1;
        }
        if (best) {
            *rep = (const char *)s, *rep_len = *consumed = best;
            return;
        }
    }
    if (t->units) {
        const uint32_t *u = t->units;
        size_t nu = t->n_units, node = da_offset(u[0]), best = 0;
        uint32_t value = 0;
        for (size_t i = 0; i < n; i++) {
            node ^= s[i];
            if (node >= nu) break;
            uint32_t unit = u[node];
            if ((unit & 0x800000FFu) != s[i]) break;
            node ^= da_offset(unit);
            if (node >= nu) break;
            if (unit & 0x100u) best = i + 1, value = u[node] & 0x7FFFFFFFu;
        }
        if (best) {
            if (value > t->repl_len) value = (uint32_t)t->repl_len;
            *rep = t->repl + value, *rep_len = strlen(t->repl + value), *consumed = best;
            return;
        }
    }
    uint32_t cp;
    size_t len = sp_valid_char(s, n, &cp);
    if (len == 0) {
        *rep = kFFFD, *rep_len = 3, *consumed = 1;
        return;
    }
    if (t->n_rules) {
        size_t a = 0, b = t->n_rules;
        while (a < b) {
            size_t m = a + (b - a) / 2;
            if (t->rcp[m] < cp) a = m + 1;
            else b = m;
        }
        if (a < t->n_rules && t->rcp[a] == cp) {
            *rep = t->rbytes + t->roff[a], *rep_len = t->roff[a + 1] - t->roff[a], *consumed = len;
            return;
        }
    }
    *rep = (const char *)s, *rep_len = *consumed = len;
}

static int sp_add_ws(const cp_sp *t, sp_buf *b) {
    return t->escape_ws ? sp_buf_put(b, "\xE2\x96\x81", 3) : sp_buf_put(b, " ", 1);
}

/* Normalizer::Normalize into b (b->n = 0 on entry) */
static int sp_normalize_buf(const cp_sp *t, const char *text, size_t n, sp_buf *b) {
    const unsigned char *s = (const unsigned char *)text;
    size_t pos = 0, consumed, rl;
    const char *rep;
    int rc;
    b->n = 0;
    b->limit = n > (SIZE_MAX - 1024) / 64 ? SIZE_MAX / 2 : 64 * n + 1024;
    if (n == 0) return CP_OK;
    if (t->remove_ws)
        while (pos < n) {
            sp_norm_prefix(t, s + pos, n - pos, &rep, &rl, &consumed);
            if (!(rl == 1 && rep[0] == ' ')) break;
            pos += consumed;
        }
    if (pos >= n) return CP_OK;
    if (!t->ws_suffix && t->add_dummy_prefix && (rc = sp_add_ws(t, b)) != CP_OK) return rc;
    int prev_space = t->remove_ws;
    while (pos < n) {
        sp_norm_prefix(t, s + pos, n - pos, &rep, &rl, &consumed);
        while (prev_space && rl > 0 && rep[0] == ' ') rep++, rl--;
        if (rl > 0) {
            size_t k = 0;
            while (k < rl) {
                size_t e = k;
                while (e < rl && !(t->escape_ws && rep[e] == ' ')) e++;
                if (e > k && (rc = sp_buf_put(b, rep + k, e - k)) != CP_OK) return rc;
                if (e < rl) {
                    if ((rc = sp_add_ws(t, b)) != CP_OK) return rc;
                    e++;
                }
                k = e;
            }
            prev_space = rep[rl - 1] == ' ';
        }
        pos += consumed;
        if (!t->remove_ws) prev_space = 0;
    }
    if (t->remove_ws) {
        const char *sp = t->escape_ws ? "\xE2\x96\x81" : " ";
        size_t sl = t->escape_ws ? 3 : 1;
        while (b->n >= sl && memcmp(b->p + b->n - sl, sp, sl) == 0) b->n -= sl;
    }
    if (t->ws_suffix && t->add_dummy_prefix && (rc = sp_add_ws(t, b)) != CP_OK) return rc;
    return CP_OK;
}

int cp_sp_normalize(const cp_sp *t, const char *s, size_t n, char **out, size_t *out_len) {
    *out = NULL, *out_len = 0;
    sp_buf b = {0};
    int rc = sp_normalize_buf(t, s, n, &b);
    if (rc == CP_OK && !b.p) rc = sp_buf_put(&b, "", 0);
    if (rc != CP_OK) {
        free(b.p);
        return rc;
    }
    b.p[b.n] = 0;
    *out = b.p, *out_len = b.n;
    return CP_OK;
}

/* ---- Viterbi ----------------------------------------------------------------------------------------- */

typedef struct {
    int32_t id;    /* piece id (unk for an unknown character) */
    float score;   /* best path score ending here */
    int32_t start; /* where the last piece starts, -1 = not reached */
} sp_best;

/* unigram::Model::EncodeOptimized over s[0..n), then PopulateSentencePieceText's unknown handling -> ids */
static int sp_viterbi(const cp_sp *t, const char *str, size_t n, int32_t **ids, size_t *n_ids) {
    const unsigned char *s = (const unsigned char *)str;
    *ids = NULL, *n_ids = 0;
    if (n == 0) return CP_OK;
    if (n > INT32_MAX - 1) CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece: text of %zu bytes is too long", n);
    sp_best *best = malloc(sizeof *best * (n + 1));
    if (!best) CP_FAIL(CP_ERR_NOMEM, "SentencePiece: out of memory for a %zu-byte lattice", n);
    for (size_t i = 0; i <= n; i++) best[i].id = -1, best[i].score = 0.0, best[i].start = -1;
    const float unk_score = t->min_score - 10.0f;
    size_t start = 0;
    while (start < n) {
        const float till = best[start].score;
        int has_single = 0;
        size_t mblen = sp_one_char_len(s[start]);
        if (mblen > n - start) mblen = n - start;
        uint32_t node = 0;
        for (size_t key = start; key < n;) {
            node = sp_child(t, node, s[key]);
            if (!node) break;
            key++;
            int32_t id = t->node_id[node];
            if (id < 0 || t->type[id] == CP_SP_UNUSED) continue;
            size_t length = key - start;
            /* path scores in float (the library's best_path_score): ties between equal-score paths then break by
             * float rounding exactly as the library's do; see the header for the one known divergence */
            const float score = t->type[id] == CP_SP_USER_DEFINED ? (float)((double)((float)length * t->max_score) - 0.1)
                                                                  : t->score[id];
            const float cand = score + till;
            sp_best *tg = &best[key];
            if (tg->start == -1 || cand > tg->score) tg->score = cand, tg->start = (int32_t)start, tg->id = id;
            if (!has_single && length == mblen) has_single = 1;
        }
        if (!has_single) {
            const float cand = unk_score + till;
            sp_best *tg = &best[start + mblen];
            if (tg->start == -1 || cand > tg->score) tg->score = cand, tg->start = (int32_t)start, tg->id = t->unk;
        }
        start += mblen;
    }
    /* backtrack: count, then emit forward */
    size_t count = 0;
    for (size_t end = n; end > 0; end = (size_t)best[end].start) {
        if (best[end].start < 0) {
            free(best);
            CP_FAIL(CP_ERR_TOKENIZER, "SentencePiece: the normalised text is not valid UTF-8 at byte %zu (charsmap)", end);
        }
        count++;
    }
    size_t *ends = malloc(sizeof(size_t) * count);
    if (!ends) {
        free(best);
        CP_FAIL(CP_ERR_NOMEM, "SentencePiece: out of memory");
    }
    size_t k = count, cap = 0;
    for (size_t end = n; end > 0; end = (size_t)best[end].start) ends[--k] = end;
    for (k = 0; k < count; k++) {
        size_t e = ends[k], b = (size_t)best[e].start;
        cap += (best[e].id == t->unk && t->byte_fallback) ? e - b : 1;
    }
    int32_t *o = malloc(sizeof(int32_t) * (cap ? cap : 1));
    if (!o) {
        free(ends), free(best);
        CP_FAIL(CP_ERR_NOMEM, "SentencePiece: out of memory");
    }
    size_t m = 0;
    int prev_unk = 0;
    for (k = 0; k < count; k++) {
        size_t e = ends[k], b = (size_t)best[e].start;
        int32_t id = best[e].id;
        int is_unk = t->type[id] == CP_SP_UNKNOWN;
        if (is_unk && t->byte_fallback) {
            for (size_t j = b; j < e; j++) o[m++] = t->byte_id[s[j]];
        } else if (!(is_unk && prev_unk)) {
            o[m++] = id;
        }
        prev_unk = is_unk;
    }
    free(ends), free(best);
    *ids = o, *n_ids = m;
    if (m == 0) free(o), *ids = NULL;
    return CP_OK;
}

int cp_sp_encode(const cp_sp *t, const char *s, size_t n, int32_t **ids, size_t *n_ids) {
    *ids = NULL, *n_ids = 0;
    sp_buf b = {0};
    int rc = sp_normalize_buf(t, s, n, &b);
    if (rc == CP_OK) rc = sp_viterbi(t, b.p, b.n, ids, n_ids);
    free(b.p);
    return rc;
}

static int sp_row(const cp_sp *t, const char *s, size_t n, size_t L, int32_t *row, int32_t *len) {
    int32_t *ids = NULL;
    size_t nid = 0;
    int rc = cp_sp_encode(t, s, n, &ids, &nid);
    if (rc != CP_OK) return rc;
    size_t nspec = (t->bos >= 0) + (t->eos >= 0), keep = nid < L - nspec ? nid : L - nspec, k = 0;
    if (t->bos >= 0) row[k++] = t->bos;
    if (keep) memcpy(row + k, ids, sizeof(int32_t) * keep);
    k += keep;
    if (t->eos >= 0) row[k++] = t->eos;
    *len = (int32_t)k;
    int32_t pad = t->pad >= 0 ? t->pad : 0;
    for (; k < L; k++) row[k] = pad;
    free(ids);
    return CP_OK;
}

int cp_sp_encode_batch(const cp_sp *t, const char *const *texts, const size_t *lens, size_t n, size_t max_length,
                       int32_t *out, int32_t *lengths, cp_batch_status *status) {
    cp_batch_status_clear(status);
    size_t nspec = (t->bos >= 0) + (t->eos >= 0);
    if (max_length < nspec + 1 || max_length > INT32_MAX)
        return cp_batch_fail(status, CP_BATCH_NO_INDEX, CP_ERR_INVALID_ARG,
                             "max_length must be in [%zu, %d] (the specials and one token), got %zu", nspec + 1,
                             INT32_MAX, max_length);
    cp_batch_errors errs;
    cp_batch_errors_init(&errs);
    int nt = cp_get_num_threads();
    if ((size_t)nt > n / 8 + 1) nt = (int)(n / 8 + 1);
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt) if (nt > 1)
    for (size_t i = 0; i < n; i++) {
        if (cp_batch_errors_below(&errs, i)) continue;
        const int rc = sp_row(t, texts[i], lens[i], max_length, out + i * max_length, &lengths[i]);
        if (rc != CP_OK) {
            char prefix[64], inner[512];
            cp_prompt_prefix(texts[i], lens[i], prefix, sizeof prefix);
            snprintf(inner, sizeof inner, "%s", cp_last_error());
            cp_fail(rc, "prompt %zu (\"%s\"): %s", i, prefix, inner);
            cp_batch_errors_note(&errs, i, rc);
        }
    }
    return cp_batch_errors_finish(&errs, status);
}
