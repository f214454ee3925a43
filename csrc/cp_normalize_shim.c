/* TEMPORARY shim for cp_clip_clean until branch `normalize` lands (no ftfy / HTML fixes). Deleted before merge. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "cp_common.h"
#include "cp_normalize.h"

static int shim_space(int32_t c) {
    return c == ' ' || (c >= 9 && c <= 13) || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

int cp_clip_clean(const char *s, size_t n, char **out, size_t *out_len) {
    size_t bad;
    CP_CHECK(cp_utf8_validate(s, n, &bad));
    char *o = malloc(4 * n + 8);
    if (!o) CP_FAIL(CP_ERR_NOMEM, "oom");
    size_t j = 0, i = 0;
    int pend = 0;
    while (i < n) {
        utf8proc_int32_t c;
        utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        i += (size_t)r;
        if (shim_space(c)) {
            pend = j > 0;
            continue;
        }
        if (pend) o[j++] = ' ', pend = 0;
        if (c == 0x130) {
            o[j++] = 'i';
            j += (size_t)utf8proc_encode_char(0x307, (utf8proc_uint8_t *)o + j);
            continue;
        }
        j += (size_t)utf8proc_encode_char(utf8proc_tolower(c), (utf8proc_uint8_t *)o + j);
    }
    o[j] = 0;
    if (j == 0) {
        free(o);
        CP_FAIL(CP_ERR_EMPTY, "empty prompt");
    }
    *out = o, *out_len = j;
    return CP_OK;
}
