/* cp_device_selftest.c — the device layer's policies tested without a GPU (see cp_device_ctx.h): the arena's
 * out-of-memory retry and restore, the graph cache's warm-up / capture / failure budget / LRU, the graph buckets and
 * the float16 query check, all over host fakes of cp_dev_ops. Exposed to Python as _C._device_selftest(). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"
#include "device/cp_device_ctx.h"

/* ---- host fakes --------------------------------------------------------------------------------------- */

#define FAKE_BLOCKS 64
static struct {
    size_t budget, used;          /* simulated device memory */
    void *live[FAKE_BLOCKS];      /* live blocks and their sizes */
    size_t size[FAKE_BLOCKS];
    void *quarantine[FAKE_BLOCKS]; /* freed blocks are kept until the end: a new block never reuses an address */
    int nq;
    int captures, launches, direct, fail_capture;
} F;

static int fake_malloc(void **p, size_t bytes, const char *what) {
    *p = NULL;
    if (F.used + bytes > F.budget)
        CP_FAIL(CP_ERR_DEVICE_OOM, "fake device: out of memory for %zu bytes of %s", bytes, what);
    for (int i = 0; i < FAKE_BLOCKS; i++)
        if (F.live[i] == NULL) {
            F.live[i] = malloc(bytes ? bytes : 1), F.size[i] = bytes;
            if (!F.live[i]) CP_FAIL(CP_ERR_NOMEM, "host out of memory");
            F.used += bytes;
            *p = F.live[i];
            return CP_OK;
        }
    CP_FAIL(CP_ERR_INTERNAL, "fake device: too many blocks");
}

static void fake_free(void *p) {
    if (!p) return;
    for (int i = 0; i < FAKE_BLOCKS; i++)
        if (F.live[i] == p) {
            F.used -= F.size[i];
            F.live[i] = NULL;
            if (F.nq < FAKE_BLOCKS) F.quarantine[F.nq++] = p;
            else free(p);
            return;
        }
}

static int fake_host_malloc(void **p, size_t bytes) {
    *p = malloc(bytes ? bytes : 1);
    return *p ? CP_OK : cp_fail(CP_ERR_NOMEM, "host out of memory");
}
static void fake_host_free(void *p) { free(p); }
static int fake_memset(void *dst, int v, size_t n, void *s) {
    (void)s;
    memset(dst, v, n);
    return CP_OK;
}
static int fake_sync(void *s) {
    (void)s;
    return CP_OK;
}
static int fake_capture_begin(void *s) {
    (void)s;
    F.captures++;
    return CP_OK;
}
static int fake_capture_end(void *s, void **exec) {
    (void)s;
    *exec = NULL;
    if (F.fail_capture) CP_FAIL(CP_ERR_DEVICE, "fake device: capture refused");
    *exec = malloc(1);
    return CP_OK;
}
static int fake_launch(void *exec, void *s) {
    (void)exec, (void)s;
    F.launches++;
    return CP_OK;
}
static void fake_graph_free(void *exec) { free(exec); }

static const cp_dev_ops FAKE = {fake_malloc,        fake_free,        fake_host_malloc, fake_host_free,
                                fake_memset,        fake_sync,        fake_capture_begin, fake_capture_end,
                                fake_launch,        fake_graph_free};

static void fake_reset(size_t budget) {
    for (int i = 0; i < FAKE_BLOCKS; i++) free(F.live[i]);
    for (int i = 0; i < F.nq; i++) free(F.quarantine[i]);
    memset(&F, 0, sizeof F);
    F.budget = budget;
}

static void ctx_fake(cp_dev_ctx *c, int graph_max) {
    memset(c, 0, sizeof *c);
    c->ops = &FAKE;
    c->graph_max = graph_max;
}

static void ctx_fake_release(cp_dev_ctx *c) {
    cp_dev_graphs_clear(c);
    fake_free(c->arena);
    fake_host_free(c->host);
    memset(c, 0, sizeof *c);
}

static int direct_fn(void *arg) {
    (void)arg;
    F.direct++;
    return CP_OK;
}

