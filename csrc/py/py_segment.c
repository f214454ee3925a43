/* py_segment.c — Python bindings of the CJK segmenters (csrc/cp_segment.h, cp_jieba.h, cp_mecab.h):
 *   segment(text, lang="auto") -> list[str]           segment_batch(texts, lang="auto") -> list[list[str]]
 *   segment_join(text, lang="auto") -> str             (what normalize(..., segment=...) uses)
 *   add_word(word, freq=None) -> int                   load_userdict(path)
 *   jieba_lcut(text, hmm=True) -> list[str]            (exactly jieba.lcut, whitespace tokens included)
 *   jieba_suggest_freq(word) -> int, jieba_freq(word) -> int | None, segment_detect(text) -> str, mecab_info() -> dict
 * Every call that segments releases the GIL.
 */
#include "py_common.h"

#include "text/cp_jieba.h"
#include "text/cp_mecab.h"
#include "text/cp_segment.h"

static int parse_lang(PyObject *obj, cp_lang *lang) {
    if (obj == NULL || obj == Py_None) {
        *lang = CP_LANG_AUTO;
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(cp_py_InvalidArgumentError, "lang must be \"auto\", \"zh\", \"ja\" or \"none\", not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(obj);
    if (!s) return -1;
    int rc = cp_lang_parse(s, lang);
    return rc == CP_OK ? 0 : cp_py_raise_int(rc);
}

static PyObject *spans_to_list(const char *text, const cp_spans *sp) {
    PyObject *list = PyList_New((Py_ssize_t)sp->n);
    if (!list) return NULL;
    for (size_t k = 0; k < sp->n; k++) {
        PyObject *s = PyUnicode_DecodeUTF8(text + sp->v[k].start, (Py_ssize_t)sp->v[k].len, "strict");
        if (!s) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)k, s);
    }
    return list;
}

static PyObject *py_segment(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"text", "lang", NULL};
    PyObject *text_obj, *lang_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:segment", kwlist, &text_obj, &lang_obj)) return NULL;
    cp_lang lang;
    if (parse_lang(lang_obj, &lang) < 0) return NULL;
    cp_py_text t;
    if (cp_py_text_get(text_obj, &t, "text") < 0) return NULL;
    cp_spans sp = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_segment_text(t.data, (size_t)t.len, lang, &sp);
    Py_END_ALLOW_THREADS
    PyObject *res = rc == CP_OK ? spans_to_list(t.data, &sp) : cp_py_raise(rc);
    cp_spans_free(&sp);
    cp_py_text_release(&t);
    return res;
}

static PyObject *py_segment_batch(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"texts", "lang", NULL};
    PyObject *texts_obj, *lang_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:segment_batch", kwlist, &texts_obj, &lang_obj)) return NULL;
    cp_lang lang;
    if (parse_lang(lang_obj, &lang) < 0) return NULL;
    cp_py_texts ts;
    if (cp_py_texts_get(texts_obj, &ts, "texts") < 0) return NULL;
    size_t n = (size_t)ts.n;
    cp_spans *outs = PyMem_Calloc(n ? n : 1, sizeof(cp_spans));
    if (!outs) {
        cp_py_texts_release(&ts);
        return PyErr_NoMemory();
    }
    int rc;
    cp_batch_status st;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_segment_batch(ts.data, ts.len, n, lang, outs, &st);
    Py_END_ALLOW_THREADS
    PyObject *res = NULL;
    if (rc != CP_OK) {
        cp_py_raise_batch(rc, &st);
    } else if ((res = PyList_New((Py_ssize_t)n)) != NULL) {
        for (size_t i = 0; i < n; i++) {
            PyObject *l = spans_to_list(ts.data[i], &outs[i]);
            if (!l) {
                Py_CLEAR(res);
                break;
            }
            PyList_SET_ITEM(res, (Py_ssize_t)i, l);
        }
    }
    for (size_t i = 0; i < n; i++) cp_spans_free(&outs[i]);
    PyMem_Free(outs);
    cp_py_texts_release(&ts);
    return res;
}

static PyObject *py_segment_join(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"text", "lang", NULL};
    PyObject *text_obj, *lang_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:segment_join", kwlist, &text_obj, &lang_obj)) return NULL;
    cp_lang lang;
    if (parse_lang(lang_obj, &lang) < 0) return NULL;
    cp_py_text t;
    if (cp_py_text_get(text_obj, &t, "text") < 0) return NULL;
    char *out = NULL;
    size_t out_len = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_segment_join(t.data, (size_t)t.len, lang, &out, &out_len);
    Py_END_ALLOW_THREADS
    PyObject *res =
        rc == CP_OK ? PyUnicode_DecodeUTF8(out, (Py_ssize_t)out_len, "strict") : cp_py_raise(rc);
    free(out);
    cp_py_text_release(&t);
    return res;
}

