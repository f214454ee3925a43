/* py_encoder.c — clipprompt._C.ClipTextModel and clipprompt._C.MiniLMModel: the C encoders as heap types.
 *
 * They take token ids (int32 C arrays); clipprompt/encoders.py wraps them with tokenization, batching, progress
 * and the public ClipTextEncoder / MiniLMEncoder classes. Loading and every forward pass release the GIL.
 */
#include "py_encoder_common.h"

static const char *act_name(cp_act a) {
    switch (a) {
    case CP_ACT_QUICK_GELU: return "quick_gelu";
    case CP_ACT_GELU_ERF: return "gelu";
    case CP_ACT_GELU_TANH: return "gelu_new";
    case CP_ACT_RELU: return "relu";
    }
    return "?";
}

static int act_parse(PyObject *o, int *out) {
    *out = -1;
    if (o == NULL || o == Py_None) return 0;
    const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL;
    if (s == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "hidden_act must be a str or None");
        return -1;
    }
    if (strcmp(s, "quick_gelu") == 0) *out = CP_ACT_QUICK_GELU;
    else if (strcmp(s, "gelu") == 0) *out = CP_ACT_GELU_ERF;
    else if (strcmp(s, "gelu_new") == 0 || strcmp(s, "gelu_pytorch_tanh") == 0) *out = CP_ACT_GELU_TANH;
    else if (strcmp(s, "relu") == 0) *out = CP_ACT_RELU;
    else {
        PyErr_Format(cp_py_InvalidArgumentError, "hidden_act must be quick_gelu, gelu, gelu_new or relu, not %R", o);
        return -1;
    }
    return 0;
}

