/* cp_mojibake.h — ftfy 6.3's mojibake (encoding) repair on code points (implementation: cp_mojibake.c).
 *
 * Internal to the normaliser (cp_normalize.c): ftfy.fix_text calls fix_encoding once per pass of its fix loop, right
 * after unescape_html; cp_normalize does the same. Tables come from csrc/tools/gen_mojibake_tables.py.
 */
#ifndef CP_MOJIBAKE_H
#define CP_MOJIBAKE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ftfy.badness.is_bad(text): does BADNESS_RE match anywhere in v[0:n)? */
int cp_mojibake_is_bad(const uint32_t *v, size_t n);

/** ftfy.fix_encoding(text) with the default config. When the text changes, *out is a malloc'd array of *out_n code
 *  points (the caller frees it); when nothing changes *out is NULL. Errors: CP_ERR_NOMEM. */
int cp_mojibake_fix(const uint32_t *v, size_t n, uint32_t **out, size_t *out_n);

#ifdef __cplusplus
}
#endif
#endif /* CP_MOJIBAKE_H */
