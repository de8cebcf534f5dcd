// test_op_times.cc: Backend::set_op_timing / op_times (native/core/op_timer.h) on real steps.
// The call counts of a step are known exactly from the network (ResNet-18: 20 convolutions,
// the stem's without a backward-data), so a count filed under the wrong phase or op, an op
// timed twice (nesting) or missed shows as a wrong number; the times must be positive where
// work ran and add up to no more than the wall time of the steps (every step ends with a sync).
// The same checks run on the CPU and, @cuda, on a GPU, where a graph replay is one op and ops
// recorded into a capture are not timed.
#include <chrono>
#include <map>
#include <set>

#include "byol/model.h"
#include "harness.h"
#include "runner.h"

namespace {

using byol::Backend;
using byol::ByolModel;
using byol::OpTime;
using byol::Tensor;
using byol_test::fmt;

Tensor views(Backend* b, float value) {
  std::vector<float> host(size_t(16) * 12 * 12 * 3);
  for (size_t i = 0; i < host.size(); ++i) host[i] = value * float((i * 7919) % 17) / 17.0f - 0.5f;
  return Tensor::from_host(b, host.data(), {16, 12, 12, 3}, byol::DType::f32);
}

// (phase, op) -> row
std::map<std::pair<std::string, std::string>, OpTime> by_key(const std::vector<OpTime>& rows) {
  std::map<std::pair<std::string, std::string>, OpTime> out;
  std::string repeated;
  for (const OpTime& r : rows) {
    if (out.count({r.phase, r.op})) repeated += " " + r.phase + " / " + r.op;
    out[{r.phase, r.op}] = r;
  }
  byol_test::expect_true(repeated.empty(), "one row per (phase, op)", "repeated:" + repeated);
  return out;
}

int64_t calls(const std::map<std::pair<std::string, std::string>, OpTime>& rows, const std::string& phase,
              const std::string& op) {
  auto it = rows.find({phase, op});
  return it == rows.end() ? 0 : it->second.calls;
}

void expect_calls(const std::map<std::pair<std::string, std::string>, OpTime>& rows, const std::string& phase,
                  const std::string& op, int64_t want) {
  const int64_t got = calls(rows, phase, op);
  byol_test::expect_true(got == want, phase + " / " + op + " calls == " + std::to_string(want),
                         "got " + std::to_string(got));
}

void eager_step_profile(Backend* be) {
  ByolModel m(be, byol_test::small_model_config());
  m.set_use_graphs(false);
  Tensor v1 = views(be, 1.0f), v2 = views(be, 0.5f);
  m.step(v1, v2, 0.1f, 0.99f);  // plans and algorithms chosen before timing

  byol_test::expect_true(be->set_op_timing(true), "set_op_timing(true) is supported");
  be->op_times(true);
  const int steps = 2;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) m.step(v1, v2, 0.1f, 0.99f);
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<OpTime> rows = be->op_times(false);
  const auto keyed = by_key(rows);

  // ResNet-18: stem conv + 8 blocks x 2 + 3 downsample convs = 20, each run once per view.
  const int64_t per_view = 20, views_per_step = 2;
  expect_calls(keyed, "target forward", "conv2d_forward", steps * views_per_step * per_view);
  expect_calls(keyed, "online forward", "conv2d_forward", steps * views_per_step * per_view);
  expect_calls(keyed, "backward", "conv2d_backward_weight", steps * views_per_step * per_view);
  expect_calls(keyed, "backward", "conv2d_backward_data", steps * views_per_step * (per_view - 1));
  expect_calls(keyed, "loss", "byol_loss_forward", steps * views_per_step);
  expect_calls(keyed, "loss", "byol_loss_backward", steps * views_per_step);
  expect_calls(keyed, "optimizer", "lars_update", steps);
  expect_calls(keyed, "ema", "ema_update", steps);
  expect_calls(keyed, "loss readback", "download", steps);
  for (const char* phase : {"target forward", "online forward", "backward"})
    byol_test::expect_true(keyed.count({phase, "conv2d_forward"}) + keyed.count({phase, "conv2d_backward_weight"}) > 0,
                           std::string("convolutions timed in ") + phase);

  double total = 0;
  bool nonnegative = true;
  for (const OpTime& r : rows) {
    total += r.ms;
    nonnegative = nonnegative && r.ms >= 0 && r.calls > 0;
  }
  byol_test::expect_true(nonnegative, "every row has calls > 0 and ms >= 0");
  const auto conv = keyed.find({"online forward", "conv2d_forward"});
  byol_test::expect_true(conv != keyed.end() && conv->second.ms > 0, "online forward convolutions took time");
  byol_test::expect_true(total <= wall_ms * 1.02 + 0.5, "op time <= wall time of the steps",
                         fmt(total) + " ms in ops, " + fmt(wall_ms) + " ms wall");
  byol_test::log_line("  " + std::to_string(rows.size()) + " rows, " + fmt(total / steps) + " ms/step in ops, " +
                      fmt(wall_ms / steps) + " ms/step wall");

  // Outside every range; reset; off.
  Tensor t(be, {64}, byol::DType::f32);
  be->fill(t.f32(), 1.0f, 64);
  const auto after_fill = by_key(be->op_times(true));
  expect_calls(after_fill, "(no range)", "fill", 1);
  byol_test::expect_true(after_fill.size() == keyed.size() + 1, "reset=false kept the step rows");
  byol_test::expect_true(be->op_times(false).empty(), "op_times(true) reset the sums");
  // A checkpoint's transfers have their own phase (five state buffers: params, target, both
  // BN statistics, optimizer state).
  m.save_weights(byol_test::scratch_dir() + "/op_times.safetensors", true);
  expect_calls(by_key(be->op_times(true)), "save weights", "download", 5);
  be->set_op_timing(false);
  m.step(v1, v2, 0.1f, 0.99f);
  byol_test::expect_true(be->op_times(true).empty(), "nothing is timed while timing is off");
}

BYOL_TEST("op_times/step_counts_and_times", ctx) { eager_step_profile(ctx.cpu); }

BYOL_TEST("op_times/step_counts_and_times@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  eager_step_profile(ctx.cuda);
}

// On a GPU with graphs: timing on from the first step. The two eager warm-up steps are timed op
// by op, the capture records nothing, and each replay (the capturing step's included) is one
// graph_launch; the capture still succeeds.
BYOL_TEST("op_times/graph_replay_is_one_op@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  Backend* be = ctx.cuda;
  ByolModel m(be, byol_test::small_model_config());
  m.set_use_graphs(true);
  Tensor v1 = views(be, 1.0f), v2 = views(be, 0.5f);
  be->set_op_timing(true);
  be->op_times(true);
  const int steps = 5;
  for (int i = 0; i < steps; ++i) m.step(v1, v2, 0.1f, 0.99f);
  const auto keyed = by_key(be->op_times(true));
  be->set_op_timing(false);
  byol_test::expect_true(m.graph_error().empty(), "the capture succeeded with timing on", m.graph_error());
  const int64_t launches = m.graph_launches();
  byol_test::expect_true(launches == steps - 2, "3 replays after 2 eager steps", std::to_string(launches));
  expect_calls(keyed, "graph launch", "graph_launch", launches);
  expect_calls(keyed, "online forward", "conv2d_forward", 2 * 2 * 20);
  expect_calls(keyed, "ema", "ema_update", 2);
}

}  // namespace
