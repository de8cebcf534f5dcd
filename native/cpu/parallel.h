// parallel.h: OpenMP helpers shared by the CPU kernels (row blocking and per-channel
// reductions over NHWC rows). Results are deterministic for a fixed thread count: blocks
// are static and partial sums are combined in thread order.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace byol {
namespace cpu {

// Threads worth using for `work` elements: one below the threshold, else the team size.
inline int threads_for(int64_t work, int64_t min_per_thread = 1 << 15) {
  if (work < min_per_thread) return 1;
  int64_t useful = work / min_per_thread;
  return static_cast<int>(std::min<int64_t>(omp_get_max_threads(), std::max<int64_t>(useful, 1)));
}

// Hot loops are compiled three times (AVX-512, AVX2 + FMA, baseline x86-64) and the
// loader picks one per machine (GCC's ifunc dispatch). The package builds one portable
// binary with plain -O3, which alone would leave every kernel on SSE2: half or a quarter
// of the vector width, and the double-precision batch norm sums are compute bound there.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 12
#define BYOL_CPU_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BYOL_CPU_KERNEL
#endif

// Block `part` of [0, n) split into `parts` near-equal contiguous blocks.
inline void block_range(int64_t n, int parts, int part, int64_t* begin, int64_t* end) {
  int64_t base = n / parts, extra = n % parts;
  *begin = part * base + std::min<int64_t>(part, extra);
  *end = *begin + base + (part < extra ? 1 : 0);
}

// Runs fn(begin, end) on [0, n) cut into one contiguous block per thread; `work` is the
// element count behind the n items, which decides whether threads are worth waking.
template <typename Fn>
void parallel_blocks(int64_t n, int64_t work, Fn&& fn) {
  if (n <= 0) return;
  const int nth = static_cast<int>(std::min<int64_t>(threads_for(work), n));
  if (nth <= 1) {
    fn(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(nth)
  {
    int64_t begin, end;
    block_range(n, omp_get_num_threads(), omp_get_thread_num(), &begin, &end);
    if (begin < end) fn(begin, end);
  }
}

// Zeroed double accumulators, one block of `width` per thread, each block starting on its own
// 128-byte boundary: a thread's hot accumulators never share a cache line with another's (nor
// the neighbouring line, which the adjacent-line prefetcher fetches in pairs). Without the
// alignment, a block boundary fell inside a line whenever the heap handed out a pointer not
// 64-byte aligned, and the two threads' updates of every row bounced that line between cores:
// batch norm's sums ran 1.3-1.4x slower, by heap luck. Allocate outside parallel regions.
class ThreadAccumulators {
 public:
  static constexpr int64_t kAlignDoubles = 16;  // 128 bytes
  ThreadAccumulators(int threads, int64_t width)
      : stride_((width + kAlignDoubles - 1) / kAlignDoubles * kAlignDoubles),
        storage_(static_cast<size_t>(stride_ * std::max(threads, 1) + kAlignDoubles), 0.0) {
    const uintptr_t raw = reinterpret_cast<uintptr_t>(storage_.data());
    const uintptr_t align = kAlignDoubles * sizeof(double);
    base_ = reinterpret_cast<double*>((raw + align - 1) / align * align);
  }
  double* get(int thread) { return base_ + thread * stride_; }

 private:
  int64_t stride_;
  std::vector<double> storage_;
  double* base_ = nullptr;
};

// Per-channel reduction over the M rows of an (M, C) matrix. NHWC keeps a channel's
// values C floats apart, so instead of one thread per channel (strided, cache-hostile)
// each thread walks a contiguous block of rows and accumulates all channels into its own
// `num_acc * C` doubles; the blocks are then summed. `rows(begin, end, acc)` adds the
// contributions of rows [begin, end) into zeroed acc. result gets num_acc * C doubles.
template <typename RowsFn>
void column_reduce(int64_t M, int C, int num_acc, double* result, RowsFn&& rows) {
  const int64_t width = static_cast<int64_t>(num_acc) * C;
  const int nth = static_cast<int>(std::min<int64_t>(threads_for(M * C), M));
  ThreadAccumulators partial(nth, width);
#pragma omp parallel num_threads(nth) if (nth > 1)
  {
    const int team = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t begin, end;
    block_range(M, team, t, &begin, &end);
    if (begin < end) rows(begin, end, partial.get(t));
  }
  std::fill(result, result + width, 0.0);
  for (int t = 0; t < std::max(nth, 1); ++t) {
    const double* p = partial.get(t);
    for (int64_t j = 0; j < width; ++j) result[j] += p[j];
  }
}

}  // namespace cpu
}  // namespace byol
