/* cp_index.c — FlatIPIndex: storage, id map, the two search paths (GEMM tiles / split database), files.
 * See cp_index.h for the contract. */
#define _GNU_SOURCE
#include "store/cp_index.h"

#include "base/cp_common.h"
#include "base/cp_persist.h"
#include "base/cp_strmap.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define DEFAULT_BLOCK 2048
#define DEFAULT_QBLOCK 1024
#define DEFAULT_SMALL_NQ 32
#define MAX_PARTS 4096

struct cp_index {
    pthread_rwlock_t lock;
    int64_t dim;
    int dtype;
    size_t elem;      /* 4 or 2 bytes per stored value */
    int64_t ntotal;
    int64_t cap;      /* rows allocated */
    void *data;       /* (cap, dim) float or uint16 */
    int64_t *ids;     /* (cap) */
    int64_t next_id;
    uint64_t generation; /* bumped by every removal and reset (device mirrors re-sync; appends do not bump it) */
    cp_strmap *idmap; /* id -> row (int64 keys); NULL until the first add and after reset */
    /* knobs */
    int64_t block, qblock, small_nq;
    int mode;
};

/* ---- float16 ---------------------------------------------------------------------------------------- */

#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) static void f16_block_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = cp_f16_to_f32(src[i]);
}
#endif

static void f16_block(const uint16_t *src, float *dst, size_t n) {
#if defined(__x86_64__)
    static int have = -1; /* benign race: every thread computes the same value */
    if (have < 0) have = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    if (have) {
        f16_block_f16c(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = cp_f16_to_f32(src[i]);
}

/* ---- the score kernel -------------------------------------------------------------------------------
 *
 * score(q, x) = <q, x> is computed in ONE fixed order, whatever the batch, the path, the blocking, the thread or the
 * number of threads, so a search is deterministic bit for bit (the BLAS GEMM this replaced summed in an order that
 * moved with the matrix sizes and its thread count):
 *   AVX2+FMA:  lane l (0..7) accumulates fma(q[t], x[t], .) over t = l, l+8, ... below d8 = d & ~7, in increasing t;
 *              the 8 lanes are added in one fixed tree (hsum8); then t = d8 .. d-1 are fma'd in order.
 *   otherwise: the same 8-lane structure in scalar code (multiply, then add: no fused operations).
 * float16 rows are widened exactly (f16 -> f32) before the same arithmetic. Which of the two is used depends only on
 * the CPU, never on the call.
 * The register tile is 4 queries x 2 rows: 8 independent accumulators hide the FMA latency, and each 8-float step
 * loads 4 query + 2 row vectors for 8 FMAs. Edge tiles (fewer queries, one row) run the same per-pair sequence. */

#define ROW_TILE 64 /* rows scored at a time: (ROW_TILE x d) stays in L2 while every query group passes over it */

static inline float row_value(const void *x, int64_t t, int f16) {
    return f16 ? cp_f16_to_f32(((const uint16_t *)x)[t]) : ((const float *)x)[t];
}

/* scores[j * lds + r] = score(q_j, x_r), j < nq, r < nr; rows `rowbytes` apart. */
static void scores_generic(const float *q, int64_t nq, const char *x, size_t rowbytes, int f16, int64_t nr,
                           int64_t d, float *scores, int64_t lds) {
    const int64_t d8 = d & ~(int64_t)7;
    for (int64_t j = 0; j < nq; j++) {
        const float *qj = q + j * d;
        for (int64_t r = 0; r < nr; r++) {
            const void *xr = x + (size_t)r * rowbytes;
            float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t t = 0; t < d8; t += 8)
                for (int l = 0; l < 8; l++) a[l] += qj[t + l] * row_value(xr, t + l, f16);
            float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); /* hsum8's tree */
            for (int64_t t = d8; t < d; t++) s += qj[t] * row_value(xr, t, f16);
            scores[j * lds + r] = s;
        }
    }
}

#if defined(__x86_64__)
#define CP_AVX2 __attribute__((target("avx2,fma,f16c")))
#define CP_INLINE inline __attribute__((always_inline))

/* ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)) */
static CP_INLINE CP_AVX2 float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

static CP_INLINE CP_AVX2 __m256 row8(const void *x, int64_t t, int f16) {
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)x + t)))
               : _mm256_loadu_ps((const float *)x + t);
}

static CP_INLINE CP_AVX2 float fma1(float a, float b, float c) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

/* One MQ x NR tile (MQ <= 4, NR <= 2, f16: compile-time constants after inlining). `pf`: the rows after this tile's,
 * prefetched as it goes: two rows read side by side are two short streams the hardware prefetcher follows poorly
 * (measured: nq = 1 ran at half the speed of a one-row loop without it). */
