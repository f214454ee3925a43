/* cp_lowp.c — bf16 / int8 weights and their matmul kernels (see cp_lowp.h). */
#define _GNU_SOURCE /* clock_gettime under -std=c11 */
#include "model/cp_lowp.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/cp_common.h"

#ifdef CP_WITH_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

/* One converted matrix: the cp_wmat's `aux`. `data` of the cp_wmat points at `w` (packed or plain). */
typedef struct {
    cp_wtype type;
    int64_t n, k;
    int packed;          /* 1: oneDNN's blocked layout (desc below); 0: plain out-in [n, k] for the portable path */
    void *w;             /* weights (64-byte aligned) */
    float *scale;        /* S8: per output row (n) */
#ifdef CP_WITH_DNNL
    dnnl_memory_desc_t wmd; /* the packed layout */
#endif
} lowp_mat;

/* Everything a converted model owns (cp_encoder_model.lowp). */
typedef struct {
    lowp_mat *mats;
    int64_t nmats;
} lowp_owner;

#define ROWS_PER_CALL 512 /* activations are converted and multiplied in chunks of at most this many rows */

/* ---- names ------------------------------------------------------------------------------------------ */

const char *cp_lowp_type_name(cp_wtype t) {
    switch (t) {
    case CP_WT_F32: return "float32";
    case CP_WT_BF16: return "bfloat16";
    case CP_WT_S8: return "int8";
    case CP_WT_Q4: return "q4";
    }
    return "?";
}

int cp_lowp_type_parse(const char *s, cp_wtype *out) {
    if (!strcmp(s, "float32") || !strcmp(s, "fp32")) *out = CP_WT_F32;
    else if (!strcmp(s, "bfloat16") || !strcmp(s, "bf16")) *out = CP_WT_BF16;
    else if (!strcmp(s, "int8") || !strcmp(s, "s8")) *out = CP_WT_S8;
    else CP_FAIL(CP_ERR_INVALID_ARG, "dtype must be float32, bfloat16 or int8, not '%s'", s);
    return CP_OK;
}

/* ---- per-thread scratch ------------------------------------------------------------------------------- */

typedef struct {
    void *p[3];
    size_t cap[3];
} lowp_tls;

static pthread_key_t g_tls_key;
static pthread_once_t g_tls_once = PTHREAD_ONCE_INIT;

static void tls_free(void *v) {
    lowp_tls *t = v;
    for (int i = 0; i < 3; i++) cp_free_aligned(t->p[i]);
    free(t);
}

static void tls_init(void) { (void)pthread_key_create(&g_tls_key, tls_free); }

/* Scratch buffer `slot` of this thread with at least `bytes`. The matmul contract has no error path: sizes are
 * bounded by the model (ROWS_PER_CALL x max(K, N)), so failing here means the process is out of memory. */
static void *scratch(int slot, size_t bytes) {
    pthread_once(&g_tls_once, tls_init);
    lowp_tls *t = pthread_getspecific(g_tls_key);
    if (t == NULL) {
        t = calloc(1, sizeof *t);
        if (t == NULL || pthread_setspecific(g_tls_key, t) != 0) goto oom;
    }
    if (t->cap[slot] < bytes) {
        cp_free_aligned(t->p[slot]);
        t->p[slot] = cp_malloc_aligned(bytes);
        t->cap[slot] = t->p[slot] ? bytes : 0;
        if (t->p[slot] == NULL) goto oom;
    }
    return t->p[slot];
oom:
    fprintf(stderr, "clipprompt: out of memory for %zu bytes of low-precision matmul scratch\n", bytes);
    abort();
}

/* ---- activation conversion ---------------------------------------------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(CP_SANITIZE)
#define LOWP_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LOWP_MULTIVERSION
#endif

LOWP_MULTIVERSION
static void rows_to_bf16(const float *x, int64_t ldx, int64_t M, int64_t K, uint16_t *out) {
    for (int64_t i = 0; i < M; i++) {
        const float *r = x + i * ldx;
        uint16_t *o = out + i * K;
        for (int64_t j = 0; j < K; j++) o[j] = cp_f32_to_bf16(r[j]);
    }
}

/* Symmetric per-row int8: q = round(x / s), s = max|x| / 127 (rows of zeros: s = 0, q = 0). */
LOWP_MULTIVERSION
static void rows_to_s8(const float *x, int64_t ldx, int64_t M, int64_t K, int8_t *out, float *sx) {
    for (int64_t i = 0; i < M; i++) {
        const float *r = x + i * ldx;
        float mx = 0.0f;
        for (int64_t j = 0; j < K; j++) {
            const float a = fabsf(r[j]);
            mx = a > mx ? a : mx;
        }
        const float s = mx / 127.0f, inv = mx > 0.0f ? 127.0f / mx : 0.0f;
        int8_t *o = out + i * K;
        for (int64_t j = 0; j < K; j++) o[j] = (int8_t)__builtin_rintf(r[j] * inv);
        sx[i] = s;
    }
}

