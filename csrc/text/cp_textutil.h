/* cp_textutil.h — small text helpers shared by the tokenizers (cp_bpe.c, cp_wordpiece.c). */
#ifndef CP_TEXTUTIL_H
#define CP_TEXTUTIL_H

#include <stddef.h>

/** A short printable prefix of a prompt for error messages into dst (cap bytes, cap >= 8): whole UTF-8 characters,
 *  at most ~40 bytes, newlines and tabs as spaces, "..." when cut. */
void cp_prompt_prefix(const char *s, size_t n, char *dst, size_t cap);

/** Re-record this thread's last error `code` as `prompt INDEX ("PREFIX"): <the message so far>`; returns code. Batch
 *  rows call it on their worker thread before cp_batch_errors_note (base/cp_batch.h). */
int cp_prompt_fail(int code, size_t index, const char *s, size_t n);

#endif
