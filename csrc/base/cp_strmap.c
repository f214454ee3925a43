/* cp_strmap.c — growth, insertion and backward-shift removal of the open-addressing map (see cp_strmap.h). */
#include "base/cp_strmap.h"

#include <stdlib.h>

#include "base/cp_common.h"

#define MIN_SLOTS 16u

/* the probe start of a slot's key: BYTES slots hold the hash, INT64 slots the key itself */
static inline uint64_t slot_home(const cp_strmap *m, const cp_strmap_slot *s) {
    return m->kind == CP_STRMAP_INT64 ? cp_hash64_u64(s->h, CP_STRMAP_SEED) : s->h;
}

static cp_strmap_slot *slots_new(uint64_t n) {
    cp_strmap_slot *s = malloc((size_t)n * sizeof *s);
    if (s)
        for (uint64_t i = 0; i < n; i++) s[i].len = CP_STRMAP_EMPTY;
    return s;
}

/* Resize to `nslots` (a power of two that holds every entry at load <= 1/2). */
static int rehash(cp_strmap *m, uint64_t nslots) {
    if (nslots > SIZE_MAX / sizeof(cp_strmap_slot))
        CP_FAIL(CP_ERR_NOMEM, "string map: %llu slots is too large", (unsigned long long)nslots);
    cp_strmap_slot *s = slots_new(nslots);
    if (!s) CP_FAIL(CP_ERR_NOMEM, "string map: out of memory for %llu slots", (unsigned long long)nslots);
    const uint64_t mask = nslots - 1;
    if (m->slots)
        for (uint64_t i = 0; i <= m->mask; i++) {
            const cp_strmap_slot *e = &m->slots[i];
            if (e->len == CP_STRMAP_EMPTY) continue;
            uint64_t j = slot_home(m, e) & mask;
            while (s[j].len != CP_STRMAP_EMPTY) j = (j + 1) & mask;
            s[j] = *e;
        }
    free(m->slots);
    m->slots = s, m->mask = mask;
    return CP_OK;
}

static uint64_t slots_for(size_t n) {
    uint64_t want = (uint64_t)n * 2, s = MIN_SLOTS;
    while (s < want && s < ((uint64_t)1 << 62)) s <<= 1;
    return s;
}

int cp_strmap_create(cp_strmap **out, int kind, size_t reserve) {
    *out = NULL;
    if (kind != CP_STRMAP_BYTES && kind != CP_STRMAP_INT64) CP_FAIL(CP_ERR_INVALID_ARG, "string map: unknown kind %d", kind);
    cp_strmap *m = calloc(1, sizeof *m);
    if (!m) CP_FAIL(CP_ERR_NOMEM, "string map: out of memory");
    m->kind = kind;
    if (kind == CP_STRMAP_BYTES) { /* never NULL, so key offsets always point into an allocation */
        m->pool_cap = 64;
        m->pool = malloc(m->pool_cap);
    }
    int rc = kind == CP_STRMAP_BYTES && !m->pool ? cp_fail(CP_ERR_NOMEM, "string map: out of memory")
                                                 : rehash(m, slots_for(reserve));
    if (rc != CP_OK) {
        free(m->pool), free(m);
        return rc;
    }
    *out = m;
    return CP_OK;
}

void cp_strmap_free(cp_strmap *m) {
    if (!m) return;
    free(m->slots), free(m->pool);
    free(m);
}

void cp_strmap_clear(cp_strmap *m) {
    for (uint64_t i = 0; i <= m->mask; i++) m->slots[i].len = CP_STRMAP_EMPTY;
    m->count = 0, m->pool_len = 0;
}

int cp_strmap_reserve(cp_strmap *m, size_t n) {
    if ((uint64_t)n * 2 <= m->mask + 1) return CP_OK;
    return rehash(m, slots_for(n));
}

/* Room for one more entry: doubles the table before the load factor would pass 1/2. */
static int room_for_one(cp_strmap *m) {
    if ((uint64_t)(m->count + 1) * 2 <= m->mask + 1) return CP_OK;
    return rehash(m, (m->mask + 1) * 2);
}

