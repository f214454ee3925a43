/* py_cache.c — clipprompt.PromptCache: the Python face of csrc/cp_cache.{h,c}.
 *
 * Values: any real floating array (float16/32/64) is converted to float32; other dtypes are rejected with
 * InvalidArgumentError. Keys: fingerprint, text and kind are str (or UTF-8 bytes), stored exactly as given. */
#include "py_common.h"

#include "base/cp_hash.h"

#include "store/cp_cache.h"

#include <math.h>
#include <string.h>

#define CP_PY_IN_FLAGS (NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST)

typedef struct {
    PyObject_HEAD
    cp_cache *c;
} PyPromptCache;

static PyTypeObject *PromptCache_Type;

#define GIL_RELEASE_FLOATS 16384 /* copies larger than this (64 KiB) run with the GIL released */

/* A UTF-8 view of a str/bytes key part, valid while `obj` is alive (the caller's argument). */
static int key_part(PyObject *obj, const char **p, size_t *n, const char *what) {
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
        if (s) {
            *p = s, *n = (size_t)len;
            return 0;
        }
        PyErr_Clear();
    }
    cp_py_text t;
    if (cp_py_text_get(obj, &t, what) < 0) return -1;
    *p = t.data, *n = (size_t)t.len;
    cp_py_text_release(&t); /* obj itself keeps the memory alive */
    return 0;
}

/* A C-contiguous float32 array from any real floating array-like; NULL with InvalidArgumentError otherwise. */
static PyArrayObject *as_float32(PyObject *obj, const char *what) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!a) return NULL;
    if (!PyArray_ISFLOAT(a) || PyArray_ISCOMPLEX(a)) {
        PyErr_Format(cp_py_InvalidArgumentError, "%s must be a real floating array (float16/32/64), got dtype %R",
                     what, (PyObject *)PyArray_DESCR(a));
        Py_DECREF(a);
        return NULL;
    }
    PyArrayObject *b = (PyArrayObject *)PyArray_FromAny((PyObject *)a, PyArray_DescrFromType(NPY_FLOAT32), 0, 0,
                                                        CP_PY_IN_FLAGS, NULL);
    Py_DECREF(a);
    return b;
}

static PyObject *entry_to_array(const cp_cache_entry *e) {
    int64_t shape[CP_CACHE_MAX_NDIM];
    npy_intp dims[CP_CACHE_MAX_NDIM];
    int nd = cp_cache_entry_shape(e, shape);
    for (int i = 0; i < nd; i++) dims[i] = (npy_intp)shape[i];
    PyObject *arr = PyArray_SimpleNew(nd, dims, NPY_FLOAT32);
    if (!arr) return NULL;
    size_t count = (size_t)cp_cache_entry_count(e);
    if (count > GIL_RELEASE_FLOATS) {
        Py_BEGIN_ALLOW_THREADS memcpy(PyArray_DATA((PyArrayObject *)arr), cp_cache_entry_data(e), 4 * count);
        Py_END_ALLOW_THREADS
    } else {
        memcpy(PyArray_DATA((PyArrayObject *)arr), cp_cache_entry_data(e), 4 * count);
    }
    return arr;
}

/* ---- construction ------------------------------------------------------------------------------------ */

static int parse_capacity(PyObject *obj, uint64_t *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(cp_py_InvalidArgumentError, "capacity_bytes must be an int >= 0");
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *PromptCache_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"capacity_bytes", NULL};
    PyObject *capobj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:PromptCache", kwlist, &capobj)) return NULL;
    uint64_t cap = (uint64_t)256 << 20;
    if (capobj && parse_capacity(capobj, &cap) < 0) return NULL;
    PyPromptCache *self = (PyPromptCache *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    int rc = cp_cache_create(&self->c, cap);
    if (rc != CP_OK) {
        Py_DECREF(self);
        return cp_py_raise(rc);
    }
    return (PyObject *)self;
}

