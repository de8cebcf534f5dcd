// test_graph.cc: the step as a replayed graph (ByolModel's use of Backend::begin_capture /
// end_capture) against the same steps run eagerly.
// On any machine: GraphEmulator is a backend that forwards to the CPU backend and implements
// capture the way CUDA does (ops recorded with the pointers and arguments of their call, run
// only at launch; waits for the host are refused inside a capture), so every value the step
// fails to move into memory would show as a difference from eager steps. A variant that bakes
// the step scalars in at capture time proves the comparison can fail.
// On a GPU (@cuda): the real capture, against eager steps of the same backend, plus the gate
// that keeps another thread's ops out of a capture.
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>
#include <thread>

#include "byol/model.h"
#include "cuda_emu/emu_backend.h"
#include "harness.h"
#include "runner.h"

namespace {

using byol::Backend;
using byol::ByolModel;
using byol::ModelConfig;
using byol::Tensor;

class GraphEmulator : public Backend {
 public:
  explicit GraphEmulator(Backend* inner) : in_(inner) {}

  // Testing aids: bake the step scalars in at record time (what a step that passed lr and tau as
  // plain arguments would replay with); make the named op throw while being recorded.
  bool bake_scalars = false;
  std::string fail_in_capture;
  int captures = 0, launches = 0;

  class Recording : public byol::Graph {
   public:
    explicit Recording(GraphEmulator* owner) : owner_(owner) {}
    void launch() override {
      BYOL_CHECK(!owner_->recording_, "launch inside a capture");
      ++owner_->launches;
      for (auto& op : ops) op();
    }
    std::vector<std::function<void()>> ops;

   private:
    GraphEmulator* owner_;
  };

  bool begin_capture() override {
    BYOL_CHECK(!recording_, "capture inside a capture");
    recording_ = std::make_unique<Recording>(this);
    return true;
  }
  std::unique_ptr<byol::Graph> end_capture(std::string* error) override {
    if (!recording_) {
      if (error) *error = "no capture";
      return nullptr;
    }
    ++captures;
    std::unique_ptr<Recording> done = std::move(recording_);
    if (broken_) {
      broken_ = false;
      if (error) *error = "emulator: capture abandoned";
      return nullptr;
    }
    return done;
  }

  byol::DeviceType type() const override { return in_->type(); }
  std::string describe() const override { return "graph emulator(" + in_->describe() + ")"; }
  // Allocations and frees inside a capture would belong to the graph: the model makes none.
  void* alloc(size_t bytes) override {
    refuse_in_capture("alloc");
    return in_->alloc(bytes);
  }
  void release(void* p) override {
    refuse_in_capture("release");
    in_->release(p);
  }
  void upload(void* d, const void* s, size_t n) override {
    refuse_in_capture("upload");
    in_->upload(d, s, n);
  }
  void download(void* d, const void* s, size_t n) override {
    refuse_in_capture("download");
    in_->download(d, s, n);
  }
  void synchronize() override {
    refuse_in_capture("synchronize");
    in_->synchronize();
  }
  void copy(void* d, const void* s, size_t n) override {
    run("copy", [=] { in_->copy(d, s, n); });
  }
  void fill(float* d, float v, size_t n) override {
    run("fill", [=] { in_->fill(d, v, n); });
  }

