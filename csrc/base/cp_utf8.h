/* cp_utf8.h — the one UTF-8 decoder of csrc/ (and its encoder), plus the Unicode character classes the text layer
 * shares.
 *
 * Two entry points over the same encoding rules (RFC 3629 / Unicode 3.9, the rules CPython's "utf-8" codec uses):
 *   cp_utf8_decode   checked: any bytes; returns the code point and the sequence length, or the error class and the
 *                    length of the maximal invalid subpart (what CPython's errors="replace" turns into one U+FFFD).
 *   cp_utf8_next     unchecked: input already validated (cp_utf8_validate or cp_utf8_decode); never reads past the
 *                    sequence its lead byte announces. The hot loops of the text layer use it after one validation.
 * cp_utf8_validate   the whole-buffer check on top of cp_utf8_decode: CP_OK, or CP_ERR_TOKENIZER with the byte offset
 *                    of the first invalid sequence (recorded as the thread's last error).
 * cp_utf8_put        encodes one code point (<= U+10FFFF) into 1..4 bytes.
 *
 * Thread safety: pure functions.
 */
#ifndef CP_UTF8_H
#define CP_UTF8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Result classes of cp_utf8_decode. Python's UnicodeDecodeError reason for each: TRUNCATED "unexpected end of
 *  data"; BAD_LEAD, and OVERLONG / TOO_LARGE found at the lead byte (C0, C1, F5..F7), "invalid start byte"; the
 *  rest "invalid continuation byte". */
enum {
    CP_UTF8_OK = 0,
    CP_UTF8_TRUNCATED = -1, /* the input ends inside a sequence that is valid so far                        */
    CP_UTF8_BAD_LEAD = -2,  /* 0x80..0xBF or 0xF8..0xFF where a sequence starts                              */
    CP_UTF8_BAD_CONT = -3,  /* a byte outside 0x80..0xBF where a continuation byte must be                  */
    CP_UTF8_OVERLONG = -4,  /* C0, C1, E0 80..9F, F0 80..8F: a shorter encoding exists                       */
    CP_UTF8_SURROGATE = -5, /* ED A0..BF: U+D800..U+DFFF                                                    */
    CP_UTF8_TOO_LARGE = -6  /* F4 90..BF, F5..F7: above U+10FFFF                                             */
};

/** Decode one code point at s[0..n), n >= 1. On success returns CP_UTF8_OK, *cp = the code point, *len = 1..4.
 *  On an invalid sequence returns its class (< 0), *cp = U+FFFD and *len = the length of the maximal invalid
 *  subpart (1..3 bytes: the lead byte plus the continuation bytes that were still acceptable), so that a caller
 *  skipping *len bytes per U+FFFD reproduces CPython's bytes.decode("utf-8", "replace"). */
static inline int cp_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp, size_t *len) {
    uint32_t c = s[0];
    if (c < 0x80) {
        *cp = c, *len = 1;
        return CP_UTF8_OK;
    }
    *cp = 0xFFFD, *len = 1;
    if (c < 0xC2) return c < 0xC0 ? CP_UTF8_BAD_LEAD : CP_UTF8_OVERLONG;
    if (c > 0xF4) return c < 0xF8 ? CP_UTF8_TOO_LARGE : CP_UTF8_BAD_LEAD;
    /* the second byte's range depends on the lead (Unicode table 3-7); later bytes are always 80..BF */
    size_t need;
    uint32_t lo = 0x80, hi = 0xBF;
    int below = CP_UTF8_BAD_CONT, above = CP_UTF8_BAD_CONT;
    if (c < 0xE0) {
        need = 1, c &= 0x1F;
    } else if (c < 0xF0) {
        need = 2;
        if (c == 0xE0) lo = 0xA0, below = CP_UTF8_OVERLONG;
        if (c == 0xED) hi = 0x9F, above = CP_UTF8_SURROGATE;
        c &= 0x0F;
    } else {
        need = 3;
        if (c == 0xF0) lo = 0x90, below = CP_UTF8_OVERLONG;
        if (c == 0xF4) hi = 0x8F, above = CP_UTF8_TOO_LARGE;
        c &= 0x07;
    }
    for (size_t k = 1; k <= need; k++) {
        if (k >= n) {
            *len = k;
            return CP_UTF8_TRUNCATED;
        }
        uint32_t d = s[k];
        if (d < 0x80 || d > 0xBF) {
            *len = k;
            return CP_UTF8_BAD_CONT;
        }
        if (k == 1 && (d < lo || d > hi)) return d < lo ? below : above; /* *len = 1: the lead alone */
        c = (c << 6) | (d & 0x3F);
    }
    *cp = c, *len = need + 1;
    return CP_UTF8_OK;
}

/** A short static name for a CP_UTF8_* class ("overlong", ...). */
static inline const char *cp_utf8_class_name(int cls) {
    switch (cls) {
    case CP_UTF8_OK: return "ok";
    case CP_UTF8_TRUNCATED: return "truncated sequence";
    case CP_UTF8_BAD_LEAD: return "invalid start byte";
    case CP_UTF8_BAD_CONT: return "invalid continuation byte";
    case CP_UTF8_OVERLONG: return "overlong encoding";
    case CP_UTF8_SURROGATE: return "surrogate";
    default: return "above U+10FFFF";
    }
}

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

/** Bytes cp_utf8_put writes for c. */
static inline size_t cp_utf8_len(uint32_t c) { return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4; }

/** Encode c (<= U+10FFFF; surrogates are written as their 3-byte form) into d[0..4); returns the bytes written. */
static inline size_t cp_utf8_put(unsigned char *d, uint32_t c) {
    if (c < 0x80) {
        d[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        d[0] = (unsigned char)(0xC0 | (c >> 6)), d[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        d[0] = (unsigned char)(0xE0 | (c >> 12)), d[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        d[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    d[0] = (unsigned char)(0xF0 | (c >> 18)), d[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    d[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F)), d[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/** Strict check of s[0..n): CP_OK, or CP_ERR_TOKENIZER with *bad_offset (may be NULL) = the byte offset of the first
 *  invalid sequence; the message names the offset, the byte and the class. */
int cp_utf8_validate(const char *s, size_t n, size_t *bad_offset);

/** CPython's bytes.decode("utf-8", "replace") re-encoded as UTF-8: each maximal invalid subpart becomes U+FFFD
 *  (EF BF BD). dst needs 3*n bytes (a 1-byte subpart grows to 3). Returns the bytes written. */
size_t cp_utf8_replace_invalid(const unsigned char *s, size_t n, unsigned char *dst);

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
