/* cp_index.c — FlatIPIndex: storage, id map, the two search paths (GEMM tiles / split database), files.
 * See cp_index.h for the contract. */
#define _GNU_SOURCE
#include "store/cp_index.h"

#include "base/cp_common.h"
#include "base/cp_persist.h"

#include <cblas.h>
#undef I /* <complex.h>, pulled in by openblas_config.h */
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
#define SUBTILE 32 /* rows scored at a time in the split path */

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
    /* id -> row: open addressing, key -1 = empty, mask = size - 1 */
    int64_t *map_keys, *map_rows;
    uint64_t map_size;
    /* knobs */
    int64_t block, qblock, small_nq;
    int mode;
    /* bfloat16 / int8 indexes: float32 rows above (exact re-rank, files, reconstruct) plus a low-precision shadow
     * of the same rows for the memory-bound scan of the split path */
    int lowp;         /* 0, CP_INDEX_BFLOAT16 or CP_INDEX_INT8 */
    void *shadow;     /* (cap, dim) uint16 bf16 or int8 */
    float *shadow_scale; /* int8: per row */
};

/* ---- low-precision shadow rows ----------------------------------------------------------------------- */

static size_t shadow_elem(const cp_index *ix) { return ix->lowp == CP_INDEX_BFLOAT16 ? 2 : 1; }

/* rows [r0, r0 + n) of the float32 data into the shadow (bf16: nearest even; int8: max|x| / 127 per row) */
static void shadow_fill(cp_index *ix, int64_t r0, int64_t n) {
    const int64_t d = ix->dim;
    for (int64_t r = r0; r < r0 + n; r++) {
        const float *x = (const float *)ix->data + r * d;
        if (ix->lowp == CP_INDEX_BFLOAT16) {
            uint16_t *o = (uint16_t *)ix->shadow + r * d;
            for (int64_t t = 0; t < d; t++) o[t] = cp_f32_to_bf16(x[t]);
        } else {
            float mx = 0.0f;
            for (int64_t t = 0; t < d; t++) mx = fabsf(x[t]) > mx ? fabsf(x[t]) : mx;
            const float inv = mx > 0.0f ? 127.0f / mx : 0.0f;
            int8_t *o = (int8_t *)ix->shadow + r * d;
            for (int64_t t = 0; t < d; t++) o[t] = (int8_t)lrintf(x[t] * inv);
            ix->shadow_scale[r] = mx / 127.0f;
        }
    }
}

/* (Re)allocate the shadow for cap rows, keeping the first `keep` rows. */
static int shadow_reserve(cp_index *ix, int64_t cap, int64_t keep) {
    if (!ix->lowp) return CP_OK;
    void *sh = cp_malloc_aligned((size_t)cap * (size_t)ix->dim * shadow_elem(ix) + 64);
    float *sc = ix->lowp == CP_INDEX_INT8 ? malloc((size_t)cap * sizeof *sc) : NULL;
    if (!sh || (ix->lowp == CP_INDEX_INT8 && !sc)) {
        cp_free_aligned(sh), free(sc);
        CP_FAIL(CP_ERR_NOMEM, "out of memory for %lld low-precision rows", (long long)cap);
    }
    if (keep) {
        memcpy(sh, ix->shadow, (size_t)keep * (size_t)ix->dim * shadow_elem(ix));
        if (sc) memcpy(sc, ix->shadow_scale, (size_t)keep * sizeof *sc);
    }
    cp_free_aligned(ix->shadow), free(ix->shadow_scale);
    ix->shadow = sh, ix->shadow_scale = sc;
    return CP_OK;
}

/* Shadow rows [r0, r0 + nr) widened to float32 (SUBTILE rows: the widened copy stays in L1). */
static void shadow_widen(const cp_index *ix, int64_t r0, int64_t nr, float *out) {
    const int64_t d = ix->dim;
    for (int64_t r = 0; r < nr; r++) {
        float *o = out + r * d;
        if (ix->lowp == CP_INDEX_BFLOAT16) {
            const uint16_t *x = (const uint16_t *)ix->shadow + (r0 + r) * d;
            for (int64_t t = 0; t < d; t++) {
                const uint32_t u = (uint32_t)x[t] << 16;
                memcpy(o + t, &u, 4);
            }
        } else {
            const int8_t *x = (const int8_t *)ix->shadow + (r0 + r) * d;
            const float sc = ix->shadow_scale[r0 + r];
            for (int64_t t = 0; t < d; t++) o[t] = (float)x[t] * sc;
        }
    }
}

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

