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

int cp_py_enc_begin(cp_py_enc_call *c, PyObject *args, PyObject *kw, cp_py_enc_kind kind, npy_intp width) {
    static char *kw_encode[] = {"ids", "normalize", NULL};
    static char *kw_hidden[] = {"ids", "layer", NULL};
    static char *kw_mini[] = {"ids", "mask", "normalize", NULL};
    PyObject *ids_obj, *mask_obj = NULL;
    memset(c, 0, sizeof *c);
    int ok;
    if (kind == CP_PY_ENC_CLIP_ENCODE) {
        c->flag = 1;
        ok = PyArg_ParseTupleAndKeywords(args, kw, "O|p:encode", kw_encode, &ids_obj, &c->flag);
    } else if (kind == CP_PY_ENC_CLIP_HIDDEN) {
        c->flag = -1;
        ok = PyArg_ParseTupleAndKeywords(args, kw, "O|i:hidden_states", kw_hidden, &ids_obj, &c->flag);
    } else {
        c->flag = 1;
        ok = PyArg_ParseTupleAndKeywords(args, kw, "OO|p:encode", kw_mini, &ids_obj, &mask_obj, &c->flag);
    }
    if (!ok) return -1;
    c->ids = cp_py_ids_arg(ids_obj, "ids");
    if (c->ids == NULL) return -1;
    c->B = PyArray_DIM(c->ids, 0);
    c->L = PyArray_DIM(c->ids, 1);
    if (mask_obj != NULL) {
        c->mask = cp_py_ids_arg(mask_obj, "mask");
        if (c->mask == NULL) goto fail;
        if (PyArray_DIM(c->mask, 0) != c->B || PyArray_DIM(c->mask, 1) != c->L) {
            PyErr_SetString(cp_py_DimensionMismatchError, "ids and mask must have the same shape");
            goto fail;
        }
        c->mp = PyArray_DATA(c->mask);
    }
    npy_intp dims[3] = {c->B, width, 0};
    if (kind == CP_PY_ENC_CLIP_HIDDEN) dims[1] = c->L, dims[2] = width;
    c->out = (PyArrayObject *)PyArray_SimpleNew(kind == CP_PY_ENC_CLIP_HIDDEN ? 3 : 2, dims, NPY_FLOAT32);
    if (c->out == NULL) goto fail;
    c->ip = PyArray_DATA(c->ids);
    c->op = PyArray_DATA(c->out);
    return 0;
fail:
    Py_XDECREF(c->ids);
    Py_XDECREF(c->mask);
    return -1;
}

PyObject *cp_py_enc_end(cp_py_enc_call *c) {
    Py_DECREF(c->ids);
    Py_XDECREF(c->mask);
    if (c->rc != CP_OK) {
        Py_DECREF(c->out);
        return cp_py_raise(c->rc);
    }
    return (PyObject *)c->out;
}

int cp_py_add_type(PyObject *m, PyType_Spec *spec, const char *name) {
    PyObject *t = PyType_FromSpec(spec);
    if (t == NULL || PyModule_AddObject(m, name, t) < 0) {
        Py_XDECREF(t);
        return -1;
    }
    return 0;
}
