// emu.cc: the kernel emulator's scheduler (emu.h): fibers for the threads of one block,
// barriers and warp shuffles, the launch checks, and a SIGSEGV report that names the kernel,
// block and thread that touched memory it does not own (the emulated backend puts guard pages
// around its buffers).
// Fibers switch with a few instructions on x86-64 (callee-saved registers and the stack
// pointer; kernels do not change the FP control state) and with ucontext elsewhere.
#include "emu.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include "byol/error.h"

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
  }
  return "unknown error";
}

namespace byol_emu {
namespace {

constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = size_t(64) << 10;

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
};

struct Scheduler {
  Context main;
  std::vector<Fiber> fibers = std::vector<Fiber>(kMaxThreads);
  std::vector<uint64_t> lanes = std::vector<uint64_t>(kMaxThreads);  // shuffle slots
  char* stacks = nullptr;
  size_t page = 4096;
  int threads = 0;  // of the current block
  int current = -1;  // running fiber, -1 on the scheduler
  const std::function<void()>* body = nullptr;
  const char* kernel = "";
  std::string error;  // set by a fiber that found a misuse
  Order order = Order::forward;
  Stats stats;
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
  switch_context(f.ctx, s.main);
  std::abort();  // a finished fiber is never resumed
}

// Suspends the running fiber in `state` until the scheduler releases it.
void suspend(State state) {
  Scheduler& s = scheduler();
  Fiber& f = s.fibers[s.current];
  f.state = state;
  switch_context(f.ctx, s.main);
}

void ensure_stacks(Scheduler& s) {
  if (s.stacks) return;
  s.page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t total = size_t(kMaxThreads) * kStackBytes;
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  BYOL_CHECK(p != MAP_FAILED, "cuda emulator: could not map ", total, " bytes of fiber stacks");
  s.stacks = static_cast<char*>(p);
  // The lowest page of each stack faults: an overflow is a crash, not a neighbour's stack.
  for (int i = 0; i < kMaxThreads; ++i) mprotect(s.stacks + size_t(i) * kStackBytes, s.page, PROT_NONE);
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
                                "freed, or past a fiber's stack\n",
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
void run_block(Scheduler& s) {
  const int n = s.threads;
  for (int i = 0; i < n; ++i) {
    Fiber& f = s.fibers[i];
    f.tid = uint3{unsigned(i) % blockDim.x, (unsigned(i) / blockDim.x) % blockDim.y,
                  unsigned(i) / (blockDim.x * blockDim.y)};
    f.state = State::ready;
    make_context(f.ctx, s.stacks + size_t(i) * kStackBytes + s.page, kStackBytes - s.page, fiber_entry);
  }
  auto fail = [&](const std::string& why) {
    s.current = -1;
    throw byol::Error("cuda emulator: " + why);
  };
  for (;;) {
    for (int k = 0; k < n; ++k) {
      const int i = s.order == Order::forward ? k : n - 1 - k;
      Fiber& f = s.fibers[i];
      if (f.state != State::ready) continue;
      s.current = i;
      threadIdx = f.tid;
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
  suspend(State::barrier);
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

void Launch::run(const std::function<void()>& thread_body) const {
  const uint64_t threads = uint64_t(block_.x) * block_.y * block_.z;
  const bool valid = block_.x >= 1 && block_.y >= 1 && block_.z >= 1 && block_.x <= 1024 && block_.y <= 1024 &&
                     block_.z <= 64 && threads <= kMaxThreads && grid_.x >= 1 && grid_.y >= 1 && grid_.z >= 1 &&
                     grid_.x <= 0x7fffffffu && grid_.y <= 65535 && grid_.z <= 65535 && shared_bytes_ <= 48 * 1024;
  if (!valid) {
    t_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  Scheduler& s = scheduler();
  ensure_stacks(s);
  install_fault_report();
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
    run_block(s);
    ++s.stats.blocks;
    s.stats.threads += threads;
  }
  s.kernel = "";
}

}  // namespace byol_emu
