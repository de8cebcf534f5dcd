// test_op_times.cc: Backend::set_op_timing / op_times (native/core/op_timer.h) on real steps.
// The call counts of a step are known exactly from the network (ResNet-18: 20 convolutions,
// the stem's without a backward-data), so a count filed under the wrong phase or op, an op
// timed twice (nesting) or missed shows as a wrong number; the times must be positive where
// work ran and add up to no more than the wall time of the steps (every step ends with a sync).
// The nominal work filed with each op (flops, bytes) is checked exactly on single ops. The same
// checks run on the CPU and, @cuda, on a GPU, where a graph replay is one op and ops recorded
// into a capture are not timed.
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

// The nominal work filed with single ops outside any range: exact numbers from the shapes.
void single_op_work(Backend* be) {
  byol::ConvShape s;
  s.N = 2, s.H = 5, s.W = 5, s.C = 3, s.K = 4, s.R = 3, s.S = 3, s.stride = 1, s.pad = 1;
  Tensor x(be, {2, 5, 5, 3}, byol::DType::f32), w(be, {4, 3, 3, 3}, byol::DType::f32),
      y(be, {2, 5, 5, 4}, byol::DType::f32);
  Tensor a(be, {4, 6}, byol::DType::f32), lw(be, {5, 6}, byol::DType::f32), lb(be, {5}, byol::DType::f32),
      ly(be, {4, 5}, byol::DType::f32), da(be, {4, 6}, byol::DType::f32), dlw(be, {5, 6}, byol::DType::f32),
      dlb(be, {5}, byol::DType::f32);
  Tensor bx(be, {10, 3}, byol::DType::f32), by(be, {10, 3}, byol::DType::f32), res(be, {10, 3}, byol::DType::f32),
      stats(be, {12}, byol::DType::f32), dbx(be, {10, 3}, byol::DType::f32), g2(be, {6}, byol::DType::f32),
      dg2(be, {6}, byol::DType::f32);
  for (Tensor* t : {&x, &w, &a, &lw, &lb, &bx, &res, &stats, &g2}) be->fill(t->f32(), 0.5f, size_t(t->numel()));
  be->set_op_timing(true);
  be->op_times(true);
  be->conv2d_forward(y.f32(), x.f32(), w.f32(), s);
  be->linear_forward(ly.f32(), a.f32(), lw.f32(), lb.f32(), 4, 6, 5);
  be->linear_backward(da.f32(), dlw.f32(), dlb.f32(), ly.f32(), a.f32(), lw.f32(), 4, 6, 5, false);
  byol::BnEpilogue ep;
  ep.residual = res.f32();
  ep.relu = true;
  float* st = stats.f32();
  be->batchnorm_forward_train(by.f32(), st, st + 3, st + 6, st + 9, bx.f32(), g2.f32(), g2.f32() + 3, 10, 3, 0.1f,
                              1e-5f, ep);
  be->batchnorm_backward(dbx.f32(), dg2.f32(), dg2.f32() + 3, by.f32(), bx.f32(), st, st + 3, g2.f32(), 10, 3, false,
                         by.f32());
  be->relu_forward(by.f32(), bx.f32(), 30);
  const auto rows = by_key(be->op_times(true));
  be->set_op_timing(false);
  auto expect_work = [&](const char* op, double flops, double bytes) {
    auto it = rows.find({"(no range)", op});
    const bool found = it != rows.end();
    byol_test::expect_true(found && it->second.flops == flops && it->second.bytes == bytes,
                           std::string(op) + ": " + fmt(flops) + " flops, " + fmt(bytes) + " bytes",
                           found ? "got " + fmt(it->second.flops) + " flops, " + fmt(it->second.bytes) + " bytes"
                                 : "no row");
  };
  // 2*N*P*Q*K*C*R*S; input 150 + weights 108 + output 200 floats.
  expect_work("conv2d_forward", 2.0 * 2 * 5 * 5 * 4 * 3 * 9, 4.0 * (150 + 108 + 200));
  expect_work("linear_forward", 2.0 * 4 * 6 * 5, 4.0 * (24 + 30 + 20));
  expect_work("linear_backward", 4.0 * 4 * 6 * 5, 8.0 * (24 + 30 + 20));
  // x twice, out, residual; backward: dout, x, mask twice, dx.
  expect_work("batchnorm_forward_train", 0, 4.0 * 4 * 30);
  expect_work("batchnorm_backward", 0, 4.0 * 7 * 30);
  expect_work("relu_forward", 0, 4.0 * 2 * 30);
}

BYOL_TEST("op_times/step_counts_and_times", ctx) { eager_step_profile(ctx.cpu); }

BYOL_TEST("op_times/nominal_work", ctx) { single_op_work(ctx.cpu); }

BYOL_TEST("op_times/nominal_work@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  single_op_work(ctx.cuda);
}

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
  byol_test::skip_if_graphs_unavailable(m.graph_error());
  byol_test::expect_true(m.graph_error().empty(), "the capture succeeded with timing on", m.graph_error());
  const int64_t launches = m.graph_launches();
  byol_test::expect_true(launches == steps - 2, "3 replays after 2 eager steps", std::to_string(launches));
  expect_calls(keyed, "graph launch", "graph_launch", launches);
  expect_calls(keyed, "online forward", "conv2d_forward", 2 * 2 * 20);
  expect_calls(keyed, "ema", "ema_update", 2);
}

}  // namespace
