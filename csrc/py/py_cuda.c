/* py_cuda.c — the CUDA backend's Python face: clipprompt._C.ClipTextModelCUDA and MiniLMModelCUDA (device runners
 * over an already loaded ClipTextModel / MiniLMModel, which they keep alive), the device-string parser shared with
 * FlatIPIndex, and _cuda_device(i) for benchmarks. Compiles without CUDA: the constructors then raise DeviceError.
 * Every forward pass releases the GIL. */
#include "py_encoder_common.h"

#include <string.h>

#include "device/cp_device.h"

/* "cpu" -> 0; "cuda" / "cuda:N" / an int N -> 1 with *index. Anything else: InvalidArgumentError, -1. */
int cp_py_parse_device(PyObject *obj, int *index) {
    *index = 0;
    if (obj == NULL || obj == Py_None) return 0;
    if (PyLong_Check(obj)) {
        long v = PyLong_AsLong(obj);
        if (v < 0 || v > 1024) goto bad;
        *index = (int)v;
        return 1;
    }
    PyObject *str = PyObject_Str(obj); /* also accepts torch.device("cuda:0") */
    if (str == NULL) return -1;
    const char *s = PyUnicode_AsUTF8(str);
    int rc = -1;
    if (s == NULL) rc = -1;
    else if (strcmp(s, "cpu") == 0) rc = 0;
    else if (strcmp(s, "cuda") == 0 || strcmp(s, "gpu") == 0) rc = 1;
    else if (strncmp(s, "cuda:", 5) == 0) {
        char *end = NULL;
        long v = strtol(s + 5, &end, 10);
        if (end != s + 5 && *end == '\0' && v >= 0 && v <= 1024) *index = (int)v, rc = 1;
    }
    Py_DECREF(str);
    if (rc >= 0 || PyErr_Occurred()) return rc;
bad:
    PyErr_Format(cp_py_InvalidArgumentError, "device must be 'cpu', 'cuda' or 'cuda:N', not %R", obj);
    return -1;
}

static int parse_options(PyObject *device, const char *dtype, const char *attention, int graph_max_batch,
                         long long max_tokens, cp_device_options *o) {
    cp_device_options_init(o);
    int index = 0, kind = cp_py_parse_device(device ? device : Py_None, &index);
    if (kind < 0) return -1;
    if (device != NULL && kind == 0) {
        PyErr_SetString(cp_py_InvalidArgumentError, "a CUDA runner needs device='cuda' or 'cuda:N'");
        return -1;
    }
    o->device = index;
    int rc = cp_device_parse_dtype(dtype, &o->dtype);
    if (rc != CP_OK) return cp_py_raise_int(rc);
    if (strcmp(attention, "fused") == 0) o->attention = CP_DEVICE_ATTN_FUSED;
    else if (strcmp(attention, "cudnn") == 0) o->attention = CP_DEVICE_ATTN_CUDNN;
    else {
        PyErr_Format(cp_py_InvalidArgumentError, "attention must be 'fused' or 'cudnn', not '%s'", attention);
        return -1;
    }
    if (graph_max_batch < 0 || max_tokens < 0) {
        PyErr_SetString(cp_py_InvalidArgumentError, "graph_max_batch and max_tokens must be >= 0");
        return -1;
    }
    o->graph_max_batch = graph_max_batch;
    o->max_tokens = max_tokens;
    return 0;
}

/* The constructor arguments of both runners: (model, device, dtype, attention, graph_max_batch, max_tokens).
 * Returns the loaded model inside `model_obj` (a ClipTextModel when `clip`, else a MiniLMModel; borrowed) and fills
 * `o`; NULL with an exception set on error. */
static const void *runner_args(PyObject *args, PyObject *kw, int clip, PyObject **model_obj, cp_device_options *o) {
    static char *kwlist[] = {"model", "device", "dtype", "attention", "graph_max_batch", "max_tokens", NULL};
    PyObject *device = NULL;
    const char *dtype = "float32", *attention = "fused";
    int gmb = 64;
    long long max_tokens = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, clip ? "O|Ossil:ClipTextModelCUDA" : "O|Ossil:MiniLMModelCUDA", kwlist,
                                     model_obj, &device, &dtype, &attention, &gmb, &max_tokens))
        return NULL;
    const void *m =
        clip ? (const void *)cp_py_clip_model_of(*model_obj) : (const void *)cp_py_minilm_model_of(*model_obj);
    if (m == NULL) return NULL;
    if (parse_options(device, dtype, attention, gmb, max_tokens, o) < 0) return NULL;
    return m;
}