/* ---- the portable path: widen tiles of W to float32, sgemm ------------------------------------------- */

#define TILE_N 128

static void widen_rows(const lowp_mat *a, int64_t n0, int64_t n1, float *out) {
    const int64_t K = a->k;
    for (int64_t n = n0; n < n1; n++) {
        float *o = out + (n - n0) * K;
        if (a->type == CP_WT_BF16) {
            const uint16_t *r = (const uint16_t *)a->w + n * K;
            for (int64_t j = 0; j < K; j++) o[j] = cp_bf16_to_f32(r[j]);
        } else {
            const int8_t *r = (const int8_t *)a->w + n * K;
            const float s = a->scale[n];
            for (int64_t j = 0; j < K; j++) o[j] = (float)r[j] * s;
        }
    }
}

static void matmul_portable(const float *x, int64_t ldx, int64_t M, const lowp_mat *a, const float *b, float *y,
                            int64_t ldy, int accumulate) {
    float *tile = scratch(2, (size_t)TILE_N * (size_t)a->k * sizeof(float));
    for (int64_t n0 = 0; n0 < a->n; n0 += TILE_N) {
        const int64_t n1 = n0 + TILE_N < a->n ? n0 + TILE_N : a->n;
        widen_rows(a, n0, n1, tile);
        cp_linear(x, ldx, M, a->k, tile, CP_W_OUT_IN, n1 - n0, b ? b + n0 : NULL, y + n0, ldy, accumulate);
    }
}

/* ---- oneDNN ------------------------------------------------------------------------------------------- */

#ifdef CP_WITH_DNNL

static dnnl_engine_t g_eng;
static dnnl_stream_t g_stream;
static int g_dnnl_ok = -1; /* -1 not tried, 0 failed, 1 ready */
static pthread_once_t g_dnnl_once = PTHREAD_ONCE_INIT;

static void dnnl_init(void) {
    g_dnnl_ok = dnnl_engine_create(&g_eng, dnnl_cpu, 0) == dnnl_success &&
                dnnl_stream_create(&g_stream, g_eng, dnnl_stream_default_flags) == dnnl_success;
}

static int dnnl_ready(void) {
    pthread_once(&g_dnnl_once, dnnl_init);
    return g_dnnl_ok == 1;
}

static dnnl_data_type_t dt_of(cp_wtype t) { return t == CP_WT_BF16 ? dnnl_bf16 : dnnl_s8; }

/* A matmul primitive for (type, n, k, M, bias, accumulate) over the packed layout. int8: dst int32, no bias (the
 * epilogue scales and adds it). bf16: dst float32 with the bias and, for accumulate, a sum post-op. */
static dnnl_status_t make_pd(cp_wtype t, int64_t n, int64_t k, int64_t M, const dnnl_memory_desc_t *wmd,
                             int bias, int accumulate, dnnl_primitive_desc_t *pd) {
    dnnl_memory_desc_t smd, dmd, bmd, wany;
    dnnl_dims_t sd = {M, k}, dd = {M, n}, bd = {1, n}, wd = {k, n};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_tag(&smd, 2, sd, dt_of(t), dnnl_ab)) != dnnl_success) return s;
    if ((s = dnnl_memory_desc_init_by_tag(&dmd, 2, dd, t == CP_WT_S8 ? dnnl_s32 : dnnl_f32, dnnl_ab)) != dnnl_success)
        return s;
    if ((s = dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab)) != dnnl_success) return s;
    if (wmd == NULL) {
        if ((s = dnnl_memory_desc_init_by_tag(&wany, 2, wd, dt_of(t), dnnl_format_tag_any)) != dnnl_success) return s;
        wmd = &wany;
    }
    const int use_bias = t == CP_WT_BF16 && bias;
    dnnl_matmul_desc_t md;
    if ((s = dnnl_matmul_desc_init(&md, &smd, wmd, use_bias ? &bmd : NULL, &dmd)) != dnnl_success) return s;
    dnnl_primitive_attr_t attr = NULL;
    if (t == CP_WT_BF16 && accumulate) {
        dnnl_post_ops_t po;
        if ((s = dnnl_primitive_attr_create(&attr)) != dnnl_success) return s;
        if ((s = dnnl_post_ops_create(&po)) == dnnl_success) {
            s = dnnl_post_ops_append_sum(po, 1.0f);
            if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(attr, po);
            dnnl_post_ops_destroy(po);
        }
        if (s != dnnl_success) {
            dnnl_primitive_attr_destroy(attr);
            return s;
        }
    }
    s = dnnl_primitive_desc_create(pd, &md, attr, g_eng, NULL);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return s;
}