static void PromptCache_dealloc(PyPromptCache *self) {
    PyTypeObject *tp = Py_TYPE(self);
    cp_cache_free(self->c);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- get / put ---------------------------------------------------------------------------------------- */

/* (fingerprint, text[, kind]) from fastcall args with an optional `kind` keyword; extra = number of positional
 * arguments between text and kind (put: the vector). */
static int parse_key(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int extra, const char *fname,
                     cp_cache_key *k, PyObject **extra_obj) {
    PyObject *kindobj = NULL;
    Py_ssize_t npos = nargs, need = 2 + extra;
    if (kwnames) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (PyUnicode_CompareWithASCIIString(name, "kind") == 0 && !kindobj) kindobj = args[nargs + i];
            else if (extra && PyUnicode_CompareWithASCIIString(name, "vector") == 0 && nargs == 2)
                *extra_obj = args[nargs + i], npos = 3;
            else {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname, name);
                return -1;
            }
        }
    }
    if (nargs < 2 || nargs > need + 1 || (npos < need)) {
        PyErr_Format(PyExc_TypeError, "%s() takes %s", fname,
                     extra ? "(fingerprint, text, vector, kind='pooled')" : "(fingerprint, text, kind='pooled')");
        return -1;
    }
    if (nargs == need + 1) {
        if (kindobj) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument 'kind'", fname);
            return -1;
        }
        kindobj = args[need];
    }
    if (extra && nargs >= 3) *extra_obj = args[2];
    if (key_part(args[0], &k->fp, &k->fp_len, "fingerprint") < 0) return -1;
    if (key_part(args[1], &k->text, &k->text_len, "text") < 0) return -1;
    if (kindobj) {
        if (key_part(kindobj, &k->kind, &k->kind_len, "kind") < 0) return -1;
    } else {
        k->kind = "pooled", k->kind_len = 6;
    }
    return 0;
}

static PyObject *PromptCache_get(PyPromptCache *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    cp_cache_key k;
    if (parse_key(args, nargs, kwnames, 0, "get", &k, NULL) < 0) return NULL;
    cp_cache_entry *e = NULL;
    if (cp_cache_lookup(self->c, &k, &e, 1, 1) == 1) { /* busy: wait without holding the GIL */
        Py_BEGIN_ALLOW_THREADS cp_cache_lookup(self->c, &k, &e, 1, 0);
        Py_END_ALLOW_THREADS
    }
    if (!e) Py_RETURN_NONE;
    PyObject *arr = entry_to_array(e);
    cp_cache_unpin(self->c, &e, 1);
    return arr;
}

static PyObject *do_put(PyPromptCache *self, const cp_cache_key *k, PyObject *vec) {
    PyArrayObject *a = as_float32(vec, "vector");
    if (!a) return NULL;
    int nd = PyArray_NDIM(a);
    if (nd < 1 || nd > CP_CACHE_MAX_NDIM) {
        Py_DECREF(a);
        PyErr_Format(cp_py_InvalidArgumentError, "vector must have 1..%d dimensions, got %d", CP_CACHE_MAX_NDIM, nd);
        return NULL;
    }
    int64_t shape[CP_CACHE_MAX_NDIM];
    for (int i = 0; i < nd; i++) shape[i] = (int64_t)PyArray_DIM(a, i);
    int stored = 0, rc;
    const float *data = (const float *)PyArray_DATA(a);
    if (PyArray_SIZE(a) > GIL_RELEASE_FLOATS) {
        Py_BEGIN_ALLOW_THREADS rc = cp_cache_put(self->c, k, data, nd, shape, &stored);
        Py_END_ALLOW_THREADS
    } else {
        rc = cp_cache_put(self->c, k, data, nd, shape, &stored);
    }
    Py_DECREF(a);
    if (rc != CP_OK) return cp_py_raise(rc);
    return PyBool_FromLong(stored);
}

static PyObject *PromptCache_put(PyPromptCache *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    cp_cache_key k;
    PyObject *vec = NULL;
    if (parse_key(args, nargs, kwnames, 1, "put", &k, &vec) < 0) return NULL;
    if (!vec) {
        PyErr_SetString(PyExc_TypeError, "put() missing required argument 'vector'");
        return NULL;
    }
    return do_put(self, &k, vec);
}

/* ---- get_or_encode ------------------------------------------------------------------------------------- */