  void conv2d_forward(float* out, const float* inp, const float* w, const byol::ConvShape& s) override {
    run("conv2d_forward", [=] { in_->conv2d_forward(out, inp, w, s); });
  }
  void conv2d_backward_data(float* dinp, const float* dout, const float* w, const byol::ConvShape& s) override {
    run("conv2d_backward_data", [=] { in_->conv2d_backward_data(dinp, dout, w, s); });
  }
  void conv2d_backward_weight(float* dw, const float* dout, const float* inp, const byol::ConvShape& s,
                              bool acc) override {
    run("conv2d_backward_weight", [=] { in_->conv2d_backward_weight(dw, dout, inp, s, acc); });
  }
  void batchnorm_forward_train(float* out, float* sm, float* sr, float* rm, float* rv, const float* inp,
                               const float* g, const float* b, int M, int C, float mom, float eps,
                               const byol::BnEpilogue& ep) override {
    run("batchnorm_forward_train",
        [=] { in_->batchnorm_forward_train(out, sm, sr, rm, rv, inp, g, b, M, C, mom, eps, ep); });
  }
  void batchnorm_forward_eval(float* out, const float* inp, const float* g, const float* b, const float* rm,
                              const float* rv, int M, int C, float eps, const byol::BnEpilogue& ep) override {
    run("batchnorm_forward_eval", [=] { in_->batchnorm_forward_eval(out, inp, g, b, rm, rv, M, C, eps, ep); });
  }
  void batchnorm_backward(float* dinp, float* dg, float* db, const float* dout, const float* inp, const float* sm,
                          const float* sr, const float* g, int M, int C, bool acc, const float* relu_out) override {
    run("batchnorm_backward",
        [=] { in_->batchnorm_backward(dinp, dg, db, dout, inp, sm, sr, g, M, C, acc, relu_out); });
  }
  void relu_forward(float* out, const float* inp, size_t n) override {
    run("relu_forward", [=] { in_->relu_forward(out, inp, n); });
  }
  void relu_backward(float* dinp, const float* dout, const float* out, size_t n) override {
    run("relu_backward", [=] { in_->relu_backward(dinp, dout, out, n); });
  }
  void add(float* out, const float* a, const float* b, size_t n) override {
    run("add", [=] { in_->add(out, a, b, n); });
  }
  void accumulate(float* dst, const float* src, size_t n) override {
    run("accumulate", [=] { in_->accumulate(dst, src, n); });
  }
  void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const byol::PoolShape& s) override {
    run("maxpool2d_forward", [=] { in_->maxpool2d_forward(out, argmax, inp, s); });
  }
  void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const byol::PoolShape& s) override {
    run("maxpool2d_backward", [=] { in_->maxpool2d_backward(dinp, dout, argmax, s); });
  }
  void avgpool_forward(float* out, const float* inp, int N, int HW, int C) override {
    run("avgpool_forward", [=] { in_->avgpool_forward(out, inp, N, HW, C); });
  }
  void avgpool_backward(float* dinp, const float* dout, int N, int HW, int C) override {
    run("avgpool_backward", [=] { in_->avgpool_backward(dinp, dout, N, HW, C); });
  }
  void linear_forward(float* out, const float* inp, const float* w, const float* bias, int B, int I, int O) override {
    run("linear_forward", [=] { in_->linear_forward(out, inp, w, bias, B, I, O); });
  }
  void linear_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w, int B,
                       int I, int O, bool acc) override {
    run("linear_backward", [=] { in_->linear_backward(dinp, dw, db, dout, inp, w, B, I, O, acc); });
  }
  void byol_loss_forward(float* loss, const float* p, const float* z, int B, int D, bool acc) override {
    run("byol_loss_forward", [=] { in_->byol_loss_forward(loss, p, z, B, D, acc); });
  }
  void byol_loss_backward(float* dp, const float* p, const float* z, float dloss, int B, int D) override {
    run("byol_loss_backward", [=] { in_->byol_loss_backward(dp, p, z, dloss, B, D); });
  }
  void cross_entropy_forward(float* loss, float* probs, const float* logits, const int32_t* labels, int B,
                             int K) override {
    run("cross_entropy_forward", [=] { in_->cross_entropy_forward(loss, probs, logits, labels, B, K); });
  }
  void cross_entropy_backward(float* dl, const float* probs, const int32_t* labels, float dloss, int B,
                              int K) override {
    run("cross_entropy_backward", [=] { in_->cross_entropy_backward(dl, probs, labels, dloss, B, K); });
  }
  void ema_update(float* t, const float* o, size_t n, float tau, const float* tau_device) override {
    if (recording_ && bake_scalars && tau_device) tau = *tau_device, tau_device = nullptr;
    run("ema_update", [=] { in_->ema_update(t, o, n, tau, tau_device); });
  }
  // The segment table is a host array: copied at record time, as the CUDA backend uploads it.
  void lars_update(float* p, float* m, const float* g, const byol::ParamSegment* segs, int ns,
                   const byol::LarsOptions& o) override {
    std::vector<byol::ParamSegment> table(segs, segs + ns);
    byol::LarsOptions opt = o;
    if (recording_ && bake_scalars && opt.lr_device) opt.lr = *opt.lr_device, opt.lr_device = nullptr;
    run("lars_update", [=] { in_->lars_update(p, m, g, table.data(), ns, opt); });
  }
  void sgd_update(float* p, float* m, const float* g, const byol::ParamSegment* segs, int ns,
                  const byol::SgdOptions& o) override {
    std::vector<byol::ParamSegment> table(segs, segs + ns);
    byol::SgdOptions opt = o;
    if (recording_ && bake_scalars && opt.lr_device) opt.lr = *opt.lr_device, opt.lr_device = nullptr;
    run("sgd_update", [=] { in_->sgd_update(p, m, g, table.data(), ns, opt); });
  }
  void adamw_update(float* p, float* s, const float* g, const byol::ParamSegment* segs, int ns,
                    const byol::AdamWOptions& o) override {
    std::vector<byol::ParamSegment> table(segs, segs + ns);
    byol::AdamWOptions opt = o;
    if (recording_ && bake_scalars && opt.lr_device) {
      opt.lr = *opt.lr_device;
      opt.lr_device = opt.bias_device = nullptr;  // bias corrections from the capture's step
    }
    run("adamw_update", [=] { in_->adamw_update(p, s, g, table.data(), ns, opt); });
  }
  void augment(float*, const uint8_t*, const byol::AugmentParams*, int, int, int, int, int, int) override {
    throw byol::NotSupported("graph emulator: augment");
  }
  void range_push(const char* name) noexcept override { in_->range_push(name); }
  void range_pop() noexcept override { in_->range_pop(); }

 private:
  void refuse_in_capture(const char* op) {
    if (!recording_) return;
    broken_ = true;
    BYOL_FAIL("graph emulator: ", op, " inside a capture");
  }
  void run(const char* op, std::function<void()> fn) {
    if (!recording_) return fn();
    if (fail_in_capture == op) {
      broken_ = true;
      BYOL_FAIL("graph emulator: injected capture failure in ", op);
    }
    recording_->ops.push_back(std::move(fn));
  }

  Backend* in_;
  std::unique_ptr<Recording> recording_;
  bool broken_ = false;
};

