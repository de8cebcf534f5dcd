// emu.cc: the kernel emulator's scheduler (emu.h): fibers for the threads of one block,
// barriers and warp shuffles, each block's shared memory, the launch checks, a SIGSEGV report
// that names the kernel, block and thread that touched memory it does not own (the emulated
// backend puts guard pages around its buffers), and, built with BYOL_EMU_RACECHECK, what
// ThreadSanitizer needs to see the CUDA threads as threads (emu.h, "Race check").
// Fibers switch with a few instructions on x86-64 (callee-saved registers and the stack
// pointer; kernels do not change the FP control state) and with ucontext elsewhere.
// This file is never built with -fsanitize=thread itself: the scheduler's bookkeeping is
// shared by all fibers by design, and only the kernels' own accesses are under test.
#include "emu.h"

#ifndef BYOL_EMU_RACECHECK
#define BYOL_EMU_RACECHECK 0
#endif

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include "byol/error.h"

#if BYOL_EMU_RACECHECK
#include "runner.h"  // case_probes: a case during which ThreadSanitizer reported a race fails

// ThreadSanitizer's fiber and synchronization interface (compiler-rt's tsan_interface.h).
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_set_fiber_name(void* fiber, const char* name);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
}
#endif

thread_local uint3 threadIdx{0, 0, 0};
thread_local uint3 blockIdx{0, 0, 0};
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace {
thread_local cudaError_t t_last_error = cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}

const char* cudaGetErrorName(cudaError_t status) {
  switch (status) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t status) {
  switch (status) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
  }
  return "unknown error";
}

namespace byol_emu {
namespace {

constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = size_t(64) << 10;
constexpr size_t kSharedLimit = size_t(48) << 10;  // static shared memory of one block
constexpr int kMaxSharedSlots = 16;                 // __shared__ declarations one kernel reaches
// Fiber sets: the k-th block run uses set k % kSets, with that set's stacks and shared
// memory. Under the race check, blocks on different sets are concurrent to ThreadSanitizer,
// so two blocks run one after the other that touch the same global memory are reported;
// blocks of one set are ordered (each starts after the last one ended), which is what makes
// reusing the set's shared memory legal. Without the race check one set does.
#if BYOL_EMU_RACECHECK
constexpr int kSets = 2;
#else
constexpr int kSets = 1;
#endif

// ---- context switch ----------------------------------------------------------------------
#if defined(__x86_64__)
extern "C" void byol_emu_switch(void** save_sp, void* next_sp);
asm(R"(
  .text
  .p2align 4
  .globl byol_emu_switch
  .type byol_emu_switch, @function
byol_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size byol_emu_switch, .-byol_emu_switch
)");

struct Context {
  void* sp = nullptr;
};
void switch_context(Context& from, Context& to) { byol_emu_switch(&from.sp, to.sp); }
void make_context(Context& ctx, char* stack_base, size_t bytes, void (*entry)()) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack_base) + bytes) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                        // entry's return address: it never returns
  *--sp = reinterpret_cast<void*>(entry);  // where the first switch's `ret` goes
  for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp, rbx, r12-r15
  ctx.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};
void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
void make_context(Context& ctx, char* stack_base, size_t bytes, void (*entry)()) {
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack_base;
  ctx.uc.uc_stack.ss_size = bytes;
  ctx.uc.uc_link = nullptr;
  makecontext(&ctx.uc, entry, 0);
}
#endif

// ---- scheduler ---------------------------------------------------------------------------
enum class State { ready, barrier, warp, done, failed };

struct Fiber {
  Context ctx;
  State state = State::done;
  uint3 tid{0, 0, 0};
  uint64_t barriers = 0;  // __syncthreads passed in this block
  void* tsan = nullptr;   // its ThreadSanitizer fiber (race check)
};

struct SharedSlot {
  const void* site;  // the __shared__ declaration
  char* data;
  size_t bytes;
};

