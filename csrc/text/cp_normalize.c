/* cp_normalize.c — the prompt normaliser (cp_normalize) and CLIP's exact pre-BPE cleaning (cp_clip_clean).
 *
 * Text is decoded once into a buffer of code points (uint32_t) and every step maps one code-point buffer to
 * another, because every reference we reproduce (ftfy, html.unescape, re, str.lower/strip) is defined on Python
 * str, i.e. on code points. NFC/NFKC come from utf8proc; the other tables are generated from Python itself by
 * csrc/tools/gen_normalize_tables.py (cp_html_entities.inc, cp_normalize_tables.inc).
 *
 * What each step reproduces:
 *   ftfy_fix      ftfy.fix_text(text) with the default config (fix_encoding, the mojibake repair, optional): per
 *                 line segment (split after each '\n', and every 1,000,000 code points), repeated until nothing
 *                 changes: unescape_html ("auto": off from the first segment that contains '<' on), fix_encoding
 *                 (cp_mojibake.c), fix_c1_controls,
 *                 fix_latin_ligatures, fix_character_width, uncurl_quotes, fix_line_breaks, (fix_surrogates: valid
 *                 UTF-8 has none), remove_terminal_escapes, remove_control_chars, NFC.
 *   html_unescape Python's html.unescape (named refs with/without ';', longest-prefix rule, numeric refs with the
 *                 HTML5 invalid-codepoint replacements).
 *   py_lower      Python's str.lower (full mappings, Final_Sigma context).
 *   collapse      re.sub(r"\s+", " ", t).strip() with Python's \s (= str.isspace()).
 */
#include "text/cp_normalize.h"

#include "base/cp_common.h"
#include "base/cp_utf8.h"
#include "text/cp_mojibake.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

typedef struct {
    const char *name;
    uint8_t name_len;
    const char *value; /* UTF-8 */
    uint8_t value_len;
} cp_entity;

typedef struct {
    uint32_t cp;
    uint8_t n;
    uint32_t to[3];
} cp_lower_entry;

typedef struct {
    uint32_t lo, hi;
    uint8_t cls;
} cp_range_class;

#include "text/cp_html_entities.inc"
#include "text/cp_normalize_tables.inc"

/* ---- code-point buffers --------------------------------------------------------------------------- */

typedef struct {
    uint32_t *v; /* (cap) code points */
    size_t n, cap;
} u32buf;

static void buf_free(u32buf *b) {
    free(b->v);
    b->v = NULL, b->n = b->cap = 0;
}

static int buf_reserve(u32buf *b, size_t need) {
    if (need <= b->cap) return CP_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / sizeof(uint32_t)) CP_FAIL(CP_ERR_NOMEM, "normalize: text too large");
        cap *= 2;
    }
    uint32_t *v = realloc(b->v, cap * sizeof(uint32_t));
    if (!v) CP_FAIL(CP_ERR_NOMEM, "normalize: out of memory (%zu code points)", cap);
    b->v = v, b->cap = cap;
    return CP_OK;
}

static inline int buf_push(u32buf *b, uint32_t c) {
    if (b->n == b->cap) CP_CHECK(buf_reserve(b, b->n + 1));
    b->v[b->n++] = c;
    return CP_OK;
}

static int buf_append(u32buf *b, const uint32_t *s, size_t n) {
    CP_CHECK(buf_reserve(b, b->n + n));
    memcpy(b->v + b->n, s, n * sizeof(uint32_t));
    b->n += n;
    return CP_OK;
}

/* Append UTF-8 bytes (known valid: our tables, or validated input) as code points. */
static int buf_append_utf8(u32buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    CP_CHECK(buf_reserve(b, b->n + n));
    while (i < n) b->v[b->n++] = cp_utf8_next(p, &i);
    return CP_OK;
}

static void buf_swap(u32buf *a, u32buf *b) {
    u32buf t = *a;
    *a = *b, *b = t;
}

static int buf_equal(const u32buf *a, const u32buf *b) {
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof(uint32_t)) == 0);
}

/* Decode validated UTF-8. */
static int decode_utf8(const char *s, size_t n, u32buf *out) {
    size_t bad = 0;
    CP_CHECK(cp_utf8_validate(s, n, &bad));
    out->n = 0;
    return buf_append_utf8(out, s, n);
}

static int encode_utf8(const u32buf *b, char **out, size_t *out_len) {
    size_t need = 0;
    for (size_t i = 0; i < b->n; i++) need += cp_utf8_len(b->v[i]);
    char *o = malloc(need + 1);
    if (!o) CP_FAIL(CP_ERR_NOMEM, "normalize: out of memory (%zu bytes)", need + 1);
    unsigned char *p = (unsigned char *)o;
    for (size_t i = 0; i < b->n; i++) p += cp_utf8_put(p, b->v[i]);
    *p = '\0';
    *out = o;
    *out_len = need;
    return CP_OK;
}

/* ---- character classes (Python's definitions) ----------------------------------------------------- */

