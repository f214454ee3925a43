/* cp_device.c — options, dtype names and the shared runner context of the CUDA backend (see cp_device.h and
 * cp_device_ctx.h). Everything CUDA-specific is behind kernels/cp_cuda.h; this file compiles without CUDA. */
#include "device/cp_device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"
#include "device/cp_device_ctx.h"

void cp_device_options_init(cp_device_options *o) {
    memset(o, 0, sizeof *o);
    o->device = 0;
    o->dtype = CP_DEVICE_FLOAT32;
    o->attention = CP_DEVICE_ATTN_FUSED;
    o->graph_max_batch = 64;
    o->max_tokens = 32768;
}

int cp_device_parse_dtype(const char *s, int *dtype) {
    if (s == NULL) CP_FAIL(CP_ERR_INVALID_ARG, "dtype must be float32, float16 or bfloat16");
    if (strcmp(s, "float32") == 0 || strcmp(s, "fp32") == 0) *dtype = CP_DEVICE_FLOAT32;
    else if (strcmp(s, "float16") == 0 || strcmp(s, "fp16") == 0 || strcmp(s, "half") == 0) *dtype = CP_DEVICE_FLOAT16;
    else if (strcmp(s, "bfloat16") == 0 || strcmp(s, "bf16") == 0) *dtype = CP_DEVICE_BFLOAT16;
    else CP_FAIL(CP_ERR_INVALID_ARG, "dtype \"%s\" is not one of float32, float16, bfloat16", s);
    return CP_OK;
}

const char *cp_device_dtype_name(int dtype) {
    return dtype == CP_DEVICE_FLOAT16 ? "float16" : dtype == CP_DEVICE_BFLOAT16 ? "bfloat16" : "float32";
}

int cp_device_check_options(const cp_device_options *o) {
    if (o->dtype < CP_DEVICE_FLOAT32 || o->dtype > CP_DEVICE_BFLOAT16)
        CP_FAIL(CP_ERR_INVALID_ARG, "unknown device dtype code %d", o->dtype);
    if (o->attention == CP_DEVICE_ATTN_CUDNN)
        CP_FAIL(CP_ERR_DEVICE,
                "attention=\"cudnn\" is not available in this build: cuDNN's fused scaled-dot-product attention is "
                "exposed through the cuDNN frontend (a C++ graph API that is not installed here); the backend "
                "descriptor API would need the whole SDPA operation graph assembled by hand and could not be "
                "verified without a GPU. Use attention=\"fused\" (the hand-written kernel)");
    if (o->attention != CP_DEVICE_ATTN_FUSED) CP_FAIL(CP_ERR_INVALID_ARG, "unknown attention code %d", o->attention);
    return CP_OK;
}

/* ---- arena and graph policies (any cp_dev_ops: CUDA's, or the self-test's host fakes) ---- */

void cp_dev_graphs_clear(cp_dev_ctx *c) {
    for (int i = 0; i < c->ngraphs; i++) c->ops->graph_free(c->graphs[i].exec);
    c->ngraphs = 0;
}

int cp_dev_arena_reserve(cp_dev_ctx *c, size_t bytes, size_t host_bytes) {
    if (bytes <= c->arena_bytes && host_bytes <= c->host_bytes) return CP_OK;
    if (bytes < c->arena_bytes) bytes = c->arena_bytes;
    if (host_bytes < c->host_bytes) host_bytes = c->host_bytes;
    CP_CHECK(c->ops->sync(c->stream)); /* nothing may still use the old arena */
    void *a = NULL, *h = NULL;
    int rc = c->ops->malloc(&a, bytes, "the activation arena");
    if (rc == CP_ERR_DEVICE_OOM && c->arena) {
        /* maybe only both together do not fit: retry without the old one, restore it if that fails too */
        cp_dev_graphs_clear(c);
        const size_t old = c->arena_bytes;
        c->ops->free(c->arena);
        c->arena = NULL, c->arena_bytes = 0;
        cp_clear_error();
        rc = c->ops->malloc(&a, bytes, "the activation arena");
        if (rc != CP_OK) {
            char msg[512];
            strncpy(msg, cp_last_error(), sizeof msg - 1);
            msg[sizeof msg - 1] = '\0';
            /* restore an arena of the old size (it may land elsewhere: runners lay their views out per pass) */
            if (c->ops->malloc((void **)&c->arena, old, "the activation arena") == CP_OK) {
                if (c->ops->memset(c->arena, 0, old, c->stream) == CP_OK && c->ops->sync(c->stream) == CP_OK) {
                    c->arena_bytes = old;
                } else {
                    c->ops->free(c->arena);
                    c->arena = NULL;
                }
            }
            return cp_fail(rc, "%s", msg);
        }
    }
    if (rc != CP_OK) return rc;
    if (host_bytes > c->host_bytes) {
        rc = c->ops->host_malloc(&h, host_bytes);
        if (rc != CP_OK) {
            c->ops->free(a);
            return rc;
        }
    }
    /* zeroed once so that padding rows of graph buckets start finite; CLIPPROMPT_CUDA_POISON=1 (tests) fills it
     * with NaN bit patterns instead, so any output element a kernel fails to write shows up */
    const char *poison = getenv("CLIPPROMPT_CUDA_POISON");
    rc = c->ops->memset(a, poison && poison[0] == '1' ? 0xff : 0, bytes, c->stream);
    if (rc == CP_OK) rc = c->ops->sync(c->stream);
    if (rc != CP_OK) {
        c->ops->free(a);
        c->ops->host_free(h);
        return rc;
    }
    cp_dev_graphs_clear(c);
    c->ops->free(c->arena);
    c->arena = a, c->arena_bytes = bytes;
    if (h) {
        c->ops->host_free(c->host);
        c->host = h, c->host_bytes = host_bytes;
    }
    return CP_OK;
}