static const char *pd_impl(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || impl == NULL) return "?";
    return impl;
}

static int impl_is_ref(const char *impl) { return strncmp(impl, "ref", 3) == 0; }

/* Primitive cache: (type, n, k, M, flags) -> primitive, with a use count so that eviction never destroys one that a
 * thread is running. Bounded: rows come in chunks of <= ROWS_PER_CALL. */
#define CACHE_CAP 256
typedef struct {
    int used;
    cp_wtype type;
    int64_t n, k, M;
    int flags;
    int busy;
    uint64_t tick;
    dnnl_primitive_t prim;
} cache_ent;

static cache_ent g_cache[CACHE_CAP];
static uint64_t g_tick;
static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static cache_ent *cache_get(const lowp_mat *a, int64_t M, int bias, int accumulate) {
    const int flags = (bias ? 1 : 0) | (accumulate ? 2 : 0);
    pthread_mutex_lock(&g_cache_lock);
    cache_ent *free_slot = NULL, *victim = NULL;
    for (int i = 0; i < CACHE_CAP; i++) {
        cache_ent *e = &g_cache[i];
        if (e->used && e->type == a->type && e->n == a->n && e->k == a->k && e->M == M && e->flags == flags) {
            e->busy++, e->tick = ++g_tick;
            pthread_mutex_unlock(&g_cache_lock);
            return e;
        }
        if (!e->used) {
            if (!free_slot) free_slot = e;
        } else if (e->busy == 0 && (!victim || e->tick < victim->tick)) {
            victim = e;
        }
    }
    cache_ent *e = free_slot ? free_slot : victim;
    if (e == NULL) { /* every entry is running right now: build a private one (freed by cache_put) */
        pthread_mutex_unlock(&g_cache_lock);
        e = calloc(1, sizeof *e);
        if (e == NULL) return NULL;
        e->used = -1;
    } else {
        if (e->used && e->prim) dnnl_primitive_destroy(e->prim);
        memset(e, 0, sizeof *e);
        e->used = 1, e->busy = 1; /* reserved under the lock; built below without it */
        pthread_mutex_unlock(&g_cache_lock);
        e->tick = 0;
    }
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim = NULL;
    if (make_pd(a->type, a->n, a->k, M, &a->wmd, bias, accumulate, &pd) == dnnl_success) {
        if (dnnl_primitive_create(&prim, pd) != dnnl_success) prim = NULL;
        dnnl_primitive_desc_destroy(pd);
    }
    pthread_mutex_lock(&g_cache_lock);
    e->type = a->type, e->n = a->n, e->k = a->k, e->M = M, e->flags = flags, e->prim = prim, e->tick = ++g_tick;
    if (prim == NULL && e->used == 1) e->used = 0, e->busy = 0;
    pthread_mutex_unlock(&g_cache_lock);
    if (prim == NULL) {
        if (e->used == -1) free(e);
        return NULL;
    }
    return e;
}

static void cache_put(cache_ent *e) {
    if (e->used == -1) {
        dnnl_primitive_destroy(e->prim);
        free(e);
        return;
    }
    pthread_mutex_lock(&g_cache_lock);
    e->busy--;
    pthread_mutex_unlock(&g_cache_lock);
}

