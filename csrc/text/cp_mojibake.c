/* cp_mojibake.c — ftfy 6.3's fix_encoding (mojibake repair) on code-point arrays.
 *
 * Reproduces, for ftfy's default TextFixerConfig:
 *   fix_encoding_and_explain     repeat one step until the text stops changing;
 *   _fix_encoding_one_step...    pure ASCII or not is_bad -> done; else for each of CHARMAP_ENCODINGS (in order) that
 *                                can encode the text: encode, restore_byte_a0 (not for macroman; only if
 *                                ALTERED_UTF8_RE matches), replace_lossy_sequences (sloppy codecs only), decode as
 *                                utf-8-variants (UTF-8 + Java's C0 80 null + CESU-8 surrogate pairs); the first decode
 *                                that succeeds is the step. Else decode_inconsistent_utf8 (UTF8_DETECTOR_RE spans that
 *                                are is_bad are fixed recursively), else latin-1 -> strict windows-1252, else
 *                                fix_c1_controls;
 *   badness.is_bad               BADNESS_RE, hand-matched below alternative by alternative.
 * The regular expressions are matched by hand with Python's semantics (leftmost match, ordered alternation,
 * non-overlapping substitution, '$' also before a final '\n'). Character classes come from ftfy's own data via
 * csrc/tools/gen_mojibake_tables.py (cp_mojibake_tables.inc).
 *
 * Bounds ftfy does not have (so that crafted input cannot loop or recurse without limit): at most MJ_MAX_STEPS
 * steps per fix_encoding call and MJ_MAX_DEPTH levels of decode_inconsistent_utf8 recursion; past them the text is
 * left as it is. Every step that changes text keeps or shrinks its length, so real text stays far below both.
 */
#include "text/cp_mojibake.h"

#include "base/cp_common.h"
#include "base/cp_utf8.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t cp;
    uint16_t mask;
    uint8_t byte[10];
} cp_mj_enc;

#include "text/cp_mojibake_tables.inc"

#define MJ_MAX_STEPS 64
#define MJ_MAX_DEPTH 16

/* ---- growable buffers ------------------------------------------------------------------------------- */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} mj_u32;

typedef struct {
    uint8_t *v;
    size_t n, cap;
} mj_u8;

static int u32_reserve(mj_u32 *b, size_t need) {
    if (need <= b->cap) return CP_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    uint32_t *v = realloc(b->v, cap * sizeof(uint32_t));
    if (!v) CP_FAIL(CP_ERR_NOMEM, "normalize: out of memory (mojibake repair)");
    b->v = v, b->cap = cap;
    return CP_OK;
}

static int u32_append(mj_u32 *b, const uint32_t *s, size_t n) {
    CP_CHECK(u32_reserve(b, b->n + n));
    if (n) memcpy(b->v + b->n, s, n * sizeof(uint32_t));
    b->n += n;
    return CP_OK;
}

static int u8_reserve(mj_u8 *b, size_t need) {
    if (need <= b->cap) return CP_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    uint8_t *v = realloc(b->v, cap);
    if (!v) CP_FAIL(CP_ERR_NOMEM, "normalize: out of memory (mojibake repair)");
    b->v = v, b->cap = cap;
    return CP_OK;
}

static int u32_same(const uint32_t *a, size_t an, const uint32_t *b, size_t bn) {
    return an == bn && (an == 0 || memcmp(a, b, an * sizeof(uint32_t)) == 0);
}

/* ---- character classes ------------------------------------------------------------------------------- */

