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

/* ---- SafetensorsFile: a memory-mapped set whose tensors are handed out as read-only NumPy views ---------- */

typedef struct {
    PyObject_HEAD
    cp_st_set *st;
    PyObject *paths; /* tuple of str */
} STFileObject;

static int st_npy_type(cp_dtype dt) {
    switch (dt) {
    case CP_DT_F64: return NPY_FLOAT64;
    case CP_DT_F32: return NPY_FLOAT32;
    case CP_DT_F16: return NPY_FLOAT16;
    case CP_DT_I64: return NPY_INT64;
    case CP_DT_I32: return NPY_INT32;
    case CP_DT_I16: return NPY_INT16;
    case CP_DT_I8: return NPY_INT8;
    case CP_DT_U8: return NPY_UINT8;
    case CP_DT_BOOL: return NPY_BOOL;
    case CP_DT_U16: return NPY_UINT16;
    case CP_DT_U32: return NPY_UINT32;
    case CP_DT_U64: return NPY_UINT64;
    default: return -1; /* BF16, F8: no NumPy dtype */
    }
}

static PyObject *STFile_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", NULL};
    PyObject *arg;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:SafetensorsFile", kwlist, &arg)) return NULL;
    PyObject *seq = NULL;
    if (PyList_Check(arg) || PyTuple_Check(arg)) seq = PySequence_Tuple(arg);
    else seq = PyTuple_Pack(1, arg);
    if (seq == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    if (n < 1 || n > 4096) {
        Py_DECREF(seq);
        PyErr_Format(cp_py_InvalidArgumentError, "SafetensorsFile: between 1 and 4096 files, got %zd", n);
        return NULL;
    }
    PyObject **enc = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    const char **names = PyMem_Calloc((size_t)n, sizeof(char *));
    PyObject *strs = PyTuple_New(n);
    STFileObject *self = NULL;
    int ok = enc && names && strs;
    if (!enc || !names) PyErr_NoMemory();
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(seq, i);
        if (!PyUnicode_FSConverter(item, &enc[i])) ok = 0;
        else {
            names[i] = PyBytes_AS_STRING(enc[i]);
            PyObject *s = PyUnicode_DecodeFSDefault(names[i]);
            if (s == NULL) ok = 0;
            else PyTuple_SET_ITEM(strs, i, s);
        }
    }
    if (ok) {
        cp_st_set *st = NULL;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = n == 1 ? cp_st_open(names[0], &st) : cp_st_open_files(names, (int)n, &st);
        Py_END_ALLOW_THREADS
        if (rc != CP_OK) cp_py_raise(rc);
        else if ((self = (STFileObject *)type->tp_alloc(type, 0)) == NULL) cp_st_close(st);
        else {
            self->st = st;
            self->paths = Py_NewRef(strs);
        }
    }
    for (Py_ssize_t i = 0; enc && i < n; i++) Py_XDECREF(enc[i]);
    PyMem_Free(enc);
    PyMem_Free(names);
    Py_XDECREF(strs);
    Py_DECREF(seq);
    return (PyObject *)self;
}

static void STFile_dealloc(STFileObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (self->st) cp_st_close(self->st);
    Py_XDECREF(self->paths);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static const cp_st_tensor *st_lookup(STFileObject *self, PyObject *name) {
    if (!PyUnicode_Check(name)) {
        PyErr_Format(cp_py_InvalidArgumentError, "tensor name must be str, not %.80s", Py_TYPE(name)->tp_name);
        return NULL;
    }
    const char *s = PyUnicode_AsUTF8(name);
    if (s == NULL) return NULL;
    const cp_st_tensor *t = cp_st_find(self->st, s);
    if (t == NULL) PyErr_Format(cp_py_ModelFormatError, "tensor %R is not in %R", name, self->paths);
    return t;
}

static PyObject *st_shape(const cp_st_tensor *t) {
    PyObject *shape = PyTuple_New(t->ndim);
    for (int k = 0; shape && k < t->ndim; k++) {
        PyObject *v = PyLong_FromLongLong(t->shape[k]);
        if (v == NULL) Py_CLEAR(shape);
        else PyTuple_SET_ITEM(shape, k, v);
    }
    return shape;
}

static PyObject *STFile_names(STFileObject *self, PyObject *unused) {
    (void)unused;
    size_t n = cp_st_count(self->st);
    PyObject *out = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; out && i < n; i++) {
        PyObject *s = PyUnicode_FromString(cp_st_at(self->st, i)->name);
        if (s == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, (Py_ssize_t)i, s);
    }
    return out;
}

static PyObject *STFile_info(STFileObject *self, PyObject *name) {
    const cp_st_tensor *t = st_lookup(self, name);
    if (t == NULL) return NULL;
    PyObject *shape = st_shape(t);
    return shape ? Py_BuildValue("(sN)", cp_dtype_name(t->dtype), shape) : NULL;
}

