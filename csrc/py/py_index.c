/* py_index.c — clipprompt.FlatIPIndex: the Python face of csrc/cp_index.{h,c}.
 *
 * Vectors: real floating arrays (float16/32/64) of shape (d,) or (n, d), converted to float32; any other dtype or
 * ndim -> InvalidArgumentError (a ValueError); wrong d -> DimensionMismatchError. */
#include "py_common.h"

#include "device/cp_device.h"
#include "store/cp_index.h"

int cp_py_parse_device(PyObject *obj, int *index); /* py_cuda.c */

#include <string.h>

#define CP_PY_IN_FLAGS (NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST)

typedef struct {
    PyObject_HEAD
    cp_index *ix;
    cp_index_cuda *dev; /* device="cuda": a GPU mirror used by search (NULL on the CPU) */
    int dev_index;
} PyFlatIPIndex;

/* device="cuda[:N]": attach a GPU mirror (DeviceError with the reason when there is no usable GPU). */
static int attach_device(PyFlatIPIndex *self, PyObject *device) {
    int index = 0, kind = cp_py_parse_device(device, &index);
    if (kind <= 0) return kind;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = cp_index_cuda_create(index, &self->dev);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) return cp_py_raise_int(rc);
    self->dev_index = index;
    return 0;
}

static PyTypeObject *FlatIPIndex_Type;

/* (n, d) float32 C-contiguous copy/view of `obj`; *n set. */
static PyArrayObject *as_rows(PyFlatIPIndex *self, PyObject *obj, const char *what, int64_t *n) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!a) return NULL;
    if (!PyArray_ISFLOAT(a) || PyArray_ISCOMPLEX(a)) {
        PyErr_Format(cp_py_InvalidArgumentError, "%s must be a real floating array (float16/32/64), got dtype %R",
                     what, (PyObject *)PyArray_DESCR(a));
        goto fail;
    }
    int nd = PyArray_NDIM(a);
    if (nd != 1 && nd != 2) {
        PyErr_Format(cp_py_InvalidArgumentError, "%s must have shape (d,) or (n, d), got ndim %d", what, nd);
        goto fail;
    }
    int64_t d = cp_index_dim(self->ix), got = (int64_t)PyArray_DIM(a, nd - 1);
    if (got != d) {
        PyErr_Format(cp_py_DimensionMismatchError, "%s has dimension %lld; this index has dim %lld", what,
                     (long long)got, (long long)d);
        goto fail;
    }
    *n = nd == 2 ? (int64_t)PyArray_DIM(a, 0) : 1;
    PyArrayObject *b = (PyArrayObject *)PyArray_FromAny((PyObject *)a, PyArray_DescrFromType(NPY_FLOAT32), 0, 0,
                                                        CP_PY_IN_FLAGS, NULL);
    Py_DECREF(a);
    return b;
fail:
    Py_DECREF(a);
    return NULL;
}

static PyArrayObject *as_ids(PyObject *obj, const char *what) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!a) return NULL;
    if (PyArray_SIZE(a) > 0 && !PyArray_ISINTEGER(a)) {
        PyErr_Format(cp_py_InvalidArgumentError, "%s must be integers, got dtype %R", what,
                     (PyObject *)PyArray_DESCR(a));
        Py_DECREF(a);
        return NULL;
    }
    if (PyArray_NDIM(a) > 1) {
        PyErr_Format(cp_py_InvalidArgumentError, "%s must be 1-D, got ndim %d", what, PyArray_NDIM(a));
        Py_DECREF(a);
        return NULL;
    }
    PyArrayObject *b = (PyArrayObject *)PyArray_FromAny((PyObject *)a, PyArray_DescrFromType(NPY_INT64), 0, 1,
                                                        CP_PY_IN_FLAGS, NULL);
    Py_DECREF(a);
    return b;
}

