/* py_common.h — shared by the files in csrc/py/, the only place in clipprompt that touches Python or NumPy.
 *
 * Each part of the API lives in its own csrc/py/py_<part>.c and defines `int cp_py_add_<part>(PyObject *m)`,
 * which adds its functions/types to the module and returns 0 (or -1 with an exception set). py_module.c calls
 * every part that is linked in (the hooks are weak symbols, so a part is added by adding its file).
 */
#ifndef CP_PY_COMMON_H
#define CP_PY_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL cp_ARRAY_API
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#ifndef CP_PY_MODULE_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "base/cp_batch.h"
#include "base/cp_common.h"

/* Exception classes, created once in py_module.c. */
extern PyObject *cp_py_ClipPromptError, *cp_py_EmptyPromptError, *cp_py_TokenizerError,
    *cp_py_ModelFormatError, *cp_py_DimensionMismatchError, *cp_py_IndexStateError, *cp_py_DeviceError,
    *cp_py_DeviceOutOfMemoryError, *cp_py_InvalidArgumentError, *cp_py_FileAccessError, *cp_py_DependencyError;

/** Raise the exception class mapped to `status` with this thread's last-error message; returns NULL.
 *  Call it on the thread that ran the failing C call (the message is thread-local). */
PyObject *cp_py_raise(int status);

/** Same as cp_py_raise, returning -1 for use in int-returning slots. */
int cp_py_raise_int(int status);

/** cp_py_raise for a failed `*_batch` call (base/cp_batch.h): the exception also gets `index`, the lowest failing
 *  item (None when the failure belongs to no item). Returns NULL. */
PyObject *cp_py_raise_batch(int status, const cp_batch_status *st);

/* A UTF-8 view of a str or bytes argument. `owner` keeps the memory alive; release with cp_py_text_release.
 * str with lone surrogates and bytes that are not valid UTF-8 raise TokenizerError naming the offset. */
typedef struct {
    const char *data;
    Py_ssize_t len;
    PyObject *owner;
} cp_py_text;

int cp_py_text_get(PyObject *obj, cp_py_text *out, const char *what);
void cp_py_text_release(cp_py_text *t);

/* A batch of UTF-8 views over a list/tuple of str/bytes (or a single str/bytes: n == 1, single == 1).
 * Pointers stay valid until cp_py_texts_release. Safe to read with the GIL released. */
typedef struct {
    Py_ssize_t n;
    int single;
    const char **data;
    size_t *len;
    PyObject **owners;
} cp_py_texts;

int cp_py_texts_get(PyObject *obj, cp_py_texts *out, const char *what);
void cp_py_texts_release(cp_py_texts *t);

/** Validate UTF-8; returns the byte offset of the first invalid sequence or -1 if valid. */
Py_ssize_t cp_py_utf8_invalid_offset(const char *s, Py_ssize_t n);

#endif /* CP_PY_COMMON_H */