static int py_isspace(uint32_t c) {
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
    if (c > 0x205F) return c == 0x3000; /* the generator asserts this */
    size_t lo = 0, hi = CP_PY_SPACE_N;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (CP_PY_SPACE[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < CP_PY_SPACE_N && CP_PY_SPACE[lo] == c;
}

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r[mid][1] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && r[lo][0] <= c;
}

static int py_isdecimal(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    return in_ranges(CP_PY_DECIMAL, CP_PY_DECIMAL_N, c);
}

static int sigma_class(uint32_t c) {
    size_t lo = 0, hi = CP_SIGMA_CLASS_N;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (CP_SIGMA_CLASS[mid].hi < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < CP_SIGMA_CLASS_N && CP_SIGMA_CLASS[lo].lo <= c ? CP_SIGMA_CLASS[lo].cls : 0;
}

static const cp_lower_entry *find_entry(const cp_lower_entry *t, size_t n, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (t[mid].cp < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && t[lo].cp == c ? &t[lo] : NULL;
}

static int is_ascii_alnum(uint32_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* ---- html.unescape -------------------------------------------------------------------------------- */

static int entity_cmp(const cp_entity *e, const char *s, size_t n) {
    size_t m = e->name_len < n ? e->name_len : n;
    int r = memcmp(e->name, s, m);
    if (r) return r;
    return e->name_len < n ? -1 : e->name_len > n ? 1 : 0;
}

static const cp_entity *entity_find(const cp_entity *t, size_t count, const char *s, size_t n) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = entity_cmp(&t[mid], s, n);
        if (r == 0) return &t[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int html_invalid_codepoint(uint32_t c) {
    return (c >= 0x1 && c <= 0x8) || c == 0xB || (c >= 0xE && c <= 0x1F) || (c >= 0x7F && c <= 0x9F) ||
           (c >= 0xFDD0 && c <= 0xFDEF) || (c & 0xFFFE) == 0xFFFE;
}

/* html._replace_charref for a numeric reference (value saturated at 0x110000). Appends 0 or 1 code point. */
static int html_numeric(u32buf *out, uint32_t num) {
    if (num < 0xA0 && CP_HTML_INVALID_CHARREF[num] != 0xFFFFFFFFu) return buf_push(out, CP_HTML_INVALID_CHARREF[num]);
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return buf_push(out, 0xFFFD);
    if (html_invalid_codepoint(num)) return CP_OK;
    return buf_push(out, num);
}

/* Try to match html's charref regex at in[i] == '&':
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * On a match append the replacement and return the index after it; otherwise return i (no match). */
static int html_charref_at(const uint32_t *in, size_t n, size_t i, u32buf *out, size_t *next) {
    size_t j = i + 1;
    *next = i;
    if (j < n && in[j] == '#') {
        size_t k = j + 1;
        uint32_t num = 0;
        if (k < n && in[k] >= '0' && in[k] <= '9') {
            for (; k < n && in[k] >= '0' && in[k] <= '9'; k++) {
                num = num * 10 + (in[k] - '0');
                if (num > 0x110000) num = 0x110000;
            }
        } else if (k + 1 < n && (in[k] == 'x' || in[k] == 'X') && in[k + 1] < 0x80 && is_ascii_alnum(in[k + 1]) &&
                   (in[k + 1] <= '9' || (in[k + 1] | 0x20) <= 'f')) {
            for (k++; k < n && in[k] < 0x80; k++) {
                uint32_t c = in[k], d;
                if (c >= '0' && c <= '9')
                    d = c - '0';
                else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
                    d = (c | 0x20) - 'a' + 10;
                else
                    break;
                num = num * 16 + d;
                if (num > 0x110000) num = 0x110000;
            }
        } else {
            return CP_OK;
        }
        if (k < n && in[k] == ';') k++;
        CP_CHECK(html_numeric(out, num));
        *next = k;
        return CP_OK;
    }
    /* named: [^\t\n\f <&#;]{1,32};? */
    size_t k = j;
    while (k < n && k - j < 32) {
        uint32_t c = in[k];
        if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';') break;
        k++;
    }
    if (k == j) return CP_OK;
    int semi = k < n && in[k] == ';';
    size_t end = k + (size_t)semi; /* s = in[j:end] */
    /* The longest ASCII prefix of s (table names are ASCII). */
    char name[34];
    size_t slen = end - j, ascii = 0;
    while (ascii < slen && in[j + ascii] < 0x80) {
        name[ascii] = (char)in[j + ascii];
        ascii++;
    }
    const cp_entity *e = NULL;
    if (ascii == slen) e = entity_find(CP_HTML5_ENTITIES, CP_HTML5_ENTITIES_N, name, slen);
    if (e) {
        CP_CHECK(buf_append_utf8(out, e->value, e->value_len));
        *next = end;
        return CP_OK;
    }
    /* for x in range(len(s)-1, 1, -1): if s[:x] in html5: return html5[s[:x]] + s[x:] */
    size_t x = slen - 1;
    if (x > ascii) x = ascii;
    for (; x >= 2; x--) {
        e = entity_find(CP_HTML5_ENTITIES, CP_HTML5_ENTITIES_N, name, x);
        if (e) {
            CP_CHECK(buf_append_utf8(out, e->value, e->value_len));
            CP_CHECK(buf_append(out, in + j + x, slen - x));
            *next = end;
            return CP_OK;
        }
    }
    /* '&' + s: unchanged; equivalent to no match (the scan resumes after s, which holds no '&'). */
    CP_CHECK(buf_append(out, in + i, end - i));
    *next = end;
    return CP_OK;
}

/* out = html.unescape(in). */
static int html_unescape(const u32buf *in, u32buf *out) {
    out->n = 0;
    CP_CHECK(buf_reserve(out, in->n));
    size_t i = 0, n = in->n;
    const uint32_t *v = in->v;
    while (i < n) {
        if (v[i] != '&') {
            size_t s = i;
            while (i < n && v[i] != '&') i++;
            CP_CHECK(buf_append(out, v + s, i - s));
            continue;
        }
        size_t next;
        CP_CHECK(html_charref_at(v, n, i, out, &next));
        if (next == i) {
            CP_CHECK(buf_push(out, '&'));
            i++;
        } else {
            i = next;
        }
    }
    return CP_OK;
}

static int has_cp(const u32buf *b, uint32_t c) {
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i] == c) return 1;
    return 0;
}

/* ---- NFC / NFKC over utf8proc --------------------------------------------------------------------- */

/* out = NFC(in) or NFKC(in) (compat != 0). Decompose each code point with utf8proc, put combining marks in
 * canonical order (the same bubble pass utf8proc_decompose_custom runs), then compose with utf8proc. */
static int ccc_of(uint32_t c) { return c < 0x300 ? 0 : utf8proc_get_property((utf8proc_int32_t)c)->combining_class; }

/* Canonical ordering: a stable sort by combining class of every run of non-starters. utf8proc_decompose_custom
 * does the same with an adjacent-swap (gnome) sort, which is quadratic in the run length; this is linear
 * (counting sort) for long runs and gives the identical order (both sorts are stable). */
static int canonical_order(uint32_t *v, size_t n, u32buf *tmp) {
    size_t i = 0;
    while (i < n) {
        if (ccc_of(v[i]) == 0) {
            i++;
            continue;
        }
        size_t s = i;
        while (i < n && ccc_of(v[i]) != 0) i++;
        size_t len = i - s;
        if (len < 2) continue;
        if (len <= 16) {
            for (size_t k = s + 1; k < i; k++) {
                uint32_t c = v[k];
                int cc = ccc_of(c);
                size_t j = k;
                while (j > s && ccc_of(v[j - 1]) > cc) {
                    v[j] = v[j - 1];
                    j--;
                }
                v[j] = c;
            }
            continue;
        }
        size_t start[257] = {0};
        for (size_t k = s; k < i; k++) start[ccc_of(v[k]) + 1]++;
        for (int k = 1; k <= 256; k++) start[k] += start[k - 1];
        tmp->n = 0;
        CP_CHECK(buf_reserve(tmp, len));
        for (size_t k = s; k < i; k++) tmp->v[start[ccc_of(v[k])]++] = v[k];
        memcpy(v + s, tmp->v, len * sizeof(uint32_t));
    }
    return CP_OK;
}

static int unicode_normalize(const u32buf *in, int compat, u32buf *out, u32buf *tmp) {
    utf8proc_option_t opts = UTF8PROC_STABLE | UTF8PROC_COMPOSE | (compat ? UTF8PROC_COMPAT : 0);
    out->n = 0;
    CP_CHECK(buf_reserve(out, in->n + 16));
    for (size_t i = 0; i < in->n; i++) {
        int boundclass = UTF8PROC_BOUNDCLASS_START;
        for (;;) {
            utf8proc_ssize_t avail = (utf8proc_ssize_t)(out->cap - out->n);
            utf8proc_ssize_t r = utf8proc_decompose_char((utf8proc_int32_t)in->v[i],
                                                         (utf8proc_int32_t *)(out->v + out->n), avail, opts,
                                                         &boundclass);
            if (r < 0) CP_FAIL(CP_ERR_INTERNAL, "normalize: utf8proc: %s", utf8proc_errmsg(r));
            if (r <= avail) {
                out->n += (size_t)r;
                break;
            }
            CP_CHECK(buf_reserve(out, out->n + (size_t)r));
        }
    }
    /* canonical ordering */
    utf8proc_int32_t *b = (utf8proc_int32_t *)out->v;
    size_t n = out->n;
    CP_CHECK(canonical_order(out->v, n, tmp));
    utf8proc_ssize_t r = utf8proc_normalize_utf32(b, (utf8proc_ssize_t)n, opts);
    if (r < 0) CP_FAIL(CP_ERR_INTERNAL, "normalize: utf8proc: %s", utf8proc_errmsg(r));
    out->n = (size_t)r;
    return CP_OK;
}

/* A code point that NFC (NFKC if compat) leaves alone in any context: no decomposition (canonical, or any for
 * NFKC), combining class 0, and never the second half of a composition (utf8proc marks those with
 * comb_index >= 0x8000; conjoining Hangul jamo compose algorithmically, so they count as not inert). */
static int nf_inert(uint32_t c, int compat) {
    if (c < 0x80) return 1;
    if (c >= 0x1100 && c <= 0x11FF) return 0;
    if (c >= 0xAC00 && c <= 0xD7A3) return 1; /* precomposed Hangul syllables are NFC/NFKC */
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
    if (p->combining_class != 0) return 0;
    if (p->comb_index != UINT16_MAX && p->comb_index >= 0x8000) return 0;
    if (p->decomp_seqindex != UINT16_MAX) {
        if (p->decomp_type != 0) return !compat;
        /* a canonical decomposition: inert iff a primary composite that both forms keep (Python-made table) */
        return in_ranges(CP_NF_STABLE_COMPOSITE, CP_NF_STABLE_COMPOSITE_N, c);
    }
    return 1;
}

/* Normalise unless every code point is inert (the common case: nothing to do, no copy). */
static int maybe_normalize(u32buf *cur, u32buf *tmp, int compat, int *changed) {
    size_t i = 0;
    while (i < cur->n && nf_inert(cur->v[i], compat)) i++;
    if (i == cur->n) return CP_OK;
    u32buf sorttmp = {0};
    int rc = unicode_normalize(cur, compat, tmp, &sorttmp);
    buf_free(&sorttmp);
    if (rc) return rc;
    if (!buf_equal(cur, tmp)) {
        *changed = 1;
        buf_swap(cur, tmp);
    }
    return CP_OK;
}

/* ---- ftfy.fix_text (fix_encoding: cp_mojibake.c) --------------------------------------------------- */

/* ftfy.fixes.unescape_html: HTML_ENTITY_RE = &#?[0-9A-Za-z]{1,24}; replaced by HTML_ENTITIES[match] (html5 names
 * with ';' plus ftfy's upper-case ones), or for '&#...;' by html.unescape(match) unless that leaves a ';'. */
static int ftfy_unescape(const u32buf *in, u32buf *out, int *changed) {
    out->n = 0;
    CP_CHECK(buf_reserve(out, in->n));
    size_t i = 0, n = in->n;
    const uint32_t *v = in->v;
    u32buf tmp = {0}, one = {0};
    int rc = CP_OK;
    while (i < n) {
        if (v[i] != '&') {
            size_t s = i;
            while (i < n && v[i] != '&') i++;
            if ((rc = buf_append(out, v + s, i - s))) goto done;
            continue;
        }
        size_t k = i + 1;
        int numeric = k < n && v[k] == '#';
        if (numeric) k++;
        size_t m = 0;
        while (k + m < n && m <= 24 && v[k + m] < 0x80 && is_ascii_alnum(v[k + m])) m++;
        if (m < 1 || m > 24 || k + m >= n || v[k + m] != ';') {
            if ((rc = buf_push(out, '&'))) goto done;
            i++;
            continue;
        }
        size_t end = k + m + 1; /* match = v[i:end] */
        if (!numeric) {
            char name[26];
            for (size_t t = 0; t <= m; t++) name[t] = (char)v[k + t]; /* alnum... + ';' */
            const cp_entity *e = entity_find(CP_HTML5_ENTITIES, CP_HTML5_ENTITIES_N, name, m + 1);
            if (!e) e = entity_find(CP_FTFY_UPPER_ENTITIES, CP_FTFY_UPPER_ENTITIES_N, name, m + 1);
            if (e) {
                if ((rc = buf_append_utf8(out, e->value, e->value_len))) goto done;
                *changed = 1;
            } else if ((rc = buf_append(out, v + i, end - i))) {
                goto done;
            }
        } else {
            one.n = 0;
            if ((rc = buf_append(&one, v + i, end - i))) goto done;
            if ((rc = html_unescape(&one, &tmp))) goto done;
            if (has_cp(&tmp, ';')) {
                rc = buf_append(out, v + i, end - i);
            } else {
                rc = buf_append(out, tmp.v, tmp.n);
                *changed = 1;
            }
            if (rc) goto done;
        }
        i = end;
    }
done:
    buf_free(&tmp);
    buf_free(&one);
    return rc;
}

/* fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes, fix_line_breaks,
 * remove_terminal_escapes, remove_control_chars — in ftfy's order, each over the whole segment. */
static int ftfy_char_fixes(u32buf *cur, u32buf *tmp, int *changed) {
    size_t n = cur->n;
    uint32_t *v = cur->v;
    /* fix_c1_controls: in place */
    for (size_t i = 0; i < n; i++)
        if (v[i] >= 0x80 && v[i] <= 0x9F) {
            uint32_t r = CP_C1_1252[v[i] - 0x80];
            if (r != v[i]) v[i] = r, *changed = 1;
        }
    /* ligatures and width (may expand) */
    int expand = 0;
    for (size_t i = 0; i < n && !expand; i++) {
        uint32_t c = v[i];
        if (c == 0x3000 || (c >= 0xFF00 && c <= 0xFFEF) || (c >= 0x132 && c <= 0x1F3) || (c >= 0xFB00 && c <= 0xFB06))
            expand = 1;
    }
    if (expand) {
        tmp->n = 0;
        CP_CHECK(buf_reserve(tmp, n + 8));
        for (size_t i = 0; i < n; i++) {
            uint32_t c = v[i];
            const cp_lower_entry *l = (c >= 0x132 && c <= 0xFB06) ? find_entry(CP_LIGATURES, CP_LIGATURES_N, c) : NULL;
            if (l) {
                CP_CHECK(buf_append(tmp, l->to, l->n));
                *changed = 1;
                continue;
            }
            CP_CHECK(buf_push(tmp, c));
        }
        buf_swap(cur, tmp);
        n = cur->n, v = cur->v;
        tmp->n = 0;
        CP_CHECK(buf_reserve(tmp, n + 8));
        for (size_t i = 0; i < n; i++) {
            uint32_t c = v[i];
            if (c == 0x3000) {
                CP_CHECK(buf_push(tmp, ' '));
                *changed = 1;
            } else if (c >= 0xFF00 && c <= 0xFFEF && CP_WIDTH[c - 0xFF00][0]) {
                CP_CHECK(buf_append(tmp, &CP_WIDTH[c - 0xFF00][1], CP_WIDTH[c - 0xFF00][0]));
                *changed = 1;
            } else {
                CP_CHECK(buf_push(tmp, c));
            }
        }
        buf_swap(cur, tmp);
        n = cur->n, v = cur->v;
    }
    /* uncurl_quotes: in place */
    for (size_t i = 0; i < n; i++) {
        uint32_t c = v[i];
        if (c >= 0x201C && c <= 0x201F)
            v[i] = '"', *changed = 1;
        else if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B))
            v[i] = '\'', *changed = 1;
    }
    /* fix_line_breaks, remove_terminal_escapes, remove_control_chars: shrink in place, one pass each */
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = v[i];
        if (c == '\r') {
            if (i + 1 < n && v[i + 1] == '\n') i++;
            v[w++] = '\n', *changed = 1;
        } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
            v[w++] = '\n', *changed = 1;
        } else {
            v[w++] = c;
        }
    }
    n = w;
    /* ANSI_RE = \033\[((?:\d|;)*)([a-zA-Z]) */
    w = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == 0x1B && i + 1 < n && v[i + 1] == '[') {
            size_t k = i + 2;
            while (k < n && (v[k] == ';' || py_isdecimal(v[k]))) k++;
            if (k < n && v[k] < 0x80 && ((v[k] | 0x20) >= 'a' && (v[k] | 0x20) <= 'z')) {
                i = k, *changed = 1;
                continue;
            }
        }
        v[w++] = v[i];
    }
    n = w;
    /* CONTROL_CHARS: 00-08, 0B, 0E-1F, 7F, 206A-206F, FEFF, FFF9-FFFC */
    w = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = v[i];
        if ((c <= 0x08) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
            c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC)) {
            *changed = 1;
            continue;
        }
        v[w++] = c;
    }
    cur->n = w;
    return CP_OK;
}