static PyObject *py_segment_detect(PyObject *self, PyObject *arg) {
    cp_py_text t;
    if (cp_py_text_get(arg, &t, "text") < 0) return NULL;
    cp_lang l = cp_segment_detect(t.data, (size_t)t.len);
    cp_py_text_release(&t);
    return PyUnicode_FromString(cp_lang_name(l));
}

static int get_jieba(cp_jieba **j) {
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_jieba_default(j);
    Py_END_ALLOW_THREADS
    return rc == CP_OK ? 0 : cp_py_raise_int(rc);
}

static PyObject *py_jieba_lcut(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"text", "hmm", NULL};
    PyObject *text_obj;
    int hmm = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p:jieba_lcut", kwlist, &text_obj, &hmm)) return NULL;
    cp_jieba *j;
    if (get_jieba(&j) < 0) return NULL;
    cp_py_text t;
    if (cp_py_text_get(text_obj, &t, "text") < 0) return NULL;
    cp_spans sp = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_jieba_cut(j, t.data, (size_t)t.len, hmm, &sp);
    Py_END_ALLOW_THREADS
    PyObject *res = rc == CP_OK ? spans_to_list(t.data, &sp) : cp_py_raise(rc);
    cp_spans_free(&sp);
    cp_py_text_release(&t);
    return res;
}

static PyObject *py_add_word(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"word", "freq", "tag", NULL};
    PyObject *word_obj, *freq_obj = Py_None, *tag_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO:add_word", kwlist, &word_obj, &freq_obj, &tag_obj)) return NULL;
    int64_t freq = -1;
    if (freq_obj != Py_None) {
        long long f = PyLong_AsLongLong(freq_obj);
        if (f == -1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_SetString(cp_py_InvalidArgumentError, "add_word: freq does not fit in 64 bits");
            }
            return NULL;
        }
        if (f < 0) return PyErr_Format(cp_py_InvalidArgumentError, "add_word: freq must be >= 0 or None, got %lld", f);
        freq = (int64_t)f;
    }
    cp_jieba *j;
    if (get_jieba(&j) < 0) return NULL;
    cp_py_text t;
    if (cp_py_text_get(word_obj, &t, "word") < 0) return NULL;
    int64_t used = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_jieba_add_word(j, t.data, (size_t)t.len, freq, &used);
    Py_END_ALLOW_THREADS
    cp_py_text_release(&t);
    if (rc != CP_OK) return cp_py_raise(rc);
    return PyLong_FromLongLong((long long)used);
}

static PyObject *py_jieba_suggest_freq(PyObject *self, PyObject *arg) {
    cp_jieba *j;
    if (get_jieba(&j) < 0) return NULL;
    cp_py_text t;
    if (cp_py_text_get(arg, &t, "word") < 0) return NULL;
    int64_t f = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_jieba_suggest_freq(j, t.data, (size_t)t.len, &f);
    Py_END_ALLOW_THREADS
    cp_py_text_release(&t);
    if (rc != CP_OK) return cp_py_raise(rc);
    return PyLong_FromLongLong((long long)f);
}

static PyObject *py_jieba_freq(PyObject *self, PyObject *arg) {
    cp_jieba *j;
    if (get_jieba(&j) < 0) return NULL;
    cp_py_text t;
    if (cp_py_text_get(arg, &t, "word") < 0) return NULL;
    int64_t f = 0;
    int found = 0, rc = cp_jieba_get_freq(j, t.data, (size_t)t.len, &f, &found);
    cp_py_text_release(&t);
    if (rc != CP_OK) return cp_py_raise(rc);
    if (!found) Py_RETURN_NONE;
    return PyLong_FromLongLong((long long)f);
}

static PyObject *py_jieba_info(PyObject *self, PyObject *noargs) {
    cp_jieba *j;
    if (get_jieba(&j) < 0) return NULL;
    return Py_BuildValue("{s:L,s:n}", "total", (long long)cp_jieba_total(j), "entries", (Py_ssize_t)cp_jieba_size(j));
}

/* load_userdict(path_or_file): a path (str, bytes, os.PathLike), or an open file whose read() gives bytes or str,
 * as jieba.load_userdict accepts. */
