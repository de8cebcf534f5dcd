// cuda_backend.cc: the CUDA backend's device discovery, memory (stream-ordered pool, pinned
// staging for uploads), library handles, and the host side of the non-GEMM ops: argument
// checks, then a launcher from kernels/ on the backend's stream.
// Contract: see cuda_backend.h and backend.h. Bad arguments throw byol::Error naming the op
// and the parameter before anything is enqueued.
#include "cuda_backend.h"

#include <cuda_profiler_api.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "kernels/kernels.h"

namespace byol {
namespace cuda {

// ---- library error messages --------------------------------------------------------------

void throw_cudnn_error(cudnnStatus_t status, const char* call, const char* file, int line) {
  char detail_text[512] = {0};
  cudnnGetLastErrorString(detail_text, sizeof(detail_text));
  std::string extra = detail_text[0] ? std::string(" [") + detail_text + "]" : std::string();
  detail::throw_error(file, line, "cuda: ", current_op(), ": ", call, " failed: ",
                      cudnnGetErrorString(status), extra);
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  detail::throw_error(file, line, "cuda: ", current_op(), ": ", call, " failed: ",
                      cublasGetStatusName(status), ": ", cublasGetStatusString(status));
}

namespace {

std::string cuda_version_string(int v) {
  // CUDA encodes 1000 * major + 10 * minor.
  std::ostringstream os;
  os << v / 1000 << "." << (v % 1000) / 10;
  return os.str();
}

std::string format_bytes(double bytes) {
  std::ostringstream os;
  os.precision(bytes >= 1e9 ? 3 : 4);
  if (bytes >= double(1ull << 30))
    os << bytes / double(1ull << 30) << " GiB";
  else if (bytes >= double(1ull << 20))
    os << bytes / double(1ull << 20) << " MiB";
  else
    os << bytes << " bytes";
  return os.str();
}

// Environment switch: unset -> fallback, "0"/"false"/"off" -> false, anything else -> true.
bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  std::string s(v);
  return !(s == "0" || s == "false" || s == "off" || s == "no");
}

constexpr size_t kStagingChunk = size_t(64) << 20;
constexpr size_t kCublasWorkspace = size_t(32) << 20;  // what cuBLAS asks for on Hopper

}  // namespace

// ---- DeviceBuffer ------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(CudaBackend* backend, size_t bytes)
    : backend_(backend), data_(backend->alloc_raw(bytes, "scratch")), bytes_(bytes) {}

DeviceBuffer::~DeviceBuffer() {
  if (data_) backend_->free_raw(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : backend_(other.backend_), data_(other.data_), bytes_(other.bytes_) {
  other.data_ = nullptr;
  other.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) backend_->free_raw(data_);
    backend_ = other.backend_;
    data_ = other.data_;
    bytes_ = other.bytes_;
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

// ---- construction ------------------------------------------------------------------------

CudaBackend::CudaBackend(int device) : device_(device) {
  OpScope scope("init");
  // A throwing constructor runs no destructor: undo what was created, then rethrow.
  try {
    cudaDriverGetVersion(&driver_version_);
    cudaRuntimeGetVersion(&runtime_version_);
    if (driver_version_ == 0)
      BYOL_FAIL("cuda: no NVIDIA driver: libcuda.so.1 was not found or could not be loaded "
                "(libbyol_cuda.so uses the CUDA ", cuda_version_string(runtime_version_),
                " runtime, which needs the NVIDIA driver; install the driver, or in a container "
                "run with --gpus all through the NVIDIA Container Toolkit)");
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    (void)cudaGetLastError();
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    std::string visible_note =
        visible ? std::string(" (CUDA_VISIBLE_DEVICES='") + visible + "')" : std::string();
    if (status == cudaErrorInsufficientDriver)
      BYOL_FAIL("cuda: the NVIDIA driver supports CUDA up to ", cuda_version_string(driver_version_),
                " but libbyol_cuda.so was built with CUDA ", cuda_version_string(runtime_version_),
                ": update the NVIDIA driver, or rebuild the plugin with an older CUDA toolkit");
    if (status == cudaErrorNoDevice || (status == cudaSuccess && count == 0))
      BYOL_FAIL("cuda: no GPU: the NVIDIA driver (CUDA ", cuda_version_string(driver_version_),
                ") found no CUDA device", visible_note, "; check nvidia-smi");
    BYOL_CUDA_CHECK(status);
    if (device < 0 || device >= count) {
      std::ostringstream names;
      for (int i = 0; i < count; ++i) {
        cudaDeviceProp p{};
        if (cudaGetDeviceProperties(&p, i) == cudaSuccess)
          names << (i ? ", " : "") << "cuda:" << i << " " << p.name;
      }
      BYOL_FAIL("cuda: device index ", device, " out of range: ", count, " GPU",
                count == 1 ? "" : "s", " found (", names.str(), ")", visible_note);
    }
    BYOL_CUDA_CHECK(cudaGetDeviceProperties(&props_, device));
    BYOL_CUDA_CHECK(cudaSetDevice(device));

    status = probe_kernel_image();
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      BYOL_FAIL("cuda: ", props_.name, " (compute capability ", props_.major, ".", props_.minor,
                ") cannot run libbyol_cuda.so's kernels: ", cudaGetErrorName(status), ": ",
                cudaGetErrorString(status),
                " (it holds sm_80/sm_90 code and compute_90 PTX; rebuild with -DCMAKE_CUDA_ARCHITECTURES=",
                props_.major, props_.minor, ")");
    }

    BYOL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    int pools_supported = 0;
    BYOL_CUDA_CHECK(cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, device));
    if (pools_supported) {
      cudaMemPoolProps pool_props{};
      pool_props.allocType = cudaMemAllocationTypePinned;
      pool_props.handleTypes = cudaMemHandleTypeNone;
      pool_props.location.type = cudaMemLocationTypeDevice;
      pool_props.location.id = device;
      BYOL_CUDA_CHECK(cudaMemPoolCreate(&pool_, &pool_props));
      // Keep freed memory in the pool across synchronizations: a step frees and re-allocates
      // the same scratch sizes every time.
      uint64_t keep_all = UINT64_MAX;
      BYOL_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep_all));
    }

