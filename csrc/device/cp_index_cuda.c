/* cp_index_cuda.c — flat inner-product search on one GPU over a device mirror of a cp_index (see cp_device.h).
 *
 * Rows live on the device in the index's storage dtype (float32, or float16 with the queries rounded to float16 as
 * FAISS's GPU index does; the GEMM accumulates in fp32). Search, per block of up to 1024 queries: for each tile of
 * database rows, one cuBLAS GEMM writes a [qb, tile] fp32 score tile (tile sized to tile_bytes, so the [nq, N]
 * matrix never exists beyond it), then cp_cuda_topk_chunks keeps the best k of each chunk of columns; after the
 * last tile cp_cuda_topk_merge reduces the chunks' candidates to the final k. Rows -> ids on the host.
 */
#include "device/cp_device.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"

#define DEFAULT_TILE_BYTES ((size_t)256 << 20)
#define CAND_BYTES ((size_t)128 << 20)
#define QBLOCK 1024

#ifdef CP_WITH_CUDA
#include "device/cp_device_ctx.h"

struct cp_index_cuda {
    cp_dev_ctx c;
    int dt;            /* device dtype of the rows (CP_DEVICE_FLOAT32 / FLOAT16) */
    int synced;
    int64_t dim, n, cap;
    uint64_t gen;
    void *rows;        /* (cap, dim) dtype */
    int64_t *ids;      /* host (cap) */
    size_t tile_bytes;
    int64_t chunk_knob;
};

int64_t cp_index_cuda_max_k(void) { return CP_CUDA_TOPK_MAX; }

int cp_index_cuda_create(int device, cp_index_cuda **out) {
    *out = NULL;
    cp_index_cuda *c = calloc(1, sizeof *c);
    if (!c) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    cp_device_options o;
    cp_device_options_init(&o);
    o.device = device;
    o.graph_max_batch = 0;
    int rc = cp_dev_ctx_init(&c->c, &o);
    if (rc != CP_OK) {
        cp_index_cuda_free(c);
        return rc;
    }
    c->tile_bytes = DEFAULT_TILE_BYTES;
    *out = c;
    return CP_OK;
}

void cp_index_cuda_free(cp_index_cuda *c) {
    if (c == NULL) return;
    cp_dev_ctx_release(&c->c);
    cp_cuda_free(c->rows);
    free(c->ids);
    free(c);
}

void cp_index_cuda_set_knobs(cp_index_cuda *c, size_t tile_bytes, int64_t chunk) {
    pthread_mutex_lock(&c->c.lock);
    c->tile_bytes = tile_bytes ? tile_bytes : DEFAULT_TILE_BYTES;
    c->chunk_knob = chunk;
    pthread_mutex_unlock(&c->c.lock);
}

size_t cp_index_cuda_bytes(const cp_index_cuda *c) {
    return (size_t)c->cap * (size_t)c->dim * cp_cuda_dtype_size(c->dt) + c->c.arena_bytes + CP_DEV_WS_BYTES;
}