/* Does ftfy (without fix_encoding) have anything to do in this segment? Every code point that some fix could
 * touch: controls and C1, '&' (when unescaping), ligatures, width forms, curly quotes, line/paragraph separators,
 * the removed format characters, and whatever NFC might change. */
static int ftfy_trivial(const uint32_t *v, size_t n, int unescape) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = v[i];
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t' && c != '\n' && c != '\f') || c == 0x7F || (c == '&' && unescape)) return 0;
            continue;
        }
        if (c <= 0x9F || c == 0x132 || c == 0x133 || c == 0x149 || (c >= 0x1C4 && c <= 0x1CC) ||
            (c >= 0x1F1 && c <= 0x1F3) || (c >= 0xFB00 && c <= 0xFB06) || c == 0x3000 || (c >= 0xFF00 && c <= 0xFFEF) ||
            c == 0x2BC || (c >= 0x2018 && c <= 0x201F) || c == 0x2028 || c == 0x2029 || (c >= 0x206A && c <= 0x206F) ||
            c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC) || !nf_inert(c, 0))
            return 0;
    }
    return 1;
}

/* ftfy repeats its fixes until a pass changes nothing; each pass peels one level off nested entities
 * ("&amp;amp;amp;" takes 3), so k-fold nesting costs k passes over the segment: quadratic for crafted input.
 * We stop after this many passes (documented difference; no real text comes near it). */
