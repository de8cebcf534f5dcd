// device.cc: the addon's device registry (one process-wide backend per device name) and the
// bindings that describe and probe devices. Contract: "cpu" never touches CUDA; "cuda[:N]"
// loads the plugin once per GPU, and a failed load throws the loader's full message.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "../cpu/cpu_backend.h"
#include "addon.h"
#include "byol/plugin.h"

namespace byol_addon {


namespace {

struct DeviceId {
  byol::DeviceType type = byol::DeviceType::cpu;
  int index = 0;
};

DeviceId ParseDevice(const std::string& name) {
  if (name == "cpu") return {byol::DeviceType::cpu, 0};
  if (name == "cuda") return {byol::DeviceType::cuda, 0};
  const std::string prefix = "cuda:";
  if (name.compare(0, prefix.size(), prefix) == 0) {
    std::string digits = name.substr(prefix.size());
    // At most 4 digits keeps stoi in range; no machine has 10000 GPUs.
    bool ok = !digits.empty() && digits.size() <= 4;
    for (char c : digits) ok = ok && std::isdigit(static_cast<unsigned char>(c));
    if (ok) return {byol::DeviceType::cuda, std::stoi(digits)};
  }
  BYOL_FAIL("unknown device '", name, "': expected 'cpu', 'cuda' or 'cuda:N' (N a GPU index)");
}

// Backends are created on first use and deliberately never destroyed: tensors (and their
// JS handles, which may be finalized at any point of shutdown, or never) point at them, and
// tearing down a CUDA context from a static destructor after the driver unloaded crashes.
std::mutex g_registry_mutex;
// Atomic: the compute thread reads it between tasks without the registry lock, which a CUDA
// load holds for seconds.
std::atomic<byol::Backend*> g_cpu_backend{nullptr};
std::map<int, byol::Backend*> g_cuda_backends;
std::map<const byol::Backend*, std::string> g_backend_names;

// 0 = the OpenMP default (OMP_NUM_THREADS or all cores), read once at the first InitDevice
// (g_default_threads), before the JS thread's own count is set to 1.
std::atomic<int> g_num_threads{0};
std::atomic<int> g_default_threads{0};

int EffectiveThreads() {
  const int n = g_num_threads.load();
  return n > 0 ? n : std::max(1, g_default_threads.load());
}

// Turns core exceptions (byol::Error, bad_alloc) into JS errors; node-addon-api only
// converts Napi::Error by itself and would terminate the process on anything else.
template <typename Body>
Napi::Value Guarded(Napi::Env env, Body&& body) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "byol: out of host memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string("Expected string for ") + name);
  return info[i].As<Napi::String>().Utf8Value();
}

int ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name, int min, int max) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsNumber())
    throw Napi::TypeError::New(env, std::string("Expected integer for ") + name);
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= min && v <= max) || v != static_cast<double>(static_cast<int64_t>(v))) {
    throw Napi::TypeError::New(env, std::string("Expected integer between ") + std::to_string(min) +
                                        " and " + std::to_string(max) + " for " + name);
  }
  return static_cast<int>(v);
}

// describeDevice(device): the backend's one-line description; creates it on first use.
Napi::Value DescribeDevice(const Napi::CallbackInfo& info) {
  std::string device = ArgString(info, 0, "device");
  return Guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), GetBackend(device)->describe());
  });
}

// probeCuda(index): { available, description } or { available: false, reason }; never throws
// for a missing GPU, because "is CUDA there?" is a question, not an error.
Napi::Value ProbeCuda(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int index = ArgInt(info, 0, "index", 0, 9999);
  Napi::Object result = Napi::Object::New(env);
  try {
    byol::Backend* backend = GetBackend("cuda:" + std::to_string(index));
    result.Set("available", true);
    result.Set("description", backend->describe());
  } catch (const std::exception& e) {
    result.Set("available", false);
    result.Set("reason", e.what());
  }
  return result;
}

Napi::Value CudaLibraryCandidates(const Napi::CallbackInfo& info) {
  return Guarded(info.Env(), [&]() -> Napi::Value {
    std::vector<std::string> paths = byol::cuda_library_candidates();
    Napi::Array out = Napi::Array::New(info.Env(), paths.size());
    for (size_t i = 0; i < paths.size(); ++i) out.Set(static_cast<uint32_t>(i), paths[i]);
    return out;
  });
}