struct Scheduler {
  Context main;
  std::vector<Fiber> all_fibers = std::vector<Fiber>(size_t(kSets) * kMaxThreads);
  Fiber* fibers = all_fibers.data();  // the running block's set
  std::vector<uint64_t> lanes = std::vector<uint64_t>(kMaxThreads);  // shuffle slots
  char* stacks = nullptr;  // kSets * kMaxThreads stacks, each above a guard page
  char* shared = nullptr;  // kSets * kMaxSharedSlots slots, each below a guard page
  size_t page = 4096, slot_stride = 0;
  int set = 0;      // of the current block
  int threads = 0;  // of the current block
  int current = -1;  // running fiber, -1 on the scheduler
  std::vector<SharedSlot> slots;  // the current block's __shared__ arrays
  size_t shared_used = 0;
  const std::function<void()>* body = nullptr;
  const char* kernel = "";
  std::string error;  // set by a fiber that found a misuse
  Order order = Order::forward;
  Stats stats;
  // Race check: the scheduler's own ThreadSanitizer fiber and the synchronization objects
  // (only their addresses matter). One object per set carries every order between blocks and
  // host: the host releases into all of them at a launch, each block acquires its set's at
  // its start and releases into it at its end (so the next block of the set comes after it),
  // and the host acquires all of them when the launch ends. The two alternating barrier
  // generations of each set order a block's threads. Each acquire or release costs time in
  // the number of fibers, so a thread makes one of each per block and two per barrier.
  void* main_tsan = nullptr;
  char set_order[kSets] = {}, barrier[kSets][2] = {};
};

std::mutex g_launch_mutex;  // one launch at a time: __shared__ statics are one block's memory
Scheduler& scheduler() {
  static Scheduler* s = new Scheduler();  // never destroyed: fibers may be parked at exit
  return *s;
}

std::string thread_name(const uint3& t) {
  return "(" + std::to_string(t.x) + ", " + std::to_string(t.y) + ", " + std::to_string(t.z) + ")";
}

std::string where(const Scheduler& s, int thread) {
  std::string w = std::string(s.kernel) + " block " + thread_name(blockIdx);
  if (thread >= 0) w += " thread " + thread_name(s.fibers[thread].tid);
  return w;
}

// ---- race check hooks (no-ops in the plain build) ----------------------------------------
#if BYOL_EMU_RACECHECK
// Every switch tells ThreadSanitizer first, without implying any order (flag 1: no sync):
// the only orders are the ones the acquire/release pairs below state.
inline void tsan_switch(void* fiber) { __tsan_switch_to_fiber(fiber, 1); }
inline void tsan_release(void* sync) { __tsan_release(sync); }
inline void tsan_acquire(void* sync) { __tsan_acquire(sync); }
#else
inline void tsan_switch(void*) {}
inline void tsan_release(void*) {}
inline void tsan_acquire(void*) {}
#endif

void fiber_entry() {
  Scheduler& s = scheduler();
  Fiber& f = s.fibers[s.current];
  try {
    (*s.body)();
    f.state = State::done;
  } catch (const std::exception& e) {
    s.error = where(s, s.current) + " threw: " + e.what();
    f.state = State::failed;
  } catch (...) {
    s.error = where(s, s.current) + " threw a non-standard exception";
    f.state = State::failed;
  }
  tsan_release(&s.set_order[s.set]);
  tsan_switch(s.main_tsan);
  switch_context(f.ctx, s.main);
  std::abort();  // a finished fiber is never resumed
}

// Suspends the running fiber in `state` until the scheduler releases it.
void suspend(State state) {
  Scheduler& s = scheduler();
  Fiber& f = s.fibers[s.current];
  f.state = state;
  tsan_switch(s.main_tsan);
  switch_context(f.ctx, s.main);
}

