// test_parallel.cc: native/cpu/parallel.h's per-thread accumulators. Each thread's block must
// start on its own 128-byte boundary: a block boundary inside a cache line made two threads'
// batch norm sums bounce that line between cores (1.1-1.4x slower steps, depending on where
// the heap put the buffer). Checked for many widths and thread counts, with the heap's
// alignment varied by allocations in between. Also: threads marked serial stay serial.
#include <omp.h>

#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "../cpu/cpu_backend.h"
#include "../cpu/parallel.h"
#include "harness.h"
#include "runner.h"

namespace {

BYOL_TEST("cpu/thread_accumulators_aligned_and_disjoint", ctx) {
  std::vector<std::unique_ptr<char[]>> heap_noise;
  bool aligned = true, zeroed = true, disjoint = true;
  for (int threads = 1; threads <= 5; ++threads) {
    for (int64_t width : {1, 2, 7, 8, 15, 16, 17, 32, 33, 100}) {
      heap_noise.emplace_back(new char[static_cast<size_t>(width * 8 + threads)]);  // shifts the next allocation
      byol::cpu::ThreadAccumulators acc(threads, width);
      for (int t = 0; t < threads; ++t) {
        double* block = acc.get(t);
        aligned = aligned && reinterpret_cast<uintptr_t>(block) % 128 == 0;
        for (int64_t j = 0; j < width; ++j) {
          zeroed = zeroed && block[j] == 0.0;
          block[j] = t + 1;
        }
      }
      // Every block still holds its own thread's values: no block overlaps another, and the
      // line after a block's last value belongs to no other thread.
      for (int t = 0; t < threads; ++t) {
        for (int64_t j = 0; j < width; ++j) disjoint = disjoint && acc.get(t)[j] == t + 1;
        if (t + 1 < threads) {
          const uintptr_t end = reinterpret_cast<uintptr_t>(acc.get(t) + width);  // past the last value
          const uintptr_t next = reinterpret_cast<uintptr_t>(acc.get(t + 1));
          disjoint = disjoint && next >= end && next / 64 != (end - 1) / 64 && next - end < 128;
        }
      }
    }
  }
  byol_test::expect_true(aligned, "every thread's block starts on a 128-byte boundary");
  byol_test::expect_true(zeroed, "blocks start zeroed");
  byol_test::expect_true(disjoint, "blocks are disjoint, on separate cache lines, packed within 128 bytes");
}

}  // namespace

// A thread marked serial (cpu::set_thread_serial, the addon's JavaScript and libuv threads)
// keeps OpenMP's count at 1 through the CPU backend's ops, here a copy large enough to be split
// over the team, so it never opens a libgomp pool; an unmarked thread takes the backend's count.
namespace serial_check {
int count_after_upload(byol::cpu::CpuBackend* be, bool serial) {
  int seen = -1;
  std::thread t([&] {
    byol::cpu::set_thread_serial(serial);
    omp_set_num_threads(1);
    std::vector<float> host(size_t(2) << 20, 1.0f);  // 8 MiB
    float* dev = static_cast<float*>(be->alloc(host.size() * sizeof(float)));
    be->upload(dev, host.data(), host.size() * sizeof(float));
    be->release(dev);
    seen = omp_get_max_threads();
  });
  t.join();
  return seen;
}
}  // namespace serial_check

BYOL_TEST("cpu/serial_threads_stay_serial", ctx) {
  byol::cpu::CpuBackend be(2);
  byol_test::expect_true(serial_check::count_after_upload(&be, true) == 1, "a serial thread keeps 1 after an 8 MiB upload");
  byol_test::expect_true(serial_check::count_after_upload(&be, false) == 2, "an unmarked thread takes the backend's 2");
}
