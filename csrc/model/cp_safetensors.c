/* cp_safetensors.c — mmap + bounds-checked header parsing for safetensors (see cp_safetensors.h). */
#define _GNU_SOURCE
#include "model/cp_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/cp_common.h"
#include "base/cp_json.h"

typedef struct {
    char *path;
    void *map;
    size_t size;
} st_file;

struct cp_st_set {
    st_file *files;
    int nfiles;
    cp_st_tensor *tensors;
    char **names;
    size_t count, cap;
};

static const struct {
    const char *name;
    cp_dtype dt;
    size_t size;
} st_dtypes[] = {
    {"F64", CP_DT_F64, 8},    {"F32", CP_DT_F32, 4},     {"F16", CP_DT_F16, 2},          {"BF16", CP_DT_BF16, 2},
    {"I64", CP_DT_I64, 8},    {"I32", CP_DT_I32, 4},     {"I16", CP_DT_I16, 2},          {"I8", CP_DT_I8, 1},
    {"U8", CP_DT_U8, 1},      {"BOOL", CP_DT_BOOL, 1},   {"F8_E4M3", CP_DT_F8_E4M3, 1}, {"F8_E5M2", CP_DT_F8_E5M2, 1},
    {"U16", CP_DT_U16, 2},    {"U32", CP_DT_U32, 4},     {"U64", CP_DT_U64, 8},
};

const char *cp_dtype_name(cp_dtype dt) {
    for (size_t k = 0; k < sizeof st_dtypes / sizeof st_dtypes[0]; k++)
        if (st_dtypes[k].dt == dt) return st_dtypes[k].name;
    return "?";
}

void cp_st_close(cp_st_set *s) {
    if (s == NULL) return;
    for (int f = 0; f < s->nfiles; f++) {
        if (s->files[f].map && s->files[f].map != MAP_FAILED) munmap(s->files[f].map, s->files[f].size);
        free(s->files[f].path);
    }
    for (size_t k = 0; k < s->count; k++) free(s->names[k]);
    free(s->files);
    free(s->tensors);
    free(s->names);
    free(s);
}

static int st_map(const char *path, st_file *f) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) CP_FAIL(CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        CP_FAIL(CP_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        CP_FAIL(CP_ERR_IO, "%s is not a regular file", path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: truncated safetensors file (%zu bytes, no header length)", path, f->size);
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        CP_FAIL(CP_ERR_IO, "cannot mmap %s: %s", path, strerror(e));
    }
    return CP_OK;
}

static int st_add(cp_st_set *s, const char *name, const cp_st_tensor *t) {
    for (size_t k = 0; k < s->count; k++)
        if (strcmp(s->names[k], name) == 0)
            CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: tensor \"%s\" appears twice", t->file, name);
    if (s->count == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        cp_st_tensor *nt = realloc(s->tensors, nc * sizeof *nt);
        if (!nt) CP_FAIL(CP_ERR_NOMEM, "out of memory");
        s->tensors = nt;
        char **nn = realloc(s->names, nc * sizeof *nn);
        if (!nn) CP_FAIL(CP_ERR_NOMEM, "out of memory");
        s->names = nn;
        s->cap = nc;
    }
    char *copy = strdup(name);
    if (!copy) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    s->names[s->count] = copy;
    s->tensors[s->count] = *t;
    s->count++;
    return CP_OK;
}

