/* cp_segment.h — word segmentation of CJK prompts: the token-span list shared by the segmenters, language
 * detection by script, and the piecewise segmenter behind cp.segment / cp.normalize(..., segment=...).
 *
 *   zh: csrc/cp_jieba.c  — jieba's accurate mode (prefix dictionary DAG + max log-prob route + HMM), in C
 *   ja: csrc/cp_mecab.c  — MeCab through its C API (dlopen'ed at first use)
 *
 * Tokens are byte spans into the caller's UTF-8 text; nothing is copied until a caller asks for strings.
 */
#ifndef CP_SEGMENT_H
#define CP_SEGMENT_H

#include "cp_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** One token: bytes [start, start + len) of the segmented text. */
typedef struct {
    size_t start;
    size_t len;
} cp_span;

/** A growable list of spans. Zero-initialise; cp_spans_free releases (and leaves it empty, reusable). */
typedef struct {
    cp_span *v;
    size_t n, cap;
} cp_spans;

int cp_spans_push(cp_spans *s, size_t start, size_t len);
void cp_spans_free(cp_spans *s);

typedef enum {
    CP_LANG_AUTO = 0, /* by script: any kana -> ja, else any Han -> zh, else none */
    CP_LANG_ZH = 1,
    CP_LANG_JA = 2,
    CP_LANG_NONE = 3 /* whitespace split only */
} cp_lang;

/** "auto" / "zh" / "ja" / "none" -> *out. CP_ERR_INVALID_ARG (naming the choices) for anything else. */
int cp_lang_parse(const char *name, cp_lang *out);
const char *cp_lang_name(cp_lang lang);

/** The language `auto` picks for a valid UTF-8 text: CP_LANG_JA if it has any kana, else CP_LANG_ZH if it has any
 *  Han ideograph, else CP_LANG_NONE. */
cp_lang cp_segment_detect(const char *text, size_t len);

/** Segment a valid-or-not UTF-8 prompt into words, appending spans to `out` (cleared first).
 *
 *  The text is split at Unicode whitespace (the set Python's str.split uses); a whitespace-separated chunk that
 *  contains no Han and no kana is kept whole ("Latin untouched"); the others are segmented with the language
 *  (CP_LANG_AUTO: detected once for the whole text with cp_segment_detect). For zh the result equals
 *  `[w for w in jieba.lcut(text) if not w.isspace()]`; for ja, MeCab wakati surfaces of each chunk.
 *  Errors: CP_ERR_TOKENIZER (invalid UTF-8, with byte offset), CP_ERR_EMPTY (empty / whitespace only),
 *  CP_ERR_INVALID_ARG (bad lang), CP_ERR_DEPENDENCY (ja without MeCab), CP_ERR_IO (dictionary data unreadable). */
int cp_segment_text(const char *text, size_t len, cp_lang lang, cp_spans *out);

/** cp_segment_text, then the tokens joined by single spaces into a new NUL-terminated string *out (length
 *  *out_len). The caller frees *out with free(). */
int cp_segment_join(const char *text, size_t len, cp_lang lang, char **out, size_t *out_len);

/** cp_segment_text over n texts (OpenMP threads when n is large), outs[i] for texts[i] (each cleared first).
 *  On failure returns the status of the lowest failing index, stores it in *failed (may be NULL) and records its
 *  message on the calling thread; outs still need cp_spans_free. */
int cp_segment_batch(const char *const *texts, const size_t *lens, size_t n, cp_lang lang, cp_spans *outs,
                     size_t *failed);

/* ---- helpers shared by the segmenters ---------------------------------------------------------------- */

/** Decode one code point of valid UTF-8 at s[*i] (advancing *i). Input must have been validated. */
static inline uint32_t cp_utf8_next(const unsigned char *s, size_t *i) {
    uint32_t c = s[*i];
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    if (c < 0xE0) {
        c = ((c & 0x1F) << 6) | (s[*i + 1] & 0x3F);
        *i += 2;
        return c;
    }
    if (c < 0xF0) {
        c = ((c & 0x0F) << 12) | ((uint32_t)(s[*i + 1] & 0x3F) << 6) | (s[*i + 2] & 0x3F);
        *i += 3;
        return c;
    }
    c = ((c & 0x07) << 18) | ((uint32_t)(s[*i + 1] & 0x3F) << 12) | ((uint32_t)(s[*i + 2] & 0x3F) << 6) |
        (s[*i + 3] & 0x3F);
    *i += 4;
    return c;
}

/** Python's str.isspace / re `\s` for str patterns (Unicode 14, CPython 3.11): the set jieba and str.split use. */
static inline int cp_is_py_space(uint32_t c) {
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

#ifdef __cplusplus
}
#endif
#endif /* CP_SEGMENT_H */
