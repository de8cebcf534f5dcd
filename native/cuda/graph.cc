// graph.cc: CUDA graph capture of the backend's stream (Backend::begin_capture/end_capture)
// and the op gate that keeps other threads' work out of a capture.
// Contract (backend.h): between begin_capture and end_capture the capturing thread's ops are
// recorded, not run; ops of other threads wait at their OpGate until the capture ends. A graph
// replays its ops with the pointers and arguments they were recorded with, so everything that
// changes between launches must live in device memory (the model's step scalars and inputs).
// A graph must not outlive its backend (like a Tensor). Graphs keep the optimizer segment
// tables they read pinned in the backend's cache.
#include <algorithm>
#include <exception>
#include <sstream>

#include "cuda_backend.h"

namespace byol {
namespace cuda {
namespace {

// The backend whose gate this thread holds (shared, through an op) or owns (a capture).
thread_local const CudaBackend* t_gate_holder = nullptr;

std::string error_text(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
}

}  // namespace

// ---- OpGate ----------------------------------------------------------------------------------

OpGate::OpGate(const CudaBackend* backend)
    : backend_(backend), previous_(t_gate_holder), uncaught_(std::uncaught_exceptions()) {
  if (t_gate_holder == backend) return;  // nested op, or the capturing thread itself
  // A capture waiting for the gate goes first: std::shared_mutex may prefer readers, and a
  // steady stream of ops from other threads would otherwise starve it.
  if (backend->capture_pending_.load(std::memory_order_acquire)) {
    std::unique_lock<std::mutex> lock(backend->capture_wait_mutex_);
    backend->capture_wait_cv_.wait(lock, [&] { return !backend->capture_pending_.load(std::memory_order_acquire); });
  }
  backend->capture_gate_.lock_shared();
  held_ = true;
  t_gate_holder = backend;
}

OpGate::~OpGate() {
  // An op that throws inside a capture leaves a partial recording: the capture must fail.
  if (std::uncaught_exceptions() > uncaught_ && backend_->capturing_here()) {
    auto* self = const_cast<CudaBackend*>(backend_);
    if (self->capture_broken_.empty())
      self->capture_broken_ = std::string("cuda: ") + current_op() + " threw inside the capture";
  }
  if (!held_) return;
  t_gate_holder = previous_;
  backend_->capture_gate_.unlock_shared();
}

// ---- CudaGraph -------------------------------------------------------------------------------

class CudaGraph final : public Graph {
 public:
  CudaGraph(CudaBackend* backend, cudaGraphExec_t exec, std::vector<const void*> tables, void* workspace,
            bool sets_status)
      : backend_(backend), exec_(exec), tables_(std::move(tables)), workspace_(workspace), sets_status_(sets_status) {}

  ~CudaGraph() override {
    // An exec graph destroyed while a launch is in flight is released when the launch ends;
    // the memory it pinned is freed stream-ordered, after that launch.
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess || current != backend_->device()) cudaSetDevice(backend_->device());
    cudaGraphExecDestroy(exec_);
    (void)cudaGetLastError();
    {
      std::lock_guard<std::mutex> lock(backend_->optim_mutex_);
      for (auto& table : backend_->segment_tables_)
        for (const void* pinned : tables_)
          if (table.get() == pinned) table->pins -= 1;
    }
    if (!workspace_) return;
    OpGate gate(backend_);  // the free below must not land in another thread's capture
    std::lock_guard<std::mutex> lock(backend_->mutex_);
    auto pin = backend_->workspace_pins_.find(workspace_);
    if (pin == backend_->workspace_pins_.end() || --pin->second > 0) return;
    backend_->workspace_pins_.erase(pin);
    auto& retired = backend_->retired_workspaces_;
    auto it = std::find(retired.begin(), retired.end(), workspace_);
    if (it != retired.end()) {
      retired.erase(it);
      backend_->free_raw(workspace_);
    }
  }

  void launch() override {
    CudaBackend* self = backend_;
    OpScope scope("graph_launch");
    OpGate gate(self);
    self->activate();
    BYOL_CHECK(!self->capturing_here(), "cuda: a graph cannot be launched inside another graph's capture");
    OpEvents events(self, "graph_launch");  // the whole replay is one timed op
    BYOL_CUDA_CHECK(cudaGraphLaunch(exec_, self->stream()));
    // Its cross-entropy kernels check labels on the device like eager ones: the next
    // download or synchronize reads the status word.
    if (sets_status_) self->status_may_be_set_ = true;
  }