static PyObject *PromptCache_get_or_encode(PyPromptCache *self, PyObject *args, PyObject *kw) {
    PyObject *encoder, *texts_obj, *kindobj = NULL;
    if (!PyArg_ParseTuple(args, "OO:get_or_encode", &encoder, &texts_obj)) return NULL;
    PyObject *enc_kw = NULL;
    if (kw) {
        enc_kw = PyDict_Copy(kw);
        if (!enc_kw) return NULL;
        kindobj = PyDict_GetItemString(enc_kw, "kind"); /* borrowed */
        if (kindobj) {
            Py_INCREF(kindobj);
            PyDict_DelItemString(enc_kw, "kind");
        }
    }
    PyObject *result = NULL, *fpobj = NULL, *miss_list = NULL, *miss_pos = NULL, *encoded_obj = NULL;
    PyObject *texts_seq = NULL;
    PyArrayObject *encoded = NULL;
    cp_py_texts texts = {0};
    cp_cache_key *keys = NULL;
    cp_cache_entry **hits = NULL;
    Py_ssize_t *src = NULL; /* for each input: index into the encoded rows, or -1 for a hit */
    int have_texts = 0;

    fpobj = PyObject_GetAttrString(encoder, "fingerprint");
    if (!fpobj) goto error;
    const char *fp, *kind = "pooled";
    size_t fp_len, kind_len = 6;
    if (!PyUnicode_Check(fpobj) && !PyBytes_Check(fpobj)) {
        PyErr_Format(PyExc_TypeError, "encoder.fingerprint must be str, not %.100s", Py_TYPE(fpobj)->tp_name);
        goto error;
    }
    if (key_part(fpobj, &fp, &fp_len, "encoder.fingerprint") < 0) goto error;
    if (kindobj && key_part(kindobj, &kind, &kind_len, "kind") < 0) goto error;
    /* materialise once: an iterator must not be consumed twice */
    if (!PyUnicode_Check(texts_obj) && !PyBytes_Check(texts_obj)) {
        texts_seq = PySequence_Fast(texts_obj, "texts must be a str or a sequence of str");
        if (!texts_seq) goto error;
        texts_obj = texts_seq;
    }
    if (cp_py_texts_get(texts_obj, &texts, "texts") < 0) goto error;
    have_texts = 1;
    const Py_ssize_t n = texts.n;
    keys = PyMem_Calloc((size_t)(n ? n : 1), sizeof *keys);
    hits = PyMem_Calloc((size_t)(n ? n : 1), sizeof *hits);
    src = PyMem_Calloc((size_t)(n ? n : 1), sizeof *src);
    if (!keys || !hits || !src) {
        PyErr_NoMemory();
        goto error;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        keys[i] = (cp_cache_key){fp, fp_len, texts.data[i], texts.len[i], kind, kind_len};
    }
    int rc;
    cp_batch_status st;
    Py_BEGIN_ALLOW_THREADS rc = cp_cache_lookup_batch(self->c, keys, (size_t)n, hits, &st);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) {
        cp_py_raise_batch(rc, &st);
        goto error;
    }
    /* the misses, each distinct text once, in first-seen order */
    miss_list = PyList_New(0);
    miss_pos = PyDict_New();
    if (!miss_list || !miss_pos) goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        src[i] = -1;
        if (hits[i]) continue;
        PyObject *t = texts.single ? texts_obj : PySequence_Fast_GET_ITEM(texts_obj, i);
        PyObject *key = PyBytes_FromStringAndSize(texts.data[i], (Py_ssize_t)texts.len[i]);
        if (!key) goto error;
        PyObject *pos = PyDict_GetItemWithError(miss_pos, key);
        if (pos) {
            src[i] = PyLong_AsSsize_t(pos);
        } else if (PyErr_Occurred()) {
            Py_DECREF(key);
            goto error;
        } else {
            Py_ssize_t m = PyList_GET_SIZE(miss_list);
            PyObject *pm = PyLong_FromSsize_t(m);
            if (!pm || PyDict_SetItem(miss_pos, key, pm) < 0 || PyList_Append(miss_list, t) < 0) {
                Py_XDECREF(pm), Py_DECREF(key);
                goto error;
            }
            Py_DECREF(pm);
            src[i] = m;
        }
        Py_DECREF(key);
    }
    const Py_ssize_t nmiss = PyList_GET_SIZE(miss_list);

    /* row shape: from the encoder's output, else from the first hit */
    int rnd = 0;
    int64_t rshape[CP_CACHE_MAX_NDIM];
    if (nmiss > 0) {
        PyObject *enc = PyObject_GetAttrString(encoder, "encode");
        if (!enc) goto error;
        PyObject *cargs = PyTuple_Pack(1, miss_list);
        encoded_obj = cargs ? PyObject_Call(enc, cargs, enc_kw) : NULL;
        Py_XDECREF(cargs);
        Py_DECREF(enc);
        if (!encoded_obj) goto error;
        encoded = as_float32(encoded_obj, "encoder.encode() result");
        if (!encoded) goto error;
        if (PyArray_NDIM(encoded) < 2 || PyArray_NDIM(encoded) > CP_CACHE_MAX_NDIM + 1 ||
            PyArray_DIM(encoded, 0) != nmiss) {
            PyErr_Format(cp_py_DimensionMismatchError,
                         "encoder.encode() returned an array with ndim %d and %zd rows for %zd texts; expected "
                         "(%zd, ...)",
                         PyArray_NDIM(encoded), PyArray_NDIM(encoded) ? (Py_ssize_t)PyArray_DIM(encoded, 0) : 0,
                         nmiss, nmiss);
            goto error;
        }
        rnd = PyArray_NDIM(encoded) - 1;
        for (int d = 0; d < rnd; d++) rshape[d] = PyArray_DIM(encoded, d + 1);
        /* validate every row before caching any, so a bad batch leaves the cache as it was */
        const float *ev = (const float *)PyArray_DATA(encoded);
        npy_intp total = PyArray_SIZE(encoded), bad = -1;
        Py_BEGIN_ALLOW_THREADS
        uint32_t any = 0;
        for (npy_intp i = 0; i < total; i++) {
            uint32_t b;
            memcpy(&b, ev + i, 4);
            any |= (b & 0x7fffffffu) > 0x7f7fffffu;
        }
        if (any)
            for (npy_intp i = 0; i < total && bad < 0; i++)
                if (!isfinite(ev[i])) bad = i;
        Py_END_ALLOW_THREADS
        if (bad >= 0) {
            PyErr_Format(cp_py_InvalidArgumentError,
                         "encoder.encode() returned a non-finite value for %R (row %zd); nothing was cached",
                         PyList_GET_ITEM(miss_list, bad / (total / nmiss)), (Py_ssize_t)(bad / (total / nmiss)));
            goto error;
        }
    } else if (n > 0) {
        rnd = cp_cache_entry_shape(hits[0], rshape);
    }
    /* every hit must have the row shape (a cache shared by differently-shaped outputs under one kind is a bug) */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!hits[i]) continue;
        int64_t hs[CP_CACHE_MAX_NDIM];
        int hnd = cp_cache_entry_shape(hits[i], hs);
        if (hnd != rnd || memcmp(hs, rshape, 8 * (size_t)rnd) != 0) {
            PyErr_Format(cp_py_DimensionMismatchError,
                         "cached value for texts[%zd] has a different shape than the other rows (ndim %d vs %d); "
                         "use a distinct `kind` per output shape",
                         i, hnd, rnd);
            goto error;
        }
    }
    {
        npy_intp dims[CP_CACHE_MAX_NDIM + 1];
        dims[0] = n;
        size_t row = 1;
        for (int d = 0; d < rnd; d++) dims[d + 1] = (npy_intp)rshape[d], row *= (size_t)rshape[d];
        result = PyArray_SimpleNew(rnd + 1, dims, NPY_FLOAT32);
        if (!result) goto error;
        float *out = (float *)PyArray_DATA((PyArrayObject *)result);
        const float *encf = encoded ? (const float *)PyArray_DATA(encoded) : NULL;
        int put_rc = CP_OK;
        Py_BEGIN_ALLOW_THREADS
        /* put the misses first (this validates them: NaN/inf -> error, nothing of this call cached after it) */
        for (Py_ssize_t i = 0, m = 0; i < n && put_rc == CP_OK; i++) {
            if (hits[i] || src[i] != m) continue; /* each distinct miss once, at its first occurrence */
            int stored;
            put_rc = cp_cache_put(self->c, &keys[i], encf + (size_t)m * row, rnd, rshape, &stored);
            m++;
        }
        if (put_rc == CP_OK)
            for (Py_ssize_t i = 0; i < n; i++) {
                const float *from = hits[i] ? cp_cache_entry_data(hits[i]) : encf + (size_t)src[i] * row;
                memcpy(out + (size_t)i * row, from, 4 * row);
            }
        Py_END_ALLOW_THREADS
        if (put_rc != CP_OK) {
            Py_CLEAR(result);
            cp_py_raise(put_rc);
            goto error;
        }
    }
