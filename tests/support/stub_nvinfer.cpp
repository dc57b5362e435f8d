// Stand-in for TensorRT's native libraries (libnvinfer.so.N, libnvonnxparser.so.N,
// libnvinfer_plugin.so.N) that fails the way they fail on a host whose CUDA cannot start.
//
// The GENUINE TensorRT Python bindings (tensorrt_bindings/tensorrt.so of the 10.x and 11.x
// wheels) link exactly these nine entry points (nm -D --undefined-only). On a machine
// without a usable GPU/driver the real createInferBuilder_INTERNAL / createInferRuntime_INTERNAL
// log "CUDA initialization failure with error: N. Please check your CUDA installation: ..."
// through the caller's logger and return nullptr, which the bindings turn into
// "TypeError: pybind11::init(): factory function returned nullptr" (NVIDIA/TensorRT issues
// 2913, 308, 635). This stub does the same; STUB_CUDA_ERROR sets N (default 35,
// cudaErrorInsufficientDriver). For the 11.x bindings the logger's C++ layout is not public,
// so the stub returns nullptr without logging there. Nothing in here builds or runs a network.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {
class ILogger {  // TensorRT 10's nvinfer1::ILogger: log() is the first virtual
public:
    virtual void log(int32_t severity, const char* msg) noexcept = 0;
    virtual ~ILogger() = default;
};

void failInit(void* logger, int32_t version) {
    if (!logger || version >= 110000) return;
    const char* e = std::getenv("STUB_CUDA_ERROR");
    char msg[256];
    std::snprintf(msg, sizeof msg,
                  "CUDA initialization failure with error: %d. Please check your CUDA installation: "
                  "http://docs.nvidia.com/cuda/cuda-installation-guide-linux/index.html",
                  e ? std::atoi(e) : 35);
    static_cast<ILogger*>(logger)->log(2 /* kWARNING */, msg);
}
}  // namespace

extern "C" {
__attribute__((visibility("default"))) void* createInferBuilder_INTERNAL(void* logger, int32_t version) noexcept {
    failInit(logger, version);
    return nullptr;
}
__attribute__((visibility("default"))) void* createInferRuntime_INTERNAL(void* logger, int32_t version) noexcept {
    failInit(logger, version);
    return nullptr;
}
__attribute__((visibility("default"))) void* createInferRefitter_INTERNAL(void*, void* logger, int32_t version) noexcept {
    failInit(logger, version);
    return nullptr;
}
__attribute__((visibility("default"))) void* createNvOnnxParser_INTERNAL(void*, void*, int32_t) noexcept { return nullptr; }
__attribute__((visibility("default"))) void* createNvOnnxParserRefitter_INTERNAL(void*, void*, int32_t) noexcept { return nullptr; }
__attribute__((visibility("default"))) void* getPluginRegistry() noexcept { return nullptr; }
__attribute__((visibility("default"))) void* getBuilderPluginRegistry(int32_t) noexcept { return nullptr; }
__attribute__((visibility("default"))) int32_t getNvOnnxParserVersion() noexcept { return 0; }
__attribute__((visibility("default"))) bool initLibNvInferPlugins(void*, const char*) noexcept { return false; }
// major*10000 + minor*100 + patch, as TensorRT >= 10 reports it; STUB_TRT_LIB_VERSION overrides.
__attribute__((visibility("default"))) int32_t getInferLibVersion() noexcept {
    const char* v = std::getenv("STUB_TRT_LIB_VERSION");
    return v ? std::atoi(v) : 101601;
}
}