/* The slot of key, or -1. */
static int graph_slot(cp_dev_ctx *c, const int64_t key[6]) {
    for (int i = 0; i < c->ngraphs; i++)
        if (memcmp(c->graphs[i].key, key, sizeof c->graphs[i].key) == 0) return i;
    return -1;
}

void *cp_dev_graph_find(cp_dev_ctx *c, const int64_t key[6]) {
    const int i = graph_slot(c, key);
    if (i < 0) return NULL;
    c->graphs[i].used = ++c->clock;
    return c->graphs[i].exec;
}

void cp_dev_graph_add(cp_dev_ctx *c, const int64_t key[6], void *exec) {
    int slot = graph_slot(c, key);
    if (slot < 0 && c->ngraphs == CP_DEV_GRAPHS) {
        slot = 0;
        for (int i = 1; i < c->ngraphs; i++)
            if (c->graphs[i].used < c->graphs[slot].used) slot = i;
    } else if (slot < 0) {
        slot = c->ngraphs++;
    }
    c->ops->graph_free(c->graphs[slot].exec);
    memcpy(c->graphs[slot].key, key, sizeof c->graphs[slot].key);
    c->graphs[slot].exec = exec;
    c->graphs[slot].used = ++c->clock;
}

int cp_dev_run(cp_dev_ctx *c, int use_graph, const int64_t key[6], int (*fn)(void *), void *arg) {
    if (!use_graph || c->graphs_off) return fn(arg);
    const int slot = graph_slot(c, key);
    if (slot < 0) { /* first sight of this shape: a direct warm-up run, remembered */
        cp_dev_graph_add(c, key, NULL);
        return fn(arg);
    }
    void *exec = cp_dev_graph_find(c, key);
    if (exec == NULL) {
        if (c->ops->capture_begin(c->stream) != CP_OK) {
            cp_clear_error();
            if (++c->graph_fails >= CP_DEV_GRAPH_FAILS) c->graphs_off = 1;
            return fn(arg);
        }
        int rc = fn(arg);
        void *made = NULL;
        int rc2 = c->ops->capture_end(c->stream, &made); /* always end the capture, even after a failure */
        if (rc != CP_OK || rc2 != CP_OK) {
            c->ops->graph_free(made);
            cp_clear_error();
            if (++c->graph_fails >= CP_DEV_GRAPH_FAILS) c->graphs_off = 1;
            return fn(arg); /* run it directly this time */
        }
        cp_dev_graph_add(c, key, made);
        exec = made;
    }
    return c->ops->launch(exec, c->stream);
}

int64_t cp_dev_bucket_tokens(int64_t T, int64_t cap) {
    const int64_t step = T <= 256 ? 16 : T <= 1024 ? 64 : 256;
    const int64_t b = (T + step - 1) / step * step;
    return b > cap ? T : b;
}

int64_t cp_dev_bucket_prompts(int64_t n, int64_t cap) {
    int64_t b = 1;
    while (b < n) b *= 2;
    return b > cap ? n : b;
}

int cp_dev_check_f16(const float *q, int64_t n, int64_t d) {
    for (int64_t i = 0; i < n * d; i++)
        if (!(q[i] >= -65504.0f && q[i] <= 65504.0f))
            CP_FAIL(CP_ERR_INVALID_ARG,
                    "query value %g at [%lld, %lld] is outside float16's range (+-65504): this index stores float16 "
                    "and converts queries on the device",
                    (double)q[i], (long long)(i / d), (long long)(i % d));
    return CP_OK;
}