    BYOL_CUDNN_CHECK(cudnnCreate(&cudnn_));
    BYOL_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
    BYOL_CUBLAS_CHECK(cublasCreate(&cublas_));
    BYOL_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    BYOL_CUBLAS_CHECK(cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));
    // An explicit workspace keeps cuBLAS from allocating on its own (and makes GEMMs
    // capturable into CUDA graphs).
    cublas_workspace_ = alloc_raw(kCublasWorkspace, "init");
    cublas_workspace_bytes_ = kCublasWorkspace;
    BYOL_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, cublas_workspace_bytes_));

    device_status_ = static_cast<unsigned*>(alloc_raw(sizeof(unsigned), "init"));
    BYOL_CUDA_CHECK(cudaMemsetAsync(device_status_, 0, sizeof(unsigned), stream_));
    BYOL_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_status_), sizeof(unsigned),
                                  cudaHostAllocDefault));

    // TF32 tensor cores by default (PyTorch's choice for convolutions); 0 for full FP32.
    tf32_conv_ = tf32_matmul_ = true;
    if (const char* tf32 = std::getenv("BYOL_CUDA_TF32")) {
      const std::string mode(tf32);
      BYOL_CHECK(mode.empty() || mode == "0" || mode == "1" || mode == "conv",
                 "cuda: expected BYOL_CUDA_TF32 to be 0, 1 or conv but received '", mode, "'");
      if (!mode.empty()) {
        tf32_conv_ = mode == "1" || mode == "conv";
        tf32_matmul_ = mode == "1";
      }
    }
    cudnn_benchmark_ = env_flag("BYOL_CUDNN_BENCHMARK", false);
    cudnn_deterministic_ = env_flag("BYOL_CUDNN_DETERMINISTIC", false);
    if (const char* mb = std::getenv("BYOL_CUDNN_WORKSPACE_MB")) {
      char* end = nullptr;
      long long v = std::strtoll(mb, &end, 10);
      BYOL_CHECK(end != mb && *end == '\0' && v >= 0,
                 "cuda: expected BYOL_CUDNN_WORKSPACE_MB to be a whole number of MiB >= 0 but received '", mb, "'");
      workspace_limit_ = size_t(v) << 20;
    }
    BYOL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (...) {
    teardown();
    throw;
  }
}

CudaBackend::~CudaBackend() { teardown(); }