#define FTFY_MAX_PASSES 64

/* ftfy.fix_and_explain(segment) with explain=False: the fix loop until a pass changes nothing. */
static int ftfy_segment(const uint32_t *seg, size_t n, int unescape, int fix_enc, u32buf *out, u32buf *a, u32buf *b,
                        u32buf *orig) {
    if (ftfy_trivial(seg, n, unescape) && !(fix_enc && cp_mojibake_is_bad(seg, n))) return buf_append(out, seg, n);
    a->n = 0;
    CP_CHECK(buf_append(a, seg, n));
    for (int pass = 0; pass < FTFY_MAX_PASSES; pass++) {
        int changed = 0;
        orig->n = 0;
        CP_CHECK(buf_append(orig, a->v, a->n));
        if (unescape && has_cp(a, '&')) {
            CP_CHECK(ftfy_unescape(a, b, &changed));
            buf_swap(a, b);
        }
        if (fix_enc) { /* fix_encoding: right after unescape_html, as in ftfy.fix_and_explain */
            uint32_t *fx = NULL;
            size_t fn = 0;
            CP_CHECK(cp_mojibake_fix(a->v, a->n, &fx, &fn));
            if (fx) {
                free(a->v);
                a->v = fx, a->n = a->cap = fn;
                changed = 1;
            }
        }
        CP_CHECK(ftfy_char_fixes(a, b, &changed));
        CP_CHECK(maybe_normalize(a, b, 0, &changed));
        if (!changed || buf_equal(a, orig)) break;
    }
    return buf_append(out, a->v, a->n);
}

