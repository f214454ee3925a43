/* cp_weights.c — two-pass tensor binding (see cp_weights.h). */
#include "model/cp_weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"
#include "base/cp_hash.h"

void cp_wstore_init(cp_wstore *ws, cp_st_set *st) {
    memset(ws, 0, sizeof *ws);
    ws->st = st;
    ws->hash = 0;
}

void cp_wstore_release(cp_wstore *ws) {
    cp_free_aligned(ws->buf);
    cp_st_close(ws->st);
    ws->buf = NULL;
    ws->st = NULL;
}

/* The weights' sample hash: XXH64 (base/cp_hash.h) chained, each piece hashed with the hash so far as its seed. */
static void hash_bytes(uint64_t *h, const void *p, size_t n) { *h = cp_hash64(p, n, *h); }

static void append(char *dst, size_t cap, const char *s) {
    size_t l = strlen(dst);
    if (l + 1 >= cap) return;
    snprintf(dst + l, cap - l, "%s", s);
}

const float *cp_wstore_get(cp_wstore *ws, const char *name, int ndim, const int64_t *shape) {
    const cp_st_tensor *t = cp_st_find(ws->st, name);
    if (ws->pass == 0) {
        if (t == NULL) {
            if (ws->nmissing) append(ws->missing, sizeof ws->missing, ", ");
            append(ws->missing, sizeof ws->missing, name);
            ws->nmissing++;
            return NULL;
        }
        int ok = t->ndim == ndim;
        for (int d = 0; ok && d < ndim; d++) ok = shape[d] < 0 || shape[d] == t->shape[d];
        if (!ok) {
            char exp[160] = "[", got[160] = "[", tmp[32];
            for (int d = 0; d < ndim; d++) {
                snprintf(tmp, sizeof tmp, "%s%lld", d ? ", " : "", (long long)shape[d]);
                append(exp, sizeof exp, tmp);
            }
            for (int d = 0; d < t->ndim; d++) {
                snprintf(tmp, sizeof tmp, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
                append(got, sizeof got, tmp);
            }
            append(exp, sizeof exp, "]");
            append(got, sizeof got, "]");
            if (ws->nshape_err == 0)
                snprintf(ws->shape_err, sizeof ws->shape_err, "tensor \"%s\": expected shape %s, found %s", name, exp,
                         got);
            ws->nshape_err++;
            return NULL;
        }
        if (t->dtype != CP_DT_F32 && t->dtype != CP_DT_F16 && t->dtype != CP_DT_BF16 && t->dtype != CP_DT_F64) {
            if (ws->nshape_err == 0)
                snprintf(ws->shape_err, sizeof ws->shape_err,
                         "tensor \"%s\" has dtype %s; supported weight dtypes are F32, F16, BF16 (and F64)", name,
                         cp_dtype_name(t->dtype));
            ws->nshape_err++;
            return NULL;
        }
        if (!(t->dtype == CP_DT_F32 && ((uintptr_t)t->data & 3u) == 0))
            ws->buf_floats += ((size_t)t->numel + 15) & ~(size_t)15; /* keep each tensor 64-byte aligned */
        return NULL;
    }
    /* fill pass: the plan pass guaranteed presence, shape and dtype */
    hash_bytes(&ws->hash, name, strlen(name));
    hash_bytes(&ws->hash, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    hash_bytes(&ws->hash, &t->dtype, sizeof t->dtype);
    /* a sample of the bytes: first, middle and last 64 (reading them touches at most three pages) */
    size_t nb = t->nbytes, k = nb < 64 ? nb : 64;
    const unsigned char *d = t->data;
    hash_bytes(&ws->hash, d, k);
    hash_bytes(&ws->hash, d + (nb - k) / 2, k);
    hash_bytes(&ws->hash, d + nb - k, k);
    if (t->dtype == CP_DT_F32 && ((uintptr_t)t->data & 3u) == 0) return (const float *)t->data;
    float *dst = ws->buf + ws->buf_used;
    ws->buf_used += ((size_t)t->numel + 15) & ~(size_t)15;
    int rc = cp_st_to_f32(t, dst);
    if (rc != CP_OK && ws->convert_err == 0) ws->convert_err = rc;
    return dst;
}

const float *cp_wstore_get_concat(cp_wstore *ws, const char *const *names, int n, int64_t rows, int64_t cols) {
    const int64_t per = cols > 0 ? rows * cols : rows;
    int64_t shape[2] = {rows, cols};
    const int ndim = cols > 0 ? 2 : 1;
    if (ws->pass == 0) {
        int ok = 1;
        for (int i = 0; i < n; i++) {
            size_t before = ws->buf_floats;
            int nm = (int)ws->nmissing, ns = ws->nshape_err;
            cp_wstore_get(ws, names[i], ndim, shape);
            ws->buf_floats = before; /* reserve the block below instead */
            ok &= (int)ws->nmissing == nm && ws->nshape_err == ns;
        }
        if (ok) ws->buf_floats += (((size_t)per * (size_t)n) + 15) & ~(size_t)15;
        return NULL;
    }
    float *dst = ws->buf + ws->buf_used;
    ws->buf_used += (((size_t)per * (size_t)n) + 15) & ~(size_t)15;
    for (int i = 0; i < n; i++) {
        const cp_st_tensor *t = cp_st_find(ws->st, names[i]);
        hash_bytes(&ws->hash, names[i], strlen(names[i]));
        hash_bytes(&ws->hash, t->shape, sizeof(int64_t) * (size_t)t->ndim);
        hash_bytes(&ws->hash, &t->dtype, sizeof t->dtype);
        size_t nb = t->nbytes, k = nb < 64 ? nb : 64;
        const unsigned char *d = t->data;
        hash_bytes(&ws->hash, d, k);
        hash_bytes(&ws->hash, d + (nb - k) / 2, k);
        hash_bytes(&ws->hash, d + nb - k, k);
        int rc = cp_st_to_f32(t, dst + (size_t)i * (size_t)per);
        if (rc != CP_OK && ws->convert_err == 0) ws->convert_err = rc;
    }
    return dst;
}

const float *cp_wstore_get1(cp_wstore *ws, const char *name, int64_t n0) {
    int64_t s[1] = {n0};
    return cp_wstore_get(ws, name, 1, s);
}

const float *cp_wstore_get2(cp_wstore *ws, const char *name, int64_t n0, int64_t n1) {
    int64_t s[2] = {n0, n1};
    return cp_wstore_get(ws, name, 2, s);
}

int cp_wstore_finish_plan(cp_wstore *ws, const char *model_what) {
    if (ws->nmissing)
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: %zu tensor%s missing: %s", model_what, ws->nmissing,
                ws->nmissing == 1 ? "" : "s", ws->missing);
    if (ws->nshape_err)
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: %s%s", model_what, ws->shape_err,
                ws->nshape_err > 1 ? " (and more mismatches)" : "");
    size_t bytes;
    CP_CHECK(cp_mul_size(ws->buf_floats, sizeof(float), &bytes));
    ws->buf = cp_malloc_aligned(bytes);
    if (ws->buf == NULL) CP_FAIL(CP_ERR_NOMEM, "%s: cannot allocate %zu bytes for converted weights", model_what, bytes);
    ws->buf_used = 0;
    ws->pass = 1;
    return CP_OK;
}

int cp_wstore_finish_fill(cp_wstore *ws) { return ws->convert_err; }