void ensure_memory(Scheduler& s) {
  if (s.stacks) return;
  s.page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t stacks = size_t(kSets) * kMaxThreads * kStackBytes;
  void* p = mmap(nullptr, stacks, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  BYOL_CHECK(p != MAP_FAILED, "cuda emulator: could not map ", stacks, " bytes of fiber stacks");
  s.stacks = static_cast<char*>(p);
  // The lowest page of each stack faults: an overflow is a crash, not a neighbour's stack.
  for (size_t i = 0; i < size_t(kSets) * kMaxThreads; ++i) mprotect(s.stacks + i * kStackBytes, s.page, PROT_NONE);
  // Each shared memory slot ends at a page that faults, so reading or writing one element
  // past a __shared__ array is a crash naming the thread, as compute-sanitizer would report.
  s.slot_stride = (kSharedLimit + s.page - 1) / s.page * s.page + s.page;
  const size_t shared = size_t(kSets) * kMaxSharedSlots * s.slot_stride;
  p = mmap(nullptr, shared, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  BYOL_CHECK(p != MAP_FAILED, "cuda emulator: could not map ", shared, " bytes of shared memory");
  s.shared = static_cast<char*>(p);
  for (size_t i = 0; i < size_t(kSets) * kMaxSharedSlots; ++i)
    mprotect(s.shared + (i + 1) * s.slot_stride - s.page, s.page, PROT_NONE);
}

// ---- SIGSEGV report ----------------------------------------------------------------------
struct sigaction g_previous_segv, g_previous_bus;

void on_fault(int sig, siginfo_t* info, void* uctx) {
  Scheduler& s = scheduler();
  if (s.current >= 0) {
    char line[512];
    const uint3 t = s.fibers[s.current].tid;
    const int n = std::snprintf(line, sizeof(line),
                                "\ncuda emulator: kernel %s, block (%u, %u, %u), thread (%u, %u, %u): invalid memory "
                                "access (signal %d) at address %p: outside every buffer of the emulated backend, "
                                "freed, past a __shared__ array or past a fiber's stack\n",
                                s.kernel, blockIdx.x, blockIdx.y, blockIdx.z, t.x, t.y, t.z, sig, info->si_addr);
    if (n > 0) (void)!write(STDERR_FILENO, line, size_t(std::min(n, int(sizeof(line)))));
  }
  // Re-raise under the handler that was there before (default: terminate with the signal).
  sigaction(sig, sig == SIGSEGV ? &g_previous_segv : &g_previous_bus, nullptr);
  (void)uctx;
}

void install_fault_report() {
  static std::once_flag once;
  std::call_once(once, [] {
    static std::vector<char> alt(size_t(64) << 10);
    stack_t ss{};
    ss.ss_sp = alt.data();
    ss.ss_size = alt.size();
    sigaltstack(&ss, nullptr);
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous_segv);
    sigaction(SIGBUS, &sa, &g_previous_bus);
  });
}

// Runs one block to completion (blockIdx, blockDim set). Throws byol::Error on a misuse.
void run_block(Scheduler& s, uint64_t block) {
  const int n = s.threads;
  s.set = int(block % kSets);
  s.fibers = s.all_fibers.data() + size_t(s.set) * kMaxThreads;
  s.slots.clear();
  s.shared_used = 0;
  for (int i = 0; i < n; ++i) {
    Fiber& f = s.fibers[i];
    f.tid = uint3{unsigned(i) % blockDim.x, (unsigned(i) / blockDim.x) % blockDim.y,
                  unsigned(i) / (blockDim.x * blockDim.y)};
    f.state = State::ready;
    f.barriers = 0;
    const size_t stack = size_t(s.set) * kMaxThreads + size_t(i);
    make_context(f.ctx, s.stacks + stack * kStackBytes + s.page, kStackBytes - s.page, fiber_entry);
#if BYOL_EMU_RACECHECK
    if (!f.tsan) {
      f.tsan = __tsan_create_fiber(0);
      const std::string name = "cuda emulator thread " + std::to_string(i) + " of the blocks b with b % " +
                               std::to_string(kSets) + " == " + std::to_string(s.set);
      __tsan_set_fiber_name(f.tsan, name.c_str());
    }
    // What the host did before the launch and the set's previous block, for every thread
    // before any of them runs: acquired when a thread first ran, the object would also carry
    // the work of the block's threads that had already finished.
    tsan_switch(f.tsan);
    tsan_acquire(&s.set_order[s.set]);
    tsan_switch(s.main_tsan);
#endif
  }
  auto fail = [&](const std::string& why) {
    s.current = -1;
#if BYOL_EMU_RACECHECK
    // Fibers left inside the kernel end here: what they did is ordered before the host's next
    // step like a finished thread's work, and as they keep the kernel's frames on their
    // ThreadSanitizer shadow stacks, they start afresh next time.
    for (int i = 0; i < n; ++i) {
      Fiber& f = s.fibers[i];
      if (f.state == State::done || !f.tsan) continue;
      tsan_switch(f.tsan);
      tsan_release(&s.set_order[s.set]);
      tsan_switch(s.main_tsan);
      __tsan_destroy_fiber(f.tsan);
      f.tsan = nullptr;
    }
    tsan_acquire(&s.set_order[s.set]);  // before reading the message a fiber wrote
#endif
    throw byol::Error("cuda emulator: " + why);
  };
  for (;;) {
    for (int k = 0; k < n; ++k) {
      const int i = s.order == Order::forward ? k : n - 1 - k;
      Fiber& f = s.fibers[i];
      if (f.state != State::ready) continue;
      s.current = i;
      threadIdx = f.tid;
      tsan_switch(f.tsan);
      switch_context(s.main, f.ctx);
      s.current = -1;
      if (!s.error.empty()) fail(s.error);
    }
    int done = 0, at_barrier = 0, first_done = -1, first_barrier = -1, first_warp = -1;
    for (int i = 0; i < n; ++i) {
      const State st = s.fibers[i].state;
      if (st == State::done) {
        ++done;
        if (first_done < 0) first_done = i;
      } else if (st == State::barrier) {
        ++at_barrier;
        if (first_barrier < 0) first_barrier = i;
      } else if (st == State::warp && first_warp < 0) {
        first_warp = i;
      }
    }
    if (done == n) return;
    bool released = false;
    for (int base = 0; base < n; base += 32) {
      const int lanes = std::min(32, n - base);
      int waiting = 0;
      for (int l = 0; l < lanes; ++l) waiting += s.fibers[base + l].state == State::warp;
      if (waiting == lanes) {
        for (int l = 0; l < lanes; ++l) s.fibers[base + l].state = State::ready;
        ++s.stats.shuffles;
        released = true;
      }
    }
    if (released) continue;
    if (at_barrier == n) {
      for (int i = 0; i < n; ++i) s.fibers[i].state = State::ready;
      ++s.stats.barriers;
      continue;
    }
    // Nothing can move: what a GPU would hang on or leave undefined.
    if (first_barrier >= 0 && first_done >= 0)
      fail(where(s, first_barrier) + " waits at __syncthreads but thread " + thread_name(s.fibers[first_done].tid) +
           " of its block returned without reaching it");
    if (first_barrier >= 0 && first_warp >= 0)
      fail(where(s, first_barrier) + " waits at __syncthreads while thread " + thread_name(s.fibers[first_warp].tid) +
           " waits in a warp shuffle that not all of its warp reached");
    fail(where(s, first_warp) + " waits in a warp shuffle that not every lane of its warp reached");
  }
}

}  // namespace