#define FTFY_MAX_DECODE_LENGTH 1000000

/* out = ftfy.fix_text(in, fix_encoding=fix_enc) (all other options at their defaults). */
static int ftfy_fix_text(const u32buf *in, int fix_enc, u32buf *out) {
    u32buf a = {0}, b = {0}, orig = {0};
    int rc = CP_OK, unescape = 1;
    size_t pos = 0, n = in->n;
    out->n = 0;
    if ((rc = buf_reserve(out, n + 1))) return rc;
    while (pos < n) {
        size_t brk = pos;
        while (brk < n && in->v[brk] != '\n') brk++;
        brk = brk < n ? brk + 1 : n;
        if (brk - pos > FTFY_MAX_DECODE_LENGTH) brk = pos + FTFY_MAX_DECODE_LENGTH;
        if (unescape) {
            for (size_t i = pos; i < brk; i++)
                if (in->v[i] == '<') {
                    unescape = 0; /* ftfy's "auto": sticky for the rest of the text */
                    break;
                }
        }
        if ((rc = ftfy_segment(in->v + pos, brk - pos, unescape, fix_enc, out, &a, &b, &orig))) break;
        pos = brk;
    }
    buf_free(&a);
    buf_free(&b);
    buf_free(&orig);
    return rc;
}

