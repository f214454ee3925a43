/* cp_cache.c — the prompt cache: a chained hash table (XXH64 keys, base/cp_hash.h) over entries that also sit on an intrusive doubly-linked
 * LRU list; one mutex; pinned entries outlive eviction until unpinned (see cp_cache.h). */
#define _GNU_SOURCE
#include "store/cp_cache.h"

#include "base/cp_common.h"
#include "base/cp_hash.h"
#include "base/cp_persist.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* CP_CACHE_ENTRY_OVERHEAD (cp_cache.h) is charged per entry on top of values, key bytes and shape: the header
 * below (72 B), alignment padding, the allocator's own header and the hash-table slot. */

struct cp_cache_entry {
    cp_cache_entry *hnext;       /* next in the hash bucket */
    cp_cache_entry *prev, *next; /* LRU list: prev is less recently used */
    uint64_t hash;
    uint64_t count; /* number of floats */
    uint64_t cost;  /* charged bytes */
    uint32_t fp_len, text_len, kind_len;
    int32_t refs;   /* pins held by readers */
    uint8_t ndim;
    uint8_t live;   /* in the table and on the list */
    /* then: int64 shape[ndim] | fp | text | kind | pad to 16 | float values[count] */
    char tail[] __attribute__((aligned(8)));
};

struct cp_cache {
    pthread_mutex_t mu;
    cp_cache_entry **buckets; /* nbuckets, a power of two */
    uint64_t nbuckets;
    cp_cache_entry *lru_head, *lru_tail; /* head: least recently used */
    uint64_t entries, bytes, payload_bytes, capacity;
    uint64_t hits, misses, evictions;
};

static inline int64_t *e_shape(cp_cache_entry *e) { return (int64_t *)e->tail; }
static inline const char *e_fp(const cp_cache_entry *e) { return e->tail + 8 * (size_t)e->ndim; }
static inline const char *e_text(const cp_cache_entry *e) { return e_fp(e) + e->fp_len; }
static inline const char *e_kind(const cp_cache_entry *e) { return e_text(e) + e->text_len; }
static inline size_t e_data_offset(size_t ndim, size_t keylen) { return (8 * ndim + keylen + 15) & ~(size_t)15; }
static inline float *e_data(cp_cache_entry *e) {
    return (float *)(e->tail + e_data_offset(e->ndim, (size_t)e->fp_len + e->text_len + e->kind_len));
}

const float *cp_cache_entry_data(const cp_cache_entry *e) { return e_data((cp_cache_entry *)e); }
uint64_t cp_cache_entry_count(const cp_cache_entry *e) { return e->count; }
int cp_cache_entry_shape(const cp_cache_entry *e, int64_t *shape) {
    memcpy(shape, e->tail, 8 * (size_t)e->ndim);
    return e->ndim;
}

static uint64_t key_hash(const cp_cache_key *k) {
    uint64_t h = cp_hash64(k->kind, k->kind_len, 0x636c6970u);
    h = cp_hash64(k->fp, k->fp_len, h);
    return cp_hash64(k->text, k->text_len, h);
}

static inline int key_eq(const cp_cache_entry *e, const cp_cache_key *k, uint64_t h) {
    return e->hash == h && e->text_len == k->text_len && e->fp_len == k->fp_len && e->kind_len == k->kind_len &&
           memcmp(e_text(e), k->text, k->text_len) == 0 && memcmp(e_fp(e), k->fp, k->fp_len) == 0 &&
           memcmp(e_kind(e), k->kind, k->kind_len) == 0;
}

uint64_t cp_cache_entry_cost(const cp_cache_key *k, uint64_t count, int ndim) {
    return 4 * count + 8u * (uint64_t)ndim + k->fp_len + k->text_len + k->kind_len + CP_CACHE_ENTRY_OVERHEAD;
}

int cp_cache_create(cp_cache **out, uint64_t capacity_bytes) {
    *out = NULL;
    cp_cache *c = calloc(1, sizeof *c);
    if (!c) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    c->nbuckets = 64;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&c->mu, NULL);
    c->capacity = capacity_bytes;
    *out = c;
    return CP_OK;
}