int cp_strmap_put(cp_strmap *m, const void *key, size_t len, int64_t value) {
    if (m->kind != CP_STRMAP_BYTES) CP_FAIL(CP_ERR_INVALID_ARG, "string map: a byte-string key in an int64 map");
    const uint64_t h = cp_strmap_hash(key, len);
    uint64_t i = h & m->mask;
    for (;; i = (i + 1) & m->mask) { /* present: replace in place (nothing to allocate) */
        cp_strmap_slot *e = &m->slots[i];
        if (e->len == CP_STRMAP_EMPTY) break;
        if (e->h == h && e->len == len && cp_strmap_key_eq(m->pool + e->off, key, len)) {
            e->value = value;
            return CP_OK;
        }
    }
    if (len >= UINT32_MAX || m->pool_len + len > UINT32_MAX)
        CP_FAIL(CP_ERR_INVALID_ARG, "string map: keys larger than 4 GiB in all");
    if (m->pool_len + len > m->pool_cap) {
        size_t cap = m->pool_cap;
        while (cap < m->pool_len + len) cap *= 2;
        char *p = realloc(m->pool, cap);
        if (!p) CP_FAIL(CP_ERR_NOMEM, "string map: out of memory for %zu key bytes", cap);
        m->pool = p, m->pool_cap = cap;
    }
    CP_CHECK(room_for_one(m));
    i = h & m->mask;
    while (m->slots[i].len != CP_STRMAP_EMPTY) i = (i + 1) & m->mask;
    if (len) memcpy(m->pool + m->pool_len, key, len);
    m->slots[i] = (cp_strmap_slot){h, value, (uint32_t)m->pool_len, (uint32_t)len};
    m->pool_len += len;
    m->count++;
    return CP_OK;
}

int cp_strmap_put_int(cp_strmap *m, int64_t key, int64_t value) {
    if (m->kind != CP_STRMAP_INT64) CP_FAIL(CP_ERR_INVALID_ARG, "string map: an int64 key in a byte-string map");
    const uint64_t k = (uint64_t)key, home = cp_hash64_u64(k, CP_STRMAP_SEED);
    for (uint64_t i = home & m->mask;; i = (i + 1) & m->mask) {
        cp_strmap_slot *e = &m->slots[i];
        if (e->len == CP_STRMAP_EMPTY) break;
        if (e->h == k) {
            e->value = value;
            return CP_OK;
        }
    }
    CP_CHECK(room_for_one(m));
    uint64_t i = home & m->mask;
    while (m->slots[i].len != CP_STRMAP_EMPTY) i = (i + 1) & m->mask;
    m->slots[i] = (cp_strmap_slot){k, value, 0, 0};
    m->count++;
    return CP_OK;
}

/* Empty slot i, then move back every later slot of the run whose probe start is not in (i, j]: what stays is
 * exactly the table the remaining keys would have built. */
static void remove_at(cp_strmap *m, uint64_t i) {
    const uint64_t mask = m->mask;
    for (uint64_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        cp_strmap_slot *e = &m->slots[j];
        if (e->len == CP_STRMAP_EMPTY) break;
        uint64_t k = slot_home(m, e) & mask;
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j); /* home cyclically in (i, j] */
        if (!stays) {
            m->slots[i] = *e;
            i = j;
        }
    }
    m->slots[i].len = CP_STRMAP_EMPTY;
    m->count--;
}

int cp_strmap_remove(cp_strmap *m, const void *key, size_t len) {
    if (m->kind != CP_STRMAP_BYTES) return 0;
    const uint64_t h = cp_strmap_hash(key, len);
    for (uint64_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const cp_strmap_slot *e = &m->slots[i];
        if (e->len == CP_STRMAP_EMPTY) return 0;
        if (e->h == h && e->len == len && cp_strmap_key_eq(m->pool + e->off, key, len)) {
            remove_at(m, i);
            return 1;
        }
    }
}

int cp_strmap_remove_int(cp_strmap *m, int64_t key) {
    if (m->kind != CP_STRMAP_INT64) return 0;
    const uint64_t k = (uint64_t)key;
    for (uint64_t i = cp_hash64_u64(k, CP_STRMAP_SEED) & m->mask;; i = (i + 1) & m->mask) {
        const cp_strmap_slot *e = &m->slots[i];
        if (e->len == CP_STRMAP_EMPTY) return 0;
        if (e->h == k) {
            remove_at(m, i);
            return 1;
        }
    }
}
