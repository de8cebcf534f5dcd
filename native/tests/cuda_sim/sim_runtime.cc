// sim_runtime.cc: the CUDA runtime of the simulated GPU (cuda_runtime.h of this folder), so
// libbyol_cuda.so's own host code (native/cuda/*.cc) runs on a machine without a GPU.
// What it models, and checks the way the real runtime does:
//   - device memory: host memory between guard pages, NaN-filled (emu/guarded_heap.h), under
//     a size limit (cudaErrorMemoryAllocation past it); copies and memsets check that their
//     device side lies inside one live allocation and their host side outside every one;
//   - one device, its properties, driver and runtime versions, memory pools (settable:
//     BYOL_SIM_* below, so the backend's error paths can be driven);
//   - streams: asynchronous, as on a GPU: work (kernel launches through the emulator's submit
//     hook, copies, memsets, frees, cuDNN and cuBLAS calls, graph launches) queues on its
//     stream and runs, in order and under one lock, only when the host waits for it
//     (cudaStreamSynchronize, cudaEventSynchronize; cudaEventQuery runs it and still answers
//     cudaErrorNotReady once; cudaFree and cudaFreeHost wait for every stream). So a host that
//     reads pinned memory before its copy ran, or overwrites a pinned buffer a queued copy
//     still reads, gets wrong numbers here as on a GPU. Copies from or to pageable host memory
//     behave as CUDA's do: the source is taken at the call; a copy into pageable memory waits
//     for the stream. BYOL_SIM_SYNC=1 runs all work at once instead;
//   - graph capture: work on a capturing stream (kernel launches through the emulator's
//     submit hook, copies, memsets, cuDNN and cuBLAS calls) is recorded with its arguments
//     and replayed by cudaGraphLaunch; allocations made inside a capture keep their address
//     for the graph's lifetime; calls that would synchronize or allocate outside the pool
//     from the capturing thread (ThreadLocal/Global mode) fail with
//     cudaErrorStreamCaptureUnsupported and invalidate the capture, whose end then reports
//     cudaErrorStreamCaptureInvalidated; a free inside a capture of memory from before it
//     frees at every launch, which the second launch reports;
//   - events (host clock), NVTX range depth, the profiler window.
// Settings (environment, read once): BYOL_SIM_DEVICES (1), BYOL_SIM_DRIVER (13000: CUDA
// 13.0; 0 = no driver), BYOL_SIM_MEMORY_MB (16384), BYOL_SIM_SMS (8), BYOL_SIM_POOLS (1),
// BYOL_SIM_SYNC (0), BYOL_SIM_CC (9.0: the compute capability; below 8.0 the kernels' image
// probe fails, as the real plugin's sm_80/sm_90 code and compute_90 PTX would).
// Not modelled: concurrency between streams, timing, anything of the hardware.
#include "cuda_runtime.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <set>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cuda_profiler_api.h"
#include "emu.h"
#include "guarded_heap.h"
#include "nvtx3/nvToolsExt.h"

namespace {

constexpr int kRuntimeVersion = 13000;

struct Settings {
  int devices = 1, driver = 13000, sms = 8, cc_major = 9, cc_minor = 0;
  bool pools = true, sync = false;
  size_t memory = size_t(16384) << 20;
};

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || x < 0) {
    std::fprintf(stderr, "cuda (simulated): ignoring %s='%s' (expected a whole number >= 0)\n", name, v);
    return fallback;
  }
  return x;
}

const Settings& settings() {
  static const Settings s = [] {
    Settings r;
    r.devices = int(env_long("BYOL_SIM_DEVICES", 1));
    r.driver = int(env_long("BYOL_SIM_DRIVER", 13000));
    r.sms = std::max(1, int(env_long("BYOL_SIM_SMS", 8)));
    r.pools = env_long("BYOL_SIM_POOLS", 1) != 0;
    r.sync = env_long("BYOL_SIM_SYNC", 0) != 0;
    if (const char* cc = std::getenv("BYOL_SIM_CC"); cc && *cc) {
      int major = 0, minor = 0;
      if (std::sscanf(cc, "%d.%d", &major, &minor) == 2 && major > 0 && minor >= 0 && minor < 10) {
        r.cc_major = major;
        r.cc_minor = minor;
      } else {
        std::fprintf(stderr, "cuda (simulated): ignoring BYOL_SIM_CC='%s' (expected a compute capability like 8.6)\n", cc);
      }
    }
    r.memory = size_t(env_long("BYOL_SIM_MEMORY_MB", 16384)) << 20;
    return r;
  }();
  return s;
}