/* A read-only view of the tensor's bytes inside the mapping; the array keeps this object (and the mapping) alive. */
static PyObject *STFile_array(STFileObject *self, PyObject *name) {
    const cp_st_tensor *t = st_lookup(self, name);
    if (t == NULL) return NULL;
    int tn = st_npy_type(t->dtype);
    if (tn < 0) {
        PyErr_Format(cp_py_ModelFormatError, "tensor %R has dtype %s, which NumPy cannot view; use to_float32()",
                     name, cp_dtype_name(t->dtype));
        return NULL;
    }
    npy_intp dims[CP_ST_MAX_DIMS];
    for (int k = 0; k < t->ndim; k++) dims[k] = (npy_intp)t->shape[k];
    PyArray_Descr *descr = PyArray_DescrFromType(tn);
    if (descr == NULL) return NULL;
    /* open() checked nbytes == numel * itemsize and that [data, data + nbytes) lies inside the file */
    if ((size_t)t->numel * (size_t)PyDataType_ELSIZE(descr) != t->nbytes) {
        Py_DECREF(descr);
        PyErr_Format(cp_py_ModelFormatError, "tensor %R: %zu bytes do not hold its shape", name, t->nbytes);
        return NULL;
    }
    int aligned = ((uintptr_t)t->data % (uintptr_t)PyDataType_ALIGNMENT(descr)) == 0;
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, descr, t->ndim, dims, NULL, (void *)t->data,
                                         aligned ? NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED : NPY_ARRAY_C_CONTIGUOUS,
                                         NULL);
    if (arr == NULL) return NULL;
    PyArray_CLEARFLAGS((PyArrayObject *)arr, NPY_ARRAY_WRITEABLE);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, Py_NewRef((PyObject *)self)) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    if (!aligned) { /* an unaligned view: hand out an aligned copy instead */
        PyObject *copy = PyArray_NewCopy((PyArrayObject *)arr, NPY_CORDER);
        Py_DECREF(arr);
        return copy;
    }
    return arr;
}

/* A new float32 array converted from a floating tensor (F32/F16/BF16/F64). */
static PyObject *STFile_to_float32(STFileObject *self, PyObject *name) {
    const cp_st_tensor *t = st_lookup(self, name);
    if (t == NULL) return NULL;
    npy_intp dims[CP_ST_MAX_DIMS];
    for (int k = 0; k < t->ndim; k++) dims[k] = (npy_intp)t->shape[k];
    PyObject *arr = PyArray_SimpleNew(t->ndim, dims, NPY_FLOAT32);
    if (arr == NULL) return NULL;
    int rc;
    float *dst = (float *)PyArray_DATA((PyArrayObject *)arr);
    Py_BEGIN_ALLOW_THREADS
    rc = cp_st_to_f32(t, dst);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) {
        Py_DECREF(arr);
        return cp_py_raise(rc);
    }
    return arr;
}

static int STFile_contains(STFileObject *self, PyObject *name) {
    if (!PyUnicode_Check(name)) return 0;
    const char *s = PyUnicode_AsUTF8(name);
    if (s == NULL) return -1;
    return cp_st_find(self->st, s) != NULL;
}

static Py_ssize_t STFile_len(STFileObject *self) { return (Py_ssize_t)cp_st_count(self->st); }

static PyObject *STFile_get_paths(STFileObject *self, void *c) {
    (void)c;
    return Py_NewRef(self->paths);
}

static PyObject *STFile_repr(STFileObject *self) {
    return PyUnicode_FromFormat("SafetensorsFile(%R, tensors=%zd)", self->paths, (Py_ssize_t)cp_st_count(self->st));
}

static PyMethodDef STFile_methods[] = {
    {"names", (PyCFunction)STFile_names, METH_NOARGS, "names() -> list of tensor names, in file order."},
    {"info", (PyCFunction)STFile_info, METH_O, "info(name) -> (dtype, shape). ModelFormatError when absent."},
    {"array", (PyCFunction)STFile_array, METH_O,
     "array(name) -> read-only ndarray viewing the mapped bytes (no copy; BF16/F8 refused: use to_float32)."},
    {"to_float32", (PyCFunction)STFile_to_float32, METH_O,
     "to_float32(name) -> new float32 ndarray of a F32/F16/BF16/F64 tensor."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef STFile_getset[] = {{"paths", (getter)STFile_get_paths, NULL, "The files of the set.", NULL},
                                      {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot STFile_slots[] = {
    {Py_tp_new, STFile_new},
    {Py_tp_dealloc, STFile_dealloc},
    {Py_tp_methods, STFile_methods},
    {Py_tp_getset, STFile_getset},
    {Py_tp_repr, STFile_repr},
    {Py_sq_contains, STFile_contains},
    {Py_sq_length, STFile_len},
    {Py_tp_doc, "SafetensorsFile(path_or_paths)\n\nA safetensors file (or a list of shard files, or a directory "
                "holding model.safetensors) mapped read-only. Tensors are bounds-checked on open and read only when "
                "asked for: array(name) is a zero-copy read-only view; the mapping lives as long as any view."},
    {0, NULL}};

static PyType_Spec STFile_spec = {"clipprompt._C.SafetensorsFile", sizeof(STFileObject), 0, Py_TPFLAGS_DEFAULT,
                                  STFile_slots};

static PyMethodDef safetensors_functions[] = {
    {"_safetensors_info", py_safetensors_info, METH_O,
     "_safetensors_info(path) -> {name: (dtype, shape)}: parse and bounds-check a safetensors file or directory."},
    {NULL, NULL, 0, NULL}};

int cp_py_add_safetensors(PyObject *m) {
    if (PyModule_AddFunctions(m, safetensors_functions) < 0) return -1;
    PyObject *t = PyType_FromSpec(&STFile_spec);
    if (t == NULL) return -1;
    if (PyModule_AddObject(m, "SafetensorsFile", t) < 0) {
        Py_DECREF(t);
        return -1;
    }
    return 0;
}
