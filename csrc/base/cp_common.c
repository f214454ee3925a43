/* cp_common.c — the thread-local last-error message, thread-count control and aligned allocation. */
#include "base/cp_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef CP_OPENBLAS
/* Debian's libopenblas exports these; declared here so that cblas.h variants without them still build. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
#endif

static _Thread_local char cp_errbuf[1024];

int cp_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cp_errbuf, sizeof cp_errbuf, fmt, ap);
    va_end(ap);
    return code;
}

const char *cp_last_error(void) { return cp_errbuf; }

void cp_clear_error(void) { cp_errbuf[0] = '\0'; }

const char *cp_status_name(int code) {
    switch (code) {
    case CP_OK: return "CP_OK";
    case CP_ERR_NOMEM: return "CP_ERR_NOMEM";
    case CP_ERR_EMPTY: return "CP_ERR_EMPTY";
    case CP_ERR_TOKENIZER: return "CP_ERR_TOKENIZER";
    case CP_ERR_MODEL_FORMAT: return "CP_ERR_MODEL_FORMAT";
    case CP_ERR_DIMENSION: return "CP_ERR_DIMENSION";
    case CP_ERR_INDEX_STATE: return "CP_ERR_INDEX_STATE";
    case CP_ERR_DEVICE: return "CP_ERR_DEVICE";
    case CP_ERR_DEVICE_OOM: return "CP_ERR_DEVICE_OOM";
    case CP_ERR_INVALID_ARG: return "CP_ERR_INVALID_ARG";
    case CP_ERR_IO: return "CP_ERR_IO";
    case CP_ERR_DEPENDENCY: return "CP_ERR_DEPENDENCY";
    case CP_ERR_INTERNAL: return "CP_ERR_INTERNAL";
    default: return "CP_ERR_UNKNOWN";
    }
}

static int cp_threads_requested = 0; /* 0: library default */

void cp_set_num_threads(int n) {
    int def = 1;
#ifdef _OPENMP
    def = omp_get_num_procs();
#endif
    int use = n > 0 ? n : def;
    cp_threads_requested = n > 0 ? n : 0;
#ifdef _OPENMP
    omp_set_num_threads(use);
#endif
#ifdef CP_OPENBLAS
    openblas_set_num_threads(use);
#endif
}

int cp_get_num_threads(void) {
    if (cp_threads_requested > 0) return cp_threads_requested;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void *cp_malloc_aligned(size_t nbytes) {
    if (nbytes == 0) nbytes = 64;
    if (nbytes > SIZE_MAX - 63) return NULL;
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    return aligned_alloc(64, rounded);
}

void cp_free_aligned(void *p) { free(p); }

int cp_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) CP_FAIL(CP_ERR_INVALID_ARG, "size overflow: %zu * %zu", a, b);
    *out = a * b;
    return CP_OK;
}

/* ---- half-precision conversions (shared by the weight loader and the float16 index) ---- */

uint16_t cp_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to inf */
    if (ax < 0x38800000u) {                                   /* float16 subnormal or zero */
        float t;
        memcpy(&t, &ax, 4);
        t += 0.5f; /* aligns the f16 subnormal ulp (2^-24) with the f32 ulp at 0.5; the FPU rounds to even */
        uint32_t r;
        memcpy(&r, &t, 4);
        return (uint16_t)(sign | (r - 0x3f000000u));
    }
    uint32_t odd = (ax >> 13) & 1u;
    ax += 0xc8000fffu + odd; /* rebias exponent (-112 << 23) and round half to even */
    return (uint16_t)(sign | (ax >> 13));
}

float cp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu, x;
    float f;
    if (em >= 0x7c00u) x = sign | 0x7f800000u | ((em & 0x3ffu) << 13);
    else if (em >= 0x400u) x = sign | ((em << 13) + 0x38000000u);
    else {
        f = (float)em * 5.9604644775390625e-8f; /* 2^-24 */
        memcpy(&x, &f, 4);
        x |= sign;
    }
    memcpy(&f, &x, 4);
    return f;
}

float cp_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
