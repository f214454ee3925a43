/* py_encoder.c — clipprompt._C.EncoderModel: one C model type for every text tower the engine knows (CLIP, BERT,
 * XLM-R, ...), with its CPU runner. It takes token ids (int32 C arrays); clipprompt/encoders.py wraps it with
 * tokenization, batching and the public ClipTextEncoder / MiniLMEncoder classes. Loading and every forward pass
 * release the GIL. */
#include "py_encoder_common.h"

#include "model/cp_lowp.h"
#include "model/cp_runner_cpu.h"

typedef struct {
    PyObject_HEAD
    cp_encoder_model *model;
    cp_runner_cpu *cpu;
    char probe[256]; /* dtype="auto": the timings that chose the dtype ("" otherwise) */
} EncoderObject;

static int cpu_encode(void *run, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, int normalize,
                      float *out) {
    return cp_runner_cpu_encode(run, ids, mask, B, L, normalize, out);
}

static int cpu_hidden(void *run, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, int layer,
                      int final_norm, float *out) {
    return cp_runner_cpu_hidden_states(run, ids, mask, B, L, layer, final_norm, out);
}

static const cp_py_runner_ops CPU_OPS = {cpu_encode, cpu_hidden};

static void Encoder_dealloc(EncoderObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    cp_runner_cpu_free(self->cpu);
    cp_encoder_free(self->model);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int act_arg(PyObject *o, int *out) {
    *out = -1;
    if (o == NULL || o == Py_None) return 0;
    const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL;
    if (s == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "hidden_act must be a str or None");
        return -1;
    }
    cp_act a;
    if (cp_act_parse(s, &a) != CP_OK) {
        cp_clear_error();
        PyErr_Format(cp_py_InvalidArgumentError, "hidden_act must be quick_gelu, gelu, gelu_new or relu, not %R", o);
        return -1;
    }
    *out = (int)a;
    return 0;
}

static PyObject *Encoder_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "family", "hidden_act", "heads", "dtype", NULL};
    PyObject *path_obj = NULL, *act_obj = Py_None;
    const char *family = "auto", *dtype = "float32";
    long long heads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|sOLs:EncoderModel", kwlist, PyUnicode_FSConverter, &path_obj,
                                     &family, &act_obj, &heads, &dtype))
        return NULL;
    const int auto_dtype = strcmp(dtype, "auto") == 0;
    cp_wtype wt = CP_WT_F32;
    if (!auto_dtype && cp_lowp_type_parse(dtype, &wt) != CP_OK) {
        Py_DECREF(path_obj);
        PyErr_Format(cp_py_InvalidArgumentError, "dtype must be 'auto', 'float32', 'bfloat16' or 'int8', not '%s'",
                     dtype);
        cp_clear_error();
        return NULL;
    }
    cp_encoder_options opt = {family, -1, heads > 0 ? (int64_t)heads : 0};
    if (heads < 0 || heads > 4096) {
        Py_DECREF(path_obj);
        PyErr_Format(cp_py_InvalidArgumentError, "heads must be in 0..4096, not %lld", heads);
        return NULL;
    }
    if (act_arg(act_obj, &opt.act) < 0) {
        Py_DECREF(path_obj);
        return NULL;
    }
    EncoderObject *self = (EncoderObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(path_obj);
        return NULL;
    }
    const char *path = PyBytes_AS_STRING(path_obj);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_encoder_load(path, &opt, &self->model);
    if (rc == CP_OK && auto_dtype) {
        const char *rep = NULL;
        rc = cp_lowp_pick(self->model, &wt, &rep);
        if (rc == CP_OK) snprintf(self->probe, sizeof self->probe, "%s", rep);
    }
    if (rc == CP_OK) rc = cp_lowp_convert(self->model, wt);
    if (rc == CP_OK) rc = cp_runner_cpu_create(self->model, &self->cpu);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (rc != CP_OK) {
        Py_DECREF(self);
        return cp_py_raise(rc);
    }
    return (PyObject *)self;
}

static PyObject *Encoder_encode(EncoderObject *self, PyObject *args, PyObject *kw) {
    return cp_py_enc_encode(self->model, self->cpu, &CPU_OPS, args, kw);
}

static PyObject *Encoder_hidden_states(EncoderObject *self, PyObject *args, PyObject *kw) {
    return cp_py_enc_hidden(self->model, self->cpu, &CPU_OPS, args, kw);
}