static uint32_t mj_class(uint32_t c) {
    if (c < CP_MJ_DENSE_N) return CP_MJ_DENSE[c];
    if (c < 0x1680) return 0;
    if (c > 0x25CA) {
        if (c != 0x3000 && c != 0xF8FF && c != 0xFB01 && c != 0xFB02 && c != 0xFFFD) return 0;
    }
    size_t lo = 0, hi = CP_MJ_SPARSE_N;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (CP_MJ_SPARSE[mid][0] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < CP_MJ_SPARSE_N && CP_MJ_SPARSE[lo][0] == c ? CP_MJ_SPARSE[lo][1] : 0;
}

/* re's \w for str patterns */
static int mj_is_word(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    size_t lo = 0, hi = CP_MJ_WORD_N;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (CP_MJ_WORD[mid][1] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < CP_MJ_WORD_N && CP_MJ_WORD[lo][0] <= c;
}

static int in_list(uint32_t c, const uint32_t *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (list[i] == c) return 1;
    return 0;
}
#define IN(c, ...) in_list((c), (const uint32_t[]){__VA_ARGS__}, sizeof((const uint32_t[]){__VA_ARGS__}) / 4)

static int is_ascii_letter(uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* ---- BADNESS_RE ------------------------------------------------------------------------------------- */

#define LA MJ_LOWER_ACCENTED
#define UA MJ_UPPER_ACCENTED
#define BX MJ_BOX
#define SP MJ_START_PUNCTUATION
#define EP MJ_END_PUNCTUATION
#define CU MJ_CURRENCY
#define NU MJ_NUMERIC
#define LW MJ_LAW
#define BD MJ_BAD
#define LC MJ_LOWER_COMMON
#define UC MJ_UPPER_COMMON
#define KA MJ_KAOMOJI
#define CM MJ_COMMON
#define NOCP 0xFFFFFFFFu /* "no character here" (never in any class) */

/* Does one of BADNESS_RE's alternatives match at v[i]? m0 = mj_class(v[i]) (nonzero). */
static int bad_at(const uint32_t *v, size_t n, size_t i, uint32_t m0) {
    uint32_t c0 = v[i];
    uint32_t c1 = i + 1 < n ? v[i + 1] : NOCP, c2 = i + 2 < n ? v[i + 2] : NOCP, c3 = i + 3 < n ? v[i + 3] : NOCP;
    uint32_t m1 = c1 != NOCP ? mj_class(c1) : 0, m2 = c2 != NOCP ? mj_class(c2) : 0;

    /* [c1] */
    if (m0 & MJ_C1) return 1;
    /* [bad lower_acc upper_acc box start end currency numeric law] [bad] */
    if ((m0 & (BD | LA | UA | BX | SP | EP | CU | NU | LW)) && (m1 & BD)) return 1;
    /* [a-zA-Z] [lower_common upper_common] [bad] */
    if ((m0 & MJ_AZ_AZ) && (m1 & (LC | UC)) && (m2 & BD)) return 1;
    /* [bad] [lower_acc upper_acc box start end currency numeric law] */
    if ((m0 & BD) && (m1 & (LA | UA | BX | SP | EP | CU | NU | LW))) return 1;
    /* [lower_acc lower_common box end currency numeric] [upper_acc] */
    if ((m0 & (LA | LC | BX | EP | CU | NU)) && (m1 & UA)) return 1;
    /* [box end currency numeric] [lower_acc] */
    if ((m0 & (BX | EP | CU | NU)) && (m1 & LA)) return 1;
    /* [lower_acc box end] [currency] */
    if ((m0 & (LA | BX | EP)) && (m1 & CU)) return 1;
    /* \s [upper_acc] [currency] */
    if ((m0 & MJ_SPACE) && (m1 & UA) && (m2 & CU)) return 1;
    /* [upper_acc box] [numeric law] */
    if ((m0 & (UA | BX)) && (m1 & (NU | LW))) return 1;
    /* [lower_acc upper_acc box currency end] [start] [numeric] */
    if ((m0 & (LA | UA | BX | CU | EP)) && (m1 & SP) && (m2 & NU)) return 1;
    /* [lower_acc upper_acc currency numeric box law] [end] [start] */
    if ((m0 & (LA | UA | CU | NU | BX | LW)) && (m1 & EP) && (m2 & SP)) return 1;
    /* [currency numeric box] [start] */
    if ((m0 & (CU | NU | BX)) && (m1 & SP)) return 1;
    /* [a-z] [upper_acc] [start currency] */
    if ((m0 & MJ_A_Z) && (m1 & UA) && (m2 & (SP | CU))) return 1;
    /* [box] [kaomoji] */
    if ((m0 & BX) && (m1 & KA)) return 1;
    /* [lower_acc upper_acc currency numeric start end law] [box] */
    if ((m0 & (LA | UA | CU | NU | SP | EP | LW)) && (m1 & BX)) return 1;
    /* [box] [end] */
    if ((m0 & BX) && (m1 & EP)) return 1;
    /* [lower_acc upper_acc] [start end] \w */
    if ((m0 & (LA | UA)) && (m1 & (SP | EP)) && c2 != NOCP && mj_is_word(c2)) return 1;
    /* [upper_acc]° */
    if ((m0 & UA) && c1 == 0xB0) return 1;
    /* [a-z]\s?[ÃÂ][ ] */
    if (m0 & MJ_A_Z) {
        if ((c1 == 0xC3 || c1 == 0xC2) && c2 == ' ') return 1;
        if ((m1 & MJ_SPACE) && (c2 == 0xC3 || c2 == 0xC2) && c3 == ' ') return 1;
    }
    /* [a-z.,?!{end}] Â [ {start}{end}] */
    if ((m0 & (MJ_A_Z_PUNCT | EP)) && c1 == 0xC2 && (c2 == ' ' || (m2 & (SP | EP)))) return 1;
    if (!(m0 & MJ_LIT)) return 0;

    switch (c0) {
    case 0x152: /* [Œœ][^A-Za-z] */
    case 0x153:
        return c1 != NOCP && !is_ascii_letter(c1);
    case 0xC2: /* Â */
    case 0xC3: /* Ã */
    case 0xCE: /* Î */
    case 0xD0: /* Ð */
        /* [ÂÃÎÐ][€œŠš¢£Ÿž\xa0\xad®©°·»{start}{end}–—´] */
        if ((m1 & (SP | EP)) || IN(c1, 0x20AC, 0x153, 0x160, 0x161, 0xA2, 0xA3, 0x178, 0x17E, 0xA0, 0xAD, 0xAE, 0xA9,
                                   0xB0, 0xB7, 0xBB, 0x2013, 0x2014, 0xB4))
            return 1;
        /* Ã[\xa0¡] */
        if (c0 == 0xC3 && (c1 == 0xA0 || c1 == 0xA1)) return 1;
        /* ^[ÃÂ][ ] */
        if (i == 0 && (c0 == 0xC3 || c0 == 0xC2) && c1 == ' ') return 1;
        return 0;
    case 0xD7: /* × [²³] */
        return c1 == 0xB2 || c1 == 0xB3;
    case 0xD8: /* [ØÙ] [X] [ØÙ] [X] */
    case 0xD9: {
        uint32_t m3 = c3 != NOCP ? mj_class(c3) : 0;
        uint32_t X = CM | CU | BD | NU | SP;
        return ((m1 & X) || IN(c1, 0x178, 0x160, 0xAE, 0xB0, 0xB5, 0xBB)) && (c2 == 0xD8 || c2 == 0xD9) &&
               ((m3 & X) || IN(c3, 0x178, 0x160, 0xAE, 0xB0, 0xB5, 0xBB));
    }
    case 0xE0: /* à[²µ¹¼½¾] */
        return IN(c1, 0xB2, 0xB5, 0xB9, 0xBC, 0xBD, 0xBE);
    case 0x221A: /* √[±∂†≠®™´≤≥¥µø] */
        return IN(c1, 0xB1, 0x2202, 0x2020, 0x2260, 0xAE, 0x2122, 0xB4, 0x2264, 0x2265, 0xA5, 0xB5, 0xF8);
    case 0x2248: /* ≈[°¢] */
        return c1 == 0xB0 || c1 == 0xA2;
    case 0x201A: /* ‚Ä[ìîïòôúùû†°¢π] | ‚[âó][àä°ê] */
        if (c1 == 0xC4 && IN(c2, 0xEC, 0xEE, 0xEF, 0xF2, 0xF4, 0xFA, 0xF9, 0xFB, 0x2020, 0xB0, 0xA2, 0x3C0)) return 1;
        return (c1 == 0xE2 || c1 == 0xF3) && IN(c2, 0xE0, 0xE4, 0xB0, 0xEA);
    case 0x432: /* вЂ */
        return c1 == 0x402;
    case 0x412: /* [ВГРС][c1 bad start end currency °µ][ВГРС] */
    case 0x413:
    case 0x420:
    case 0x421:
        if (((m1 & (MJ_C1 | BD | SP | EP | CU)) || c1 == 0xB0 || c1 == 0xB5) && IN(c2, 0x412, 0x413, 0x420, 0x421))
            return 1;
        /* ГўВЂВ.[A-Za-z ] */
        if (c0 == 0x413 && c1 == 0x45E && c2 == 0x412 && c3 == 0x402 && i + 6 < n && v[i + 4] == 0x412 &&
            v[i + 5] != '\n' && (is_ascii_letter(v[i + 6]) || v[i + 6] == ' '))
            return 1;
        return 0;
    case 0x3B2: /* β€[™\xa0Ά\xad®°] */
        return c1 == 0x20AC && IN(c2, 0x2122, 0xA0, 0x386, 0xAD, 0xAE, 0xB0);
    case 0x392: /* [ΒΓΞΟ][c1 bad start end currency °][ΒΓΞΟ] */
    case 0x393:
    case 0x39E:
    case 0x39F:
        return ((m1 & (MJ_C1 | BD | SP | EP | CU)) || c1 == 0xB0) && IN(c2, 0x392, 0x393, 0x39E, 0x39F);
    case 0x101: /* ā€ */
        return c1 == 0x20AC;
    default:
        return 0;
    }
}

/* In no class and not ASCII: U+25CB..U+F8FE except U+3000 (CJK, Hangul, kana, most symbols). */
static inline int mj_inert_hi(uint32_t c) { return c - 0x25CBu < 0xF8FFu - 0x25CBu && c != 0x3000; }

int cp_mojibake_is_bad(const uint32_t *v, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* no match starts at such a character */
        if (i + 4 <= n && mj_inert_hi(v[i]) & mj_inert_hi(v[i + 1]) & mj_inert_hi(v[i + 2]) & mj_inert_hi(v[i + 3])) {
            i += 4;
            continue;
        }
        /* An alternative that starts with an ASCII character needs a non-ASCII one within the next two: when
         * v[i..i+4] are all ASCII, no match starts at i, i+1 or i+2. */
        if (i + 5 <= n && (v[i] | v[i + 1] | v[i + 2] | v[i + 3] | v[i + 4]) < 0x80) {
            i += 3;
            continue;
        }
        uint32_t c = v[i];
        if (c < 0x80) {
            if (i + 1 >= n) return 0;
            uint32_t d = v[i + 1];
            if (d < 0x80 && !(i + 2 < n && v[i + 2] >= 0x80 && (CP_MJ_DENSE[d] & MJ_SPACE))) {
                i++;
                continue;
            }
        } else if (c > 0x25CA && c < 0xF8FF && c != 0x3000) {
            i++; /* CJK, Hangul, ...: in no class (fast path of mj_class) */
            continue;
        }
        uint32_t m = mj_class(c);
        if (m && bad_at(v, n, i, m)) return 1;
        i++;
    }
    return 0;
}

/* ---- byte-level fixes ------------------------------------------------------------------------------- */

static int cont80_bf(uint8_t b) { return b >= 0x80 && b <= 0xBF; }
static int altered_cont(uint8_t b) { /* [\x80-\x84\x86-\x9f\xa1-\xbf] */
    return (b >= 0x80 && b <= 0x84) || (b >= 0x86 && b <= 0x9F) || (b >= 0xA1 && b <= 0xBF);
}

/* Length of an ALTERED_UTF8_RE match at b[p], 0 if none. */
static size_t altered_at(const uint8_t *b, size_t n, size_t p) {
    uint8_t x = b[p];
    size_t r = n - p;
    if (x == 0xC2 || x == 0xC3 || x == 0xC5 || x == 0xCE || x == 0xD0 || x == 0xD9)
        return r >= 2 && b[p + 1] == ' ' ? 2 : 0;
    if ((x == 0xE2 || x == 0xE3) && r >= 3 && b[p + 1] == ' ' && altered_cont(b[p + 2])) return 3;
    if (x >= 0xE0 && x <= 0xE3) return r >= 3 && altered_cont(b[p + 1]) && b[p + 2] == ' ' ? 3 : 0;
    if (x == 0xF0 && r >= 4) {
        if (b[p + 1] == ' ' && cont80_bf(b[p + 2]) && cont80_bf(b[p + 3])) return 4;
        if (cont80_bf(b[p + 1]) && b[p + 2] == ' ' && cont80_bf(b[p + 3])) return 4;
        if (cont80_bf(b[p + 1]) && cont80_bf(b[p + 2]) && b[p + 3] == ' ') return 4;
    }
    return 0;
}

static int altered_search(const uint8_t *b, size_t n) {
    for (size_t p = 0; p < n; p++)
        if (b[p] >= 0xC2 && altered_at(b, n, p)) return 1;
    return 0;
}

static int starts_with(const uint8_t *b, size_t n, size_t p, const char *s) {
    size_t k = strlen(s);
    return n - p >= k && memcmp(b + p, s, k) == 0;
}

/* fixes.restore_byte_a0: A_GRAVE_WORD_RE.sub(b"\xc3\xa0 "), then ALTERED_UTF8_RE matches get 0x20 -> 0xA0. */
static int restore_byte_a0(mj_u8 *buf, mj_u8 *tmp) {
    const uint8_t *b = buf->v;
    size_t n = buf->n;
    tmp->n = 0;
    CP_CHECK(u8_reserve(tmp, n + n / 2 + 1));
    for (size_t p = 0; p < n; p++) {
        /* \xc3 (?! |quele|quela|quilo|s ) */
        if (b[p] == 0xC3 && p + 1 < n && b[p + 1] == ' ' && !starts_with(b, n, p + 2, " ") &&
            !starts_with(b, n, p + 2, "quele") && !starts_with(b, n, p + 2, "quela") &&
            !starts_with(b, n, p + 2, "quilo") && !starts_with(b, n, p + 2, "s ")) {
            tmp->v[tmp->n++] = 0xC3;
            tmp->v[tmp->n++] = 0xA0;
            tmp->v[tmp->n++] = ' ';
            p++;
            continue;
        }
        tmp->v[tmp->n++] = b[p];
    }
    /* ALTERED_UTF8_RE.sub in place (same length) */
    for (size_t p = 0; p < tmp->n;) {
        size_t k = tmp->v[p] >= 0xC2 ? altered_at(tmp->v, tmp->n, p) : 0;
        if (!k) {
            p++;
            continue;
        }
        for (size_t j = p; j < p + k; j++)
            if (tmp->v[j] == 0x20) tmp->v[j] = 0xA0;
        p += k;
    }
    mj_u8 t = *buf;
    *buf = *tmp, *tmp = t;
    return CP_OK;
}

static int l_sub(uint8_t b) { return b == 0x1A || b == '?'; }               /* [\x1a?] */
static int l_cont(uint8_t b) { return b == 0x1A || cont80_bf(b); }          /* [\x1a\x80-\xbf] */
static int l_any(uint8_t b) { return b == 0x1A || b == '?' || cont80_bf(b); } /* [\x1a?\x80-\xbf] */

/* Length of a LOSSY_UTF8_RE match at b[p], 0 if none. */
static size_t lossy_at(const uint8_t *b, size_t n, size_t p) {
    uint8_t x = b[p];
    size_t r = n - p;
    if (x >= 0xC2 && x <= 0xDF && r >= 2 && b[p + 1] == 0x1A) return 2;
    if ((x == 0xC2 || x == 0xC3) && r >= 2 && b[p + 1] == '?') return 2;
    if (x == 0xED && r >= 6 && b[p + 1] >= 0xA0 && b[p + 1] <= 0xAF && b[p + 3] == 0xED && b[p + 4] >= 0xB0 &&
        b[p + 4] <= 0xBF) {
        if (l_sub(b[p + 2]) && l_any(b[p + 5])) return 6;
        if (l_any(b[p + 2]) && l_sub(b[p + 5])) return 6;
    }
    if (x >= 0xE0 && x <= 0xEF && r >= 3) {
        if (l_sub(b[p + 1]) && l_cont(b[p + 2])) return 3;
        if (l_cont(b[p + 1]) && l_sub(b[p + 2])) return 3;
    }
    if (x >= 0xF0 && x <= 0xF4 && r >= 4) {
        if (l_sub(b[p + 1]) && l_cont(b[p + 2]) && l_cont(b[p + 3])) return 4;
        if (l_cont(b[p + 1]) && l_sub(b[p + 2]) && l_cont(b[p + 3])) return 4;
        if (l_cont(b[p + 1]) && l_cont(b[p + 2]) && l_sub(b[p + 3])) return 4;
    }
    if (x == 0x1A) return 1;
    return 0;
}

/* fixes.replace_lossy_sequences: LOSSY_UTF8_RE.sub(EF BF BD). */
static int replace_lossy(mj_u8 *buf, mj_u8 *tmp) {
    const uint8_t *b = buf->v;
    size_t n = buf->n;
    tmp->n = 0;
    CP_CHECK(u8_reserve(tmp, 3 * n + 1));
    for (size_t p = 0; p < n;) {
        size_t k = (b[p] == 0x1A || b[p] >= 0xC2) ? lossy_at(b, n, p) : 0;
        if (k) {
            tmp->v[tmp->n++] = 0xEF, tmp->v[tmp->n++] = 0xBF, tmp->v[tmp->n++] = 0xBD;
            p += k;
        } else {
            tmp->v[tmp->n++] = b[p++];
        }
    }
    mj_u8 t = *buf;
    *buf = *tmp, *tmp = t;
    return CP_OK;
}

/* Python's '$' (no MULTILINE): at the end, or just before a final '\n'. */
static int at_end(const uint8_t *b, size_t n, size_t p) { return p == n || (p + 1 == n && b[p] == '\n'); }

/* bytes.decode("utf-8-variants") (strict). Returns 1 and fills out on success, 0 if it would raise. */
static int decode_utf8_variants(const uint8_t *b, size_t n, mj_u32 *out, int *rc) {
    out->n = 0;
    *rc = u32_reserve(out, n + 1);
    if (*rc) return 0;
    size_t p = 0;
    while (p < n) {
        uint8_t x = b[p];
        uint32_t c;
        if (x < 0x80) {
            c = x, p += 1;
        } else if (x == 0xC0) {
            /* NULL_EXPR \xc0(\x80|$): U+0000, two bytes consumed whatever the second is */
            if (p + 1 < n && (b[p + 1] == 0x80 || at_end(b, n, p + 1)))
                c = 0, p += 2;
            else
                return 0;
        } else if (x == 0xED && p + 1 < n && b[p + 1] >= 0xA0 && b[p + 1] <= 0xBF) {
            /* CESU-8: \xed[\xa0-\xaf][\x80-\xbf]\xed[\xb0-\xbf]([\x80-\xbf]|$), six bytes, else an error */
            if (n - p < 6) return 0;
            if (!(b[p + 1] <= 0xAF && cont80_bf(b[p + 2]) && b[p + 3] == 0xED && b[p + 4] >= 0xB0 && b[p + 4] <= 0xBF &&
                  (cont80_bf(b[p + 5]) || at_end(b, n, p + 5))))
                return 0;
            c = ((uint32_t)(b[p + 1] & 0x0F) << 16) + ((uint32_t)(b[p + 2] & 0x3F) << 10) +
                ((uint32_t)(b[p + 4] & 0x0F) << 6) + (b[p + 5] & 0x3F) + 0x10000;
            p += 6;
        } else { /* everything else is plain strict UTF-8 */
            size_t len;
            if (cp_utf8_decode(b + p, n - p, &c, &len) != CP_UTF8_OK) return 0;
            p += len;
        }
        out->v[out->n++] = c;
    }
    return 1;
}

/* ---- encodings ---------------------------------------------------------------------------------------- */

static const cp_mj_enc *enc_find(uint32_t c) {
    size_t lo = 0, hi = CP_MJ_ENC_N;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (CP_MJ_ENC[mid].cp < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < CP_MJ_ENC_N && CP_MJ_ENC[lo].cp == c ? &CP_MJ_ENC[lo] : NULL;
}

#define MJ_ALL_ENC ((1u << CP_MJ_NENC) - 1)
#define MJ_SLOPPY_MASK                                                                                            \
    ((1u << MJ_ENC_SLOPPY_WINDOWS_1252) | (1u << MJ_ENC_SLOPPY_WINDOWS_1251) | (1u << MJ_ENC_SLOPPY_WINDOWS_1250) | \
     (1u << MJ_ENC_SLOPPY_WINDOWS_1253) | (1u << MJ_ENC_SLOPPY_WINDOWS_1254) | (1u << MJ_ENC_SLOPPY_WINDOWS_1257))

/* The set of CHARMAP_ENCODINGS in which chardata.possible_encoding(text, enc) holds. */
static unsigned possible_encodings(const uint32_t *v, size_t n) {
    unsigned m = MJ_ALL_ENC;
    for (size_t i = 0; i < n && m; i++) {
        uint32_t c = v[i];
        if (c < 0x80 && c != 0x1A) continue;
        const cp_mj_enc *e = enc_find(c);
        m &= e ? e->mask : 0;
    }
    return m;
}

static int encode_charmap(const uint32_t *v, size_t n, int k, mj_u8 *out) {
    out->n = 0;
    CP_CHECK(u8_reserve(out, n + 1));
    for (size_t i = 0; i < n; i++) {
        uint32_t c = v[i];
        if (c < 0x80 && c != 0x1A) {
            out->v[out->n++] = (uint8_t)c;
        } else {
            const cp_mj_enc *e = enc_find(c); /* present: possible_encodings checked it */
            out->v[out->n++] = e ? e->byte[k] : (uint8_t)'?';
        }
    }
    return CP_OK;
}

/* ---- fix_encoding --------------------------------------------------------------------------------------- */

typedef struct {
    mj_u8 bytes, btmp;
    mj_u32 dec;
} mj_scratch;

static void scratch_free(mj_scratch *s) {
    free(s->bytes.v);
    free(s->btmp.v);
    free(s->dec.v);
}

static int fix_encoding(const uint32_t *v, size_t n, mj_u32 *out, int depth, mj_scratch *s);

/* fixes.decode_inconsistent_utf8 (UTF8_DETECTOR_RE.sub(fix_embedded_mojibake, text)) into out. */
static int decode_inconsistent(const uint32_t *v, size_t n, mj_u32 *out, int depth, mj_scratch *s) {
    out->n = 0;
    CP_CHECK(u32_reserve(out, n + 1));
    size_t i = 0;
    while (i < n) {
        size_t e = i;
        if (i == 0 || !(mj_class(v[i - 1]) & MJ_UTF8_CONTINUATION_STRICT)) {
            for (;;) {
                uint32_t m = mj_class(v[e]);
                if (!(m & (MJ_UTF8_FIRST_OF_2 | MJ_UTF8_FIRST_OF_3 | MJ_UTF8_FIRST_OF_4))) break;
                size_t k = 0;
                if ((m & MJ_UTF8_FIRST_OF_2) && e + 1 < n && (mj_class(v[e + 1]) & MJ_UTF8_CONTINUATION))
                    k = 2;
                else if ((m & MJ_UTF8_FIRST_OF_3) && e + 2 < n && (mj_class(v[e + 1]) & MJ_UTF8_CONTINUATION) &&
                         (mj_class(v[e + 2]) & MJ_UTF8_CONTINUATION))
                    k = 3;
                else if ((m & MJ_UTF8_FIRST_OF_4) && e + 3 < n && (mj_class(v[e + 1]) & MJ_UTF8_CONTINUATION) &&
                         (mj_class(v[e + 2]) & MJ_UTF8_CONTINUATION) && (mj_class(v[e + 3]) & MJ_UTF8_CONTINUATION))
                    k = 4;
                if (!k) break;
                e += k;
                if (e >= n) break;
            }
        }
        if (e == i) {
            CP_CHECK(u32_append(out, v + i, 1));
            i++;
            continue;
        }
        size_t len = e - i;
        if (len < n && depth < MJ_MAX_DEPTH && cp_mojibake_is_bad(v + i, len)) {
            mj_u32 sub = {0};
            int rc = fix_encoding(v + i, len, &sub, depth + 1, s);
            if (!rc) rc = u32_append(out, sub.v, sub.n);
            free(sub.v);
            if (rc) return rc;
        } else {
            CP_CHECK(u32_append(out, v + i, len));
        }
        i = e;
    }
    return CP_OK;
}

static int has_utf8_detector_match(const uint32_t *v, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t m = mj_class(v[i]);
        if (!(m & (MJ_UTF8_FIRST_OF_2 | MJ_UTF8_FIRST_OF_3 | MJ_UTF8_FIRST_OF_4))) continue;
        if (i > 0 && (mj_class(v[i - 1]) & MJ_UTF8_CONTINUATION_STRICT)) continue;
        uint32_t m1 = mj_class(v[i + 1]);
        if (!(m1 & MJ_UTF8_CONTINUATION)) continue;
        if (m & MJ_UTF8_FIRST_OF_2) return 1;
        if (i + 2 < n && (mj_class(v[i + 2]) & MJ_UTF8_CONTINUATION)) {
            if (m & MJ_UTF8_FIRST_OF_3) return 1;
            if ((m & MJ_UTF8_FIRST_OF_4) && i + 3 < n && (mj_class(v[i + 3]) & MJ_UTF8_CONTINUATION)) return 1;
        }
    }
    return 0;
}

/* One _fix_encoding_one_step_and_explain: out = the new text (possibly equal to v). */
static int one_step(const uint32_t *v, size_t n, mj_u32 *out, int depth, mj_scratch *s) {
    out->n = 0;
    int ascii = 1;
    for (size_t i = 0; i < n; i++)
        if (v[i] >= 0x80) {
            ascii = 0;
            break;
        }
    if (n == 0 || ascii || !cp_mojibake_is_bad(v, n)) return u32_append(out, v, n);
    unsigned possible = possible_encodings(v, n);
    for (int k = 0; k < CP_MJ_NENC; k++) {
        if (!(possible & (1u << k))) continue;
        CP_CHECK(encode_charmap(v, n, k, &s->bytes));
        if (k != MJ_ENC_MACROMAN && altered_search(s->bytes.v, s->bytes.n))
            CP_CHECK(restore_byte_a0(&s->bytes, &s->btmp));
        if (MJ_SLOPPY_MASK & (1u << k)) CP_CHECK(replace_lossy(&s->bytes, &s->btmp));
        int rc = CP_OK;
        if (decode_utf8_variants(s->bytes.v, s->bytes.n, &s->dec, &rc)) return u32_append(out, s->dec.v, s->dec.n);
        if (rc) return rc;
    }
    if (has_utf8_detector_match(v, n)) {
        CP_CHECK(decode_inconsistent(v, n, out, depth, s));
        if (!u32_same(out->v, out->n, v, n)) return CP_OK;
        out->n = 0;
    }
    int has_c1 = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] >= 0x80 && v[i] <= 0x9F) {
            has_c1 = 1;
            break;
        }
    if ((possible & (1u << MJ_ENC_LATIN_1)) && has_c1) {
        /* text.encode("latin-1").decode("windows-1252"): strict, so any of 81 8D 8F 90 9D fails it */
        int ok = 1;
        for (size_t i = 0; i < n && ok; i++)
            if (v[i] >= 0x80 && v[i] <= 0x9F && CP_MJ_CP1252[v[i] - 0x80] == 0) ok = 0;
        if (ok) {
            CP_CHECK(u32_append(out, v, n));
            for (size_t i = 0; i < n; i++)
                if (out->v[i] >= 0x80 && out->v[i] <= 0x9F) out->v[i] = CP_MJ_CP1252[out->v[i] - 0x80];
            return CP_OK;
        }
    }
    CP_CHECK(u32_append(out, v, n));
    if (has_c1) /* fixes.fix_c1_controls */
        for (size_t i = 0; i < n; i++)
            if (out->v[i] >= 0x80 && out->v[i] <= 0x9F) out->v[i] = CP_MJ_SLOPPY1252[out->v[i] - 0x80];
    return CP_OK;
}

