/* cp_common.h — status codes, the thread-local last-error message, and small shared helpers.
 *
 * Every fallible function in csrc/ returns an int: CP_OK (0) or a negative CP_ERR_* code. Results travel
 * through out-pointers. On failure the function records what went wrong (and where) with CP_FAIL, which
 * stores a message in a thread-local buffer read back by cp_last_error(). The Python binding maps each
 * code to exactly one exception class (csrc/py/py_module.c). Nothing in the library prints, exits or aborts.
 */
#ifndef CP_COMMON_H
#define CP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "base/cp_utf8.h" /* cp_utf8_validate, used with these status codes everywhere */

#ifdef __cplusplus
extern "C" {
#endif

enum {
    CP_OK = 0,
    CP_ERR_NOMEM = -1,         /* allocation failed                          -> MemoryError            */
    CP_ERR_EMPTY = -2,         /* empty / whitespace-only prompt             -> EmptyPromptError       */
    CP_ERR_TOKENIZER = -3,     /* invalid UTF-8, over-long prompt, bad vocab -> TokenizerError         */
    CP_ERR_MODEL_FORMAT = -4,  /* bad weights / config                       -> ModelFormatError       */
    CP_ERR_DIMENSION = -5,     /* wrong vector dimension                     -> DimensionMismatchError */
    CP_ERR_INDEX_STATE = -6,   /* bad index/cache file, unknown id           -> IndexStateError        */
    CP_ERR_DEVICE = -7,        /* no GPU, CUDA/cuBLAS/cuDNN failure          -> DeviceError            */
    CP_ERR_DEVICE_OOM = -8,    /* device allocation failed                   -> DeviceOutOfMemoryError */
    CP_ERR_INVALID_ARG = -9,   /* bad argument value (NaN, bad k, ...)       -> InvalidArgumentError   */
    CP_ERR_IO = -10,           /* file cannot be opened/read/written         -> FileAccessError        */
    CP_ERR_DEPENDENCY = -11,   /* optional system component missing (MeCab) -> DependencyError        */
    CP_ERR_INTERNAL = -12      /* a bug in clipprompt                        -> ClipPromptError        */
};

/** Record a failure for this thread and return `code` (so callers can `return cp_fail(...)`). */
int cp_fail(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** Record a failure and return its code from the current function. */
#define CP_FAIL(code, ...) return cp_fail((code), __VA_ARGS__)

/** Propagate a non-OK status unchanged. */
#define CP_CHECK(expr)                 \
    do {                               \
        int cp_check_rc_ = (expr);     \
        if (cp_check_rc_ != CP_OK)     \
            return cp_check_rc_;       \
    } while (0)

/** The message recorded by the last cp_fail on this thread ("" if none). Owned by the library. */
const char *cp_last_error(void);

/** Clear this thread's last-error message. */
void cp_clear_error(void);

/** A short static name for a status code ("CP_ERR_EMPTY", ...). */
const char *cp_status_name(int code);

/* ---- threads -------------------------------------------------------------------------------------- */

/** Set the number of threads for our OpenMP loops and for the BLAS. n <= 0 restores the default. */
void cp_set_num_threads(int n);
int cp_get_num_threads(void);

/* ---- allocation ----------------------------------------------------------------------------------- */

/** 64-byte aligned allocation; NULL on failure or overflow. Free with cp_free_aligned (NULL safe). */
void *cp_malloc_aligned(size_t nbytes);
void cp_free_aligned(void *p);

/** a*b into *out, CP_ERR_INVALID_ARG on overflow (used for every size computed from untrusted input). */
int cp_mul_size(size_t a, size_t b, size_t *out);

/* ---- half precision -------------------------------------------------------------------------------- */

/** IEEE binary16 <-> binary32. cp_f32_to_f16 rounds to nearest even (overflow -> inf, NaN kept NaN). */
uint16_t cp_f32_to_f16(float f);
float cp_f16_to_f32(uint16_t h);
/** bfloat16 -> binary32 (exact). */
float cp_bf16_to_f32(uint16_t h);
/** binary32 -> bfloat16, round to nearest even (NaN stays NaN); inline so conversion loops vectorise. */
static inline uint16_t cp_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40u);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

#ifdef __cplusplus
}
#endif
#endif /* CP_COMMON_H */
