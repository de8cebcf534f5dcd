// test_emu.cu: the kernel emulator's own tests (built like the backend's kernels: rewritten by
// rewrite.cmake, so these launches use the CUDA syntax). Each misuse the emulator promises to
// report (emu.h) is made once and must be reported; barriers and shuffles must give a block's
// true sums in both schedules; a racy kernel must differ between the schedules; shared memory
// must be fresh in every block; and in the race-check build (byol_tests_race) ThreadSanitizer
// must report races in shared and in global memory and none in a correct kernel.
#include "common.cuh"
#include "cuda_check.h"
#include "harness.h"
#include "runner.h"

namespace {

using byol::cuda::block_sum;

// out[block] = sum of in over the block's 256 values (barriers + shuffles), in[block*256 + t].
__global__ void block_sums_kernel(float* out, const float* in) {
  __shared__ float shared[32];
  const float total = block_sum(in[blockIdx.x * blockDim.x + threadIdx.x], shared);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// Thread 0 returns before the barrier the others wait at.
__global__ void early_return_kernel(float* out) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

__global__ void shuffle_kernel(float* out) {
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, float(threadIdx.x), 1);
}

// Reads a neighbour's shared slot without a barrier between the write and the read: a race.
__global__ void racy_kernel(float* out) {
  __shared__ float slot[64];
  slot[threadIdx.x] = float(threadIdx.x);
  out[threadIdx.x] = slot[(threadIdx.x + 1) % 64];
}

// Block b writes the first 32 >> b entries of its shared array, then every thread reads its
// own entry back: what no thread of the block wrote must read as unwritten (NaN), even where
// an earlier block wrote it.
__global__ void partly_written_shared_kernel(float* out) {
  __shared__ float seen[32];
  if (threadIdx.x < (32u >> blockIdx.x)) seen[threadIdx.x] = float(blockIdx.x);
  __syncthreads();
  out[blockIdx.x * 32 + threadIdx.x] = seen[threadIdx.x];
}

// Every block writes the same 64 elements: a race between blocks, in global memory.
__global__ void blocks_overwrite_kernel(float* out) { out[threadIdx.x] = float(blockIdx.x); }

void launch_block_sums(float* out, const float* in, int blocks) {
  block_sums_kernel<<<blocks, 256, 0, nullptr>>>(out, in);
  BYOL_CUDA_CHECK_LAUNCH();
}

BYOL_TEST("emu/barriers_and_shuffles_give_block_sums", ctx) {
  const int blocks = 3;
  std::vector<float> in(blocks * 256), out(blocks), want(blocks, 0.0f);
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i % 97);
  for (size_t i = 0; i < in.size(); ++i) want[i / 256] += in[i];
  for (auto order : {byol_emu::Order::forward, byol_emu::Order::reverse}) {
    byol_emu::set_order(order);
    launch_block_sums(out.data(), in.data(), blocks);
    byol_emu::set_order(byol_emu::Order::forward);
    byol_test::check(order == byol_emu::Order::forward ? "forward schedule" : "reverse schedule", out, want, 0, 0);
  }
  std::vector<float> pairs(32);
  shuffle_kernel<<<1, 32, 0, nullptr>>>(pairs.data());
  bool swapped = true;
  for (int t = 0; t < 32; ++t) swapped = swapped && pairs[t] == float(t ^ 1);
  byol_test::expect_true(swapped, "__shfl_xor_sync(.., 1) swaps neighbouring lanes");
}

BYOL_TEST("emu/misuse_is_reported", ctx) {
  std::vector<float> out(64);
  byol_test::expect_error("a thread returns before __syncthreads", [&] {
    early_return_kernel<<<1, 64, 0, nullptr>>>(out.data());
  }, {"early_return_kernel", "waits at __syncthreads", "returned without reaching it"});
  byol_test::expect_error("a shuffle in a warp of 16 threads", [&] {
    shuffle_kernel<<<1, 16, 0, nullptr>>>(out.data());
  }, {"shuffle_kernel", "__shfl_xor_sync", "warp of 16 threads"});
  byol_test::expect_error("a block of 2048 threads", [&] {
    block_sums_kernel<<<1, 2048, 0, nullptr>>>(out.data(), out.data());
    BYOL_CUDA_CHECK_LAUNCH();
  }, {"cudaErrorInvalidConfiguration"});
}

BYOL_TEST("emu/reverse_schedule_exposes_a_race", ctx) {
  std::vector<float> a(64), b(64);
  byol_emu::expect_races(true);  // the race check reports it too: emu/race_check_*
  racy_kernel<<<1, 64, 0, nullptr>>>(a.data());
  byol_emu::set_order(byol_emu::Order::reverse);
  racy_kernel<<<1, 64, 0, nullptr>>>(b.data());
  byol_emu::set_order(byol_emu::Order::forward);
  byol_emu::expect_races(false);
  byol_emu::take_races();
  byol_test::expect_true(a != b, "the racy kernel's result depends on the schedule");
}

BYOL_TEST("emu/shared_memory_is_fresh_in_every_block", ctx) {
  std::vector<float> out(3 * 32);
  partly_written_shared_kernel<<<3, 32, 0, nullptr>>>(out.data());
  int right = 0;
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < 32; ++t) {
      const float got = out[b * 32 + t];
      right += t < (32 >> b) ? got == float(b) : std::isnan(got);
    }
  byol_test::expect_true(right == 3 * 32, "entries a block wrote read back, the others read as NaN (" +
                                              std::to_string(right) + " of 96 right)");
}

BYOL_TEST("emu/race_check_reports_races", ctx) {
  if (!byol_emu::racecheck())
    byol_test::skip("the race check is the byol_tests_race runner (kernels built with ThreadSanitizer)");
  byol_emu::take_races();
  std::vector<float> in(2 * 256, 1.0f), sums(2), out(64);
  launch_block_sums(sums.data(), in.data(), 2);
  byol_test::expect_true(byol_emu::take_races() == 0, "a block sum (barriers, shuffles, shared memory): no race");
  byol_emu::expect_races(true);
  racy_kernel<<<1, 64, 0, nullptr>>>(out.data());
  const uint64_t in_shared = byol_emu::take_races();
  blocks_overwrite_kernel<<<2, 64, 0, nullptr>>>(out.data());
  const uint64_t in_global = byol_emu::take_races();
  byol_emu::expect_races(false);
  byol_test::expect_true(in_shared > 0, "a read of a neighbour's shared slot without a barrier is reported (" +
                                            std::to_string(in_shared) + " reports)");
  byol_test::expect_true(in_global > 0, "two blocks writing the same global elements are reported (" +
                                            std::to_string(in_global) + " reports)");
}

}  // namespace