using Work = std::function<void()>;

// Allocations made inside a capture: they live as long as the graph or an exec graph of it.
struct Owned {
  std::vector<void*> ptrs;
  ~Owned();
};

}  // namespace

struct CUgraph_st {
  std::vector<Work> nodes;
  std::shared_ptr<Owned> owned = std::make_shared<Owned>();
};

struct CUgraphExec_st {
  // Shared with its queued launches: CUDA keeps an exec graph alive until its launches ran.
  std::shared_ptr<const std::vector<Work>> nodes;
  std::shared_ptr<Owned> owned;
};

struct CUstream_st {
  std::deque<Work> queue;          // enqueued, not yet run
  uint64_t enqueued = 0, done = 0;  // work items ever queued / run
  CUgraph_st* graph = nullptr;  // non-null while capturing
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id owner;
  std::vector<void*> capture_allocs;  // allocated inside the running capture
};

struct CUevent_st {
  unsigned flags = 0;
  CUstream_st* stream = nullptr;  // where it was last recorded (null: complete)
  uint64_t seq = 0;               // complete once stream->done reaches it
  bool recorded = false;
  std::chrono::steady_clock::time_point time;
};

struct CUmemPoolHandle_st {
  uint64_t threshold = 0;
  size_t used = 0, high = 0;
};

