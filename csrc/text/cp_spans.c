/* cp_spans.c — see cp_spans.h. */
#include "text/cp_spans.h"

#include <stdlib.h>

#include "base/cp_common.h"

int cp_spans_push(cp_spans *s, size_t start, size_t len) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        cp_span *v = realloc(s->v, cap * sizeof(cp_span));
        if (!v) return cp_fail(CP_ERR_NOMEM, "out of memory for %zu tokens", cap);
        s->v = v, s->cap = cap;
    }
    s->v[s->n].start = start, s->v[s->n].len = len;
    s->n++;
    return CP_OK;
}

void cp_spans_free(cp_spans *s) {
    free(s->v);
    s->v = NULL, s->n = s->cap = 0;
}
