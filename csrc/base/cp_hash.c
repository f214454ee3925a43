/* cp_hash.c — XXH64's four-lane loop for long inputs and the streaming form (see cp_hash.h). */
#include "base/cp_hash.h"

static inline uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts only (x86-64, aarch64) */
    return v;
}

static inline uint64_t xmerge(uint64_t acc, uint64_t v) {
    acc ^= cp_xxh_round(0, v);
    return acc * CP_XXH_P1 + CP_XXH_P4;
}

static inline void xstripe(uint64_t *v, const uint8_t *p) {
    v[0] = cp_xxh_round(v[0], rd64(p));
    v[1] = cp_xxh_round(v[1], rd64(p + 8));
    v[2] = cp_xxh_round(v[2], rd64(p + 16));
    v[3] = cp_xxh_round(v[3], rd64(p + 24));
}

static inline uint64_t xconverge(const uint64_t *v) {
    uint64_t h = cp_xxh_rotl(v[0], 1) + cp_xxh_rotl(v[1], 7) + cp_xxh_rotl(v[2], 12) + cp_xxh_rotl(v[3], 18);
    h = xmerge(h, v[0]), h = xmerge(h, v[1]), h = xmerge(h, v[2]), h = xmerge(h, v[3]);
    return h;
}

uint64_t cp_hash64_long(const void *data, size_t n, uint64_t seed) {
    const uint8_t *p = (const uint8_t *)data;
    const size_t len = n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v[4] = {seed + CP_XXH_P1 + CP_XXH_P2, seed + CP_XXH_P2, seed, seed - CP_XXH_P1};
        do {
            xstripe(v, p);
            p += 32, n -= 32;
        } while (n >= 32);
        h = xconverge(v);
    } else {
        h = seed + CP_XXH_P5;
    }
    return cp_xxh_finish(h + (uint64_t)len, p, n);
}

void cp_hash64_init(cp_hash64_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->v[0] = seed + CP_XXH_P1 + CP_XXH_P2, s->v[1] = seed + CP_XXH_P2, s->v[2] = seed, s->v[3] = seed - CP_XXH_P1;
}

void cp_hash64_update(cp_hash64_state *s, const void *data, size_t n) {
    if (n == 0) return;
    const uint8_t *p = (const uint8_t *)data;
    s->total += n;
    if (s->buffered) {
        size_t take = 32 - s->buffered;
        if (take > n) take = n;
        memcpy(s->buf + s->buffered, p, take);
        s->buffered += (uint32_t)take, p += take, n -= take;
        if (s->buffered < 32) return;
        xstripe(s->v, s->buf);
        s->buffered = 0;
    }
    while (n >= 32) {
        xstripe(s->v, p);
        p += 32, n -= 32;
    }
    if (n) {
        memcpy(s->buf, p, n);
        s->buffered = (uint32_t)n;
    }
}

uint64_t cp_hash64_digest(const cp_hash64_state *s) {
    uint64_t h = s->total >= 32 ? xconverge(s->v) : s->seed + CP_XXH_P5;
    return cp_xxh_finish(h + s->total, s->buf, s->buffered);
}
