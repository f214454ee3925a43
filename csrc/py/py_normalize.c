/* py_normalize.c — cp.normalize / cp.normalize_batch / cp.clip_clean / cp.clip_clean_batch over cp_normalize.h.
 *
 * Texts are str or UTF-8 bytes (cp_py_text_get / cp_py_texts_get validate them). The C calls run with the GIL
 * released (the batch forms always, the single forms for long texts); only UTF-8 views kept alive by their owners
 * are read while it is released.
 */
#include "py_common.h"

#include "base/cp_utf8.h"

#include "text/cp_mojibake.h"
#include "text/cp_normalize.h"
#include "text/cp_segment.h"

#include <stdlib.h>
#include <string.h>

#define CP_NORMALIZE_NOGIL_BYTES 4096 /* single-text calls release the GIL from this size on */

/* Parse the shared keyword options into o. Returns 0, or -1 with an exception set. */
static int parse_opts(PyObject *lowercase, PyObject *form, PyObject *fullwidth, PyObject *html, PyObject *ftfy,
                      PyObject *collapse, PyObject *script, PyObject *fix_encoding, cp_normalize_opts *o,
                      const char *fn) {
    cp_normalize_opts_default(o);
    int t;
#define FLAG(obj, field)                          \
    if (obj) {                                    \
        if ((t = PyObject_IsTrue(obj)) < 0) return -1; \
        o->field = t;                             \
    }
    FLAG(lowercase, lowercase)
    FLAG(fullwidth, fullwidth)
    FLAG(ftfy, ftfy)
    FLAG(collapse, collapse_ws)
    FLAG(script, script_spaces)
    FLAG(fix_encoding, fix_encoding)
#undef FLAG
    if (html) {
        if (PyBool_Check(html)) {
            o->html_unescape = html == Py_True ? 2 : 0;
        } else if (PyLong_Check(html)) {
            long p = PyLong_AsLong(html);
            if (p == -1 && PyErr_Occurred()) return -1;
            if (p < 0 || p > 16) {
                PyErr_Format(cp_py_InvalidArgumentError,
                             "%s: html must be a bool or a number of unescape passes in 0..16, got %ld", fn, p);
                return -1;
            }
            o->html_unescape = (int)p;
        } else {
            PyErr_Format(PyExc_TypeError, "%s: html must be bool or int, not %.100s", fn, Py_TYPE(html)->tp_name);
            return -1;
        }
    }
    if (form && form != Py_None) {
        if (!PyUnicode_Check(form)) {
            PyErr_Format(PyExc_TypeError, "%s: form must be 'NFC', 'NFKC', 'none' or None, not %.100s", fn,
                         Py_TYPE(form)->tp_name);
            return -1;
        }
        const char *f = PyUnicode_AsUTF8(form);
        if (!f) return -1;
        if (strcasecmp(f, "NFKC") == 0)
            o->form = CP_FORM_NFKC;
        else if (strcasecmp(f, "NFC") == 0)
            o->form = CP_FORM_NFC;
        else if (strcasecmp(f, "none") == 0)
            o->form = CP_FORM_NONE;
        else {
            PyErr_Format(cp_py_InvalidArgumentError, "%s: unknown form %R (expected 'NFC', 'NFKC' or 'none')", fn,
                         form);
            return -1;
        }
    } else if (form == Py_None) {
        o->form = CP_FORM_NONE;
    }
    return 0;
}

/* segment=None (off) | "auto" | "zh" | "ja" | "none" -> *on, *lang. */
static int parse_segment(PyObject *segment, int *on, cp_lang *lang, const char *fn) {
    *on = 0, *lang = CP_LANG_AUTO;
    if (segment == NULL || segment == Py_None || segment == Py_False) return 0;
    if (segment == Py_True) {
        *on = 1;
        return 0;
    }
    if (!PyUnicode_Check(segment)) {
        PyErr_Format(PyExc_TypeError, "%s: segment must be None or 'auto'/'zh'/'ja'/'none', not %.100s", fn,
                     Py_TYPE(segment)->tp_name);
        return -1;
    }
    const char *name = PyUnicode_AsUTF8(segment);
    if (!name) return -1;
    int rc = cp_lang_parse(name, lang);
    if (rc != CP_OK) return cp_py_raise_int(rc);
    *on = 1;
    return 0;
}

/* Segment *out in place (replacing it with the space-joined words). No Python calls: runs without the GIL. */
static int segment_inplace(char **out, size_t *out_len, cp_lang lang) {
    char *seg = NULL;
    size_t seg_len = 0;
    int rc = cp_segment_join(*out, *out_len, lang, &seg, &seg_len);
    if (rc != CP_OK) return rc;
    free(*out);
    *out = seg, *out_len = seg_len;
    return CP_OK;
}