/* ---- str.lower, whitespace ------------------------------------------------------------------------ */

/* Python's handle_capital_sigma: \p{cased}\p{case-ignorable}* Σ !(\p{case-ignorable}* \p{cased}) -> ς. */
static uint32_t final_sigma(const uint32_t *v, size_t n, size_t i) {
    size_t j = i;
    int cls = 0, found = 0;
    while (j > 0) {
        cls = sigma_class(v[--j]);
        if (cls != 1) {
            found = 1;
            break;
        }
    }
    if (!found || cls != 2) return 0x3C3;
    for (j = i + 1; j < n; j++) {
        cls = sigma_class(v[j]);
        if (cls != 1) return cls == 2 ? 0x3C3 : 0x3C2;
    }
    return 0x3C2;
}

static int py_lower(const u32buf *in, u32buf *out) {
    out->n = 0;
    CP_CHECK(buf_reserve(out, in->n + 8));
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c < 0x80) {
            CP_CHECK(buf_push(out, (c >= 'A' && c <= 'Z') ? c + 32 : c));
        } else if ((c >= 0x2E80 && c < 0xA640) || (c >= 0xAC00 && c < 0xFF21)) {
            CP_CHECK(buf_push(out, c)); /* caseless stretches (the generator asserts this) */
        } else if (c == 0x3A3) {
            CP_CHECK(buf_push(out, final_sigma(in->v, in->n, i)));
        } else {
            const cp_lower_entry *e = find_entry(CP_LOWER, CP_LOWER_N, c);
            if (e)
                CP_CHECK(buf_append(out, e->to, e->n));
            else
                CP_CHECK(buf_push(out, c));
        }
    }
    return CP_OK;
}

/* re.sub(r"\s+", " ", t).strip() in place (also covers a preceding strip()). */
static void collapse_ws(u32buf *b) {
    size_t w = 0;
    int pending = 0;
    for (size_t i = 0; i < b->n; i++) {
        uint32_t c = b->v[i];
        if (py_isspace(c)) {
            pending = 1;
            continue;
        }
        if (pending && w > 0) b->v[w++] = ' ';
        pending = 0;
        b->v[w++] = c;
    }
    b->n = w;
}

static int all_space(const u32buf *b) {
    for (size_t i = 0; i < b->n; i++)
        if (!py_isspace(b->v[i])) return 0;
    return 1;
}

/* ---- script boundaries ---------------------------------------------------------------------------- */

static int is_latin_or_digit(uint32_t c) {
    if (c < 0x80) return is_ascii_alnum(c);
    return (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7) || (c >= 0x1E00 && c <= 0x1EFF);
}

static int is_cjk(uint32_t c) {
    return (c >= 0x1100 && c <= 0x11FF) ||                 /* Hangul Jamo */
           (c >= 0x2E80 && c <= 0x2FDF) ||                 /* CJK radicals, Kangxi */
           (c >= 0x3005 && c <= 0x3007) ||                 /* 々 〆 〇 */
           (c >= 0x3040 && c <= 0x30FF) ||                 /* Hiragana, Katakana */
           (c >= 0x3100 && c <= 0x318F) ||                 /* Bopomofo, Hangul compatibility Jamo */
           (c >= 0x31F0 && c <= 0x31FF) ||                 /* Katakana phonetic extensions */
           (c >= 0x3400 && c <= 0x4DBF) ||                 /* CJK extension A */
           (c >= 0x4E00 && c <= 0x9FFF) ||                 /* CJK unified ideographs */
           (c >= 0xAC00 && c <= 0xD7AF) ||                 /* Hangul syllables */
           (c >= 0xF900 && c <= 0xFAFF) ||                 /* CJK compatibility ideographs */
           (c >= 0xFF66 && c <= 0xFF9F) ||                 /* half-width Katakana */
           (c >= 0x20000 && c <= 0x3FFFF);                 /* CJK extensions B.. */
}

static int needs_width(const u32buf *b) {
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i] == 0x3000 || (b->v[i] >= 0xFF00 && b->v[i] <= 0xFFEF)) return 1;
    return 0;
}

static int has_cjk(const u32buf *b) {
    for (size_t i = 0; i < b->n; i++)
        if (is_cjk(b->v[i])) return 1;
    return 0;
}

#include "text/cp_mixed_words.inc"