static int parse_dtype(PyObject *obj, int *dtype) {
    if (obj == NULL || obj == Py_None) {
        *dtype = CP_INDEX_FLOAT32;
        return 0;
    }
    PyObject *s = PyObject_Str(obj); /* "float32", np.float32 -> "<class 'numpy.float32'>", np.dtype -> "float32" */
    if (!s) return -1;
    const char *t = PyUnicode_AsUTF8(s);
    int ok = 0;
    if (t && (strcmp(t, "float32") == 0 || strstr(t, "numpy.float32"))) *dtype = CP_INDEX_FLOAT32, ok = 1;
    else if (t && (strcmp(t, "float16") == 0 || strstr(t, "numpy.float16"))) *dtype = CP_INDEX_FLOAT16, ok = 1;
    else if (t && strcmp(t, "bfloat16") == 0) *dtype = CP_INDEX_BFLOAT16, ok = 1;
    else if (t && (strcmp(t, "int8") == 0 || strstr(t, "numpy.int8"))) *dtype = CP_INDEX_INT8, ok = 1;
    Py_DECREF(s);
    if (!ok) {
        PyErr_Format(cp_py_InvalidArgumentError, "dtype must be 'float32', 'float16', 'bfloat16' or 'int8', got %R",
                     obj);
        return -1;
    }
    return 0;
}

static PyObject *FlatIPIndex_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"dim", "dtype", "device", NULL};
    long long dim;
    PyObject *dt = NULL, *device = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "L|OO:FlatIPIndex", kwlist, &dim, &dt, &device)) return NULL;
    int dtype;
    if (parse_dtype(dt, &dtype) < 0) return NULL;
    PyFlatIPIndex *self = (PyFlatIPIndex *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    int rc = cp_index_create(&self->ix, dim, dtype);
    if (rc != CP_OK) {
        Py_DECREF(self);
        return cp_py_raise(rc);
    }
    if (attach_device(self, device) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void FlatIPIndex_dealloc(PyFlatIPIndex *self) {
    PyTypeObject *tp = Py_TYPE(self);
    cp_index_cuda_free(self->dev);
    cp_index_free(self->ix);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *FlatIPIndex_add(PyFlatIPIndex *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "ids", NULL};
    PyObject *xo, *ido = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:add", kwlist, &xo, &ido)) return NULL;
    int64_t n;
    PyArrayObject *x = as_rows(self, xo, "add: x", &n), *ids = NULL;
    if (!x) return NULL;
    if (ido != Py_None) {
        ids = as_ids(ido, "add: ids");
        if (!ids) goto error;
        if ((int64_t)PyArray_SIZE(ids) != n) {
            PyErr_Format(cp_py_InvalidArgumentError, "add: %lld ids for %lld vectors", (long long)PyArray_SIZE(ids),
                         (long long)n);
            goto error;
        }
    }
    int rc;
    const float *xp = (const float *)PyArray_DATA(x);
    const int64_t *ip = ids ? (const int64_t *)PyArray_DATA(ids) : NULL;
    Py_BEGIN_ALLOW_THREADS rc = cp_index_add(self->ix, xp, n, ip);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) {
        cp_py_raise(rc);
        goto error;
    }
    Py_DECREF(x);
    Py_XDECREF(ids);
    Py_RETURN_NONE;
error:
    Py_DECREF(x);
    Py_XDECREF(ids);
    return NULL;
}

static PyObject *FlatIPIndex_search(PyFlatIPIndex *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"q", "k", NULL};
    PyObject *qo;
    long long k;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OL:search", kwlist, &qo, &k)) return NULL;
    if (k < 1) {
        PyErr_Format(cp_py_InvalidArgumentError, "search: k must be >= 1, got %lld", k);
        return NULL;
    }
    int64_t nq;
    PyArrayObject *q = as_rows(self, qo, "search: q", &nq);
    if (!q) return NULL;
    npy_intp dims[2] = {(npy_intp)nq, (npy_intp)k};
    PyObject *Dobj = PyArray_SimpleNew(2, dims, NPY_FLOAT32), *Iobj = PyArray_SimpleNew(2, dims, NPY_INT64);
    if (!Dobj || !Iobj) {
        Py_DECREF(q), Py_XDECREF(Dobj), Py_XDECREF(Iobj);
        return NULL;
    }
    int rc;
    const float *qp = (const float *)PyArray_DATA(q);
    float *Dp = (float *)PyArray_DATA((PyArrayObject *)Dobj);
    int64_t *Ip = (int64_t *)PyArray_DATA((PyArrayObject *)Iobj);
    /* the GPU mirror serves k up to CUDA_TOPK_MAX; larger k falls back to the CPU search */
    if (self->dev && k <= cp_index_cuda_max_k()) {
        Py_BEGIN_ALLOW_THREADS rc = cp_index_cuda_search(self->dev, self->ix, qp, nq, k, Dp, Ip);
        Py_END_ALLOW_THREADS
    } else {
        Py_BEGIN_ALLOW_THREADS rc = cp_index_search(self->ix, qp, nq, k, Dp, Ip);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(q);
    if (rc != CP_OK) {
        Py_DECREF(Dobj), Py_DECREF(Iobj);
        return cp_py_raise(rc);
    }
    PyObject *t = PyTuple_Pack(2, Dobj, Iobj);
    Py_DECREF(Dobj), Py_DECREF(Iobj);
    return t;
}

static PyObject *FlatIPIndex_remove_ids(PyFlatIPIndex *self, PyObject *arg) {
    PyArrayObject *ids = as_ids(arg, "remove_ids: ids");
    if (!ids) return NULL;
    int64_t removed = 0;
    int rc;
    const int64_t *ip = (const int64_t *)PyArray_DATA(ids);
    int64_t n = (int64_t)PyArray_SIZE(ids);
    Py_BEGIN_ALLOW_THREADS rc = cp_index_remove_ids(self->ix, ip, n, &removed);
    Py_END_ALLOW_THREADS
    Py_DECREF(ids);
    if (rc != CP_OK) return cp_py_raise(rc);
    return PyLong_FromLongLong(removed);
}

static PyObject *FlatIPIndex_reset(PyFlatIPIndex *self, PyObject *noargs) {
    Py_BEGIN_ALLOW_THREADS cp_index_reset(self->ix);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *FlatIPIndex_reconstruct(PyFlatIPIndex *self, PyObject *arg) {
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) return NULL;
    npy_intp dims[1] = {(npy_intp)cp_index_dim(self->ix)};
    PyObject *out = PyArray_SimpleNew(1, dims, NPY_FLOAT32);
    if (!out) return NULL;
    int rc;
    float *op = (float *)PyArray_DATA((PyArrayObject *)out);
    Py_BEGIN_ALLOW_THREADS rc = cp_index_reconstruct(self->ix, id, op);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) {
        Py_DECREF(out);
        return cp_py_raise(rc);
    }
    return out;
}