/* ---- internals (mutex held) ------------------------------------------------------------------------- */

static void lru_unlink(cp_cache *c, cp_cache_entry *e) {
    if (e->prev) e->prev->next = e->next;
    else c->lru_head = e->next;
    if (e->next) e->next->prev = e->prev;
    else c->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_tail(cp_cache *c, cp_cache_entry *e) {
    e->prev = c->lru_tail, e->next = NULL;
    if (c->lru_tail) c->lru_tail->next = e;
    else c->lru_head = e;
    c->lru_tail = e;
}

static cp_cache_entry *table_find(cp_cache *c, const cp_cache_key *k, uint64_t h) {
    for (cp_cache_entry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->hnext)
        if (key_eq(e, k, h)) return e;
    return NULL;
}

static void table_remove(cp_cache *c, cp_cache_entry *e) {
    cp_cache_entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    e->hnext = NULL;
}

/* Unlink a live entry from table and list; free it unless pinned (the last unpin frees it). */
static void entry_drop(cp_cache *c, cp_cache_entry *e) {
    table_remove(c, e);
    lru_unlink(c, e);
    e->live = 0;
    c->entries--;
    c->bytes -= e->cost;
    c->payload_bytes -= 4 * e->count;
    if (e->refs == 0) free(e);
}

static void evict_to(cp_cache *c, uint64_t limit) {
    while (c->bytes > limit && c->lru_head) {
        entry_drop(c, c->lru_head);
        c->evictions++;
    }
}

static void table_grow(cp_cache *c) {
    uint64_t nb = c->nbuckets * 2;
    cp_cache_entry **b = calloc(nb, sizeof *b);
    if (!b) return; /* keep the longer chains; still correct */
    for (uint64_t i = 0; i < c->nbuckets; i++) {
        cp_cache_entry *e = c->buckets[i];
        while (e) {
            cp_cache_entry *nx = e->hnext;
            e->hnext = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = nx;
        }
    }
    free(c->buckets);
    c->buckets = b, c->nbuckets = nb;
}

/* ---- public ----------------------------------------------------------------------------------------- */

void cp_cache_free(cp_cache *c) {
    if (!c) return;
    cp_cache_entry *e = c->lru_head;
    while (e) {
        cp_cache_entry *nx = e->next;
        free(e);
        e = nx;
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void lookup_locked(cp_cache *c, const cp_cache_key *key, uint64_t h, cp_cache_entry **out, int count_stats) {
    cp_cache_entry *e = table_find(c, key, h);
    if (e) {
        e->refs++;
        if (count_stats) {
            c->hits++;
            if (c->lru_tail != e) {
                lru_unlink(c, e);
                lru_push_tail(c, e);
            }
        }
    } else if (count_stats) {
        c->misses++;
    }
    *out = e;
}

int cp_cache_lookup(cp_cache *c, const cp_cache_key *key, cp_cache_entry **out, int count_stats, int try_only) {
    uint64_t h = key_hash(key);
    if (try_only) {
        if (pthread_mutex_trylock(&c->mu) != 0) return 1;
    } else {
        pthread_mutex_lock(&c->mu);
    }
    lookup_locked(c, key, h, out, count_stats);
    pthread_mutex_unlock(&c->mu);
    return CP_OK;
}

int cp_cache_lookup_batch(cp_cache *c, const cp_cache_key *keys, size_t n, cp_cache_entry **out,
                          cp_batch_status *status) {
    cp_batch_status_clear(status);
    uint64_t *hs = malloc((n ? n : 1) * sizeof *hs);
    if (!hs) {
        for (size_t i = 0; i < n; i++) out[i] = NULL;
        return cp_batch_fail(status, CP_BATCH_NO_INDEX, CP_ERR_NOMEM, "cache: out of memory looking up %zu keys", n);
    }
    for (size_t i = 0; i < n; i++) hs[i] = key_hash(&keys[i]);
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) lookup_locked(c, &keys[i], hs[i], &out[i], 1);
    pthread_mutex_unlock(&c->mu);
    free(hs);
    return CP_OK;
}

void cp_cache_unpin(cp_cache *c, cp_cache_entry **entries, size_t n) {
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        cp_cache_entry *e = entries[i];
        if (!e) continue;
        if (--e->refs == 0 && !e->live) free(e);
    }
    pthread_mutex_unlock(&c->mu);
}

int cp_cache_put(cp_cache *c, const cp_cache_key *key, const float *values, int ndim, const int64_t *shape,
                 int *stored) {
    *stored = 0;
    if (ndim < 1 || ndim > CP_CACHE_MAX_NDIM)
        CP_FAIL(CP_ERR_INVALID_ARG, "cache values must have 1..%d dimensions, got %d", CP_CACHE_MAX_NDIM, ndim);
    if (key->fp_len > UINT32_MAX || key->text_len > UINT32_MAX || key->kind_len > UINT32_MAX)
        CP_FAIL(CP_ERR_INVALID_ARG, "cache key too long");
    uint64_t count = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1) CP_FAIL(CP_ERR_INVALID_ARG, "cache values must not be empty (dimension %d is %lld)", d,
                                  (long long)shape[d]);
        if ((uint64_t)shape[d] > (UINT64_MAX / 8) / count) CP_FAIL(CP_ERR_INVALID_ARG, "cache value too large");
        count *= (uint64_t)shape[d];
    }
    for (uint64_t i = 0; i < count; i++)
        if (!isfinite(values[i]))
            CP_FAIL(CP_ERR_INVALID_ARG, "cache values must be finite: element %llu is %s", (unsigned long long)i,
                    isnan(values[i]) ? "NaN" : "inf");
    uint64_t cost = cp_cache_entry_cost(key, count, ndim);
    uint64_t h = key_hash(key);
    cp_cache_entry *e = NULL;
    /* an unlocked (atomic) look at the capacity only to skip a useless copy; rechecked under the lock */
    if (cost <= __atomic_load_n(&c->capacity, __ATOMIC_RELAXED)) {
        size_t keylen = key->fp_len + key->text_len + key->kind_len;
        size_t off = e_data_offset((size_t)ndim, keylen);
        if (count > (SIZE_MAX - sizeof *e - off) / 4) CP_FAIL(CP_ERR_NOMEM, "cache value too large");
        e = malloc(sizeof *e + off + 4 * (size_t)count);
        if (!e) CP_FAIL(CP_ERR_NOMEM, "out of memory (%llu bytes)", (unsigned long long)cost);
        e->hnext = e->prev = e->next = NULL;
        e->hash = h, e->count = count, e->cost = cost;
        e->fp_len = (uint32_t)key->fp_len, e->text_len = (uint32_t)key->text_len, e->kind_len = (uint32_t)key->kind_len;
        e->refs = 0, e->ndim = (uint8_t)ndim, e->live = 1;
        memcpy(e_shape(e), shape, 8 * (size_t)ndim);
        memcpy((char *)e_fp(e), key->fp, key->fp_len);
        memcpy((char *)e_text(e), key->text, key->text_len);
        memcpy((char *)e_kind(e), key->kind, key->kind_len);
        memcpy(e_data(e), values, 4 * (size_t)count);
    }
    pthread_mutex_lock(&c->mu);
    cp_cache_entry *old = table_find(c, key, h);
    if (old) entry_drop(c, old); /* replaced: not an eviction */
    if (e && cost > c->capacity) {
        free(e);
        e = NULL;
    }
    if (e) {
        evict_to(c, c->capacity - cost);
        if (c->entries + 1 > c->nbuckets) table_grow(c);
        uint64_t b = h & (c->nbuckets - 1);
        e->hnext = c->buckets[b];
        c->buckets[b] = e;
        lru_push_tail(c, e);
        c->entries++;
        c->bytes += cost;
        c->payload_bytes += 4 * count;
        *stored = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return CP_OK;
}