namespace {

// One lock over all state and all device work (a stream's work never interleaves).
std::recursive_mutex& mutex() {
  static std::recursive_mutex m;
  return m;
}

byol_emu::GuardedHeap& heap() {
  static byol_emu::GuardedHeap* h = new byol_emu::GuardedHeap("cuda (simulated)");  // outlives static dtors
  return *h;
}

std::unordered_map<void*, size_t>& pinned() {
  static auto* m = new std::unordered_map<void*, size_t>();
  return *m;
}

// Pool allocations: pointer -> (pool, bytes).
std::unordered_map<void*, std::pair<CUmemPoolHandle_st*, size_t>>& pool_allocs() {
  static auto* m = new std::unordered_map<void*, std::pair<CUmemPoolHandle_st*, size_t>>();
  return *m;
}

thread_local int t_device = 0;
thread_local CUstream_st* t_capture = nullptr;  // the stream this thread captures (not Relaxed)
thread_local int t_nvtx_depth = 0;

cudaError_t fail(cudaError_t status) {
  byol_emu::set_last_error(status);
  return status;
}

// A call the capturing thread may not make (ThreadLocal/Global mode): fails and invalidates.
bool refused_in_capture() {
  CUstream_st* s = t_capture;
  if (!s || !s->graph) return false;
  s->invalidated = true;
  return true;
}

std::set<CUstream_st*>& streams() {
  static auto* s = new std::set<CUstream_st*>();
  return *s;
}

// Runs `stream`'s queued work until `seq` items have run (all of it by default). Under the lock.
void run_until(CUstream_st* stream, uint64_t seq = UINT64_MAX) {
  while (stream->done < seq && !stream->queue.empty()) {
    Work work = std::move(stream->queue.front());
    stream->queue.pop_front();
    ++stream->done;
    work();
  }
}

void run_all_streams() {
  for (CUstream_st* s : streams()) run_until(s);
}

bool event_complete(const CUevent_st* e) { return !e->stream || e->stream->done >= e->seq; }

bool any_pending() {
  for (const CUstream_st* s : streams())
    if (!s->queue.empty()) return true;
  return false;
}

// Times the host blocked on queued GPU work (byol_sim_blocking_waits below): a synchronization
// with work still pending, or a copy into pageable memory (which waits for its stream).
std::atomic<uint64_t> g_blocking_waits{0};
std::atomic<uint64_t> g_work_items{0};
std::atomic<uint64_t> g_legacy_items{0};  // work on the legacy (null) stream
void note_wait(bool pending) {
  if (pending) ++g_blocking_waits;
}

// BYOL_SIM_STATS=1: one line at exit with the counts (what a process asked of the GPU).
const bool g_stats_at_exit = [] {
  if (env_long("BYOL_SIM_STATS", 0) != 0)
    std::atexit([] {
      std::fprintf(stderr,
                   "cuda (simulated): %llu work items (%llu on the legacy stream), %llu blocking host waits, %zu bytes "
                   "of device memory still allocated, %zu pinned host allocations\n",
                   static_cast<unsigned long long>(g_work_items.load() + g_legacy_items.load()),
                   static_cast<unsigned long long>(g_legacy_items.load()),
                   static_cast<unsigned long long>(g_blocking_waits.load()), heap().live_bytes(), pinned().size());
    });
  return true;
}();

bool is_pinned(const void* ptr, size_t bytes) {
  const char* p = static_cast<const char*>(ptr);
  for (const auto& [base, size] : pinned()) {
    const char* b = static_cast<const char*>(base);
    if (p >= b && size_t(p - b) + bytes <= size) return true;
  }
  return false;
}

void release_device(void* ptr) {
  auto it = pool_allocs().find(ptr);
  if (it != pool_allocs().end()) {
    it->second.first->used -= it->second.second;
    pool_allocs().erase(it);
  }
  heap().try_release(ptr);
}

Owned::~Owned() {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  for (void* p : ptrs) release_device(p);
}

void* allocate(size_t bytes) {
  if (heap().live_bytes() + bytes > settings().memory) return nullptr;
  return heap().alloc(bytes);
}

// Queues `work` on `stream` (not the legacy stream, and not under BYOL_SIM_SYNC); false when
// the caller must run it now. Under the lock.
bool defer(cudaStream_t stream, std::function<void()>& work) {
  ++(stream ? g_work_items : g_legacy_items);
  if (!stream || settings().sync) return false;
  stream->queue.push_back(std::move(work));
  ++stream->enqueued;
  return true;
}

// The emulator's kernel launches come here (emu.h, SubmitHook): recorded while their stream
// captures, otherwise run now under the device lock.
bool submit_launch(cudaStream_t stream, std::function<void()>& work) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (stream && stream->graph) {
    if (!stream->invalidated) stream->graph->nodes.push_back(std::move(work));
    return true;
  }
  if (!defer(stream, work)) work();
  return true;
}

const bool g_hook_installed = [] {
  byol_emu::set_submit_hook(submit_launch);
  // The real plugin holds sm_80 and sm_90 code and compute_90 PTX: older GPUs cannot run it.
  if (settings().cc_major < 8) byol_emu::set_kernel_image_status(cudaErrorNoKernelImageForDevice);
  return true;
}();

}  // namespace

namespace byol_sim {

cudaError_t enqueue(cudaStream_t stream, std::function<void()> work) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (stream && stream->graph) {
    if (stream->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
    stream->graph->nodes.push_back(std::move(work));
    return cudaSuccess;
  }
  if (!defer(stream, work)) work();
  return cudaSuccess;
}

bool is_device(const void* ptr, size_t bytes) { return ptr && heap().owns(ptr, bytes); }

bool capturing(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  return stream && stream->graph;
}

void invalidate_capture(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (stream && stream->graph) stream->invalidated = true;
}

float round_tf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u) return x;  // inf, NaN
  bits += 0xfffu + ((bits >> 13) & 1u);                // to nearest, ties to even
  bits &= ~0x1fffu;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

}  // namespace byol_sim

// ---- device ------------------------------------------------------------------------------