/* ---- dot products for the split path --------------------------------------------------------------- */

/* scores[j * ldc + r] = <q_j, x_r> for r < nr, j < nq. */
static void dots_generic(const float *q, int64_t nq, const float *x, int64_t nr, int64_t d, float *scores,
                         int64_t ldc) {
    for (int64_t r = 0; r < nr; r++) {
        const float *xr = x + r * d;
        for (int64_t j = 0; j < nq; j++) {
            const float *qj = q + j * d;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            int64_t t = 0;
            for (; t + 4 <= d; t += 4) s0 += qj[t] * xr[t], s1 += qj[t + 1] * xr[t + 1], s2 += qj[t + 2] * xr[t + 2],
                                       s3 += qj[t + 3] * xr[t + 3];
            for (; t < d; t++) s0 += qj[t] * xr[t];
            scores[j * ldc + r] = (s0 + s1) + (s2 + s3);
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

__attribute__((target("avx2,fma"))) static void dots_avx2(const float *q, int64_t nq, const float *x, int64_t nr,
                                                          int64_t d, float *scores, int64_t ldc) {
    int64_t d8 = d & ~(int64_t)7;
    for (int64_t r = 0; r < nr; r++) {
        const float *xr = x + r * d;
        int64_t j = 0;
        for (; j + 4 <= nq; j += 4) { /* one pass over the row for 4 queries */
            const float *q0 = q + j * d, *q1 = q0 + d, *q2 = q1 + d, *q3 = q2 + d;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t t = 0; t < d8; t += 8) {
                __m256 xv = _mm256_loadu_ps(xr + t);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + t), xv, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + t), xv, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q2 + t), xv, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q3 + t), xv, a3);
            }
            float s0 = hsum256(a0), s1 = hsum256(a1), s2 = hsum256(a2), s3 = hsum256(a3);
            for (int64_t t = d8; t < d; t++)
                s0 += q0[t] * xr[t], s1 += q1[t] * xr[t], s2 += q2[t] * xr[t], s3 += q3[t] * xr[t];
            scores[j * ldc + r] = s0, scores[(j + 1) * ldc + r] = s1;
            scores[(j + 2) * ldc + r] = s2, scores[(j + 3) * ldc + r] = s3;
        }
        for (; j < nq; j++) {
            const float *qj = q + j * d;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0;
            int64_t t = 0;
            for (; t + 16 <= d8; t += 16) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qj + t), _mm256_loadu_ps(xr + t), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qj + t + 8), _mm256_loadu_ps(xr + t + 8), a1);
            }
            for (; t < d8; t += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qj + t), _mm256_loadu_ps(xr + t), a0);
            float s = hsum256(_mm256_add_ps(a0, a1));
            for (; t < d; t++) s += qj[t] * xr[t];
            scores[j * ldc + r] = s;
        }
    }
}
#endif

#if defined(__x86_64__)
/* The same for float16 rows, converted in registers (no scratch round trip). */
__attribute__((target("avx2,fma,f16c"))) static void dots_f16_avx2(const float *q, int64_t nq, const uint16_t *x,
                                                                  int64_t nr, int64_t d, float *scores, int64_t ldc) {
    int64_t d8 = d & ~(int64_t)7;
    for (int64_t r = 0; r < nr; r++) {
        const uint16_t *xr = x + r * d;
        int64_t j = 0;
        for (; j + 4 <= nq; j += 4) {
            const float *q0 = q + j * d, *q1 = q0 + d, *q2 = q1 + d, *q3 = q2 + d;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t t = 0; t < d8; t += 8) {
                __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(xr + t)));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + t), xv, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + t), xv, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q2 + t), xv, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q3 + t), xv, a3);
            }
            float s0 = hsum256(a0), s1 = hsum256(a1), s2 = hsum256(a2), s3 = hsum256(a3);
            for (int64_t t = d8; t < d; t++) {
                float xf = cp_f16_to_f32(xr[t]);
                s0 += q0[t] * xf, s1 += q1[t] * xf, s2 += q2[t] * xf, s3 += q3[t] * xf;
            }
            scores[j * ldc + r] = s0, scores[(j + 1) * ldc + r] = s1;
            scores[(j + 2) * ldc + r] = s2, scores[(j + 3) * ldc + r] = s3;
        }
        for (; j < nq; j++) {
            const float *qj = q + j * d;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0;
            int64_t t = 0;
            for (; t + 16 <= d8; t += 16) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qj + t),
                                     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(xr + t))), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qj + t + 8),
                                     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(xr + t + 8))), a1);
            }
            for (; t < d8; t += 8)
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qj + t),
                                     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(xr + t))), a0);
            float s = hsum256(_mm256_add_ps(a0, a1));
            for (; t < d; t++) s += qj[t] * cp_f16_to_f32(xr[t]);
            scores[j * ldc + r] = s;
        }
    }
}
#endif