/* Runs one chunk of at most ROWS_PER_CALL rows. Returns 0 when oneDNN could not run it (the caller falls back). */
static int matmul_dnnl_chunk(const float *x, int64_t ldx, int64_t M, const lowp_mat *a, const float *b, float *y,
                             int64_t ldy, int accumulate) {
    const int64_t N = a->n, K = a->k;
    const int s8 = a->type == CP_WT_S8;
    /* bf16 writes straight into y when its rows are contiguous; int8 always goes through the int32 scratch */
    const int direct = !s8 && ldy == N;
    cache_ent *e = cache_get(a, M, b != NULL, direct ? accumulate : 0);
    if (e == NULL) return 0;
    void *xq = scratch(0, (size_t)M * (size_t)K * (s8 ? 1 : 2));
    void *acc = direct ? (void *)y : scratch(1, (size_t)M * (size_t)N * 4);
    float sx[ROWS_PER_CALL];
    if (s8) rows_to_s8(x, ldx, M, K, xq, sx);
    else rows_to_bf16(x, ldx, M, K, xq);
    dnnl_memory_desc_t smd, dmd, bmd;
    dnnl_dims_t sd = {M, K}, dd = {M, N}, bd = {1, N};
    dnnl_memory_desc_init_by_tag(&smd, 2, sd, dt_of(a->type), dnnl_ab);
    dnnl_memory_desc_init_by_tag(&dmd, 2, dd, s8 ? dnnl_s32 : dnnl_f32, dnnl_ab);
    dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab);
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL, mb = NULL;
    int ok = dnnl_memory_create(&ms, &smd, g_eng, xq) == dnnl_success &&
             dnnl_memory_create(&mw, &a->wmd, g_eng, a->w) == dnnl_success &&
             dnnl_memory_create(&md, &dmd, g_eng, acc) == dnnl_success;
    const int use_bias = !s8 && b != NULL;
    if (ok && use_bias) ok = dnnl_memory_create(&mb, &bmd, g_eng, (void *)b) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}, {DNNL_ARG_BIAS, mb}};
        ok = dnnl_primitive_execute(e->prim, g_stream, use_bias ? 4 : 3, args) == dnnl_success &&
             dnnl_stream_wait(g_stream) == dnnl_success;
    }
    if (ms) dnnl_memory_destroy(ms);
    if (mw) dnnl_memory_destroy(mw);
    if (md) dnnl_memory_destroy(md);
    if (mb) dnnl_memory_destroy(mb);
    cache_put(e);
    if (!ok) return 0;
    if (direct) return 1;
    /* epilogue: y (+)= acc * scale (+ b) */
    const float *sw = a->scale;
#pragma omp parallel for schedule(static) if (M * N >= (1 << 16))
    for (int64_t i = 0; i < M; i++) {
        float *yr = y + i * ldy;
        if (s8) {
            const int32_t *ar = (const int32_t *)acc + i * N;
            const float s = sx[i];
            if (accumulate) {
                if (b) for (int64_t j = 0; j < N; j++) yr[j] += (float)ar[j] * s * sw[j] + b[j];
                else for (int64_t j = 0; j < N; j++) yr[j] += (float)ar[j] * s * sw[j];
            } else {
                if (b) for (int64_t j = 0; j < N; j++) yr[j] = (float)ar[j] * s * sw[j] + b[j];
                else for (int64_t j = 0; j < N; j++) yr[j] = (float)ar[j] * s * sw[j];
            }
        } else {
            const float *ar = (const float *)acc + i * N; /* bias already added by the primitive */
            if (accumulate) for (int64_t j = 0; j < N; j++) yr[j] += ar[j];
            else memcpy(yr, ar, (size_t)N * sizeof(float));
        }
    }
    return 1;
}

/* Element (kk, nn) of the logical (K, N) weights inside a blocked oneDNN layout: its offset in elements. */
static int64_t blocked_offset(const dnnl_memory_desc_t *md, int64_t kk, int64_t nn) {
    const dnnl_blocking_desc_t *bl = &md->format_desc.blocking;
    int64_t pos[2] = {kk + md->padded_offsets[0], nn + md->padded_offsets[1]};
    int64_t off = 0, stride = 1;
    for (int i = bl->inner_nblks - 1; i >= 0; i--) {
        const int d = bl->inner_idxs[i];
        off += (pos[d] % bl->inner_blks[i]) * stride;
        pos[d] /= bl->inner_blks[i];
        stride *= bl->inner_blks[i];
    }
    return md->offset0 + off + pos[0] * bl->strides[0] + pos[1] * bl->strides[1];
}

