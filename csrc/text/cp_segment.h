/* cp_segment.h — word segmentation of CJK prompts: language detection by script and the piecewise segmenter behind cp.segment / cp.normalize(..., segment=...).
 *
 *   zh: csrc/cp_jieba.c  — jieba's accurate mode (prefix dictionary DAG + max log-prob route + HMM), in C
 *   ja: csrc/cp_mecab.c  — MeCab through its C API (dlopen'ed at first use)
 *
 * Tokens are byte spans into the caller's UTF-8 text; nothing is copied until a caller asks for strings.
 */
#ifndef CP_SEGMENT_H
#define CP_SEGMENT_H

#include "base/cp_batch.h"
#include "base/cp_common.h"
#include "base/cp_utf8.h"
#include "text/cp_spans.h"

#ifdef __cplusplus
extern "C" {
#endif

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

/** cp_segment_text over n texts (worker threads when n is large), outs[i] for texts[i]. Failures as
 *  base/cp_batch.h says: *status (may be NULL) = {lowest failing text, its code}, the message ("text I: ...") on
 *  the calling thread (a dictionary that cannot load: index CP_BATCH_NO_INDEX); outs still need cp_spans_free. */
int cp_segment_batch(const char *const *texts, const size_t *lens, size_t n, cp_lang lang, cp_spans *outs,
                     cp_batch_status *status);

#ifdef __cplusplus
}
#endif
#endif /* CP_SEGMENT_H */
