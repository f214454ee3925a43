/* py_file_common.h — file helpers shared by the tokenizer bindings (py_tokenizer.c, py_wordpiece.c). */
#ifndef CP_PY_FILE_COMMON_H
#define CP_PY_FILE_COMMON_H

#include "py_common.h"

/** The pending exception's value (normalized), cleared; new reference (or NULL). Python 3.10+ compatible. */
PyObject *cp_py_take_exc(void);

/** The whole file at `path` as bytes (io.open(path, "rb").read()). An OSError becomes FileAccessError
 *  "cannot read <what><path!r>: <error>" (`what` is "" or ends with a space). New reference or NULL. */
PyObject *cp_py_read_file(PyObject *path, const char *what);

/** A list of Python ints from ids[0..n). New reference or NULL. */
PyObject *cp_py_int_list(const int32_t *ids, size_t n);

/** padding "longest" -> 0, "max_length" -> 1, else InvalidArgumentError and -1. */
int cp_py_padding_mode(const char *padding);

/** (input_ids, attention_mask) int32 [n, W] from rows buf[i*L .. i*L+L) of which lens[i] are tokens: W = L when
 *  pad_max, else the longest row. New reference (a tuple) or NULL. */
PyObject *cp_py_ids_mask(const int32_t *buf, const int32_t *lens, size_t n, size_t L, int pad_max);

/** A tokenizer's batch call: rows of max_length ids into out, lengths per row (the cp_*_encode_batch shape). */
typedef int (*cp_py_batch_fn)(const void *tok, const char *const *texts, const size_t *lens, size_t n,
                              size_t max_length, int32_t *out, int32_t *lengths, cp_batch_status *status);

/** tok's rows for `texts` (str/bytes or a sequence of them) as (input_ids, attention_mask) via cp_py_ids_mask; the
 *  batch runs with the GIL released; a failure raises with the failing text's index (cp_py_raise_batch). New
 *  reference or NULL. */
PyObject *cp_py_encode_rows(cp_py_batch_fn fn, const void *tok, PyObject *texts, size_t max_length, int pad_max);

/** A tokenizer's one-text call (the cp_*_encode shape): ids malloc'ed into *ids, their count into *n. */
typedef int (*cp_py_encode_fn)(const void *tok, const char *s, size_t len, int32_t **ids, size_t *n);

/** encode(text) -> list[int] through fn (GIL released around the call). New reference or NULL. */
PyObject *cp_py_encode_one(cp_py_encode_fn fn, const void *tok, PyObject *text);

/** The string of one id (NULL when the id is unknown), its byte length in *len. */
typedef const char *(*cp_py_id_str_fn)(const void *tok, int32_t id, size_t *len);

/** [fn(id) for id in ids] as str (decoded with `errors`, NULL = strict); an unknown id raises InvalidArgumentError
 *  "<what> id N is not in the vocabulary". New reference or NULL. */
PyObject *cp_py_id_strings(cp_py_id_str_fn fn, const void *tok, PyObject *ids, const char *what, const char *errors);

#endif