static uint32_t ascii_fold(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Is the boundary before in[i] inside a mixed-script dictionary word ("T恤", "X光", "U盘", "Tシャツ") that is whole
 * on its Latin edges (no Latin letter/digit glued on outside)? ASCII case-insensitive. Same rule as
 * normalize_ref._keeps. At most CP_MIXED_WORDS_N x (word length) short compares per boundary. */
static int keeps_boundary(const u32buf *in, size_t i) {
    uint32_t a = ascii_fold(in->v[i - 1]), c = ascii_fold(in->v[i]);
    for (size_t w = 0; w < CP_MIXED_WORDS_N; w++) {
        const uint32_t *wd = cp_mixed_words_cp + cp_mixed_words[w].off;
        size_t len = cp_mixed_words[w].len;
        for (size_t k = 1; k < len; k++) {
            if (wd[k - 1] != a || wd[k] != c || k > i || i - k + len > in->n) continue;
            size_t s = i - k, j = 0;
            while (j < len && ascii_fold(in->v[s + j]) == wd[j]) j++;
            if (j < len) continue;
            if (is_latin_or_digit(wd[0]) && s > 0 && is_latin_or_digit(in->v[s - 1])) continue;
            if (is_latin_or_digit(wd[len - 1]) && s + len < in->n && is_latin_or_digit(in->v[s + len])) continue;
            return 1;
        }
    }
    return 0;
}

static int script_spaces(const u32buf *in, u32buf *out) {
    out->n = 0;
    CP_CHECK(buf_reserve(out, in->n + 8));
    for (size_t i = 0; i < in->n; i++) {
        if (i > 0) {
            uint32_t a = in->v[i - 1], c = in->v[i];
            if (((is_latin_or_digit(a) && is_cjk(c)) || (is_cjk(a) && is_latin_or_digit(c))) &&
                !keeps_boundary(in, i))
                CP_CHECK(buf_push(out, ' '));
        }
        CP_CHECK(buf_push(out, in->v[i]));
    }
    return CP_OK;
}

/* ---- the all-ASCII fast path ---------------------------------------------------------------------- */

/* Printable ASCII plus \t \n \f and no '&': ftfy, html.unescape, NFC/NFKC, the width map and script spaces all
 * leave such text alone, so only collapse and lowercase remain, done on the bytes. Returns 1 if it applied. */
static int ascii_plain(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x7F || c == '&' || (c < 0x20 && c != '\t' && c != '\n' && c != '\f')) return 0;
    }
    return 1;
}

