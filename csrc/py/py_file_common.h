/* py_file_common.h — file helpers shared by the tokenizer bindings (py_tokenizer.c, py_wordpiece.c). */
#ifndef CP_PY_FILE_COMMON_H
#define CP_PY_FILE_COMMON_H

#include "py_common.h"

/** The pending exception's value (normalized), cleared; new reference (or NULL). Python 3.10+ compatible. */
PyObject *cp_py_take_exc(void);

/** The whole file at `path` as bytes (io.open(path, "rb").read()). An OSError becomes FileAccessError
 *  "cannot read <what><path!r>: <error>" (`what` is "" or ends with a space). New reference or NULL. */
PyObject *cp_py_read_file(PyObject *path, const char *what);

#endif