/* ---- the checks ---------------------------------------------------------------------------------------- */

typedef struct {
    cp_dev_selftest_result *res;
    int n, max;
} report;

static void put(report *r, const char *name, int ok, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(report *r, const char *name, int ok, const char *fmt, ...) {
    if (r->n >= r->max) return;
    cp_dev_selftest_result *x = &r->res[r->n++];
    x->name = name, x->ok = ok;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->detail, sizeof x->detail, fmt, ap);
    va_end(ap);
}

static void check_arena(report *r) {
    cp_dev_ctx c;
    /* grow: only both arenas together do not fit -> the retry without the old one succeeds and the arena moves */
    fake_reset(1000);
    ctx_fake(&c, 8);
    int rc1 = cp_dev_arena_reserve(&c, 600, 64);
    void *a = c.arena;
    cp_dev_graph_add(&c, (const int64_t[6]){1, 2, 3, 4, 5, 6}, malloc(1));
    int rc2 = cp_dev_arena_reserve(&c, 900, 64);
    put(r, "arena_retry_without_old", rc1 == CP_OK && rc2 == CP_OK && c.arena != a && c.arena_bytes == 900 &&
        c.ngraphs == 0, "rc %d/%d, moved %d, bytes %zu, graphs %d", rc1, rc2, c.arena != a, c.arena_bytes, c.ngraphs);
    ctx_fake_release(&c);
    /* grow beyond the device: OOM, and the context again holds an arena of the old size, zeroed, elsewhere */
    fake_reset(1000);
    ctx_fake(&c, 8);
    rc1 = cp_dev_arena_reserve(&c, 600, 64);
    a = c.arena;
    memset(c.arena, 0x7f, 600);
    cp_dev_graph_add(&c, (const int64_t[6]){1, 2, 3, 4, 5, 6}, malloc(1));
    cp_clear_error();
    rc2 = cp_dev_arena_reserve(&c, 1200, 64);
    int zero = c.arena != NULL;
    for (size_t i = 0; zero && i < c.arena_bytes; i++) zero = ((unsigned char *)c.arena)[i] == 0;
    put(r, "arena_oom_restores_old_size", rc1 == CP_OK && rc2 == CP_ERR_DEVICE_OOM && c.arena != NULL &&
        c.arena != a && c.arena_bytes == 600 && zero && c.ngraphs == 0 && strstr(cp_last_error(), "1200") != NULL,
        "rc %d, moved %d, bytes %zu, zeroed %d, graphs %d, message \"%.80s\"", rc2, c.arena != a, c.arena_bytes, zero,
        c.ngraphs, cp_last_error());
    /* the next reserve of a size that fits works again from the restored arena */
    int rc3 = cp_dev_arena_reserve(&c, 500, 64);
    put(r, "arena_usable_after_oom", rc3 == CP_OK && c.arena_bytes == 600, "rc %d, bytes %zu", rc3, c.arena_bytes);
    ctx_fake_release(&c);
}

