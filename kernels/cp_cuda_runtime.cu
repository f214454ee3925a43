// cp_cuda_runtime.cu — device discovery and library versions for build_info / DeviceError; device memory, streams,
// graphs and events behind plain C functions, each turning a CUDA error into a cp status with CUDA's message.
// nvcc -O3 -std=c++17 -Xcompiler -fPIC -c kernels/cp_cuda_runtime.cu   (setup.py adds -gencode flags)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "base/cp_common.h"
#include "cp_cuda.h"

#define CP_CUDA_TRY(call, what)                                                                                   \
    do {                                                                                                          \
        cudaError_t e_ = (call);                                                                                  \
        if (e_ != cudaSuccess) {                                                                                  \
            cudaGetLastError();                                                                                   \
            CP_FAIL(CP_ERR_DEVICE, "%s: %s (%s)", (what), cudaGetErrorString(e_), cudaGetErrorName(e_));          \
        }                                                                                                         \
    } while (0)

extern "C" size_t cp_cuda_dtype_size(int dt) {
    switch (dt) {
    case CP_CUDA_F32: return 4;
    case CP_CUDA_F16:
    case CP_CUDA_BF16: return 2;
    }
    return 0;
}

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
        cudaGetLastError(); // clear the error state for later calls
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

extern "C" int cp_cuda_set_device(int device) {
    CP_CHECK(cp_cuda_require_device());
    int n = 0;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n)
        CP_FAIL(CP_ERR_DEVICE, "CUDA device %d does not exist (this machine has %d)", device, n);
    CP_CUDA_TRY(cudaSetDevice(device), "cudaSetDevice");
    return CP_OK;
}

extern "C" int cp_cuda_device_name(int device, char *name, size_t n, int *cc) {
    cudaDeviceProp p;
    CP_CUDA_TRY(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    std::snprintf(name, n, "%s", p.name);
    *cc = p.major * 10 + p.minor;
    return CP_OK;
}

extern "C" int cp_cuda_malloc(void **p, size_t bytes, const char *what) {
    *p = nullptr;
    if (bytes == 0) return CP_OK;
    // test knob: allocations above CLIPPROMPT_CUDA_ALLOC_LIMIT bytes fail as out-of-memory (recovery tests)
    const char *lim = std::getenv("CLIPPROMPT_CUDA_ALLOC_LIMIT");
    if (lim && *lim && bytes > (size_t)std::strtoull(lim, nullptr, 10))
        CP_FAIL(CP_ERR_DEVICE_OOM, "CUDA out of memory allocating %zu bytes for %s (CLIPPROMPT_CUDA_ALLOC_LIMIT=%s)",
                bytes, what, lim);
    cudaError_t e = cudaMalloc(p, bytes);
    if (e == cudaSuccess) return CP_OK;
    *p = nullptr;
    cudaGetLastError(); // an allocation failure is not sticky: clear it so the object stays usable
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
        CP_FAIL(CP_ERR_DEVICE_OOM, "CUDA out of memory allocating %zu bytes for %s (%zu of %zu bytes free)", bytes,
                what, free_b, total_b);
    CP_FAIL(CP_ERR_DEVICE, "cudaMalloc of %zu bytes for %s failed: %s (%s)", bytes, what, cudaGetErrorString(e),
            cudaGetErrorName(e));
}

extern "C" void cp_cuda_free(void *p) {
    if (p) cudaFree(p);
}

extern "C" int cp_cuda_host_malloc(void **p, size_t bytes) {
    *p = nullptr;
    if (bytes == 0) return CP_OK;
    cudaError_t e = cudaMallocHost(p, bytes);
    if (e != cudaSuccess) {
        *p = nullptr;
        cudaGetLastError();
        CP_FAIL(CP_ERR_NOMEM, "cudaMallocHost of %zu bytes failed: %s", bytes, cudaGetErrorString(e));
    }
    return CP_OK;
}

extern "C" void cp_cuda_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

extern "C" int cp_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes, void *stream) {
    if (bytes == 0) return CP_OK;
    CP_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, (cudaStream_t)stream), "copy to device");
    return CP_OK;
}

extern "C" int cp_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes, void *stream) {
    if (bytes == 0) return CP_OK;
    CP_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, (cudaStream_t)stream), "copy from device");
    return CP_OK;
}

extern "C" int cp_cuda_memcpy_d2d(void *dst, const void *src, size_t bytes, void *stream) {
    if (bytes == 0) return CP_OK;
    CP_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)stream), "device copy");
    return CP_OK;
}

extern "C" int cp_cuda_memset(void *dst, int value, size_t bytes, void *stream) {
    if (bytes == 0) return CP_OK;
    CP_CUDA_TRY(cudaMemsetAsync(dst, value, bytes, (cudaStream_t)stream), "cudaMemsetAsync");
    return CP_OK;
}

extern "C" int cp_cuda_stream_create(void **stream) {
    cudaStream_t s = nullptr;
    *stream = nullptr;
    CP_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    *stream = (void *)s;
    return CP_OK;
}

extern "C" void cp_cuda_stream_free(void *stream) {
    if (stream) cudaStreamDestroy((cudaStream_t)stream);
}

extern "C" int cp_cuda_stream_sync(void *stream) {
    CP_CUDA_TRY(cudaStreamSynchronize((cudaStream_t)stream), "device work failed");
    return CP_OK;
}

extern "C" int cp_cuda_capture_begin(void *stream) {
    // thread-local mode: other threads' unrelated CUDA calls do not invalidate this capture
    CP_CUDA_TRY(cudaStreamBeginCapture((cudaStream_t)stream, cudaStreamCaptureModeThreadLocal), "graph capture");
    return CP_OK;
}

extern "C" int cp_cuda_capture_end(void *stream, void **exec) {
    *exec = nullptr;
    cudaGraph_t g = nullptr;
    CP_CUDA_TRY(cudaStreamEndCapture((cudaStream_t)stream, &g), "graph capture");
    cudaGraphExec_t x = nullptr;
    cudaError_t e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    CP_CUDA_TRY(e, "cudaGraphInstantiate");
    *exec = (void *)x;
    return CP_OK;
}

extern "C" int cp_cuda_graph_launch(void *exec, void *stream) {
    CP_CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)exec, (cudaStream_t)stream), "cudaGraphLaunch");
    return CP_OK;
}

extern "C" void cp_cuda_graph_free(void *exec) {
    if (exec) cudaGraphExecDestroy((cudaGraphExec_t)exec);
}

extern "C" int cp_cuda_event_create(void **ev) {
    cudaEvent_t e = nullptr;
    *ev = nullptr;
    CP_CUDA_TRY(cudaEventCreate(&e), "cudaEventCreate");
    *ev = (void *)e;
    return CP_OK;
}

extern "C" void cp_cuda_event_free(void *ev) {
    if (ev) cudaEventDestroy((cudaEvent_t)ev);
}

extern "C" int cp_cuda_event_record(void *ev, void *stream) {
    CP_CUDA_TRY(cudaEventRecord((cudaEvent_t)ev, (cudaStream_t)stream), "cudaEventRecord");
    return CP_OK;
}

extern "C" int cp_cuda_event_elapsed(void *start, void *stop, float *ms) {
    CP_CUDA_TRY(cudaEventSynchronize((cudaEvent_t)stop), "cudaEventSynchronize");
    CP_CUDA_TRY(cudaEventElapsedTime(ms, (cudaEvent_t)start, (cudaEvent_t)stop), "cudaEventElapsedTime");
    return CP_OK;
}
