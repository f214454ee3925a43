/* py_file_common.c — see py_file_common.h. */
#include "py_file_common.h"

#include "py_limits.h"

#include <stdlib.h>
#include <string.h>

PyObject *cp_py_take_exc(void) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}

PyObject *cp_py_read_file(PyObject *path, const char *what) {
    PyObject *io = PyImport_ImportModule("io");
    if (!io) return NULL;
    PyObject *f = PyObject_CallMethod(io, "open", "Os", path, "rb");
    Py_DECREF(io);
    PyObject *data = NULL;
    if (f) {
        data = PyObject_CallMethod(f, "read", NULL);
        PyObject *r = PyObject_CallMethod(f, "close", NULL);
        Py_XDECREF(r);
        Py_DECREF(f);
    }
    if (!data && PyErr_ExceptionMatches(PyExc_OSError)) {
        PyObject *exc = cp_py_take_exc();
        PyErr_Format(cp_py_FileAccessError, "cannot read %s%R: %S", what, path, exc);
        Py_XDECREF(exc);
    }
    return data;
}

PyObject *cp_py_int_list(const int32_t *ids, size_t n) {
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; l && i < n; i++) {
        PyObject *v = PyLong_FromLong(ids[i]);
        if (!v) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, v);
    }
    return l;
}

int cp_py_padding_mode(const char *padding) {
    if (strcmp(padding, "longest") == 0) return 0;
    if (strcmp(padding, "max_length") == 0) return 1;
    PyErr_Format(cp_py_InvalidArgumentError, "padding must be \"longest\" or \"max_length\", got \"%s\"", padding);
    return -1;
}

PyObject *cp_py_ids_mask(const int32_t *buf, const int32_t *lens, size_t n, size_t L, int pad_max) {
    size_t width = L;
    if (!pad_max) {
        width = 0;
        for (size_t i = 0; i < n; i++)
            if ((size_t)lens[i] > width) width = (size_t)lens[i];
    }
    npy_intp dims[2] = {(npy_intp)n, (npy_intp)width};
    PyArrayObject *ids = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT32);
    PyArrayObject *mask = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT32);
    PyObject *res = NULL;
    if (ids && mask) {
        int32_t *di = (int32_t *)PyArray_DATA(ids), *dm = (int32_t *)PyArray_DATA(mask);
        for (size_t i = 0; i < n; i++) {
            memcpy(di + i * width, buf + i * L, sizeof(int32_t) * width);
            for (size_t k = 0; k < width; k++) dm[i * width + k] = (int32_t)k < lens[i];
        }
        res = PyTuple_Pack(2, (PyObject *)ids, (PyObject *)mask);
    }
    Py_XDECREF(ids);
    Py_XDECREF(mask);
    return res;
}

PyObject *cp_py_encode_rows(cp_py_batch_fn fn, const void *tok, PyObject *texts, size_t max_length, int pad_max) {
    cp_py_texts tx;
    if (cp_py_texts_get(texts, &tx, "texts") < 0) return NULL;
    size_t n = (size_t)tx.n, L = max_length, total;
    if (cp_py_check_out("tokenizer", (double)n, (double)L, 3 * sizeof(int32_t)) < 0) { /* py_limits.h */
        cp_py_texts_release(&tx);
        return NULL;
    }
    PyObject *res = NULL;
    int32_t *lens = PyMem_Malloc(sizeof(int32_t) * (n ? n : 1)), *buf = NULL;
    if (cp_mul_size(n, L, &total) != CP_OK || total > PY_SSIZE_T_MAX / 4) {
        cp_py_raise(CP_ERR_INVALID_ARG);
        goto error;
    }
    buf = PyMem_Malloc(sizeof(int32_t) * (total ? total : 1));
    if (!lens || !buf) {
        PyErr_NoMemory();
        goto error;
    }
    int rc;
    cp_batch_status st;
    Py_BEGIN_ALLOW_THREADS rc = fn(tok, tx.data, tx.len, n, L, buf, lens, &st);
    Py_END_ALLOW_THREADS if (rc != CP_OK) {
        cp_py_raise_batch(rc, &st);
        goto error;
    }
    res = cp_py_ids_mask(buf, lens, n, L, pad_max);
error:
    PyMem_Free(lens);
    PyMem_Free(buf);
    cp_py_texts_release(&tx);
    return res;
}

PyObject *cp_py_encode_one(cp_py_encode_fn fn, const void *tok, PyObject *text) {
    cp_py_text t;
    if (cp_py_text_get(text, &t, "text") < 0) return NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = fn(tok, t.data, (size_t)t.len, &ids, &n);
    Py_END_ALLOW_THREADS cp_py_text_release(&t);
    if (rc != CP_OK) return cp_py_raise(rc);
    PyObject *l = cp_py_int_list(ids, n);
    free(ids);
    return l;
}

PyObject *cp_py_id_strings(cp_py_id_str_fn fn, const void *tok, PyObject *ids, const char *what, const char *errors) {
    PyObject *seq = PySequence_Fast(ids, "ids must be a sequence of integers");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *l = PyList_New(n);
    for (Py_ssize_t i = 0; l && i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_CLEAR(l);
            break;
        }
        size_t len = 0;
        const char *s = (v >= INT32_MIN && v <= INT32_MAX) ? fn(tok, (int32_t)v, &len) : NULL;
        if (!s) {
            PyErr_Format(cp_py_InvalidArgumentError, "%s id %ld is not in the vocabulary", what, v);
            Py_CLEAR(l);
            break;
        }
        PyObject *u = PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, errors);
        if (!u) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, i, u);
    }
    Py_DECREF(seq);
    return l;
}
