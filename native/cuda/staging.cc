// staging.cc: the CUDA backend's pinned staging rings (StagingRing in cuda_backend.h), through
// which upload() and augment() copy the caller's host bytes so the caller may reuse them at
// once while the device copy stays asynchronous, and into which download() copies so that it
// can wait for an event just after its copy instead of for the whole stream.
#include <algorithm>

#include "cuda_backend.h"

namespace byol {
namespace cuda {
namespace {

// Copies in flight the host may run ahead by before one waits: a step stages two views'
// pixels, its scalars and labels (upload) and two views' parameters (augment), and the host
// rarely gets more than a couple of steps ahead.
constexpr size_t kMaxStagingSlots = 8;
constexpr size_t kMinStagingBytes = size_t(64) << 10;
// Pinned memory one ring may hold before it waits instead of growing (big uploads come in
// 64 MiB chunks: four of them in flight, not eight).
constexpr size_t kMaxStagingTotal = size_t(256) << 20;

size_t slot_size(size_t bytes) {
  size_t want = kMinStagingBytes;
  while (want < bytes) want *= 2;
  return want;
}

}  // namespace

CudaBackend::StagingRing::Slot& CudaBackend::StagingRing::acquire(size_t bytes) {
  // Fixed capacity: `Slot&` handed out stays valid while more slots are added.
  if (slots.capacity() < kMaxStagingSlots) slots.reserve(kMaxStagingSlots);
  // A free slot that fits; else a new slot (resizing a free one would mean cudaFreeHost, which
  // waits for the device); else a free slot resized; else the least recently used, waited for.
  Slot *fits = nullptr, *free_slot = nullptr;
  size_t total = 0;
  for (Slot& slot : slots) {
    total += slot.bytes;
    const cudaError_t status = cudaEventQuery(slot.done);
    if (status == cudaErrorNotReady) continue;  // its copy has not run yet
    BYOL_CUDA_CHECK(status);
    if (slot.bytes >= bytes && (!fits || slot.bytes < fits->bytes)) fits = &slot;
    if (!free_slot) free_slot = &slot;
  }
  Slot* chosen = fits;
  if (!chosen && slots.size() < kMaxStagingSlots && total + slot_size(bytes) <= kMaxStagingTotal) {
    Slot slot;
    BYOL_CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
    slots.push_back(slot);
    chosen = &slots.back();
  }
  if (!chosen) chosen = free_slot;
  if (!chosen) {
    chosen = &*std::min_element(slots.begin(), slots.end(),
                                [](const Slot& a, const Slot& b) { return a.last_use < b.last_use; });
    BYOL_CUDA_CHECK(cudaEventSynchronize(chosen->done));
  }
  if (chosen->bytes < bytes) {
    if (chosen->host) BYOL_CUDA_CHECK(cudaFreeHost(chosen->host));
    chosen->host = nullptr;
    chosen->bytes = 0;
    const size_t want = slot_size(bytes);
    BYOL_CUDA_CHECK(cudaHostAlloc(&chosen->host, want, cudaHostAllocDefault));
    chosen->bytes = want;
  }
  chosen->last_use = ++clock;
  return *chosen;
}

CudaBackend::StagingRing::~StagingRing() {
  // Runs after teardown() synchronized the stream; destructors cannot report failures.
  for (Slot& slot : slots) {
    if (slot.done) {
      cudaEventSynchronize(slot.done);
      cudaEventDestroy(slot.done);
    }
    if (slot.host) cudaFreeHost(slot.host);
  }
  (void)cudaGetLastError();
}

}  // namespace cuda
}  // namespace byol