#ifdef CP_WITH_CUDA

int cp_device_compiled(void) { return 1; }

const cp_dev_ops cp_dev_cuda_ops = {cp_cuda_malloc,        cp_cuda_free,          cp_cuda_host_malloc,
                                    cp_cuda_host_free,     cp_cuda_memset,        cp_cuda_stream_sync,
                                    cp_cuda_capture_begin, cp_cuda_capture_end,   cp_cuda_graph_launch,
                                    cp_cuda_graph_free};

int cp_dev_ctx_init(cp_dev_ctx *c, const cp_device_options *o) {
    memset(c, 0, sizeof *c);
    c->ops = &cp_dev_cuda_ops;
    c->device = o->device;
    c->dt = o->dtype;
    c->graphs_off = o->graph_max_batch <= 0;
    c->graph_max = o->graph_max_batch;
    CP_CHECK(cp_device_check_options(o));
    CP_CHECK(cp_cuda_set_device(o->device));
    if (pthread_mutex_init(&c->lock, NULL) != 0) CP_FAIL(CP_ERR_INTERNAL, "pthread_mutex_init failed");
    c->lock_ok = 1;
    int rc = cp_cuda_stream_create(&c->stream);
    if (rc == CP_OK) rc = cp_cuda_malloc(&c->workspace, CP_DEV_WS_BYTES, "the cuBLAS workspace");
    if (rc == CP_OK) rc = cp_cuda_blas_create(&c->blas, c->stream, c->workspace, CP_DEV_WS_BYTES);
    return rc; /* on failure the caller releases */
}

void cp_dev_ctx_release(cp_dev_ctx *c) {
    /* keep the caller's error message: release often runs on a constructor's failure path */
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", cp_last_error());
    if (c->stream) cp_cuda_stream_sync(c->stream);
    cp_dev_graphs_clear(c);
    cp_cuda_blas_free(c->blas);
    cp_cuda_free(c->workspace);
    cp_cuda_free(c->wbase);
    cp_cuda_free(c->stage);
    cp_cuda_free(c->arena);
    cp_cuda_host_free(c->host);
    cp_cuda_stream_free(c->stream);
    if (c->lock_ok) pthread_mutex_destroy(&c->lock);
    memset(c, 0, sizeof *c);
    if (saved[0]) cp_fail(CP_ERR_DEVICE, "%s", saved);
    else cp_clear_error();
}

void *cp_dev_place(cp_dev_ctx *c, size_t bytes) {
    size_t off = c->wused;
    c->wused += cp_dev_align(bytes);
    return c->wbase ? c->wbase + off : NULL;
}

int cp_dev_weights_alloc(cp_dev_ctx *c, size_t max_stage_floats) {
    c->wsize = c->wused;
    c->wused = 0;
    CP_CHECK(cp_cuda_malloc((void **)&c->wbase, c->wsize, "the model weights"));
    c->stage_floats = max_stage_floats;
    if (c->dt != CP_DEVICE_FLOAT32 && max_stage_floats)
        CP_CHECK(cp_cuda_malloc((void **)&c->stage, max_stage_floats * sizeof(float), "weight conversion staging"));
    return CP_OK;
}

int cp_dev_upload(cp_dev_ctx *c, void *dst, const float *src, int64_t n, int dt) {
    if (n <= 0 || dst == NULL) return CP_OK;
    if (dt == CP_DEVICE_FLOAT32) return cp_cuda_memcpy_h2d(dst, src, (size_t)n * sizeof(float), c->stream);
    if ((size_t)n > c->stage_floats)
        CP_FAIL(CP_ERR_INTERNAL, "weight upload of %lld values exceeds the %zu-value staging buffer", (long long)n,
                c->stage_floats);
    /* stream order: this copy waits for the previous conversion to finish reading the staging buffer */
    CP_CHECK(cp_cuda_memcpy_h2d(c->stage, src, (size_t)n * sizeof(float), c->stream));
    return cp_cuda_convert(c->stage, dst, dt, n, c->stream);
}

int cp_dev_weights_done(cp_dev_ctx *c) {
    CP_CHECK(cp_cuda_stream_sync(c->stream));
    cp_cuda_free(c->stage);
    c->stage = NULL, c->stage_floats = 0;
    return CP_OK;
}

