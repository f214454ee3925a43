/* py_cuda.c — the CUDA backend's Python face: clipprompt._C.EncoderModelCUDA (the engine's CUDA runner over an
 * already loaded EncoderModel, which it keeps alive), the device-string parser shared with
 * FlatIPIndex, and _cuda_device(i) for benchmarks. Compiles without CUDA: the constructors then raise DeviceError.
 * Every forward pass releases the GIL. */
#include "py_encoder_common.h"

#include <string.h>

#include "device/cp_device.h"
#include "device/cp_device_ctx.h"

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

static PyObject *runner_info(const cp_device_options *opt, size_t weight_bytes, size_t arena_bytes, int graphs) {
    return Py_BuildValue("{s:i,s:s,s:s,s:i,s:n,s:n,s:i}", "device", opt->device, "dtype",
                         cp_device_dtype_name(opt->dtype), "attention", "fused", "graph_max_batch",
                         opt->graph_max_batch, "weight_bytes", (Py_ssize_t)weight_bytes, "arena_bytes",
                         (Py_ssize_t)arena_bytes, "graphs", graphs);
}

/* ---- EncoderModelCUDA ----------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *model_obj; /* the EncoderModel whose weights this runner uploaded */
    const cp_encoder_model *model;
    cp_encoder_cuda *run;
    cp_device_options opt;
} CudaObject;

static int cuda_encode(void *run, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, int normalize,
                       float *out) {
    return cp_encoder_cuda_encode(run, ids, mask, B, L, normalize, out);
}

static int cuda_hidden(void *run, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, int layer,
                       int final_norm, float *out) {
    return cp_encoder_cuda_hidden_states(run, ids, mask, B, L, layer, final_norm, out);
}

static const cp_py_runner_ops CUDA_OPS = {cuda_encode, cuda_hidden};

static void Cuda_dealloc(CudaObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (self->run) {
        Py_BEGIN_ALLOW_THREADS
        cp_encoder_cuda_free(self->run);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(self->model_obj);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Cuda_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"model", "device", "dtype", "attention", "graph_max_batch", "max_tokens", NULL};
    PyObject *model_obj, *device = NULL;
    const char *dtype = "float32", *attention = "fused";
    int gmb = 64;
    long long max_tokens = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Ossil:EncoderModelCUDA", kwlist, &model_obj, &device, &dtype,
                                     &attention, &gmb, &max_tokens))
        return NULL;
    const cp_encoder_model *m = cp_py_encoder_model_of(model_obj);
    if (m == NULL) return NULL;
    cp_device_options o;
    if (parse_options(device, dtype, attention, gmb, max_tokens, &o) < 0) return NULL;
    CudaObject *self = (CudaObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->model_obj = Py_NewRef(model_obj);
    self->model = m;
    self->opt = o;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cp_encoder_cuda_create(m, &o, &self->run);
    Py_END_ALLOW_THREADS
    if (rc != CP_OK) {
        Py_DECREF(self);
        return cp_py_raise(rc);
    }
    return (PyObject *)self;
}

static PyObject *Cuda_encode(CudaObject *self, PyObject *args, PyObject *kw) {
    return cp_py_enc_encode(self->model, self->run, &CUDA_OPS, args, kw);
}

static PyObject *Cuda_hidden_states(CudaObject *self, PyObject *args, PyObject *kw) {
    return cp_py_enc_hidden(self->model, self->run, &CUDA_OPS, args, kw);
}

static PyObject *Cuda_info(CudaObject *self, void *closure) {
    (void)closure;
    return runner_info(&self->opt, cp_encoder_cuda_weight_bytes(self->run), cp_encoder_cuda_arena_bytes(self->run),
                       cp_encoder_cuda_graphs(self->run));
}

static PyMethodDef Cuda_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Cuda_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(ids, mask=None, normalize=True) -> float32 (B, D), computed on the GPU."},
    {"hidden_states", (PyCFunction)(void (*)(void))Cuda_hidden_states, METH_VARARGS | METH_KEYWORDS,
     "hidden_states(ids, layer=-1, mask=None, final_norm=True) -> float32 (B, L, W), computed on the GPU."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Cuda_getset[] = {
    {"info", (getter)Cuda_info, NULL, "device, dtype, attention, weight/arena bytes, cached graphs", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Cuda_slots[] = {
    {Py_tp_new, Cuda_new},
    {Py_tp_dealloc, Cuda_dealloc},
    {Py_tp_methods, Cuda_methods},
    {Py_tp_getset, Cuda_getset},
    {Py_tp_doc, "EncoderModelCUDA(model, device='cuda', dtype='float32', attention='fused', graph_max_batch=64, "
                "max_tokens=0): a loaded EncoderModel run by the engine's CUDA runner on a GPU."},
    {0, NULL}};

static PyType_Spec Cuda_spec = {"clipprompt._C.EncoderModelCUDA", sizeof(CudaObject), 0, Py_TPFLAGS_DEFAULT,
                                Cuda_slots};

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

/* _device_selftest() -> [(name, ok, detail)]: the device layer's policies over host fakes (cp_device_selftest.c). */
static PyObject *py_device_selftest(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    cp_dev_selftest_result res[32];
    const int n = cp_device_selftest(res, 32);
    PyObject *out = PyList_New(0);
    for (int i = 0; out && i < n; i++) {
        PyObject *t = Py_BuildValue("(sOs)", res[i].name, res[i].ok ? Py_True : Py_False, res[i].detail);
        if (!t || PyList_Append(out, t) < 0) Py_CLEAR(out);
        Py_XDECREF(t);
    }
    return out;
}

static PyMethodDef cuda_functions[] = {
    {"_device_selftest", py_device_selftest, METH_NOARGS,
     "_device_selftest() -> [(name, ok, detail)]: the device layer's arena / graph policies over host fakes."},
    {"_cuda_malloc_test", py_cuda_malloc_test, METH_O, "_cuda_malloc_test(nbytes): allocate and free (tests)."},
    {"_cuda_device", py_cuda_device, METH_O, "_cuda_device(i) -> {name, compute_capability}; DeviceError if none."},
    {NULL, NULL, 0, NULL}};

int cp_py_add_cuda(PyObject *m) {
    if (cp_py_add_type(m, &Cuda_spec, "EncoderModelCUDA") < 0) return -1;
    if (PyModule_AddIntConstant(m, "CUDA_TOPK_MAX", (long)cp_index_cuda_max_k()) < 0) return -1;
    return PyModule_AddFunctions(m, cuda_functions);
}