/* Brings the mirror up to date with ix: appended rows alone, or everything after a removal/reset. */
static int sync_rows(cp_index_cuda *c, cp_index *ix) {
    const int dt = cp_index_dtype(ix) == CP_INDEX_FLOAT16 ? CP_DEVICE_FLOAT16 : CP_DEVICE_FLOAT32;
    const int64_t d = cp_index_dim(ix);
    const size_t es = cp_cuda_dtype_size(dt);
    for (int attempt = 0; attempt < 8; attempt++) {
        int64_t nt = 0;
        uint64_t gen = 0;
        CP_CHECK(cp_index_read_rows(ix, 0, 0, NULL, NULL, &nt, &gen));
        int64_t n0 = (c->synced && gen == c->gen && dt == c->dt && d == c->dim && nt >= c->n) ? c->n : 0;
        if (n0 == nt && c->synced && gen == c->gen) return CP_OK;
        if (n0 == 0) c->synced = 0, c->n = 0;
        c->dt = dt, c->dim = d;
        if (nt > 0x7fffffffLL) CP_FAIL(CP_ERR_INVALID_ARG, "device search supports at most 2^31 - 1 rows");
        if (nt > c->cap) { /* grow: new buffer, copy the rows we keep */
            int64_t cap = c->cap + c->cap / 2;
            if (cap < nt) cap = nt;
            void *rows = NULL;
            CP_CHECK(cp_cuda_malloc(&rows, (size_t)cap * (size_t)d * es, "the index rows"));
            int64_t *ids = realloc(c->ids, (size_t)cap * sizeof *ids);
            if (!ids) {
                cp_cuda_free(rows);
                CP_FAIL(CP_ERR_NOMEM, "out of memory");
            }
            c->ids = ids;
            int rc = cp_cuda_memcpy_d2d(rows, c->rows, (size_t)n0 * (size_t)d * es, c->c.stream);
            if (rc == CP_OK) rc = cp_cuda_stream_sync(c->c.stream);
            if (rc != CP_OK) {
                cp_cuda_free(rows);
                return rc;
            }
            cp_cuda_free(c->rows);
            c->rows = rows, c->cap = cap;
        }
        /* upload [n0, nt) in chunks through a host fp32 buffer (and a device staging buffer for float16) */
        int64_t per = ((int64_t)16 << 20) / (d > 0 ? d : 1);
        if (per < 1) per = 1;
        if (per > nt - n0) per = nt - n0;
        float *hbuf = per > 0 ? malloc((size_t)per * (size_t)d * sizeof(float)) : NULL;
        float *stage = NULL;
        int rc = (per > 0 && !hbuf) ? cp_fail(CP_ERR_NOMEM, "out of memory") : CP_OK;
        if (rc == CP_OK && dt != CP_DEVICE_FLOAT32 && per > 0)
            rc = cp_cuda_malloc((void **)&stage, (size_t)per * (size_t)d * sizeof(float), "index upload staging");
        int changed = 0;
        for (int64_t r0 = n0; rc == CP_OK && r0 < nt; r0 += per) {
            const int64_t cnt = nt - r0 < per ? nt - r0 : per;
            int64_t nt2;
            uint64_t gen2;
            rc = cp_index_read_rows(ix, r0, cnt, hbuf, c->ids + r0, &nt2, &gen2);
            if (rc != CP_OK || gen2 != gen) {
                cp_clear_error();
                rc = CP_OK;
                changed = 1;
                break;
            }
            unsigned char *dst = (unsigned char *)c->rows + (size_t)r0 * (size_t)d * es;
            if (dt == CP_DEVICE_FLOAT32) {
                rc = cp_cuda_memcpy_h2d(dst, hbuf, (size_t)(cnt * d) * sizeof(float), c->c.stream);
            } else {
                rc = cp_cuda_memcpy_h2d(stage, hbuf, (size_t)(cnt * d) * sizeof(float), c->c.stream);
                if (rc == CP_OK) rc = cp_cuda_convert(stage, dst, dt, cnt * d, c->c.stream);
            }
            if (rc == CP_OK) rc = cp_cuda_stream_sync(c->c.stream); /* hbuf is reused */
        }
        free(hbuf);
        cp_cuda_free(stage);
        if (rc != CP_OK) {
            c->synced = 0;
            return rc;
        }
        if (changed) {
            c->synced = 0;
            continue; /* a writer removed rows meanwhile: start over */
        }
        c->n = nt, c->gen = gen, c->synced = 1;
        return CP_OK;
    }
    CP_FAIL(CP_ERR_INDEX_STATE, "search: the index kept changing while being copied to the device");
}

static int check_finite(const float *q, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(q[i])) CP_FAIL(CP_ERR_INVALID_ARG, "search: query has a non-finite value at flat index %lld", (long long)i);
    return CP_OK;
}

