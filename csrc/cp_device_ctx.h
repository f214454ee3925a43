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

#include "../kernels/cp_cuda.h"
#include "cp_device.h"

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

/* Round up to a multiple of 256 bytes. */
static inline size_t cp_dev_align(size_t n) { return (n + 255) & ~(size_t)255; }

#endif /* CP_WITH_CUDA */
#endif /* CP_DEVICE_CTX_H */
