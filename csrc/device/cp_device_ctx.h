/* cp_device_ctx.h — internals shared by the device runners (cp_clip_cuda.c, cp_minilm_cuda.c, cp_index_cuda.c):
 * the per-runner context (device, stream, cuBLAS handle + workspace, lock), one weight allocation laid out in two
 * passes, weight upload with on-device dtype conversion, the activation arena, and the CUDA-graph cache.
 * Only compiled with CP_WITH_CUDA. */
#ifndef CP_DEVICE_CTX_H
#define CP_DEVICE_CTX_H

#ifdef CP_WITH_CUDA

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/cp_cuda.h"
#include "device/cp_device.h"

#define CP_DEV_GRAPHS 16
#define CP_DEV_WS_BYTES ((size_t)32 << 20) /* cuBLAS workspace: capture never allocates */

typedef struct {
    int64_t key[6];
    void *exec;
    uint64_t used; /* LRU stamp */
} cp_dev_graph;

typedef struct {
    int device, dt;
    void *stream, *blas, *workspace;
    pthread_mutex_t lock;
    int lock_ok;
    /* weights: one allocation; pass 0 sums sizes (base NULL), pass 1 places and uploads */
    unsigned char *wbase;
    size_t wsize, wused;
    float *stage; /* device fp32 staging for conversions (stage_floats) */
    size_t stage_floats;
    /* activations: one allocation + its page-locked host twin for the token tables */
    unsigned char *arena, *host;
    size_t arena_bytes, host_bytes;
    /* CUDA graphs */
    cp_dev_graph graphs[CP_DEV_GRAPHS];
    int ngraphs, graphs_off;
    int graph_max; /* batches of at most this many prompts use graphs */
    uint64_t clock;
} cp_dev_ctx;

/* Context setup: device check (CP_ERR_DEVICE with the reason when there is none), stream, workspace, cuBLAS. */
int cp_dev_ctx_init(cp_dev_ctx *c, const cp_device_options *o);
void cp_dev_ctx_release(cp_dev_ctx *c);

/* Weight placement: returns an aligned pointer inside the weight allocation (NULL in pass 0). */
void *cp_dev_place(cp_dev_ctx *c, size_t bytes);
/* Pass 0 -> 1: allocate the weight buffer (CP_ERR_DEVICE_OOM) and the staging buffer for max_floats. */
int cp_dev_weights_alloc(cp_dev_ctx *c, size_t max_stage_floats);
/* Upload n fp32 values to dst as dtype dt (F32: plain copy; else staged + converted on the device). */
int cp_dev_upload(cp_dev_ctx *c, void *dst, const float *src, int64_t n, int dt);
/* After all uploads: wait, free the staging buffer. */
int cp_dev_weights_done(cp_dev_ctx *c);

/* Replace the arena with one of `bytes` (and host twin of `host_bytes`); on OOM the old arena is kept and
 * CP_ERR_DEVICE_OOM returned. Cached graphs (which point into the arena) are dropped. */
int cp_dev_arena_reserve(cp_dev_ctx *c, size_t bytes, size_t host_bytes);

/* Graph cache: find by key (NULL if absent); add takes ownership of exec (evicts the least recently used). */
void *cp_dev_graph_find(cp_dev_ctx *c, const int64_t key[6]);
void cp_dev_graph_add(cp_dev_ctx *c, const int64_t key[6], void *exec);
void cp_dev_graphs_clear(cp_dev_ctx *c);

/* Run `fn(arg)` (which enqueues work on c->stream) either directly or through a cached/captured graph keyed by
 * key. A capture that fails (some library call that cannot be captured) turns graphs off for this context and
 * runs fn directly. */
int cp_dev_run(cp_dev_ctx *c, int use_graph, const int64_t key[6], int (*fn)(void *), void *arg);

/* One transformer block's weights on the device (the same layout in both encoders). */
typedef struct {
    void *qkv_w, *o_w, *fc1_w, *fc2_w; /* (3W, W), (W, W), (F, W), (W, F) dtype */
    float *qkv_b, *o_b, *fc1_b, *fc2_b, *ln1_g, *ln1_b, *ln2_g, *ln2_b;
} cp_dev_layer;

/* A block's host weights (fp32); q/k/v are separate unless qkv_fused (q_w / q_b then hold all three). */
typedef struct {
    const float *q_w, *k_w, *v_w, *q_b, *k_b, *v_b, *o_w, *o_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    const float *ln1_g, *ln1_b, *ln2_g, *ln2_b;
    int qkv_fused;
} cp_dev_layer_src;

/* A cp_dev_layer_src from any layer struct with these field names. */
#define CP_DEV_LAYER_SRC(s, fused)                                                                                   \
    ((cp_dev_layer_src){(s)->q_w, (s)->k_w, (s)->v_w, (s)->q_b, (s)->k_b, (s)->v_b, (s)->o_w, (s)->o_b, (s)->fc1_w, \
                        (s)->fc1_b, (s)->fc2_w, (s)->fc2_b, (s)->ln1_g, (s)->ln1_b, (s)->ln2_g, (s)->ln2_b, (fused)})

/* Place one block (width W, FFN F) in the weight allocation (see cp_dev_place). */
void cp_dev_layer_place(cp_dev_ctx *c, cp_dev_layer *d, int64_t W, int64_t F);
/* Upload one block: matrices as c->dt, vectors fp32. */
int cp_dev_layer_upload(cp_dev_ctx *c, cp_dev_layer *d, const cp_dev_layer_src *s, int64_t W, int64_t F);

/* Runner setup shared by the encoders: options (defaults when NULL), the packed-token cap (max_tokens or 32768,
 * at least min_tokens), the context and a zeroed array of `layers` blocks. On error the caller frees what is set. */
int cp_dev_runner_init(cp_dev_ctx *c, const cp_device_options *opt, int64_t min_tokens, int64_t layers,
                       cp_dev_layer **L, int64_t *tok_cap);

/* How many tokens to lay an arena out for when `T` do not fit in `have`: grow geometrically (each growth drops
 * the cached graphs), at least 256 tokens, at most cap (unless T itself is larger). */
static inline int64_t cp_dev_arena_grow(int64_t T, int64_t have, int64_t cap) {
    int64_t want = have * 2 < cap ? have * 2 : cap;
    T = T > want ? T : want;
    return T < 256 ? 256 : T;
}

/* Round up to a multiple of 256 bytes. */
static inline size_t cp_dev_align(size_t n) { return (n + 255) & ~(size_t)255; }

#endif /* CP_WITH_CUDA */
#endif /* CP_DEVICE_CTX_H */