void set_order(Order order) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  scheduler().order = order;
}

Order order() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  return scheduler().order;
}

Stats stats() {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  return scheduler().stats;
}

void syncthreads() {
  Scheduler& s = scheduler();
  BYOL_CHECK(s.current >= 0, "cuda emulator: __syncthreads called outside a kernel");
  Fiber& f = s.fibers[s.current];
  // Everything a thread did before the barrier happens before everything any thread of its
  // block does after it. Generations alternate: a thread released from generation g can reach
  // g + 1 only after every thread left g, so a generation's object never mixes in work that
  // comes after it.
  char* generation = &s.barrier[s.set][f.barriers & 1];
  tsan_release(generation);
  suspend(State::barrier);
  tsan_acquire(generation);
  ++f.barriers;
}

void* shared_slot(const void* site, size_t bytes, size_t align) {
  Scheduler& s = scheduler();
  BYOL_CHECK(s.current >= 0, "cuda emulator: __shared__ memory used outside a kernel");
  for (const SharedSlot& slot : s.slots)
    if (slot.site == site) return slot.data;
  if (s.slots.size() == size_t(kMaxSharedSlots))
    throw byol::Error("a kernel of the emulator reaches at most " + std::to_string(kMaxSharedSlots) +
                      " __shared__ declarations");
  if (s.shared_used + bytes > kSharedLimit)
    throw byol::Error("__shared__ arrays of " + std::to_string(s.shared_used + bytes) +
                      " bytes: a block has " + std::to_string(kSharedLimit) + " bytes of static shared memory");
  BYOL_CHECK(align <= s.page && bytes % align == 0, "cuda emulator: __shared__ array of ", bytes,
             " bytes with alignment ", align);
  // The array ends where its slot's guard page begins; bytes is a multiple of the alignment.
  const size_t index = size_t(s.set) * kMaxSharedSlots + s.slots.size();
  char* data = s.shared + (index + 1) * s.slot_stride - s.page - bytes;
  // NaN in every float and double: what an unwritten read sees. The fill is the emulator's,
  // not a write of the thread that asked first (libtsan intercepts memset).
#if BYOL_EMU_RACECHECK
  __tsan_ignore_thread_begin();
#endif
  std::memset(data, 0xFF, bytes);
#if BYOL_EMU_RACECHECK
  __tsan_ignore_thread_end();
#endif
  s.slots.push_back({site, data, bytes});
  s.shared_used += bytes;
  return data;
}

