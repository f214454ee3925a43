/* cp_mecab.h — Japanese word segmentation with MeCab (wakati: surface forms), through MeCab's C API.
 *
 * libmecab.so.2 is dlopen'ed at first use, so clipprompt imports and runs everything else on a machine without
 * MeCab; asking for Japanese there fails with CP_ERR_DEPENDENCY naming what to install. Dictionary: $MECAB_DICDIR
 * if set, else Debian's /var/lib/mecab/dic/ipadic-utf8 when present, else what mecabrc names; it must be UTF-8.
 *
 * Thread safety: one MeCab model and tagger shared by all threads (MeCab's Model and Tagger are thread-safe);
 * one lattice per thread (lattices are not), created on the thread's first call and freed when it exits.
 */
#ifndef CP_MECAB_H
#define CP_MECAB_H

#include "base/cp_common.h"
#include "base/cp_utf8.h"
#include "text/cp_spans.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Load MeCab and its dictionary if not done yet (thread-safe, once; a failure is remembered and reported again).
 *  CP_ERR_DEPENDENCY with the install hint when the library or a UTF-8 dictionary is missing. */
int cp_mecab_load(void);

/** Append the MeCab wakati tokens of valid UTF-8 `text` to `out` (byte spans relative to `text`): the surface of
 *  every node between BOS and EOS, exactly what `mecab -Owakati` prints. */
int cp_mecab_cut(const char *text, size_t len, cp_spans *out);

/** After a successful cp_mecab_load: MeCab's version and the dictionary folder in use ("" = mecabrc's). Static
 *  strings owned by the library. */
const char *cp_mecab_version(void);
const char *cp_mecab_dicdir(void);

#ifdef __cplusplus
}
#endif
#endif /* CP_MECAB_H */