/* ---- ClipTextModel -------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    cp_clip_model *model;
    cp_clip_cpu *cpu;
} ClipObject;

static void Clip_dealloc(ClipObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    cp_clip_cpu_free(self->cpu);
    cp_clip_model_free(self->model);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Clip_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "hidden_act", "heads", NULL};
    PyObject *path_obj = NULL, *act_obj = Py_None;
    long long heads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|OL:ClipTextModel", kwlist, PyUnicode_FSConverter, &path_obj,
                                     &act_obj, &heads))
        return NULL;
    cp_clip_options opt = {-1, heads > 0 ? (int64_t)heads : 0};
    if (act_parse(act_obj, &opt.act) < 0) {
        Py_DECREF(path_obj);
        return NULL;
    }
    ClipObject *self = (ClipObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(path_obj);
        return NULL;
    }
    const char *path = PyBytes_AS_STRING(path_obj);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_clip_model_load(path, &opt, &self->model);
    if (rc == CP_OK) rc = cp_clip_cpu_create(self->model, &self->cpu);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (rc != CP_OK) {
        Py_DECREF(self);
        return cp_py_raise(rc);
    }
    return (PyObject *)self;
}

static PyObject *Clip_encode(ClipObject *self, PyObject *args, PyObject *kw) {
    cp_py_enc_call c;
    if (cp_py_enc_begin(&c, args, kw, CP_PY_ENC_CLIP_ENCODE, cp_py_clip_out_width(&self->model->cfg)) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    c.rc = cp_clip_cpu_encode(self->cpu, c.ip, c.B, c.L, c.flag, c.op);
    Py_END_ALLOW_THREADS
    return cp_py_enc_end(&c);
}

static PyObject *Clip_hidden_states(ClipObject *self, PyObject *args, PyObject *kw) {
    cp_py_enc_call c;
    if (cp_py_enc_begin(&c, args, kw, CP_PY_ENC_CLIP_HIDDEN, self->model->cfg.width) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    c.rc = cp_clip_cpu_hidden_states(self->cpu, c.ip, c.B, c.L, c.flag, c.op);
    Py_END_ALLOW_THREADS
    return cp_py_enc_end(&c);
}

static PyObject *Clip_get_config(ClipObject *self, void *closure) {
    (void)closure;
    const cp_clip_config *c = &self->model->cfg;
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:d,s:s,s:L,s:s,s:s}", "vocab_size", (long long)c->vocab_size,
                         "hidden_size", (long long)c->width, "num_attention_heads", (long long)c->heads,
                         "num_hidden_layers", (long long)c->layers, "intermediate_size", (long long)c->ffn,
                         "max_position_embeddings", (long long)c->context, "projection_dim", (long long)c->proj_dim,
                         "layer_norm_eps", (double)c->ln_eps, "hidden_act", act_name(c->act), "eos_token_id",
                         (long long)c->eos_token_id, "pooling", c->pool_argmax ? "argmax" : "eos_token_id", "layout",
                         c->layout == CP_CLIP_LAYOUT_HF ? "hf" : "open_clip");
}

static PyObject *Clip_get_hash(ClipObject *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->model->weights_hash);
}

static PyObject *Clip_get_arena(ClipObject *self, void *closure) {
    (void)closure;
    return PyLong_FromSize_t(cp_clip_cpu_arena_bytes(self->cpu));
}

static PyMethodDef Clip_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Clip_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(ids, normalize=True) -> float32 (B, D): pooled (projected) output for int32 ids (B, L)."},
    {"hidden_states", (PyCFunction)(void (*)(void))Clip_hidden_states, METH_VARARGS | METH_KEYWORDS,
     "hidden_states(ids, layer=-1) -> float32 (B, L, W), final LayerNorm applied."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Clip_getset[] = {
    {"config", (getter)Clip_get_config, NULL, "the text config in use (dict)", NULL},
    {"weights_hash", (getter)Clip_get_hash, NULL, "64-bit sample hash of the bound tensors", NULL},
    {"arena_bytes", (getter)Clip_get_arena, NULL, "bytes held by the activation arena", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Clip_slots[] = {
    {Py_tp_new, Clip_new},
    {Py_tp_dealloc, Clip_dealloc},
    {Py_tp_methods, Clip_methods},
    {Py_tp_getset, Clip_getset},
    {Py_tp_doc, "ClipTextModel(path, hidden_act=None, heads=0): CLIP text tower in C (int32 ids in)."},
    {0, NULL}};

static PyType_Spec Clip_spec = {"clipprompt._C.ClipTextModel", sizeof(ClipObject), 0, Py_TPFLAGS_DEFAULT, Clip_slots};

/* ---- MiniLMModel ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    cp_minilm_model *model;
    cp_minilm_cpu *cpu;
} MiniObject;

static void Mini_dealloc(MiniObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    cp_minilm_cpu_free(self->cpu);
    cp_minilm_model_free(self->model);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Mini_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", NULL};
    PyObject *path_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&:MiniLMModel", kwlist, PyUnicode_FSConverter, &path_obj))
        return NULL;
    MiniObject *self = (MiniObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(path_obj);
        return NULL;
    }
    const char *path = PyBytes_AS_STRING(path_obj);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_minilm_model_load(path, &self->model);
    if (rc == CP_OK) rc = cp_minilm_cpu_create(self->model, &self->cpu);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (rc != CP_OK) {
        Py_DECREF(self);
        return cp_py_raise(rc);
    }
    return (PyObject *)self;
}

static PyObject *Mini_encode(MiniObject *self, PyObject *args, PyObject *kw) {
    cp_py_enc_call c;
    if (cp_py_enc_begin(&c, args, kw, CP_PY_ENC_MINI_ENCODE, self->model->cfg.width) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    c.rc = cp_minilm_cpu_encode(self->cpu, c.ip, c.mp, c.B, c.L, c.flag, c.op);
    Py_END_ALLOW_THREADS
    return cp_py_enc_end(&c);
}

static PyObject *Mini_get_config(MiniObject *self, void *closure) {
    (void)closure;
    const cp_minilm_config *c = &self->model->cfg;
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:d,s:s,s:L}", "vocab_size", (long long)c->vocab_size,
                         "hidden_size", (long long)c->width, "num_attention_heads", (long long)c->heads,
                         "num_hidden_layers", (long long)c->layers, "intermediate_size", (long long)c->ffn,
                         "max_position_embeddings", (long long)c->max_pos, "type_vocab_size",
                         (long long)c->type_vocab, "layer_norm_eps", (double)c->ln_eps, "hidden_act",
                         act_name(c->act), "max_seq_length", (long long)c->max_seq_length);
}

static PyObject *Mini_get_hash(MiniObject *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->model->weights_hash);
}

static PyObject *Mini_get_arena(MiniObject *self, void *closure) {
    (void)closure;
    return PyLong_FromSize_t(cp_minilm_cpu_arena_bytes(self->cpu));
}

static PyMethodDef Mini_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Mini_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(ids, mask, normalize=True) -> float32 (B, W): mean-pooled sentence vectors."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Mini_getset[] = {
    {"config", (getter)Mini_get_config, NULL, "the BERT config in use (dict)", NULL},
    {"weights_hash", (getter)Mini_get_hash, NULL, "64-bit sample hash of the bound tensors", NULL},
    {"arena_bytes", (getter)Mini_get_arena, NULL, "bytes held by the activation arena", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Mini_slots[] = {
    {Py_tp_new, Mini_new},
    {Py_tp_dealloc, Mini_dealloc},
    {Py_tp_methods, Mini_methods},
    {Py_tp_getset, Mini_getset},
    {Py_tp_doc, "MiniLMModel(path): BERT sentence encoder in C (int32 ids + mask in)."},
    {0, NULL}};

static PyType_Spec Mini_spec = {"clipprompt._C.MiniLMModel", sizeof(MiniObject), 0, Py_TPFLAGS_DEFAULT, Mini_slots};

/* ---- borrowed models for the device runners (py_cuda.c) ------------------------------------------- */

/* The loaded model inside a ClipTextModel / MiniLMModel object (NULL with TypeError for anything else). The caller
 * keeps a reference to `obj` for as long as it uses the model. */
const cp_clip_model *cp_py_clip_model_of(PyObject *obj) {
    if (obj == NULL || strcmp(Py_TYPE(obj)->tp_name, Clip_spec.name) != 0) {
        PyErr_SetString(PyExc_TypeError, "expected a clipprompt._C.ClipTextModel");
        return NULL;
    }
    return ((ClipObject *)obj)->model;
}

const cp_minilm_model *cp_py_minilm_model_of(PyObject *obj) {
    if (obj == NULL || strcmp(Py_TYPE(obj)->tp_name, Mini_spec.name) != 0) {
        PyErr_SetString(PyExc_TypeError, "expected a clipprompt._C.MiniLMModel");
        return NULL;
    }
    return ((MiniObject *)obj)->model;
}

int cp_py_add_encoder(PyObject *m) {
    if (cp_py_add_type(m, &Clip_spec, "ClipTextModel") < 0 || cp_py_add_type(m, &Mini_spec, "MiniLMModel") < 0)
        return -1;
    return 0;
}
