/* py_tokenizer.c — clipprompt._C.ClipTokenizer over cp_bpe (csrc/cp_bpe.h), and _C._clip_pretokenize (tests).
 *
 * The merges file is read here with Python's gzip module (zlib underneath) and handed to C as bytes: the C core then
 * needs no zlib link, accepts a plain .txt just as well, and the one-off ~60 ms load is not a hot path.
 */
#include "py_file_common.h"
#include "py_limits.h"

#include <string.h>

#include "text/cp_bpe.h"

#define CP_CLIP_DEFAULT_CACHE 16384
#define CP_CLIP_BUNDLED "bpe_simple_vocab_16e6.txt.gz"

typedef struct {
    PyObject_HEAD
    cp_bpe *bpe;
    PyObject *path;           /* str */
    PyObject *last_truncated; /* list[str | None] or None */
} ClipTokObject;

/* The package's data directory, from clipprompt._C.__file__. New reference to a str. */
static PyObject *cp_py_data_path(const char *name) {
    PyObject *mod = PyImport_ImportModule("clipprompt._C");
    if (!mod) return NULL;
    PyObject *file = PyObject_GetAttrString(mod, "__file__");
    Py_DECREF(mod);
    if (!file) return NULL;
    PyObject *osp = PyImport_ImportModule("os.path");
    if (!osp) {
        Py_DECREF(file);
        return NULL;
    }
    PyObject *dir = PyObject_CallMethod(osp, "dirname", "O", file);
    PyObject *res = dir ? PyObject_CallMethod(osp, "join", "Oss", dir, "data", name) : NULL;
    Py_XDECREF(dir);
    Py_DECREF(file);
    Py_DECREF(osp);
    return res;
}

/* Read a whole file as bytes; gunzip when it starts with the gzip magic. OSError -> FileAccessError. */
static PyObject *cp_py_read_maybe_gz(PyObject *path) {
    PyObject *data = cp_py_read_file(path, "");
    if (!data) return NULL;
    if (PyBytes_GET_SIZE(data) >= 2 && memcmp(PyBytes_AS_STRING(data), "\x1f\x8b", 2) == 0) {
        PyObject *gz = PyImport_ImportModule("gzip");
        PyObject *raw = gz ? PyObject_CallMethod(gz, "decompress", "O", data) : NULL;
        Py_XDECREF(gz);
        Py_DECREF(data);
        if (!raw) {
            PyObject *exc = cp_py_take_exc();
            PyErr_Format(cp_py_TokenizerError, "%R is not a readable gzip file: %S", path, exc);
            Py_XDECREF(exc);
            return NULL;
        }
        data = raw;
    }
    return data;
}

static PyObject *ClipTok_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "cache_size", NULL};
    PyObject *path = Py_None;
    Py_ssize_t cache_size = CP_CLIP_DEFAULT_CACHE;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$n:ClipTokenizer", kwlist, &path, &cache_size)) return NULL;
    if (cache_size < 0) {
        PyErr_Format(cp_py_InvalidArgumentError, "cache_size must be >= 0, got %zd", cache_size);
        return NULL;
    }
    PyObject *p = NULL;
    if (path == Py_None) {
        p = cp_py_data_path(CP_CLIP_BUNDLED);
    } else {
        PyObject *os = PyImport_ImportModule("os");
        p = os ? PyObject_CallMethod(os, "fspath", "O", path) : NULL;
        Py_XDECREF(os);
        if (p && PyBytes_Check(p)) {
            PyObject *s = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(p), PyBytes_GET_SIZE(p));
            Py_SETREF(p, s);
        }
    }
    if (!p) return NULL;
    PyObject *data = cp_py_read_maybe_gz(p);
    if (!data) {
        Py_DECREF(p);
        return NULL;
    }
    cp_bpe *bpe = NULL;
    int rc;
    const char *buf = PyBytes_AS_STRING(data);
    size_t n = (size_t)PyBytes_GET_SIZE(data);
    Py_BEGIN_ALLOW_THREADS rc = cp_bpe_create(buf, n, (size_t)cache_size, &bpe);
    Py_END_ALLOW_THREADS Py_DECREF(data);
    if (rc != CP_OK) {
        Py_DECREF(p);
        return cp_py_raise(rc);
    }
    ClipTokObject *self = (ClipTokObject *)type->tp_alloc(type, 0);
    if (!self) {
        cp_bpe_free(bpe);
        Py_DECREF(p);
        return NULL;
    }
    self->bpe = bpe, self->path = p;
    self->last_truncated = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static void ClipTok_dealloc(ClipTokObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    cp_bpe_free(self->bpe);
    Py_XDECREF(self->path);
    Py_XDECREF(self->last_truncated);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *cp_py_ids_list(const int32_t *ids, size_t n) {
    PyObject *l = PyList_New((Py_ssize_t)n);
    if (!l) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(ids[i]);
        if (!v) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, v);
    }
    return l;
}