void CudaBackend::teardown() noexcept {
  // Never throws: failures while tearing down cannot be acted on.
  if (stream_) cudaStreamSynchronize(stream_);
  plans_.clear();
  if (host_status_) cudaFreeHost(host_status_);
  host_status_ = nullptr;
  for (const TimedOp& t : timed_ops_) {
    cudaEventDestroy(t.start);
    cudaEventDestroy(t.end);
  }
  timed_ops_.clear();
  for (cudaEvent_t event : free_events_) cudaEventDestroy(event);
  free_events_.clear();
  if (cublas_) cublasDestroy(cublas_);
  cublas_ = nullptr;
  if (cudnn_) cudnnDestroy(cudnn_);
  cudnn_ = nullptr;
  // Retired workspaces outlive their graphs only if a graph outlived the backend (a contract
  // violation); freed here all the same.
  for (void* p : retired_workspaces_)
    if (p) pool_ ? cudaFreeAsync(p, stream_) : cudaFree(p);
  retired_workspaces_.clear();
  workspace_pins_.clear();
  for (void** p : {&workspace_, &cublas_workspace_, reinterpret_cast<void**>(&device_status_)}) {
    if (*p) pool_ ? cudaFreeAsync(*p, stream_) : cudaFree(*p);
    *p = nullptr;
  }
  if (stream_) cudaStreamSynchronize(stream_);
  if (pool_) cudaMemPoolDestroy(pool_);
  pool_ = nullptr;
  if (stream_) cudaStreamDestroy(stream_);
  stream_ = nullptr;
  (void)cudaGetLastError();
}

std::string CudaBackend::describe() const {
  std::ostringstream os;
  const int cudnn = static_cast<int>(cudnnGetVersion());
  int cublas = 0;
  cublasGetVersion(cublas_, &cublas);
  os << "cuda:" << device_ << ": " << props_.name << " (sm_" << props_.major << props_.minor << ", "
     << props_.multiProcessorCount << " SMs, " << format_bytes(double(props_.totalGlobalMem))
     << "), driver CUDA " << cuda_version_string(driver_version_) << ", runtime "
     << cuda_version_string(runtime_version_) << ", cuDNN " << cudnn / 10000 << "."
     << (cudnn % 10000) / 100 << "." << cudnn % 100 << ", cuBLAS " << cublas / 10000 << "."
     << (cublas % 10000) / 100 << "." << cublas % 100 << ", TF32 conv "
     << (tf32_conv_ ? "on" : "off") << " / matmul " << (tf32_matmul_ ? "on" : "off");
  if (cudnn_benchmark_) os << ", cuDNN benchmark";
  if (cudnn_deterministic_) os << ", deterministic";
  return os.str();
}

void CudaBackend::activate() const {
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != device_) BYOL_CUDA_CHECK(cudaSetDevice(device_));
}

// ---- memory ------------------------------------------------------------------------------

void* CudaBackend::alloc_raw(size_t bytes, const char* what) {
  if (bytes == 0) return nullptr;
  void* ptr = nullptr;
  cudaError_t status = pool_ ? cudaMallocFromPoolAsync(&ptr, bytes, pool_, stream_) : cudaMalloc(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    std::ostringstream held;
    if (pool_) {
      uint64_t reserved = 0, used = 0;  // the attributes are 64-bit (cuuint64_t)
      cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &reserved);
      cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemCurrent, &used);
      held << "; byol's pool holds " << format_bytes(double(reserved)) << ", "
           << format_bytes(double(used)) << " of it in use";
    }
    (void)cudaGetLastError();
    BYOL_FAIL("cuda: ", current_op(), ": out of GPU memory: asked for ", format_bytes(double(bytes)),
              " (", bytes, " bytes) for ", what, " on cuda:", device_, " (", props_.name, "), ",
              format_bytes(double(free_bytes)), " free of ", format_bytes(double(total_bytes)),
              held.str(), " (use a smaller batch or image size)");
  }
  BYOL_CUDA_CHECK(status);
  if (capturing_here()) capture_allocs_.push_back(ptr);  // the graph's own allocation node
  return ptr;
}

void CudaBackend::free_raw(void* ptr) {
  if (!ptr) return;
  if (capturing_here() && std::find(capture_allocs_.begin(), capture_allocs_.end(), ptr) == capture_allocs_.end()) {
    // Memory from before the capture, freed inside it: a graph would free it at every launch.
    // Freed for real once the capture ends, which then fails.
    capture_deferred_frees_.push_back(ptr);
    if (capture_broken_.empty())
      capture_broken_ = std::string("cuda: ") + current_op() + " freed memory allocated before the capture";
    return;
  }
  cudaError_t status = pool_ ? cudaFreeAsync(ptr, stream_) : cudaFree(ptr);
  if (status != cudaSuccess && capturing_here()) {
    // A free into a capture that an earlier call invalidated (an op is unwinding): the graph
    // is discarded with its allocations, so nothing leaks; the capture fails, not a later sync.
    (void)cudaGetLastError();
    capture_allocs_.erase(std::remove(capture_allocs_.begin(), capture_allocs_.end(), ptr), capture_allocs_.end());
    if (capture_broken_.empty())
      capture_broken_ = std::string("cuda: ") + current_op() + ": freeing scratch inside the capture failed: " +
                        cudaGetErrorName(status);
    return;
  }
  if (capturing_here())  // freed inside the capture: the graph frees it at every launch
    capture_allocs_.erase(std::remove(capture_allocs_.begin(), capture_allocs_.end(), ptr), capture_allocs_.end());
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    // Called from destructors, which must not throw: the error is reported by the next
    // synchronize() or download() instead.
    std::lock_guard<std::mutex> lock(deferred_mutex_);
    if (deferred_error_.empty())
      deferred_error_ = std::string("cuda: ") + current_op() + ": freeing device memory failed: " +
                        cudaGetErrorName(status) + ": " + cudaGetErrorString(status);
  }
}

