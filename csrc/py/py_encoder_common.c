/* py_encoder_common.c — see py_encoder_common.h. */
#include "py_encoder_common.h"

PyArrayObject *cp_py_ids_arg(PyObject *o, const char *what) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(o, NPY_INT32, 2, 2, NPY_ARRAY_CARRAY_RO);
    if (a == NULL) {
        PyErr_Clear();
        PyErr_Format(cp_py_InvalidArgumentError, "%s must be a 2-D int32 array (batch, length)", what);
    }
    return a;
}

/* ids and the optional mask as int32 views of the same shape; 0, or -1 with an exception set and nothing held. */
static int id_args(PyObject *ids_obj, PyObject *mask_obj, PyArrayObject **ids, PyArrayObject **mask) {
    *mask = NULL;
    *ids = cp_py_ids_arg(ids_obj, "ids");
    if (*ids == NULL) return -1;
    if (mask_obj == NULL || mask_obj == Py_None) return 0;
    *mask = cp_py_ids_arg(mask_obj, "mask");
    if (*mask == NULL) {
        Py_CLEAR(*ids);
        return -1;
    }
    if (PyArray_DIM(*mask, 0) != PyArray_DIM(*ids, 0) || PyArray_DIM(*mask, 1) != PyArray_DIM(*ids, 1)) {
        PyErr_SetString(cp_py_DimensionMismatchError, "ids and mask must have the same shape");
        Py_CLEAR(*ids);
        Py_CLEAR(*mask);
        return -1;
    }
    return 0;
}

/* Runs one call: out (ndim, dims) allocated, the runner called without the GIL, arguments released. */
static PyObject *call(void *run, const cp_py_runner_ops *ops, PyArrayObject *ids, PyArrayObject *mask, int hidden,
                      int flag, int final_norm, int ndim, npy_intp *dims) {
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(ndim, dims, NPY_FLOAT32);
    if (out == NULL) {
        Py_DECREF(ids);
        Py_XDECREF(mask);
        return NULL;
    }
    const int32_t *ip = PyArray_DATA(ids), *mp = mask ? PyArray_DATA(mask) : NULL;
    float *op = PyArray_DATA(out);
    const int64_t B = PyArray_DIM(ids, 0), L = PyArray_DIM(ids, 1);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = hidden ? ops->hidden(run, ip, mp, B, L, flag, final_norm, op) : ops->encode(run, ip, mp, B, L, flag, op);
    Py_END_ALLOW_THREADS
    Py_DECREF(ids);
    Py_XDECREF(mask);
    if (rc != CP_OK) {
        Py_DECREF(out);
        return cp_py_raise(rc);
    }
    return (PyObject *)out;
}

PyObject *cp_py_enc_encode(const cp_encoder_model *m, void *run, const cp_py_runner_ops *ops, PyObject *args,
                           PyObject *kw) {
    static char *kwlist[] = {"ids", "mask", "normalize", NULL};
    PyObject *ids_obj, *mask_obj = NULL;
    int normalize = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Op:encode", kwlist, &ids_obj, &mask_obj, &normalize)) return NULL;
    PyArrayObject *ids, *mask;
    if (id_args(ids_obj, mask_obj, &ids, &mask) < 0) return NULL;
    npy_intp dims[2] = {PyArray_DIM(ids, 0), (npy_intp)cp_encoder_out_dim(&m->d)};
    return call(run, ops, ids, mask, 0, normalize, 0, 2, dims);
}

PyObject *cp_py_enc_hidden(const cp_encoder_model *m, void *run, const cp_py_runner_ops *ops, PyObject *args,
                           PyObject *kw) {
    static char *kwlist[] = {"ids", "layer", "mask", "final_norm", NULL};
    PyObject *ids_obj, *mask_obj = NULL;
    int layer = -1, final_norm = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|iOp:hidden_states", kwlist, &ids_obj, &layer, &mask_obj,
                                     &final_norm))
        return NULL;
    PyArrayObject *ids, *mask;
    if (id_args(ids_obj, mask_obj, &ids, &mask) < 0) return NULL;
    npy_intp dims[3] = {PyArray_DIM(ids, 0), PyArray_DIM(ids, 1), (npy_intp)m->d.width};
    return call(run, ops, ids, mask, 1, layer, final_norm, 3, dims);
}

int cp_py_add_type(PyObject *m, PyType_Spec *spec, const char *name) {
    PyObject *t = PyType_FromSpec(spec);
    if (t == NULL || PyModule_AddObject(m, name, t) < 0) {
        Py_XDECREF(t);
        return -1;
    }
    return 0;
}