ModelConfig tiny_config(byol::OptimizerKind kind) {
  ModelConfig c = byol_test::small_model_config();
  c.seed = 11;
  c.optimizer.kind = kind;
  if (kind == byol::OptimizerKind::adamw) c.optimizer.weight_decay = 0.05f;
  // With the online classifier: a replay must read each step's labels, not the capture's.
  c.classifier_classes = 5;
  return c;
}

// Labels of step `i` for a batch of n: they change every step.
std::vector<int32_t> step_labels(int n, int i) {
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) labels[j] = (j * 3 + i * 2) % 5;
  return labels;
}

Tensor random_views(Backend* b, int N, int HW, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> host(size_t(N) * HW * HW * 3);
  for (float& x : host) x = normal(gen);
  return Tensor::from_host(b, host.data(), {N, HW, HW, 3}, byol::DType::f32);
}

// Every piece of state a step changes, as one vector per name.
std::vector<std::pair<std::string, std::vector<float>>> state_of(const ByolModel& m) {
  return {{"online params", m.online_params().to_vector_f32()},
          {"target params", m.target_params().to_vector_f32()},
          {"online stats", m.online_stats().to_vector_f32()},
          {"target stats", m.target_stats().to_vector_f32()},
          {"optimizer state", m.optimizer_state().to_vector_f32()}};
}

struct StepPlan {
  int batch, hw;
  float lr, tau;
};