uint64_t shfl_xor_bits(unsigned mask, uint64_t bits, int lane_mask) {
  Scheduler& s = scheduler();
  BYOL_CHECK(s.current >= 0, "cuda emulator: __shfl_xor_sync called outside a kernel");
  const int t = s.current, base = t & ~31, lane = t & 31;
  if (mask != 0xffffffffu || s.threads - base < 32 || lane_mask < 0 || lane_mask > 31) {
    s.error = where(s, t) + ": __shfl_xor_sync(mask 0x" + [&] {
      char hex[16];
      std::snprintf(hex, sizeof(hex), "%08x", mask);
      return std::string(hex);
    }() + ", lane mask " + std::to_string(lane_mask) + ") in a warp of " + std::to_string(std::min(32, s.threads - base)) +
              " threads: only full-warp shuffles with a lane mask in [0, 31] are defined here";
    suspend(State::failed);
  }
  s.lanes[t] = bits;
  suspend(State::warp);  // every lane has written its value
  const uint64_t got = s.lanes[base + (lane ^ lane_mask)];
  suspend(State::warp);  // every lane has read: the slots may be written again
  return got;
}

bool Launch::valid() const {
  const uint64_t threads = uint64_t(block_.x) * block_.y * block_.z;
  return block_.x >= 1 && block_.y >= 1 && block_.z >= 1 && block_.x <= 1024 && block_.y <= 1024 &&
         block_.z <= 64 && threads <= kMaxThreads && grid_.x >= 1 && grid_.y >= 1 && grid_.z >= 1 &&
         grid_.x <= 0x7fffffffu && grid_.y <= 65535 && grid_.z <= 65535 && shared_bytes_ <= 48 * 1024;
}

namespace {
std::atomic<SubmitHook> g_submit_hook{nullptr};
}  // namespace

void set_submit_hook(SubmitHook hook) { g_submit_hook = hook; }

void set_last_error(cudaError_t status) { t_last_error = status; }

namespace {
std::atomic<cudaError_t> g_kernel_image_status{cudaSuccess};
}  // namespace

void set_kernel_image_status(cudaError_t status) { g_kernel_image_status = status; }
cudaError_t kernel_image_status() { return g_kernel_image_status.load(); }

