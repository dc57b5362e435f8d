/* A CPU stand-in for the NVIDIA driver (libcuda.so.1), for tests on machines without a GPU.
 *
 * It is loaded by the GENUINE cuda-python (cuda-bindings) wheel exactly like the real driver:
 * cuda-bindings dlopens libcuda.so.1, takes cuGetProcAddress_v2 and resolves every entry
 * point through it. It reports FAKE_CUDA_DEVICES GPUs (default 1, "Fake GPU (CPU stand-in)",
 * compute capability 8.6); "device" memory is host memory; streams are counters. It enforces
 * what the real driver enforces for ffrt's calls: memory calls need a current context
 * (CUDA_ERROR_INVALID_CONTEXT otherwise), handles must be live. fake_cuda_stats() and
 * fake_cuda_log() let a test see what is still allocated and in which order things were freed.
 * FAKE_CUDA_INIT_ERROR=<code> makes cuInit fail with that CUresult (e.g. 100: no device).
 * Nothing here runs TensorRT or claims to: it exists so the allocation, context and
 * release logic can be exercised through the real bindings. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;
typedef void *CUstream;

enum { OK = 0, E_VALUE = 1, E_MEMORY = 2, E_NOTINIT = 3, E_NODEV = 100, E_INVDEV = 101,
       E_CONTEXT = 201, E_HANDLE = 400, E_NOTFOUND = 500 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int inited = 0, retained = 0, live_dev = 0, live_host = 0, live_streams = 0;
static long long dev_bytes = 0;
static char calllog[1 << 16];
static int ctx_token[8];
static __thread CUcontext stack[64];
static __thread int depth = 0;

static void note(const char *what) {
    size_t n = strlen(calllog);
    if (n + strlen(what) + 2 < sizeof calllog) { strcat(calllog, what); strcat(calllog, ","); }
}
static int ndev(void) { const char *e = getenv("FAKE_CUDA_DEVICES"); return e ? atoi(e) : 1; }
static int has_ctx(void) { return depth > 0 && stack[depth - 1] != NULL; }

#define API __attribute__((visibility("default")))
API CUresult cuGetErrorName(CUresult e, const char **s) {
    switch (e) { case OK: *s = "CUDA_SUCCESS"; break; case E_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case E_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break; case E_NOTINIT: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
    case E_NODEV: *s = "CUDA_ERROR_NO_DEVICE"; break; case E_INVDEV: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    case E_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; break; case E_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
    default: *s = "CUDA_ERROR_UNKNOWN"; }
    return OK;
}
API CUresult cuGetErrorString(CUresult e, const char **s) {
    switch (e) { case E_NODEV: *s = "no CUDA-capable device is detected"; break;
    case E_CONTEXT: *s = "invalid device context"; break; default: cuGetErrorName(e, s); }
    return OK;
}
API CUresult cuInit(unsigned int flags) {
    const char *e = getenv("FAKE_CUDA_INIT_ERROR");
    if (e && atoi(e)) return atoi(e);
    inited = 1; return OK;
}
API CUresult cuDriverGetVersion(int *v) { *v = 13000; return OK; }
API CUresult cuDeviceGetCount(int *n) { if (!inited) return E_NOTINIT; *n = ndev(); return OK; }
API CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    if (!inited) return E_NOTINIT; if (ordinal < 0 || ordinal >= ndev()) return E_INVDEV; *d = ordinal; return OK; }
API CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    if (d < 0 || d >= ndev()) return E_INVDEV; snprintf(name, len, "Fake GPU %d (CPU stand-in)", d); return OK; }
API CUresult cuDeviceGetAttribute(int *v, int attrib, CUdevice d) {
    if (d < 0 || d >= ndev()) return E_INVDEV;
    *v = attrib == 75 ? 8 : attrib == 76 ? 6 : 0; return OK; }
API CUresult cuDeviceTotalMem(size_t *bytes, CUdevice d) { *bytes = (size_t)8 << 30; return OK; }
API CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
    if (d < 0 || d >= ndev() || d >= 8) return E_INVDEV;
    pthread_mutex_lock(&mu); retained++; pthread_mutex_unlock(&mu); note("ctx_retain");
    *c = &ctx_token[d]; return OK; }
API CUresult cuDevicePrimaryCtxRelease(CUdevice d) {
    pthread_mutex_lock(&mu); int bad = retained <= 0; if (!bad) retained--; pthread_mutex_unlock(&mu);
    note("ctx_release"); return bad ? E_CONTEXT : OK; }
API CUresult cuCtxPushCurrent(CUcontext c) {
    if (!c || depth >= 64) return E_CONTEXT; stack[depth++] = c; return OK; }
API CUresult cuCtxPopCurrent(CUcontext *c) {
    if (depth <= 0) return E_CONTEXT; CUcontext top = stack[--depth]; if (c) *c = top; return OK; }
API CUresult cuMemAlloc(CUdeviceptr *p, size_t n) {
    if (!has_ctx()) return E_CONTEXT; void *m = calloc(1, n); if (!m) return E_MEMORY;
    pthread_mutex_lock(&mu); live_dev++; dev_bytes += n; pthread_mutex_unlock(&mu);
    *p = (CUdeviceptr)(uintptr_t)m; note("mem_alloc"); return OK; }
API CUresult cuMemFree(CUdeviceptr p) {
    if (!has_ctx()) return E_CONTEXT; if (!p) return E_VALUE; free((void *)(uintptr_t)p);
    pthread_mutex_lock(&mu); live_dev--; pthread_mutex_unlock(&mu); note("mem_free"); return OK; }
API CUresult cuMemHostAlloc(void **p, size_t n, unsigned int flags) {
    if (!has_ctx()) return E_CONTEXT; *p = calloc(1, n); if (!*p) return E_MEMORY;
    pthread_mutex_lock(&mu); live_host++; pthread_mutex_unlock(&mu); note("host_alloc"); return OK; }
API CUresult cuMemFreeHost(void *p) {
    if (!has_ctx()) return E_CONTEXT; if (!p) return E_VALUE; free(p);
    pthread_mutex_lock(&mu); live_host--; pthread_mutex_unlock(&mu); note("host_free"); return OK; }
API CUresult cuStreamCreate(CUstream *s, unsigned int flags) {
    if (!has_ctx()) return E_CONTEXT; *s = malloc(16);
    pthread_mutex_lock(&mu); live_streams++; pthread_mutex_unlock(&mu); note("stream_create"); return OK; }
API CUresult cuStreamDestroy(CUstream s) {
    if (!has_ctx()) return E_CONTEXT; if (!s) return E_HANDLE; free(s);
    pthread_mutex_lock(&mu); live_streams--; pthread_mutex_unlock(&mu); note("stream_destroy"); return OK; }
API CUresult cuStreamSynchronize(CUstream s) { return has_ctx() ? OK : E_CONTEXT; }
API CUresult cuMemcpyHtoDAsync(CUdeviceptr d, const void *h, size_t n, CUstream s) {
    if (!has_ctx()) return E_CONTEXT; memcpy((void *)(uintptr_t)d, h, n); return OK; }
API CUresult cuMemcpyDtoHAsync(void *h, CUdeviceptr d, size_t n, CUstream s) {
    if (!has_ctx()) return E_CONTEXT; memcpy(h, (void *)(uintptr_t)d, n); return OK; }
API CUresult cuMemGetInfo(size_t *fr, size_t *total) {
    if (!has_ctx()) return E_CONTEXT; *total = (size_t)8 << 30; *fr = *total - (size_t)dev_bytes; return OK; }

/* Test hooks (not driver API). */
API void fake_cuda_stats(int *out) {
    out[0] = live_dev; out[1] = live_host; out[2] = live_streams; out[3] = retained; out[4] = depth; }