void* CudaBackend::alloc(size_t bytes) {
  // Not BYOL_CUDA_OP: an allocation is not timed (no GPU work; the CPU backend's op table has
  // no alloc row either), but it names itself, waits out a capture and sets the device.
  OpScope scope("alloc");
  OpGate gate(this);
  activate();
  return alloc_raw(bytes, "a tensor");
}

void CudaBackend::release(void* ptr) {
  if (!ptr) return;
  OpScope scope("release");
  OpGate gate(this);  // a free from another thread must not land in a capture
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != device_) cudaSetDevice(device_);
  free_raw(ptr);
}

void CudaBackend::upload(void* dst, const void* host_src, size_t bytes) {
  BYOL_CUDA_OP("upload");
  BYOL_CUDA_OP_WORK(OpWork{0, double(bytes)});
  refuse_in_capture("waits for the host");
  if (bytes == 0) return;
  BYOL_CHECK(dst != nullptr, "cuda: upload: dst is null (", bytes, " bytes)");
  BYOL_CHECK(host_src != nullptr, "cuda: upload: host_src is null (", bytes, " bytes)");
  std::lock_guard<std::mutex> lock(mutex_);
  std::lock_guard<std::mutex> staging_lock(upload_staging_.mutex);
  size_t offset = 0;
  while (offset < bytes) {
    const size_t n = std::min(kStagingChunk, bytes - offset);
    StagingRing::Slot& slot = upload_staging_.acquire(n);
    std::memcpy(slot.host, static_cast<const char*>(host_src) + offset, n);
    BYOL_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + offset, slot.host, n,
                                    cudaMemcpyHostToDevice, stream_));
    BYOL_CUDA_CHECK(cudaEventRecord(slot.done, stream_));
    offset += n;
  }
}