// lr and tau change every step (as the schedules make them); batch 8 of 8x8, then 6 of 7x7 (a
// new shape: warm-up and capture again; 882 floats per view, so view 2's aligned offset in
// the graph inputs is not the view size), then 8 of 8x8 again.
std::vector<StepPlan> schedule() {
  std::vector<StepPlan> s;
  for (int i = 0; i < 11; ++i) {
    const bool middle = i >= 5 && i < 8;
    s.push_back({middle ? 6 : 8, middle ? 7 : 8, 0.05f + 0.01f * i, 0.9f + 0.005f * i});
  }
  return s;
}

// The largest |difference| between two models' state (parameters, optimizer, BN statistics).
double state_diff(const ByolModel& a, const ByolModel& b) {
  double worst = 0;
  const auto sa = state_of(a), sb = state_of(b);
  for (size_t k = 0; k < sa.size(); ++k)
    for (size_t j = 0; j < sa[k].second.size(); ++j)
      worst = std::max(worst, double(std::fabs(sa[k].second[j] - sb[k].second[j])));
  return worst;
}

// Runs the schedule on `graphed` (graphs on) and `eager` (graphs off); returns the largest
// |difference| over losses and state, 0 when bit-identical.
double run_pair(ByolModel& graphed, ByolModel& eager, Backend* gb, Backend* eb, float lr_scale) {
  eager.set_use_graphs(false);
  double worst = 0;
  int i = 0;
  for (const StepPlan& s : schedule()) {
    Tensor a1 = random_views(gb, s.batch, s.hw, 100 + i), a2 = random_views(gb, s.batch, s.hw, 200 + i);
    Tensor b1 = random_views(eb, s.batch, s.hw, 100 + i), b2 = random_views(eb, s.batch, s.hw, 200 + i);
    const std::vector<int32_t> labels = step_labels(s.batch, i);
    const float la = graphed.step(a1, a2, s.lr * lr_scale, s.tau, labels.data());
    const float lb = eager.step(b1, b2, s.lr * lr_scale, s.tau, labels.data());
    worst = std::max(worst, double(std::fabs(la - lb)));
    worst = std::max(worst, double(std::fabs(graphed.last_classifier().loss - eager.last_classifier().loss)));
    if (graphed.last_classifier().correct != eager.last_classifier().correct) worst = std::max(worst, 1.0);
    if (i == 3) {
      // An evaluation forward of larger images between replays: on a GPU its convolutions grow
      // the shared cuDNN workspace, which the captured graph must survive (graph.cc pins it).
      Tensor big_a = random_views(gb, 16, 24, 300), big_b = random_views(eb, 16, 24, 300);
      const std::vector<float> ya = graphed.embed(big_a).to_vector_f32(), yb = eager.embed(big_b).to_vector_f32();
      for (size_t j = 0; j < ya.size(); ++j) worst = std::max(worst, double(std::fabs(ya[j] - yb[j])));
    }
    ++i;
  }
  return std::max(worst, state_diff(graphed, eager));
}

using byol_test::fmt;

BYOL_TEST("graph/replay_matches_eager", ctx) {
  for (byol::OptimizerKind kind : {byol::OptimizerKind::lars, byol::OptimizerKind::sgd, byol::OptimizerKind::adamw}) {
    const std::string name = byol::optimizer_name(kind);
    GraphEmulator emu(ctx.cpu);
    const ModelConfig c = tiny_config(kind);
    ByolModel graphed(&emu, c), eager(ctx.cpu, c);
    const float lr_scale = kind == byol::OptimizerKind::adamw ? 0.02f : 1.0f;
    const double worst = run_pair(graphed, eager, &emu, ctx.cpu, lr_scale);
    // 11 steps: 5 of the first shape (2 eager, then 3 launches, the first right after its
    // capture), 3 of the second (2 eager + 1 launch), 3 of the first again (2 eager + 1).
    byol_test::expect_true(worst == 0, name + ": graph replay bit-identical to eager steps", "max |diff| " + fmt(worst));
    byol_test::expect_true(graphed.graph_launches() == 5 && emu.captures == 3 && emu.launches == 5,
                           name + ": 3 captures (one per shape change) and 5 launches",
                           std::to_string(emu.captures) + " captures, " + std::to_string(graphed.graph_launches()) +
                               " launches");
    byol_test::expect_true(graphed.graph_error().empty() && graphed.use_graphs(), name + ": no capture error",
                           graphed.graph_error());
    byol_test::expect_true(graphed.optimizer_steps() == 11 && graphed.online_batches_tracked().front() == 22,
                           name + ": step count and batches tracked advance on launches too");
  }
}

