/* cp_device_ctx.h — internals shared by the device runners (cp_runner_cuda.c, cp_index_cuda.c): the per-runner
 * context (device, stream, cuBLAS handle + workspace, lock), one weight allocation laid out in two passes, weight
 * upload with on-device dtype conversion, the activation arena, and the CUDA-graph cache.
 *
 * The arena and graph policies (grow / out-of-memory retry / restore; warm-up, capture, failure budget, LRU) run
 * through a table of memory and graph operations (cp_dev_ops): CUDA's in a CUDA build, host fakes in the device
 * self-test (cp_device_selftest.c), so the policies are tested on machines without a GPU. Everything that needs
 * the CUDA runtime itself is only compiled with CP_WITH_CUDA.
 * Thread safety: a context belongs to one runner; the runner's lock serialises every call that touches it. */
#ifndef CP_DEVICE_CTX_H
#define CP_DEVICE_CTX_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/cp_cuda.h"
#include "device/cp_device.h"
#include "model/cp_encoder.h"

#define CP_DEV_GRAPHS 32
#define CP_DEV_GRAPH_FAILS 3 /* captures that may fail before a context runs without graphs for good */
#define CP_DEV_WS_BYTES ((size_t)32 << 20) /* cuBLAS workspace: capture never allocates */

typedef struct {
    int64_t key[6];
    void *exec;    /* NULL: the key was seen once (its warm-up ran directly); the next run captures */
    uint64_t used; /* LRU stamp */
} cp_dev_graph;

/* Memory and graph operations behind the context's policies (see the header comment). */
typedef struct {
    int (*malloc)(void **p, size_t bytes, const char *what); /* CP_ERR_DEVICE_OOM naming `what` */
    void (*free)(void *p);
    int (*host_malloc)(void **p, size_t bytes);
    void (*host_free)(void *p);
    int (*memset)(void *dst, int value, size_t bytes, void *stream);
    int (*sync)(void *stream);
    int (*capture_begin)(void *stream);
    int (*capture_end)(void *stream, void **exec);
    int (*launch)(void *exec, void *stream);
    void (*graph_free)(void *exec);
} cp_dev_ops;

#ifdef CP_WITH_CUDA
extern const cp_dev_ops cp_dev_cuda_ops; /* the CUDA runtime's */
#endif

typedef struct {
    const cp_dev_ops *ops;
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
    int ngraphs, graphs_off, graph_fails;
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

/* Make the arena at least `bytes` (and the host twin `host_bytes`); on OOM CP_ERR_DEVICE_OOM is returned and the
 * context holds an arena of its old size again (possibly at another address, or none when even that failed).
 * Cached graphs (which point into the arena) are dropped whenever the arena moves. Runners therefore never keep
 * pointers into the arena across calls: they lay their views out from c->arena at every pass. */
int cp_dev_arena_reserve(cp_dev_ctx *c, size_t bytes, size_t host_bytes);

/* Graph cache: find by key (NULL if absent); add takes ownership of exec (evicts the least recently used). */
void *cp_dev_graph_find(cp_dev_ctx *c, const int64_t key[6]);
void cp_dev_graph_add(cp_dev_ctx *c, const int64_t key[6], void *exec);
void cp_dev_graphs_clear(cp_dev_ctx *c);

/* Run `fn(arg)` (which enqueues work on c->stream) either directly or through a cached/captured graph keyed by
 * key. The first run of a key is a direct warm-up (lazy module loading, cuBLAS heuristics and workspace happen
 * outside any capture); the second captures. A capture that fails runs fn directly; after CP_DEV_GRAPH_FAILS
 * failed captures the context runs without graphs. fn must derive every pointer from the context's current arena
 * (never from views cached across calls): a reserve may move the arena. */
int cp_dev_run(cp_dev_ctx *c, int use_graph, const int64_t key[6], int (*fn)(void *), void *arg);

/* One transformer block's weights on the device. */
typedef struct {
    void *qkv_w, *o_w, *fc1_w, *fc2_w; /* (3W, W), (W, W), (F, W), (W, F) dtype */
    float *qkv_b, *o_b, *fc1_b, *fc2_b, *ln1_g, *ln1_b, *ln2_g, *ln2_b;
} cp_dev_layer;

/* Place one block (width W, FFN F) in the weight allocation (see cp_dev_place). */
void cp_dev_layer_place(cp_dev_ctx *c, cp_dev_layer *d, int64_t W, int64_t F);
/* Upload one block of the engine's model: matrices as c->dt, vectors fp32. */
int cp_dev_layer_upload(cp_dev_ctx *c, cp_dev_layer *d, const cp_encoder_layer *s);
/* Upload an out-in matrix of any storage type as dtype dt (dequantised on the host in row chunks that fit the
 * staging buffer when it is not float32). */
int cp_dev_upload_wmat(cp_dev_ctx *c, void *dst, const cp_wmat *w, int dt);

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

/* Graph buckets of the encoder runner: packed tokens rounded up (16 up to 256, 64 up to 1024, then 256; never past
 * cap), prompts rounded up to a power of two (never past cap). */
int64_t cp_dev_bucket_tokens(int64_t T, int64_t cap);
int64_t cp_dev_bucket_prompts(int64_t n, int64_t cap);

/* CP_ERR_INVALID_ARG naming the first value of q[n] (rows of d) that float16 cannot hold (|v| > 65504 or not
 * finite): queries to a float16 device index are converted on the device. */
int cp_dev_check_f16(const float *q, int64_t n, int64_t d);

/* The device self-test: the arena and graph policies over host fakes, the buckets, the float16 check. Fills up to
 * `max` results (name, ok, detail); returns how many. Runs on any machine. */
typedef struct {
    const char *name;
    int ok;
    char detail[200];
} cp_dev_selftest_result;
int cp_device_selftest(cp_dev_selftest_result *res, int max);

#endif /* CP_DEVICE_CTX_H */
