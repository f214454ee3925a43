/* cp_spans.h — the token-span list every segmenter fills (jieba, MeCab, the piecewise segmenter).
 *
 * Tokens are byte spans into the caller's UTF-8 text; nothing is copied. Errors: CP_ERR_NOMEM from cp_spans_push.
 * Thread safety: a cp_spans belongs to one thread at a time.
 */
#ifndef CP_SPANS_H
#define CP_SPANS_H

#include <stddef.h>

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

#ifdef __cplusplus
}
#endif
#endif /* CP_SPANS_H */
