/* cp_json.c — strict recursive-descent JSON parser (see cp_json.h). */
#include "base/cp_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"
#include "base/cp_utf8.h"

typedef struct {
    const char *s;
    size_t n, i;
    const char *what;
} cp_jp;

static int jp_fail(cp_jp *p, const char *msg) {
    return cp_fail(CP_ERR_MODEL_FORMAT, "%s: invalid JSON at byte %zu: %s", p->what, p->i, msg);
}

static void jp_ws(cp_jp *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            p->i++;
        else
            break;
    }
}

static void node_clear(cp_json *v) {
    if (v == NULL) return;
    free(v->string);
    if (v->items)
        for (size_t k = 0; k < v->count; k++) node_clear(&v->items[k]);
    if (v->keys)
        for (size_t k = 0; k < v->count; k++) free(v->keys[k]);
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

void cp_json_free(cp_json *root) {
    if (root == NULL) return;
    node_clear(root);
    free(root);
}

static int hex4(cp_jp *p, uint32_t *out) {
    if (p->n - p->i < 4) return jp_fail(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return jp_fail(p, "bad hex digit in \\u escape");
    }
    *out = v;
    return CP_OK;
}

/* Parses a string starting at the opening quote; the decoded text is never longer than the raw text. */
static int jp_string(cp_jp *p, char **out, size_t *outlen) {
    p->i++; /* opening quote */
    size_t start = p->i, end = start;
    while (end < p->n && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
    if (end >= p->n) return jp_fail(p, "unterminated string");
    size_t raw = end - start;
    size_t bad;
    if (cp_utf8_validate(p->s + start, raw, &bad) != CP_OK) {
        p->i = start + bad;
        return jp_fail(p, "invalid UTF-8 in string");
    }
    char *d = malloc(raw + 1);
    if (d == NULL) CP_FAIL(CP_ERR_NOMEM, "%s: out of memory parsing JSON", p->what);
    size_t o = 0;
    while (p->i < end) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c < 0x20) { free(d); return jp_fail(p, "control character in string"); }
        if (c != '\\') { d[o++] = (char)c; p->i++; continue; }
        p->i++;
        char e = p->s[p->i++];
        switch (e) {
        case '"': d[o++] = '"'; break;
        case '\\': d[o++] = '\\'; break;
        case '/': d[o++] = '/'; break;
        case 'b': d[o++] = '\b'; break;
        case 'f': d[o++] = '\f'; break;
        case 'n': d[o++] = '\n'; break;
        case 'r': d[o++] = '\r'; break;
        case 't': d[o++] = '\t'; break;
        case 'u': {
            uint32_t u, lo;
            int rc = hex4(p, &u);
            if (rc) { free(d); return rc; }
            if (u >= 0xDC00 && u <= 0xDFFF) { free(d); return jp_fail(p, "lone low surrogate"); }
            if (u >= 0xD800 && u <= 0xDBFF) {
                if (p->i + 2 > end || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                    free(d);
                    return jp_fail(p, "lone high surrogate");
                }
                p->i += 2;
                rc = hex4(p, &lo);
                if (rc) { free(d); return rc; }
                if (lo < 0xDC00 || lo > 0xDFFF) { free(d); return jp_fail(p, "bad surrogate pair"); }
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            }
            o += cp_utf8_put((unsigned char *)d + o, u); /* \uXXXX (6 bytes) -> at most 3; pair (12) -> 4 */
            break;
        }
        default: free(d); return jp_fail(p, "bad escape");
        }
    }
    p->i = end + 1;
    d[o] = '\0';
    *out = d;
    *outlen = o;
    return CP_OK;
}