void CudaBackend::download(void* host_dst, const void* src, size_t bytes) {
  BYOL_CUDA_OP("download");
  BYOL_CUDA_OP_WORK(OpWork{0, double(bytes)});
  refuse_in_capture("waits for the host");
  if (bytes == 0) return;
  BYOL_CHECK(host_dst != nullptr, "cuda: download: host_dst is null (", bytes, " bytes)");
  BYOL_CHECK(src != nullptr, "cuda: download: src is null (", bytes, " bytes)");
  // The status word first, then the data, both into pinned memory, then a wait for an event
  // after the data's copy: the step's readback and the label check share one wait, and work
  // that other threads queue meanwhile (the next batch's augmentation) is not waited for, as
  // a stream synchronization would.
  wait_checking_status([&] {
    std::lock_guard<std::mutex> staging_lock(download_staging_.mutex);
    size_t offset = 0;
    while (offset < bytes) {
      const size_t n = std::min(kStagingChunk, bytes - offset);
      StagingRing::Slot& slot = download_staging_.acquire(n);
      BYOL_CUDA_CHECK(cudaMemcpyAsync(slot.host, static_cast<const char*>(src) + offset, n,
                                      cudaMemcpyDeviceToHost, stream_));
      BYOL_CUDA_CHECK(cudaEventRecord(slot.done, stream_));
      BYOL_CUDA_CHECK(cudaEventSynchronize(slot.done));
      std::memcpy(static_cast<char*>(host_dst) + offset, slot.host, n);
      offset += n;
    }
  });
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  BYOL_CUDA_OP("copy");
  BYOL_CUDA_OP_WORK(OpWork{0, 2.0 * double(bytes)});
  if (bytes == 0 || dst == src) return;
  BYOL_CHECK(dst != nullptr && src != nullptr, "cuda: copy: ", dst ? "src" : "dst", " is null (",
             bytes, " bytes)");
  BYOL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::fill(float* dst, float value, size_t n) {
  BYOL_CUDA_OP("fill");
  BYOL_CUDA_OP_WORK(float_passes(1, double(n)));
  if (n == 0) return;
  BYOL_CHECK(dst != nullptr, "cuda: fill: dst is null (", n, " floats)");
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (bits == 0)
    BYOL_CUDA_CHECK(cudaMemsetAsync(dst, 0, n * sizeof(float), stream_));
  else
    cuda::fill(dst, value, n, stream_);
}

void CudaBackend::synchronize() {
  BYOL_CUDA_OP("synchronize");
  refuse_in_capture("waits for the host");
  wait_checking_status([&] { BYOL_CUDA_CHECK(cudaStreamSynchronize(stream_)); });
}

// ---- profiling -----------------------------------------------------------------------------

void CudaBackend::range_push(const char* name) noexcept {
  nvtxRangePushA(name);
  try {
    op_timer_.push(name);
  } catch (...) {  // out of memory for a name: that range's ops count under the outer phase
  }
}

void CudaBackend::range_pop() noexcept {
  nvtxRangePop();
  op_timer_.pop();
}

// ---- op timing -----------------------------------------------------------------------------

// Pending timed ops at which an op's end checks which have completed (no wait), and beyond
// which it waits for them: bounds the events alive without syncing every step.
constexpr size_t kTimedOpsCheck = 4096, kTimedOpsMost = 65536;

OpEvents::OpEvents(CudaBackend* backend, const char* op) : op_(op) {
  if (!backend->op_timer_.on() || !nesting_.outermost() || backend->capturing_here()) return;
  start_ = backend->take_event();
  if (!start_) return;
  if (cudaEventRecord(start_, backend->stream()) != cudaSuccess) {
    (void)cudaGetLastError();
    std::lock_guard<std::mutex> lock(backend->events_mutex_);
    backend->free_events_.push_back(start_);
    return;
  }
  phase_ = backend->op_timer_.phase();
  backend_ = backend;
}

OpEvents::~OpEvents() {
  if (!backend_) return;
  cudaEvent_t end = backend_->take_event();
  bool recorded = end && cudaEventRecord(end, backend_->stream()) == cudaSuccess;
  if (!recorded) (void)cudaGetLastError();
  size_t pending = 0;
  {
    std::lock_guard<std::mutex> lock(backend_->events_mutex_);
    if (recorded) {
      backend_->timed_ops_.push_back({phase_, op_, start_, end, work_});
    } else {  // the op goes untimed
      backend_->free_events_.push_back(start_);
      if (end) backend_->free_events_.push_back(end);
    }
    pending = backend_->timed_ops_.size();
  }
  if (pending >= kTimedOpsCheck) backend_->resolve_op_events(pending >= kTimedOpsMost);
}

cudaEvent_t CudaBackend::take_event() {
  {
    std::lock_guard<std::mutex> lock(events_mutex_);
    if (!free_events_.empty()) {
      cudaEvent_t event = free_events_.back();
      free_events_.pop_back();
      return event;
    }
  }
  cudaEvent_t event = nullptr;
  if (cudaEventCreate(&event) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return event;
}

void CudaBackend::resolve_op_events(bool wait) noexcept {
  std::lock_guard<std::mutex> lock(events_mutex_);
  size_t done = 0;
  for (; done < timed_ops_.size(); ++done) {
    const TimedOp& t = timed_ops_[done];
    cudaError_t status = wait ? cudaEventSynchronize(t.end) : cudaEventQuery(t.end);
    if (status == cudaErrorNotReady) break;
    float ms = 0;
    if (status == cudaSuccess && cudaEventElapsedTime(&ms, t.start, t.end) == cudaSuccess) {
      try {
        op_timer_.add(t.phase, t.op, double(ms), t.work);
      } catch (...) {  // out of memory for a row: this op goes unfiled
      }
    }
    (void)cudaGetLastError();
    free_events_.push_back(t.start);
    free_events_.push_back(t.end);
  }
  timed_ops_.erase(timed_ops_.begin(), timed_ops_.begin() + static_cast<std::ptrdiff_t>(done));
}

bool CudaBackend::set_op_timing(bool on) {
  op_timer_.set(on);
  return true;
}

std::vector<OpTime> CudaBackend::op_times(bool reset) {
  // Not BYOL_CUDA_OP: this call is not an op to time.
  OpScope scope("op_times");
  OpGate gate(this);
  activate();
  refuse_in_capture("waits for the host");
  resolve_op_events(true);
  return op_timer_.rows(reset);
}

// cudaProfilerStart/Stop act on the calling thread's current context, hence activate().
bool CudaBackend::profiler_start() {
  BYOL_CUDA_OP("profiler_start");
  BYOL_CUDA_CHECK(cudaProfilerStart());
  return true;
}

bool CudaBackend::profiler_stop() {
  // Work enqueued inside the window finishes inside it: nsys then holds every kernel of the
  // captured steps, not only their launches.
  synchronize();
  BYOL_CUDA_OP("profiler_stop");
  BYOL_CUDA_CHECK(cudaProfilerStop());
  return true;
}

void CudaBackend::wait_checking_status(const std::function<void()>& wait) {
  // The word's copy is queued before `wait` so that one wait covers both.
  const bool fetched = status_may_be_set_.exchange(false);
  try {
    if (fetched)
      BYOL_CUDA_CHECK(cudaMemcpyAsync(host_status_, device_status_, sizeof(unsigned), cudaMemcpyDeviceToHost, stream_));
    wait();
  } catch (...) {
    if (fetched) status_may_be_set_ = true;  // the next check reads the word
    throw;
  }
  check_device_status(fetched);
}

void CudaBackend::check_device_status(bool fetched) {
  {
    std::lock_guard<std::mutex> lock(deferred_mutex_);
    if (!deferred_error_.empty()) {
      std::string message = std::move(deferred_error_);
      deferred_error_.clear();
      throw Error(message);
    }
  }
  if (!fetched) return;
  const unsigned bits = *host_status_;
  if (bits == 0) return;
  BYOL_CUDA_CHECK(cudaMemsetAsync(device_status_, 0, sizeof(unsigned), stream_));
  std::string where;
  if (bits & kStatusCrossEntropyForwardLabel) where += "cross_entropy_forward";
  if (bits & kStatusCrossEntropyBackwardLabel) where += where.empty() ? "cross_entropy_backward" : " and cross_entropy_backward";
  BYOL_FAIL("cuda: ", where, ": expected every label in [0, K) but found one outside "
            "(its loss/gradient was set to NaN; detected at the next synchronize/download)");
}

// ---- batch norm --------------------------------------------------------------------------

void CudaBackend::batchnorm_forward_train(float* out, float* save_mean, float* save_rstd,
                                          float* running_mean, float* running_var,
                                          const float* inp, const float* gamma, const float* beta,
                                          int M, int C, float momentum, float eps,
                                          const BnEpilogue& epilogue) {
  BYOL_CUDA_OP("batchnorm_forward_train");
  BYOL_CUDA_OP_WORK(batchnorm_forward_work(M, C, true, epilogue.residual != nullptr));
  BYOL_CHECK(M > 1, "cuda: batchnorm_forward_train: expected M > 1 rows (batch statistics) but received M = ", M);
  BYOL_CHECK(C > 0, "cuda: batchnorm_forward_train: expected C > 0 but received ", C);
  BYOL_CHECK(out && inp && save_mean && save_rstd && gamma && beta,
             "cuda: batchnorm_forward_train: out, inp, save_mean, save_rstd, gamma and beta must not be null");
  BYOL_CHECK((running_mean == nullptr) == (running_var == nullptr),
             "cuda: batchnorm_forward_train: expected running_mean and running_var both set or both null");
  BYOL_CHECK(eps > 0.0f && std::isfinite(eps), "cuda: batchnorm_forward_train: expected eps > 0 but received ", eps);
  BYOL_CHECK(momentum >= 0.0f && momentum <= 1.0f,
             "cuda: batchnorm_forward_train: expected momentum in [0, 1] but received ", momentum);
  const BatchNormSplit split = batchnorm_split(M, C, props_.multiProcessorCount);
  DeviceBuffer scratch(this, split.forward_scratch_floats(C) * sizeof(float));
  cuda::batchnorm_forward_train(out, save_mean, save_rstd, running_mean, running_var, scratch.f32(),
                                inp, gamma, beta, M, C, momentum, eps, epilogue.residual, epilogue.relu,
                                split, stream_);
}

void CudaBackend::batchnorm_forward_eval(float* out, const float* inp, const float* gamma,
                                         const float* beta, const float* running_mean,
                                         const float* running_var, int M, int C, float eps,
                                         const BnEpilogue& epilogue) {
  BYOL_CUDA_OP("batchnorm_forward_eval");
  BYOL_CUDA_OP_WORK(batchnorm_forward_work(M, C, false, epilogue.residual != nullptr));
  BYOL_CHECK(M > 0, "cuda: batchnorm_forward_eval: expected M > 0 but received ", M);
  BYOL_CHECK(C > 0, "cuda: batchnorm_forward_eval: expected C > 0 but received ", C);
  BYOL_CHECK(out && inp && gamma && beta && running_mean && running_var,
             "cuda: batchnorm_forward_eval: out, inp, gamma, beta, running_mean and running_var must not be null");
  BYOL_CHECK(eps > 0.0f && std::isfinite(eps), "cuda: batchnorm_forward_eval: expected eps > 0 but received ", eps);
  cuda::batchnorm_forward_eval(out, inp, gamma, beta, running_mean, running_var, M, C, eps, epilogue.residual,
                               epilogue.relu, stream_);
}

void CudaBackend::batchnorm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                                     const float* inp, const float* save_mean,
                                     const float* save_rstd, const float* gamma, int M, int C,
                                     bool accumulate, const float* relu_out) {
  BYOL_CUDA_OP("batchnorm_backward");
  BYOL_CUDA_OP_WORK(batchnorm_backward_work(M, C, relu_out != nullptr));
  BYOL_CHECK(M > 1, "cuda: batchnorm_backward: expected M > 1 rows but received M = ", M);
  BYOL_CHECK(C > 0, "cuda: batchnorm_backward: expected C > 0 but received ", C);
  BYOL_CHECK(dinp && dgamma && dbeta && dout && inp && save_mean && save_rstd && gamma,
             "cuda: batchnorm_backward: no pointer argument may be null");
  const BatchNormSplit split = batchnorm_split(M, C, props_.multiProcessorCount);
  DeviceBuffer scratch(this, split.backward_scratch_floats(C) * sizeof(float));
  cuda::batchnorm_backward(dinp, dgamma, dbeta, scratch.f32(), dout, inp, save_mean, save_rstd,
                           gamma, relu_out, M, C, accumulate, split, stream_);
}

// ---- elementwise -------------------------------------------------------------------------

void CudaBackend::relu_forward(float* out, const float* inp, size_t n) {
  BYOL_CUDA_OP("relu_forward");
  BYOL_CUDA_OP_WORK(float_passes(2, double(n)));
  BYOL_CHECK(n == 0 || (out && inp), "cuda: relu_forward: out and inp must not be null");
  cuda::relu_forward(out, inp, n, stream_);
}

void CudaBackend::relu_backward(float* dinp, const float* dout, const float* out, size_t n) {
  BYOL_CUDA_OP("relu_backward");
  BYOL_CUDA_OP_WORK(float_passes(3, double(n)));
  BYOL_CHECK(n == 0 || (dinp && dout && out), "cuda: relu_backward: dinp, dout and out must not be null");
  cuda::relu_backward(dinp, dout, out, n, stream_);
}

void CudaBackend::add(float* out, const float* a, const float* b, size_t n) {
  BYOL_CUDA_OP("add");
  BYOL_CUDA_OP_WORK(float_passes(3, double(n)));
  BYOL_CHECK(n == 0 || (out && a && b), "cuda: add: out, a and b must not be null");
  cuda::add(out, a, b, n, stream_);
}

void CudaBackend::accumulate(float* dst, const float* src, size_t n) {
  BYOL_CUDA_OP("accumulate");
  BYOL_CUDA_OP_WORK(float_passes(3, double(n)));
  BYOL_CHECK(n == 0 || (dst && src), "cuda: accumulate: dst and src must not be null");
  cuda::accumulate(dst, src, n, stream_);
}

void CudaBackend::ema_update(float* target, const float* online, size_t n, float tau, const float* tau_device) {
  BYOL_CUDA_OP("ema_update");
  BYOL_CUDA_OP_WORK(float_passes(3, double(n)));
  if (!tau_device)
    BYOL_CHECK(tau >= 0.0f && tau <= 1.0f, "cuda: ema_update: expected tau in [0, 1] but received ", tau);
  BYOL_CHECK(n == 0 || (target && online), "cuda: ema_update: target and online must not be null");
  cuda::ema_update(target, online, n, tau, tau_device, stream_);
}

// ---- pooling -----------------------------------------------------------------------------

namespace {
void check_pool_shape(const char* op, const PoolShape& s) {
  BYOL_CHECK(s.N > 0 && s.H > 0 && s.W > 0 && s.C > 0, "cuda: ", op,
             ": expected N, H, W, C > 0 but received N=", s.N, " H=", s.H, " W=", s.W, " C=", s.C);
  BYOL_CHECK(s.kernel > 0 && s.stride > 0 && s.pad >= 0, "cuda: ", op,
             ": expected kernel > 0, stride > 0, pad >= 0 but received kernel=", s.kernel,
             " stride=", s.stride, " pad=", s.pad);
  BYOL_CHECK(2 * s.pad <= s.kernel, "cuda: ", op, ": expected pad <= kernel/2 (every window must hold a pixel) but received pad=",
             s.pad, " kernel=", s.kernel);
  BYOL_CHECK(s.P() > 0 && s.Q() > 0, "cuda: ", op, ": the ", s.kernel, "x", s.kernel,
             " window does not fit the ", s.H, "x", s.W, " input (pad ", s.pad, ")");
  BYOL_CHECK(int64_t(s.H) * s.W <= INT32_MAX, "cuda: ", op, ": H*W = ", int64_t(s.H) * s.W,
             " exceeds the int32 argmax range");
}
}  // namespace

void CudaBackend::maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const PoolShape& s) {
  BYOL_CUDA_OP("maxpool2d_forward");
  check_pool_shape("maxpool2d_forward", s);
  BYOL_CHECK(out && argmax && inp, "cuda: maxpool2d_forward: out, argmax and inp must not be null");
  cuda::maxpool2d_forward(out, argmax, inp, s.N, s.H, s.W, s.C, s.kernel, s.stride, s.pad, s.P(),
                          s.Q(), stream_);
}

