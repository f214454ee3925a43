/* py_encoder_common.h — the call frame shared by the engine's two Python types, clipprompt._C.EncoderModel (the CPU
 * runner, py_encoder.c) and clipprompt._C.EncoderModelCUDA (the CUDA runner, py_cuda.c): argument parsing, int32
 * id/mask views, the float32 output, the GIL released around the runner call, type registration. */
#ifndef CP_PY_ENCODER_COMMON_H
#define CP_PY_ENCODER_COMMON_H

#include "py_common.h"

#include "model/cp_encoder.h"

/** The loaded model inside an EncoderModel object (NULL with TypeError for anything else). The caller keeps a
 *  reference to `obj` for as long as it uses the model. */
const cp_encoder_model *cp_py_encoder_model_of(PyObject *obj);

/** int32 (B, L) C-contiguous view of an array argument (InvalidArgumentError naming `what` otherwise). */
PyArrayObject *cp_py_ids_arg(PyObject *o, const char *what);

/** What a runner does; `run` is the runner object (cp_runner_cpu or cp_encoder_cuda). Called without the GIL. */
typedef struct {
    int (*encode)(void *run, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, int normalize,
                  float *out);
    int (*hidden)(void *run, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, int layer,
                  int final_norm, float *out);
} cp_py_runner_ops;

/** encode(ids, mask=None, normalize=True) -> float32 (B, D). */
PyObject *cp_py_enc_encode(const cp_encoder_model *m, void *run, const cp_py_runner_ops *ops, PyObject *args,
                           PyObject *kw);
/** hidden_states(ids, layer=-1, mask=None, final_norm=True) -> float32 (B, L, W). */
PyObject *cp_py_enc_hidden(const cp_encoder_model *m, void *run, const cp_py_runner_ops *ops, PyObject *args,
                           PyObject *kw);

/** PyType_FromSpec + PyModule_AddObject as `name`; 0 or -1. */
int cp_py_add_type(PyObject *m, PyType_Spec *spec, const char *name);

#endif
