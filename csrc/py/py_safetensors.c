/* py_safetensors.c — safetensors access from Python (test hooks and the SD K/V reader build on it). */
#include "py_common.h"

#include "model/cp_safetensors.h"

/* A test hook: parse a safetensors file and list its tensors (name, dtype, shape) without touching the data. */
static PyObject *py_safetensors_info(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *path_obj = NULL;
    if (!PyUnicode_FSConverter(arg, &path_obj)) return NULL;
    cp_st_set *st = NULL;
    int rc;
    const char *path = PyBytes_AS_STRING(path_obj);
    Py_BEGIN_ALLOW_THREADS
    rc = cp_st_open(path, &st);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (rc != CP_OK) return cp_py_raise(rc);
    PyObject *d = PyDict_New();
    for (size_t i = 0; d && i < cp_st_count(st); i++) {
        const cp_st_tensor *t = cp_st_at(st, i);
        PyObject *shape = PyTuple_New(t->ndim);
        for (int k = 0; shape && k < t->ndim; k++) PyTuple_SET_ITEM(shape, k, PyLong_FromLongLong(t->shape[k]));
        PyObject *v = shape ? Py_BuildValue("(sN)", cp_dtype_name(t->dtype), shape) : NULL;
        if (!v || PyDict_SetItemString(d, t->name, v) < 0) Py_CLEAR(d);
        Py_XDECREF(v);
    }
    cp_st_close(st);
    return d;
}

static PyMethodDef safetensors_functions[] = {
    {"_safetensors_info", py_safetensors_info, METH_O,
     "_safetensors_info(path) -> {name: (dtype, shape)}: parse and bounds-check a safetensors file or directory."},
    {NULL, NULL, 0, NULL}};

int cp_py_add_safetensors(PyObject *m) { return PyModule_AddFunctions(m, safetensors_functions); }
