/* cp_utf8.c — whole-buffer UTF-8 checks and replacement decoding over cp_utf8_decode (see cp_utf8.h). */
#include "base/cp_utf8.h"

#include <string.h>

#include "base/cp_common.h"

int cp_utf8_validate(const char *s, size_t n, size_t *bad_offset) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* eight ASCII bytes at a time: most prompts are mostly ASCII */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t c;
        size_t len;
        int cls = cp_utf8_decode(p + i, n - i, &c, &len);
        if (cls != CP_UTF8_OK) {
            if (bad_offset) *bad_offset = i;
            CP_FAIL(CP_ERR_TOKENIZER, "invalid UTF-8 at byte offset %zu (byte 0x%02x: %s)", i, (unsigned)p[i],
                    cp_utf8_class_name(cls));
        }
        i += len;
    }
    return CP_OK;
}

size_t cp_utf8_replace_invalid(const unsigned char *s, size_t n, unsigned char *dst) {
    size_t i = 0, j = 0;
    while (i < n) {
        uint32_t c;
        size_t len;
        if (cp_utf8_decode(s + i, n - i, &c, &len) == CP_UTF8_OK) {
            memcpy(dst + j, s + i, len);
            j += len;
        } else {
            memcpy(dst + j, "\xEF\xBF\xBD", 3);
            j += 3;
        }
        i += len;
    }
    return j;
}