void CudaBackend::maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax,
                                     const PoolShape& s) {
  BYOL_CUDA_OP("maxpool2d_backward");
  check_pool_shape("maxpool2d_backward", s);
  BYOL_CHECK(dinp && dout && argmax, "cuda: maxpool2d_backward: dinp, dout and argmax must not be null");
  cuda::maxpool2d_backward(dinp, dout, argmax, s.N, s.H, s.W, s.C, s.kernel, s.stride, s.pad,
                           s.P(), s.Q(), stream_);
}

void CudaBackend::avgpool_forward(float* out, const float* inp, int N, int HW, int C) {
  BYOL_CUDA_OP("avgpool_forward");
  BYOL_CHECK(N > 0 && HW > 0 && C > 0, "cuda: avgpool_forward: expected N, HW, C > 0 but received N=",
             N, " HW=", HW, " C=", C);
  BYOL_CHECK(out && inp, "cuda: avgpool_forward: out and inp must not be null");
  cuda::reduce_rows(out, inp, N, HW, C, 1.0f / float(HW), false, stream_);
}

void CudaBackend::avgpool_backward(float* dinp, const float* dout, int N, int HW, int C) {
  BYOL_CUDA_OP("avgpool_backward");
  BYOL_CHECK(N > 0 && HW > 0 && C > 0, "cuda: avgpool_backward: expected N, HW, C > 0 but received N=",
             N, " HW=", HW, " C=", C);
  BYOL_CHECK(dinp && dout, "cuda: avgpool_backward: dinp and dout must not be null");
  cuda::avgpool_backward(dinp, dout, N, HW, C, stream_);
}

