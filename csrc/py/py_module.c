/* py_module.c — the clipprompt._C module: exception classes, the one status->exception mapping, text
 * argument helpers, build_info/threads, and the hooks that add every other part (py_<part>.c). */
#define CP_PY_MODULE_MAIN
#include "py_common.h"
#include "py_limits.h"

#include <string.h>

#include <utf8proc.h>

#ifdef CP_WITH_CUDA
#include "kernels/cp_cuda.h"
#endif

PyObject *cp_py_ClipPromptError, *cp_py_EmptyPromptError, *cp_py_TokenizerError, *cp_py_ModelFormatError,
    *cp_py_DimensionMismatchError, *cp_py_IndexStateError, *cp_py_DeviceError, *cp_py_DeviceOutOfMemoryError,
    *cp_py_InvalidArgumentError, *cp_py_FileAccessError, *cp_py_DependencyError;

/* ---- the mapping ---------------------------------------------------------------------------------- */

PyObject *cp_py_raise(int status) {
    const char *msg = cp_last_error();
    if (msg == NULL || msg[0] == '\0') msg = cp_status_name(status);
    PyObject *cls;
    switch (status) {
    case CP_ERR_NOMEM: cls = PyExc_MemoryError; break;
    case CP_ERR_EMPTY: cls = cp_py_EmptyPromptError; break;
    case CP_ERR_TOKENIZER: cls = cp_py_TokenizerError; break;
    case CP_ERR_MODEL_FORMAT: cls = cp_py_ModelFormatError; break;
    case CP_ERR_DIMENSION: cls = cp_py_DimensionMismatchError; break;
    case CP_ERR_INDEX_STATE: cls = cp_py_IndexStateError; break;
    case CP_ERR_DEVICE: cls = cp_py_DeviceError; break;
    case CP_ERR_DEVICE_OOM: cls = cp_py_DeviceOutOfMemoryError; break;
    case CP_ERR_INVALID_ARG: cls = cp_py_InvalidArgumentError; break;
    case CP_ERR_IO: cls = cp_py_FileAccessError; break;
    case CP_ERR_DEPENDENCY: cls = cp_py_DependencyError; break;
    default: cls = cp_py_ClipPromptError; break;
    }
    PyErr_SetString(cls, msg);
    cp_clear_error();
    return NULL;
}

int cp_py_raise_int(int status) {
    cp_py_raise(status);
    return -1;
}

PyObject *cp_py_raise_batch(int status, const cp_batch_status *st) {
    cp_py_raise(status);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL) {
        PyObject *idx = st && st->index != CP_BATCH_NO_INDEX ? PyLong_FromSize_t(st->index) : Py_NewRef(Py_None);
        if (idx == NULL || PyObject_SetAttrString(value, "index", idx) < 0) PyErr_Clear(); /* keep the original */
        Py_XDECREF(idx);
    }
    PyErr_Restore(type, value, tb);
    return NULL;
}

/* ---- text arguments ------------------------------------------------------------------------------- */

Py_ssize_t cp_py_utf8_invalid_offset(const char *s, Py_ssize_t n) {
    size_t bad = 0;
    if (cp_utf8_validate(s, (size_t)n, &bad) == CP_OK) return -1;
    cp_clear_error();
    return (Py_ssize_t)bad;
}