void Launch::submit(std::function<void()> work) const {
  if (!valid()) {
    t_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  const SubmitHook hook = g_submit_hook.load();
  if (hook && hook(stream_, work)) return;
  work();
}

void Launch::run(const std::function<void()>& thread_body) const {
  const uint64_t threads = uint64_t(block_.x) * block_.y * block_.z;
  if (!valid()) {
    t_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  Scheduler& s = scheduler();
  ensure_memory(s);
  install_fault_report();
#if BYOL_EMU_RACECHECK
  s.main_tsan = __tsan_get_current_fiber();
#endif
  for (char& set : s.set_order) tsan_release(&set);
  struct JoinBlocks {  // the host goes on after every block of the launch, even a failed one
    Scheduler& s;
    ~JoinBlocks() {
      for (char& set : s.set_order) tsan_acquire(&set);
    }
  } join{s};
  s.body = &thread_body;
  s.kernel = name_;
  s.threads = static_cast<int>(threads);
  s.error.clear();
  gridDim = grid_;
  blockDim = block_;
  ++s.stats.launches;
  const uint64_t blocks = uint64_t(grid_.x) * grid_.y * grid_.z;
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t b = s.order == Order::forward ? k : blocks - 1 - k;
    blockIdx = uint3{unsigned(b % grid_.x), unsigned((b / grid_.x) % grid_.y), unsigned(b / (uint64_t(grid_.x) * grid_.y))};
    run_block(s, k);
    ++s.stats.blocks;
    s.stats.threads += threads;
  }
  s.kernel = "";
}

// ---- race check -------------------------------------------------------------------------
namespace {
std::atomic<uint64_t> g_races{0};         // reports since the last take_races()
std::atomic<bool> g_expect_races{false};  // count, do not print (tests of the race check)
}  // namespace

bool racecheck() { return BYOL_EMU_RACECHECK != 0; }

uint64_t take_races() { return g_races.exchange(0); }

void expect_races(bool on) { g_expect_races = on; }

}  // namespace byol_emu

#if BYOL_EMU_RACECHECK
// ThreadSanitizer calls these through the dynamic symbol table (the runner exports them:
// native/tests/CMakeLists.txt). OnReport (compiler-rt's hook for tests; GCC 12's libtsan)
// decides whether a report prints: an expected race only counts; an unexpected one gets a
// line naming the kernel, block and thread that made the second access, then prints.
namespace __tsan {
struct ReportDesc;
bool OnReport(const ReportDesc* report, bool suppressed);
bool OnReport(const ReportDesc* report, bool suppressed) {
  (void)report;
  if (suppressed) return true;
  ++byol_emu::g_races;
  if (byol_emu::g_expect_races) return true;
  const byol_emu::Scheduler& s = byol_emu::scheduler();
  if (s.current >= 0) {
    char line[400];
    const uint3 t = s.fibers[s.current].tid;
    const int n = std::snprintf(line, sizeof(line),
                                "cuda emulator: ThreadSanitizer found the race below while kernel %s ran block "
                                "(%u, %u, %u), thread (%u, %u, %u)\n",
                                s.kernel, blockIdx.x, blockIdx.y, blockIdx.z, t.x, t.y, t.z);
    if (n > 0) (void)!write(STDERR_FILENO, line, size_t(std::min(n, int(sizeof(line)))));
  }
  return false;
}
}  // namespace __tsan

// The runner's defaults (TSAN_OPTIONS still overrides them): every race in every case, its
// verdict by the runner, not by the exit code.
extern "C" const char* __tsan_default_options() {
  return "suppress_equal_stacks=0 suppress_equal_addresses=0 exitcode=0 history_size=4";
}

namespace {
// A case during which ThreadSanitizer reported a race it was not told to expect fails.
const bool g_probe_registered = [] {
  // The CPU backend's worker threads hand work over through atomics ThreadSanitizer cannot
  // see in uninstrumented code, so their memsets and copies would look like races.
  byol_test::runner_setup().cpu_threads = 1;
  byol_test::runner_setup().note =
      "race check: the emulated kernels under ThreadSanitizer, one TSan fiber per CUDA thread; "
      "only the emulator's cases (@emu, emu/); CPU backend on 1 thread";
  byol_test::runner_setup().only = [](const std::string& name) {
    return name.find("@emu") != std::string::npos || name.rfind("emu/", 0) == 0;
  };
  byol_test::case_probes().push_back([]() -> std::string {
    const uint64_t races = byol_emu::take_races();
    if (races == 0) return "";
    return "ThreadSanitizer reported " + std::to_string(races) + " data race" + (races == 1 ? "" : "s") +
           " in the emulated kernels (reports on stderr)";
  });
  return true;
}();
}  // namespace
#endif