 private:
  CudaBackend* backend_;
  cudaGraphExec_t exec_;
  std::vector<const void*> tables_;  // SegmentTable* pinned for this graph's lifetime
  void* workspace_;                  // the cuDNN workspace its conv nodes use (pinned), or null
  bool sets_status_;                 // it holds kernels that may set the device status word
};

// ---- capture ---------------------------------------------------------------------------------

bool CudaBackend::capturing_here() const {
  return capture_owner_.load(std::memory_order_acquire) == std::this_thread::get_id();
}

void CudaBackend::refuse_in_capture(const char* why) {
  if (!capturing_here()) return;
  std::string message = std::string("cuda: ") + current_op() + " " + why + " and cannot be part of a graph capture";
  if (capture_broken_.empty()) capture_broken_ = message;
  throw Error(message);
}

bool CudaBackend::begin_capture() {
  OpScope scope("begin_capture");
  BYOL_CHECK(t_gate_holder != this, "cuda: begin_capture called inside an op or a capture of this backend");
  activate();  // may throw: before the gate is taken
  {
    std::lock_guard<std::mutex> lock(capture_wait_mutex_);
    capture_pending_.store(true, std::memory_order_release);  // new ops of other threads wait
  }
  capture_gate_.lock();  // waits until ops already running have finished enqueueing
  const CudaBackend* previous = t_gate_holder;
  t_gate_holder = this;
  try {
    capture_error_.clear();
    capture_broken_.clear();
    capture_sets_status_ = false;
    capture_allocs_.clear();
    capture_deferred_frees_.clear();
    {
      std::lock_guard<std::mutex> lock(optim_mutex_);
      capture_tables_.clear();
    }
    capture_owner_.store(std::this_thread::get_id(), std::memory_order_release);
    if (!pool_) {
      // Scratch inside a capture must come from the stream-ordered pool: cudaMalloc is not
      // allowed while the thread captures, so every capture would fail at its first op.
      capture_error_ = std::string("cuda: CUDA graphs need stream-ordered memory pools, which ") + props_.name +
                       " does not offer (cudaDevAttrMemoryPoolsSupported = 0): steps run eagerly";
    } else {
      const cudaError_t status = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
      if (status == cudaSuccess) return true;
      (void)cudaGetLastError();
      capture_error_ = "cuda: cudaStreamBeginCapture failed: " + error_text(status);
    }
  } catch (...) {
    capture_owner_.store(std::thread::id(), std::memory_order_release);
    t_gate_holder = previous;
    release_capture_gate();
    throw;
  }
  capture_owner_.store(std::thread::id(), std::memory_order_release);
  t_gate_holder = previous;
  release_capture_gate();
  return false;
}

void CudaBackend::release_capture_gate() {
  capture_gate_.unlock();
  {
    std::lock_guard<std::mutex> lock(capture_wait_mutex_);
    capture_pending_.store(false, std::memory_order_release);
  }
  capture_wait_cv_.notify_all();
}

std::unique_ptr<Graph> CudaBackend::end_capture(std::string* error) {
  OpScope scope("end_capture");
  auto fail = [&](std::string why) -> std::unique_ptr<Graph> {
    if (error) *error = std::move(why);
    return nullptr;
  };
  if (!capturing_here()) {
    if (!capture_error_.empty()) return fail(capture_error_);
    return fail("cuda: end_capture without a capture begun on this thread");
  }
  // Everything below runs with the gate still held, so no other thread can grow the workspace
  // or evict a segment table between the recording and the pins that protect them.
  cudaGraph_t graph = nullptr;
  const cudaError_t end_status = cudaStreamEndCapture(stream_, &graph);
  if (end_status != cudaSuccess) (void)cudaGetLastError();
  std::vector<const void*> tables;
  {
    std::lock_guard<std::mutex> lock(optim_mutex_);
    tables.swap(capture_tables_);
  }
  capture_owner_.store(std::thread::id(), std::memory_order_release);
  // Memory from before the capture that an op freed inside it: freed now, for real.
  for (void* ptr : capture_deferred_frees_) free_raw(ptr);
  capture_deferred_frees_.clear();
  std::string why;
  if (!capture_broken_.empty()) {
    why = capture_broken_;
  } else if (end_status != cudaSuccess || graph == nullptr) {
    // cudaErrorStreamCaptureInvalidated: an op inside made a call that cannot be captured.
    why = "cuda: the capture was abandoned: cudaStreamEndCapture returned " + error_text(end_status);
  } else if (!capture_allocs_.empty()) {
    // A graph launched again while its previous launch's allocations are live fails.
    why = "cuda: " + std::to_string(capture_allocs_.size()) +
          " allocation(s) made inside the capture were not freed inside it";
  }
  capture_allocs_.clear();
  cudaGraphExec_t exec = nullptr;
  void* workspace = nullptr;
  if (why.empty()) {
    const cudaError_t status = cudaGraphInstantiateWithFlags(&exec, graph, 0);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      size_t nodes = 0;
      cudaGraphGetNodes(graph, nullptr, &nodes);
      std::ostringstream os;
      os << "cuda: cudaGraphInstantiate of a " << nodes << "-node graph failed: " << error_text(status);
      why = os.str();
      exec = nullptr;
    }
  }
  if (graph) cudaGraphDestroy(graph);  // the exec graph is independent of it
  if (why.empty()) {
    {
      std::lock_guard<std::mutex> lock(optim_mutex_);
      for (auto& table : segment_tables_)
        for (const void* pinned : tables)
          if (table.get() == pinned) table->pins += 1;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    workspace = workspace_;  // the capture could not grow it (refuse_in_capture)
    if (workspace) workspace_pins_[workspace] += 1;
  }
  t_gate_holder = nullptr;
  release_capture_gate();
  if (!why.empty()) return fail(why);
  return std::make_unique<CudaGraph>(this, exec, std::move(tables), workspace, capture_sets_status_);
}

}  // namespace cuda
}  // namespace byol