static char *kw_single[] = {"text", "lowercase", "form", "fullwidth", "html", "ftfy", "collapse_whitespace",
                            "script_spaces", "segment", "fix_encoding", NULL};
static char *kw_batch[] = {"texts", "lowercase", "form", "fullwidth", "html", "ftfy", "collapse_whitespace",
                           "script_spaces", "segment", "fix_encoding", NULL};

/* One text through cp_normalize (o) or cp_clip_clean (o == NULL). */
static PyObject *run_single(PyObject *text, const cp_normalize_opts *o, int seg_on, cp_lang seg_lang) {
    cp_py_text t;
    if (cp_py_text_get(text, &t, "text") < 0) return NULL;
    char *out = NULL;
    size_t out_len = 0;
    int rc;
    if (t.len >= CP_NORMALIZE_NOGIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS;
        rc = o ? cp_normalize(t.data, (size_t)t.len, o, &out, &out_len)
               : cp_clip_clean(t.data, (size_t)t.len, &out, &out_len);
        if (rc == CP_OK && seg_on) rc = segment_inplace(&out, &out_len, seg_lang);
        Py_END_ALLOW_THREADS;
    } else {
        rc = o ? cp_normalize(t.data, (size_t)t.len, o, &out, &out_len)
               : cp_clip_clean(t.data, (size_t)t.len, &out, &out_len);
        if (rc == CP_OK && seg_on) rc = segment_inplace(&out, &out_len, seg_lang);
    }
    if (rc != CP_OK) free(out);
    cp_py_text_release(&t);
    if (rc != CP_OK) return cp_py_raise(rc);
    PyObject *r = PyUnicode_DecodeUTF8(out, (Py_ssize_t)out_len, "strict");
    free(out);
    return r;
}

/* cp_py_texts_get without formatting a "texts[i]" label for every item (that costs as much as normalising a
 * short caption): the label is made only when an item fails, by converting that item again with it. */
static int texts_get(PyObject *obj, cp_py_texts *out) {
    if (PyUnicode_Check(obj) || PyBytes_Check(obj)) return cp_py_texts_get(obj, out, "texts");
    memset(out, 0, sizeof *out);
    PyObject *seq = PySequence_Fast(obj, "expected a list or tuple of str/bytes");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    size_t m = (size_t)(n ? n : 1);
    out->data = PyMem_Calloc(m, sizeof(char *));
    out->len = PyMem_Calloc(m, sizeof(size_t));
    out->owners = PyMem_Calloc(m, sizeof(PyObject *));
    if (!out->data || !out->len || !out->owners) {
        Py_DECREF(seq);
        cp_py_texts_release(out);
        PyErr_NoMemory();
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        cp_py_text t;
        if (cp_py_text_get(items[i], &t, "texts") < 0) {
            /* same failure again, now with the index in the message */
            char label[64];
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            snprintf(label, sizeof label, "texts[%zd]", i);
            if (cp_py_text_get(items[i], &t, label) == 0) {
                cp_py_text_release(&t); /* not reached (the conversion is deterministic): keep the first error */
                PyErr_Restore(type, value, tb);
            } else {
                Py_XDECREF(type), Py_XDECREF(value), Py_XDECREF(tb);
            }
            out->n = i;
            Py_DECREF(seq);
            cp_py_texts_release(out);
            return -1;
        }
        out->data[i] = t.data, out->len[i] = (size_t)t.len, out->owners[i] = t.owner;
        out->n = i + 1;
    }
    Py_DECREF(seq);
    return 0;
}

