/* cp_index.h — a flat (exhaustive) inner-product index over float32 or float16 rows in C memory.
 *
 * Shapes: d = dim, n = ntotal, nq = queries, k = results per query. Rows are stored contiguously (n, d) with an
 * int64 id each (ids >= 0, unique; an id -> row map, base/cp_strmap.h, serves reconstruct/remove). float16 storage
 * converts with round-to-nearest-even on add and is widened exactly to float32 in registers on search.
 *
 * Search: the database is split into parts searched in parallel (OpenMP), each keeping a top-k heap per query,
 * merged at the end; nq < small_nq uses many small parts, more queries a few large ones per thread, in query blocks.
 * Scores come from one dot-product kernel with a fixed summation order (cp_index.c), so the score of (query, row) is
 * bit for bit the same whatever nq, the query's position in the batch, the path, the blocking knobs, concurrent
 * callers or the thread count (it depends only on the CPU's ISA: AVX2+FMA or not). Results are best first; ties are
 * broken by insertion order (earlier row first); -1 / -inf pad when k > n.
 *
 * Thread safety: a rwlock inside; searches/reconstruct/save share it, add/remove/reset take it exclusively.
 */
#ifndef CP_INDEX_H
#define CP_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "base/cp_batch.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_index cp_index;

enum { CP_INDEX_FLOAT32 = 0, CP_INDEX_FLOAT16 = 1 };
enum { CP_INDEX_SEARCH_AUTO = 0, CP_INDEX_SEARCH_GEMM = 1, CP_INDEX_SEARCH_SPLIT = 2 };

/** Create an empty index of `dim` (>= 1) with dtype CP_INDEX_FLOAT32/FLOAT16. Free with cp_index_free. */
int cp_index_create(cp_index **out, int64_t dim, int dtype);
void cp_index_free(cp_index *ix);

int64_t cp_index_dim(const cp_index *ix);
int cp_index_dtype(const cp_index *ix);
int64_t cp_index_ntotal(cp_index *ix);
/** Bytes held for rows + ids + id map (capacity, not just ntotal). */
uint64_t cp_index_memory_bytes(cp_index *ix);

/** Tuning/test knobs: part size in rows for few queries, and the least part size otherwise (0: default 2048);
 *  query block (0: default 1024); search path (CP_INDEX_SEARCH_*: SPLIT = many small parts, GEMM = a few large
 *  parts per thread, AUTO = SPLIT below small_nq queries); small_nq (0: default 32). Results never depend on them. */
void cp_index_set_knobs(cp_index *ix, int64_t block_size, int64_t query_block, int mode, int64_t small_nq);

/** Add n rows x[n, d]. ids: NULL -> next_id, next_id+1, ... (next_id = one past the largest id ever added).
 *  Non-finite values -> CP_ERR_INVALID_ARG; |x| > 65504 with float16 storage -> CP_ERR_INVALID_ARG; negative,
 *  repeated or already present ids -> CP_ERR_INVALID_ARG. On any error the index is unchanged. A batch of rows:
 *  *status (may be NULL) = {the first bad row, its code} as base/cp_batch.h says (CP_BATCH_NO_INDEX for n < 0,
 *  memory, id space). */
int cp_index_add(cp_index *ix, const float *x, int64_t n, const int64_t *ids, cp_batch_status *status);

/** distances[nq, k] (float32) and labels[nq, k] (int64) for queries q[nq, d], best first.
 *  k >= 1; non-finite queries -> CP_ERR_INVALID_ARG with *status (may be NULL) = {the first bad query row, code}.
 *  Deterministic: see above. */
int cp_index_search(cp_index *ix, const float *q, int64_t nq, int64_t k, float *distances, int64_t *labels,
                    cp_batch_status *status);

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
