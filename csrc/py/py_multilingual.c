/* py_multilingual.c — the multilingual part's module functions: the 4-bit GEMM kernels (model/cp_q4.h) exposed for
 * tests and benchmarks (_q4_matmul, _q4_isa). The e5 model itself is an EncoderModel (family "e5"). */
#include "py_common.h"

#include <string.h>

#include "model/cp_q4.h"

/* _q4_matmul(x float32 (M, k), w uint8 (n, k/32*18) Q4_0 blocks, bias float32 (n) | None, kernel) -> (M, n)
 * kernel: "auto" (float activations, the dispatched ISA), "c" (float, portable), "int8" (int8 activations,
 * dispatched), "int8-c" (int8, portable). */
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
    else {
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
    Py_BEGIN_ALLOW_THREADS rc = fn(xp, k, M, wp, n, k, bp, yp, n, 0);
    Py_END_ALLOW_THREADS if (rc != CP_OK) {
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

static PyMethodDef ML_methods[] = {
    {"_q4_matmul", (PyCFunction)(void (*)(void))py_q4_matmul, METH_VARARGS | METH_KEYWORDS,
     "_q4_matmul(x, w, bias=None, kernel='auto') -> x . W^T + bias for Q4_0 blocks w (tests, benchmarks)."},
    {"_q4_isa", py_q4_isa, METH_NOARGS, "_q4_isa() -> 'avx512' | 'avx2' | 'c': the 4-bit GEMM kernel in use."},
    {NULL},
};

int cp_py_add_multilingual(PyObject *m) { return PyModule_AddFunctions(m, ML_methods); }
