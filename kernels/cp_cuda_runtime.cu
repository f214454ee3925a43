// cp_cuda_runtime.cu — device discovery and library versions for build_info / DeviceError.
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_cuda_runtime.cu   (setup.py adds -gencode flags)
#include <cstdio>
#include <cstring>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "../csrc/cp_common.h"
#include "cp_cuda.h"

extern "C" void cp_cuda_get_info(cp_cuda_info *info) {
    std::memset(info, 0, sizeof *info);
    info->compiled_major = CUDART_VERSION / 1000;
    info->compiled_minor = (CUDART_VERSION % 1000) / 10;
    cudaRuntimeGetVersion(&info->runtime_version);
    cudaDriverGetVersion(&info->driver_version);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        std::snprintf(info->device_error, sizeof info->device_error, "%s: %s", cudaGetErrorName(e),
                      cudaGetErrorString(e));
        cudaGetLastError(); // clear the sticky-free error state for later calls
        n = 0;
    } else if (n == 0) {
        std::snprintf(info->device_error, sizeof info->device_error, "no CUDA device found");
    }
    info->device_count = n;
    cublasGetProperty(MAJOR_VERSION, &info->cublas_major);
    cublasGetProperty(MINOR_VERSION, &info->cublas_minor);
    cublasGetProperty(PATCH_LEVEL, &info->cublas_patch);
    info->cudnn_version = cudnnGetVersion();
}

extern "C" int cp_cuda_require_device(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        CP_FAIL(CP_ERR_DEVICE, "no usable CUDA device: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    }
    if (n == 0) CP_FAIL(CP_ERR_DEVICE, "no usable CUDA device: cudaGetDeviceCount returned 0");
    return CP_OK;
}
