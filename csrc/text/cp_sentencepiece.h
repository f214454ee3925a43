/* cp_sentencepiece.h — SentencePiece unigram tokenization, id for id with the sentencepiece library (v0.2).
 *
 * A tokenizer is built from either
 *   - a SentencePiece .model file (a ModelProto protobuf: pieces with score and type, trainer_spec, normalizer_spec
 *     with its precompiled charsmap — a darts-clone double-array trie + NUL-terminated replacement strings), or
 *   - a piece table (pieces, scores, special ids) plus per-code-point normalisation rules, the form an encoder's
 *     weight file may carry instead (multilingual-e5's file: see model/cp_q4.h).
 * Encoding follows the library: Normalizer::Normalize (longest-match charsmap rules or user-defined symbols passed
 * through unnormalised, invalid UTF-8 -> U+FFFD per byte, leading/trailing/repeated whitespace removed, dummy prefix,
 * ' ' -> U+2581), then unigram::Model::EncodeOptimized (Viterbi over a byte trie of the NORMAL/USER_DEFINED/UNUSED
 * pieces, float path scores, first-wins tie-breaking, an unknown character = min NORMAL score - 10), then
 * the processor's post-pass (consecutive unknowns merged into one id; with byte_fallback each unknown byte becomes
 * its <0xXX> piece). Only unigram models are accepted. Known divergence: on one 162 KB text (path scores near -3e5,
 * float spacing 0.03) one near-tie resolved differently from the library; texts up to 86 KB were identical.
 * Thread safety: immutable after create; every function may run concurrently on one tokenizer.
 */
#ifndef CP_SENTENCEPIECE_H
#define CP_SENTENCEPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "base/cp_batch.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_sp cp_sp;

/** Piece types, numbered as ModelProto.SentencePiece.Type. */
enum { CP_SP_NORMAL = 1, CP_SP_UNKNOWN = 2, CP_SP_CONTROL = 3, CP_SP_USER_DEFINED = 4, CP_SP_UNUSED = 5, CP_SP_BYTE = 6 };

/** A piece table with per-code-point normalisation rules (all arrays borrowed for the duration of the call). */
typedef struct {
    int32_t n_pieces;
    const char *blob;        /* piece bytes, concatenated */
    const uint32_t *offsets; /* [n_pieces + 1] non-decreasing byte offsets into blob */
    const float *scores;     /* [n_pieces] */
    const uint8_t *types;    /* [n_pieces] CP_SP_*, or NULL: NORMAL except the special ids below (CONTROL/UNKNOWN) */
    int32_t unk_id, bos_id, eos_id, pad_id; /* unk required; the others -1 when absent */
    size_t n_rules;                         /* normalisation: code point rule_cp[i] -> rule_out[rule_off[i]..[i+1]) */
    const uint32_t *rule_cp;                /* [n_rules] strictly ascending */
    const uint32_t *rule_off;               /* [n_rules + 1] non-decreasing, into rule_out */
    const uint32_t *rule_out;               /* replacement code points (0 < cp <= 0x10FFFF, no surrogates) */
} cp_sp_table;

/** Build from the bytes of a .model file. Errors: CP_ERR_TOKENIZER naming what is wrong (truncated or malformed
 *  protobuf, not a unigram model, no <unk>, duplicate or empty piece, broken charsmap, byte_fallback without the
 *  256 byte pieces), CP_ERR_NOMEM. */
int cp_sp_create_model(const void *data, size_t n, cp_sp **out);
/** Build from a piece table (see cp_sp_table). Same errors. The whitespace options are SentencePiece's defaults
 *  (add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces). */
int cp_sp_create_table(const cp_sp_table *table, cp_sp **out);
void cp_sp_free(cp_sp *t);

int32_t cp_sp_vocab_size(const cp_sp *t);
/** Special ids as the library reports them (-1 when the model has none). */
void cp_sp_special_ids(const cp_sp *t, int32_t *unk, int32_t *bos, int32_t *eos, int32_t *pad);
/** The piece of an id and its byte length (not NUL-terminated; owned by t), or NULL when out of range. */
const char *cp_sp_id_to_piece(const cp_sp *t, int32_t id, size_t *len);
/** The type (CP_SP_*) of an id, or 0 when out of range. */
int cp_sp_piece_type(const cp_sp *t, int32_t id);

/** The normalised text (what the library's Normalize returns) into *out (malloc'd, NUL-terminated), *out_len.
 *  Errors: CP_ERR_TOKENIZER when normalisation would grow the text beyond 64 x its size + 1 KiB (only a hostile
 *  charsmap does that), CP_ERR_NOMEM. */
int cp_sp_normalize(const cp_sp *t, const char *s, size_t n, char **out, size_t *out_len);

/** Ids of one text, no BOS/EOS (what SentencePieceProcessor.encode returns); *ids malloc'd (NULL when *n_ids is 0:
 *  empty or whitespace-only text has no ids). Invalid UTF-8 is tokenized as the library does (U+FFFD per byte).
 *  Errors: as cp_sp_normalize, CP_ERR_NOMEM. */
int cp_sp_encode(const cp_sp *t, const char *s, size_t n, int32_t **ids, size_t *n_ids);

/** Encode n texts into out[n][max_length]: [BOS] + the first ids + [EOS] (each only when the model has it), then
 *  padding with the pad id (0 when the model has none); lengths[i] = count before padding. Longer texts are cut to
 *  max_length keeping [EOS]. max_length must leave room for one id after the specials (CP_ERR_INVALID_ARG).
 *  OpenMP over texts (cp_get_num_threads()). Failures as base/cp_batch.h says: *status (may be NULL) = {lowest
 *  failing text, its code}, the message (naming that text) on the calling thread. */
int cp_sp_encode_batch(const cp_sp *t, const char *const *texts, const size_t *lens, size_t n, size_t max_length,
                       int32_t *out, int32_t *lengths, cp_batch_status *status);

#ifdef __cplusplus
}
#endif
#endif /* CP_SENTENCEPIECE_H */
