// op_timer.cc: see op_timer.h.
#include "op_timer.h"

#include <algorithm>

namespace byol {

thread_local int OpNesting::depth_ = 0;

namespace {
constexpr const char* kStepRange = "byol step";
constexpr const char* kNoRange = "(no range)";
}  // namespace

void OpTimer::set(bool on) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (on && !on_.load(std::memory_order_relaxed)) stacks_.clear();
  on_.store(on, std::memory_order_relaxed);
}

void OpTimer::push(const char* name) {
  if (!on()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  stacks_[std::this_thread::get_id()].emplace_back(name);
}

void OpTimer::pop() {
  if (!on()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = stacks_.find(std::this_thread::get_id());
  if (it == stacks_.end() || it->second.empty()) return;  // opened before timing went on
  it->second.pop_back();
  if (it->second.empty()) stacks_.erase(it);
}

int OpTimer::phase() {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string* name = nullptr;
  static const std::string no_range = kNoRange;
  auto it = stacks_.find(std::this_thread::get_id());
  if (it == stacks_.end() || it->second.empty()) {
    name = &no_range;
  } else {
    const std::vector<std::string>& stack = it->second;
    name = stack[0] == kStepRange && stack.size() > 1 ? &stack[1] : &stack[0];
  }
  auto found = std::find(phases_.begin(), phases_.end(), *name);
  if (found != phases_.end()) return static_cast<int>(found - phases_.begin());
  phases_.push_back(*name);
  return static_cast<int>(phases_.size()) - 1;
}

void OpTimer::add(int phase, const char* op, double ms, const OpWork& work) {
  std::lock_guard<std::mutex> lock(mutex_);
  OpTime& row = sums_[{phase, op}];
  if (row.calls == 0) {
    row.phase = phases_[static_cast<size_t>(phase)];
    row.op = op;
  }
  row.calls += 1;
  row.ms += ms;
  row.flops += work.flops;
  row.bytes += work.bytes;
}

OpWork conv_work(const ConvShape& s) {
  const double out = double(s.N) * s.P() * s.Q() * s.K;
  const double weights = double(s.K) * s.C * s.R * s.S;
  return {2.0 * out * s.C * s.R * s.S, 4.0 * (double(s.N) * s.H * s.W * s.C + weights + out)};
}

OpWork linear_work(int64_t B, int64_t I, int64_t O, bool backward) {
  const double macs = double(B) * I * O, tensors = 4.0 * (double(B) * I + double(I) * O + double(B) * O);
  return backward ? OpWork{4.0 * macs, 2.0 * tensors} : OpWork{2.0 * macs, tensors};
}

OpWork float_passes(double passes, double n) { return {0.0, 4.0 * passes * n}; }

OpWork batchnorm_forward_work(int64_t M, int64_t C, bool training, bool residual) {
  return float_passes((training ? 3.0 : 2.0) + (residual ? 1.0 : 0.0), double(M) * C);
}

OpWork optimizer_work(double passes, const ParamSegment* segments, int num_segments) {
  double n = 0;
  for (int i = 0; segments != nullptr && i < num_segments; ++i) n += double(segments[i].size);
  return float_passes(passes, n);
}

OpWork batchnorm_backward_work(int64_t M, int64_t C, bool relu_mask) {
  return float_passes(2.0 * (relu_mask ? 3.0 : 2.0) + 1.0, double(M) * C);
}

std::vector<OpTime> OpTimer::rows(bool reset) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::pair<int, OpTime>> keyed;
  keyed.reserve(sums_.size());
  for (const auto& [key, row] : sums_) keyed.emplace_back(key.first, row);
  std::stable_sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    return a.second.ms > b.second.ms;
  });
  std::vector<OpTime> out;
  out.reserve(keyed.size());
  for (auto& entry : keyed) out.push_back(std::move(entry.second));
  if (reset) sums_.clear();
  return out;
}

}  // namespace byol
