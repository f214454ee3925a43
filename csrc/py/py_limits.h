/* Ceilings for arguments that size an output (k, context_length, max_length, batch sizes).
 *
 * Every such argument is checked before anything is allocated: below its floor, above its own ceiling, or asking for
 * an output larger than CP_PY_MAX_OUT_FRACTION of what this process may use (physical memory, or a lower
 * RLIMIT_AS / RLIMIT_DATA), it is an InvalidArgumentError that names the argument and the limit. So no argument can
 * make the process allocate (and then touch) memory it cannot survive: the OOM killer never sees the request.
 * Header-only; used by py_index.c, py_tokenizer.c, py_wordpiece.c. Thread safety: pure functions. */
#ifndef CP_PY_LIMITS_H
#define CP_PY_LIMITS_H

#include <Python.h>
#include <limits.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "py_common.h"

/* tokens per row of a tokenizer output: far above any text tower's context (CLIP 77, BERT 512, long models 32k) */
#define CP_PY_MAX_SEQ 65536
/* FlatIPIndex.search: k may exceed the entries by at most this many columns (padded with -1) */
#define CP_PY_MAX_PAD_K 1024
/* an output may take at most this fraction of the memory the process may use */
#define CP_PY_MAX_OUT_FRACTION 0.5

/* Bytes this process may use: physical memory, lowered by a finite RLIMIT_AS / RLIMIT_DATA soft limit. */
static inline double cp_py_memory_budget(void) {
    double phys = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (!(phys > 0)) phys = 1e18;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (double)rl.rlim_cur < phys)
        phys = (double)rl.rlim_cur;
    if (getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (double)rl.rlim_cur < phys)
        phys = (double)rl.rlim_cur;
    return phys;
}

/* 0 when lo <= v <= hi, else -1 with InvalidArgumentError naming `what`. */
static inline int cp_py_check_range(const char *what, long long v, long long lo, long long hi) {
    if (v >= lo && v <= hi) return 0;
    PyErr_Format(cp_py_InvalidArgumentError, "%s must be in %lld..%lld, got %lld", what, lo, hi, v);
    return -1;
}

/* 0 when an output of rows x cols elements of elem_bytes (summed over `arrays` arrays) fits the budget, else -1 with
 * InvalidArgumentError naming `what`. Computed in double: no overflow for any Py_ssize_t inputs. */
static inline int cp_py_check_out(const char *what, double rows, double cols, double bytes_per_cell) {
    double need = rows * cols * bytes_per_cell, budget = cp_py_memory_budget() * CP_PY_MAX_OUT_FRACTION;
    if (need <= budget) return 0;
    char msg[320];
    snprintf(msg, sizeof msg,
             "%s: the output would need %.0f MiB (%.0f x %.0f), more than the %.0f MiB this process may give it",
             what, need / 1048576.0, rows, cols, budget / 1048576.0);
    PyErr_SetString(cp_py_InvalidArgumentError, msg);
    return -1;
}

/* A size argument as a C integer: any int-like object (operator.index) but bool; anything else is an
 * InvalidArgumentError naming `what`. Values beyond long long saturate (the range checks then reject them). */
static inline int cp_py_as_size(PyObject *o, const char *what, long long *out) {
    if (PyBool_Check(o) || !PyIndex_Check(o)) {
        PyErr_Format(cp_py_InvalidArgumentError, "%s must be an int, got %.200s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    PyObject *i = PyNumber_Index(o);
    if (!i) return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = overflow > 0 ? LLONG_MAX : overflow < 0 ? LLONG_MIN : v;
    return 0;
}

#endif