#endif /* CP_WITH_DNNL */

/* ---- the registered kernels ------------------------------------------------------------------------- */

static void matmul_lowp(const float *x, int64_t ldx, int64_t M, const cp_wmat *w, const float *b, float *y,
                        int64_t ldy, int accumulate) {
    const lowp_mat *a = w->aux;
    if (M <= 0 || a->n <= 0) return;
    for (int64_t m0 = 0; m0 < M; m0 += ROWS_PER_CALL) {
        const int64_t mc = M - m0 < ROWS_PER_CALL ? M - m0 : ROWS_PER_CALL;
        const float *xc = x + m0 * ldx;
        float *yc = y + m0 * ldy;
#ifdef CP_WITH_DNNL
        if (a->packed && matmul_dnnl_chunk(xc, ldx, mc, a, b, yc, ldy, accumulate)) continue;
        if (a->packed) { /* the primitive ran at conversion; failing now means oneDNN ran out of memory */
            fprintf(stderr, "clipprompt: oneDNN matmul failed for (%lld x %lld)\n", (long long)a->n, (long long)a->k);
            abort();
        }
#endif
        matmul_portable(xc, ldx, mc, a, b, yc, ldy, accumulate);
    }
}

static void row_lowp(const cp_wmat *w, int64_t r, float *out) {
    const lowp_mat *a = w->aux;
#ifdef CP_WITH_DNNL
    if (a->packed) {
        for (int64_t j = 0; j < a->k; j++) {
            const int64_t off = blocked_offset(&a->wmd, j, r);
            out[j] = a->type == CP_WT_BF16 ? cp_bf16_to_f32(((const uint16_t *)a->w)[off])
                                           : (float)((const int8_t *)a->w)[off] * a->scale[r];
        }
        return;
    }
#endif
    widen_rows(a, r, r + 1, out);
}

static pthread_once_t g_reg_once = PTHREAD_ONCE_INIT;
static void register_kernels(void) {
    cp_wtype_register(CP_WT_BF16, matmul_lowp, row_lowp);
    cp_wtype_register(CP_WT_S8, matmul_lowp, row_lowp);
}

/* ---- library / ISA reports ---------------------------------------------------------------------------- */

int cp_lowp_have_library(void) {
#ifdef CP_WITH_DNNL
    return dnnl_ready();
#else
    return 0;
#endif
}

const char *cp_lowp_library(void) {
#ifdef CP_WITH_DNNL
    static char buf[64];
    const dnnl_version_t *v = dnnl_version();
    static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lk);
    if (!buf[0])
        snprintf(buf, sizeof buf, "oneDNN %d.%d.%d (%s)", v->major, v->minor, v->patch,
                 v->cpu_runtime == DNNL_RUNTIME_OMP ? "omp" : "other runtime");
    pthread_mutex_unlock(&lk);
    return buf;
#else
    return "none";
#endif
}

const char *cp_lowp_cpu_isa(void) {
#ifdef CP_WITH_DNNL
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
#else
    return "none";
#endif
}

#ifdef CP_WITH_DNNL
/* The implementation oneDNN picks for (t, n, k) at M rows, or NULL when it has none. Interned. */
static const char *dnnl_impl_for(cp_wtype t, int64_t n, int64_t k, int64_t M) {
    static char names[16][48];
    static int nnames;
    static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;
    if (!dnnl_ready()) return NULL;
    dnnl_primitive_desc_t pd;
    if (make_pd(t, n, k, M, NULL, 0, 0, &pd) != dnnl_success) return NULL;
    const char *impl = pd_impl(pd), *res = NULL;
    pthread_mutex_lock(&lk);
    for (int i = 0; i < nnames && !res; i++)
        if (!strcmp(names[i], impl)) res = names[i];
    if (!res && nnames < 16) {
        snprintf(names[nnames], sizeof names[nnames], "%s", impl);
        res = names[nnames++];
    }
    pthread_mutex_unlock(&lk);
    dnnl_primitive_desc_destroy(pd);
    return res ? res : "?";
}
#endif

const char *cp_lowp_path(cp_wtype t, int64_t n, int64_t k) {
    if (t == CP_WT_F32) return "sgemm";
#ifdef CP_WITH_DNNL
    const char *impl = dnnl_impl_for(t, n, k, 64);
    if (impl && !impl_is_ref(impl)) return impl;
#endif
    (void)n, (void)k;
    return "sgemm-dequant";
}