// The comparison above can fail: a step whose scalars were frozen at capture time (what passing
// lr and tau as plain kernel arguments would do) replays the capture's lr and tau.
BYOL_TEST("graph/baked_scalars_are_caught", ctx) {
  for (byol::OptimizerKind kind : {byol::OptimizerKind::lars, byol::OptimizerKind::adamw}) {
    GraphEmulator emu(ctx.cpu);
    emu.bake_scalars = true;
    const ModelConfig c = tiny_config(kind);
    ByolModel graphed(&emu, c), eager(ctx.cpu, c);
    const double worst = run_pair(graphed, eager, &emu, ctx.cpu, kind == byol::OptimizerKind::adamw ? 0.02f : 1.0f);
    byol_test::expect_true(worst > 0, std::string(byol::optimizer_name(kind)) + ": frozen scalars differ from eager",
                           "max |diff| " + fmt(worst));
  }
}

// A capture that fails (an op that cannot be captured) turns graphs off with the reason, and the
// step runs eagerly: nothing recorded ran, so no step is lost or doubled.
BYOL_TEST("graph/capture_failure_falls_back", ctx) {
  GraphEmulator emu(ctx.cpu);
  emu.fail_in_capture = "batchnorm_backward";
  const ModelConfig c = tiny_config(byol::OptimizerKind::lars);
  ByolModel graphed(&emu, c), eager(ctx.cpu, c);
  const double worst = run_pair(graphed, eager, &emu, ctx.cpu, 1.0f);
  byol_test::expect_true(worst == 0, "the fallback's steps equal eager steps", "max |diff| " + fmt(worst));
  byol_test::expect_true(!graphed.use_graphs() && graphed.graph_launches() == 0 && emu.captures == 1,
                         "one failed capture, then graphs off");
  byol_test::expect_true(graphed.graph_error().find("injected capture failure in batchnorm_backward") != std::string::npos,
                         "graph_error() says why", graphed.graph_error());
}

// The CPU backend cannot capture: the model says so and keeps stepping eagerly.
BYOL_TEST("graph/cpu_runs_eagerly", ctx) {
  const ModelConfig c = tiny_config(byol::OptimizerKind::lars);
  ByolModel m(ctx.cpu, c);
  for (int i = 0; i < 3; ++i) {
    Tensor v1 = random_views(ctx.cpu, 4, 8, 1 + i), v2 = random_views(ctx.cpu, 4, 8, 9 + i);
    m.step(v1, v2, 0.1f, 0.99f, step_labels(4, i).data());
  }
  byol_test::expect_true(!m.use_graphs() && m.graph_launches() == 0 && m.optimizer_steps() == 3,
                         "graphs off after the warm-up steps, every step eager");
  byol_test::expect_true(m.graph_error().find("not supported") != std::string::npos, "the reason names the backend",
                         m.graph_error());
}

// ---- the CUDA kernels under the emulator (cuda_emu/) -------------------------------------------

// Replays through the CUDA backend's kernels: the step scalars they read from memory (lr_device,
// tau_device, AdamW's bias_device) must carry each step's values into a replay.
BYOL_TEST("graph/replay_matches_eager@emu", ctx) {
  for (byol::OptimizerKind kind : {byol::OptimizerKind::lars, byol::OptimizerKind::sgd, byol::OptimizerKind::adamw}) {
    const std::string name = byol::optimizer_name(kind);
    GraphEmulator emu(ctx.emu);
    const ModelConfig c = tiny_config(kind);
    ByolModel graphed(&emu, c), eager(ctx.emu, c);
    const double worst = run_pair(graphed, eager, &emu, ctx.emu, kind == byol::OptimizerKind::adamw ? 0.02f : 1.0f);
    byol_test::expect_true(worst == 0 && graphed.graph_launches() == 5,
                           name + ": graph replay bit-identical to eager steps, 5 launches",
                           "max |diff| " + fmt(worst) + ", " + std::to_string(graphed.graph_launches()) + " launches");
  }
}