/* fix_encoding_and_explain: one_step until nothing changes. out = result. */
static int fix_encoding(const uint32_t *v, size_t n, mj_u32 *out, int depth, mj_scratch *s) {
    mj_u32 cur = {0}, next = {0};
    int rc = u32_append(&cur, v, n);
    for (int step = 0; !rc && step < MJ_MAX_STEPS; step++) {
        rc = one_step(cur.v, cur.n, &next, depth, s);
        if (rc) break;
        if (u32_same(cur.v, cur.n, next.v, next.n)) break;
        mj_u32 t = cur;
        cur = next, next = t;
    }
    free(next.v);
    if (rc) {
        free(cur.v);
        return rc;
    }
    *out = cur;
    return CP_OK;
}

int cp_mojibake_fix(const uint32_t *v, size_t n, uint32_t **out, size_t *out_n) {
    *out = NULL, *out_n = 0;
    if (n == 0 || !cp_mojibake_is_bad(v, n)) return CP_OK; /* one_step would return the text unchanged */
    mj_scratch s = {0};
    mj_u32 r = {0};
    int rc = fix_encoding(v, n, &r, 0, &s);
    scratch_free(&s);
    if (rc) return rc;
    if (u32_same(r.v, r.n, v, n)) {
        free(r.v);
        return CP_OK;
    }
    if (!r.v) { /* changed to the empty text (not reachable: every decode of >= 1 byte gives >= 1 character) */
        r.v = malloc(sizeof(uint32_t));
        if (!r.v) CP_FAIL(CP_ERR_NOMEM, "normalize: out of memory (mojibake repair)");
    }
    *out = r.v, *out_n = r.n;
    return CP_OK;
}