/* ---- conversion --------------------------------------------------------------------------------------- */

static void owner_free(void *p) {
    lowp_owner *o = p;
    if (o == NULL) return;
    for (int64_t i = 0; i < o->nmats; i++) {
        cp_free_aligned(o->mats[i].w);
        free(o->mats[i].scale);
    }
    free(o->mats);
    free(o);
}

/* Fill `a` (type, n, k set) from the float32 matrix `src` (out-in [n, k], or in-out [k, n] when in_out). */
static int convert_one(lowp_mat *a, const cp_wmat *src) {
    const int64_t N = a->n, K = a->k;
    const float *W = src->data;
    const int in_out = src->layout == CP_W_IN_OUT;
#define WAT(n_, k_) (in_out ? W[(k_) * N + (n_)] : W[(n_) * K + (k_)])
    size_t elems;
    CP_CHECK(cp_mul_size((size_t)N, (size_t)K, &elems));
    const size_t esz = a->type == CP_WT_BF16 ? 2 : 1;
    void *plain = cp_malloc_aligned(elems * esz + 64);
    if (plain == NULL) CP_FAIL(CP_ERR_NOMEM, "out of memory converting a (%lld x %lld) matrix", (long long)N, (long long)K);
    if (a->type == CP_WT_S8) {
        a->scale = malloc((size_t)N * sizeof(float));
        if (a->scale == NULL) {
            cp_free_aligned(plain);
            CP_FAIL(CP_ERR_NOMEM, "out of memory converting a matrix");
        }
    }
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        if (a->type == CP_WT_BF16) {
            uint16_t *o = (uint16_t *)plain + n * K;
            for (int64_t j = 0; j < K; j++) o[j] = cp_f32_to_bf16(WAT(n, j));
        } else {
            float mx = 0.0f;
            for (int64_t j = 0; j < K; j++) mx = fabsf(WAT(n, j)) > mx ? fabsf(WAT(n, j)) : mx;
            const float inv = mx > 0.0f ? 127.0f / mx : 0.0f;
            int8_t *o = (int8_t *)plain + n * K;
            for (int64_t j = 0; j < K; j++) o[j] = (int8_t)rintf(WAT(n, j) * inv);
            a->scale[n] = mx / 127.0f;
        }
    }
#undef WAT
    a->w = plain, a->packed = 0;
#ifdef CP_WITH_DNNL
    if (!dnnl_ready()) return CP_OK;
    dnnl_primitive_desc_t pd;
    if (make_pd(a->type, N, K, ROWS_PER_CALL, NULL, 1, 0, &pd) != dnnl_success) return CP_OK; /* portable path */
    if (impl_is_ref(pd_impl(pd))) {
        dnnl_primitive_desc_destroy(pd);
        return CP_OK;
    }
    a->wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    const size_t bytes = dnnl_memory_desc_get_size(&a->wmd);
    void *packed = cp_malloc_aligned(bytes + 64);
    if (packed == NULL) CP_FAIL(CP_ERR_NOMEM, "out of memory packing a (%lld x %lld) matrix", (long long)N, (long long)K);
    memset(packed, 0, bytes);
    /* plain out-in [n, k] is the (K, N) matrix with strides (1, K): oneDNN's "ba" */
    dnnl_memory_desc_t pmd;
    dnnl_dims_t wd = {K, N};
    dnnl_memory_desc_init_by_tag(&pmd, 2, wd, dt_of(a->type), dnnl_ba);
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t rp = NULL;
    dnnl_memory_t m_src = NULL, m_dst = NULL;
    int ok = dnnl_reorder_primitive_desc_create(&rpd, &pmd, g_eng, &a->wmd, g_eng, NULL) == dnnl_success &&
             dnnl_primitive_create(&rp, rpd) == dnnl_success &&
             dnnl_memory_create(&m_src, &pmd, g_eng, plain) == dnnl_success &&
             dnnl_memory_create(&m_dst, &a->wmd, g_eng, packed) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, m_src}, {DNNL_ARG_TO, m_dst}};
        ok = dnnl_primitive_execute(rp, g_stream, 2, args) == dnnl_success &&
             dnnl_stream_wait(g_stream) == dnnl_success;
    }
    if (m_src) dnnl_memory_destroy(m_src);
    if (m_dst) dnnl_memory_destroy(m_dst);
    if (rp) dnnl_primitive_destroy(rp);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (!ok) {
        cp_free_aligned(packed);
        CP_FAIL(CP_ERR_INTERNAL, "oneDNN could not pack a (%lld x %lld) %s matrix", (long long)N, (long long)K,
                cp_lowp_type_name(a->type));
    }
    cp_free_aligned(plain);
    a->w = packed, a->packed = 1;