static int ascii_fast(const char *s, size_t n, int lower, int collapse, char **out, size_t *out_len) {
    char *o = malloc(n + 1);
    if (!o) CP_FAIL(CP_ERR_NOMEM, "normalize: out of memory (%zu bytes)", n + 1);
    size_t w = 0;
    int pending = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (collapse && (c == ' ' || c == '\t' || c == '\n' || c == '\f')) {
            pending = 1;
            continue;
        }
        if (pending && w > 0) o[w++] = ' ';
        pending = 0;
        o[w++] = (lower && c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    o[w] = '\0';
    *out = o, *out_len = w;
    return CP_OK;
}

static int ascii_all_space(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\f') return 0;
    return 1;
}

/* ---- public --------------------------------------------------------------------------------------- */

void cp_normalize_opts_default(cp_normalize_opts *o) {
    memset(o, 0, sizeof *o);
    o->form = CP_FORM_NFKC;
    o->lowercase = 0;
    o->fullwidth = 1;
    o->html_unescape = 2;
    o->ftfy = 1;
    o->fix_encoding = 1;
    o->collapse_ws = 1;
    o->script_spaces = 1;
    o->empty_is_error = 1;
}

int cp_normalize(const char *s, size_t n, const cp_normalize_opts *o, char **out, size_t *out_len) {
    cp_normalize_opts def;
    if (o == NULL) {
        cp_normalize_opts_default(&def);
        o = &def;
    }
    if (!out || !out_len || (!s && n)) CP_FAIL(CP_ERR_INVALID_ARG, "normalize: NULL argument");
    if (o->form != CP_FORM_NONE && o->form != CP_FORM_NFC && o->form != CP_FORM_NFKC)
        CP_FAIL(CP_ERR_INVALID_ARG, "normalize: unknown normalization form %d", o->form);
    if (o->html_unescape < 0) CP_FAIL(CP_ERR_INVALID_ARG, "normalize: html_unescape passes must be >= 0");
    *out = NULL, *out_len = 0;
    if (s && ascii_plain(s, n)) {
        if (o->empty_is_error && ascii_all_space(s, n))
            CP_FAIL(CP_ERR_EMPTY, n ? "normalize: the prompt is whitespace only" : "normalize: the prompt is empty");
        return ascii_fast(s, n, o->lowercase, o->collapse_ws, out, out_len);
    }
    u32buf a = {0}, b = {0};
    int rc;
    if ((rc = decode_utf8(s ? s : "", n, &a))) goto done;
    if (o->ftfy) {
        if ((rc = ftfy_fix_text(&a, o->fix_encoding, &b))) goto done;
        buf_swap(&a, &b);
    }
    for (int p = 0; p < o->html_unescape && has_cp(&a, '&'); p++) {
        if ((rc = html_unescape(&a, &b))) goto done;
        buf_swap(&a, &b);
    }
    if (o->fullwidth && needs_width(&a)) {
        b.n = 0;
        for (size_t i = 0; i < a.n; i++) {
            uint32_t c = a.v[i];
            if (c == 0x3000)
                rc = buf_push(&b, ' ');
            else if (c >= 0xFF00 && c <= 0xFFEF && CP_WIDTH[c - 0xFF00][0])
                rc = buf_append(&b, &CP_WIDTH[c - 0xFF00][1], CP_WIDTH[c - 0xFF00][0]);
            else
                rc = buf_push(&b, c);
            if (rc) goto done;
        }
        buf_swap(&a, &b);
    }
    if (o->form != CP_FORM_NONE) {
        int changed = 0;
        if ((rc = maybe_normalize(&a, &b, o->form == CP_FORM_NFKC, &changed))) goto done;
    }
    if (o->lowercase) {
        if ((rc = py_lower(&a, &b))) goto done;
        buf_swap(&a, &b);
    }
    if (o->collapse_ws) collapse_ws(&a);
    if (o->script_spaces && has_cjk(&a)) {
        if ((rc = script_spaces(&a, &b))) goto done;
        buf_swap(&a, &b);
    }
    if (o->empty_is_error && all_space(&a)) {
        rc = cp_fail(CP_ERR_EMPTY, a.n ? "normalize: the prompt is whitespace only"
                                       : "normalize: the prompt is empty (after normalisation)");
        goto done;
    }
    rc = encode_utf8(&a, out, out_len);
done:
    buf_free(&a);
    buf_free(&b);
    return rc;
}

int cp_clip_clean(const char *s, size_t n, char **out, size_t *out_len) {
    if (!out || !out_len || (!s && n)) CP_FAIL(CP_ERR_INVALID_ARG, "clip_clean: NULL argument");
    *out = NULL, *out_len = 0;
    if (s && ascii_plain(s, n)) {
        if (ascii_all_space(s, n))
            CP_FAIL(CP_ERR_EMPTY, "clip_clean: the prompt is empty or whitespace only (after cleaning)");
        return ascii_fast(s, n, 1, 1, out, out_len);
    }
    u32buf a = {0}, b = {0};
    int rc;
    if ((rc = decode_utf8(s ? s : "", n, &a))) goto done;
    /* basic_clean: ftfy.fix_text, html.unescape(html.unescape(.)), strip */
    if ((rc = ftfy_fix_text(&a, 1, &b))) goto done;
    buf_swap(&a, &b);
    for (int p = 0; p < 2 && has_cp(&a, '&'); p++) {
        if ((rc = html_unescape(&a, &b))) goto done;
        buf_swap(&a, &b);
    }
    /* whitespace_clean, then .lower() */
    collapse_ws(&a);
    if ((rc = py_lower(&a, &b))) goto done;
    if (b.n == 0) {
        rc = cp_fail(CP_ERR_EMPTY, "clip_clean: the prompt is empty or whitespace only (after cleaning)");
        goto done;
    }
    rc = encode_utf8(&b, out, out_len);
done:
    buf_free(&a);
    buf_free(&b);
    return rc;
}

#define CP_NORMALIZE_PARALLEL_BYTES (1u << 20)

/* mode 0: cp_normalize with o; mode 1: cp_clip_clean. */
static int batch_one(int mode, const char *s, size_t n, const cp_normalize_opts *o, char **out, size_t *out_len) {
    return mode ? cp_clip_clean(s, n, out, out_len) : cp_normalize(s, n, o, out, out_len);
}

static int batch_run(int mode, const char *const *texts, const size_t *lens, size_t n, const cp_normalize_opts *o,
                     char **outs, size_t *out_lens, cp_batch_status *status) {
    cp_batch_status_clear(status);
    if (n && (!texts || !lens || !outs || !out_lens))
        return cp_batch_fail(status, CP_BATCH_NO_INDEX, CP_ERR_INVALID_ARG, "normalize_batch: NULL argument");
    long long nn = (long long)n;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += lens[i];
    cp_batch_errors errs;
    cp_batch_errors_init(&errs);
    /* ~0.1-1 us per caption: threads pay off only for big batches */
#pragma omp parallel for schedule(dynamic, 64) if (n >= 64 && bytes >= CP_NORMALIZE_PARALLEL_BYTES)
    for (long long i = 0; i < nn; i++) {
        outs[i] = NULL, out_lens[i] = 0;
        int rc = batch_one(mode, texts[i], lens[i], o, &outs[i], &out_lens[i]);
        if (rc != CP_OK) cp_batch_errors_note(&errs, (size_t)i, rc);
    }
    int rc = cp_batch_errors_finish(&errs, status);
    if (rc != CP_OK)
        for (size_t i = 0; i < n; i++) free(outs[i]), outs[i] = NULL, out_lens[i] = 0;
    return rc;
}

int cp_normalize_batch(const char *const *texts, const size_t *lens, size_t n, const cp_normalize_opts *o,
                       char **outs, size_t *out_lens, cp_batch_status *status) {
    cp_normalize_opts def;
    if (o == NULL) {
        cp_normalize_opts_default(&def);
        o = &def;
    }
    return batch_run(0, texts, lens, n, o, outs, out_lens, status);
}

int cp_clip_clean_batch(const char *const *texts, const size_t *lens, size_t n, char **outs, size_t *out_lens,
                        cp_batch_status *status) {
    return batch_run(1, texts, lens, n, NULL, outs, out_lens, status);
}