static CP_INLINE CP_AVX2 void tile(const float *q, int64_t d, const void *x0, const void *x1, const char *pf,
                                   float *s, int64_t lds, const int MQ, const int NR, const int f16) {
    __m256 acc[4][2];
    for (int j = 0; j < MQ; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    const int64_t d8 = d & ~(int64_t)7;
    const int64_t span = (int64_t)NR * d * (f16 ? 2 : 4); /* bytes of the next NR rows (contiguous) */
    for (int64_t t = 0; t < d8; t += 8) {
        const int64_t at = (t * (f16 ? 2 : 4)) * NR; /* one step reads NR * 8 values: that many bytes ahead */
        if (pf && at < span) _mm_prefetch(pf + at, _MM_HINT_T0);
        __m256 xa = row8(x0, t, f16), xb = NR > 1 ? row8(x1, t, f16) : xa;
        /* keep the loaded vectors in registers: folded into every FMA as memory operands they would be loaded MQ
         * (or NR) times per step, and the kernel would be bound by loads instead of FMAs */
        __asm__("" : "+x"(xa), "+x"(xb));
        for (int j = 0; j < MQ; j++) {
            __m256 qv = _mm256_loadu_ps(q + j * d + t);
            __asm__("" : "+x"(qv));
            acc[j][0] = _mm256_fmadd_ps(qv, xa, acc[j][0]);
            if (NR > 1) acc[j][1] = _mm256_fmadd_ps(qv, xb, acc[j][1]);
        }
    }
    for (int j = 0; j < MQ; j++)
        for (int r = 0; r < NR; r++) {
            const void *xr = r ? x1 : x0;
            float v = hsum8(acc[j][r]);
            for (int64_t t = d8; t < d; t++) v = fma1(q[j * d + t], row_value(xr, t, f16), v);
            s[j * lds + r] = v;
        }
}

static CP_INLINE CP_AVX2 void scores_avx2_impl(const float *q, int64_t nq, const char *x, size_t rowbytes, int64_t nr,
                                               int64_t d, float *s, int64_t lds, const int f16) {
    for (int64_t j = 0; j < nq; j += 4) {
        const float *qj = q + j * d;
        float *sj = s + j * lds;
        const int64_t mq = nq - j < 4 ? nq - j : 4;
        int64_t r = 0;
        for (; r + 2 <= nr; r += 2) {
            const char *xa = x + (size_t)r * rowbytes, *xb = xa + rowbytes;
            const char *pf = r + 4 <= nr ? xb + rowbytes : NULL; /* rows r+2, r+3 */
            switch (mq) {
            case 4: tile(qj, d, xa, xb, pf, sj + r, lds, 4, 2, f16); break;
            case 3: tile(qj, d, xa, xb, pf, sj + r, lds, 3, 2, f16); break;
            case 2: tile(qj, d, xa, xb, pf, sj + r, lds, 2, 2, f16); break;
            default: tile(qj, d, xa, xb, pf, sj + r, lds, 1, 2, f16); break;
            }
        }
        if (r < nr) {
            const char *xa = x + (size_t)r * rowbytes;
            switch (mq) {
            case 4: tile(qj, d, xa, xa, NULL, sj + r, lds, 4, 1, f16); break;
            case 3: tile(qj, d, xa, xa, NULL, sj + r, lds, 3, 1, f16); break;
            case 2: tile(qj, d, xa, xa, NULL, sj + r, lds, 2, 1, f16); break;
            default: tile(qj, d, xa, xa, NULL, sj + r, lds, 1, 1, f16); break;
            }
        }
    }
}

static CP_AVX2 void scores_avx2_f32(const float *q, int64_t nq, const char *x, size_t rowbytes, int64_t nr, int64_t d,
                                    float *s, int64_t lds) {
    scores_avx2_impl(q, nq, x, rowbytes, nr, d, s, lds, 0);
}
static CP_AVX2 void scores_avx2_f16(const float *q, int64_t nq, const char *x, size_t rowbytes, int64_t nr, int64_t d,
                                    float *s, int64_t lds) {
    scores_avx2_impl(q, nq, x, rowbytes, nr, d, s, lds, 1);
}
#endif

static int have_avx2_fma_f16c(void) {
#if defined(__x86_64__)
    static int have = -1; /* benign race: every thread computes the same value */
    if (have < 0)
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    return have;
#else
    return 0;
#endif
}

/* scores[j * lds + r] = score(q_j, row r0 + r) for j < nq, r < nr. */
static void score_rows(const cp_index *ix, const float *q, int64_t nq, int64_t r0, int64_t nr, float *scores,
                       int64_t lds) {
    const int64_t d = ix->dim;
    const int f16 = ix->dtype == CP_INDEX_FLOAT16;
    const size_t rowbytes = (size_t)d * ix->elem;
    const char *x = (const char *)ix->data + (size_t)r0 * rowbytes;
#if defined(__x86_64__)
    if (have_avx2_fma_f16c()) {
        (f16 ? scores_avx2_f16 : scores_avx2_f32)(q, nq, x, rowbytes, nr, d, scores, lds);
        return;
    }
#endif
    scores_generic(q, nq, x, rowbytes, f16, nr, d, scores, lds);
}

/* ---- top-k heaps ------------------------------------------------------------------------------------ */

typedef struct {
    float s;
    int64_t row;
} hit;

/* a is worse than b: lower score, or equal score and a later row (earlier rows win ties) */
static inline int worse(hit a, hit b) { return a.s < b.s || (a.s == b.s && a.row > b.row); }

/* A min-heap on "worse" (root = the worst kept) of capacity k; *n = current size. */
static inline void heap_push(hit *h, int64_t *n, int64_t k, hit x) {
    if (*n < k) {
        int64_t i = (*n)++;
        while (i > 0) {
            int64_t p = (i - 1) / 2;
            if (!worse(x, h[p])) break;
            h[i] = h[p];
            i = p;
        }
        h[i] = x;
        return;
    }
    if (!worse(h[0], x)) return;
    int64_t i = 0; /* replace the root, sift down */
    for (;;) {
        int64_t l = 2 * i + 1;
        if (l >= k) break;
        int64_t m = (l + 1 < k && worse(h[l + 1], h[l])) ? l + 1 : l;
        if (!worse(h[m], x)) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = x;
}

/* Scores of one row block for one query into its heap; the threshold test skips most rows. */
static inline void heap_scan(hit *h, int64_t *n, int64_t k, const float *s, int64_t nr, int64_t row0) {
    int64_t r = 0;
    for (; r < nr && *n < k; r++) heap_push(h, n, k, (hit){s[r], row0 + r});
    for (; r < nr; r++)
        if (s[r] >= h[0].s) heap_push(h, n, k, (hit){s[r], row0 + r});
}

static int hit_cmp_best_first(const void *a, const void *b) {
    hit x = *(const hit *)a, y = *(const hit *)b;
    if (worse(y, x)) return -1;
    if (worse(x, y)) return 1;
    return 0;
}

/* Sort a heap best first and write D/I rows (padding to k). */
static void emit(const cp_index *ix, hit *h, int64_t n, int64_t k, float *D, int64_t *I) {
    qsort(h, (size_t)n, sizeof *h, hit_cmp_best_first);
    for (int64_t i = 0; i < n; i++) D[i] = h[i].s, I[i] = ix->ids[h[i].row];
    for (int64_t i = n; i < k; i++) D[i] = -INFINITY, I[i] = -1;
}

/* ---- id map (base/cp_strmap.h) ------------------------------------------------------------------------ */

static inline int64_t map_find(const cp_index *ix, int64_t id) {
    int64_t row;
    return ix->idmap && cp_strmap_get_int(ix->idmap, id, &row) ? row : -1;
}

/* Refill the map from ids[0, ntotal) after rows moved. The map already holds room for them: cannot fail. */
static void map_refill(cp_index *ix) {
    cp_strmap_clear(ix->idmap);
    for (int64_t i = 0; i < ix->ntotal; i++) (void)cp_strmap_put_int(ix->idmap, ix->ids[i], i);
}

/* ---- lifecycle -------------------------------------------------------------------------------------- */

int cp_index_create(cp_index **out, int64_t dim, int dtype) {
    *out = NULL;
    if (dim < 1 || dim > (1 << 24))
        CP_FAIL(CP_ERR_INVALID_ARG, "dim must be in 1..%d, got %lld", 1 << 24, (long long)dim);
    if (dtype != CP_INDEX_FLOAT32 && dtype != CP_INDEX_FLOAT16)
        CP_FAIL(CP_ERR_INVALID_ARG, "unknown index dtype %d", dtype);
    cp_index *ix = calloc(1, sizeof *ix);
    if (!ix) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    pthread_rwlock_init(&ix->lock, NULL);
    ix->dim = dim, ix->dtype = dtype, ix->elem = dtype == CP_INDEX_FLOAT16 ? 2 : 4;
    ix->block = DEFAULT_BLOCK, ix->qblock = DEFAULT_QBLOCK, ix->small_nq = DEFAULT_SMALL_NQ;
    *out = ix;
    return CP_OK;
}

void cp_index_free(cp_index *ix) {
    if (!ix) return;
    cp_free_aligned(ix->data);
    free(ix->ids);
    cp_strmap_free(ix->idmap);
    pthread_rwlock_destroy(&ix->lock);
    free(ix);
}

int64_t cp_index_dim(const cp_index *ix) { return ix->dim; }
int cp_index_dtype(const cp_index *ix) { return ix->dtype; }

int64_t cp_index_ntotal(cp_index *ix) {
    pthread_rwlock_rdlock(&ix->lock);
    int64_t n = ix->ntotal;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

uint64_t cp_index_memory_bytes(cp_index *ix) {
    pthread_rwlock_rdlock(&ix->lock);
    uint64_t b = (uint64_t)ix->cap * ((uint64_t)ix->dim * ix->elem + 8) + (ix->idmap ? cp_strmap_memory_bytes(ix->idmap) : 0);
    pthread_rwlock_unlock(&ix->lock);
    return b;
}

void cp_index_set_knobs(cp_index *ix, int64_t block_size, int64_t query_block, int mode, int64_t small_nq) {
    pthread_rwlock_wrlock(&ix->lock);
    ix->block = block_size > 0 ? block_size : DEFAULT_BLOCK;
    ix->qblock = query_block > 0 ? query_block : DEFAULT_QBLOCK;
    ix->mode = (mode >= 0 && mode <= 2) ? mode : 0;
    ix->small_nq = small_nq > 0 ? small_nq : DEFAULT_SMALL_NQ;
    pthread_rwlock_unlock(&ix->lock);
}

/* ---- add / remove ----------------------------------------------------------------------------------- */

/* Branch-free scan (vectorises) first; the slow loop that names the bad element runs only on failure. */
static int check_finite(const float *x, int64_t n, int64_t d, const char *what, int f16, cp_batch_status *status) {
    const uint32_t *b = (const uint32_t *)x;
    const uint32_t lim = f16 ? 0x477fe000u /* 65504 */ : 0x7f7fffffu /* FLT_MAX */;
    uint32_t bad = 0;
    for (int64_t i = 0; i < n * d; i++) bad |= (b[i] & 0x7fffffffu) > lim;
    if (!bad) return CP_OK;
    for (int64_t i = 0; i < n * d; i++) {
        if (!isfinite(x[i]))
            return cp_batch_fail(status, (size_t)(i / d), CP_ERR_INVALID_ARG,
                                 "%s row %lld, column %lld is %s; vectors must be finite", what, (long long)(i / d),
                                 (long long)(i % d), isnan(x[i]) ? "NaN" : "inf");
        if (f16 && fabsf(x[i]) > 65504.0f)
            return cp_batch_fail(status, (size_t)(i / d), CP_ERR_INVALID_ARG,
                                 "%s row %lld, column %lld is %g, outside the float16 range (|x| <= 65504)", what,
                                 (long long)(i / d), (long long)(i % d), (double)x[i]);
    }
    return CP_OK;
}

#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) static void f32_to_f16_block_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = cp_f32_to_f16(src[i]);
}
#endif

static void f32_to_f16_block(const float *src, uint16_t *dst, size_t n) {
#if defined(__x86_64__)
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    if (have) {
        f32_to_f16_block_f16c(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = cp_f32_to_f16(src[i]);
}

static int add_locked(cp_index *ix, const float *x, int64_t n, const int64_t *ids, cp_batch_status *st) {
    const int64_t d = ix->dim;
    CP_CHECK(check_finite(x, n, d, "add: vector", ix->dtype == CP_INDEX_FLOAT16, st));
    int64_t maxid = ix->next_id - 1;
    if (ids) {
        for (int64_t i = 0; i < n; i++) {
            if (ids[i] < 0)
                return cp_batch_fail(st, (size_t)i, CP_ERR_INVALID_ARG, "add: ids must be >= 0 (ids[%lld] = %lld)",
                                     (long long)i, (long long)ids[i]);
            if (map_find(ix, ids[i]) >= 0)
                return cp_batch_fail(st, (size_t)i, CP_ERR_INVALID_ARG, "add: id %lld is already in the index",
                                     (long long)ids[i]);
            if (ids[i] > maxid) maxid = ids[i];
        }
    } else if (ix->next_id > INT64_MAX - n) {
        return cp_batch_fail(st, CP_BATCH_NO_INDEX, CP_ERR_INVALID_ARG, "add: id space exhausted");
    }
    int64_t need = ix->ntotal + n;
    if (need > ix->cap) {
        int64_t cap = ix->cap + ix->cap / 2;
        if (cap < need) cap = need;
        if (cap < 256) cap = 256;
        size_t bytes;
        if (cp_mul_size((size_t)cap, (size_t)d * ix->elem, &bytes) != CP_OK)
            return cp_batch_fail(st, CP_BATCH_NO_INDEX, CP_ERR_NOMEM, "add: index too large");
        void *nd = cp_malloc_aligned(bytes);
        int64_t *ni = malloc((size_t)cap * sizeof *ni);
        if (!nd || !ni) {
            cp_free_aligned(nd), free(ni);
            return cp_batch_fail(st, CP_BATCH_NO_INDEX, CP_ERR_NOMEM,
                                 "add: out of memory growing to %lld rows (%zu bytes)", (long long)cap, bytes);
        }
        if (ix->ntotal) {
            memcpy(nd, ix->data, (size_t)ix->ntotal * d * ix->elem);
            memcpy(ni, ix->ids, (size_t)ix->ntotal * sizeof *ni);
        }
        cp_free_aligned(ix->data), free(ix->ids);
        ix->data = nd, ix->ids = ni, ix->cap = cap;
    }
    /* the map: make room first (the only step that can fail), then the inserts cannot fail, and the batch's own
     * duplicates are found before anything changes for good */
    int rc = ix->idmap ? CP_OK : cp_strmap_create(&ix->idmap, CP_STRMAP_INT64, (size_t)need);
    if (rc == CP_OK) rc = cp_strmap_reserve(ix->idmap, (size_t)(need + need / 2));
    if (rc != CP_OK) {
        if (st) st->index = CP_BATCH_NO_INDEX, st->code = rc;
        return rc;
    }
    int64_t base = ix->ntotal;
    for (int64_t i = 0; i < n; i++) {
        int64_t id = ids ? ids[i] : ix->next_id + i;
        if (ids && map_find(ix, id) >= 0) { /* a repeat inside this batch: undo the inserts so far */
            for (int64_t u = 0; u < i; u++) cp_strmap_remove_int(ix->idmap, ids[u]);
            return cp_batch_fail(st, (size_t)i, CP_ERR_INVALID_ARG, "add: id %lld appears twice in ids",
                                 (long long)id);
        }
        (void)cp_strmap_put_int(ix->idmap, id, base + i);
        ix->ids[base + i] = id;
    }
    if (ix->dtype == CP_INDEX_FLOAT32) {
        memcpy((float *)ix->data + base * d, x, (size_t)n * d * 4);
    } else {
        f32_to_f16_block(x, (uint16_t *)ix->data + base * d, (size_t)(n * d));
    }
    ix->ntotal = need;
    ix->next_id = ids ? maxid + 1 : ix->next_id + n;
    return CP_OK;
}

int cp_index_add(cp_index *ix, const float *x, int64_t n, const int64_t *ids, cp_batch_status *status) {
    cp_batch_status_clear(status);
    if (n < 0) return cp_batch_fail(status, CP_BATCH_NO_INDEX, CP_ERR_INVALID_ARG, "add: n < 0");
    if (n == 0) return CP_OK;
    pthread_rwlock_wrlock(&ix->lock);
    int rc = add_locked(ix, x, n, ids, status);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

int cp_index_remove_ids(cp_index *ix, const int64_t *ids, int64_t n, int64_t *removed) {
    *removed = 0;
    pthread_rwlock_wrlock(&ix->lock);
    unsigned char *gone = ix->ntotal ? calloc((size_t)ix->ntotal, 1) : NULL;
    if (ix->ntotal && !gone) {
        pthread_rwlock_unlock(&ix->lock);
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    }
    int64_t cnt = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t row = map_find(ix, ids[i]);
        if (row >= 0 && !gone[row]) gone[row] = 1, cnt++;
    }
    int rc = CP_OK;
    if (cnt) {
        const size_t rb = (size_t)ix->dim * ix->elem;
        int64_t w = 0;
        for (int64_t r = 0; r < ix->ntotal; r++) {
            if (gone[r]) continue;
            if (w != r) {
                memcpy((char *)ix->data + (size_t)w * rb, (char *)ix->data + (size_t)r * rb, rb);
                ix->ids[w] = ix->ids[r];
            }
            w++;
        }
        ix->ntotal = w;
        ix->generation++;
        map_refill(ix); /* fewer ids than the map holds room for: cannot fail */
    }
    free(gone);
    pthread_rwlock_unlock(&ix->lock);
    *removed = cnt;
    return rc;
}

void cp_index_reset(cp_index *ix) {
    pthread_rwlock_wrlock(&ix->lock);
    cp_free_aligned(ix->data), free(ix->ids);
    cp_strmap_free(ix->idmap);
    ix->data = NULL, ix->ids = NULL, ix->idmap = NULL;
    ix->ntotal = ix->cap = 0, ix->next_id = 0;
    ix->generation++;
    pthread_rwlock_unlock(&ix->lock);
}

int cp_index_read_rows(cp_index *ix, int64_t r0, int64_t n, float *out, int64_t *ids, int64_t *ntotal,
                       uint64_t *generation) {
    pthread_rwlock_rdlock(&ix->lock);
    if (ntotal) *ntotal = ix->ntotal;
    if (generation) *generation = ix->generation;
    if (r0 < 0 || n < 0 || r0 + n > ix->ntotal) {
        const long long nt = (long long)ix->ntotal;
        pthread_rwlock_unlock(&ix->lock);
        CP_FAIL(CP_ERR_INVALID_ARG, "read_rows: rows %lld..%lld outside 0..%lld", (long long)r0, (long long)(r0 + n),
                nt);
    }
    if (out) {
        if (ix->dtype == CP_INDEX_FLOAT32)
            memcpy(out, (const float *)ix->data + r0 * ix->dim, (size_t)(n * ix->dim) * sizeof(float));
        else
            f16_block((const uint16_t *)ix->data + r0 * ix->dim, out, (size_t)(n * ix->dim));
    }
    if (ids) memcpy(ids, ix->ids + r0, (size_t)n * sizeof(int64_t));
    pthread_rwlock_unlock(&ix->lock);
    return CP_OK;
}

int cp_index_reconstruct(cp_index *ix, int64_t id, float *out) {
    pthread_rwlock_rdlock(&ix->lock);
    int64_t row = map_find(ix, id);
    if (row < 0) {
        pthread_rwlock_unlock(&ix->lock);
        CP_FAIL(CP_ERR_INDEX_STATE, "reconstruct: id %lld is not in the index", (long long)id);
    }
    if (ix->dtype == CP_INDEX_FLOAT32) memcpy(out, (float *)ix->data + row * ix->dim, (size_t)ix->dim * 4);
    else f16_block((uint16_t *)ix->data + row * ix->dim, out, (size_t)ix->dim);
    pthread_rwlock_unlock(&ix->lock);
    return CP_OK;
}

int cp_index_get_ids(cp_index *ix, int64_t *out, int64_t cap, int64_t *n) {
    pthread_rwlock_rdlock(&ix->lock);
    int64_t m = ix->ntotal < cap ? ix->ntotal : cap;
    if (m) memcpy(out, ix->ids, (size_t)m * sizeof *out);
    *n = m;
    pthread_rwlock_unlock(&ix->lock);
    return CP_OK;
}

/* ---- search -----------------------------------------------------------------------------------------
 *
 * One driver for every nq: the database is cut into parts searched in parallel (OpenMP, dynamic), each part
 * scores ROW_TILE rows at a time against a block of queries and keeps a top-k heap per (part, query); the parts'
 * heaps are then merged per query. Few queries (nq < small_nq, or mode "split"): parts of `block` rows, many of
 * them, for balance. Many queries (mode "gemm", the name kept from the BLAS path): a few large parts, so each
 * thread streams its rows once per query block. Scores never depend on any of this (see the kernel above), and the
 * top-k of (score, row) with earlier rows winning ties is unique, so every split gives the same answer. */

static int search_block(const cp_index *ix, const float *q, int64_t nq, int64_t k, int64_t keff, int64_t part,
                        float *D, int64_t *I) {
    const int64_t n = ix->ntotal;
    const int64_t nparts = (n + part - 1) / part;
    /* a part holds at most `part` rows, so its heaps need no more: total <= nq * n entries even when k ~ n */
    const int64_t kp = keff < part ? keff : part;
    hit *heaps = malloc((size_t)nparts * nq * kp * sizeof *heaps);
    int64_t *sizes = calloc((size_t)(nparts * nq), sizeof *sizes);
    if (!heaps || !sizes) {
        free(heaps), free(sizes);
        CP_FAIL(CP_ERR_NOMEM, "search: out of memory for %lld x %lld heaps", (long long)nparts, (long long)nq);
    }
    int nth = cp_get_num_threads();
    if (nth > nparts) nth = (int)nparts;
    int failed = 0;
#pragma omp parallel num_threads(nth)
    {
        float *scores = malloc((size_t)nq * ROW_TILE * sizeof *scores);
        if (!scores) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < nparts; p++) {
            if (!scores) continue;
            hit *hp = heaps + p * nq * kp;
            int64_t *sz = sizes + p * nq;
            const int64_t lo = p * part, hi = lo + part < n ? lo + part : n;
            for (int64_t r0 = lo; r0 < hi; r0 += ROW_TILE) {
                const int64_t nr = hi - r0 < ROW_TILE ? hi - r0 : ROW_TILE;
                score_rows(ix, q, nq, r0, nr, scores, ROW_TILE);
                for (int64_t j = 0; j < nq; j++) heap_scan(hp + j * kp, &sz[j], kp, scores + j * ROW_TILE, nr, r0);
            }
        }
        free(scores);
    }
    if (!failed) {
        /* merge: fold every part's heap for query j into one of size keff */
#pragma omp parallel num_threads(nth) if (nq >= 64)
        {
            hit *fin = malloc((size_t)keff * sizeof *fin);
            if (!fin) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int64_t j = 0; j < nq; j++) {
                if (!fin) continue;
                int64_t nf = 0;
                for (int64_t p = 0; p < nparts; p++) {
                    const hit *hp = heaps + (p * nq + j) * kp;
                    for (int64_t t = 0; t < sizes[p * nq + j]; t++) heap_push(fin, &nf, keff, hp[t]);
                }
                emit(ix, fin, nf, k, D + j * k, I + j * k);
            }
            free(fin);
        }
    }
    free(heaps), free(sizes);
    if (failed) CP_FAIL(CP_ERR_NOMEM, "search: out of memory");
    return CP_OK;
}

static int search_locked(const cp_index *ix, const float *q, int64_t nq, int64_t k, float *D, int64_t *I) {
    const int64_t n = ix->ntotal, d = ix->dim;
    const int64_t keff = k < n ? k : n;
    const int nth = cp_get_num_threads();
    const int few = ix->mode == CP_INDEX_SEARCH_SPLIT || (ix->mode == CP_INDEX_SEARCH_AUTO && nq < ix->small_nq);
    int64_t part = ix->block;
    if (!few) {
        const int64_t big = (n + 4 * (int64_t)nth - 1) / (4 * (int64_t)nth); /* ~4 parts per thread */
        if (big > part) part = big;
    }
    if ((n + part - 1) / part > MAX_PARTS) part = (n + MAX_PARTS - 1) / MAX_PARTS;
    const int64_t nparts = (n + part - 1) / part, kp = keff < part ? keff : part;
    /* query blocks: at most qblock queries, and the heaps of one block within ~256 MiB when k is very large */
    int64_t bq = few ? nq : (ix->qblock < nq ? ix->qblock : nq);
    const int64_t heap_budget = ((int64_t)256 << 20) / (int64_t)sizeof(hit);
    if (bq > 1 && nparts * bq * kp > heap_budget) bq = heap_budget / (nparts * kp) > 0 ? heap_budget / (nparts * kp) : 1;
    for (int64_t q0 = 0; q0 < nq; q0 += bq) {
        const int64_t nqb = nq - q0 < bq ? nq - q0 : bq;
        CP_CHECK(search_block(ix, q + q0 * d, nqb, k, keff, part, D + q0 * k, I + q0 * k));
    }
    return CP_OK;
}

int cp_index_search(cp_index *ix, const float *q, int64_t nq, int64_t k, float *D, int64_t *I,
                    cp_batch_status *status) {
    cp_batch_status_clear(status);
    if (k < 1) return cp_batch_fail(status, CP_BATCH_NO_INDEX, CP_ERR_INVALID_ARG, "search: k must be >= 1, got %lld", (long long)k);
    if (nq < 0) return cp_batch_fail(status, CP_BATCH_NO_INDEX, CP_ERR_INVALID_ARG, "search: nq < 0");
    CP_CHECK(check_finite(q, nq, ix->dim, "search: query", 0, status));
    pthread_rwlock_rdlock(&ix->lock);
    int rc = CP_OK;
    if (nq == 0) {
    } else if (ix->ntotal == 0) {
        for (int64_t i = 0; i < nq * k; i++) D[i] = -INFINITY, I[i] = -1;
    } else {
        rc = search_locked(ix, q, nq, k, D, I);
    }
    pthread_rwlock_unlock(&ix->lock);
    if (rc != CP_OK && status) status->code = rc;
    return rc;
}

/* ---- files ------------------------------------------------------------------------------------------ */

static const char CP_INDEX_FOURCC[4] = {'C', 'P', 'I', 'X'};
#define CP_INDEX_FILE_VERSION 1u

int cp_index_save(cp_index *ix, const char *path) {
    pthread_rwlock_rdlock(&ix->lock);
    cp_file_writer w;
    int rc = cp_writer_open(&w, path);
    if (rc == CP_OK) {
        uint32_t h32[3] = {CP_INDEX_FILE_VERSION, (uint32_t)ix->dtype, 0};
        int64_t h64[3] = {ix->dim, ix->ntotal, ix->next_id};
        rc = cp_writer_write(&w, CP_INDEX_FOURCC, 4);
        if (rc == CP_OK) rc = cp_writer_write(&w, h32, sizeof h32);
        if (rc == CP_OK) rc = cp_writer_write(&w, h64, sizeof h64);
        if (rc == CP_OK) rc = cp_writer_write(&w, ix->ids, (size_t)ix->ntotal * 8);
        if (rc == CP_OK) rc = cp_writer_write(&w, ix->data, (size_t)ix->ntotal * ix->dim * ix->elem);
        if (rc == CP_OK) rc = cp_writer_commit(&w);
        else cp_writer_abort(&w);
    }
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

int cp_index_load(cp_index **out, const char *path) {
    cp_file_reader r;
    CP_CHECK(cp_reader_open(&r, path, "index"));
    cp_index *ix = NULL;
    char four[4];
    uint32_t h32[3];
    int64_t h64[3];
    int rc = cp_reader_read(&r, four, 4);
    if (rc == CP_OK && memcmp(four, CP_INDEX_FOURCC, 4) != 0)
        rc = cp_fail(CP_ERR_INDEX_STATE, "'%s' is not a clipprompt index file (bad magic)", path);
    if (rc == CP_OK) rc = cp_reader_read(&r, h32, sizeof h32);
    if (rc == CP_OK && h32[0] != CP_INDEX_FILE_VERSION)
        rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' has version %u; this build reads version %u", path, h32[0],
                     CP_INDEX_FILE_VERSION);
    if (rc == CP_OK) rc = cp_reader_read(&r, h64, sizeof h64);
    if (rc == CP_OK && (h32[1] > 1 || h64[0] < 1 || h64[0] > (1 << 24) || h64[1] < 0 || h64[2] < 0))
        rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is corrupt (bad header)", path);
    if (rc == CP_OK) {
        uint64_t per = 8 + (uint64_t)h64[0] * (h32[1] ? 2 : 4);
        if ((uint64_t)h64[1] > cp_reader_left(&r) / per || (uint64_t)h64[1] * per != cp_reader_left(&r))
            rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is truncated or corrupt (size does not match %lld rows)",
                         path, (long long)h64[1]);
    }
    if (rc == CP_OK) rc = cp_index_create(&ix, h64[0], (int)h32[1]);
    const int64_t n = rc == CP_OK ? h64[1] : 0;
    if (rc == CP_OK && n > 0) {
        ix->cap = n;
        ix->ids = malloc((size_t)n * 8);
        ix->data = cp_malloc_aligned((size_t)n * ix->dim * ix->elem);
        if (!ix->ids || !ix->data) rc = cp_fail(CP_ERR_NOMEM, "out of memory loading '%s'", path);
        if (rc == CP_OK) rc = cp_reader_read(&r, ix->ids, (size_t)n * 8);
        if (rc == CP_OK) rc = cp_reader_read(&r, ix->data, (size_t)n * ix->dim * ix->elem);
    }
    if (rc == CP_OK) rc = cp_reader_finish(&r);
    if (rc == CP_OK) {
        ix->ntotal = n;
        ix->next_id = h64[2];
        if (n > 0) rc = cp_strmap_create(&ix->idmap, CP_STRMAP_INT64, (size_t)n);
        for (int64_t i = 0; i < n && rc == CP_OK; i++) {
            if (ix->ids[i] < 0 || ix->ids[i] >= ix->next_id)
                rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is corrupt (id %lld)", path, (long long)ix->ids[i]);
            else
                (void)cp_strmap_put_int(ix->idmap, ix->ids[i], i); /* reserved: cannot fail */
        }
        if (rc == CP_OK && n > 0 && (int64_t)cp_strmap_size(ix->idmap) != n)
            rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is corrupt (repeated ids)", path);
        if (rc == CP_OK && ix->dtype == CP_INDEX_FLOAT32)
            rc = check_finite((const float *)ix->data, n, ix->dim, "index file row", 0, NULL) == CP_OK
                     ? CP_OK
                     : cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is corrupt (non-finite values)", path);
        if (rc == CP_OK && ix->dtype == CP_INDEX_FLOAT16) {
            /* float16 rows too: exponent bits all ones is inf or NaN, which add() never stores */
            const uint16_t *h = (const uint16_t *)ix->data;
            for (int64_t i = 0; i < n * ix->dim; i++)
                if ((h[i] & 0x7C00u) == 0x7C00u) {
                    rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is corrupt (non-finite values)", path);
                    break;
                }
        }
    }
    cp_reader_close(&r);
    if (rc != CP_OK) {
        cp_index_free(ix);
        return rc;
    }
    *out = ix;
    return CP_OK;
}
