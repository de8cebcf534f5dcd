// addon.h: what the addon's module files share. Each feature registers itself from its own
// file (tensor.cc, device.cc, model.cc, augment.cc ...) through an Init* function called by
// addon.cc; argument checks happen here at the edge, native work runs in AsyncWorkers.
#pragma once
#include <napi.h>

#include <functional>
#include <string>

#include "byol/backend.h"
#include "byol/tensor.h"

namespace byol_addon {

// Module registration (one per file).
void InitTensor(Napi::Env env, Napi::Object exports);   // tensor.cc
void InitDevice(Napi::Env env, Napi::Object exports);   // device.cc
void InitModel(Napi::Env env, Napi::Object exports);    // model.cc (BYOL step)
void InitAugment(Napi::Env env, Napi::Object exports);  // augment.cc
void InitImage(Napi::Env env, Napi::Object exports);    // image.cc (JPEG decoding for image folders)
void InitKnn(Napi::Env env, Napi::Object exports);      // knn.cc (the evaluation's kNN)
void InitProbe(Napi::Env env, Napi::Object exports);    // probe.cc (the linear probe's step)

// The backend for a device name ("cpu", "cuda", "cuda:1"). Backends live for the life of
// the process (tensors point at them). Throws byol::Error naming the device on failure.
byol::Backend* GetBackend(const std::string& device);

// "cpu" / "cuda:N" for a backend made by GetBackend.
std::string BackendDeviceName(const byol::Backend* backend);
// The CPU backend's thread count (setNumThreads(), else OMP_NUM_THREADS or the CPUs this
// process may use), applied to the calling thread and the CPU backend. The compute thread
// calls it before each task; JS threads keep an OpenMP count of 1 (InitDevice), so the
// synchronous calls made on them (Tensor.from's copy and permute) never open a thread pool.
void ApplyThreadSetting();

// Runs `task` on the addon's compute thread (compute.cc) and waits for it; an exception it
// throws is rethrown here. Every OpenMP region of the process runs there, so libgomp keeps one
// warm thread pool. Called from AsyncWorker::Execute (a libuv thread); runs `task` inline when
// already on the compute thread.
void RunOnComputeThread(const std::function<void()>& task);
// RunOnComputeThread for CPU-backend work; other backends' work (CUDA: kernel launches, no
// OpenMP) runs on the calling thread, as before, with that thread's OpenMP count set to 1.
void RunWhereDeviceComputes(const byol::Backend* backend, const std::function<void()>& task);

// Throws a TypeError in the shape of lib/validate.ts: "Expected <expected> for <name> but
// received <value> of type <type>" (defense in depth behind the TypeScript checks).
[[noreturn]] void ThrowExpected(Napi::Env env, const std::string& name, const std::string& expected,
                                const Napi::Value& value);

// Argument readers shared by the bindings (validate.cc); each throws ThrowExpected's TypeError.
// A finite number in [lo, hi]; an integer in [lo, hi].
double ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name, double lo, double hi);
int64_t ArgInteger(const Napi::CallbackInfo& info, size_t i, const char* name, double lo, double hi);
// A typed array of `type` ("Float32Array" ... as `type_name`), of exactly `length` elements
// when length > 0; cast it with .As<Napi::Float32Array>() and the like.
Napi::TypedArray ArgTypedArray(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type type,
                               const char* type_name, size_t length = 0);

// The core tensor behind a JS Tensor handle. Throws a TypeError naming `arg_name` when the
// value is not a live (undisposed) native tensor.
byol::Tensor UnwrapTensor(const Napi::Value& value, const char* arg_name);
// Wraps a core tensor into a new native handle object (shape as the core holds it).
Napi::Object WrapTensor(Napi::Env env, byol::Tensor tensor);

}  // namespace byol_addon