static PyObject *FlatIPIndex_save(PyFlatIPIndex *self, PyObject *arg) {
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path)) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = cp_index_save(self->ix, PyBytes_AS_STRING(path));
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != CP_OK) return cp_py_raise(rc);
    Py_RETURN_NONE;
}

static PyObject *FlatIPIndex_load(PyObject *cls, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "device", NULL};
    PyObject *path = NULL, *device = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|O:load", kwlist, PyUnicode_FSConverter, &path, &device))
        return NULL;
    cp_index *ix = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = cp_index_load(&ix, PyBytes_AS_STRING(path));
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != CP_OK) return cp_py_raise(rc);
    PyTypeObject *tp = (PyTypeObject *)cls;
    PyFlatIPIndex *self = (PyFlatIPIndex *)tp->tp_alloc(tp, 0);
    if (!self) {
        cp_index_free(ix);
        return NULL;
    }
    self->ix = ix;
    if (attach_device(self, device) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *FlatIPIndex_set_knobs(PyFlatIPIndex *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"block_size", "query_block", "mode", "small_nq", NULL};
    long long bs = 0, qb = 0, snq = 0;
    const char *mode = "auto";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|LLsL:_set_knobs", kwlist, &bs, &qb, &mode, &snq)) return NULL;
    int m;
    if (strcmp(mode, "auto") == 0) m = CP_INDEX_SEARCH_AUTO;
    else if (strcmp(mode, "gemm") == 0) m = CP_INDEX_SEARCH_GEMM;
    else if (strcmp(mode, "split") == 0) m = CP_INDEX_SEARCH_SPLIT;
    else {
        PyErr_Format(cp_py_InvalidArgumentError, "mode must be 'auto', 'gemm' or 'split', got '%s'", mode);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS cp_index_set_knobs(self->ix, bs, qb, m, snq);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *FlatIPIndex_set_device_knobs(PyFlatIPIndex *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"tile_bytes", "chunk", NULL};
    long long tb = 0, ch = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|LL:_set_device_knobs", kwlist, &tb, &ch)) return NULL;
    if (tb < 0 || ch < 0) {
        PyErr_SetString(cp_py_InvalidArgumentError, "tile_bytes and chunk must be >= 0");
        return NULL;
    }
    if (self->dev) cp_index_cuda_set_knobs(self->dev, (size_t)tb, (int64_t)ch);
    Py_RETURN_NONE;
}

static PyObject *FlatIPIndex_get_device(PyFlatIPIndex *self, void *c) {
    return self->dev ? PyUnicode_FromFormat("cuda:%d", self->dev_index) : PyUnicode_FromString("cpu");
}

static Py_ssize_t FlatIPIndex_len(PyFlatIPIndex *self) { return (Py_ssize_t)cp_index_ntotal(self->ix); }

static PyObject *FlatIPIndex_get_dim(PyFlatIPIndex *self, void *c) {
    return PyLong_FromLongLong(cp_index_dim(self->ix));
}
static PyObject *FlatIPIndex_get_ntotal(PyFlatIPIndex *self, void *c) {
    return PyLong_FromLongLong(cp_index_ntotal(self->ix));
}
static const char *dtype_name(const cp_index *ix) {
    static const char *const names[] = {"float32", "float16", "bfloat16", "int8"};
    return names[cp_index_dtype(ix)];
}
static PyObject *FlatIPIndex_get_dtype(PyFlatIPIndex *self, void *c) {
    return PyUnicode_FromString(dtype_name(self->ix));
}
static PyObject *FlatIPIndex_get_memory(PyFlatIPIndex *self, void *c) {
    return PyLong_FromUnsignedLongLong(cp_index_memory_bytes(self->ix));
}
static PyObject *FlatIPIndex_get_ids(PyFlatIPIndex *self, void *c) {
    for (int attempt = 0; attempt < 8; attempt++) { /* ntotal can change between the size query and the copy */
        npy_intp n = (npy_intp)cp_index_ntotal(self->ix);
        PyObject *out = PyArray_SimpleNew(1, &n, NPY_INT64);
        if (!out) return NULL;
        int64_t got = 0;
        int64_t *op = (int64_t *)PyArray_DATA((PyArrayObject *)out);
        Py_BEGIN_ALLOW_THREADS cp_index_get_ids(self->ix, op, (int64_t)n, &got);
        Py_END_ALLOW_THREADS
        if (got == (int64_t)n && cp_index_ntotal(self->ix) == (int64_t)n) return out;
        Py_DECREF(out);
    }
    PyErr_SetString(cp_py_IndexStateError, "ids: the index kept changing while being read");
    return NULL;
}

static PyObject *FlatIPIndex_repr(PyFlatIPIndex *self) {
    if (self->dev)
        return PyUnicode_FromFormat("FlatIPIndex(dim=%lld, dtype='%s', ntotal=%lld, device='cuda:%d')",
                                    (long long)cp_index_dim(self->ix), dtype_name(self->ix),
                                    (long long)cp_index_ntotal(self->ix), self->dev_index);
    return PyUnicode_FromFormat("FlatIPIndex(dim=%lld, dtype='%s', ntotal=%lld)", (long long)cp_index_dim(self->ix),
                                dtype_name(self->ix),
                                (long long)cp_index_ntotal(self->ix));
}

static PyMethodDef FlatIPIndex_methods[] = {
    {"add", (PyCFunction)(void (*)(void))FlatIPIndex_add, METH_VARARGS | METH_KEYWORDS,
     "add(x, ids=None): append rows x (n, d) (copied; float16 storage rounds to nearest even). ids: int64 >= 0, "
     "unique; default: one past the largest id ever added, counting up. Errors leave the index unchanged."},
    {"search", (PyCFunction)(void (*)(void))FlatIPIndex_search, METH_VARARGS | METH_KEYWORDS,
     "search(q, k) -> (D float32 [nq, k], I int64 [nq, k]): inner products, best first; -inf / -1 pad when "
     "k > ntotal; equal scores: earlier-added row first."},
    {"remove_ids", (PyCFunction)FlatIPIndex_remove_ids, METH_O,
     "remove_ids(ids) -> int: remove these ids (unknown ids ignored); returns how many rows were removed."},
    {"reset", (PyCFunction)FlatIPIndex_reset, METH_NOARGS, "reset(): remove everything; default ids restart at 0."},
    {"reconstruct", (PyCFunction)FlatIPIndex_reconstruct, METH_O,
     "reconstruct(id) -> float32 [d]: the stored vector; unknown id -> IndexStateError."},
    {"save", (PyCFunction)FlatIPIndex_save, METH_O, "save(path): write atomically ('CPIX' v1 + checksum)."},
    {"load", (PyCFunction)(void (*)(void))FlatIPIndex_load, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "FlatIPIndex.load(path, device=None) -> FlatIPIndex. Truncated/corrupt file -> IndexStateError."},
    {"_set_device_knobs", (PyCFunction)(void (*)(void))FlatIPIndex_set_device_knobs, METH_VARARGS | METH_KEYWORDS,
     "_set_device_knobs(tile_bytes=0, chunk=0): GPU search test knobs (score tile bytes, top-k chunk; 0: default)."},
    {"_set_knobs", (PyCFunction)(void (*)(void))FlatIPIndex_set_knobs, METH_VARARGS | METH_KEYWORDS,
     "_set_knobs(block_size=0, query_block=0, mode='auto', small_nq=0): test/tuning knobs (0: default). "
     "mode: 'auto' | 'gemm' (blocked sgemm) | 'split' (database split across threads)."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef FlatIPIndex_getset[] = {
    {"dim", (getter)FlatIPIndex_get_dim, NULL, "vector dimension", NULL},
    {"d", (getter)FlatIPIndex_get_dim, NULL, "vector dimension (FAISS spelling)", NULL},
    {"ntotal", (getter)FlatIPIndex_get_ntotal, NULL, "number of stored vectors", NULL},
    {"dtype", (getter)FlatIPIndex_get_dtype, NULL, "storage dtype: 'float32' or 'float16'", NULL},
    {"memory_bytes", (getter)FlatIPIndex_get_memory, NULL, "bytes allocated for rows, ids and the id map", NULL},
    {"ids", (getter)FlatIPIndex_get_ids, NULL, "int64 ids in row order (a copy)", NULL},
    {"device", (getter)FlatIPIndex_get_device, NULL, "'cpu' or 'cuda:N' (where search runs)", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot FlatIPIndex_slots[] = {
    {Py_tp_new, FlatIPIndex_new},
    {Py_tp_dealloc, FlatIPIndex_dealloc},
    {Py_tp_methods, FlatIPIndex_methods},
    {Py_tp_getset, FlatIPIndex_getset},
    {Py_tp_repr, FlatIPIndex_repr},
    {Py_sq_length, FlatIPIndex_len},
    {Py_tp_doc, "FlatIPIndex(dim, dtype='float32'|'float16', device='cpu'|'cuda[:N]'): exhaustive inner-product "
                "search; the data lives in C memory, device='cuda' searches a GPU mirror (k <= CUDA_TOPK_MAX); "
                "thread-safe (searches run concurrently, add/remove are exclusive)."},
    {0, NULL}};

static PyType_Spec FlatIPIndex_spec = {"clipprompt.FlatIPIndex", sizeof(PyFlatIPIndex), 0, Py_TPFLAGS_DEFAULT,
                                       FlatIPIndex_slots};

static PyObject *py_f32_to_f16_bits(PyObject *self, PyObject *arg) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FromAny(arg, PyArray_DescrFromType(NPY_FLOAT32), 0, 0,
                                                        CP_PY_IN_FLAGS, NULL);
    if (!a) return NULL;
    PyObject *out = PyArray_SimpleNew(PyArray_NDIM(a), PyArray_DIMS(a), NPY_UINT16);
    if (out) {
        const float *s = (const float *)PyArray_DATA(a);
        uint16_t *d = (uint16_t *)PyArray_DATA((PyArrayObject *)out);
        for (npy_intp i = 0; i < PyArray_SIZE(a); i++) d[i] = cp_f32_to_f16(s[i]);
    }
    Py_DECREF(a);
    return out;
}

static PyMethodDef index_functions[] = {
    {"_f32_to_f16_bits", py_f32_to_f16_bits, METH_O, "float32 array -> uint16 float16 bits (round to nearest even)."},
    {NULL, NULL, 0, NULL}};

int cp_py_add_index(PyObject *m) {
    FlatIPIndex_Type = (PyTypeObject *)PyType_FromSpec(&FlatIPIndex_spec);
    if (!FlatIPIndex_Type) return -1;
    Py_INCREF(FlatIPIndex_Type);
    if (PyModule_AddObject(m, "FlatIPIndex", (PyObject *)FlatIPIndex_Type) < 0) {
        Py_DECREF(FlatIPIndex_Type);
        return -1;
    }
    return PyModule_AddFunctions(m, index_functions);
}
