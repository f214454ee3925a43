/* cp_normalize.h — Unicode cleanup of prompt text over utf8proc (implementation: cp_normalize.c).
 *
 * Two entry points:
 *   cp_normalize   the configurable normaliser behind cp.normalize (NFC/NFKC, full-width -> half-width, HTML
 *                  unescape, ftfy.fix_text's fixes incl. mojibake repair, whitespace collapse, lowercase,
 *                  script-boundary spaces).
 *   cp_clip_clean  exactly what OpenAI's SimpleTokenizer does before BPE when ftfy is installed:
 *                  whitespace_clean(basic_clean(text)).lower(), where basic_clean = ftfy.fix_text, then
 *                  html.unescape twice, then strip; whitespace_clean = re.sub(r"\s+", " ", t).strip().
 * Input must be valid UTF-8 (CP_ERR_TOKENIZER names the byte offset otherwise). Output is malloc'd, NUL
 * terminated; the caller frees it with free(). Thread-safe (no shared mutable state).
 *
 * cp_normalize applies, in this order: ftfy fixes, html_unescape passes, full-width map, NFC/NFKC, lowercase,
 * whitespace collapse, script-boundary spaces. ftfy's mojibake repair (fix_encoding) lives in cp_mojibake.c; see
 * README "Unicode normaliser" for the documented differences.
 */
#ifndef CP_NORMALIZE_H
#define CP_NORMALIZE_H

#include <stddef.h>

#include "base/cp_batch.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CP_FORM_NONE = 0, CP_FORM_NFC = 1, CP_FORM_NFKC = 2 } cp_norm_form;

typedef struct {
    int form;            /* cp_norm_form                                                             */
    int lowercase;       /* full Unicode lowercase (Python str.lower semantics)                      */
    int fullwidth;       /* full-width ASCII variants and ideographic space -> ASCII (NFKC implies)   */
    int html_unescape;   /* number of html.unescape passes (0 = none; CLIP cleaning does 2)          */
    int ftfy;            /* ftfy.fix_text's fixes (quotes, ligatures, width, controls,              */
                         /* line breaks, NFC)                                                        */
    int fix_encoding;    /* with ftfy: also ftfy's mojibake repair (fix_encoding), as ftfy.fix_text does */
    int collapse_ws;     /* runs of Unicode whitespace -> one ASCII space; strip both ends           */
    int script_spaces;   /* insert a space where Latin/digits meet CJK ("shirt白色" -> "shirt 白色"), except inside
                            mixed-script dictionary words ("白色T恤" -> "白色 T恤"; cp_mixed_words.inc)      */
    int empty_is_error;  /* CP_ERR_EMPTY when the result is empty / whitespace only                   */
} cp_normalize_opts;

/** The defaults of cp.normalize(): NFKC, full-width, 2 HTML passes, ftfy fixes, collapse, script spaces,
 *  no lowercase, empty is an error. */
void cp_normalize_opts_default(cp_normalize_opts *o);

/** Normalise s[0:n). On success *out (malloc'd, NUL-terminated) and *out_len are set. Errors:
 *  CP_ERR_TOKENIZER (invalid UTF-8, with byte offset), CP_ERR_EMPTY, CP_ERR_NOMEM. */
int cp_normalize(const char *s, size_t n, const cp_normalize_opts *o, char **out, size_t *out_len);

/** CLIP's exact pre-BPE cleaning (see above), lowercased. An all-whitespace input gives CP_ERR_EMPTY. */
int cp_clip_clean(const char *s, size_t n, char **out, size_t *out_len);

/** Batch forms: texts[i][0:lens[i]) -> outs[i] (malloc'd, NUL-terminated, caller frees each), out_lens[i].
 *  Prompts run in parallel (OpenMP) for large batches. Failures as base/cp_batch.h says: *status (may be NULL)
 *  = {lowest failing prompt, its code}, its message on the calling thread; on failure every outs[i] is freed
 *  and set to NULL. cp_normalize_batch: o == NULL means the defaults. Safe without the GIL. */
int cp_normalize_batch(const char *const *texts, const size_t *lens, size_t n, const cp_normalize_opts *o,
                       char **outs, size_t *out_lens, cp_batch_status *status);
int cp_clip_clean_batch(const char *const *texts, const size_t *lens, size_t n, char **outs, size_t *out_lens,
                        cp_batch_status *status);

#ifdef __cplusplus
}
#endif
#endif /* CP_NORMALIZE_H */