error:
    if (hits) cp_cache_unpin(self->c, hits, (size_t)texts.n);
    PyMem_Free(hits), PyMem_Free(keys), PyMem_Free(src);
    if (have_texts) cp_py_texts_release(&texts);
    Py_XDECREF(encoded), Py_XDECREF(encoded_obj), Py_XDECREF(miss_list), Py_XDECREF(miss_pos);
    Py_XDECREF(fpobj), Py_XDECREF(kindobj), Py_XDECREF(enc_kw), Py_XDECREF(texts_seq);
    return result;
}

/* ---- the rest ------------------------------------------------------------------------------------------ */

static PyObject *PromptCache_stats(PyPromptCache *self, PyObject *noargs) {
    cp_cache_stats s;
    cp_cache_get_stats(self->c, &s);
    uint64_t lookups = s.hits + s.misses;
    return Py_BuildValue("{s:K,s:K,s:K,s:d,s:K,s:K,s:K,s:K}", "hits", (unsigned long long)s.hits, "misses",
                         (unsigned long long)s.misses, "evictions", (unsigned long long)s.evictions, "hit_rate",
                         lookups ? (double)s.hits / (double)lookups : 0.0, "entries", (unsigned long long)s.entries,
                         "bytes", (unsigned long long)s.bytes, "payload_bytes", (unsigned long long)s.payload_bytes,
                         "capacity_bytes", (unsigned long long)s.capacity_bytes);
}