void cp_dev_layer_place(cp_dev_ctx *c, cp_dev_layer *d, int64_t W, int64_t F) {
    const size_t es = cp_cuda_dtype_size(c->dt);
    d->qkv_w = cp_dev_place(c, (size_t)(3 * W * W) * es);
    d->qkv_b = cp_dev_place(c, (size_t)(3 * W) * 4);
    d->o_w = cp_dev_place(c, (size_t)(W * W) * es);
    d->o_b = cp_dev_place(c, (size_t)W * 4);
    d->fc1_w = cp_dev_place(c, (size_t)(F * W) * es);
    d->fc1_b = cp_dev_place(c, (size_t)F * 4);
    d->fc2_w = cp_dev_place(c, (size_t)(W * F) * es);
    d->fc2_b = cp_dev_place(c, (size_t)W * 4);
    d->ln1_g = cp_dev_place(c, (size_t)W * 4);
    d->ln1_b = cp_dev_place(c, (size_t)W * 4);
    d->ln2_g = cp_dev_place(c, (size_t)W * 4);
    d->ln2_b = cp_dev_place(c, (size_t)W * 4);
}

int cp_dev_upload_wmat(cp_dev_ctx *c, void *dst, const cp_wmat *w, int dt) {
    if (dst == NULL || w->n <= 0) return CP_OK;
    if (w->type == CP_WT_F32 && w->layout == CP_W_OUT_IN) return cp_dev_upload(c, dst, w->data, w->n * w->k, dt);
    /* another storage type: dequantise rows on the host, in chunks that fit the staging buffer */
    int64_t rows = c->stage_floats ? (int64_t)c->stage_floats / w->k : 4096;
    if (rows > w->n) rows = w->n;
    if (rows < 1) rows = 1;
    float *tmp = malloc((size_t)(rows * w->k) * sizeof(float));
    if (!tmp) CP_FAIL(CP_ERR_NOMEM, "out of memory dequantising a (%lld, %lld) matrix", (long long)w->n, (long long)w->k);
    const size_t es = cp_cuda_dtype_size(dt);
    int rc = CP_OK;
    for (int64_t r0 = 0; r0 < w->n && rc == CP_OK; r0 += rows) {
        const int64_t nr = w->n - r0 < rows ? w->n - r0 : rows;
        for (int64_t r = 0; r < nr; r++) cp_wmat_row(w, r0 + r, tmp + r * w->k);
        rc = cp_dev_upload(c, (unsigned char *)dst + (size_t)(r0 * w->k) * es, tmp, nr * w->k, dt);
        if (rc == CP_OK) rc = cp_cuda_stream_sync(c->stream); /* tmp is reused by the next chunk */
    }
    free(tmp);
    return rc;
}

int cp_dev_layer_upload(cp_dev_ctx *c, cp_dev_layer *d, const cp_encoder_layer *s) {
    const int dt = c->dt, F32 = CP_DEVICE_FLOAT32;
    const int64_t W = s->o.n, F = s->fc1.n;
    CP_CHECK(cp_dev_upload_wmat(c, d->qkv_w, &s->qkv, dt));
    CP_CHECK(cp_dev_upload(c, d->qkv_b, s->qkv_b, 3 * W, F32));
    CP_CHECK(cp_dev_upload_wmat(c, d->o_w, &s->o, dt));
    CP_CHECK(cp_dev_upload(c, d->o_b, s->o_b, W, F32));
    CP_CHECK(cp_dev_upload_wmat(c, d->fc1_w, &s->fc1, dt));
    CP_CHECK(cp_dev_upload(c, d->fc1_b, s->fc1_b, F, F32));
    CP_CHECK(cp_dev_upload_wmat(c, d->fc2_w, &s->fc2, dt));
    CP_CHECK(cp_dev_upload(c, d->fc2_b, s->fc2_b, W, F32));
    CP_CHECK(cp_dev_upload(c, d->ln1_g, s->ln1_g, W, F32));
    CP_CHECK(cp_dev_upload(c, d->ln1_b, s->ln1_b, W, F32));
    CP_CHECK(cp_dev_upload(c, d->ln2_g, s->ln2_g, W, F32));
    CP_CHECK(cp_dev_upload(c, d->ln2_b, s->ln2_b, W, F32));
    return CP_OK;
}

int cp_dev_runner_init(cp_dev_ctx *c, const cp_device_options *opt, int64_t min_tokens, int64_t layers,
                       cp_dev_layer **L, int64_t *tok_cap) {
    cp_device_options o;
    if (opt) o = *opt;
    else cp_device_options_init(&o);
    *tok_cap = o.max_tokens > 0 ? o.max_tokens : 32768;
    if (*tok_cap < min_tokens) *tok_cap = min_tokens;
    CP_CHECK(cp_dev_ctx_init(c, &o));
    *L = calloc((size_t)layers, sizeof **L);
    if (!*L) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    return CP_OK;
}

#else /* !CP_WITH_CUDA */

int cp_device_compiled(void) { return 0; }

#endif
