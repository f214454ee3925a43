/* cp_wordpiece.h — BERT's tokenizer (transformers' slow BertTokenizer: BasicTokenizer + WordpieceTokenizer), id
 * for id, over utf8proc.
 *
 * Per prompt: split out the special tokens [CLS] [SEP] [PAD] [MASK] [UNK] written in the text (exact, case
 * sensitive), then on each other segment BERT's BasicTokenizer: drop U+0000, U+FFFD and control characters
 * (category C* except \t \n \r), whitespace (\t \n \r space, Zs) -> space, spaces around CJK ideographs, NFC,
 * split on whitespace, per word (unless it is a special): lowercase (Python str.lower) and NFD accent strip (drop Mn),
 * split off every punctuation character (P* and the ASCII symbol ranges). Then greedy longest-match-first WordPiece
 * with "##" continuations; [UNK] for a word of more than 100 characters or one that cannot be matched.
 * Vocabulary lookups go through base/cp_strmap.h. Thread-safety: immutable after create; all functions may run
 * concurrently.
 */
#ifndef CP_WORDPIECE_H
#define CP_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "base/cp_batch.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_wordpiece cp_wordpiece;

/** Build from the text of a vocab.txt (one token per line, id = line number, later duplicates win).
 *  lowercase: BERT's do_lower_case (also turns accent stripping on, as strip_accents=None does).
 *  Errors: CP_ERR_TOKENIZER (no [UNK]/[CLS]/[SEP] in the vocabulary, invalid UTF-8), CP_ERR_NOMEM. */
int cp_wordpiece_create(const char *vocab, size_t n, int lowercase, cp_wordpiece **out);
void cp_wordpiece_free(cp_wordpiece *t);

int32_t cp_wordpiece_vocab_size(const cp_wordpiece *t);
/** Ids of [CLS], [SEP], [PAD], [UNK] ([PAD] falls back to 0 when absent). */
void cp_wordpiece_special_ids(const cp_wordpiece *t, int32_t *cls, int32_t *sep, int32_t *pad, int32_t *unk);
/** The token string of an id (NUL-terminated, owned by t) or NULL when out of range. */
const char *cp_wordpiece_id_to_token(const cp_wordpiece *t, int32_t id);

/** Ids of one prompt without [CLS]/[SEP]; *ids malloc'd. Errors: CP_ERR_EMPTY (no tokens after cleaning),
 *  CP_ERR_TOKENIZER (invalid UTF-8), CP_ERR_NOMEM. */
int cp_wordpiece_encode(const cp_wordpiece *t, const char *s, size_t n, int32_t **ids, size_t *n_ids);

/** Encode n prompts into out[n][max_length]: [CLS] + the first max_length-2 ids + [SEP], then [PAD]s; lengths[i]
 *  is the count before padding. OpenMP over prompts (cp_get_num_threads()). max_length >= 2 else
 *  CP_ERR_INVALID_ARG (no index). Failures as base/cp_batch.h says: *status (may be NULL) = {lowest failing prompt,
 *  its code}, the message (naming that prompt) on the calling thread. Safe without the GIL. */
int cp_wordpiece_encode_batch(const cp_wordpiece *t, const char *const *texts, const size_t *lens, size_t n,
                              size_t max_length, int32_t *out, int32_t *lengths, cp_batch_status *status);

#ifdef __cplusplus
}
#endif
#endif /* CP_WORDPIECE_H */
