/* py_lowp.c — clipprompt._C.lowp_info(): the reduced-precision GEMM library and the ISA it dispatches to here. */
#include "py_common.h"

#include "model/cp_lowp.h"

static PyObject *py_lowp_info(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    return Py_BuildValue("{s:s,s:s,s:s,s:s}", "lowp_library", cp_lowp_library(), "lowp_cpu_isa", cp_lowp_cpu_isa(),
                         "lowp_bf16", cp_lowp_path(CP_WT_BF16, 2048, 512), "lowp_int8",
                         cp_lowp_path(CP_WT_S8, 2048, 512));
}

static PyMethodDef lowp_methods[] = {
    {"lowp_info", py_lowp_info, METH_NOARGS,
     "lowp_info() -> dict: the bf16/int8 GEMM library, the CPU ISA it uses, and the kernel per type "
     "(a (2048 x 512) matrix)."},
    {NULL, NULL, 0, NULL}};

int cp_py_add_lowp(PyObject *m) { return PyModule_AddFunctions(m, lowp_methods); }