static PyObject *runner_info(const cp_device_options *opt, size_t weight_bytes, size_t arena_bytes, int graphs) {
    return Py_BuildValue("{s:i,s:s,s:s,s:i,s:n,s:n,s:i}", "device", opt->device, "dtype",
                         cp_device_dtype_name(opt->dtype), "attention", "fused", "graph_max_batch",
                         opt->graph_max_batch, "weight_bytes", (Py_ssize_t)weight_bytes, "arena_bytes",
                         (Py_ssize_t)arena_bytes, "graphs", graphs);
}

/* ---- ClipTextModelCUDA ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *model_obj; /* the ClipTextModel whose weights this runner uploaded */
    const cp_clip_model *model;
    cp_clip_cuda *run;
    cp_device_options opt;
} ClipCudaObject;

static void ClipCuda_dealloc(ClipCudaObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (self->run) {
        Py_BEGIN_ALLOW_THREADS
        cp_clip_cuda_free(self->run);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(self->model_obj);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *ClipCuda_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *model_obj;
    cp_device_options o;
    const cp_clip_model *m = runner_args(args, kw, 1, &model_obj, &o);
    if (m == NULL) return NULL;
    ClipCudaObject *self = (ClipCudaObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->model_obj = Py_NewRef(model_obj);
    self->model = m;
    self->opt = o;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_clip_cuda_create(m, &o, &self->run);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) {
        Py_DECREF(self);
        return cp_py_raise(rc);
    }
    return (PyObject *)self;
}

static PyObject *ClipCuda_encode(ClipCudaObject *self, PyObject *args, PyObject *kw) {
    cp_py_enc_call c;
    if (cp_py_enc_begin(&c, args, kw, CP_PY_ENC_CLIP_ENCODE, cp_py_clip_out_width(&self->model->cfg)) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    c.rc = cp_clip_cuda_encode(self->run, c.ip, c.B, c.L, c.flag, c.op);
    Py_END_ALLOW_THREADS
    return cp_py_enc_end(&c);
}

static PyObject *ClipCuda_hidden_states(ClipCudaObject *self, PyObject *args, PyObject *kw) {
    cp_py_enc_call c;
    if (cp_py_enc_begin(&c, args, kw, CP_PY_ENC_CLIP_HIDDEN, self->model->cfg.width) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    c.rc = cp_clip_cuda_hidden_states(self->run, c.ip, c.B, c.L, c.flag, c.op);
    Py_END_ALLOW_THREADS
    return cp_py_enc_end(&c);
}

static PyObject *ClipCuda_info(ClipCudaObject *self, void *closure) {
    (void)closure;
    return runner_info(&self->opt, cp_clip_cuda_weight_bytes(self->run), cp_clip_cuda_arena_bytes(self->run),
                       cp_clip_cuda_graphs(self->run));
}

static PyMethodDef ClipCuda_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))ClipCuda_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(ids, normalize=True) -> float32 (B, D), computed on the GPU."},
    {"hidden_states", (PyCFunction)(void (*)(void))ClipCuda_hidden_states, METH_VARARGS | METH_KEYWORDS,
     "hidden_states(ids, layer=-1) -> float32 (B, L, W), final LayerNorm applied, computed on the GPU."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef ClipCuda_getset[] = {
    {"info", (getter)ClipCuda_info, NULL, "device, dtype, attention, weight/arena bytes, cached graphs", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot ClipCuda_slots[] = {
    {Py_tp_new, ClipCuda_new},
    {Py_tp_dealloc, ClipCuda_dealloc},
    {Py_tp_methods, ClipCuda_methods},
    {Py_tp_getset, ClipCuda_getset},
    {Py_tp_doc, "ClipTextModelCUDA(model, device='cuda', dtype='float32', attention='fused', graph_max_batch=64, "
                "max_tokens=0): the CLIP text tower of a loaded ClipTextModel on a GPU."},
    {0, NULL}};

static PyType_Spec ClipCuda_spec = {"clipprompt._C.ClipTextModelCUDA", sizeof(ClipCudaObject), 0, Py_TPFLAGS_DEFAULT,
                                    ClipCuda_slots};

/* ---- MiniLMModelCUDA ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *model_obj;
    const cp_minilm_model *model;
    cp_minilm_cuda *run;
    cp_device_options opt;
} MiniCudaObject;

static void MiniCuda_dealloc(MiniCudaObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (self->run) {
        Py_BEGIN_ALLOW_THREADS
        cp_minilm_cuda_free(self->run);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(self->model_obj);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *MiniCuda_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *model_obj;
    cp_device_options o;
    const cp_minilm_model *m = runner_args(args, kw, 0, &model_obj, &o);
    if (m == NULL) return NULL;
    MiniCudaObject *self = (MiniCudaObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->model_obj = Py_NewRef(model_obj);
    self->model = m;
    self->opt = o;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_minilm_cuda_create(m, &o, &self->run);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) {
        Py_DECREF(self);
        return cp_py_raise(rc);
    }
    return (PyObject *)self;
}

static PyObject *MiniCuda_encode(MiniCudaObject *self, PyObject *args, PyObject *kw) {
    cp_py_enc_call c;
    if (cp_py_enc_begin(&c, args, kw, CP_PY_ENC_MINI_ENCODE, self->model->cfg.width) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    c.rc = cp_minilm_cuda_encode(self->run, c.ip, c.mp, c.B, c.L, c.flag, c.op);
    Py_END_ALLOW_THREADS
    return cp_py_enc_end(&c);
}

static PyObject *MiniCuda_info(MiniCudaObject *self, void *closure) {
    (void)closure;
    return runner_info(&self->opt, cp_minilm_cuda_weight_bytes(self->run), cp_minilm_cuda_arena_bytes(self->run),
                       cp_minilm_cuda_graphs(self->run));
}

static PyMethodDef MiniCuda_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))MiniCuda_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(ids, mask, normalize=True) -> float32 (B, W), computed on the GPU."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef MiniCuda_getset[] = {
    {"info", (getter)MiniCuda_info, NULL, "device, dtype, attention, weight/arena bytes, cached graphs", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot MiniCuda_slots[] = {
    {Py_tp_new, MiniCuda_new},
    {Py_tp_dealloc, MiniCuda_dealloc},
    {Py_tp_methods, MiniCuda_methods},
    {Py_tp_getset, MiniCuda_getset},
    {Py_tp_doc, "MiniLMModelCUDA(model, device='cuda', dtype='float32', attention='fused', graph_max_batch=64, "
                "max_tokens=0): a loaded MiniLMModel on a GPU."},
    {0, NULL}};

static PyType_Spec MiniCuda_spec = {"clipprompt._C.MiniLMModelCUDA", sizeof(MiniCudaObject), 0, Py_TPFLAGS_DEFAULT,
                                    MiniCuda_slots};

/* ---- module hook ---------------------------------------------------------------------------------- */

#ifdef CP_WITH_CUDA
#include "kernels/cp_cuda.h"
#endif

static PyObject *py_cuda_device(PyObject *self, PyObject *arg) {
    (void)self;
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
#ifdef CP_WITH_CUDA
    char name[256];
    int cc = 0, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_cuda_set_device((int)i);
    if (rc == CP_OK) rc = cp_cuda_device_name((int)i, name, sizeof name, &cc);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) return cp_py_raise(rc);
    return Py_BuildValue("{s:s,s:i}", "name", name, "compute_capability", cc);
#else
    cp_fail(CP_ERR_DEVICE, "this build of clipprompt has no CUDA backend");
    return cp_py_raise(CP_ERR_DEVICE);
#endif
}

/* Test hook: cudaMalloc + cudaFree of n bytes (a real out-of-memory error for n beyond the card). */
static PyObject *py_cuda_malloc_test(PyObject *self, PyObject *arg) {
    (void)self;
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
#ifdef CP_WITH_CUDA
    void *p = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_cuda_set_device(0);
    if (rc == CP_OK) rc = cp_cuda_malloc(&p, (size_t)n, "_cuda_malloc_test");
    cp_cuda_free(p);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) return cp_py_raise(rc);
    Py_RETURN_NONE;
#else
    cp_fail(CP_ERR_DEVICE, "this build of clipprompt has no CUDA backend");
    return cp_py_raise(CP_ERR_DEVICE);
#endif
}

static PyMethodDef cuda_functions[] = {
    {"_cuda_malloc_test", py_cuda_malloc_test, METH_O, "_cuda_malloc_test(nbytes): allocate and free (tests)."},
    {"_cuda_device", py_cuda_device, METH_O, "_cuda_device(i) -> {name, compute_capability}; DeviceError if none."},
    {NULL, NULL, 0, NULL}};

int cp_py_add_cuda(PyObject *m) {
    if (cp_py_add_type(m, &ClipCuda_spec, "ClipTextModelCUDA") < 0 ||
        cp_py_add_type(m, &MiniCuda_spec, "MiniLMModelCUDA") < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "CUDA_TOPK_MAX", (long)cp_index_cuda_max_k()) < 0) return -1;
    return PyModule_AddFunctions(m, cuda_functions);
}