static int jp_number(cp_jp *p, cp_json *v) {
    size_t st = p->i;
    int integral = 1;
    if (p->i < p->n && p->s[p->i] == '-') p->i++;
    if (p->i >= p->n) return jp_fail(p, "truncated number");
    if (p->s[p->i] == '0') {
        p->i++;
    } else if (p->s[p->i] >= '1' && p->s[p->i] <= '9') {
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    } else {
        return jp_fail(p, "bad number");
    }
    if (p->i < p->n && p->s[p->i] == '.') {
        integral = 0;
        p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jp_fail(p, "bad fraction");
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        integral = 0;
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jp_fail(p, "bad exponent");
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    char buf[64];
    size_t len = p->i - st;
    if (len >= sizeof buf) {
        /* very long literals: only the double value is kept */
        char *tmp = malloc(len + 1);
        if (!tmp) CP_FAIL(CP_ERR_NOMEM, "out of memory");
        memcpy(tmp, p->s + st, len);
        tmp[len] = 0;
        v->number = strtod(tmp, NULL);
        free(tmp);
        integral = 0;
    } else {
        memcpy(buf, p->s + st, len);
        buf[len] = 0;
        v->number = strtod(buf, NULL);
        if (integral) {
            errno = 0;
            long long ll = strtoll(buf, NULL, 10);
            if (errno == ERANGE) integral = 0;
            else v->integer = (int64_t)ll;
        }
    }
    v->type = CP_JSON_NUMBER;
    v->is_integer = integral;
    return CP_OK;
}

static int jp_value(cp_jp *p, cp_json *v, int depth);

static int grow(cp_json **items, char ***keys, size_t *cap, size_t need) {
    if (need <= *cap) return CP_OK;
    size_t nc = *cap ? *cap * 2 : 4;
    while (nc < need) nc *= 2;
    cp_json *ni = realloc(*items, nc * sizeof **items);
    if (!ni) CP_FAIL(CP_ERR_NOMEM, "out of memory parsing JSON");
    *items = ni;
    memset(ni + *cap, 0, (nc - *cap) * sizeof *ni);
    if (keys) {
        char **nk = realloc(*keys, nc * sizeof **keys);
        if (!nk) CP_FAIL(CP_ERR_NOMEM, "out of memory parsing JSON");
        *keys = nk;
        memset(nk + *cap, 0, (nc - *cap) * sizeof *nk);
    }
    *cap = nc;
    return CP_OK;
}

static int jp_container(cp_jp *p, cp_json *v, int depth, int is_obj) {
    if (depth >= CP_JSON_MAX_DEPTH) return jp_fail(p, "nesting too deep");
    v->type = is_obj ? CP_JSON_OBJECT : CP_JSON_ARRAY;
    char close = is_obj ? '}' : ']';
    size_t cap = 0;
    p->i++;
    jp_ws(p);
    if (p->i < p->n && p->s[p->i] == close) { p->i++; return CP_OK; }
    for (;;) {
        int rc = grow(&v->items, is_obj ? &v->keys : NULL, &cap, v->count + 1);
        if (rc) return rc;
        if (is_obj) {
            jp_ws(p);
            if (p->i >= p->n || p->s[p->i] != '"') return jp_fail(p, "expected a string key");
            size_t kl;
            rc = jp_string(p, &v->keys[v->count], &kl);
            if (rc) return rc;
            jp_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') { v->count++; return jp_fail(p, "expected ':'"); }
            p->i++;
        }
        rc = jp_value(p, &v->items[v->count], depth + 1);
        v->count++;
        if (rc) return rc;
        jp_ws(p);
        if (p->i >= p->n) return jp_fail(p, "unexpected end");
        if (p->s[p->i] == ',') { p->i++; continue; }
        if (p->s[p->i] == close) { p->i++; return CP_OK; }
        return jp_fail(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int jp_lit(cp_jp *p, const char *lit) {
    size_t l = strlen(lit);
    if (p->n - p->i < l || memcmp(p->s + p->i, lit, l) != 0) return jp_fail(p, "unexpected token");
    p->i += l;
    return CP_OK;
}

static int jp_value(cp_jp *p, cp_json *v, int depth) {
    jp_ws(p);
    if (p->i >= p->n) return jp_fail(p, "unexpected end");
    char c = p->s[p->i];
    switch (c) {
    case '{': return jp_container(p, v, depth, 1);
    case '[': return jp_container(p, v, depth, 0);
    case '"': v->type = CP_JSON_STRING; return jp_string(p, &v->string, &v->length);
    case 't': v->type = CP_JSON_BOOL; v->boolean = 1; return jp_lit(p, "true");
    case 'f': v->type = CP_JSON_BOOL; v->boolean = 0; return jp_lit(p, "false");
    case 'n': v->type = CP_JSON_NULL; return jp_lit(p, "null");
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return jp_number(p, v);
        return jp_fail(p, "unexpected character");
    }
}

int cp_json_parse(const char *text, size_t n, const char *what, cp_json **out) {
    *out = NULL;
    cp_jp p = {text, n, 0, what ? what : "JSON"};
    cp_json *root = calloc(1, sizeof *root);
    if (!root) CP_FAIL(CP_ERR_NOMEM, "out of memory parsing JSON");
    int rc = jp_value(&p, root, 0);
    if (rc == CP_OK) {
        jp_ws(&p);
        if (p.i != n) rc = jp_fail(&p, "trailing characters");
    }
    if (rc) {
        cp_json_free(root);
        return rc;
    }
    *out = root;
    return CP_OK;
}

int cp_json_parse_file(const char *path, cp_json **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) CP_FAIL(CP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        if (cap > ((size_t)64 << 20)) { /* config files are small; refuse absurd ones */
            free(buf);
            fclose(f);
            CP_FAIL(CP_ERR_MODEL_FORMAT, "%s: JSON file larger than 64 MiB", path);
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) { free(buf); buf = NULL; break; }
        buf = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf) CP_FAIL(CP_ERR_NOMEM, "out of memory reading %s", path);
    if (err) { free(buf); CP_FAIL(CP_ERR_IO, "read error on %s", path); }
    int rc = cp_json_parse(buf, n, path, out);
    free(buf);
    return rc;
}

const cp_json *cp_json_get(const cp_json *obj, const char *key) {
    if (obj == NULL || obj->type != CP_JSON_OBJECT) return NULL;
    for (size_t k = 0; k < obj->count; k++)
        if (strcmp(obj->keys[k], key) == 0) return &obj->items[k];
    return NULL;
}

int cp_json_get_int(const cp_json *obj, const char *key, int64_t def, int64_t *out) {
    const cp_json *v = cp_json_get(obj, key);
    if (v == NULL || v->type == CP_JSON_NULL) { *out = def; return CP_OK; }
    if (v->type == CP_JSON_NUMBER && v->is_integer) { *out = v->integer; return CP_OK; }
    if (v->type == CP_JSON_NUMBER && v->number == floor(v->number) && fabs(v->number) < 9e15) {
        *out = (int64_t)v->number;
        return CP_OK;
    }
    CP_FAIL(CP_ERR_MODEL_FORMAT, "config key \"%s\" must be an integer", key);
}

int cp_json_get_number(const cp_json *obj, const char *key, double def, double *out) {
    const cp_json *v = cp_json_get(obj, key);
    if (v == NULL || v->type == CP_JSON_NULL) { *out = def; return CP_OK; }
    if (v->type == CP_JSON_NUMBER) { *out = v->number; return CP_OK; }
    CP_FAIL(CP_ERR_MODEL_FORMAT, "config key \"%s\" must be a number", key);
}

int cp_json_get_string(const cp_json *obj, const char *key, const char **out) {
    const cp_json *v = cp_json_get(obj, key);
    if (v == NULL || v->type == CP_JSON_NULL) { *out = NULL; return CP_OK; }
    if (v->type == CP_JSON_STRING) { *out = v->string; return CP_OK; }
    CP_FAIL(CP_ERR_MODEL_FORMAT, "config key \"%s\" must be a string", key);
}
