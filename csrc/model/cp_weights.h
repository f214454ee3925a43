/* cp_weights.h — binds named tensors of a safetensors set to float32 pointers, shared by the CLIP and MiniLM
 * loaders (and by any device backend, which uploads from the same pointers).
 *
 * Binding runs in two passes over the same loader code: the "plan" pass looks every tensor up, checks its shape,
 * collects every missing name and every shape mismatch, and sums the bytes that need conversion; then one buffer is
 * allocated for all converted tensors and the "fill" pass lays pointers into it. F32 tensors whose data is 4-byte
 * aligned are used in place from the read-only mapping (no copy); F16/BF16/F64 are converted once.
 */
#ifndef CP_WEIGHTS_H
#define CP_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "model/cp_safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    cp_st_set *st;      /* owned */
    int pass;           /* 0: plan, 1: fill */
    float *buf;         /* one allocation for all converted tensors (64-byte aligned) */
    size_t buf_floats, buf_used;
    char missing[4096]; /* comma-separated missing names (plan pass) */
    size_t nmissing;
    char shape_err[1024];
    int nshape_err;
    int convert_err;    /* first error from conversion (fill pass) */
    uint64_t hash;      /* XXH64 chained over names, shapes, dtypes and sampled bytes of every bound tensor */
} cp_wstore;

/** Initialise a store over an opened set (takes ownership of st). */
void cp_wstore_init(cp_wstore *ws, cp_st_set *st);

/** Release the conversion buffer and the set. */
void cp_wstore_release(cp_wstore *ws);

/** Look up `name`, expect `ndim` dims `shape` (-1 = any). Returns the float32 pointer in the fill pass, NULL in the
 *  plan pass or on error (errors are collected in ws and reported by cp_wstore_finish_plan / _finish_fill). */
const float *cp_wstore_get(cp_wstore *ws, const char *name, int ndim, const int64_t *shape);

/** Convenience: 1-D / 2-D expectations. */
const float *cp_wstore_get1(cp_wstore *ws, const char *name, int64_t n0);
const float *cp_wstore_get2(cp_wstore *ws, const char *name, int64_t n0, int64_t n1);

/** Bind `n` tensors of identical shape (rows, cols) (or (rows) when cols == 0) into one contiguous converted block
 *  (rows*n, cols): used to fuse Q, K, V projections into one GEMM. Always copies (F32 included). */
const float *cp_wstore_get_concat(cp_wstore *ws, const char *const *names, int n, int64_t rows, int64_t cols);

/** End of the plan pass: CP_ERR_MODEL_FORMAT listing missing tensors / wrong shapes; else allocates the buffer. */
int cp_wstore_finish_plan(cp_wstore *ws, const char *model_what);

/** End of the fill pass. */
int cp_wstore_finish_fill(cp_wstore *ws);

#ifdef __cplusplus
}
#endif
#endif /* CP_WEIGHTS_H */
