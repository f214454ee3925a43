/* cp_bpe.h — CLIP's byte-level BPE tokenizer (OpenAI SimpleTokenizer, id for id).
 *
 * Pipeline per prompt: cp_clip_clean (ftfy-equivalent fixes, HTML unescape x2, whitespace collapse, strip, lowercase)
 * -> OpenAI's pre-tokenizer pattern
 *      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+   (IGNORECASE)
 *    with the `regex` module's classes (utf8proc categories + cp_tokenizer_tables.h)
 * -> bytes of each piece -> BPE by merge rank, "</w>" on the last symbol -> vocabulary ids.
 * Ids: 0..255 single bytes, 256..511 the same + "</w>", 512.. one per merge, then <|startoftext|> (SOT) and
 * <|endoftext|> (EOT): 49406 / 49407 for the bundled bpe_simple_vocab_16e6.
 *
 * Thread-safety: a cp_bpe is immutable after cp_bpe_create except for its bounded word cache, which is guarded by
 * striped mutexes; every function below may be called concurrently on the same object.
 */
#ifndef CP_BPE_H
#define CP_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "base/cp_batch.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_bpe cp_bpe;

/** Build a tokenizer from the text of a CLIP merges file (bpe_simple_vocab_16e6.txt, already decompressed): a
 *  header line, then "A B" merges; the first 49152-256-2 lines after the header are used, as OpenAI does.
 *  cache_slots: size of the word cache (rounded up to a power of two; 0 disables it).
 *  *out is owned by the caller (cp_bpe_free). Errors: CP_ERR_TOKENIZER (bad merges text), CP_ERR_NOMEM. */
int cp_bpe_create(const char *merges, size_t n, size_t cache_slots, cp_bpe **out);
void cp_bpe_free(cp_bpe *t);

int32_t cp_bpe_vocab_size(const cp_bpe *t);
int32_t cp_bpe_sot(const cp_bpe *t);
int32_t cp_bpe_eot(const cp_bpe *t);

/** Encode one prompt without SOT/EOT. *ids is malloc'd (caller frees; may be NULL when *n_ids == 0 is impossible:
 *  an empty/whitespace-only prompt is CP_ERR_EMPTY). Errors: CP_ERR_EMPTY, CP_ERR_TOKENIZER (invalid UTF-8),
 *  CP_ERR_NOMEM. */
int cp_bpe_encode(const cp_bpe *t, const char *s, size_t n, int32_t **ids, size_t *n_ids);

/** Encode n prompts into out[n][ctx] (int32, SOT ... EOT, zero padded), with OpenMP over prompts.
 *  lengths[i]: tokens written to row i (with SOT/EOT); full_lengths[i] (may be NULL): tokens before truncation.
 *  truncate != 0: rows longer than ctx keep SOT + the first ctx-2 tokens + EOT. truncate == 0: a longer prompt is
 *  CP_ERR_TOKENIZER naming it. Failures as base/cp_batch.h says: *status (may be NULL) = {lowest failing prompt,
 *  its code}, the message (naming that prompt's index and prefix) on the calling thread; rows of other prompts
 *  are unspecified then. ctx must be >= 2 (CP_ERR_INVALID_ARG, no index). Safe to call without the GIL. */
int cp_bpe_encode_batch(const cp_bpe *t, const char *const *texts, const size_t *lens, size_t n, size_t ctx,
                        int truncate, int32_t *out, int32_t *lengths, int32_t *full_lengths, cp_batch_status *status);

/** The inverse of encode as SimpleTokenizer.decode: token bytes joined, decoded as UTF-8 with U+FFFD for invalid
 *  sequences (CPython's "replace" rules), then every "</w>" replaced by a space. *out is malloc'd, NUL-terminated.
 *  Errors: CP_ERR_INVALID_ARG (id outside the vocabulary), CP_ERR_NOMEM. */
int cp_bpe_decode(const cp_bpe *t, const int32_t *ids, size_t n, char **out, size_t *out_len);

/** OpenAI's pre-tokenizer alone, on text used as is (no cleaning): *spans gets 2*count byte offsets
 *  (start, end) per piece, malloc'd. For tests and debugging. Errors: CP_ERR_TOKENIZER (invalid UTF-8), NOMEM. */
int cp_bpe_pretokenize(const char *s, size_t n, size_t **spans, size_t *count);

/** Word cache counters (all zero when the cache is disabled). */
void cp_bpe_cache_stats(const cp_bpe *t, uint64_t *hits, uint64_t *misses, size_t *slots);

#ifdef __cplusplus
}
#endif
#endif /* CP_BPE_H */