static PyObject *PromptCache_clear(PyPromptCache *self, PyObject *noargs) {
    Py_BEGIN_ALLOW_THREADS cp_cache_clear(self->c);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *PromptCache_reset_stats(PyPromptCache *self, PyObject *noargs) {
    cp_cache_reset_stats(self->c);
    Py_RETURN_NONE;
}

/* keys(): copied out in C under the cache mutex, turned into Python objects after it is released (building them
 * under the mutex could run a finalizer that uses this cache and deadlock). */
typedef struct {
    char *buf;
    size_t len, cap;
    size_t n;
    int failed;
} key_dump;

static void dump_bytes(key_dump *kd, const void *p, size_t n) {
    if (kd->failed) return;
    if (kd->len + n > kd->cap) {
        size_t cap = kd->cap ? kd->cap * 2 : 4096;
        while (cap < kd->len + n) cap *= 2;
        char *b = realloc(kd->buf, cap);
        if (!b) {
            kd->failed = 1;
            return;
        }
        kd->buf = b, kd->cap = cap;
    }
    memcpy(kd->buf + kd->len, p, n);
    kd->len += n;
}

static void collect_key(void *ctx, const cp_cache_key *k) {
    key_dump *kd = (key_dump *)ctx;
    size_t lens[3] = {k->fp_len, k->text_len, k->kind_len};
    dump_bytes(kd, lens, sizeof lens);
    dump_bytes(kd, k->fp, k->fp_len);
    dump_bytes(kd, k->text, k->text_len);
    dump_bytes(kd, k->kind, k->kind_len);
    kd->n++;
}

static PyObject *PromptCache_keys(PyPromptCache *self, PyObject *noargs) {
    key_dump kd = {0};
    Py_BEGIN_ALLOW_THREADS cp_cache_foreach(self->c, collect_key, &kd);
    Py_END_ALLOW_THREADS
    if (kd.failed) {
        free(kd.buf);
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New((Py_ssize_t)kd.n);
    size_t off = 0;
    for (size_t i = 0; list && i < kd.n; i++) {
        size_t lens[3];
        memcpy(lens, kd.buf + off, sizeof lens);
        off += sizeof lens;
        const char *p = kd.buf + off;
        PyObject *t = Py_BuildValue("(s#s#s#)", p, (Py_ssize_t)lens[0], p + lens[0], (Py_ssize_t)lens[1],
                                    p + lens[0] + lens[1], (Py_ssize_t)lens[2]);
        off += lens[0] + lens[1] + lens[2];
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    free(kd.buf);
    return list;
}

static PyObject *PromptCache_save(PyPromptCache *self, PyObject *arg) {
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path)) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = cp_cache_save(self->c, PyBytes_AS_STRING(path));
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != CP_OK) return cp_py_raise(rc);
    Py_RETURN_NONE;
}