/* Scores of rows [r0, r0+nr) against all queries; `scratch` (SUBTILE x d floats) for float16 without AVX2. */
static void dots_rows(const cp_index *ix, const float *q, int64_t nq, int64_t r0, int64_t nr, float *scratch,
                      float *scores, int64_t ldc);

static void dots(const float *q, int64_t nq, const float *x, int64_t nr, int64_t d, float *scores, int64_t ldc) {
#if defined(__x86_64__)
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (have) {
        dots_avx2(q, nq, x, nr, d, scores, ldc);
        return;
    }
#endif
    dots_generic(q, nq, x, nr, d, scores, ldc);
}

static int have_avx2_f16c(void) {
#if defined(__x86_64__)
    static int have = -1;
    if (have < 0)
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    return have;
#else
    return 0;
#endif
}

static void dots_rows(const cp_index *ix, const float *q, int64_t nq, int64_t r0, int64_t nr, float *scratch,
                      float *scores, int64_t ldc) {
    const int64_t d = ix->dim;
    if (ix->lowp) {
        shadow_widen(ix, r0, nr, scratch);
        dots(q, nq, scratch, nr, d, scores, ldc);
        return;
    }
    if (ix->dtype == CP_INDEX_FLOAT32) {
        dots(q, nq, (const float *)ix->data + r0 * d, nr, d, scores, ldc);
        return;
    }
    const uint16_t *x = (const uint16_t *)ix->data + r0 * d;
#if defined(__x86_64__)
    if (have_avx2_f16c()) {
        dots_f16_avx2(q, nq, x, nr, d, scores, ldc);
        return;
    }
#endif
    f16_block(x, scratch, (size_t)(nr * d));
    dots(q, nq, scratch, nr, d, scores, ldc);
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

/* ---- id map ----------------------------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static int64_t map_find(const cp_index *ix, int64_t id) {
    if (!ix->map_size) return -1;
    uint64_t m = ix->map_size - 1, i = mix64((uint64_t)id) & m;
    while (ix->map_keys[i] != -1) {
        if (ix->map_keys[i] == id) return ix->map_rows[i];
        i = (i + 1) & m;
    }
    return -1;
}

static void map_insert(cp_index *ix, int64_t id, int64_t row) {
    uint64_t m = ix->map_size - 1, i = mix64((uint64_t)id) & m;
    while (ix->map_keys[i] != -1 && ix->map_keys[i] != id) i = (i + 1) & m;
    ix->map_keys[i] = id;
    ix->map_rows[i] = row;
}

/* Rebuild the map for rows [0, n) with room for at least `want` ids (load <= 1/2). */
static int map_rebuild(cp_index *ix, int64_t want) {
    uint64_t size = 16;
    while (size < 2 * (uint64_t)want) size *= 2;
    int64_t *k = malloc(size * sizeof *k), *r = malloc(size * sizeof *r);
    if (!k || !r) {
        free(k), free(r);
        CP_FAIL(CP_ERR_NOMEM, "out of memory for the id map (%llu slots)", (unsigned long long)size);
    }
    memset(k, 0xff, size * sizeof *k);
    free(ix->map_keys), free(ix->map_rows);
    ix->map_keys = k, ix->map_rows = r, ix->map_size = size;
    for (int64_t i = 0; i < ix->ntotal; i++) map_insert(ix, ix->ids[i], i);
    return CP_OK;
}

/* ---- lifecycle -------------------------------------------------------------------------------------- */

int cp_index_create(cp_index **out, int64_t dim, int dtype) {
    *out = NULL;
    if (dim < 1 || dim > (1 << 24))
        CP_FAIL(CP_ERR_INVALID_ARG, "dim must be in 1..%d, got %lld", 1 << 24, (long long)dim);
    if (dtype < CP_INDEX_FLOAT32 || dtype > CP_INDEX_INT8) CP_FAIL(CP_ERR_INVALID_ARG, "unknown index dtype %d", dtype);
    cp_index *ix = calloc(1, sizeof *ix);
    if (!ix) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    pthread_rwlock_init(&ix->lock, NULL);
    if (dtype >= CP_INDEX_BFLOAT16) ix->lowp = dtype, dtype = CP_INDEX_FLOAT32;
    ix->dim = dim, ix->dtype = dtype, ix->elem = dtype == CP_INDEX_FLOAT16 ? 2 : 4;
    ix->block = DEFAULT_BLOCK, ix->qblock = DEFAULT_QBLOCK, ix->small_nq = DEFAULT_SMALL_NQ;
    *out = ix;
    return CP_OK;
}

void cp_index_free(cp_index *ix) {
    if (!ix) return;
    cp_free_aligned(ix->data), cp_free_aligned(ix->shadow), free(ix->shadow_scale);
    free(ix->ids), free(ix->map_keys), free(ix->map_rows);
    pthread_rwlock_destroy(&ix->lock);
    free(ix);
}

int64_t cp_index_dim(const cp_index *ix) { return ix->dim; }
int cp_index_dtype(const cp_index *ix) { return ix->lowp ? ix->lowp : ix->dtype; }

int64_t cp_index_ntotal(cp_index *ix) {
    pthread_rwlock_rdlock(&ix->lock);
    int64_t n = ix->ntotal;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

uint64_t cp_index_memory_bytes(cp_index *ix) {
    pthread_rwlock_rdlock(&ix->lock);
    uint64_t b = (uint64_t)ix->cap * ((uint64_t)ix->dim * ix->elem + 8) + ix->map_size * 16;
    if (ix->lowp) b += (uint64_t)ix->cap * ((uint64_t)ix->dim * shadow_elem(ix) + (ix->lowp == CP_INDEX_INT8 ? 4 : 0));
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
static int check_finite(const float *x, int64_t n, int64_t d, const char *what, int f16) {
    const uint32_t *b = (const uint32_t *)x;
    const uint32_t lim = f16 ? 0x477fe000u /* 65504 */ : 0x7f7fffffu /* FLT_MAX */;
    uint32_t bad = 0;
    for (int64_t i = 0; i < n * d; i++) bad |= (b[i] & 0x7fffffffu) > lim;
    if (!bad) return CP_OK;
    for (int64_t i = 0; i < n * d; i++) {
        if (!isfinite(x[i]))
            CP_FAIL(CP_ERR_INVALID_ARG, "%s row %lld, column %lld is %s; vectors must be finite", what,
                    (long long)(i / d), (long long)(i % d), isnan(x[i]) ? "NaN" : "inf");
        if (f16 && fabsf(x[i]) > 65504.0f)
            CP_FAIL(CP_ERR_INVALID_ARG, "%s row %lld, column %lld is %g, outside the float16 range (|x| <= 65504)",
                    what, (long long)(i / d), (long long)(i % d), (double)x[i]);
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

static int add_locked(cp_index *ix, const float *x, int64_t n, const int64_t *ids) {
    const int64_t d = ix->dim;
    CP_CHECK(check_finite(x, n, d, "add: vector", ix->dtype == CP_INDEX_FLOAT16));
    int64_t maxid = ix->next_id - 1;
    if (ids) {
        for (int64_t i = 0; i < n; i++) {
            if (ids[i] < 0)
                CP_FAIL(CP_ERR_INVALID_ARG, "add: ids must be >= 0 (ids[%lld] = %lld)", (long long)i,
                        (long long)ids[i]);
            if (map_find(ix, ids[i]) >= 0)
                CP_FAIL(CP_ERR_INVALID_ARG, "add: id %lld is already in the index", (long long)ids[i]);
            if (ids[i] > maxid) maxid = ids[i];
        }
    } else if (ix->next_id > INT64_MAX - n) {
        CP_FAIL(CP_ERR_INVALID_ARG, "add: id space exhausted");
    }
    int64_t need = ix->ntotal + n;
    if (need > ix->cap) {
        int64_t cap = ix->cap + ix->cap / 2;
        if (cap < need) cap = need;
        if (cap < 256) cap = 256;
        size_t bytes;
        if (cp_mul_size((size_t)cap, (size_t)d * ix->elem, &bytes) != CP_OK)
            CP_FAIL(CP_ERR_NOMEM, "add: index too large");
        void *nd = cp_malloc_aligned(bytes);
        int64_t *ni = malloc((size_t)cap * sizeof *ni);
        if (!nd || !ni) {
            cp_free_aligned(nd), free(ni);
            CP_FAIL(CP_ERR_NOMEM, "add: out of memory growing to %lld rows (%zu bytes)", (long long)cap, bytes);
        }
        if (shadow_reserve(ix, cap, ix->ntotal) != CP_OK) {
            cp_free_aligned(nd), free(ni);
            return CP_ERR_NOMEM;
        }
        if (ix->ntotal) {
            memcpy(nd, ix->data, (size_t)ix->ntotal * d * ix->elem);
            memcpy(ni, ix->ids, (size_t)ix->ntotal * sizeof *ni);
        }
        cp_free_aligned(ix->data), free(ix->ids);
        ix->data = nd, ix->ids = ni, ix->cap = cap;
    }
    /* the map: grow first (can fail) so that the batch's own duplicates can be detected before anything changes */
    if ((uint64_t)need * 2 > ix->map_size) CP_CHECK(map_rebuild(ix, need + need / 2));
    int64_t base = ix->ntotal;
    if (ids) {
        for (int64_t i = 0; i < n; i++) {
            if (map_find(ix, ids[i]) >= 0) { /* a repeat inside this batch: undo the inserts so far */
                int64_t dup = ids[i];
                CP_CHECK(map_rebuild(ix, need));
                CP_FAIL(CP_ERR_INVALID_ARG, "add: id %lld appears twice in ids", (long long)dup);
            }
            map_insert(ix, ids[i], base + i);
        }
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t id = ids ? ids[i] : ix->next_id + i;
        ix->ids[base + i] = id;
        if (!ids) map_insert(ix, id, base + i);
    }
    if (ix->dtype == CP_INDEX_FLOAT32) {
        memcpy((float *)ix->data + base * d, x, (size_t)n * d * 4);
    } else {
        f32_to_f16_block(x, (uint16_t *)ix->data + base * d, (size_t)(n * d));
    }
    if (ix->lowp) shadow_fill(ix, base, n);
    ix->ntotal = need;
    ix->next_id = ids ? maxid + 1 : ix->next_id + n;
    return CP_OK;
}

int cp_index_add(cp_index *ix, const float *x, int64_t n, const int64_t *ids) {
    if (n < 0) CP_FAIL(CP_ERR_INVALID_ARG, "add: n < 0");
    if (n == 0) return CP_OK;
    pthread_rwlock_wrlock(&ix->lock);
    int rc = add_locked(ix, x, n, ids);
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
                if (ix->lowp) {
                    const size_t sb = (size_t)ix->dim * shadow_elem(ix);
                    memcpy((char *)ix->shadow + (size_t)w * sb, (char *)ix->shadow + (size_t)r * sb, sb);
                    if (ix->shadow_scale) ix->shadow_scale[w] = ix->shadow_scale[r];
                }
            }
            w++;
        }
        ix->ntotal = w;
        ix->generation++;
        /* rebuilding in place cannot fail for lack of a bigger table: reuse the size we have */
        memset(ix->map_keys, 0xff, ix->map_size * sizeof *ix->map_keys);
        for (int64_t i = 0; i < ix->ntotal; i++) map_insert(ix, ix->ids[i], i);
    }
    free(gone);
    pthread_rwlock_unlock(&ix->lock);
    *removed = cnt;
    return rc;
}

void cp_index_reset(cp_index *ix) {
    pthread_rwlock_wrlock(&ix->lock);
    cp_free_aligned(ix->data), free(ix->ids), free(ix->map_keys), free(ix->map_rows);
    cp_free_aligned(ix->shadow), free(ix->shadow_scale);
    ix->data = NULL, ix->ids = NULL, ix->map_keys = ix->map_rows = NULL, ix->shadow = NULL, ix->shadow_scale = NULL;
    ix->map_size = 0, ix->ntotal = ix->cap = 0, ix->next_id = 0;
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

/* ---- search ----------------------------------------------------------------------------------------- */

/* Few queries: split the database into parts (parallel), a top-k per (part, query), then merge per query. */
static int search_split(const cp_index *ix, const float *q, int64_t nq, int64_t k, int64_t keff, float *D,
                        int64_t *I) {
    const int64_t n = ix->ntotal, d = ix->dim;
    int64_t part = ix->block;
    if ((n + part - 1) / part > MAX_PARTS) part = (n + MAX_PARTS - 1) / MAX_PARTS;
    const int64_t nparts = (n + part - 1) / part;
    /* a part holds at most `part` rows, so its heaps need no more: total <= nq * n entries even when k ~ n */
    const int64_t kp = keff < part ? keff : part;
    hit *heaps = malloc((size_t)nparts * nq * kp * sizeof *heaps);
    int64_t *sizes = calloc((size_t)(nparts * nq), sizeof *sizes);
    hit *fin = malloc((size_t)keff * sizeof *fin);
    if (!heaps || !sizes || !fin) {
        free(heaps), free(sizes), free(fin);
        CP_FAIL(CP_ERR_NOMEM, "search: out of memory");
    }
    int nth = cp_get_num_threads();
    if (nth > nparts) nth = (int)nparts;
    int failed = 0;
#pragma omp parallel num_threads(nth)
    {
        float *scores = malloc((size_t)nq * SUBTILE * sizeof *scores);
        const int widen = ix->dtype == CP_INDEX_FLOAT16 || ix->lowp;
        float *scratch = widen ? malloc((size_t)SUBTILE * d * sizeof *scratch) : NULL;
        if (!scores || (widen && !scratch)) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < nparts; p++) {
            if (!scores || (widen && !scratch)) continue;
            hit *hp = heaps + p * nq * kp;
            int64_t *sz = sizes + p * nq;
            int64_t lo = p * part, hi = lo + part < n ? lo + part : n;
            for (int64_t r0 = lo; r0 < hi; r0 += SUBTILE) {
                int64_t nr = hi - r0 < SUBTILE ? hi - r0 : SUBTILE;
                dots_rows(ix, q, nq, r0, nr, scratch, scores, SUBTILE);
                for (int64_t j = 0; j < nq; j++) heap_scan(hp + j * kp, &sz[j], kp, scores + j * SUBTILE, nr, r0);
            }
        }
        free(scores), free(scratch);
    }
    if (failed) {
        free(heaps), free(sizes), free(fin);
        CP_FAIL(CP_ERR_NOMEM, "search: out of memory");
    }
    /* merge: fold every part's heap for query j into one of size keff */
    for (int64_t j = 0; j < nq; j++) {
        int64_t nf = 0;
        for (int64_t p = 0; p < nparts; p++) {
            const hit *hp = heaps + (p * nq + j) * kp;
            for (int64_t t = 0; t < sizes[p * nq + j]; t++) heap_push(fin, &nf, keff, hp[t]);
        }
        emit(ix, fin, nf, k, D + j * k, I + j * k);
    }
    free(heaps), free(sizes), free(fin);
    return CP_OK;
}

/* Many queries: for each query block, for each database tile: C = Q X^T (sgemm), then each query's heap scans its
 * row of C (parallel over queries). */
static int search_gemm(const cp_index *ix, const float *q, int64_t nq, int64_t k, int64_t keff, float *D, int64_t *I) {
    const int64_t n = ix->ntotal, d = ix->dim;
    int64_t bq = ix->qblock < nq ? ix->qblock : nq;
    /* keep the per-query heaps of one block within ~256 MiB when k is very large */
    const int64_t heap_budget = ((int64_t)256 << 20) / (int64_t)sizeof(hit);
    if (bq * keff > heap_budget) bq = heap_budget / keff > 0 ? heap_budget / keff : 1;
    const int64_t bs = ix->block < n ? ix->block : n;
    float *C = malloc((size_t)bq * bs * sizeof *C);
    float *scratch = ix->dtype == CP_INDEX_FLOAT16 ? malloc((size_t)bs * d * sizeof *scratch) : NULL;
    hit *heaps = malloc((size_t)bq * keff * sizeof *heaps);
    int64_t *sizes = malloc((size_t)bq * sizeof *sizes);
    if (!C || !heaps || !sizes || (ix->dtype == CP_INDEX_FLOAT16 && !scratch)) {
        free(C), free(scratch), free(heaps), free(sizes);
        CP_FAIL(CP_ERR_NOMEM, "search: out of memory for a %lld x %lld score tile", (long long)bq, (long long)bs);
    }
    /* OpenBLAS (pthreads) and OpenMP thread pools both spin-wait after their parallel sections; on few cores the
     * spinning of one steals the CPU from the other, so there the scans run on the calling thread (measured on 2
     * cores: 1.8 s serial vs 2.0-3.0 s with OpenMP for 1024 x 50k x 512). */
    const int nth = cp_get_num_threads() > 2 ? cp_get_num_threads() : 1;
    for (int64_t q0 = 0; q0 < nq; q0 += bq) {
        const int64_t nqb = nq - q0 < bq ? nq - q0 : bq;
        memset(sizes, 0, (size_t)nqb * sizeof *sizes);
        for (int64_t r0 = 0; r0 < n; r0 += bs) {
            const int64_t nr = n - r0 < bs ? n - r0 : bs;
            const float *x;
            if (ix->dtype == CP_INDEX_FLOAT32) {
                x = (const float *)ix->data + r0 * d;
            } else {
                const uint16_t *src = (const uint16_t *)ix->data + r0 * d;
#pragma omp parallel for num_threads(nth) schedule(static) if (nr * d > 65536)
                for (int64_t r = 0; r < nr; r++) f16_block(src + r * d, scratch + r * d, (size_t)d);
                x = scratch;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nqb, (int)nr, (int)d, 1.0f, q + q0 * d, (int)d, x,
                        (int)d, 0.0f, C, (int)nr);
#pragma omp parallel for num_threads(nth) schedule(static) if (nqb * nr > 65536)
            for (int64_t j = 0; j < nqb; j++) heap_scan(heaps + j * keff, &sizes[j], keff, C + j * nr, nr, r0);
        }
#pragma omp parallel for num_threads(nth) schedule(static) if (nqb > 64)
        for (int64_t j = 0; j < nqb; j++) emit(ix, heaps + j * keff, sizes[j], k, D + (q0 + j) * k, I + (q0 + j) * k);
    }
    free(C), free(scratch), free(heaps), free(sizes);
    return CP_OK;
}

/* bfloat16 / int8, few queries: the split scan over the shadow rows keeps RERANK_MUL * k + RERANK_ADD candidates per
 * query, which are scored again exactly on the float32 rows; the best k of those (ties: earlier row first) are the
 * result, so ids and scores match the float32 search unless a true top-k row scored below every candidate. */
#define RERANK_MUL 4
#define RERANK_ADD 32
static int search_rerank(const cp_index *ix, const float *q, int64_t nq, int64_t k, int64_t keff, float *D,
                         int64_t *I) {
    const int64_t n = ix->ntotal, d = ix->dim;
    int64_t kc = keff * RERANK_MUL + RERANK_ADD;
    if (kc > n) kc = n;
    float *cd = malloc((size_t)(nq * kc) * sizeof *cd);
    int64_t *ci = malloc((size_t)(nq * kc) * sizeof *ci);
    hit *h = malloc((size_t)(nq * keff) * sizeof *h);
    int rc = cd && ci && h ? search_split(ix, q, nq, kc, kc, cd, ci) : cp_fail(CP_ERR_NOMEM, "search: out of memory");
    for (int64_t j = 0; j < nq && rc == CP_OK; j++) {
        int64_t nh = 0;
        hit *hj = h + j * keff;
        for (int64_t c = 0; c < kc; c++) {
            const int64_t row = map_find(ix, ci[j * kc + c]);
            const float *x = (const float *)ix->data + row * d;
            float s = 0.0f;
            dots(q + j * d, 1, x, 1, d, &s, 1);
            heap_push(hj, &nh, keff, (hit){s, row});
        }
        emit(ix, hj, nh, k, D + j * k, I + j * k);
    }
    free(cd), free(ci), free(h);
    return rc;
}

int cp_index_search(cp_index *ix, const float *q, int64_t nq, int64_t k, float *D, int64_t *I) {
    if (k < 1) CP_FAIL(CP_ERR_INVALID_ARG, "search: k must be >= 1, got %lld", (long long)k);
    if (nq < 0) CP_FAIL(CP_ERR_INVALID_ARG, "search: nq < 0");
    CP_CHECK(check_finite(q, nq, ix->dim, "search: query", 0));
    pthread_rwlock_rdlock(&ix->lock);
    int rc = CP_OK;
    const int64_t keff = k < ix->ntotal ? k : ix->ntotal;
    if (nq == 0) {
    } else if (ix->ntotal == 0) {
        for (int64_t i = 0; i < nq * k; i++) D[i] = -INFINITY, I[i] = -1;
    } else {
        int split = ix->mode == CP_INDEX_SEARCH_SPLIT || (ix->mode == CP_INDEX_SEARCH_AUTO && nq < ix->small_nq);
        if (split && ix->lowp) rc = search_rerank(ix, q, nq, k, keff, D, I);
        else if (split) rc = search_split(ix, q, nq, k, keff, D, I);
        else rc = search_gemm(ix, q, nq, k, keff, D, I); /* compute-bound: float32 rows directly, exact */
    }
    pthread_rwlock_unlock(&ix->lock);
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
        uint32_t h32[3] = {CP_INDEX_FILE_VERSION, (uint32_t)ix->dtype, (uint32_t)ix->lowp}; /* rows always dtype */
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
    if (rc == CP_OK && (h32[1] > 1 || (h32[2] != 0 && (h32[1] != 0 || h32[2] < 2 || h32[2] > 3)) || h64[0] < 1 || h64[0] > (1 << 24) || h64[1] < 0 || h64[2] < 0))
        rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is corrupt (bad header)", path);
    if (rc == CP_OK) {
        uint64_t per = 8 + (uint64_t)h64[0] * (h32[1] ? 2 : 4);
        if ((uint64_t)h64[1] > cp_reader_left(&r) / per || (uint64_t)h64[1] * per != cp_reader_left(&r))
            rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is truncated or corrupt (size does not match %lld rows)",
                         path, (long long)h64[1]);
    }
    if (rc == CP_OK) rc = cp_index_create(&ix, h64[0], h32[2] ? (int)h32[2] : (int)h32[1]);
    const int64_t n = rc == CP_OK ? h64[1] : 0;
    if (rc == CP_OK && n > 0) {
        ix->cap = n;
        ix->ids = malloc((size_t)n * 8);
        ix->data = cp_malloc_aligned((size_t)n * ix->dim * ix->elem);
        if (!ix->ids || !ix->data) rc = cp_fail(CP_ERR_NOMEM, "out of memory loading '%s'", path);
        if (rc == CP_OK) rc = cp_reader_read(&r, ix->ids, (size_t)n * 8);
        if (rc == CP_OK) rc = cp_reader_read(&r, ix->data, (size_t)n * ix->dim * ix->elem);
        if (rc == CP_OK) rc = shadow_reserve(ix, n, 0);
    }
    if (rc == CP_OK) rc = cp_reader_finish(&r);
    if (rc == CP_OK) {
        ix->ntotal = n;
        ix->next_id = h64[2];
        rc = map_rebuild(ix, n);
        for (int64_t i = 0; i < n && rc == CP_OK; i++) {
            if (ix->ids[i] < 0 || ix->ids[i] >= ix->next_id)
                rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is corrupt (id %lld)", path, (long long)ix->ids[i]);
        }
        if (rc == CP_OK) {
            int64_t distinct = 0;
            for (uint64_t s = 0; s < ix->map_size; s++) distinct += ix->map_keys[s] != -1;
            if (distinct != n) rc = cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is corrupt (repeated ids)", path);
        }
        if (rc == CP_OK && ix->dtype == CP_INDEX_FLOAT32)
            rc = check_finite((const float *)ix->data, n, ix->dim, "index file row", 0) == CP_OK
                     ? CP_OK
                     : cp_fail(CP_ERR_INDEX_STATE, "index file '%s' is corrupt (non-finite values)", path);
        if (rc == CP_OK && ix->lowp) shadow_fill(ix, 0, n);
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
