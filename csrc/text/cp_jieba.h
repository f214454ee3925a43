/* cp_jieba.h — Chinese word segmentation: jieba 0.42.1's default accurate mode (`jieba.lcut(s, HMM=True)`), in C.
 *
 * Same data (jieba's dict.txt and finalseg HMM tables, bundled in clipprompt/data/jieba/), same algorithm, same
 * floating-point operations in the same order, same tie-breaking, so the output is identical token for token:
 *   1. the text is split into blocks of [\u4E00-\u9FD5a-zA-Z0-9+#&._%-]; outside them every whitespace
 *      character ("\r\n" together) and every other character is its own token;
 *   2. in a block: the DAG of dictionary words, the max log-probability route (ties -> the longer word);
 *   3. runs of single characters on the route that are not a dictionary word go to the B/M/E/S HMM (Viterbi) for
 *      Han runs and to jieba's [a-zA-Z0-9]+(\.\d+)?%? grouping for the rest.
 * User words (cp_jieba_add_word / cp_jieba_load_userdict) follow jieba's add_word / suggest_freq / load_userdict.
 *
 * Thread safety: a cp_jieba is read under a read lock and changed (user words) under the write lock; any number
 * of threads may cut concurrently with each other and with add_word.
 */
#ifndef CP_JIEBA_H
#define CP_JIEBA_H

#include "base/cp_common.h"
#include "base/cp_utf8.h"
#include "text/cp_spans.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_jieba cp_jieba;

/** Build a segmenter from a jieba dict.txt (`word freq [tag]` lines) and an hmm_model.txt written by
 *  csrc/tools/convert_jieba_hmm.py. *out is owned by the caller: cp_jieba_free. CP_ERR_IO if a file cannot be read,
 *  CP_ERR_INVALID_ARG naming the line of a malformed entry. */
int cp_jieba_create(cp_jieba **out, const char *dict_path, const char *hmm_path);
void cp_jieba_free(cp_jieba *j);

/** The process-wide segmenter over the bundled data, created at the first call (thread-safe, once) and never
 *  freed. Data folder: cp_jieba_set_data_dir if called before, else $CLIPPROMPT_JIEBA_DIR, else data/jieba next to
 *  the shared object this code lives in (clipprompt/data/jieba). A failed load is reported on every call. */
int cp_jieba_default(cp_jieba **out);
/** Use `dir` (holding dict.txt and hmm_model.txt) for cp_jieba_default; CP_ERR_INVALID_ARG once it is loaded. */
int cp_jieba_set_data_dir(const char *dir);

/** Segment valid UTF-8 `text` exactly as jieba.lcut(text, HMM=hmm) (hmm=0: jieba's HMM=False path), appending
 *  one span per token, whitespace tokens included, to `out` (offsets relative to `text`). */
int cp_jieba_cut(cp_jieba *j, const char *text, size_t len, int hmm, cp_spans *out);

/** jieba.add_word(word, freq): freq < 0 means None (jieba's suggest_freq(word)). The frequency used goes to
 *  *used (may be NULL). freq == 0 marks the word for forced splitting in HMM output, as jieba does. */
int cp_jieba_add_word(cp_jieba *j, const char *word, size_t len, int64_t freq, int64_t *used);

/** jieba.suggest_freq(word, tune=False) for one word: the frequency that makes it a single token. */
int cp_jieba_suggest_freq(cp_jieba *j, const char *word, size_t len, int64_t *out);

/** jieba.load_userdict(path): UTF-8 lines `word [freq] [tag]` (parsed with jieba's regex
 *  ^(.+?)( [0-9]+)?( [a-z]+)?$), each applied with cp_jieba_add_word in file order. */
int cp_jieba_load_userdict(cp_jieba *j, const char *path);
/** The same over the bytes of a user dictionary already in memory; `name` labels error messages. */
int cp_jieba_load_userdict_text(cp_jieba *j, const char *data, size_t n, const char *name);

/** FREQ.get(word): *found = 0 if absent (then *freq = 0); prefixes of words are present with frequency 0. */
int cp_jieba_get_freq(cp_jieba *j, const char *word, size_t len, int64_t *freq, int *found);

/** Sum of all frequencies (jieba's `total`) and the number of entries in the prefix dictionary. */
int64_t cp_jieba_total(cp_jieba *j);
size_t cp_jieba_size(cp_jieba *j);

#ifdef __cplusplus
}
#endif
#endif /* CP_JIEBA_H */