static PyObject *py_load_userdict(PyObject *self, PyObject *arg) {
    cp_jieba *j;
    if (get_jieba(&j) < 0) return NULL;
    int rc;
    if (!PyUnicode_Check(arg) && !PyBytes_Check(arg) && !PyObject_HasAttrString(arg, "__fspath__") &&
        PyObject_HasAttrString(arg, "read")) {
        PyObject *data = PyObject_CallMethod(arg, "read", NULL);
        if (!data) return NULL;
        PyObject *name = PyObject_GetAttrString(arg, "name");
        if (!name) PyErr_Clear();
        const char *label = name && PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : "<file>";
        if (!label) PyErr_Clear(), label = "<file>";
        cp_py_text t = {0};
        if (PyUnicode_Check(data)) {
            if (cp_py_text_get(data, &t, "load_userdict: file contents") < 0) goto file_error;
        } else if (PyBytes_Check(data)) {
            /* raw bytes: the C parser reports non-UTF-8 lines like jieba does */
            t.data = PyBytes_AS_STRING(data), t.len = PyBytes_GET_SIZE(data);
        } else {
            PyErr_Format(PyExc_TypeError, "load_userdict: read() returned %.100s, not bytes or str",
                         Py_TYPE(data)->tp_name);
            goto file_error;
        }
        Py_BEGIN_ALLOW_THREADS
        rc = cp_jieba_load_userdict_text(j, t.data, (size_t)t.len, label);
        Py_END_ALLOW_THREADS
        cp_py_text_release(&t);
        Py_DECREF(data);
        Py_XDECREF(name);
        if (rc != CP_OK) return cp_py_raise(rc);
        Py_RETURN_NONE;
    file_error:
        Py_DECREF(data);
        Py_XDECREF(name);
        return NULL;
    }
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path)) return NULL;
    const char *p = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    rc = cp_jieba_load_userdict(j, p);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != CP_OK) return cp_py_raise(rc);
    Py_RETURN_NONE;
}

static PyObject *py_mecab_info(PyObject *self, PyObject *noargs) {
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_mecab_load();
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) return cp_py_raise(rc);
    return Py_BuildValue("{s:s,s:s}", "version", cp_mecab_version(), "dicdir", cp_mecab_dicdir());
}

static PyMethodDef segment_methods[] = {
    {"segment", (PyCFunction)(void (*)(void))py_segment, METH_VARARGS | METH_KEYWORDS,
     "segment(text, lang=\"auto\") -> list[str]\n\nWords of a prompt. lang=\"zh\": jieba's accurate mode (identical to "
     "jieba.lcut without whitespace tokens); \"ja\": MeCab wakati; \"none\": whitespace split; \"auto\": by script "
     "(any kana -> ja, else Han -> zh), segmenting only whitespace-separated chunks that contain Han or kana."},
    {"segment_batch", (PyCFunction)(void (*)(void))py_segment_batch, METH_VARARGS | METH_KEYWORDS,
     "segment_batch(texts, lang=\"auto\") -> list[list[str]]: segment() over many texts, GIL released, threaded."},
    {"segment_join", (PyCFunction)(void (*)(void))py_segment_join, METH_VARARGS | METH_KEYWORDS,
     "segment_join(text, lang=\"auto\") -> str: segment() joined with single spaces."},
    {"segment_detect", py_segment_detect, METH_O, "segment_detect(text) -> \"zh\" | \"ja\" | \"none\""},
    {"jieba_lcut", (PyCFunction)(void (*)(void))py_jieba_lcut, METH_VARARGS | METH_KEYWORDS,
     "jieba_lcut(text, hmm=True) -> list[str]: exactly jieba.lcut(text, HMM=hmm), whitespace tokens included."},
    {"add_word", (PyCFunction)(void (*)(void))py_add_word, METH_VARARGS | METH_KEYWORDS,
     "add_word(word, freq=None, tag=None) -> int\n\nAdd a word to the Chinese dictionary (jieba.add_word): freq=None "
     "uses jieba's suggest_freq so the word is kept whole; freq=0 deletes it. Returns the frequency used."},
    {"load_userdict", py_load_userdict, METH_O,
     "load_userdict(path_or_file): jieba.load_userdict: UTF-8 lines `word [freq] [tag]`."},
    {"jieba_suggest_freq", py_jieba_suggest_freq, METH_O, "jieba_suggest_freq(word) -> int (jieba.suggest_freq)"},
    {"jieba_freq", py_jieba_freq, METH_O, "jieba_freq(word) -> int | None: the prefix dictionary's FREQ.get(word)"},
    {"jieba_info", py_jieba_info, METH_NOARGS, "jieba_info() -> dict(total, entries), loading the dictionary."},
    {"mecab_info", py_mecab_info, METH_NOARGS,
     "mecab_info() -> dict(version, dicdir); DependencyError if MeCab or its dictionary is missing."},
    {NULL, NULL, 0, NULL}};

int cp_py_add_segment(PyObject *m) { return PyModule_AddFunctions(m, segment_methods); }