/* A list of texts through cp_normalize_batch (o) or cp_clip_clean_batch (o == NULL), GIL released throughout. */
static PyObject *run_batch(PyObject *texts, const cp_normalize_opts *o, int seg_on, cp_lang seg_lang,
                           const char *fn) {
    cp_py_texts t;
    if (texts_get(texts, &t) < 0) return NULL;
    size_t n = (size_t)t.n;
    char **outs = PyMem_Calloc(n ? n : 1, sizeof(char *));
    size_t *lens = PyMem_Calloc(n ? n : 1, sizeof(size_t));
    PyObject *list = NULL;
    if (!outs || !lens) {
        PyErr_NoMemory();
        goto error;
    }
    cp_batch_status st;
    int rc;
    Py_BEGIN_ALLOW_THREADS;
    rc = o ? cp_normalize_batch(t.data, t.len, n, o, outs, lens, &st)
           : cp_clip_clean_batch(t.data, t.len, n, outs, lens, &st);
    for (size_t i = 0; rc == CP_OK && seg_on && i < n; i++) {
        rc = segment_inplace(&outs[i], &lens[i], seg_lang);
        if (rc != CP_OK) st.index = i, st.code = rc;
    }
    Py_END_ALLOW_THREADS;
    if (rc != CP_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", cp_last_error());
        if (st.index != CP_BATCH_NO_INDEX)
            cp_fail(rc, "%s: texts[%zu]: %s", fn, st.index, msg);
        else
            cp_fail(rc, "%s: %s", fn, msg);
        cp_py_raise_batch(rc, &st);
        goto error;
    }
    list = PyList_New((Py_ssize_t)n);
    if (!list) goto error;
    for (size_t i = 0; i < n; i++) {
        PyObject *s = PyUnicode_DecodeUTF8(outs[i], (Py_ssize_t)lens[i], "strict");
        if (!s) {
            Py_CLEAR(list);
            goto error;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
error:
    if (outs)
        for (size_t i = 0; i < n; i++) free(outs[i]);
    PyMem_Free(outs);
    PyMem_Free(lens);
    cp_py_texts_release(&t);
    return list;
}

static PyObject *py_normalize(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    PyObject *text, *lowercase = NULL, *form = NULL, *fullwidth = NULL, *html = NULL, *ftfy = NULL, *collapse = NULL,
                    *script = NULL, *segment = NULL, *fix_encoding = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$OOOOOOOOO:normalize", kw_single, &text, &lowercase, &form,
                                     &fullwidth, &html, &ftfy, &collapse, &script, &segment, &fix_encoding))
        return NULL;
    cp_normalize_opts o;
    int seg_on;
    cp_lang seg_lang;
    if (parse_opts(lowercase, form, fullwidth, html, ftfy, collapse, script, fix_encoding, &o, "normalize") < 0)
        return NULL;
    if (parse_segment(segment, &seg_on, &seg_lang, "normalize") < 0) return NULL;
    return run_single(text, &o, seg_on, seg_lang);
}

static PyObject *py_normalize_batch(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    PyObject *texts, *lowercase = NULL, *form = NULL, *fullwidth = NULL, *html = NULL, *ftfy = NULL, *collapse = NULL,
                     *script = NULL, *segment = NULL, *fix_encoding = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$OOOOOOOOO:normalize_batch", kw_batch, &texts, &lowercase, &form,
                                     &fullwidth, &html, &ftfy, &collapse, &script, &segment, &fix_encoding))
        return NULL;
    cp_normalize_opts o;
    int seg_on;
    cp_lang seg_lang;
    if (parse_opts(lowercase, form, fullwidth, html, ftfy, collapse, script, fix_encoding, &o, "normalize_batch") < 0)
        return NULL;
    if (parse_segment(segment, &seg_on, &seg_lang, "normalize_batch") < 0) return NULL;
    return run_batch(texts, &o, seg_on, seg_lang, "normalize_batch");
}

static PyObject *py_clip_clean(PyObject *self, PyObject *text) {
    (void)self;
    return run_single(text, NULL, 0, CP_LANG_AUTO);
}

static PyObject *py_clip_clean_batch(PyObject *self, PyObject *texts) {
    (void)self;
    return run_batch(texts, NULL, 0, CP_LANG_AUTO, "clip_clean_batch");
}

/* _ftfy_is_bad(text) -> bool: ftfy.badness.is_bad as cp_mojibake_is_bad computes it (for the tests). */
static PyObject *py_ftfy_is_bad(PyObject *self, PyObject *text) {
    (void)self;
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "_ftfy_is_bad: text must be str, not %.100s", Py_TYPE(text)->tp_name);
        return NULL;
    }
    Py_UCS4 *v = PyUnicode_AsUCS4Copy(text);
    if (!v) return NULL;
    int bad = cp_mojibake_is_bad((const uint32_t *)v, (size_t)PyUnicode_GET_LENGTH(text));
    PyMem_Free(v);
    return PyBool_FromLong(bad);
}

/* ---- testing hooks for the UTF-8 decoder (base/cp_utf8.h) ------------------------------------------- */

/* _utf8_decode(data: bytes) -> list[(offset, length, value)]: one item per decoded sequence or maximal invalid
 * subpart; value is the code point, or the negative CP_UTF8_* class. */