static int st_parse_header(cp_st_set *s, int fi) {
    st_file *f = &s->files[fi];
    const unsigned char *b = f->map;
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = (hlen << 8) | b[k];
    if (hlen > f->size - 8)
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: header length %llu exceeds the file size %zu (truncated or not safetensors)",
                f->path, (unsigned long long)hlen, f->size);
    if (hlen < 2) CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: header length %llu is too small", f->path, (unsigned long long)hlen);
    const char *h = (const char *)b + 8;
    /* the header may be padded with trailing spaces (the reference writer pads to 8 bytes) */
    size_t hl = (size_t)hlen;
    cp_json *root = NULL;
    char what[512];
    snprintf(what, sizeof what, "%s (safetensors header)", f->path);
    CP_CHECK(cp_json_parse(h, hl, what, &root));
    if (root->type != CP_JSON_OBJECT) {
        cp_json_free(root);
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: safetensors header is not a JSON object", f->path);
    }
    const unsigned char *data = b + 8 + hl;
    size_t data_size = f->size - 8 - hl;
    int rc = CP_OK;
    for (size_t k = 0; k < root->count && rc == CP_OK; k++) {
        const char *name = root->keys[k];
        const cp_json *e = &root->items[k];
        if (strcmp(name, "__metadata__") == 0) continue;
        cp_st_tensor t;
        memset(&t, 0, sizeof t);
        t.file = f->path;
        const char *dts = NULL;
        const cp_json *shape = cp_json_get(e, "shape"), *offs = cp_json_get(e, "data_offsets");
        if (e->type != CP_JSON_OBJECT || cp_json_get_string(e, "dtype", &dts) != CP_OK || dts == NULL ||
            shape == NULL || shape->type != CP_JSON_ARRAY || offs == NULL || offs->type != CP_JSON_ARRAY ||
            offs->count != 2) {
            rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: header entry \"%s\" needs dtype, shape and data_offsets [begin, end]",
                         f->path, name);
            break;
        }
        size_t esize = 0;
        for (size_t d = 0; d < sizeof st_dtypes / sizeof st_dtypes[0]; d++)
            if (strcmp(st_dtypes[d].name, dts) == 0) t.dtype = st_dtypes[d].dt, esize = st_dtypes[d].size;
        if (esize == 0) {
            rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: tensor \"%s\" has unknown dtype \"%s\"", f->path, name, dts);
            break;
        }
        if (shape->count > CP_ST_MAX_DIMS) {
            rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: tensor \"%s\" has %zu dimensions (max %d)", f->path, name,
                         shape->count, CP_ST_MAX_DIMS);
            break;
        }
        t.ndim = (int)shape->count;
        size_t numel = 1;
        for (size_t d = 0; d < shape->count; d++) {
            const cp_json *v = &shape->items[d];
            if (v->type != CP_JSON_NUMBER || !v->is_integer || v->integer < 0) {
                rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: tensor \"%s\": shape[%zu] is not a non-negative integer", f->path,
                             name, d);
                break;
            }
            t.shape[d] = v->integer;
            if (cp_mul_size(numel, (size_t)v->integer, &numel) != CP_OK) {
                rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: tensor \"%s\": shape overflows", f->path, name);
                break;
            }
        }
        if (rc) break;
        size_t nbytes;
        if (cp_mul_size(numel, esize, &nbytes) != CP_OK || numel > (size_t)INT64_MAX) {
            rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: tensor \"%s\": size overflows", f->path, name);
            break;
        }
        const cp_json *ob = &offs->items[0], *oe = &offs->items[1];
        if (ob->type != CP_JSON_NUMBER || !ob->is_integer || ob->integer < 0 || oe->type != CP_JSON_NUMBER ||
            !oe->is_integer || oe->integer < ob->integer) {
            rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: tensor \"%s\": data_offsets must be integers 0 <= begin <= end",
                         f->path, name);
            break;
        }
        if ((uint64_t)oe->integer > (uint64_t)data_size) {
            rc = cp_fail(CP_ERR_MODEL_FORMAT,
                         "%s: tensor \"%s\": data_offsets [%lld, %lld] run past the data block of %zu bytes "
                         "(file truncated?)",
                         f->path, name, (long long)ob->integer, (long long)oe->integer, data_size);
            break;
        }
        if ((uint64_t)(oe->integer - ob->integer) != (uint64_t)nbytes) {
            rc = cp_fail(CP_ERR_MODEL_FORMAT,
                         "%s: tensor \"%s\": data_offsets span %lld bytes but %s%s needs %zu", f->path, name,
                         (long long)(oe->integer - ob->integer), dts, " shape", nbytes);
            break;
        }
        t.numel = (int64_t)numel;
        t.nbytes = nbytes;
        t.data = data + ob->integer;
        rc = st_add(s, name, &t);
    }
    cp_json_free(root);
    return rc;
}

