/* py_encoder_common.h — pieces shared by the CPU encoder bindings (py_encoder.c) and the CUDA runner bindings
 * (py_cuda.c): int32 id arguments, the (ids[, mask], flag) -> float32 output call frame, type registration. */
#ifndef CP_PY_ENCODER_COMMON_H
#define CP_PY_ENCODER_COMMON_H

#include "py_common.h"

#include "model/cp_clip.h"
#include "model/cp_minilm.h"

/* The loaded model inside a ClipTextModel / MiniLMModel object (py_encoder.c). */
const cp_clip_model *cp_py_clip_model_of(PyObject *obj);
const cp_minilm_model *cp_py_minilm_model_of(PyObject *obj);

/** Width of ClipTextModel.encode's output: the projection if there is one, else the hidden size. */
static inline npy_intp cp_py_clip_out_width(const cp_clip_config *c) {
    return c->proj_dim > 0 ? c->proj_dim : c->width;
}

/** int32 (B, L) C-contiguous view of an array argument (InvalidArgumentError naming `what` otherwise). */
PyArrayObject *cp_py_ids_arg(PyObject *o, const char *what);

/* What an encoder method takes and returns. */
typedef enum {
    CP_PY_ENC_CLIP_ENCODE, /* encode(ids, normalize=True) -> (B, width) */
    CP_PY_ENC_CLIP_HIDDEN, /* hidden_states(ids, layer=-1) -> (B, L, width) */
    CP_PY_ENC_MINI_ENCODE  /* encode(ids, mask, normalize=True) -> (B, width) */
} cp_py_enc_kind;

/* One call: the argument arrays, the output array and raw pointers that are safe to use with the GIL released. */
typedef struct {
    PyArrayObject *ids, *mask, *out;
    const int32_t *ip, *mp;
    float *op;
    npy_intp B, L;
    int flag; /* normalize or layer */
    int rc;   /* set by the caller to the C call's status */
} cp_py_enc_call;

/** Parse args/kw for `kind`, convert ids (and mask), allocate the float32 output of the given width.
 *  0 on success; -1 with an exception set and nothing held. */
int cp_py_enc_begin(cp_py_enc_call *c, PyObject *args, PyObject *kw, cp_py_enc_kind kind, npy_intp width);

/** Release the arguments; return the output when c->rc == CP_OK, else drop it and raise for c->rc. */
PyObject *cp_py_enc_end(cp_py_enc_call *c);

/** PyType_FromSpec + PyModule_AddObject as `name`; 0 or -1. */
int cp_py_add_type(PyObject *m, PyType_Spec *spec, const char *name);

#endif
