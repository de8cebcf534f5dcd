// optim.cc: the CUDA backend's optimizer updates (lars_update, sgd_update, adamw_update): the
// CPU backend's own argument checks (core/optim_math.h, messages prefixed "cuda: "), the cache
// of device segment tables, LARS scratch from the pool, then kernels/optim.cu on the stream.
// Contract: backend.h. A call with a segment table seen before only enqueues kernels: no
// upload, no allocation outside the stream-ordered pool, no host synchronization.
#include <algorithm>
#include <cstring>

#include "cuda_backend.h"
#include "kernels/kernels.h"

namespace byol {
namespace cuda {
namespace {

// A run uses one table per optimizer; a few more cover tests and models built side by side.
// Evicting waits for the stream (queued kernels may still read the table), so it must be rare.
constexpr size_t kMaxSegmentTables = 8;

// FNV-1a over the table's fields: a cheap first filter before the exact comparison.
uint64_t hash_segments(const ParamSegment* segments, int num_segments) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    for (int byte = 0; byte < 8; ++byte) {
      h ^= (v >> (8 * byte)) & 0xffu;
      h *= 1099511628211ull;
    }
  };
  mix(static_cast<uint64_t>(num_segments));
  for (int s = 0; s < num_segments; ++s) {
    mix(static_cast<uint64_t>(segments[s].offset));
    mix(static_cast<uint64_t>(segments[s].size));
    mix(segments[s].decay ? 1u : 0u);
  }
  return h;
}

bool same_table(const std::vector<ParamSegment>& key, const ParamSegment* segments, int num_segments) {
  if (key.size() != static_cast<size_t>(num_segments)) return false;
  for (int s = 0; s < num_segments; ++s)
    if (key[s].offset != segments[s].offset || key[s].size != segments[s].size || key[s].decay != segments[s].decay)
      return false;
  return true;
}

}  // namespace

CudaBackend::SegmentTable::~SegmentTable() {
  if (!memory) return;
  // Destructors cannot report: a failure here leaks at most one small table.
  int current = -1;
  const bool switch_device = cudaGetDevice(&current) == cudaSuccess && current != device;
  if (switch_device) cudaSetDevice(device);
  cudaFree(memory);
  if (switch_device) cudaSetDevice(current);
  (void)cudaGetLastError();
}

const CudaBackend::SegmentTable& CudaBackend::segment_table(const ParamSegment* segments, int num_segments) {
  const uint64_t hash = hash_segments(segments, num_segments);
  const uint64_t now = ++segment_table_clock_;
  // Keyed by content, not by the host pointer: a caller may rewrite its table in place.
  for (const std::unique_ptr<SegmentTable>& table : segment_tables_) {
    if (table->hash == hash && same_table(table->key, segments, num_segments)) {
      table->last_use = now;
      if (capturing_here()) capture_tables_.push_back(table.get());
      return *table;
    }
  }

  std::vector<OptimChunk> chunks;
  std::vector<OptimSegment> ranges;
  cut_segments(segments, num_segments, &chunks, &ranges);

  // Evicts the least recently used table that no graph reads (with every table pinned, the
  // cache grows instead).
  refuse_in_capture("would upload a segment table not seen before the capture");
  if (segment_tables_.size() >= kMaxSegmentTables) {
    auto oldest = segment_tables_.end();
    for (auto it = segment_tables_.begin(); it != segment_tables_.end(); ++it)
      if ((*it)->pins == 0 && (oldest == segment_tables_.end() || (*it)->last_use < (*oldest)->last_use)) oldest = it;
    if (oldest != segment_tables_.end()) {
      BYOL_CUDA_CHECK(cudaStreamSynchronize(stream_));
      segment_tables_.erase(oldest);
    }
  }

  auto table = std::make_unique<SegmentTable>();
  table->device = device_;
  table->key.assign(segments, segments + num_segments);
  table->hash = hash;
  table->num_chunks = static_cast<int>(chunks.size());
  table->last_use = now;
  const size_t chunk_bytes = chunks.size() * sizeof(OptimChunk);
  const size_t range_bytes = ranges.size() * sizeof(OptimSegment);
  std::vector<char> host(chunk_bytes + range_bytes);
  std::memcpy(host.data(), chunks.data(), chunk_bytes);
  std::memcpy(host.data() + chunk_bytes, ranges.data(), range_bytes);
  BYOL_CUDA_CHECK(cudaMalloc(&table->memory, host.size()));
  // upload() copies through pinned staging, asynchronously: the kernels queued next see the table.
  upload(table->memory, host.data(), host.size());
  segment_tables_.push_back(std::move(table));
  return *segment_tables_.back();
}

namespace {

const OptimChunk* chunks_of(const void* memory) { return static_cast<const OptimChunk*>(memory); }

const OptimSegment* ranges_of(const void* memory, int num_chunks) {
  return reinterpret_cast<const OptimSegment*>(static_cast<const char*>(memory) + size_t(num_chunks) * sizeof(OptimChunk));
}

}  // namespace

void CudaBackend::lars_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                              int num_segments, const LarsOptions& opt) {
  BYOL_CUDA_OP("lars_update");
  BYOL_CUDA_OP_WORK(optimizer_work(7, segments, num_segments));
  const int64_t extent =
      optim::check_lars("cuda: lars_update", params, momentum, grads, segments, num_segments, opt);
  if (extent == 0) return;
  std::lock_guard<std::mutex> lock(optim_mutex_);
  const SegmentTable& table = segment_table(segments, num_segments);
  DeviceBuffer scratch(this, lars_scratch_bytes(table.num_chunks, num_segments));
  cuda::lars_update(params, momentum, scratch.data(), grads, chunks_of(table.memory), table.num_chunks,
                    ranges_of(table.memory, table.num_chunks), num_segments, opt, stream_);
}

void CudaBackend::sgd_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                             int num_segments, const SgdOptions& opt) {
  BYOL_CUDA_OP("sgd_update");
  BYOL_CUDA_OP_WORK(optimizer_work(5, segments, num_segments));
  const int64_t extent = optim::check_sgd("cuda: sgd_update", params, momentum, grads, segments, num_segments, opt);
  if (extent == 0) return;
  std::lock_guard<std::mutex> lock(optim_mutex_);
  const SegmentTable& table = segment_table(segments, num_segments);
  cuda::sgd_update(params, momentum, grads, chunks_of(table.memory), table.num_chunks,
                   ranges_of(table.memory, table.num_chunks), opt, stream_);
}

void CudaBackend::adamw_update(float* params, float* state, const float* grads, const ParamSegment* segments,
                               int num_segments, const AdamWOptions& opt) {
  BYOL_CUDA_OP("adamw_update");
  BYOL_CUDA_OP_WORK(optimizer_work(7, segments, num_segments));
  const int64_t extent =
      optim::check_adamw("cuda: adamw_update", params, state, grads, segments, num_segments, opt);
  if (extent == 0) return;
  std::lock_guard<std::mutex> lock(optim_mutex_);
  const SegmentTable& table = segment_table(segments, num_segments);
  // state = [exp_avg (extent floats), exp_avg_sq (extent floats)], as on the CPU.
  cuda::adamw_update(params, state, state + extent, grads, chunks_of(table.memory), table.num_chunks,
                     ranges_of(table.memory, table.num_chunks), optim::adamw_constants(opt), stream_);
}

}  // namespace cuda
}  // namespace byol
