/* cp_strmap.h — the one key -> int64 map of csrc/: open addressing, linear probing, XXH64 (base/cp_hash.h).
 *
 * Users: the BPE vocabulary (string -> id) and merge ranks (int64 pair -> rank and merged id), the WordPiece
 * vocabulary, jieba's prefix dictionary (word -> entry), the flat index's id -> row map.
 *
 * Key kinds: a map is created for one kind. CP_STRMAP_BYTES: keys are byte strings of any length (< 4 GiB in all),
 * copied into the map's own pool, compared exactly (an empty key is a key). CP_STRMAP_INT64: keys are int64 values
 * stored in the slot. Values are int64 (ids, rows, or two packed int32).
 *
 * Layout: a power-of-two array of 24-byte slots {hash or key, value, pool offset, length}; a miss stops at the first
 * empty slot. Load factor: at most 1/2 — an insert that would pass it first doubles the table — so a hit probes
 * ~1.5 slots and a miss ~2.5 on average. Removal shifts the following run back (no tombstones), so lookups never
 * slow down after removals. Iteration order is unspecified.
 * Memory: 24 * slots + the pool, slots = the smallest power of two >= 2 * max(entries, reserved), at least 16, so
 * at most 96 bytes per entry after growth (48 right after cp_strmap_reserve), plus the key bytes (the pool grows
 * by doubling: at most twice their total). Removed keys' bytes stay in the pool until cp_strmap_clear.
 *
 * Thread safety: no lock inside. The usual use is build once, then read from any number of threads at once
 * (cp_strmap_get* only read); a map that is still being changed needs the caller's exclusion (the index holds
 * its rwlock for writing around put/remove).
 *
 * Errors: CP_ERR_NOMEM (growth failed: the map is unchanged), CP_ERR_INVALID_ARG (a wrong-kind call, or keys past
 * 4 GiB in all).
 */
#ifndef CP_STRMAP_H
#define CP_STRMAP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/cp_hash.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CP_STRMAP_BYTES = 0, CP_STRMAP_INT64 = 1 };

#define CP_STRMAP_EMPTY UINT32_MAX /* slot.len of an empty slot */

/* The layout is here so that lookups inline into the tokenizers' inner loops; use the functions, not the fields. */
typedef struct {
    uint64_t h;    /* XXH64 of the key (BYTES) or the key itself (INT64) */
    int64_t value;
    uint32_t off;  /* BYTES: the key's offset in the pool */
    uint32_t len;  /* BYTES: the key's length; INT64: 0; CP_STRMAP_EMPTY: free slot */
} cp_strmap_slot;

typedef struct cp_strmap {
    cp_strmap_slot *slots; /* (mask + 1) */
    uint64_t mask;
    size_t count;
    int kind;
    char *pool; /* BYTES: the keys, back to back */
    size_t pool_len, pool_cap;
} cp_strmap;

/** Create an empty map of `kind` with room for `reserve` entries before it first grows. Free with cp_strmap_free
 *  (NULL safe). */
int cp_strmap_create(cp_strmap **out, int kind, size_t reserve);
void cp_strmap_free(cp_strmap *m);
/** Remove every entry and the pool's bytes; the slot array keeps its size. */
void cp_strmap_clear(cp_strmap *m);
/** Make room for `n` entries in all: until then, puts of new INT64 keys cannot fail. */
int cp_strmap_reserve(cp_strmap *m, size_t n);

static inline size_t cp_strmap_size(const cp_strmap *m) { return m->count; }
/** Bytes held: slots plus the pool's capacity. */
static inline uint64_t cp_strmap_memory_bytes(const cp_strmap *m) {
    return (uint64_t)(m->mask + 1) * sizeof(cp_strmap_slot) + m->pool_cap;
}

/** Seed of the map's hashes (fixed: equal keys hash equally in every map and every run). */
#define CP_STRMAP_SEED 0x636c6970726f6d70ULL /* "clipromp" */

/** The hash a BYTES map uses for `key`: pass it to cp_strmap_get_hashed when the caller needs it twice. */
static inline uint64_t cp_strmap_hash(const void *key, size_t len) { return cp_hash64(key, len, CP_STRMAP_SEED); }

/* Equality of two n-byte keys without a call: dictionary words and word pieces are a few bytes long. */
static inline int cp_strmap_key_eq(const char *a, const void *bv, size_t n) {
    const char *b = (const char *)bv;
    uint64_t x, y;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8), memcpy(&y, b + i, 8);
            if (x != y) return 0;
        }
        memcpy(&x, a + n - 8, 8), memcpy(&y, b + n - 8, 8); /* the last 8 bytes (overlapping) */
        return x == y;
    }
    if (n >= 4) {
        uint32_t p, q, r, t;
        memcpy(&p, a, 4), memcpy(&q, b, 4), memcpy(&r, a + n - 4, 4), memcpy(&t, b + n - 4, 4);
        return p == q && r == t;
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/** BYTES lookup with the key's hash already computed (cp_strmap_hash). 1 and *value when found, else 0. */
static inline int cp_strmap_get_hashed(const cp_strmap *m, const void *key, size_t len, uint64_t h, int64_t *value) {
    const cp_strmap_slot *s = m->slots;
    uint64_t i = h & m->mask;
    for (;;) {
        const cp_strmap_slot *e = &s[i];
        if (e->len == CP_STRMAP_EMPTY) return 0;
        if (e->h == h && e->len == len && cp_strmap_key_eq(m->pool + e->off, key, len)) {
            *value = e->value;
            return 1;
        }
        i = (i + 1) & m->mask;
    }
}

/** BYTES lookup: 1 and *value when `key` is present, else 0 (*value untouched). */
static inline int cp_strmap_get(const cp_strmap *m, const void *key, size_t len, int64_t *value) {
    return cp_strmap_get_hashed(m, key, len, cp_strmap_hash(key, len), value);
}

/** INT64 lookup: 1 and *value when `key` is present, else 0. */
static inline int cp_strmap_get_int(const cp_strmap *m, int64_t key, int64_t *value) {
    const cp_strmap_slot *s = m->slots;
    uint64_t i = cp_hash64_u64((uint64_t)key, CP_STRMAP_SEED) & m->mask;
    for (;;) {
        const cp_strmap_slot *e = &s[i];
        if (e->len == CP_STRMAP_EMPTY) return 0;
        if (e->h == (uint64_t)key) {
            *value = e->value;
            return 1;
        }
        i = (i + 1) & m->mask;
    }
}

/** Insert `key` -> value, or replace the value of a present key. */
int cp_strmap_put(cp_strmap *m, const void *key, size_t len, int64_t value);
int cp_strmap_put_int(cp_strmap *m, int64_t key, int64_t value);

/** Remove `key`: 1 if it was present, 0 if not. Never allocates. */
int cp_strmap_remove(cp_strmap *m, const void *key, size_t len);
int cp_strmap_remove_int(cp_strmap *m, int64_t key);

#ifdef __cplusplus
}
#endif
#endif /* CP_STRMAP_H */