static PyObject *ClipTok_encode(ClipTokObject *self, PyObject *arg) {
    cp_py_text t;
    if (cp_py_text_get(arg, &t, "text") < 0) return NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = cp_bpe_encode(self->bpe, t.data, (size_t)t.len, &ids, &n);
    cp_py_text_release(&t);
    if (rc != CP_OK) return cp_py_raise(rc);
    PyObject *l = cp_py_ids_list(ids, n);
    free(ids);
    return l;
}

/* text of the tokens a row dropped: decode(encode(text)[ctx-2:]) without its trailing space */
static PyObject *cp_py_dropped_text(cp_bpe *bpe, const char *s, size_t n, size_t ctx) {
    int32_t *ids = NULL;
    size_t k = 0;
    int rc = cp_bpe_encode(bpe, s, n, &ids, &k);
    if (rc != CP_OK) return cp_py_raise(rc);
    char *txt = NULL;
    size_t tl = 0;
    size_t keep = ctx - 2;
    rc = cp_bpe_decode(bpe, ids + keep, k > keep ? k - keep : 0, &txt, &tl);
    free(ids);
    if (rc != CP_OK) return cp_py_raise(rc);
    while (tl > 0 && txt[tl - 1] == ' ') tl--;
    PyObject *r = PyUnicode_DecodeUTF8(txt, (Py_ssize_t)tl, "strict");
    free(txt);
    return r;
}

/* context_length sizes the [B, context_length] output: 2..CP_PY_MAX_SEQ, and the output must fit (py_limits.h). */
static int context_length_ok(long long ctx, Py_ssize_t n) {
    if (ctx < 2) {
        PyErr_Format(cp_py_InvalidArgumentError, "context_length must be at least 2 (SOT and EOT), got %lld", ctx);
        return 0;
    }
    return cp_py_check_range("context_length", ctx, 2, CP_PY_MAX_SEQ) == 0 &&
           cp_py_check_out("ClipTokenizer", (double)n, (double)ctx, sizeof(int32_t)) == 0;
}

static PyObject *ClipTok_call(ClipTokObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"texts", "context_length", "truncate", "return_lengths", NULL};
    PyObject *texts, *ctxo = NULL;
    long long ctx = 77;
    int truncate = 1, return_lengths = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Opp:ClipTokenizer.__call__", kwlist, &texts, &ctxo, &truncate,
                                     &return_lengths))
        return NULL;
    if (ctxo && cp_py_as_size(ctxo, "context_length", &ctx) < 0) return NULL;
    if (!context_length_ok(ctx, 0)) return NULL;
    cp_py_texts tx;
    if (cp_py_texts_get(texts, &tx, "texts") < 0) return NULL;
    if (!context_length_ok(ctx, tx.n)) {
        cp_py_texts_release(&tx);
        return NULL;
    }
    npy_intp dims[2] = {tx.n, (npy_intp)ctx};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT32);
    PyArrayObject *lens = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT32);
    int32_t *full = PyMem_Malloc(sizeof(int32_t) * (size_t)(tx.n ? tx.n : 1));
    PyObject *trunc = NULL, *res = NULL;
    if (!out || !lens || !full) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto error;
    }
    int rc;
    cp_batch_status st;
    Py_BEGIN_ALLOW_THREADS rc =
        cp_bpe_encode_batch(self->bpe, tx.data, tx.len, (size_t)tx.n, (size_t)ctx, truncate,
                            (int32_t *)PyArray_DATA(out), (int32_t *)PyArray_DATA(lens), full, &st);
    Py_END_ALLOW_THREADS if (rc != CP_OK) {
        cp_py_raise_batch(rc, &st);
        goto error;
    }
    trunc = PyList_New(tx.n);
    if (!trunc) goto error;
    for (Py_ssize_t i = 0; i < tx.n; i++) {
        PyObject *v;
        if (full[i] > ctx) {
            v = cp_py_dropped_text(self->bpe, tx.data[i], tx.len[i], (size_t)ctx);
            if (!v) goto error;
        } else {
            v = Py_NewRef(Py_None);
        }
        PyList_SET_ITEM(trunc, i, v);
    }
    Py_SETREF(self->last_truncated, trunc);
    trunc = NULL;
    if (return_lengths)
        res = PyTuple_Pack(2, (PyObject *)out, (PyObject *)lens);
    else
        res = Py_NewRef((PyObject *)out);