cudaError_t cudaDriverGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue);
  *version = settings().driver;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue);
  *version = kRuntimeVersion;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 0;
  if (settings().driver < kRuntimeVersion) return fail(cudaErrorInsufficientDriver);
  if (settings().devices == 0) return fail(cudaErrorNoDevice);
  *count = settings().devices;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* props, int device) {
  if (!props) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= settings().devices) return fail(cudaErrorInvalidDevice);
  *props = cudaDeviceProp{};
  std::snprintf(props->name, sizeof props->name, "byol simulated GPU (host CPU)");
  props->totalGlobalMem = settings().memory;
  props->major = settings().cc_major;
  props->minor = settings().cc_minor;
  props->multiProcessorCount = settings().sms;
  props->maxThreadsPerBlock = 1024;
  props->warpSize = 32;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= settings().devices) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = settings().sms; return cudaSuccess;
    case cudaDevAttrMemoryPoolsSupported: *value = settings().pools ? 1 : 0; return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue);
}

cudaError_t cudaSetDevice(int device) {
  if (settings().driver < kRuntimeVersion) return fail(cudaErrorInsufficientDriver);
  if (device < 0 || device >= settings().devices) return fail(cudaErrorInvalidDevice);
  t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = t_device;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  const size_t live = heap().live_bytes(), total = settings().memory;
  if (free_bytes) *free_bytes = live < total ? total - live : 0;
  if (total_bytes) *total_bytes = total;
  return cudaSuccess;
}

// ---- memory ------------------------------------------------------------------------------

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  *ptr = nullptr;
  if (refused_in_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  if (bytes == 0) return cudaSuccess;
  *ptr = allocate(bytes);
  return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void* ptr) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (refused_in_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  if (!ptr) return cudaSuccess;
  if (!heap().owns(ptr, 0)) return fail(cudaErrorInvalidValue);
  note_wait(any_pending());
  run_all_streams();  // cudaFree synchronizes the device
  release_device(ptr);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned flags) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (refused_in_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  *ptr = std::malloc(bytes ? bytes : 1);
  if (!*ptr) return fail(cudaErrorMemoryAllocation);
  pinned()[*ptr] = bytes;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (refused_in_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  if (!ptr) return cudaSuccess;
  if (!pinned().count(ptr)) return fail(cudaErrorInvalidValue);
  note_wait(any_pending());
  run_all_streams();  // cudaFreeHost synchronizes the device
  pinned().erase(ptr);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemPoolCreate(cudaMemPool_t* pool, const cudaMemPoolProps* props) {
  if (!pool || !props || props->location.type != cudaMemLocationTypeDevice || props->location.id < 0 ||
      props->location.id >= settings().devices || props->allocType != cudaMemAllocationTypePinned)
    return fail(cudaErrorInvalidValue);
  if (!settings().pools) return fail(cudaErrorInvalidValue);
  *pool = new CUmemPoolHandle_st();
  return cudaSuccess;
}

cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool) {
  if (!pool) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  run_all_streams();
  // The runtime frees what is still allocated from a destroyed pool; the simulator does too,
  // and counts it as a leak worth a line.
  size_t leaked = 0;
  for (auto it = pool_allocs().begin(); it != pool_allocs().end();) {
    if (it->second.first == pool) {
      leaked += it->second.second;
      heap().try_release(it->first);
      it = pool_allocs().erase(it);
    } else {
      ++it;
    }
  }
  if (leaked) std::fprintf(stderr, "cuda (simulated): memory pool destroyed with %zu bytes still allocated\n", leaked);
  delete pool;
  return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  if (!pool || !value) return fail(cudaErrorInvalidValue);
  if (attr != cudaMemPoolAttrReleaseThreshold) return fail(cudaErrorInvalidValue);
  std::memcpy(&pool->threshold, value, sizeof(uint64_t));
  return cudaSuccess;
}

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  if (!pool || !value) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  uint64_t v = 0;
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold: v = pool->threshold; break;
    case cudaMemPoolAttrReservedMemCurrent:
    case cudaMemPoolAttrUsedMemCurrent: v = pool->used; break;
    case cudaMemPoolAttrReservedMemHigh:
    case cudaMemPoolAttrUsedMemHigh: v = pool->high; break;
    default: return fail(cudaErrorInvalidValue);
  }
  std::memcpy(value, &v, sizeof v);
  return cudaSuccess;
}

