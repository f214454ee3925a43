/* py_sentencepiece.c — clipprompt._C.SentencePieceTokenizer over cp_sp (text/cp_sentencepiece.h); a path to an e5
 * weight file ("E5S1", model/cp_q4.h) loads the piece table and normalisation rules inside it. */
#include "py_file_common.h"

#include <stdio.h>
#include <string.h>

#include "model/cp_q4.h"
#include "text/cp_sentencepiece.h"

typedef struct {
    PyObject_HEAD
    cp_sp *sp;
    PyObject *path;
    int from_e5;
} SPObject;

/* a cp_sp from the piece table of an open e5 file (shared with py_multilingual.c through this file's function) */
int cp_py_sp_from_e5(const cp_e5file *f, cp_sp **out) {
    const cp_e5_vocab *v = cp_e5file_vocab(f);
    cp_sp_table tb = {0};
    tb.n_pieces = v->n_pieces, tb.blob = v->blob, tb.offsets = v->offsets, tb.scores = v->scores;
    tb.unk_id = v->unk, tb.bos_id = v->bos, tb.eos_id = v->eos, tb.pad_id = v->pad;
    tb.n_rules = v->n_rules, tb.rule_cp = v->rule_cp, tb.rule_off = v->rule_off, tb.rule_out = v->rule_out;
    uint8_t *types = malloc((size_t)v->n_pieces);
    if (!types) return cp_fail(CP_ERR_NOMEM, "out of memory");
    /* fairseq dictionaries: the header's specials, and "<mask>" appended last, are control symbols */
    for (int32_t i = 0; i < v->n_pieces; i++) types[i] = CP_SP_NORMAL;
    types[v->unk] = CP_SP_UNKNOWN;
    int32_t ctl[3] = {v->bos, v->eos, v->pad};
    for (int k = 0; k < 3; k++)
        if (ctl[k] >= 0) types[ctl[k]] = CP_SP_CONTROL;
    int32_t last = v->n_pieces - 1;
    if (v->offsets[last + 1] - v->offsets[last] == 6 && memcmp(v->blob + v->offsets[last], "<mask>", 6) == 0)
        types[last] = CP_SP_CONTROL;
    tb.types = types;
    int rc = cp_sp_create_table(&tb, out);
    free(types);
    return rc;
}

static PyObject *SP_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"model_path", NULL};
    PyObject *arg;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:SentencePieceTokenizer", kwlist, &arg)) return NULL;
    PyObject *os = PyImport_ImportModule("os");
    PyObject *path = os ? PyObject_CallMethod(os, "fspath", "O", arg) : NULL;
    Py_XDECREF(os);
    if (!path) return NULL;
    if (PyBytes_Check(path)) Py_SETREF(path, PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path)));
    if (!path) return NULL;
    /* sniff the first bytes: an e5 weight file is mapped by its reader, anything else read as a .model */
    PyObject *fs = PyUnicode_EncodeFSDefault(path);
    if (!fs) {
        Py_DECREF(path);
        return NULL;
    }
    char head[4] = {0};
    size_t got = 0;
    FILE *fh = fopen(PyBytes_AS_STRING(fs), "rb");
    if (fh) {
        got = fread(head, 1, sizeof head, fh);
        fclose(fh);
    }
    cp_sp *sp = NULL;
    int rc, from_e5 = cp_e5file_sniff(head, got);
    if (from_e5) {
        cp_e5file *f = NULL;
        const char *cpath = PyBytes_AS_STRING(fs);
        Py_BEGIN_ALLOW_THREADS rc = cp_e5file_open(cpath, &f);
        if (rc == CP_OK) rc = cp_py_sp_from_e5(f, &sp);
        cp_e5file_close(f);
        Py_END_ALLOW_THREADS Py_DECREF(fs);
    } else {
        Py_DECREF(fs);
        PyObject *data = cp_py_read_file(path, "the SentencePiece model ");
        if (!data) {
            Py_DECREF(path);
            return NULL;
        }
        const char *buf = PyBytes_AS_STRING(data);
        size_t n = (size_t)PyBytes_GET_SIZE(data);
        Py_BEGIN_ALLOW_THREADS rc = cp_sp_create_model(buf, n, &sp);
        Py_END_ALLOW_THREADS Py_DECREF(data);
    }
    if (rc != CP_OK) {
        Py_DECREF(path);
        return cp_py_raise(rc);
    }
    SPObject *self = (SPObject *)type->tp_alloc(type, 0);
    if (!self) {
        cp_sp_free(sp);
        Py_DECREF(path);
        return NULL;
    }
    self->sp = sp, self->path = path, self->from_e5 = from_e5;
    return (PyObject *)self;
}