void cp_cache_clear(cp_cache *c) {
    pthread_mutex_lock(&c->mu);
    while (c->lru_head) entry_drop(c, c->lru_head);
    pthread_mutex_unlock(&c->mu);
}

void cp_cache_reset_stats(cp_cache *c) {
    pthread_mutex_lock(&c->mu);
    c->hits = c->misses = c->evictions = 0;
    pthread_mutex_unlock(&c->mu);
}

void cp_cache_set_capacity(cp_cache *c, uint64_t capacity_bytes) {
    pthread_mutex_lock(&c->mu);
    __atomic_store_n(&c->capacity, capacity_bytes, __ATOMIC_RELAXED);
    evict_to(c, capacity_bytes);
    pthread_mutex_unlock(&c->mu);
}

void cp_cache_get_stats(cp_cache *c, cp_cache_stats *s) {
    pthread_mutex_lock(&c->mu);
    s->hits = c->hits, s->misses = c->misses, s->evictions = c->evictions;
    s->entries = c->entries, s->bytes = c->bytes, s->payload_bytes = c->payload_bytes;
    s->capacity_bytes = c->capacity;
    pthread_mutex_unlock(&c->mu);
}

static void entry_key(const cp_cache_entry *e, cp_cache_key *k) {
    k->fp = e_fp(e), k->fp_len = e->fp_len;
    k->text = e_text(e), k->text_len = e->text_len;
    k->kind = e_kind(e), k->kind_len = e->kind_len;
}

