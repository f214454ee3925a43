/* cp_utf8.h — the one UTF-8 decoder and the Unicode character classes the text layer shares.
 *
 * Contract: cp_utf8_next decodes already-validated UTF-8 (no checks, never reads past the sequence its lead byte
 * announces). Validate first with cp_utf8_check (base/cp_common.h) or the caller's own validation.
 * Thread safety: pure functions.
 */
#ifndef CP_UTF8_H
#define CP_UTF8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Decode one code point of valid UTF-8 at s[*i] (advancing *i). Input must have been validated. */
static inline uint32_t cp_utf8_next(const unsigned char *s, size_t *i) {
    uint32_t c = s[*i];
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    if (c < 0xE0) {
        c = ((c & 0x1F) << 6) | (s[*i + 1] & 0x3F);
        *i += 2;
        return c;
    }
    if (c < 0xF0) {
        c = ((c & 0x0F) << 12) | ((uint32_t)(s[*i + 1] & 0x3F) << 6) | (s[*i + 2] & 0x3F);
        *i += 3;
        return c;
    }
    c = ((c & 0x07) << 18) | ((uint32_t)(s[*i + 1] & 0x3F) << 12) | ((uint32_t)(s[*i + 2] & 0x3F) << 6) |
        (s[*i + 3] & 0x3F);
    *i += 4;
    return c;
}

/** Python's str.isspace / re `\s` for str patterns (Unicode 14, CPython 3.11): the set jieba and str.split use. */
static inline int cp_is_py_space(uint32_t c) {
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

#ifdef __cplusplus
}
#endif
#endif /* CP_UTF8_H */