error:
    Py_XDECREF(trunc);
    Py_XDECREF(out);
    Py_XDECREF(lens);
    PyMem_Free(full);
    cp_py_texts_release(&tx);
    return res;
}

static PyObject *ClipTok_decode(ClipTokObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"ids", "skip_special_tokens", NULL};
    PyObject *obj;
    int skip = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$p:decode", kwlist, &obj, &skip)) return NULL;
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(obj, NPY_INT64, 0, 1, NPY_ARRAY_CARRAY);
    if (!a) {
        PyObject *exc = cp_py_take_exc();
        PyErr_Format(cp_py_InvalidArgumentError, "ids must be a 1-D sequence of integers: %S", exc);
        Py_XDECREF(exc);
        return NULL;
    }
    if (PyArray_NDIM(a) == 0) {
        Py_DECREF(a);
        PyErr_SetString(cp_py_InvalidArgumentError, "ids must be a 1-D sequence of integers, not a scalar");
        return NULL;
    }
    npy_intp n = PyArray_DIM(a, 0);
    const int64_t *src = (const int64_t *)PyArray_DATA(a);
    int32_t *ids = PyMem_Malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!ids) {
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    int32_t sot = cp_bpe_sot(self->bpe), eot = cp_bpe_eot(self->bpe), nv = cp_bpe_vocab_size(self->bpe);
    size_t k = 0;
    for (npy_intp i = 0; i < n; i++) {
        int64_t v = src[i];
        if (v < 0 || v >= nv) {
            PyErr_Format(cp_py_InvalidArgumentError, "token id %lld at position %zd is not in the vocabulary (0..%d)",
                         (long long)v, (Py_ssize_t)i, (int)nv - 1);
            PyMem_Free(ids);
            Py_DECREF(a);
            return NULL;
        }
        if (skip) {
            if (v == eot) break; /* the rest is padding */
            if (v == sot) continue;
        }
        ids[k++] = (int32_t)v;
    }
    Py_DECREF(a);
    char *txt = NULL;
    size_t tl = 0;
    int rc = cp_bpe_decode(self->bpe, ids, k, &txt, &tl);
    PyMem_Free(ids);
    if (rc != CP_OK) return cp_py_raise(rc);
    PyObject *r = PyUnicode_DecodeUTF8(txt, (Py_ssize_t)tl, "strict");
    free(txt);
    return r;
}

static PyObject *ClipTok_cache_info(ClipTokObject *self, PyObject *noargs) {
    uint64_t h, m;
    size_t slots;
    cp_bpe_cache_stats(self->bpe, &h, &m, &slots);
    return Py_BuildValue("{s:K,s:K,s:n}", "hits", (unsigned long long)h, "misses", (unsigned long long)m, "slots",
                         (Py_ssize_t)slots);
}

static PyObject *ClipTok_repr(ClipTokObject *self) {
    return PyUnicode_FromFormat("ClipTokenizer(path=%R, vocab_size=%d)", self->path, (int)cp_bpe_vocab_size(self->bpe));
}

static PyObject *ClipTok_get_vocab_size(ClipTokObject *self, void *c) { return PyLong_FromLong(cp_bpe_vocab_size(self->bpe)); }
static PyObject *ClipTok_get_sot(ClipTokObject *self, void *c) { return PyLong_FromLong(cp_bpe_sot(self->bpe)); }
static PyObject *ClipTok_get_eot(ClipTokObject *self, void *c) { return PyLong_FromLong(cp_bpe_eot(self->bpe)); }
static PyObject *ClipTok_get_ctx(ClipTokObject *self, void *c) { return PyLong_FromLong(77); }
static PyObject *ClipTok_get_path(ClipTokObject *self, void *c) { return Py_NewRef(self->path); }
static PyObject *ClipTok_get_trunc(ClipTokObject *self, void *c) { return Py_NewRef(self->last_truncated); }

