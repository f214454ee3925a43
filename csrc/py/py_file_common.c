/* py_file_common.c — see py_file_common.h. */
#include "py_file_common.h"

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
