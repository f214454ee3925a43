// needs: cp_persist.c cp_cache.c cp_index.c
/* fuzz_store — the PromptCache ("CPCA") and FlatIPIndex ("CPIX") file readers.
 * Input: byte 0 = mode: bit 0 cache / index, bit 1 recompute the trailing XXH64 checksum after mutation (so the
 * parser past the checksum gate is fuzzed too), bit 2 a small capacity for the cache; the rest = the file.
 * Invariants: documented statuses only; a file that loads can be used (lookups / search / reconstruct) and saved,
 * and the saved copy loads back with the same contents. */
#include <math.h>

#include "store/cp_cache.h"
#include "store/cp_index.h"
#include "base/cp_persist.h"
#include "fuzz_common.h"

struct walk_ctx {
    cp_cache *c;
    size_t n;
};

static void visit(void *ctx, const cp_cache_key *key) {
    struct walk_ctx *w = ctx;
    (void)key;
    w->n++;
}

static void check_cache(cp_cache *c, const char *path2) {
    cp_cache_stats st;
    cp_cache_get_stats(c, &st);
    struct walk_ctx w = {c, 0};
    cp_cache_foreach(c, visit, &w);
    if (w.n != st.entries) fuzz_die("cache: foreach %zu != entries %llu", w.n, (unsigned long long)st.entries);
    if (st.bytes > st.capacity_bytes) fuzz_die("cache: bytes over capacity after load");
    int rc = cp_cache_save(c, path2);
    fuzz_check_status(rc, "cp_cache_save");
    if (rc != CP_OK) return;
    cp_cache *c2 = NULL;
    rc = cp_cache_load(&c2, path2, 0);
    if (rc != CP_OK) fuzz_die("cache: saved copy does not load: %s", cp_last_error());
    cp_cache_stats st2;
    cp_cache_get_stats(c2, &st2);
    if (st2.entries != st.entries || st2.payload_bytes != st.payload_bytes) fuzz_die("cache: reload differs");
    cp_cache_free(c2);
}

static void check_index(cp_index *ix, const char *path2) {
    int64_t d = cp_index_dim(ix), n = cp_index_ntotal(ix);
    if (d < 1 || n < 0) fuzz_die("index: dim %lld ntotal %lld", (long long)d, (long long)n);
    if (d > (1 << 16)) return;
    float *q = malloc((size_t)d * sizeof(float)), *dist = malloc(3 * sizeof(float));
    int64_t lab[3];
    for (int64_t k = 0; k < d; k++) q[k] = 1.0f / (float)(k + 1);
    cp_batch_status st;
    int rc = cp_index_search(ix, q, 1, 3, dist, lab, &st);
    if (st.code != rc) fuzz_die("index: search status code %d != %d", st.code, rc);
    fuzz_check_status(rc, "cp_index_search");
    if (rc == CP_OK) {
        for (int k = 0; k < 3; k++) {
            if (k < n && lab[k] < 0) fuzz_die("index: missing result %d of %lld", k, (long long)n);
            if (lab[k] >= 0) {
                int rr = cp_index_reconstruct(ix, lab[k], q);
                if (rr != CP_OK) fuzz_die("index: returned id %lld cannot be reconstructed", (long long)lab[k]);
            }
        }
    }
    free(q);
    free(dist);
    rc = cp_index_save(ix, path2);
    fuzz_check_status(rc, "cp_index_save");
    if (rc != CP_OK) return;
    cp_index *ix2 = NULL;
    rc = cp_index_load(&ix2, path2);
    if (rc != CP_OK) fuzz_die("index: saved copy does not load: %s", cp_last_error());
    if (cp_index_ntotal(ix2) != n || cp_index_dim(ix2) != d || cp_index_dtype(ix2) != cp_index_dtype(ix))
        fuzz_die("index: reload differs");
    cp_index_free(ix2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned mode = data[0];
    size_t n = size - 1;
    uint8_t *buf = (uint8_t *)fuzz_dup(data + 1, n);
    if ((mode & 2) && n >= 8) {
        uint64_t h = cp_hash64(buf, n - 8, 0);
        for (int k = 0; k < 8; k++) buf[n - 8 + k] = (uint8_t)(h >> (8 * k));
    }
    char path[600], path2[600];
    fuzz_write("store.bin", buf, n, path, sizeof path);
    snprintf(path2, sizeof path2, "%s/store2.bin", fuzz_dir());
    if (mode & 1) {
        cp_index *ix = NULL;
        int rc = cp_index_load(&ix, path);
        fuzz_check_status(rc, "cp_index_load");
        if (rc == CP_OK) {
            check_index(ix, path2);
            cp_index_free(ix);
        } else if (ix != NULL) {
            fuzz_die("index: failed load set *out");
        }
    } else {
        cp_cache *c = NULL;
        int rc = cp_cache_load(&c, path, (mode & 4) ? 4096 : 0);
        fuzz_check_status(rc, "cp_cache_load");
        if (rc == CP_OK) {
            check_cache(c, path2);
            cp_cache_free(c);
        } else if (c != NULL) {
            fuzz_die("cache: failed load set *out");
        }
    }
    free(buf);
    return 0;
}