static void check_graphs(report *r) {
    cp_dev_ctx c;
    fake_reset(1 << 20);
    ctx_fake(&c, 8);
    const int64_t k[6] = {1, 64, 4, 77, 12, 12};
    cp_dev_run(&c, 1, k, direct_fn, NULL);
    const int warm = F.direct == 1 && F.captures == 0 && F.launches == 0;
    cp_dev_run(&c, 1, k, direct_fn, NULL);
    const int captured = F.captures == 1 && F.launches == 1 && F.direct == 2; /* fn runs once inside the capture */
    cp_dev_run(&c, 1, k, direct_fn, NULL);
    const int replay = F.captures == 1 && F.launches == 2 && F.direct == 2;
    put(r, "graph_warmup_then_capture", warm && captured && replay, "warm %d captured %d replay %d", warm, captured,
        replay);
    ctx_fake_release(&c);

    fake_reset(1 << 20);
    ctx_fake(&c, 8);
    F.fail_capture = 1;
    int off_after = -1, ok = 1;
    for (int i = 0; i < 2 * CP_DEV_GRAPH_FAILS + 2; i++) {
        const int64_t kk[6] = {2, i, 0, 0, 0, 0};
        const int before = F.direct;
        ok &= cp_dev_run(&c, 1, kk, direct_fn, NULL) == CP_OK; /* warm-up */
        ok &= cp_dev_run(&c, 1, kk, direct_fn, NULL) == CP_OK; /* capture fails -> runs directly */
        ok &= F.direct > before + 1;                            /* both calls did their work */
        if (c.graphs_off && off_after < 0) off_after = i + 1;
    }
    put(r, "graph_failure_budget", ok && off_after == CP_DEV_GRAPH_FAILS,
        "every call still ran: %d; graphs off after %d failed captures (budget %d)", ok, off_after,
        CP_DEV_GRAPH_FAILS);
    ctx_fake_release(&c);

    fake_reset(1 << 20);
    ctx_fake(&c, 8);
    for (int i = 0; i < 3 * CP_DEV_GRAPHS; i++) {
        const int64_t kk[6] = {3, i, 0, 0, 0, 0};
        cp_dev_run(&c, 1, kk, direct_fn, NULL);
        cp_dev_run(&c, 1, kk, direct_fn, NULL);
    }
    put(r, "graph_cache_bounded", c.ngraphs <= CP_DEV_GRAPHS, "%d cached for %d slots", c.ngraphs, CP_DEV_GRAPHS);
    ctx_fake_release(&c);
    fake_reset(0);
}

static void check_buckets(report *r) {
    const int ok = cp_dev_bucket_tokens(1, 32768) == 16 && cp_dev_bucket_tokens(16, 32768) == 16 &&
                   cp_dev_bucket_tokens(17, 32768) == 32 && cp_dev_bucket_tokens(300, 32768) == 320 &&
                   cp_dev_bucket_tokens(1025, 32768) == 1280 && cp_dev_bucket_tokens(1000, 1000) == 1000 &&
                   cp_dev_bucket_prompts(1, 64) == 1 && cp_dev_bucket_prompts(3, 64) == 4 &&
                   cp_dev_bucket_prompts(33, 64) == 64 && cp_dev_bucket_prompts(65, 100) == 65;
    /* every batch of 1..64 prompts of up to 77 tokens lands in few graphs */
    int64_t seen[4096];
    int nseen = 0;
    for (int64_t n = 1; n <= 64; n++)
        for (int64_t t = n; t <= n * 77; t += 7) {
            const int64_t key = cp_dev_bucket_prompts(n, 1 << 20) * 100000 + cp_dev_bucket_tokens(t, 32768);
            int found = 0;
            for (int i = 0; i < nseen && !found; i++) found = seen[i] == key;
            if (!found && nseen < 4096) seen[nseen++] = key;
        }
    put(r, "graph_buckets", ok && nseen < 400, "rules %d, %d distinct graph shapes for 1..64 prompts", ok, nseen);
}

static void check_f16(report *r) {
    const float good[4] = {65504.0f, -65504.0f, 0.0f, 1e-8f};
    const float big[4] = {1.0f, 2.0f, 70000.0f, 0.0f};
    const float nan_[2] = {0.0f, __builtin_nanf("")};
    const int a = cp_dev_check_f16(good, 2, 2) == CP_OK;
    cp_clear_error();
    const int b = cp_dev_check_f16(big, 2, 2) == CP_ERR_INVALID_ARG && strstr(cp_last_error(), "[1, 0]") != NULL;
    const int c = cp_dev_check_f16(nan_, 1, 2) == CP_ERR_INVALID_ARG;
    cp_clear_error();
    put(r, "f16_query_range", a && b && c, "in range %d, 70000 refused %d, NaN refused %d", a, b, c);
}

int cp_device_selftest(cp_dev_selftest_result *res, int max) {
    report r = {res, 0, max};
    check_arena(&r);
    check_graphs(&r);
    check_buckets(&r);
    check_f16(&r);
    cp_clear_error();
    return r.n;
}