#endif
    return CP_OK;
}

/* The matrices of a model that are converted, in a fixed order. */
static int64_t model_mats(cp_encoder_model *m, cp_wmat **out) {
    int64_t n = 0;
    for (int64_t l = 0; l < m->d.layers; l++) {
        cp_encoder_layer *L = &m->w.layers[l];
        cp_wmat *ms[4] = {&L->qkv, &L->o, &L->fc1, &L->fc2};
        for (int i = 0; i < 4; i++)
            if (ms[i]->n > 0) {
                if (out) out[n] = ms[i];
                n++;
            }
    }
    if (m->w.proj.n > 0) {
        if (out) out[n] = &m->w.proj;
        n++;
    }
    return n;
}

static int convert_list(cp_wmat **list, int64_t n, cp_wtype t, lowp_owner *o) {
    o->mats = calloc((size_t)(n > 0 ? n : 1), sizeof *o->mats);
    if (o->mats == NULL) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        if (list[i]->type != CP_WT_F32)
            CP_FAIL(CP_ERR_INVALID_ARG, "the model's weights are already %s; only float32 weights are converted",
                    cp_lowp_type_name(list[i]->type));
        lowp_mat *a = &o->mats[i];
        a->type = t, a->n = list[i]->n, a->k = list[i]->k;
        o->nmats = i + 1;
        CP_CHECK(convert_one(a, list[i]));
    }
    return CP_OK;
}

static void install(cp_wmat **list, int64_t n, const lowp_owner *o) {
    for (int64_t i = 0; i < n; i++) {
        const lowp_mat *a = &o->mats[i];
        cp_wmat w = {a->type, CP_W_OUT_IN, a->n, a->k, a->w, a->scale, a, 0};
        *list[i] = w;
    }
}

int cp_lowp_convert(cp_encoder_model *m, cp_wtype t) {
    if (t == CP_WT_F32) return CP_OK;
    if (t != CP_WT_BF16 && t != CP_WT_S8) CP_FAIL(CP_ERR_INVALID_ARG, "cp_lowp_convert: type must be bf16 or int8");
    if (m->lowp) CP_FAIL(CP_ERR_INVALID_ARG, "the model is already converted");
    pthread_once(&g_reg_once, register_kernels);
    const int64_t n = model_mats(m, NULL);
    cp_wmat **list = malloc((size_t)(n > 0 ? n : 1) * sizeof *list);
    lowp_owner *o = calloc(1, sizeof *o);
    if (!list || !o) {
        free(list);
        free(o);
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    }
    model_mats(m, list);
    int rc = convert_list(list, n, t, o);
    if (rc == CP_OK) {
        install(list, n, o);
        m->lowp = o, m->free_lowp = owner_free;
    } else {
        owner_free(o);
    }
    free(list);
    return rc;
}

/* ---- dtype="auto" --------------------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of `reps` timings of the four block matmuls of one layer at M rows. */
static double time_layer(cp_wmat *const *mats, int nm, int64_t M, int64_t width, const float *x, float *y, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now_s();
        for (int i = 0; i < nm; i++) cp_matmul(x, mats[i]->k, M, mats[i], NULL, y, mats[i]->n, 0);
        const double t = now_s() - t0;
        best = t < best ? t : best;
    }
    (void)width;
    return best;
}

/* dtype="auto" remembers its choice per matmul shape (width, ffn) for the life of the process, so every model of a
 * shape loads with the same dtype (one probe, no flip-flopping between loads on a noisy machine). */
#define PICK_MEMO 16
static struct {
    int64_t width, ffn;
    cp_wtype type;
    char rep[200];
} g_pick_memo[PICK_MEMO];
static int g_pick_n;
static pthread_mutex_t g_pick_mu = PTHREAD_MUTEX_INITIALIZER;