int cp_py_text_get(PyObject *obj, cp_py_text *out, const char *what) {
    out->data = NULL, out->len = 0, out->owner = NULL;
    if (PyUnicode_Check(obj)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
        if (s == NULL) {
            /* lone surrogates cannot be UTF-8 encoded */
            PyErr_Clear();
            Py_ssize_t len = PyUnicode_GetLength(obj), i;
            for (i = 0; i < len; i++) {
                Py_UCS4 c = PyUnicode_READ_CHAR(obj, i);
                if (c >= 0xD800 && c <= 0xDFFF) break;
            }
            /* snprintf: PyErr_Format knows neither %X nor zero padding */
            char msg[256];
            snprintf(msg, sizeof msg, "%s: lone surrogate U+%04X at character %zd is not valid Unicode text", what,
                     (unsigned)(i < len ? PyUnicode_READ_CHAR(obj, i) : 0), i);
            PyErr_SetString(cp_py_TokenizerError, msg);
            return -1;
        }
        Py_INCREF(obj);
        out->data = s, out->len = n, out->owner = obj;
        return 0;
    }
    if (PyBytes_Check(obj)) {
        const char *s = PyBytes_AS_STRING(obj);
        Py_ssize_t n = PyBytes_GET_SIZE(obj);
        Py_ssize_t bad = cp_py_utf8_invalid_offset(s, n);
        if (bad >= 0) {
            PyErr_Format(cp_py_TokenizerError, "%s: invalid UTF-8 at byte offset %zd (byte 0x%02x)", what, bad,
                         (unsigned)(unsigned char)s[bad]);
            return -1;
        }
        Py_INCREF(obj);
        out->data = s, out->len = n, out->owner = obj;
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s must be str or bytes, not %.100s", what, Py_TYPE(obj)->tp_name);
    return -1;
}

void cp_py_text_release(cp_py_text *t) {
    Py_CLEAR(t->owner);
    t->data = NULL, t->len = 0;
}

int cp_py_texts_get(PyObject *obj, cp_py_texts *out, const char *what) {
    memset(out, 0, sizeof *out);
    PyObject *seq = NULL;
    if (PyUnicode_Check(obj) || PyBytes_Check(obj)) {
        out->single = 1;
        seq = PyTuple_Pack(1, obj);
    } else {
        seq = PySequence_Fast(obj, "expected str, bytes or a sequence of them");
    }
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    out->data = PyMem_Calloc((size_t)(n ? n : 1), sizeof(char *));
    out->len = PyMem_Calloc((size_t)(n ? n : 1), sizeof(size_t));
    out->owners = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    if (!out->data || !out->len || !out->owners) {
        Py_DECREF(seq);
        cp_py_texts_release(out);
        PyErr_NoMemory();
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        cp_py_text t;
        char label[160];
        if (out->single)
            snprintf(label, sizeof label, "%s", what);
        else
            snprintf(label, sizeof label, "%s[%zd]", what, i);
        if (cp_py_text_get(items[i], &t, label) < 0) {
            out->n = i;
            Py_DECREF(seq);
            cp_py_texts_release(out);
            return -1;
        }
        out->data[i] = t.data, out->len[i] = (size_t)t.len, out->owners[i] = t.owner;
    }
    out->n = n;
    Py_DECREF(seq);
    return 0;
}

void cp_py_texts_release(cp_py_texts *t) {
    if (t->owners)
        for (Py_ssize_t i = 0; i < t->n; i++) Py_XDECREF(t->owners[i]);
    PyMem_Free(t->owners);
    PyMem_Free((void *)t->data);
    PyMem_Free(t->len);
    memset(t, 0, sizeof *t);
}

/* ---- build_info / threads ------------------------------------------------------------------------- */

#define CP_STR2(x) #x
#define CP_STR(x) CP_STR2(x)

#ifdef CP_OPENBLAS
char *openblas_get_config(void);
char *openblas_get_corename(void);
#endif

static PyObject *py_build_info(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    PyObject *d = PyDict_New();
    if (!d) return NULL;
#define SET(k, v)                                             \
    do {                                                      \
        PyObject *v_ = (v);                                   \
        if (!v_ || PyDict_SetItemString(d, k, v_) < 0) {      \
            Py_XDECREF(v_);                                   \
            Py_DECREF(d);                                     \
            return NULL;                                      \
        }                                                     \
        Py_DECREF(v_);                                        \
    } while (0)
#if defined(__clang__)
    SET("compiler", PyUnicode_FromString("clang " __clang_version__));
#elif defined(__GNUC__)
    SET("compiler", PyUnicode_FromString("gcc " __VERSION__));
#else
    SET("compiler", PyUnicode_FromString("unknown"));
#endif
    SET("c_standard", PyLong_FromLong(__STDC_VERSION__));
#ifdef CP_OPENBLAS
    SET("blas", PyUnicode_FromFormat("OpenBLAS (%s; core %s)", openblas_get_config(), openblas_get_corename()));
#else
    SET("blas", PyUnicode_FromString("cblas"));
#endif
#ifdef _OPENMP
    SET("openmp", PyLong_FromLong(_OPENMP));
#else
    SET("openmp", Py_NewRef(Py_None));
#endif
    SET("utf8proc", PyUnicode_FromString(utf8proc_version())); /* the library loaded, not the headers */
    SET("numpy_abi", PyUnicode_FromFormat("0x%x", (unsigned)NPY_ABI_VERSION));
    SET("threads", PyLong_FromLong(cp_get_num_threads()));
#ifdef CP_SANITIZE
    SET("sanitize", Py_NewRef(Py_True));
#else
    SET("sanitize", Py_NewRef(Py_False));
#endif
#ifdef CP_WITH_CUDA
    SET("cuda", Py_NewRef(Py_True));
    {
        cp_cuda_info info;
        cp_cuda_get_info(&info);
        SET("cuda_compiled", PyUnicode_FromFormat("%d.%d", info.compiled_major, info.compiled_minor));
        SET("cuda_runtime", info.runtime_version > 0
                                ? PyUnicode_FromFormat("%d.%d", info.runtime_version / 1000,
                                                       (info.runtime_version % 1000) / 10)
                                : Py_NewRef(Py_None));
        SET("cuda_driver", info.driver_version > 0
                               ? PyUnicode_FromFormat("%d.%d", info.driver_version / 1000,
                                                      (info.driver_version % 1000) / 10)
                               : Py_NewRef(Py_None));
        SET("cuda_devices", PyLong_FromLong(info.device_count));
        SET("cuda_device_error", info.device_error[0] ? PyUnicode_FromString(info.device_error)
                                                      : Py_NewRef(Py_None));
        SET("cublas", PyUnicode_FromFormat("%d.%d.%d", info.cublas_major, info.cublas_minor, info.cublas_patch));
        /* cuDNN is linked only when setup.py found it (CP_WITH_CUDNN); otherwise (or version 0) None */
#ifdef CP_WITH_CUDNN
        SET("cudnn", info.cudnn_version > 0
                         ? PyUnicode_FromFormat("%d.%d.%d", (int)(info.cudnn_version / 10000),
                                                (int)((info.cudnn_version / 100) % 100),
                                                (int)(info.cudnn_version % 100))
                         : Py_NewRef(Py_None));
#else
        SET("cudnn", Py_NewRef(Py_None));
#endif
        SET("cuda_arch", PyUnicode_FromString(CP_STR(CP_CUDA_ARCHS)));
    }
#else
    SET("cuda", Py_NewRef(Py_False));
    SET("cublas", Py_NewRef(Py_None));
    SET("cudnn", Py_NewRef(Py_None));
#endif
#undef SET
    return d;
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    (void)self;
    long long n;
    if (cp_py_as_size(arg, "set_num_threads: n", &n) < 0) return NULL;
    if (n < 0 || n > 4096) {
        PyErr_Format(cp_py_InvalidArgumentError, "set_num_threads: n must be in 0..4096 (0 = default), got %lld", n);
        return NULL;
    }
    cp_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    return PyLong_FromLong(cp_get_num_threads());
}

/* Raise the exception for a status code with a message: lets Python-side code and tests use the same
 * mapping as C (e.g. cp._C._raise_status(-2, "msg") raises EmptyPromptError). */
static PyObject *py_raise_status(PyObject *self, PyObject *args) {
    (void)self;
    int code;
    const char *msg;
    if (!PyArg_ParseTuple(args, "is", &code, &msg)) return NULL;
    if (code == CP_OK) Py_RETURN_NONE;
    cp_fail(code, "%s", msg);
    return cp_py_raise(code);
}

static PyMethodDef cp_methods[] = {
    {"build_info", py_build_info, METH_NOARGS, "build_info() -> dict: what this build of clipprompt contains."},
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n): threads for C loops and BLAS (0: default)."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
    {"_raise_status", py_raise_status, METH_VARARGS, "_raise_status(code, message): raise the mapped exception."},
    {NULL, NULL, 0, NULL}};