static void SP_dealloc(SPObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    cp_sp_free(self->sp);
    Py_XDECREF(self->path);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int sp_encode_one(const void *tok, const char *text, size_t len, int32_t **ids, size_t *n) {
    return cp_sp_encode((const cp_sp *)tok, text, len, ids, n);
}

static const char *sp_piece(const void *tok, int32_t id, size_t *len) {
    return cp_sp_id_to_piece((const cp_sp *)tok, id, len);
}

static PyObject *SP_encode(SPObject *self, PyObject *arg) { return cp_py_encode_one(sp_encode_one, self->sp, arg); }

static PyObject *SP_pieces(SPObject *self, PyObject *ids) {
    return cp_py_id_strings(sp_piece, self->sp, ids, "piece", "replace");
}

static PyObject *SP_tokenize(SPObject *self, PyObject *arg) {
    PyObject *ids = SP_encode(self, arg);
    if (!ids) return NULL;
    PyObject *r = SP_pieces(self, ids);
    Py_DECREF(ids);
    return r;
}

static PyObject *SP_normalize(SPObject *self, PyObject *arg) {
    cp_py_text t;
    if (cp_py_text_get(arg, &t, "text") < 0) return NULL;
    char *out = NULL;
    size_t n = 0;
    int rc = cp_sp_normalize(self->sp, t.data, (size_t)t.len, &out, &n);
    cp_py_text_release(&t);
    if (rc != CP_OK) return cp_py_raise(rc);
    PyObject *r = PyUnicode_DecodeUTF8(out, (Py_ssize_t)n, "replace");
    free(out);
    return r;
}

static int batch_sp(const void *tok, const char *const *texts, const size_t *lens, size_t n, size_t max_length,
                    int32_t *out, int32_t *lengths, cp_batch_status *status) {
    return cp_sp_encode_batch((const cp_sp *)tok, texts, lens, n, max_length, out, lengths, status);
}

static PyObject *SP_call(SPObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"texts", "max_length", "padding", NULL};
    PyObject *texts;
    Py_ssize_t max_length = 512;
    const char *padding = "longest";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|ns:SentencePieceTokenizer.__call__", kwlist, &texts, &max_length,
                                     &padding))
        return NULL;
    int pad_max = cp_py_padding_mode(padding);
    if (pad_max < 0) return NULL;
    int32_t bos, eos;
    cp_sp_special_ids(self->sp, NULL, &bos, &eos, NULL);
    Py_ssize_t need = 1 + (bos >= 0) + (eos >= 0);
    if (max_length < need || max_length > (1 << 20)) {
        PyErr_Format(cp_py_InvalidArgumentError, "max_length must be in [%zd, %d] (the specials and one token), got %zd",
                     need, 1 << 20, max_length);
        return NULL;
    }
    return cp_py_encode_rows(batch_sp, self->sp, texts, (size_t)max_length, pad_max);
}

static PyObject *SP_repr(SPObject *self) {
    return PyUnicode_FromFormat("SentencePieceTokenizer(model_path=%R, vocab_size=%d)", self->path,
                                (int)cp_sp_vocab_size(self->sp));
}

static PyObject *SP_get(SPObject *self, void *which) {
    int32_t ids[4];
    cp_sp_special_ids(self->sp, &ids[0], &ids[1], &ids[2], &ids[3]);
    int w = (int)(intptr_t)which;
    if (w == 0) return PyLong_FromLong(cp_sp_vocab_size(self->sp));
    if (w >= 1 && w <= 4) return PyLong_FromLong(ids[w - 1]);
    return Py_NewRef(self->path);
}

static PyGetSetDef SP_getset[] = {
    {"vocab_size", (getter)SP_get, NULL, "Number of pieces.", (void *)0},
    {"unk_id", (getter)SP_get, NULL, "Id of the unknown piece.", (void *)1},
    {"bos_id", (getter)SP_get, NULL, "Id of <s> (-1 when the model has none).", (void *)2},
    {"eos_id", (getter)SP_get, NULL, "Id of </s> (-1 when the model has none).", (void *)3},
    {"pad_id", (getter)SP_get, NULL, "Id of <pad> (-1 when the model has none; padding then uses 0).", (void *)4},
    {"path", (getter)SP_get, NULL, "The file this tokenizer was read from.", (void *)5},
    {NULL},
};

static PyMethodDef SP_methods[] = {
    {"encode", (PyCFunction)SP_encode, METH_O,
     "encode(text) -> list[int]: piece ids without BOS/EOS, as sentencepiece's encode(text) gives them."},
    {"tokenize", (PyCFunction)SP_tokenize, METH_O, "tokenize(text) -> list[str]: the pieces of encode(text)."},
    {"id_to_piece", (PyCFunction)SP_pieces, METH_O, "id_to_piece(ids) -> list[str]."},
    {"normalize", (PyCFunction)SP_normalize, METH_O,
     "normalize(text) -> str: the model's normalisation (charsmap, whitespace, U+2581), as sentencepiece's."},
    {NULL},
};

static PyType_Slot SP_slots[] = {
    {Py_tp_new, SP_new},
    {Py_tp_dealloc, SP_dealloc},
    {Py_tp_call, SP_call},
    {Py_tp_repr, SP_repr},
    {Py_tp_methods, SP_methods},
    {Py_tp_getset, SP_getset},
    {Py_tp_doc,
     "SentencePieceTokenizer(model_path)\n\n"
     "SentencePiece unigram tokenization in C, id for id with the sentencepiece library. model_path: a .model file "
     "or an e5 weight file (its piece table; ids are the model's, <s>=0 <pad>=1 </s>=2 <unk>=3).\n\n"
     "sp(texts, max_length=512, padding=\"longest\") -> (input_ids int32 [B, L], attention_mask int32 [B, L]): "
     "<s> ... </s> (when the model has them) padded with <pad> (0 when it has none); longer texts are cut to "
     "max_length keeping </s>."},
    {0, NULL},
};

static PyType_Spec SP_spec = {"clipprompt._C.SentencePieceTokenizer", sizeof(SPObject), 0, Py_TPFLAGS_DEFAULT,
                              SP_slots};

int cp_py_add_sentencepiece(PyObject *m) {
    PyObject *tp = PyType_FromSpec(&SP_spec);
    if (!tp) return -1;
    if (PyModule_AddObject(m, "SentencePieceTokenizer", tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return 0;
}