cudaError_t cudaMallocFromPoolAsync(void** ptr, size_t bytes, cudaMemPool_t pool, cudaStream_t stream) {
  if (!ptr || !pool) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  *ptr = nullptr;
  if (stream && stream->graph && stream->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  if (bytes == 0) return fail(cudaErrorInvalidValue);
  void* p = allocate(bytes);
  if (!p) return fail(cudaErrorMemoryAllocation);
  pool_allocs()[p] = {pool, bytes};
  pool->used += bytes;
  pool->high = std::max(pool->high, pool->used);
  if (stream && stream->graph) stream->capture_allocs.push_back(p);
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (!ptr) return cudaSuccess;
  if (!heap().owns(ptr, 0)) return fail(cudaErrorInvalidValue);
  if (stream && stream->graph) {
    if (stream->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
    auto& allocs = stream->capture_allocs;
    auto it = std::find(allocs.begin(), allocs.end(), ptr);
    if (it != allocs.end()) {  // the graph's own allocation: lives as long as the graph
      allocs.erase(it);
      stream->graph->owned->ptrs.push_back(ptr);
      return cudaSuccess;
    }
    // Memory from before the capture: the graph frees it at every launch.
    stream->graph->nodes.push_back([ptr] {
      if (!heap().owns(ptr, 0)) {
        std::fprintf(stderr, "cuda (simulated): a graph launch frees %p, which is not allocated (a free node "
                             "recorded for memory from before the capture frees it again at every launch)\n", ptr);
        byol_emu::set_last_error(cudaErrorIllegalAddress);
        return;
      }
      release_device(ptr);
    });
    return cudaSuccess;
  }
  return byol_sim::enqueue(stream, [ptr] { release_device(ptr); });  // stream-ordered
}

namespace {
const char* kind_name(cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault: return "cudaMemcpyDefault";
  }
  return "an unknown kind";
}
}  // namespace

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return fail(cudaErrorInvalidValue);
  const bool dst_device = heap().owns(dst, bytes), src_device = heap().owns(src, bytes);
  const bool dst_any = heap().owns(dst, 1), src_any = heap().owns(src, 1);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_device && !src_any; break;
    case cudaMemcpyDeviceToHost: ok = src_device && !dst_any; break;
    case cudaMemcpyDeviceToDevice: ok = dst_device && src_device; break;
    case cudaMemcpyHostToHost: ok = !dst_any && !src_any; break;
    case cudaMemcpyDefault: ok = (dst_device || !dst_any) && (src_device || !src_any); break;
    default: ok = false;
  }
  if (!ok) {
    std::fprintf(stderr,
                 "cuda (simulated): cudaMemcpyAsync of %zu bytes as %s from %p (%s) to %p (%s)\n", bytes,
                 kind_name(kind), src, src_device ? "device" : src_any ? "past the end of a device allocation" : "host",
                 dst, dst_device ? "device" : dst_any ? "past the end of a device allocation" : "host");
    return fail(cudaErrorInvalidValue);
  }
  std::lock_guard<std::recursive_mutex> lock(mutex());
  const bool capturing = stream && stream->graph;
  if (!capturing && !src_device && !is_pinned(src, bytes)) {
    // From pageable memory: CUDA stages the source before returning, so the caller may reuse
    // it at once; the device write keeps its place in the stream.
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + bytes);
    return byol_sim::enqueue(stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  }
  if (!capturing && !dst_device && !is_pinned(dst, bytes)) {
    // Into pageable memory: returns once the copy is done (the stream's earlier work first).
    note_wait(true);
    if (stream) run_until(stream);
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
  }
  return byol_sim::enqueue(stream, [dst, src, bytes] { std::memcpy(dst, src, bytes); });
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!heap().owns(dst, bytes)) return fail(cudaErrorInvalidValue);
  return byol_sim::enqueue(stream, [dst, value, bytes] { std::memset(dst, value, bytes); });
}