// Every kernel of the step gives the same bits when blocks and threads run in the opposite
// order (emu.h): no result depends on the order of threads between barriers or of blocks.
BYOL_TEST("emu/step_same_bits_in_either_schedule", ctx) {
  const ModelConfig c = tiny_config(byol::OptimizerKind::lars);
  ByolModel forward(ctx.emu, c), reverse(ctx.emu, c);
  forward.set_use_graphs(false);
  reverse.set_use_graphs(false);
  double worst = 0;
  for (int i = 0; i < 3; ++i) {
    Tensor a1 = random_views(ctx.emu, 8, 8, 100 + i), a2 = random_views(ctx.emu, 8, 8, 200 + i);
    const std::vector<int32_t> labels = step_labels(8, i);
    const float la = forward.step(a1, a2, 0.1f, 0.99f, labels.data());
    float lb = 0;
    byol_test::with_reverse_schedule([&] { lb = reverse.step(a1, a2, 0.1f, 0.99f, labels.data()); });
    worst = std::max(worst, double(std::fabs(la - lb)));
  }
  worst = std::max(worst, state_diff(forward, reverse));
  byol_test::expect_true(worst == 0, "3 steps: losses and state bit-identical in both schedules", "max |diff| " + fmt(worst));
}

// ---- on a GPU ----------------------------------------------------------------------------------

// begin_capture, or the case skips (a GPU without memory pools) or fails with the reason.
bool begin_capture_or_skip(Backend* b) {
  if (b->begin_capture()) return true;
  std::string why;
  b->end_capture(&why);
  byol_test::skip_if_graphs_unavailable(why);
  byol_test::expect_true(false, "begin_capture", why);
  return false;
}

BYOL_TEST("graph/replay_matches_eager@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  for (byol::OptimizerKind kind : {byol::OptimizerKind::lars, byol::OptimizerKind::adamw}) {
    const std::string name = byol::optimizer_name(kind);
    const ModelConfig c = tiny_config(kind);
    ByolModel graphed(ctx.cuda, c), eager(ctx.cuda, c);
    const double worst = run_pair(graphed, eager, ctx.cuda, ctx.cuda, kind == byol::OptimizerKind::adamw ? 0.02f : 1.0f);
    byol_test::skip_if_graphs_unavailable(graphed.graph_error());
    // The same kernels on the same data; only cuDNN algorithms that accumulate with atomics
    // (some backward-filter ones) may order sums differently between runs. Frozen scalars
    // would differ by 0.4-4.5 (graph/baked_scalars_are_caught).
    byol_test::expect_true(worst <= 1e-4, name + ": graph replay matches eager steps on the GPU",
                           "max |diff| " + fmt(worst));
    byol_test::expect_true(graphed.graph_error().empty() && graphed.graph_launches() == 5,
                           name + ": captured once per shape, 5 launches",
                           graphed.graph_error() + " (" + std::to_string(graphed.graph_launches()) + " launches)");
  }
}