static int search_locked(cp_index_cuda *c, cp_index *ix, const float *q, int64_t nq, int64_t k, float *D,
                         int64_t *I) {
    CP_CHECK(cp_cuda_set_device(c->c.device));
    CP_CHECK(sync_rows(c, ix));
    const int64_t N = c->n, d = c->dim, dt = c->dt;
    if (N == 0) {
        for (int64_t i = 0; i < nq * k; i++) D[i] = -INFINITY, I[i] = -1;
        return CP_OK;
    }
    const size_t es = cp_cuda_dtype_size((int)dt);
    const int64_t qb = nq < QBLOCK ? nq : QBLOCK;
    int64_t chunk = c->chunk_knob;
    if (chunk <= 0) {
        /* candidates of one query block stay under CAND_BYTES: qb * ceil(N / chunk) * k * 8 bytes */
        const double need = (double)qb * (double)N * (double)k * 8.0 / (double)CAND_BYTES;
        chunk = 2048;
        while ((double)chunk < need) chunk *= 2;
    }
    int64_t nt = (int64_t)(c->tile_bytes / ((size_t)qb * sizeof(float)));
    nt = nt / chunk * chunk;
    if (nt < chunk) nt = chunk;
    const int64_t Nr = (N + chunk - 1) / chunk * chunk;
    if (nt > Nr) nt = Nr;
    const int64_t ncand = (N + chunk - 1) / chunk * k; /* per query */
    size_t off = 0;
#define TAKE(n) (off += cp_dev_align(n), off - cp_dev_align(n))
    const size_t oq32 = TAKE((size_t)(qb * d) * 4), oq = TAKE((size_t)(qb * d) * es), oS = TAKE((size_t)(qb * nt) * 4),
                 ocs = TAKE((size_t)(qb * ncand) * 4), ocr = TAKE((size_t)(qb * ncand) * 4),
                 oD = TAKE((size_t)(qb * k) * 4), oR = TAKE((size_t)(qb * k) * 4);
#undef TAKE
    CP_CHECK(cp_dev_arena_reserve(&c->c, off, (size_t)(qb * k) * 4));
    unsigned char *a = c->c.arena;
    float *q32 = (float *)(a + oq32), *S = (float *)(a + oS), *cs = (float *)(a + ocs), *dD = (float *)(a + oD);
    void *qd = dt == CP_DEVICE_FLOAT32 ? (void *)q32 : (void *)(a + oq);
    int32_t *cr = (int32_t *)(a + ocr), *dR = (int32_t *)(a + oR), *hR = (int32_t *)c->c.host;
    void *s = c->c.stream;
    if (dt == CP_DEVICE_FLOAT16) CP_CHECK(cp_dev_check_f16(q, nq, d)); /* before anything is enqueued */
    for (int64_t q0 = 0; q0 < nq; q0 += qb) {
        const int64_t m = nq - q0 < qb ? nq - q0 : qb;
        CP_CHECK(cp_cuda_memcpy_h2d(q32, q + q0 * d, (size_t)(m * d) * sizeof(float), s));
        if (dt != CP_DEVICE_FLOAT32) CP_CHECK(cp_cuda_convert(q32, qd, (int)dt, m * d, s));
        for (int64_t t0 = 0; t0 < N; t0 += nt) {
            const int64_t ncols = N - t0 < nt ? N - t0 : nt;
            const void *X = (const unsigned char *)c->rows + (size_t)t0 * (size_t)d * es;
            CP_CHECK(cp_cuda_gemm(c->c.blas, (int)dt, CP_DEVICE_FLOAT32, qd, d, m, d, X, 0, ncols, S, ncols, 0.0f));
            CP_CHECK(cp_cuda_topk_chunks(S, m, ncols, ncols, t0, chunk, k, cs, cr, ncand, t0 / chunk, s));
        }
        CP_CHECK(cp_cuda_topk_merge(cs, cr, m, ncand, ncand, k, dD, dR, s));
        CP_CHECK(cp_cuda_memcpy_d2h(D + q0 * k, dD, (size_t)(m * k) * sizeof(float), s));
        CP_CHECK(cp_cuda_memcpy_d2h(hR, dR, (size_t)(m * k) * sizeof(int32_t), s));
        CP_CHECK(cp_cuda_stream_sync(s));
        for (int64_t i = 0; i < m * k; i++) I[q0 * k + i] = hR[i] >= 0 && hR[i] < N ? c->ids[hR[i]] : -1;
    }
    return CP_OK;
}

int cp_index_cuda_search(cp_index_cuda *c, cp_index *ix, const float *q, int64_t nq, int64_t k, float *D,
                         int64_t *I) {
    if (k < 1) CP_FAIL(CP_ERR_INVALID_ARG, "search: k must be >= 1, got %lld", (long long)k);
    if (k > CP_CUDA_TOPK_MAX)
        CP_FAIL(CP_ERR_INVALID_ARG, "device search takes k <= %d, got %lld", CP_CUDA_TOPK_MAX, (long long)k);
    if (nq <= 0) return CP_OK;
    CP_CHECK(check_finite(q, nq * cp_index_dim(ix)));
    pthread_mutex_lock(&c->c.lock);
    int rc = search_locked(c, ix, q, nq, k, D, I);
    pthread_mutex_unlock(&c->c.lock);
    return rc;
}

#else /* !CP_WITH_CUDA */

struct cp_index_cuda {
    int unused;
};

int64_t cp_index_cuda_max_k(void) { return 0; }
int cp_index_cuda_create(int device, cp_index_cuda **out) {
    (void)device;
    *out = NULL;
    CP_FAIL(CP_ERR_DEVICE, "this build of clipprompt has no CUDA backend (built without nvcc or with CLIPPROMPT_CUDA=0)");
}
void cp_index_cuda_free(cp_index_cuda *c) { (void)c; }
void cp_index_cuda_set_knobs(cp_index_cuda *c, size_t tile_bytes, int64_t chunk) { (void)c, (void)tile_bytes, (void)chunk; }
size_t cp_index_cuda_bytes(const cp_index_cuda *c) { (void)c; return 0; }
int cp_index_cuda_search(cp_index_cuda *c, cp_index *ix, const float *q, int64_t nq, int64_t k, float *D,
                         int64_t *I) {
    (void)c, (void)ix, (void)q, (void)nq, (void)k, (void)D, (void)I;
    CP_FAIL(CP_ERR_DEVICE, "no CUDA backend in this build");
}

#endif