API const char *fake_cuda_log(void) { return calllog; }
API void fake_cuda_clear_log(void) { calllog[0] = 0; }
API void fake_cuda_note(const char *what) { pthread_mutex_lock(&mu); note(what); pthread_mutex_unlock(&mu); }

struct entry { const char *name; void *fn; };
static const struct entry table[] = {
    {"cuGetErrorName", cuGetErrorName}, {"cuGetErrorString", cuGetErrorString}, {"cuInit", cuInit},
    {"cuDriverGetVersion", cuDriverGetVersion}, {"cuDeviceGetCount", cuDeviceGetCount},
    {"cuDeviceGet", cuDeviceGet}, {"cuDeviceGetName", cuDeviceGetName},
    {"cuDeviceGetAttribute", cuDeviceGetAttribute}, {"cuDeviceTotalMem", cuDeviceTotalMem},
    {"cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain}, {"cuDevicePrimaryCtxRelease", cuDevicePrimaryCtxRelease},
    {"cuCtxPushCurrent", cuCtxPushCurrent}, {"cuCtxPopCurrent", cuCtxPopCurrent},
    {"cuMemAlloc", cuMemAlloc}, {"cuMemFree", cuMemFree}, {"cuMemHostAlloc", cuMemHostAlloc},
    {"cuMemFreeHost", cuMemFreeHost}, {"cuStreamCreate", cuStreamCreate}, {"cuStreamDestroy", cuStreamDestroy},
    {"cuStreamSynchronize", cuStreamSynchronize}, {"cuMemcpyHtoDAsync", cuMemcpyHtoDAsync},
    {"cuMemcpyDtoHAsync", cuMemcpyDtoHAsync}, {"cuMemGetInfo", cuMemGetInfo}, {0, 0}};

API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, unsigned long long flags,
                                 int *status) {
    for (const struct entry *e = table; e->name; e++)
        if (strcmp(e->name, symbol) == 0) { *pfn = e->fn; if (status) *status = 0; return OK; }
    *pfn = NULL; if (status) *status = 1; return E_NOTFOUND;
}
API CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, unsigned long long flags) {
    return cuGetProcAddress_v2(symbol, pfn, version, flags, NULL);
}
