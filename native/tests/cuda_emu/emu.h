// emu.h: runs the CUDA backend's own kernels (native/cuda/kernels/*.cu) on the CPU, so their
// indexing, barriers, shuffles and launch sizes are tested on machines without a GPU.
// How: rewrite.cmake turns each `kernel<<<grid, block, smem, stream>>>(args)` into
// `byol_emu::Launch("kernel", grid, block, smem, stream).kernel(kernel)(args)` and the host
// compiler builds the file against the cuda_runtime.h of this folder. A launch runs its blocks
// one after another; each CUDA thread of a block is a fiber with its own stack, run until it
// finishes or reaches __syncthreads / __shfl_xor_sync, where it waits for its block / warp.
// Contract (what a launch checks, throwing byol::Error naming the kernel, block and thread):
//   - the launch configuration (block of 1..1024 threads, grid y/z <= 65535, static shared
//     memory is not counted): a bad one is reported like the GPU does, as
//     cudaErrorInvalidConfiguration from cudaGetLastError();
//   - __syncthreads reached by every thread of the block (a thread that returned while others
//     wait at a barrier, or threads waiting at a barrier while others wait in a shuffle, is
//     the deadlock or undefined behaviour it would be on a GPU);
//   - __shfl_xor_sync with the full mask, from a complete warp, every lane taking part.
// Schedules: Order::forward runs blocks and threads in index order, Order::reverse in the
// opposite order. Threads only switch at barriers and shuffles, so a kernel whose result
// depends on the order of threads between two barriers (a race), or on the order of blocks,
// gives different bits under the two orders: tests run both and compare.
// Shared memory: each `__shared__` array (rewrite.cmake) is the running block's own slot,
// filled with 0xFF bytes (NaN) when the block first reaches it and followed by a page that
// faults, so reading shared memory no thread of the block wrote, or one element past an
// array, shows up (wrong numbers, or a crash report naming the thread).
// Race check (the byol_tests_race runner): the kernels are compiled with -fsanitize=thread and
// every emulated CUDA thread is a ThreadSanitizer fiber. The scheduler states only the orders
// CUDA guarantees: the host before a launch's threads, a block's threads across each
// __syncthreads, all of a launch before the host goes on and before the next launch. Two
// accesses to one address, at least one a write (not both atomics), not ordered so, are a data
// race: in shared memory a missing barrier, in global memory two threads or blocks writing
// one element. Blocks run on two fiber sets in turn, so two blocks that run one after the
// other are concurrent to it (a kernel that ignores blockIdx is caught) while blocks two apart
// are ordered (they share stacks and shared memory); every acquire and release costs time in
// the number of fibers, which is why there are not more sets. Warp
// shuffles order nothing here (CUDA gives them no memory ordering). A race fails the case that
// ran it (harness case probe) and prints ThreadSanitizer's report with both stacks.
// Not covered: what only a GPU shows (timing, memory coalescing, the __CUDA_ARCH__ paths of
// shared headers, which take their host path here); outside the race check, races that the
// two orders happen to agree on; in it, races between blocks more than one apart.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <string>

namespace byol_emu {

enum class Order { forward, reverse };
void set_order(Order order);
Order order();

struct Stats {
  uint64_t launches = 0, blocks = 0, threads = 0, barriers = 0, shuffles = 0;
};
Stats stats();

// Whether this build is the race check (ThreadSanitizer over the fibers, above).
bool racecheck();
// Data races ThreadSanitizer reported since the last call (0 outside the race check).
uint64_t take_races();
// While on, races are counted but not printed (tests of the race check itself).
void expect_races(bool on);

// The runtime's last error (cudaGetLastError), set by a bad launch and by the simulated
// runtime of ../cuda_sim.
void set_last_error(cudaError_t status);

// cudaFuncGetAttributes' answer (cuda_runtime.h): cudaErrorNoKernelImageForDevice makes the
// plugin's startup probe report a GPU its kernels were not built for.
void set_kernel_image_status(cudaError_t status);

// Where a launch's work goes. Without a hook it runs at once; the simulated runtime
// (../cuda_sim) installs one that records it instead while `stream` is being captured into a
// CUDA graph, and returns true then.
using SubmitHook = bool (*)(cudaStream_t stream, std::function<void()>& work);
void set_submit_hook(SubmitHook hook);

class Launch {
 public:
  Launch(const char* name, dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr)
      : name_(name), grid_(grid), block_(block), shared_bytes_(shared_bytes), stream_(stream) {}

  // Returns a callable that runs `kernel` over the grid with the arguments it is given. The
  // arguments are copied at the launch, as CUDA copies them: work recorded into a graph
  // replays with the values it was launched with. One host thread runs everything in call
  // order, so every stream is in order.
  template <typename... Params>
  auto kernel(void (*kernel)(Params...)) const {
    const Launch self = *this;
    return [self, kernel](auto... args) {
      self.submit([self, kernel, args...] { self.run([&] { kernel(args...); }); });
    };
  }

  // Runs `thread_body` once per thread of the grid (see the contract above).
  void run(const std::function<void()>& thread_body) const;

 private:
  // Checks the configuration (a bad one sets cudaErrorInvalidConfiguration and runs nothing),
  // then runs `work` now or hands it to the submit hook.
  void submit(std::function<void()> work) const;
  bool valid() const;

  const char* name_;
  dim3 grid_, block_;
  size_t shared_bytes_;
  cudaStream_t stream_;
};

}  // namespace byol_emu