static PyObject *PromptCache_load(PyObject *cls, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "capacity_bytes", NULL};
    PyObject *path = NULL, *capobj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|O:load", kwlist, PyUnicode_FSConverter, &path, &capobj)) return NULL;
    uint64_t cap = 0;
    if (capobj != Py_None && parse_capacity(capobj, &cap) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    if (capobj != Py_None && cap == 0) {
        Py_DECREF(path);
        PyErr_SetString(cp_py_InvalidArgumentError, "load: capacity_bytes must be > 0 (None: the file's)");
        return NULL;
    }
    cp_cache *c = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = cp_cache_load(&c, PyBytes_AS_STRING(path), cap);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != CP_OK) return cp_py_raise(rc);
    PyTypeObject *tp = (PyTypeObject *)cls;
    PyPromptCache *self = (PyPromptCache *)tp->tp_alloc(tp, 0);
    if (!self) {
        cp_cache_free(c);
        return NULL;
    }
    self->c = c;
    return (PyObject *)self;
}

static PyObject *PromptCache_entry_cost(PyObject *cls, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"fingerprint", "text", "shape", "kind", NULL};
    PyObject *fpo, *texto, *shapeo, *kindo = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|O:entry_cost", kwlist, &fpo, &texto, &shapeo, &kindo)) return NULL;
    cp_cache_key k = {0};
    if (key_part(fpo, &k.fp, &k.fp_len, "fingerprint") < 0 || key_part(texto, &k.text, &k.text_len, "text") < 0)
        return NULL;
    if (kindo) {
        if (key_part(kindo, &k.kind, &k.kind_len, "kind") < 0) return NULL;
    } else {
        k.kind = "pooled", k.kind_len = 6;
    }
    PyObject *seq = PySequence_Fast(shapeo, "shape must be a sequence of ints");
    if (!seq) return NULL;
    uint64_t count = 1;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < nd; i++) {
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        count *= (uint64_t)v;
    }
    Py_DECREF(seq);
    return PyLong_FromUnsignedLongLong(cp_cache_entry_cost(&k, count, (int)nd));
}

static Py_ssize_t PromptCache_len(PyPromptCache *self) {
    cp_cache_stats s;
    cp_cache_get_stats(self->c, &s);
    return (Py_ssize_t)s.entries;
}

/* `key in cache`: key = (fingerprint, text) or (fingerprint, text, kind); no stats, no LRU change */
static int PromptCache_contains(PyPromptCache *self, PyObject *key) {
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) < 2 || PyTuple_GET_SIZE(key) > 3) {
        PyErr_SetString(PyExc_TypeError, "`in PromptCache` takes a (fingerprint, text[, kind]) tuple");
        return -1;
    }
    cp_cache_key k;
    if (parse_key(&PyTuple_GET_ITEM(key, 0), PyTuple_GET_SIZE(key), NULL, 0, "__contains__", &k, NULL) < 0) return -1;
    cp_cache_entry *e = NULL;
    if (cp_cache_lookup(self->c, &k, &e, 0, 1) == 1) {
        Py_BEGIN_ALLOW_THREADS cp_cache_lookup(self->c, &k, &e, 0, 0);
        Py_END_ALLOW_THREADS
    }
    if (e) cp_cache_unpin(self->c, &e, 1);
    return e != NULL;
}

