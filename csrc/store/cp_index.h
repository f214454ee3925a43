/* cp_index.h — a flat (exhaustive) inner-product index over float32 or float16 rows in C memory.
 *
 * Shapes: d = dim, n = ntotal, nq = queries, k = results per query. Rows are stored contiguously (n, d) with an
 * int64 id each (ids >= 0, unique; an id -> row hash map serves reconstruct/remove). float16 storage converts with
 * round-to-nearest-even on add and back to float32 block by block on search.
 *
 * bfloat16 / int8 indexes keep the float32 rows and a reduced-precision copy: below small_nq the split path scans
 * the copy (half / a quarter of the bytes) for 4k + 32 candidates per query and re-scores them exactly on the float32
 * rows, so ids and scores are those of a float32 search unless a true top-k row falls outside the candidates; at
 * nq >= small_nq (compute-bound) the float32 rows are searched directly. Files store the float32 rows and the type.
 *
 * Search: nq >= small_nq -> blocked cblas_sgemm over (query block x database tile) + a per-query top-k heap carried
 * across tiles; nq < small_nq -> the database is split into parts searched in parallel (OpenMP), each with its own
 * top-k per query, merged at the end. Results are best first; ties are broken by insertion order (earlier row first),
 * so every path gives the same ids for the same scores; -1 / -inf pad when k > n.
 *
 * Thread safety: a rwlock inside; searches/reconstruct/save share it, add/remove/reset take it exclusively.
 */
#ifndef CP_INDEX_H
#define CP_INDEX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_index cp_index;

/* BFLOAT16 / INT8: float32 rows (exact) plus a bf16 / int8 (per-row scale) copy that the few-query scan reads;
 * its best candidates are re-scored on the float32 rows (see cp_index_search). */
enum { CP_INDEX_FLOAT32 = 0, CP_INDEX_FLOAT16 = 1, CP_INDEX_BFLOAT16 = 2, CP_INDEX_INT8 = 3 };
enum { CP_INDEX_SEARCH_AUTO = 0, CP_INDEX_SEARCH_GEMM = 1, CP_INDEX_SEARCH_SPLIT = 2 };

/** Create an empty index of `dim` (>= 1) with dtype CP_INDEX_FLOAT32/FLOAT16/BFLOAT16/INT8. Free with
 *  cp_index_free. */
int cp_index_create(cp_index **out, int64_t dim, int dtype);
void cp_index_free(cp_index *ix);

int64_t cp_index_dim(const cp_index *ix);
int cp_index_dtype(const cp_index *ix);
int64_t cp_index_ntotal(cp_index *ix);
/** Bytes held for rows + ids + id map (capacity, not just ntotal). */
uint64_t cp_index_memory_bytes(cp_index *ix);

/** Tuning/test knobs: database tile / part size in rows (0: default 2048), query block (0: default 1024),
 *  search path (CP_INDEX_SEARCH_*), the nq below which the split path is used (0: default 32). */
void cp_index_set_knobs(cp_index *ix, int64_t block_size, int64_t query_block, int mode, int64_t small_nq);

/** Add n rows x[n, d]. ids: NULL -> next_id, next_id+1, ... (next_id = one past the largest id ever added).
 *  Non-finite values -> CP_ERR_INVALID_ARG; |x| > 65504 with float16 storage -> CP_ERR_INVALID_ARG; negative,
 *  repeated or already present ids -> CP_ERR_INVALID_ARG. On any error the index is unchanged. */
int cp_index_add(cp_index *ix, const float *x, int64_t n, const int64_t *ids);

/** distances[nq, k] (float32) and labels[nq, k] (int64) for queries q[nq, d], best first.
 *  k >= 1; non-finite queries -> CP_ERR_INVALID_ARG. */
int cp_index_search(cp_index *ix, const float *q, int64_t nq, int64_t k, float *distances, int64_t *labels);

/** Remove the listed ids (unknown ids ignored); *removed = how many rows went. Row order is kept. */
int cp_index_remove_ids(cp_index *ix, const int64_t *ids, int64_t n, int64_t *removed);
/** Remove everything (next_id restarts at 0). */
void cp_index_reset(cp_index *ix);
/** out[d] = the stored row of `id` as float32; unknown id -> CP_ERR_INDEX_STATE. */
int cp_index_reconstruct(cp_index *ix, int64_t id, float *out);
/** Copy all ids in row order into out[ntotal] (caller sizes it from cp_index_ntotal under no concurrent add). */
int cp_index_get_ids(cp_index *ix, int64_t *out, int64_t cap, int64_t *n);

/** For device mirrors: rows [r0, r0 + n) as float32 into out[n, d] and their ids into ids[n] (either may be NULL),
 *  with the current ntotal and generation (a counter bumped by every removal and reset; appends keep it), all
 *  read under one lock. n = 0 reads just ntotal and generation. */
int cp_index_read_rows(cp_index *ix, int64_t r0, int64_t n, float *out, int64_t *ids, int64_t *ntotal,
                       uint64_t *generation);

/** Write atomically ("CPIX", version 1, checksum). */
int cp_index_save(cp_index *ix, const char *path);
/** Read an index file into a new index; truncated/corrupt -> CP_ERR_INDEX_STATE. */
int cp_index_load(cp_index **out, const char *path);

/* half-precision conversions: cp_common.h */

#ifdef __cplusplus
}
#endif
#endif /* CP_INDEX_H */