static PyGetSetDef ClipTok_getset[] = {
    {"vocab_size", (getter)ClipTok_get_vocab_size, NULL, "Number of token ids (49408 for the bundled vocabulary).", NULL},
    {"sot_token_id", (getter)ClipTok_get_sot, NULL, "Id of <|startoftext|> (49406).", NULL},
    {"eot_token_id", (getter)ClipTok_get_eot, NULL, "Id of <|endoftext|> (49407).", NULL},
    {"context_length", (getter)ClipTok_get_ctx, NULL, "Default context length (77).", NULL},
    {"path", (getter)ClipTok_get_path, NULL, "The merges file this tokenizer was built from.", NULL},
    {"last_truncated", (getter)ClipTok_get_trunc, NULL,
     "Per prompt of the last __call__: the text of the tokens truncation dropped, or None where nothing was "
     "dropped (None before the first call).",
     NULL},
    {NULL},
};

static PyMethodDef ClipTok_methods[] = {
    {"encode", (PyCFunction)ClipTok_encode, METH_O,
     "encode(text) -> list[int]\n\nBPE ids of one prompt, without SOT/EOT (OpenAI SimpleTokenizer.encode)."},
    {"decode", (PyCFunction)(void (*)(void))ClipTok_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(ids, *, skip_special_tokens=False) -> str\n\nSimpleTokenizer.decode; with skip_special_tokens, "
     "SOT is dropped and decoding stops at the first EOT (so a padded row decodes to its prompt)."},
    {"cache_info", (PyCFunction)ClipTok_cache_info, METH_NOARGS,
     "cache_info() -> dict(hits, misses, slots) of the bounded word cache."},
    {NULL},
};

static PyType_Slot ClipTok_slots[] = {
    {Py_tp_new, ClipTok_new},
    {Py_tp_dealloc, ClipTok_dealloc},
    {Py_tp_call, ClipTok_call},
    {Py_tp_repr, ClipTok_repr},
    {Py_tp_methods, ClipTok_methods},
    {Py_tp_getset, ClipTok_getset},
    {Py_tp_doc,
     "ClipTokenizer(path=None, *, cache_size=16384)\n\n"
     "CLIP's byte-level BPE tokenizer in C, id for id with OpenAI's SimpleTokenizer (with ftfy). path: a CLIP "
     "merges file (.txt or .txt.gz); None = the bundled bpe_simple_vocab_16e6. cache_size: word-cache slots "
     "(0 disables).\n\n"
     "tok(texts, context_length=77, truncate=True, return_lengths=False) -> int32 [B, context_length] "
     "(SOT ... EOT, zero padded), or (ids, lengths) with return_lengths=True."},
    {0, NULL},
};

static PyType_Spec ClipTok_spec = {"clipprompt._C.ClipTokenizer", sizeof(ClipTokObject), 0, Py_TPFLAGS_DEFAULT,
                                   ClipTok_slots};

static PyObject *py_clip_pretokenize(PyObject *self, PyObject *arg) {
    cp_py_text t;
    if (cp_py_text_get(arg, &t, "text") < 0) return NULL;
    size_t *spans = NULL, n = 0;
    int rc = cp_bpe_pretokenize(t.data, (size_t)t.len, &spans, &n);
    if (rc != CP_OK) {
        cp_py_text_release(&t);
        return cp_py_raise(rc);
    }
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; l && i < n; i++) {
        PyObject *s = PyUnicode_DecodeUTF8(t.data + spans[2 * i], (Py_ssize_t)(spans[2 * i + 1] - spans[2 * i]),
                                           "strict");
        if (!s) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, s);
    }
    free(spans);
    cp_py_text_release(&t);
    return l;
}

static PyMethodDef cp_tok_functions[] = {
    {"_clip_pretokenize", py_clip_pretokenize, METH_O,
     "_clip_pretokenize(text) -> list[str]: OpenAI's pre-tokenizer pattern alone (no cleaning). For tests."},
    {NULL},
};

int cp_py_add_tokenizer(PyObject *m) {
    PyObject *tp = PyType_FromSpec(&ClipTok_spec);
    if (!tp) return -1;
    if (PyModule_AddObject(m, "ClipTokenizer", tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return PyModule_AddFunctions(m, cp_tok_functions);
}
