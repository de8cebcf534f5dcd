// op_timer.h: the bookkeeping behind Backend::set_op_timing / op_times, shared by the CPU and
// CUDA backends. A backend measures each op its own way (CPU: a clock around the call; CUDA:
// events on its stream, resolved later) and hands the milliseconds here, filed under the op's
// name and the phase of the step it ran in.
// Phase: the calling thread's range stack (Backend::range_push) names it: inside "byol step"
// the range just below it ("online forward", "backward", "optimizer", ...), elsewhere the
// outermost range ("embed"), and "(no range)" outside every range.
// Thread-safe: ranges are kept per host thread, sums under one mutex. Costs one relaxed load
// per op and per range while timing is off.
#pragma once
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "byol/backend.h"

namespace byol {

// The nominal work of one op call (OpTime's flops and bytes).
struct OpWork {
  double flops = 0, bytes = 0;
};

// Work of the ops both backends time alike: a convolution in any direction (2*N*P*Q*K*C*R*S
// flops; its input, weights and output once), a linear layer forward (2*B*I*O) or backward
// (dinp and dweight: twice that), and `passes` float passes over n elements (memory-bound ops).
OpWork conv_work(const ConvShape& s);
OpWork linear_work(int64_t B, int64_t I, int64_t O, bool backward);
OpWork float_passes(double passes, double n);
// Batch norm over (M, C): training forward reads x twice (statistics, then normalize) and
// writes out, plus the residual when fused; evaluation reads x once; backward reads dout, x
// and the ReLU mask twice (sums, then dx) and writes dx.
OpWork batchnorm_forward_work(int64_t M, int64_t C, bool training, bool residual);
OpWork batchnorm_backward_work(int64_t M, int64_t C, bool relu_mask);
// An optimizer's `passes` over the parameters its segment table covers.
OpWork optimizer_work(double passes, const ParamSegment* segments, int num_segments);

class OpTimer {
 public:
  bool on() const { return on_.load(std::memory_order_relaxed); }
  // Turning timing on clears the range stacks: a range open across the switch is not seen,
  // so switch between steps.
  void set(bool on);

  void push(const char* name);
  void pop();
  // The calling thread's phase now, interned: the returned id stays valid for the timer's life.
  int phase();
  void add(int phase, const char* op, double ms, const OpWork& work = {});
  // Rows in the order phases were first seen, and within a phase by time, longest first.
  std::vector<OpTime> rows(bool reset);

 private:
  std::atomic<bool> on_{false};
  std::mutex mutex_;
  std::map<std::thread::id, std::vector<std::string>> stacks_;
  std::vector<std::string> phases_;  // id -> name, in first-seen order
  std::map<std::pair<int, std::string>, OpTime> sums_;
};

// Where an op runs on a thread already inside another op of the same backend (a nested call),
// only the outermost is timed, so no time counts twice. Used by both backends' op scopes.
class OpNesting {
 public:
  OpNesting() : outermost_(depth_++ == 0) {}
  ~OpNesting() { --depth_; }
  OpNesting(const OpNesting&) = delete;
  OpNesting& operator=(const OpNesting&) = delete;
  bool outermost() const { return outermost_; }

 private:
  static thread_local int depth_;
  bool outermost_;
};

}  // namespace byol