// Another thread's op waits while a capture is open, then runs eagerly; it is not recorded.
BYOL_TEST("graph/gate_keeps_other_threads_out@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  Backend* b = ctx.cuda;
  Tensor x = Tensor::zeros(b, {1024}), y = Tensor::zeros(b, {1024});
  b->synchronize();
  if (!begin_capture_or_skip(b)) return;
  std::atomic<bool> done{false};
  std::thread other([&] {
    b->fill(x.f32(), 2.0f, 1024);
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const bool waited = !done.load();
  b->fill(y.f32(), 3.0f, 1024);  // recorded
  std::string error;
  std::unique_ptr<byol::Graph> graph = b->end_capture(&error);
  other.join();
  byol_test::expect_true(waited, "the other thread's op waited for the capture to end");
  byol_test::expect_true(graph != nullptr, "the capture produced a graph", error);
  byol_test::expect_true(x.to_vector_f32()[1023] == 2.0f, "the other thread's fill ran eagerly");
  byol_test::expect_true(y.to_vector_f32()[0] == 0.0f, "the recorded fill has not run before launch");
  if (graph) graph->launch();
  byol_test::expect_true(y.to_vector_f32()[0] == 3.0f, "the recorded fill runs at launch");
  // Waits for the host are refused inside a capture and abandon it.
  byol_test::expect_true(b->begin_capture(), "second begin_capture");
  byol_test::expect_error("synchronize inside a capture", [&] { b->synchronize(); }, {"synchronize", "capture"});
  error.clear();
  graph = b->end_capture(&error);
  byol_test::expect_true(graph == nullptr && error.find("synchronize") != std::string::npos,
                         "the refused op abandons the capture, and end_capture names it", error);
  b->synchronize();  // eager again
}

// Host time per step, eager against replayed, at a launch-bound size (printed, not asserted:
// the device check's benchmark measures the real configurations).
// A label outside [0, K) reaches the GPU's cross-entropy only through the backend API (the
// model checks labels on the host): the kernels flag it in the device status word, and the next
// download throws naming the op, once, in eager ops and in a replayed graph alike.
BYOL_TEST("graph/device_label_check@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  Backend* b = ctx.cuda;
  const int B = 4, K = 3;
  const std::vector<float> host_logits = {0.1f, 0.2f, 0.3f, 1.0f, -1.0f, 0.5f, 0.0f, 0.0f, 2.0f, -0.5f, 0.25f, 0.75f};
  Tensor logits = Tensor::from_host(b, host_logits.data(), {B, K}, byol::DType::f32);
  Tensor probs = Tensor::zeros(b, {B, K}), loss = Tensor::zeros(b, {1});
  const int32_t good[B] = {0, 2, 1, 2}, bad[B] = {0, 3, 1, 2};
  Tensor labels = Tensor::from_host(b, good, {B}, byol::DType::i32);
  b->cross_entropy_forward(loss.f32(), probs.f32(), logits.f32(), static_cast<const int32_t*>(labels.raw()), B, K);
  byol_test::expect_true(std::isfinite(loss.to_vector_f32()[0]), "good labels: a finite loss, no error");
  b->upload(labels.raw(), bad, sizeof(bad));
  b->cross_entropy_forward(loss.f32(), probs.f32(), logits.f32(), static_cast<const int32_t*>(labels.raw()), B, K);
  byol_test::expect_error("eager: the next download", [&] { loss.to_vector_f32(); }, {"cross_entropy_forward", "label"});
  byol_test::expect_true(std::isnan(loss.to_vector_f32()[0]), "reported once; the loss is NaN");

  // A download that fails on its own (here: a host address as its device source, which the
  // runtime refuses) does not swallow a pending bad label: that download or the next reports it.
  b->cross_entropy_forward(loss.f32(), probs.f32(), logits.f32(), static_cast<const int32_t*>(labels.raw()), B, K);
  float not_device[4] = {0, 0, 0, 0}, into[4];
  const std::string failed = byol_test::error_message([&] { b->download(into, not_device, sizeof(into)); });
  byol_test::log_line("  the failing download: " + failed);
  if (failed.find("label") == std::string::npos)
    byol_test::expect_error("after a failed download: the next download", [&] { loss.to_vector_f32(); },
                            {"cross_entropy_forward", "label"});

  b->upload(labels.raw(), good, sizeof(good));
  if (!begin_capture_or_skip(b)) return;
  b->cross_entropy_forward(loss.f32(), probs.f32(), logits.f32(), static_cast<const int32_t*>(labels.raw()), B, K);
  std::string error;
  std::unique_ptr<byol::Graph> graph = b->end_capture(&error);
  if (!byol_test::expect_true(graph != nullptr, "captured", error)) return;
  graph->launch();
  byol_test::expect_true(std::isfinite(loss.to_vector_f32()[0]), "replay with good labels: no error");
  b->upload(labels.raw(), bad, sizeof(bad));
  graph->launch();
  byol_test::expect_error("replay: the next download", [&] { loss.to_vector_f32(); }, {"cross_entropy_forward", "label"});
}

// On the simulated GPU (native/tests/cuda_sim), whose streams run only when the host waits and
// which counts the waits that find work pending: a step, eager or replayed, with or without the
// online classifier, waits once, for its loss. Elsewhere it skips (a GPU cannot count this).
BYOL_TEST("graph/one_host_wait_per_step@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  // Without stream-ordered memory pools every scratch free is a cudaFree, which waits for the
  // device: such a GPU (which also cannot capture) skips here.
  if (!begin_capture_or_skip(ctx.cuda)) return;
  {
    std::string unused;
    ctx.cuda->end_capture(&unused);  // an empty capture, discarded
  }
  const char* library = std::getenv("BYOL_CUDA_LIBRARY");
  void* handle = library ? dlopen(library, RTLD_LAZY | RTLD_NOLOAD) : nullptr;
  auto waits = handle ? reinterpret_cast<uint64_t (*)()>(dlsym(handle, "byol_sim_blocking_waits")) : nullptr;
  if (!waits) {
    if (handle) dlclose(handle);
    byol_test::skip("not the simulated GPU: only it counts the host's waits");
  }
  if (const char* sync = std::getenv("BYOL_SIM_SYNC"); sync && *sync && std::string(sync) != "0") {
    dlclose(handle);
    byol_test::skip("BYOL_SIM_SYNC runs work at once: no wait ever finds work pending");
  }
  for (bool graphs : {false, true})
    for (int classes : {0, 5}) {
      ModelConfig c = tiny_config(byol::OptimizerKind::lars);
      c.classifier_classes = classes;
      ByolModel m(ctx.cuda, c);
      m.set_use_graphs(graphs);
      Tensor v1 = random_views(ctx.cuda, 8, 16, 1), v2 = random_views(ctx.cuda, 8, 16, 2);
      for (int i = 0; i < 3; ++i) m.step(v1, v2, 0.1f, 0.99f, classes ? step_labels(8, i).data() : nullptr);
      const uint64_t before = waits();
      const int steps = 4;
      for (int i = 3; i < 3 + steps; ++i) m.step(v1, v2, 0.1f, 0.99f, classes ? step_labels(8, i).data() : nullptr);
      const uint64_t per_step_x4 = waits() - before;
      const std::string name = std::string(graphs ? "graph" : "eager") + (classes ? " + classifier" : "");
      byol_test::expect_true(per_step_x4 == steps, name + ": one host wait per step",
                             std::to_string(per_step_x4) + " waits in " + std::to_string(steps) + " steps" +
                                 (graphs ? ", " + std::to_string(m.graph_launches()) + " graph launches" : ""));
    }
  dlclose(handle);
}

BYOL_TEST("graph/step_time@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  if (const char* v = std::getenv("BYOL_TEST_NO_TIMING"); v && *v && std::string(v) != "0")
    byol_test::skip("BYOL_TEST_NO_TIMING is set (timings under a sanitizer mean nothing)");
  const ModelConfig c = tiny_config(byol::OptimizerKind::lars);
  for (bool graphs : {false, true}) {
    ByolModel m(ctx.cuda, c);
    m.set_use_graphs(graphs);
    Tensor v1 = random_views(ctx.cuda, 32, 16, 1), v2 = random_views(ctx.cuda, 32, 16, 2);
    const std::vector<int32_t> labels = step_labels(32, 0);
    for (int i = 0; i < 5; ++i) m.step(v1, v2, 0.1f, 0.99f, labels.data());
    const auto t0 = std::chrono::steady_clock::now();
    const int steps = 50;
    for (int i = 0; i < steps; ++i) m.step(v1, v2, 0.1f, 0.99f, labels.data());
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / steps;
    byol_test::log_line(std::string("  r18 w1/16 batch 32 16x16: ") + (graphs ? "graph" : "eager") + " " + fmt(ms) +
                        " ms/step" + (graphs ? " (" + std::to_string(m.graph_launches()) + " launches)" : ""));
  }
}

}  // namespace