/* ---- parts ---------------------------------------------------------------------------------------- */

/* Weak hooks: a part that is not linked in leaves its hook NULL. Adding csrc/py/py_<part>.c adds the part. */
#define CP_PY_PARTS(X)                                                                                             \
    X(normalize) X(segment) X(tokenizer) X(wordpiece) X(sentencepiece) X(encoder) X(multilingual) X(safetensors)    \
    X(cache) X(index) X(cuda) X(sd) X(serve) X(lowp) X(extra)
#define CP_DECLARE_PART(name) __attribute__((weak)) int cp_py_add_##name(PyObject *m);
CP_PY_PARTS(CP_DECLARE_PART)

static int cp_make_exc(PyObject *m, PyObject **slot, const char *name, PyObject *bases, const char *doc) {
    char full[128];
    snprintf(full, sizeof full, "clipprompt.%s", name);
    *slot = PyErr_NewExceptionWithDoc(full, doc, bases, NULL);
    Py_DECREF(bases);
    if (*slot == NULL) return -1;
    Py_INCREF(*slot);
    return PyModule_AddObject(m, name, *slot) < 0 ? (Py_DECREF(*slot), -1) : 0;
}

static int cp_add_exceptions(PyObject *m) {
    if (cp_make_exc(m, &cp_py_ClipPromptError, "ClipPromptError", Py_NewRef(PyExc_Exception),
                    "Base class of every error raised by clipprompt.") < 0)
        return -1;
#define SUB(slot, name, base2, doc)                                                                        \
    if (cp_make_exc(m, &slot, name,                                                                        \
                    (base2) ? PyTuple_Pack(2, cp_py_ClipPromptError, (PyObject *)(base2))                  \
                            : PyTuple_Pack(1, cp_py_ClipPromptError),                                      \
                    doc) < 0)                                                                              \
        return -1;
    SUB(cp_py_EmptyPromptError, "EmptyPromptError", PyExc_ValueError, "The prompt is empty or whitespace only.")
    SUB(cp_py_TokenizerError, "TokenizerError", PyExc_ValueError,
        "Text that cannot be tokenized: invalid UTF-8, too long without truncation, or a bad vocabulary.")
    SUB(cp_py_ModelFormatError, "ModelFormatError", NULL,
        "Bad, missing or truncated weights or config; the message names the tensor or key.")
    SUB(cp_py_DimensionMismatchError, "DimensionMismatchError", PyExc_ValueError,
        "A vector or array has the wrong dimension for this object.")
    SUB(cp_py_IndexStateError, "IndexStateError", NULL, "Bad index/cache file, unknown id, or invalid state.")
    SUB(cp_py_DeviceError, "DeviceError", NULL, "No usable GPU, or a CUDA/cuBLAS/cuDNN failure.")
    SUB(cp_py_InvalidArgumentError, "InvalidArgumentError", PyExc_ValueError,
        "An argument has an invalid value (NaN/inf vectors, k <= 0, unknown option, ...).")
    SUB(cp_py_FileAccessError, "FileAccessError", PyExc_OSError, "A file cannot be opened, read or written.")
    SUB(cp_py_DependencyError, "DependencyError", NULL,
        "An optional system component (e.g. MeCab or its dictionary) is not installed; the message says what.")
#undef SUB
    PyObject *b = PyTuple_Pack(2, cp_py_DeviceError, PyExc_MemoryError);
    if (!b) return -1;
    return cp_make_exc(m, &cp_py_DeviceOutOfMemoryError, "DeviceOutOfMemoryError", b,
                       "The GPU ran out of memory; the message gives the bytes asked for.");
}

static struct PyModuleDef cp_module = {PyModuleDef_HEAD_INIT, "clipprompt._C",
                                       "C core of clipprompt (see clipprompt/__init__.py).", -1, cp_methods};

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    PyObject *m = PyModule_Create(&cp_module);
    if (m == NULL) return NULL;
    if (cp_add_exceptions(m) < 0) goto error;
#define CP_CALL_PART(name)                                  \
    if (cp_py_add_##name != NULL && cp_py_add_##name(m) < 0) \
        goto error;
    CP_PY_PARTS(CP_CALL_PART)
#undef CP_CALL_PART
    return m;
error:
    Py_DECREF(m);
    return NULL;
}