// ---- streams and events ------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  if (!stream) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  *stream = new CUstream_st();  // flags: every stream here is as cudaStreamNonBlocking
  streams().insert(*stream);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (!stream) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (stream->graph) return fail(cudaErrorStreamCaptureUnsupported);
  run_until(stream);  // work already queued still runs
  streams().erase(stream);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (stream && stream->graph) {
    stream->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (refused_in_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  note_wait(stream ? !stream->queue.empty() : any_pending());
  if (stream)
    run_until(stream);
  else
    run_all_streams();  // the legacy stream waits for the others (a simplification)
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  if (!event) return fail(cudaErrorInvalidValue);
  *event = new CUevent_st();
  (*event)->flags = flags;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  const cudaError_t status = byol_sim::enqueue(stream, [event] {
    event->recorded = true;
    event->time = std::chrono::steady_clock::now();
  });
  if (status == cudaSuccess && stream && !stream->graph) {
    event->stream = stream->queue.empty() ? nullptr : stream;  // empty: it ran already
    event->seq = stream->enqueued;
  }
  return status;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (refused_in_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  if (event_complete(event)) return cudaSuccess;
  // Not done yet: the device makes progress meanwhile (the work runs now), but this answer
  // says what a GPU could say at this moment.
  run_until(event->stream, event->seq);
  return cudaErrorNotReady;  // not an error: the last error stays as it was
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (refused_in_capture()) return fail(cudaErrorStreamCaptureUnsupported);
  note_wait(!event_complete(event));
  if (!event_complete(event)) run_until(event->stream, event->seq);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms || !start || !end) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (!event_complete(start) || !event_complete(end)) return cudaErrorNotReady;
  if ((start->flags | end->flags) & cudaEventDisableTiming) return fail(cudaErrorInvalidResourceHandle);
  if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

// ---- graphs ------------------------------------------------------------------------------

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (!stream) return fail(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot capture
  if (stream->graph || t_capture) return fail(cudaErrorInvalidValue);
  stream->graph = new CUgraph_st();
  stream->invalidated = false;
  stream->mode = mode;
  stream->owner = std::this_thread::get_id();
  stream->capture_allocs.clear();
  if (mode != cudaStreamCaptureModeRelaxed) t_capture = stream;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (!graph) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  *graph = nullptr;
  if (!stream || !stream->graph) return fail(cudaErrorInvalidValue);
  if (stream->mode != cudaStreamCaptureModeRelaxed && stream->owner != std::this_thread::get_id())
    return fail(cudaErrorStreamCaptureWrongThread);
  CUgraph_st* g = stream->graph;
  stream->graph = nullptr;
  if (t_capture == stream) t_capture = nullptr;
  // Allocations not freed inside the capture stay allocated after a launch (the caller's to
  // free); here they are the graph's, freed with it.
  for (void* p : stream->capture_allocs) g->owned->ptrs.push_back(p);
  stream->capture_allocs.clear();
  if (stream->invalidated) {
    stream->invalidated = false;
    delete g;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  if (!exec || !graph || flags != 0) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  *exec = new CUgraphExec_st{std::make_shared<const std::vector<Work>>(graph->nodes), graph->owned};
  return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* count) {
  if (!graph || !count) return fail(cudaErrorInvalidValue);
  if (nodes) return fail(cudaErrorInvalidValue);  // node handles are not modelled
  *count = graph->nodes.size();
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(mutex());
  if (stream && stream->graph) return fail(cudaErrorStreamCaptureUnsupported);
  // The exec graph may be destroyed before this launch runs: it holds the nodes and memory.
  return byol_sim::enqueue(stream, [nodes = exec->nodes, owned = exec->owned] {
    for (const Work& node : *nodes) node();
  });
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  std::lock_guard<std::recursive_mutex> lock(mutex());
  delete graph;
  return cudaSuccess;
}

// ---- profiling ---------------------------------------------------------------------------

cudaError_t cudaProfilerStart() { return cudaSuccess; }
cudaError_t cudaProfilerStop() { return cudaSuccess; }

int nvtxRangePushA(const char*) { return t_nvtx_depth++; }

int nvtxRangePop() {
  if (t_nvtx_depth == 0) {
    std::fprintf(stderr, "cuda (simulated): nvtxRangePop without a pushed range on this thread\n");
    return -1;
  }
  return --t_nvtx_depth;
}

// The simulator's one export besides the runtime: how often the host has blocked on queued GPU
// work so far (tests look it up with dlsym to check that a step waits only for its loss).
extern "C" __attribute__((visibility("default"))) uint64_t byol_sim_blocking_waits() {
  return g_blocking_waits.load();
}