static PyObject *PromptCache_repr(PyPromptCache *self) {
    cp_cache_stats s;
    cp_cache_get_stats(self->c, &s);
    uint64_t lookups = s.hits + s.misses;
    char rate[32];
    snprintf(rate, sizeof rate, "%.3f", lookups ? (double)s.hits / (double)lookups : 0.0);
    return PyUnicode_FromFormat("PromptCache(entries=%llu, bytes=%llu, capacity_bytes=%llu, hit_rate=%s)",
                                (unsigned long long)s.entries, (unsigned long long)s.bytes,
                                (unsigned long long)s.capacity_bytes, rate);
}

static PyObject *PromptCache_get_capacity(PyPromptCache *self, void *closure) {
    cp_cache_stats s;
    cp_cache_get_stats(self->c, &s);
    return PyLong_FromUnsignedLongLong(s.capacity_bytes);
}

static int PromptCache_set_capacity(PyPromptCache *self, PyObject *value, void *closure) {
    uint64_t cap;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete capacity_bytes");
        return -1;
    }
    if (parse_capacity(value, &cap) < 0) return -1;
    Py_BEGIN_ALLOW_THREADS cp_cache_set_capacity(self->c, cap);
    Py_END_ALLOW_THREADS
    return 0;
}

static PyMethodDef PromptCache_methods[] = {
    {"get", (PyCFunction)(void (*)(void))PromptCache_get, METH_FASTCALL | METH_KEYWORDS,
     "get(fingerprint, text, kind='pooled') -> ndarray | None: a float32 copy of the cached value (counts a hit or a "
     "miss; a hit becomes most recently used)."},
    {"put", (PyCFunction)(void (*)(void))PromptCache_put, METH_FASTCALL | METH_KEYWORDS,
     "put(fingerprint, text, vector, kind='pooled') -> bool: store a copy (float16/64 converted to float32; NaN/inf "
     "-> InvalidArgumentError). False when the entry alone exceeds the capacity (then nothing is kept for the key)."},
    {"get_or_encode", (PyCFunction)(void (*)(void))PromptCache_get_or_encode, METH_VARARGS | METH_KEYWORDS,
     "get_or_encode(encoder, texts, kind='pooled', **encode_kwargs) -> ndarray float32 [n, ...]: cached rows for "
     "hits; encoder.encode(distinct_misses, **encode_kwargs) called once for the rest, which are then cached. "
     "The encoder needs .fingerprint (str) and .encode(list[str]) -> array [m, ...]."},
    {"stats", (PyCFunction)PromptCache_stats, METH_NOARGS,
     "stats() -> dict: hits, misses, evictions, hit_rate, entries, bytes, payload_bytes, capacity_bytes."},
    {"reset_stats", (PyCFunction)PromptCache_reset_stats, METH_NOARGS, "reset_stats(): zero hits/misses/evictions."},
    {"clear", (PyCFunction)PromptCache_clear, METH_NOARGS, "clear(): drop every entry (counters kept)."},
    {"keys", (PyCFunction)PromptCache_keys, METH_NOARGS,
     "keys() -> list[(fingerprint, text, kind)], least recently used first."},
    {"save", (PyCFunction)PromptCache_save, METH_O,
     "save(path): write atomically (temp file + fsync + rename); the file keeps LRU order and capacity."},
    {"load", (PyCFunction)(void (*)(void))PromptCache_load, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "PromptCache.load(path, capacity_bytes=None) -> PromptCache. Truncated/corrupt file -> IndexStateError."},
    {"entry_cost", (PyCFunction)(void (*)(void))PromptCache_entry_cost, METH_VARARGS | METH_KEYWORDS | METH_STATIC,
     "entry_cost(fingerprint, text, shape, kind='pooled') -> int: bytes an entry is charged "
     "(4*values + 8*ndim + UTF-8 key bytes + ENTRY_OVERHEAD)."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef PromptCache_getset[] = {
    {"capacity_bytes", (getter)PromptCache_get_capacity, (setter)PromptCache_set_capacity,
     "The byte budget; lowering it evicts least recently used entries.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot PromptCache_slots[] = {
    {Py_tp_new, PromptCache_new},
    {Py_tp_dealloc, PromptCache_dealloc},
    {Py_tp_methods, PromptCache_methods},
    {Py_tp_getset, PromptCache_getset},
    {Py_tp_repr, PromptCache_repr},
    {Py_sq_length, PromptCache_len},
    {Py_sq_contains, PromptCache_contains},
    {Py_tp_doc, "PromptCache(capacity_bytes=256<<20): (fingerprint, text, kind) -> float32 array, LRU-evicted by "
                "bytes, in C memory; thread-safe. Text keys are used exactly as given: normalise before."},
    {0, NULL}};

static PyType_Spec PromptCache_spec = {"clipprompt.PromptCache", sizeof(PyPromptCache), 0, Py_TPFLAGS_DEFAULT,
                                       PromptCache_slots};

/* ---- testing hooks for the hash (base/cp_hash.h) ------------------------------------------------------- */

/* _hash64(data: bytes, seed=0) -> int: one-shot XXH64. */
static PyObject *py_hash64(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer b;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "y*|K:_hash64", &b, &seed)) return NULL;
    uint64_t h = cp_hash64(b.buf, (size_t)b.len, seed);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(h);
}

/* _hash64_stream(chunks: list[bytes], seed=0) -> int: the streaming form over the chunks in order. */
static PyObject *py_hash64_stream(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *chunks;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "O|K:_hash64_stream", &chunks, &seed)) return NULL;
    PyObject *seq = PySequence_Fast(chunks, "_hash64_stream: chunks must be a sequence of bytes");
    if (!seq) return NULL;
    cp_hash64_state st;
    cp_hash64_init(&st, seed);
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        char *p;
        Py_ssize_t n;
        if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(seq, i), &p, &n) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        cp_hash64_update(&st, p, (size_t)n);
    }
    Py_DECREF(seq);
    return PyLong_FromUnsignedLongLong(cp_hash64_digest(&st));
}