// ---- losses ------------------------------------------------------------------------------

void CudaBackend::byol_loss_forward(float* loss, const float* p, const float* z, int B, int D,
                                    bool accumulate) {
  BYOL_CUDA_OP("byol_loss_forward");
  BYOL_CHECK(B > 0 && D > 0, "cuda: byol_loss_forward: expected B, D > 0 but received B=", B, " D=", D);
  BYOL_CHECK(loss && p && z, "cuda: byol_loss_forward: loss, p and z must not be null");
  DeviceBuffer rows(this, size_t(B) * sizeof(float));
  cuda::byol_loss_forward(loss, rows.f32(), p, z, B, D, accumulate, stream_);
}

void CudaBackend::byol_loss_backward(float* dp, const float* p, const float* z, float dloss, int B,
                                     int D) {
  BYOL_CUDA_OP("byol_loss_backward");
  BYOL_CHECK(B > 0 && D > 0, "cuda: byol_loss_backward: expected B, D > 0 but received B=", B, " D=", D);
  BYOL_CHECK(dp && p && z, "cuda: byol_loss_backward: dp, p and z must not be null");
  cuda::byol_loss_backward(dp, p, z, dloss, B, D, stream_);
}

void CudaBackend::cross_entropy_forward(float* loss, float* probs, const float* logits,
                                        const int32_t* labels, int B, int K) {
  BYOL_CUDA_OP("cross_entropy_forward");
  BYOL_CHECK(B > 0 && K > 0, "cuda: cross_entropy_forward: expected B, K > 0 but received B=", B, " K=", K);
  BYOL_CHECK(loss && probs && logits && labels,
             "cuda: cross_entropy_forward: loss, probs, logits and labels must not be null");
  DeviceBuffer rows(this, size_t(B) * sizeof(float));
  note_status_kernel();
  cuda::cross_entropy_forward(loss, probs, rows.f32(), device_status_, logits, labels, B, K, stream_);
}

void CudaBackend::cross_entropy_backward(float* dlogits, const float* probs, const int32_t* labels,
                                         float dloss, int B, int K) {
  BYOL_CUDA_OP("cross_entropy_backward");
  BYOL_CHECK(B > 0 && K > 0, "cuda: cross_entropy_backward: expected B, K > 0 but received B=", B, " K=", K);
  BYOL_CHECK(dlogits && probs && labels,
             "cuda: cross_entropy_backward: dlogits, probs and labels must not be null");
  note_status_kernel();
  cuda::cross_entropy_backward(dlogits, device_status_, probs, labels, dloss, B, K, stream_);
}

}  // namespace cuda
}  // namespace byol