// cpuInfo(): { onednn: { version, isa, bf16Native, bf16Supported }, kernels: { variant, isa, variants, multiversioned },
// compiler, convolutions: { algorithm, gemmWhenAuto } }. Creates no backend, so `byol info` can report it even if the engine fails.
Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  return Guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const byol::cpu::CpuCapabilities caps = byol::cpu::cpu_capabilities();
    Napi::Object onednn = Napi::Object::New(env);
    onednn.Set("version", caps.onednn_version);
    onednn.Set("isa", caps.onednn_isa);
    Napi::Array variants = Napi::Array::New(env, caps.kernel_variants.size());
    for (size_t i = 0; i < caps.kernel_variants.size(); ++i)
      variants.Set(static_cast<uint32_t>(i), caps.kernel_variants[i]);
    Napi::Object kernels = Napi::Object::New(env);
    kernels.Set("variant", caps.kernel_variant);
    kernels.Set("isa", caps.kernel_isa);
    kernels.Set("variants", variants);
    kernels.Set("multiversioned", caps.kernels_multiversioned);
    Napi::Object out = Napi::Object::New(env);
    onednn.Set("bf16Native", caps.bf16_native);
    onednn.Set("bf16Supported", caps.bf16_supported);
    out.Set("onednn", onednn);
    out.Set("kernels", kernels);
    out.Set("compiler", caps.compiler);
    // The CPU backend's convolution algorithm (cpu_backend.h set_conv_algorithm): the setting a
    // backend starts with (BYOL_CPU_CONV, validated when the backend was created) and whether its
    // automatic rule runs wide convolutions as im2col + SGEMM on this CPU.
    Napi::Object convolutions = Napi::Object::New(env);
    convolutions.Set("algorithm", byol::cpu::conv_algorithm_setting());
    convolutions.Set("gemmWhenAuto", caps.conv_gemm_auto);
    out.Set("convolutions", convolutions);
    return out;
  });
}

// setNumThreads(n): the count the compute thread applies before its next task
// (ApplyThreadSetting); work already running keeps its count.
Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int n = ArgInt(info, 0, "threads", 1, 4096);
  g_num_threads.store(n);
  return info.Env().Undefined();
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), EffectiveThreads());
}

// setCpuConvPrecision('fp32' | 'bf16'): the CPU backend's convolution precision for work
// started after the call (process-wide, like the thread count; cpu_backend.h set_conv_bf16).
Napi::Value SetCpuConvPrecision(const Napi::CallbackInfo& info) {
  std::string precision = ArgString(info, 0, "precision");
  if (precision != "fp32" && precision != "bf16")
    throw Napi::TypeError::New(info.Env(), "Expected 'fp32' or 'bf16' for precision but received '" +
                                               precision + "'");
  return Guarded(info.Env(), [&]() -> Napi::Value {
    static_cast<byol::cpu::CpuBackend*>(GetBackend("cpu"))->set_conv_bf16(precision == "bf16");
    return info.Env().Undefined();
  });
}

Napi::Value GetCpuConvPrecision(const Napi::CallbackInfo& info) {
  return Guarded(info.Env(), [&]() -> Napi::Value {
    const bool bf16 = static_cast<byol::cpu::CpuBackend*>(GetBackend("cpu"))->conv_bf16();
    return Napi::String::New(info.Env(), bf16 ? "bf16" : "fp32");
  });
}

// setCpuConvAlgorithm('auto' | 'onednn' | 'gemm'): which code computes the CPU backend's float32
// convolutions from the next op on (process-wide; cpu_backend.h set_conv_algorithm).
Napi::Value SetCpuConvAlgorithm(const Napi::CallbackInfo& info) {
  std::string algorithm = ArgString(info, 0, "algorithm");
  return Guarded(info.Env(), [&]() -> Napi::Value {
    const byol::cpu::ConvAlgorithm a = byol::cpu::parse_conv_algorithm(algorithm, "algorithm");
    static_cast<byol::cpu::CpuBackend*>(GetBackend("cpu"))->set_conv_algorithm(a);
    return info.Env().Undefined();
  });
}

