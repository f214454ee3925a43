/* cp_cuda.h — the one header between csrc/ (C) and kernels/ (CUDA C++).
 *
 * Plain C declarations only (no CUDA headers), so csrc/ compiles without the toolkit. Streams travel as
 * void* (a cudaStream_t). Every launcher returns a cp status (CP_OK or CP_ERR_DEVICE / CP_ERR_DEVICE_OOM)
 * and records the CUDA/cuBLAS/cuDNN message with cp_fail. The CPU function in csrc/ is the reference for
 * every kernel here.
 */
#ifndef CP_CUDA_H
#define CP_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int compiled_major, compiled_minor; /* CUDA toolkit the kernels were built with           */
    int runtime_version;                /* cudaRuntimeGetVersion, e.g. 13000                  */
    int driver_version;                 /* cudaDriverGetVersion, 0 when no driver is present   */
    int device_count;                   /* 0 when there is no usable GPU                       */
    char device_error[256];             /* why device_count is 0 ("" otherwise)                */
    int cublas_major, cublas_minor, cublas_patch;
    size_t cudnn_version;               /* cudnnGetVersion(), e.g. 92700                       */
} cp_cuda_info;

/** Fill *info. Never fails: a missing GPU or driver is reported in device_count/device_error. */
void cp_cuda_get_info(cp_cuda_info *info);

/** CP_OK when at least one GPU is usable, else CP_ERR_DEVICE with the reason. */
int cp_cuda_require_device(void);

/** Row-wise L2 normalisation in place: x is [n, d] fp32 on the device; rows with norm 0 stay 0.
 *  The CPU reference is cp_l2_normalize_rows in csrc/. */
int cp_cuda_l2_normalize(float *x, int64_t n, int64_t d, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* CP_CUDA_H */
