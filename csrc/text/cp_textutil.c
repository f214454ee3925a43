/* cp_textutil.c — see cp_textutil.h. */
#include "text/cp_textutil.h"

#include <stdint.h>
#include <stdio.h>

#include "base/cp_common.h"

void cp_prompt_prefix(const char *s, size_t n, char *dst, size_t cap) {
    size_t k = n < 40 ? n : 40;
    while (k > 0 && k < n && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
    if (k >= cap - 4) k = cap - 4;
    size_t j = 0;
    for (size_t i = 0; i < k; i++) dst[j++] = (s[i] == '\n' || s[i] == '\r' || s[i] == '\t') ? ' ' : s[i];
    if (k < n) dst[j++] = '.', dst[j++] = '.', dst[j++] = '.';
    dst[j] = '\0';
}

int cp_prompt_fail(int code, size_t index, const char *s, size_t n) {
    char prefix[64], inner[512];
    snprintf(inner, sizeof inner, "%s", cp_last_error());
    cp_prompt_prefix(s, n, prefix, sizeof prefix);
    return cp_fail(code, "prompt %zu (\"%s\"): %s", index, prefix, inner);
}
