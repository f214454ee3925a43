/* cp_cache.h — a prompt -> embedding cache in C memory, bounded by bytes, least-recently-used eviction.
 *
 * Key: (encoder fingerprint, text, output kind), each an arbitrary byte string compared exactly (the caller
 * normalises text; the cache never does). Value: a float32 array of 1..CP_CACHE_MAX_NDIM dimensions, stored with its
 * shape. Every entry is one allocation (header + key bytes + values); an entry is charged its values plus its key
 * plus CP_CACHE_ENTRY_OVERHEAD bytes, and inserting evicts least-recently-used entries until the total fits.
 *
 * Thread safety: every function takes the cache's mutex internally and returns with it released, so a caller may
 * hold other locks (e.g. Python's GIL) around any call. A looked-up entry is returned "pinned": its values stay valid
 * and unchanged (values are never modified in place) until cp_cache_unpin, even if it is evicted or replaced meanwhile.
 */
#ifndef CP_CACHE_H
#define CP_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "base/cp_batch.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CP_CACHE_MAX_NDIM 8

typedef struct cp_cache cp_cache;
typedef struct cp_cache_entry cp_cache_entry;

/** A key: three byte strings. */
typedef struct {
    const char *fp;
    size_t fp_len;
    const char *text;
    size_t text_len;
    const char *kind;
    size_t kind_len;
} cp_cache_key;

typedef struct {
    uint64_t hits, misses, evictions;
    uint64_t entries;
    uint64_t bytes;          /* charged bytes of live entries (values + keys + per-entry overhead) */
    uint64_t payload_bytes;  /* value bytes only */
    uint64_t capacity_bytes;
} cp_cache_stats;

/** Create an empty cache that holds at most `capacity_bytes` charged bytes. Free with cp_cache_free. */
int cp_cache_create(cp_cache **out, uint64_t capacity_bytes);
/** Free the cache (NULL safe). No entry may still be pinned. */
void cp_cache_free(cp_cache *c);

/** Charged bytes for an entry with this key, `count` floats and `ndim` dimensions:
 *  4*count + 8*ndim + key bytes + CP_CACHE_ENTRY_OVERHEAD. */
#define CP_CACHE_ENTRY_OVERHEAD 96u
uint64_t cp_cache_entry_cost(const cp_cache_key *key, uint64_t count, int ndim);

/** Look `key` up. On a hit, pins the entry, moves it to most-recently-used, counts a hit and sets *out (values via
 *  cp_cache_entry_data/shape); on a miss sets *out = NULL and counts a miss. `count_stats` = 0 leaves the
 *  counters and the LRU order alone (used by `in`). If `try_only` and the mutex is busy, returns 1 without
 *  doing anything (the caller can drop its own locks and retry blocking); otherwise CP_OK. */
int cp_cache_lookup(cp_cache *c, const cp_cache_key *key, cp_cache_entry **out, int count_stats, int try_only);

/** Look up `n` keys under one lock: pins hits into out[i] (NULL for misses), counts hits and misses. A miss is not
 *  a failure; the only one is CP_ERR_NOMEM for the batch's scratch (then every out[i] is NULL and nothing is
 *  pinned), reported as base/cp_batch.h says (index CP_BATCH_NO_INDEX). */
int cp_cache_lookup_batch(cp_cache *c, const cp_cache_key *keys, size_t n, cp_cache_entry **out,
                          cp_batch_status *status);

/** Release pins taken by lookups (NULL entries are skipped). */
void cp_cache_unpin(cp_cache *c, cp_cache_entry **entries, size_t n);

const float *cp_cache_entry_data(const cp_cache_entry *e);
/** Number of dimensions; writes them to shape[0..ndim). */
int cp_cache_entry_shape(const cp_cache_entry *e, int64_t *shape);
uint64_t cp_cache_entry_count(const cp_cache_entry *e);

/** Insert (or replace) `key` -> values (`ndim` dims, `shape`), copying them. NaN/inf values -> CP_ERR_INVALID_ARG
 *  and nothing changes. *stored = 0 when the entry alone is larger than the capacity (it is then not cached, and
 *  an old value under the key is removed so the cache never returns a stale value). */
int cp_cache_put(cp_cache *c, const cp_cache_key *key, const float *values, int ndim, const int64_t *shape,
                 int *stored);

/** Remove everything (counters kept). */
void cp_cache_clear(cp_cache *c);
/** Zero the hit/miss/eviction counters. */
void cp_cache_reset_stats(cp_cache *c);
/** Change the capacity, evicting as needed. */
void cp_cache_set_capacity(cp_cache *c, uint64_t capacity_bytes);
void cp_cache_get_stats(cp_cache *c, cp_cache_stats *out);

/** Keys in LRU order, least recent first (for tests/inspection). Calls fn(ctx, key) for each under the lock;
 *  fn must not call back into the cache. */
void cp_cache_foreach(cp_cache *c, void (*fn)(void *ctx, const cp_cache_key *key), void *ctx);

/** Write the cache atomically to `path` (file "CPCA", version 1; LRU order kept). Entries are pinned while the
 *  file is written, so other threads keep using the cache. */
int cp_cache_save(cp_cache *c, const char *path);
/** Read a cache file into a new cache. capacity_bytes = 0: the capacity stored in the file. A truncated or
 *  corrupt file -> CP_ERR_INDEX_STATE and *out untouched. */
int cp_cache_load(cp_cache **out, const char *path, uint64_t capacity_bytes);

#ifdef __cplusplus
}
#endif
#endif /* CP_CACHE_H */