/* _hash64_u64(key: int, seed=0) -> int: the 8-byte-key form. */
static PyObject *py_hash64_u64(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long key, seed = 0;
    if (!PyArg_ParseTuple(args, "K|K:_hash64_u64", &key, &seed)) return NULL;
    return PyLong_FromUnsignedLongLong(cp_hash64_u64(key, seed));
}

static PyMethodDef cache_functions[] = {
    {"_hash64", py_hash64, METH_VARARGS, "_hash64(data: bytes, seed=0) -> int: XXH64 (testing hook)."},
    {"_hash64_stream", py_hash64_stream, METH_VARARGS,
     "_hash64_stream(chunks, seed=0) -> int: streaming XXH64 over the chunks (testing hook)."},
    {"_hash64_u64", py_hash64_u64, METH_VARARGS,
     "_hash64_u64(key, seed=0) -> int: XXH64 of the key's 8 little-endian bytes (testing hook)."},
    {NULL, NULL, 0, NULL}};

int cp_py_add_cache(PyObject *m) {
    PromptCache_Type = (PyTypeObject *)PyType_FromSpec(&PromptCache_spec);
    if (!PromptCache_Type) return -1;
    PyObject *ov = PyLong_FromUnsignedLong(CP_CACHE_ENTRY_OVERHEAD);
    if (!ov || PyObject_SetAttrString((PyObject *)PromptCache_Type, "ENTRY_OVERHEAD", ov) < 0) {
        Py_XDECREF(ov);
        return -1;
    }
    Py_DECREF(ov);
    Py_INCREF(PromptCache_Type);
    if (PyModule_AddObject(m, "PromptCache", (PyObject *)PromptCache_Type) < 0) {
        Py_DECREF(PromptCache_Type);
        return -1;
    }
    return PyModule_AddFunctions(m, cache_functions);
}