void cp_cache_foreach(cp_cache *c, void (*fn)(void *ctx, const cp_cache_key *key), void *ctx) {
    pthread_mutex_lock(&c->mu);
    for (cp_cache_entry *e = c->lru_head; e; e = e->next) {
        cp_cache_key k;
        entry_key(e, &k);
        fn(ctx, &k);
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- files ------------------------------------------------------------------------------------------ */

static const char CP_CACHE_FOURCC[4] = {'C', 'P', 'C', 'A'};
#define CP_CACHE_FILE_VERSION 1u

int cp_cache_save(cp_cache *c, const char *path) {
    /* pin a snapshot in LRU order, then write without holding the mutex */
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->entries, capacity = c->capacity;
    cp_cache_entry **snap = malloc((n ? n : 1) * sizeof *snap);
    if (!snap) {
        pthread_mutex_unlock(&c->mu);
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    }
    uint64_t i = 0;
    for (cp_cache_entry *e = c->lru_head; e; e = e->next) {
        e->refs++;
        snap[i++] = e;
    }
    pthread_mutex_unlock(&c->mu);

    cp_file_writer w;
    int rc = cp_writer_open(&w, path);
    if (rc == CP_OK) {
        uint32_t hdr[2] = {CP_CACHE_FILE_VERSION, 0};
        uint64_t hdr2[2] = {capacity, n};
        rc = cp_writer_write(&w, CP_CACHE_FOURCC, 4);
        if (rc == CP_OK) rc = cp_writer_write(&w, hdr, sizeof hdr);
        if (rc == CP_OK) rc = cp_writer_write(&w, hdr2, sizeof hdr2);
        for (uint64_t j = 0; j < n && rc == CP_OK; j++) {
            cp_cache_entry *e = snap[j];
            uint32_t lens[4] = {e->fp_len, e->text_len, e->kind_len, e->ndim};
            rc = cp_writer_write(&w, lens, sizeof lens);
            if (rc == CP_OK) rc = cp_writer_write(&w, e_shape(e), 8 * (size_t)e->ndim);
            if (rc == CP_OK) rc = cp_writer_write(&w, e_fp(e), (size_t)e->fp_len + e->text_len + e->kind_len);
            if (rc == CP_OK) rc = cp_writer_write(&w, e_data(e), 4 * (size_t)e->count);
        }
        if (rc == CP_OK) rc = cp_writer_commit(&w);
        else cp_writer_abort(&w);
    }
    cp_cache_unpin(c, snap, n);
    free(snap);
    return rc;
}

int cp_cache_load(cp_cache **out, const char *path, uint64_t capacity_bytes) {
    cp_file_reader r;
    CP_CHECK(cp_reader_open(&r, path, "cache"));
    cp_cache *c = NULL;
    char *keybuf = NULL;
    float *vals = NULL;
    size_t keycap = 0, valcap = 0;
    char four[4];
    uint32_t hdr[2];
    uint64_t hdr2[2];
    int rc = cp_reader_read(&r, four, 4);
    if (rc == CP_OK && memcmp(four, CP_CACHE_FOURCC, 4) != 0)
        rc = cp_fail(CP_ERR_INDEX_STATE, "'%s' is not a clipprompt cache file (bad magic)", path);
    if (rc == CP_OK) rc = cp_reader_read(&r, hdr, sizeof hdr);
    if (rc == CP_OK && hdr[0] != CP_CACHE_FILE_VERSION)
        rc = cp_fail(CP_ERR_INDEX_STATE, "cache file '%s' has version %u; this build reads version %u", path, hdr[0],
                     CP_CACHE_FILE_VERSION);
    if (rc == CP_OK) rc = cp_reader_read(&r, hdr2, sizeof hdr2);
    if (rc == CP_OK) rc = cp_cache_create(&c, capacity_bytes ? capacity_bytes : hdr2[0]);
    for (uint64_t j = 0; j < (rc == CP_OK ? hdr2[1] : 0) && rc == CP_OK; j++) {
        uint32_t lens[4];
        int64_t shape[CP_CACHE_MAX_NDIM];
        rc = cp_reader_read(&r, lens, sizeof lens);
        if (rc != CP_OK) break;
        if (lens[3] < 1 || lens[3] > CP_CACHE_MAX_NDIM) {
            rc = cp_fail(CP_ERR_INDEX_STATE, "cache file '%s' is corrupt (entry %llu has ndim %u)", path,
                         (unsigned long long)j, lens[3]);
            break;
        }
        rc = cp_reader_read(&r, shape, 8 * (size_t)lens[3]);
        if (rc != CP_OK) break;
        uint64_t keylen = (uint64_t)lens[0] + lens[1] + lens[2], count = 1;
        uint64_t left = cp_reader_left(&r);
        for (uint32_t d = 0; d < lens[3] && rc == CP_OK; d++) {
            if (shape[d] < 1 || (uint64_t)shape[d] > left / 4 / count)
                rc = cp_fail(CP_ERR_INDEX_STATE, "cache file '%s' is truncated or corrupt (entry %llu shape)", path,
                             (unsigned long long)j);
            else count *= (uint64_t)shape[d];
        }
        if (rc != CP_OK) break;
        if (keylen > left || 4 * count > left - keylen) {
            rc = cp_fail(CP_ERR_INDEX_STATE, "cache file '%s' is truncated or corrupt (entry %llu)", path,
                         (unsigned long long)j);
            break;
        }
        if (keylen + 1 > keycap) {
            free(keybuf);
            keycap = keylen + 1;
            if (!(keybuf = malloc(keycap))) rc = cp_fail(CP_ERR_NOMEM, "out of memory");
        }
        if (rc == CP_OK && count > valcap) {
            free(vals);
            valcap = count;
            if (!(vals = malloc(4 * valcap))) rc = cp_fail(CP_ERR_NOMEM, "out of memory");
        }
        if (rc == CP_OK) rc = cp_reader_read(&r, keybuf, keylen);
        if (rc == CP_OK) rc = cp_reader_read(&r, vals, 4 * count);
        if (rc != CP_OK) break;
        cp_cache_key k = {keybuf, lens[0], keybuf + lens[0], lens[1], keybuf + lens[0] + lens[1], lens[2]};
        int stored;
        rc = cp_cache_put(c, &k, vals, (int)lens[3], shape, &stored);
        if (rc != CP_OK) rc = cp_fail(CP_ERR_INDEX_STATE, "cache file '%s' is corrupt (entry %llu: %s)", path,
                                      (unsigned long long)j, "invalid values");
    }
    if (rc == CP_OK) rc = cp_reader_finish(&r);
    cp_reader_close(&r);
    free(keybuf);
    free(vals);
    if (rc != CP_OK) {
        cp_cache_free(c);
        return rc;
    }
    c->hits = c->misses = c->evictions = 0;
    *out = c;
    return CP_OK;
}