/* The description as a dict, with the Hugging Face config names where one exists. */
static PyObject *Encoder_get_description(EncoderObject *self, void *closure) {
    (void)closure;
    const cp_encoder_desc *d = &self->model->d;
    return Py_BuildValue(
        "{s:s,s:s,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:d,s:s,s:O,s:O,s:s,s:L,s:O,s:O,s:s,s:L,s:s}", "family",
        d->family, "layout", d->layout, "vocab_size", (long long)d->vocab, "hidden_size", (long long)d->width,
        "num_attention_heads", (long long)d->heads, "num_hidden_layers", (long long)d->layers, "intermediate_size",
        (long long)d->ffn, "max_position_embeddings", (long long)d->max_pos, "max_seq_length", (long long)d->max_len,
        "type_vocab_size", (long long)d->type_vocab, "projection_dim", (long long)d->proj_dim, "layer_norm_eps",
        (double)d->ln_eps, "hidden_act", cp_act_name(d->act), "pre_layer_norm", d->pre_ln ? Py_True : Py_False,
        "causal", d->causal ? Py_True : Py_False, "position", d->pos == CP_POS_PADDED ? "padded" : "absolute",
        "pad_token_id", (long long)d->pad_id, "embedding_layer_norm", d->emb_ln ? Py_True : Py_False,
        "final_layer_norm", d->final_ln ? Py_True : Py_False, "pooling", cp_pool_name(d), "eos_token_id",
        (long long)d->eos_id, "projection_layout", d->proj_layout == CP_W_IN_OUT ? "in_out" : "out_in");
}

static PyObject *Encoder_get_family(EncoderObject *self, void *closure) {
    (void)closure;
    return PyUnicode_FromString(self->model->d.family);
}

static PyObject *Encoder_get_hash(EncoderObject *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->model->weights_hash);
}

static PyObject *Encoder_get_arena(EncoderObject *self, void *closure) {
    (void)closure;
    return PyLong_FromSize_t(cp_runner_cpu_arena_bytes(self->cpu));
}

static PyObject *Encoder_get_dtype(EncoderObject *self, void *closure) {
    (void)closure;
    return PyUnicode_FromString(cp_lowp_type_name(self->model->w.layers[0].qkv.type));
}

static PyObject *Encoder_get_isa(EncoderObject *self, void *closure) {
    (void)closure;
    const cp_wmat *q = &self->model->w.layers[0].qkv;
    return PyUnicode_FromString(cp_lowp_path(q->type, q->n, q->k));
}

static PyObject *Encoder_get_probe(EncoderObject *self, void *closure) {
    (void)closure;
    return self->probe[0] ? PyUnicode_FromString(self->probe) : Py_NewRef(Py_None);
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Encoder_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(ids, mask=None, normalize=True) -> float32 (B, D): pooled (projected) output for int32 ids (B, L); "
     "mask: 0/1 (B, L), None = every column is a token."},
    {"hidden_states", (PyCFunction)(void (*)(void))Encoder_hidden_states, METH_VARARGS | METH_KEYWORDS,
     "hidden_states(ids, layer=-1, mask=None, final_norm=True) -> float32 (B, L, W): token states after `layer` "
     "blocks (-1 all, -2 penultimate, k >= 0 the first k), the final LayerNorm applied when the model has one and "
     "final_norm; columns outside the mask are zero."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Encoder_getset[] = {
    {"description", (getter)Encoder_get_description, NULL, "the encoder description in use (dict)", NULL},
    {"config", (getter)Encoder_get_description, NULL, "the description under its config names (dict)", NULL},
    {"family", (getter)Encoder_get_family, NULL, "the model family: 'clip', 'bert', 'xlmr', ...", NULL},
    {"weights_hash", (getter)Encoder_get_hash, NULL, "64-bit sample hash of the bound tensors", NULL},
    {"arena_bytes", (getter)Encoder_get_arena, NULL, "bytes held by the CPU runner's activation arena", NULL},
    {"dtype", (getter)Encoder_get_dtype, NULL, "the GEMM weight type: 'float32', 'bfloat16' or 'int8'", NULL},
    {"isa", (getter)Encoder_get_isa, NULL, "the GEMM kernel that runs: 'sgemm', oneDNN's implementation "
                                           "('brg:avx512_core_amx', ...) or 'sgemm-dequant' (portable path)", NULL},
    {"dtype_probe", (getter)Encoder_get_probe, NULL, "dtype='auto': the timings behind the choice (else None)",
     NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Encoder_slots[] = {
    {Py_tp_new, Encoder_new},
    {Py_tp_dealloc, Encoder_dealloc},
    {Py_tp_methods, Encoder_methods},
    {Py_tp_getset, Encoder_getset},
    {Py_tp_doc, "EncoderModel(path, family='auto', hidden_act=None, heads=0, dtype='float32'): a text tower (CLIP, BERT, XLM-R, ...) "
                "run by the C engine on the CPU (int32 ids in); dtype 'bfloat16' / 'int8' converts the block matrices once at "
                "load, 'auto' picks the fastest of the three by a short timed probe."},
    {0, NULL}};

static PyType_Spec Encoder_spec = {"clipprompt._C.EncoderModel", sizeof(EncoderObject), 0, Py_TPFLAGS_DEFAULT,
                                   Encoder_slots};

const cp_encoder_model *cp_py_encoder_model_of(PyObject *obj) {
    if (obj == NULL || strcmp(Py_TYPE(obj)->tp_name, Encoder_spec.name) != 0) {
        PyErr_SetString(PyExc_TypeError, "expected a clipprompt._C.EncoderModel");
        return NULL;
    }
    return ((EncoderObject *)obj)->model;
}

int cp_py_add_encoder(PyObject *m) { return cp_py_add_type(m, &Encoder_spec, "EncoderModel"); }