int cp_lowp_pick(const cp_encoder_model *m, cp_wtype *out, const char **report) {
    static _Thread_local char rep[256];
    *out = CP_WT_F32;
    if (report) *report = rep;
    rep[0] = 0;
    const cp_encoder_layer *L0 = &m->w.layers[0];
    cp_wmat f32[4] = {L0->qkv, L0->o, L0->fc1, L0->fc2};
    for (int i = 0; i < 4; i++)
        if (f32[i].type != CP_WT_F32) CP_FAIL(CP_ERR_INVALID_ARG, "dtype auto needs a float32 model");
    const int64_t W = m->d.width, F = m->d.ffn, big = (3 * W > F ? 3 * W : F);
    pthread_mutex_lock(&g_pick_mu); /* held through the probe: two loads of one shape probe once */
    for (int i = 0; i < g_pick_n; i++)
        if (g_pick_memo[i].width == W && g_pick_memo[i].ffn == F) {
            *out = g_pick_memo[i].type;
            snprintf(rep, sizeof rep, "%s (remembered)", g_pick_memo[i].rep);
            pthread_mutex_unlock(&g_pick_mu);
            return CP_OK;
        }
    pthread_once(&g_reg_once, register_kernels);
    const int64_t Ms[2] = {16, 256};
    size_t xb = (size_t)Ms[1] * (size_t)(F > W ? F : W), yb = (size_t)Ms[1] * (size_t)big;
    float *x = cp_malloc_aligned(xb * sizeof(float)), *y = cp_malloc_aligned(yb * sizeof(float));
    if (!x || !y) {
        cp_free_aligned(x);
        cp_free_aligned(y);
        pthread_mutex_unlock(&g_pick_mu);
        CP_FAIL(CP_ERR_NOMEM, "out of memory for the dtype probe");
    }
    uint32_t s = 12345u;
    for (size_t i = 0; i < xb; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((s >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    /* Candidates: float32 and bfloat16 (bf16 rounding moves a sentence vector by ~1e-5 in cosine). int8 changes
     * results measurably (min cosine ~0.99 on STS-B) and is never chosen silently: it is an explicit dtype. */
    double t[2][2];
    const cp_wtype types[2] = {CP_WT_F32, CP_WT_BF16};
    int rc = CP_OK;
    for (int ti = 0; ti < 2 && rc == CP_OK; ti++) {
        cp_wmat mats[4];
        cp_wmat *list[4];
        lowp_owner o = {0};
        for (int i = 0; i < 4; i++) mats[i] = f32[i], list[i] = &mats[i];
        if (types[ti] != CP_WT_F32) {
            rc = convert_list(list, 4, types[ti], &o);
            if (rc == CP_OK) install(list, 4, &o);
        }
        if (rc == CP_OK)
            for (int mi = 0; mi < 2; mi++) {
                time_layer(list, 4, Ms[mi], W, x, y, 1); /* warm: primitives, scratch */
                t[ti][mi] = time_layer(list, 4, Ms[mi], W, x, y, mi == 0 ? 7 : 3);
            }
        for (int64_t i = 0; i < o.nmats; i++) {
            cp_free_aligned(o.mats[i].w);
            free(o.mats[i].scale);
        }
        free(o.mats);
    }
    cp_free_aligned(x);
    cp_free_aligned(y);
    if (rc != CP_OK) {
        pthread_mutex_unlock(&g_pick_mu);
        return rc;
    }
    /* bf16 only when it is clearly faster at both sizes (>= 10%): a tie on a noisy machine stays float32 */
    if (t[1][0] < 0.9 * t[0][0] && t[1][1] < 0.9 * t[0][1]) *out = CP_WT_BF16;
    snprintf(rep, sizeof rep, "M=16/256 one layer ms: float32 %.3f/%.3f bfloat16 %.3f/%.3f -> %s", t[0][0] * 1e3,
             t[0][1] * 1e3, t[1][0] * 1e3, t[1][1] * 1e3, cp_lowp_type_name(*out));
    if (g_pick_n < PICK_MEMO) {
        g_pick_memo[g_pick_n].width = W;
        g_pick_memo[g_pick_n].ffn = F;
        g_pick_memo[g_pick_n].type = *out;
        snprintf(g_pick_memo[g_pick_n].rep, sizeof g_pick_memo[g_pick_n].rep, "%s", rep);
        g_pick_n++;
    }
    pthread_mutex_unlock(&g_pick_mu);
    return CP_OK;
}