Napi::Value GetCpuConvAlgorithm(const Napi::CallbackInfo& info) {
  return Guarded(info.Env(), [&]() -> Napi::Value {
    const byol::cpu::ConvAlgorithm a = static_cast<byol::cpu::CpuBackend*>(GetBackend("cpu"))->conv_algorithm();
    return Napi::String::New(info.Env(), byol::cpu::conv_algorithm_name(a));
  });
}

}  // namespace

byol::Backend* GetBackend(const std::string& device) {
  DeviceId id = ParseDevice(device);
  // Held across a CUDA load (which can take seconds) on purpose: concurrent first requests
  // for one GPU must not create two contexts.
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  if (id.type == byol::DeviceType::cpu) {
    byol::Backend* cpu = g_cpu_backend.load();
    if (!cpu) {
      // The count now; ApplyThreadSetting() gives it a later setNumThreads() value.
      cpu = byol::make_cpu_backend(EffectiveThreads()).release();
      g_cpu_backend.store(cpu);
      g_backend_names[cpu] = "cpu";
    }
    return cpu;
  }
  auto found = g_cuda_backends.find(id.index);
  if (found != g_cuda_backends.end()) return found->second;
  std::string name = "cuda:" + std::to_string(id.index);
  std::unique_ptr<byol::Backend> backend;
  try {
    backend = byol::load_cuda_backend(id.index);
  } catch (const std::exception& e) {
    // Not cached: a later request retries (the user may have fixed BYOL_CUDA_LIBRARY or freed
    // the GPU); the CPU backend is untouched either way.
    throw byol::Error("device '" + name + "' is not available: " + e.what());
  }
  BYOL_CHECK(backend != nullptr, "device '", name, "': the CUDA loader returned no backend");
  byol::Backend* raw = backend.release();
  g_cuda_backends[id.index] = raw;
  g_backend_names[raw] = name;
  return raw;
}

std::string BackendDeviceName(const byol::Backend* backend) {
  if (!backend) return "none";
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  auto found = g_backend_names.find(backend);
  if (found != g_backend_names.end()) return found->second;
  return byol::device_name(backend->type());
}

void ApplyThreadSetting() {
  const int n = EffectiveThreads();
  if (omp_get_max_threads() != n) omp_set_num_threads(n);
  byol::Backend* cpu = g_cpu_backend.load();
  if (cpu) static_cast<byol::cpu::CpuBackend*>(cpu)->set_threads(n);
}

void InitDevice(Napi::Env env, Napi::Object exports) {
  // The default count is this process's OpenMP default, read before any thread changes its
  // own. A JS thread (the main thread, a worker_thread) then keeps 1: its synchronous calls are
  // small copies, and a parallel region on it would start a second libgomp pool (compute.cc).
  static std::once_flag defaults;
  std::call_once(defaults, [] { g_default_threads.store(omp_get_max_threads()); });
  // Count 1, kept through the CPU backend's ops, which would otherwise set the backend's count
  // again on this thread (Tensor.from's copy, the backend's creation).
  byol::cpu::set_thread_serial(true);
  exports.Set("describeDevice", Napi::Function::New(env, DescribeDevice, "describeDevice"));
  exports.Set("probeCuda", Napi::Function::New(env, ProbeCuda, "probeCuda"));
  exports.Set("cudaLibraryCandidates",
              Napi::Function::New(env, CudaLibraryCandidates, "cudaLibraryCandidates"));
  exports.Set("cpuInfo", Napi::Function::New(env, CpuInfo, "cpuInfo"));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads, "getNumThreads"));
  exports.Set("setCpuConvPrecision",
              Napi::Function::New(env, SetCpuConvPrecision, "setCpuConvPrecision"));
  exports.Set("getCpuConvPrecision",
              Napi::Function::New(env, GetCpuConvPrecision, "getCpuConvPrecision"));
  exports.Set("setCpuConvAlgorithm",
              Napi::Function::New(env, SetCpuConvAlgorithm, "setCpuConvAlgorithm"));
  exports.Set("getCpuConvAlgorithm",
              Napi::Function::New(env, GetCpuConvAlgorithm, "getCpuConvAlgorithm"));
}

}  // namespace byol_addon