int cp_st_open_files(const char *const *paths, int nfiles, cp_st_set **out) {
    *out = NULL;
    if (nfiles <= 0) CP_FAIL(CP_ERR_INVALID_ARG, "no safetensors files given");
    cp_st_set *s = calloc(1, sizeof *s);
    if (!s) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    s->files = calloc((size_t)nfiles, sizeof *s->files);
    if (!s->files) {
        free(s);
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    }
    s->nfiles = nfiles;
    int rc = CP_OK;
    for (int f = 0; f < nfiles && rc == CP_OK; f++) {
        s->files[f].path = strdup(paths[f]);
        if (!s->files[f].path) rc = cp_fail(CP_ERR_NOMEM, "out of memory");
        if (rc == CP_OK) rc = st_map(paths[f], &s->files[f]);
        if (rc == CP_OK) rc = st_parse_header(s, f);
    }
    /* names point into the set's own copies */
    for (size_t k = 0; k < s->count; k++) s->tensors[k].name = s->names[k];
    if (rc) {
        cp_st_close(s);
        return rc;
    }
    *out = s;
    return CP_OK;
}

static int path_join(char *dst, size_t cap, const char *dir, const char *name) {
    int n = snprintf(dst, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) CP_FAIL(CP_ERR_INVALID_ARG, "path too long: %s/%s", dir, name);
    return CP_OK;
}

int cp_st_open(const char *path, cp_st_set **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) CP_FAIL(CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return cp_st_open_files(&path, 1, out);
    char buf[4096];
    CP_CHECK(path_join(buf, sizeof buf, path, "model.safetensors.index.json"));
    if (stat(buf, &sb) == 0) {
        cp_json *idx = NULL;
        CP_CHECK(cp_json_parse_file(buf, &idx));
        const cp_json *wm = cp_json_get(idx, "weight_map");
        if (wm == NULL || wm->type != CP_JSON_OBJECT) {
            cp_json_free(idx);
            CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: no \"weight_map\" object", buf);
        }
        /* unique shard names, in order of first appearance */
        char **files = calloc(wm->count ? wm->count : 1, sizeof *files);
        int nf = 0, rc = CP_OK;
        if (!files) rc = cp_fail(CP_ERR_NOMEM, "out of memory");
        for (size_t k = 0; rc == CP_OK && k < wm->count; k++) {
            const cp_json *v = &wm->items[k];
            if (v->type != CP_JSON_STRING || strchr(v->string, '/') || strcmp(v->string, "..") == 0) {
                rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: bad shard name for \"%s\"", buf, wm->keys[k]);
                break;
            }
            char full[4096];
            rc = path_join(full, sizeof full, path, v->string);
            if (rc) break;
            int seen = 0;
            for (int j = 0; j < nf; j++) seen |= strcmp(files[j], full) == 0;
            if (!seen) {
                files[nf] = strdup(full);
                if (!files[nf]) rc = cp_fail(CP_ERR_NOMEM, "out of memory");
                else nf++;
            }
        }
        cp_json_free(idx);
        if (rc == CP_OK && nf == 0) rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: empty weight_map", buf);
        if (rc == CP_OK) rc = cp_st_open_files((const char *const *)files, nf, out);
        for (int j = 0; j < nf; j++) free(files[j]);
        free(files);
        return rc;
    }
    CP_CHECK(path_join(buf, sizeof buf, path, "model.safetensors"));
    if (stat(buf, &sb) != 0)
        CP_FAIL(CP_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json in this directory", path);
    const char *p = buf;
    return cp_st_open_files(&p, 1, out);
}

const cp_st_tensor *cp_st_find(const cp_st_set *s, const char *name) {
    for (size_t k = 0; k < s->count; k++)
        if (strcmp(s->names[k], name) == 0) return &s->tensors[k];
    return NULL;
}

size_t cp_st_count(const cp_st_set *s) { return s->count; }
const cp_st_tensor *cp_st_at(const cp_st_set *s, size_t i) { return i < s->count ? &s->tensors[i] : NULL; }

int cp_st_to_f32(const cp_st_tensor *t, float *dst) {
    size_t n = (size_t)t->numel;
    const unsigned char *src = t->data;
    switch (t->dtype) {
    case CP_DT_F32: memcpy(dst, src, n * 4); return CP_OK;
    case CP_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = cp_f16_to_f32(h);
        }
        return CP_OK;
    case CP_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = cp_bf16_to_f32(h);
        }
        return CP_OK;
    case CP_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        return CP_OK;
    default:
        CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: tensor \"%s\" has dtype %s; only F32, F16, BF16 and F64 weights are supported",
                t->file, t->name, cp_dtype_name(t->dtype));
    }
}
