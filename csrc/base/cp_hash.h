/* cp_hash.h — the one hash function of csrc/: XXH64 (the 64-bit xxHash, written from its public algorithm
 * description), in three forms that give the same value for the same bytes:
 *
 *   cp_hash64(data, n, seed)       one shot (inline for short keys: map lookups hash 1..31-byte strings)
 *   cp_hash64_init/update/digest   streaming, for files (the cache and index checksums, base/cp_persist.h)
 *   cp_hash64_u64(key, seed)       one little-endian 64-bit word: exactly cp_hash64(&key, 8, seed)
 *
 * Users: file checksums (cache/index files: persisted, so the algorithm never changes), the string map
 * (base/cp_strmap.h), the BPE word cache, the prompt cache's table, the weights sample hash.
 * Not a cryptographic hash: a fixed seed, so keys chosen to collide can slow a table down (never break it).
 * Byte order: little-endian hosts only (x86-64, aarch64), as the file formats are.
 * Thread safety: pure functions; a streaming state belongs to one thread at a time.
 */
#ifndef CP_HASH_H
#define CP_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CP_XXH_P1 0x9E3779B185EBCA87ULL
#define CP_XXH_P2 0xC2B2AE3D27D4EB4FULL
#define CP_XXH_P3 0x165667B19E3779F9ULL
#define CP_XXH_P4 0x85EBCA77C2B2AE63ULL
#define CP_XXH_P5 0x27D4EB2F165667C5ULL

static inline uint64_t cp_xxh_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t cp_xxh_round(uint64_t acc, uint64_t in) {
    acc += in * CP_XXH_P2;
    return cp_xxh_rotl(acc, 31) * CP_XXH_P1;
}
static inline uint64_t cp_xxh_avalanche(uint64_t h) {
    h ^= h >> 33;
    h *= CP_XXH_P2;
    h ^= h >> 29;
    h *= CP_XXH_P3;
    return h ^ (h >> 32);
}

/** The tail of XXH64: the last n < 32 bytes folded into h, then the avalanche. */
static inline uint64_t cp_xxh_finish(uint64_t h, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h ^= cp_xxh_round(0, v);
        h = cp_xxh_rotl(h, 27) * CP_XXH_P1 + CP_XXH_P4;
        p += 8, n -= 8;
    }
    if (n >= 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        h ^= (uint64_t)v * CP_XXH_P1;
        h = cp_xxh_rotl(h, 23) * CP_XXH_P2 + CP_XXH_P3;
        p += 4, n -= 4;
    }
    while (n > 0) {
        h ^= (*p) * CP_XXH_P5;
        h = cp_xxh_rotl(h, 11) * CP_XXH_P1;
        p++, n--;
    }
    return cp_xxh_avalanche(h);
}

/** XXH64 of inputs of 32 bytes and more (the four-lane loop); use cp_hash64. */
uint64_t cp_hash64_long(const void *data, size_t n, uint64_t seed);

/** XXH64 of `n` bytes with `seed`. `data` may be NULL when n == 0. */
static inline uint64_t cp_hash64(const void *data, size_t n, uint64_t seed) {
    if (n >= 32) return cp_hash64_long(data, n, seed);
    return cp_xxh_finish(seed + CP_XXH_P5 + (uint64_t)n, (const uint8_t *)data, n);
}

/** XXH64 of the 8 little-endian bytes of `key` (the string map's int64 keys, BPE merge pairs). */
static inline uint64_t cp_hash64_u64(uint64_t key, uint64_t seed) {
    uint64_t h = seed + CP_XXH_P5 + 8;
    h ^= cp_xxh_round(0, key);
    h = cp_xxh_rotl(h, 27) * CP_XXH_P1 + CP_XXH_P4;
    return cp_xxh_avalanche(h);
}

/** Streaming XXH64 state: init, any number of updates, digest (which may be called again after more updates).
 *  The digest equals cp_hash64 over the concatenated input. */
typedef struct {
    uint64_t v[4];
    uint64_t total;
    uint8_t buf[32];
    uint32_t buffered;
    uint64_t seed;
} cp_hash64_state;

void cp_hash64_init(cp_hash64_state *s, uint64_t seed);
void cp_hash64_update(cp_hash64_state *s, const void *data, size_t n);
uint64_t cp_hash64_digest(const cp_hash64_state *s);

#ifdef __cplusplus
}
#endif
#endif /* CP_HASH_H */