static PyObject *py_utf8_decode(PyObject *self, PyObject *arg) {
    (void)self;
    char *buf;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &buf, &n) < 0) return NULL;
    PyObject *out = PyList_New(0);
    const unsigned char *s = (const unsigned char *)buf;
    for (Py_ssize_t i = 0; out && i < n;) {
        uint32_t c;
        size_t len;
        int cls = cp_utf8_decode(s + i, (size_t)(n - i), &c, &len);
        PyObject *t = Py_BuildValue("(nnl)", i, (Py_ssize_t)len, cls == CP_UTF8_OK ? (long)c : (long)cls);
        if (!t || PyList_Append(out, t) < 0) Py_CLEAR(out);
        Py_XDECREF(t);
        i += (Py_ssize_t)len;
    }
    return out;
}

/* _utf8_replace(data: bytes) -> bytes: cp_utf8_replace_invalid (bytes.decode("utf-8", "replace") as UTF-8). */
static PyObject *py_utf8_replace(PyObject *self, PyObject *arg) {
    (void)self;
    char *buf;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &buf, &n) < 0) return NULL;
    unsigned char *dst = PyMem_Malloc(3 * (size_t)n + 1);
    if (!dst) return PyErr_NoMemory();
    size_t m = cp_utf8_replace_invalid((const unsigned char *)buf, (size_t)n, dst);
    PyObject *r = PyBytes_FromStringAndSize((const char *)dst, (Py_ssize_t)m);
    PyMem_Free(dst);
    return r;
}

/* _utf8_validate(data: bytes) -> None, or raises TokenizerError naming the offset (cp_utf8_validate). */
static PyObject *py_utf8_validate(PyObject *self, PyObject *arg) {
    (void)self;
    char *buf;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &buf, &n) < 0) return NULL;
    size_t bad;
    int rc = cp_utf8_validate(buf, (size_t)n, &bad);
    if (rc != CP_OK) return cp_py_raise(rc);
    Py_RETURN_NONE;
}

static PyMethodDef normalize_methods[] = {
    {"normalize", (PyCFunction)(void (*)(void))py_normalize, METH_VARARGS | METH_KEYWORDS,
     "normalize(text, *, lowercase=False, form='NFKC', fullwidth=True, html=True, ftfy=True,\n"
     "          collapse_whitespace=True, script_spaces=True, segment=None, fix_encoding=True) -> str\n\n"
     "Unicode cleanup of one prompt (str or UTF-8 bytes): ftfy.fix_text's fixes (fix_encoding=False: without its\n"
     "mojibake repair), html.unescape (html=True:\n"
     "twice, like CLIP; an int: that many passes), NFC/NFKC ('none'/None: no normalisation), full-width to\n"
     "half-width, whitespace collapse, optional Python-str.lower lowercasing, a space where Latin letters/digits\n"
     "meet CJK; segment='auto'|'zh'|'ja' then joins cp.segment's words with spaces. Raises TokenizerError (invalid UTF-8, with the byte offset), EmptyPromptError (empty or\n"
     "whitespace only), InvalidArgumentError (unknown form)."},
    {"normalize_batch", (PyCFunction)(void (*)(void))py_normalize_batch, METH_VARARGS | METH_KEYWORDS,
     "normalize_batch(texts, **options) -> list[str]: normalize() over a list, GIL released for the whole batch.\n"
     "Errors name the index of the bad prompt (texts[i])."},
    {"clip_clean", py_clip_clean, METH_O,
     "clip_clean(text) -> str: exactly OpenAI CLIP SimpleTokenizer's cleaning\n"
     "whitespace_clean(basic_clean(text)).lower() (ftfy.fix_text, html.unescape twice,\n"
     "strip, \\s+ -> ' ', lower). EmptyPromptError when nothing is left."},
    {"clip_clean_batch", py_clip_clean_batch, METH_O,
     "clip_clean_batch(texts) -> list[str]: clip_clean over a list, GIL released for the whole batch."},
    {"_ftfy_is_bad", py_ftfy_is_bad, METH_O, "_ftfy_is_bad(text) -> bool: ftfy.badness.is_bad in C (testing hook)."},
    {"_utf8_decode", py_utf8_decode, METH_O,
     "_utf8_decode(data: bytes) -> list[(offset, length, value)]: the C decoder step by step; value = code point, or\n"
     "the negative error class (testing hook)."},
    {"_utf8_replace", py_utf8_replace, METH_O,
     "_utf8_replace(data: bytes) -> bytes: invalid sequences -> U+FFFD as bytes.decode('utf-8', 'replace') (hook)."},
    {"_utf8_validate", py_utf8_validate, METH_O, "_utf8_validate(data: bytes): raises TokenizerError (hook)."},
    {NULL, NULL, 0, NULL}};

int cp_py_add_normalize(PyObject *m) { return PyModule_AddFunctions(m, normalize_methods); }
