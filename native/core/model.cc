// model.cc: ByolModel (byol/model.h): the flat buffers, the step plan (activation buffers
// allocated once per batch shape) and the BYOL training step as a fixed sequence of backend
// calls, plus weights files with BYOL.md's names.
// Step order (one activation set serves all four forwards): target(v1) -> z1,
// target(v2) -> z2, online(v1) -> p1, loss(p1, z2) and its backward, online(v2) -> p2,
// loss(p2, z1) and its backward (gradients added), optimizer, EMA. dL/dp1 depends on p1 and
// z2 only, so view 1's backward can run before view 2's forward; the result equals
// PyTorch's single backward of the summed loss.
// Profiler ranges (Backend::range_push): "byol step" holds the phases "target forward",
// "online forward", "loss", "backward", "optimizer", "ema", "loss readback"; the networks
// inside push their own (nets.h). embed/project push "embed"/"project"; the weights files
// "save weights", "save encoder", "load weights" (their downloads and uploads); classify
// pushes "classify", and a step with the online classifier holds a "classifier" phase.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "byol/model.h"
#include "byol/safetensors.h"
#include "nets.h"
#include "optim_math.h"

namespace byol {

struct ModelNets {
  nets::ResNet encoder;
  nets::Mlp projector;
  nets::Mlp predictor;
  bool has_predictor = false;
  nets::Linear classifier;  // the online classifier (ModelConfig::classifier_classes)
  bool has_classifier = false;
  std::vector<nets::InitSpec> inits;
  size_t num_target_param_tensors = 0;
};

// Where view 1's logits start in a training plan's readback block (floats after `loss`): 16
// bytes in, so they stay as aligned as the GEMM that writes them expects.
constexpr int64_t kLogitsOffset = 4;

struct ModelPlan {
  int N = 0, H = 0, W = 0;
  bool training = false;
  Tensor memory;  // the one allocation every buffer below points into
  nets::ResNetActs enc;
  nets::MlpActs proj, pred;
  float* z_online = nullptr;  // online projection (N, out)
  float* p = nullptr;         // online prediction (N, out)
  float *z1 = nullptr, *z2 = nullptr;  // target projections of view 1 / view 2
  float *dp = nullptr, *dz = nullptr, *dfeatures = nullptr;
  float* loss = nullptr;  // [0] the BYOL loss, [1] the online classifier's cross-entropy
  // Floats from `loss` on that a step downloads: the BYOL loss alone, or with the classifier
  // both losses, 2 floats of padding, and view 1's logits (`logits` = loss + 4), so one copy
  // brings back all the host needs.
  int64_t readback = 1;
  // The online classifier (training plans of a model that has one): labels (uploaded by each
  // step before its ops), logits and softmax of view 1, and the logits' gradient.
  int32_t* labels = nullptr;
  float *logits = nullptr, *probs = nullptr, *dlogits = nullptr;
  // Graph replay (training plans on a backend that captures): the step's ops as one graph,
  // recorded after kGraphWarmupSteps eager steps of this shape, reading the views from
  // `inputs` (view 1, then view 2), where each step copies them first.
  int eager_steps = 0;
  Tensor inputs;
  std::unique_ptr<Graph> graph;
};

namespace {

std::vector<int64_t> nchw(const Tensor& t) {
  if (t.ndim() != 4) return t.shape();
  return {t.dim(0), t.dim(3), t.dim(1), t.dim(2)};
}

}  // namespace

ByolModel::ByolModel(Backend* backend, const ModelConfig& config)
    : backend_(backend), config_(config), nets_(new ModelNets()) {
  BYOL_CHECK(backend != nullptr, "ByolModel: backend is null");
  validate_model_config(config_);
  nets::LayoutBuilder layout;
  nets_->encoder = nets::build_resnet(layout, config_.encoder, "encoder");
  nets_->projector = nets::build_mlp(layout, "projector", nets_->encoder.feature_dim, config_.projector_hidden,
                                     config_.projector_out);
  // The target's encoder + projector are a prefix of the online layout: EMA is one call.
  num_target_params_ = layout.num_params;
  num_target_stats_ = layout.num_stats;
  num_target_batchnorms_ = layout.num_batchnorms();
  nets_->num_target_param_tensors = layout.params.size();
  nets_->has_predictor = config_.predictor;
  if (config_.predictor) {
    nets_->predictor = nets::build_mlp(layout, "predictor", config_.projector_out, config_.predictor_hidden,
                                       config_.projector_out);
  }
  if (config_.classifier_classes > 0) {
    // nn.Linear(feature_dim, classes) with PyTorch's default initialization, after the
    // predictor in the layout: it changes neither the other tensors' offsets nor their draws.
    nets::Linear& c = nets_->classifier;
    c.name = "classifier";
    c.range = nets::RangeNames(c.name);
    c.in = nets_->encoder.feature_dim;
    c.out = config_.classifier_classes;
    const double bound = 1.0 / std::sqrt(static_cast<double>(c.in));
    c.weight = layout.add_param("classifier.weight", {c.out, c.in}, true, {nets::InitKind::uniform, bound});
    c.bias = layout.add_param("classifier.bias", {c.out}, false, {nets::InitKind::uniform, bound});
    nets_->has_classifier = true;
  }
  num_params_ = layout.num_params;
  num_stats_ = layout.num_stats;
  params_ = layout.params;
  batchnorms_ = layout.batchnorms;
  nets_->inits = layout.inits;
  for (const ParamInfo& p : params_) segments_.push_back(p.segment);

  online_params_ = Tensor(backend_, {num_params_}, DType::f32);
  target_params_ = Tensor(backend_, {num_target_params_}, DType::f32);
  grads_ = Tensor::zeros(backend_, {num_params_});
  optimizer_state_ = Tensor::zeros(backend_, {optimizer_state_floats(config_.optimizer.kind, num_params_)});
  online_stats_ = Tensor(backend_, {num_stats_}, DType::f32);
  target_stats_ = Tensor(backend_, {num_target_stats_}, DType::f32);
  online_tracked_.assign(batchnorms_.size(), 0);
  target_tracked_.assign(static_cast<size_t>(num_target_batchnorms_), 0);
  step_scalars_ = Tensor::zeros(backend_, {kNumStepScalars});
  init_parameters();
}

ByolModel::~ByolModel() = default;

int ByolModel::feature_dim() const { return nets_->encoder.feature_dim; }

void ByolModel::init_parameters() {
  std::vector<float> host(static_cast<size_t>(num_params_));
  nets::Rng rng(config_.seed, 0);
  nets::init_params(host.data(), params_, nets_->inits, params_.size(), rng);
  backend_->upload(online_params_.raw(), host.data(), host.size() * sizeof(float));
  if (config_.target_init == TargetInit::copy) {
    backend_->copy(target_params_.raw(), online_params_.raw(), target_params_.nbytes());
  } else {
    nets::Rng target_rng(config_.seed, 1);
    nets::init_params(host.data(), params_, nets_->inits, nets_->num_target_param_tensors, target_rng);
    backend_->upload(target_params_.raw(), host.data(), target_params_.nbytes());
  }
  // Running statistics start at mean 0, variance 1 (PyTorch).
  std::vector<float> stats(static_cast<size_t>(num_stats_), 0.0f);
  for (const BatchNormInfo& bn : batchnorms_)
    std::fill(stats.begin() + bn.offset + bn.channels, stats.begin() + bn.offset + 2 * bn.channels, 1.0f);
  backend_->upload(online_stats_.raw(), stats.data(), online_stats_.nbytes());
  backend_->upload(target_stats_.raw(), stats.data(), target_stats_.nbytes());
}

size_t ByolModel::activation_bytes() const {
  size_t total = 0;
  if (train_plan_) total += train_plan_->memory.nbytes();
  if (eval_plan_) total += eval_plan_->memory.nbytes();
  return total;
}

// ---------------------------------------------------------------------------------------
// Plans.

namespace {

void carve_plan(const ModelNets& nets, const ModelConfig& config, int N, int H, int W, bool training,
                nets::BufferCarver& carver, ModelPlan* plan) {
  plan->N = N;
  plan->H = H;
  plan->W = W;
  plan->training = training;
  nets::plan_resnet(nets.encoder, N, H, W, training, carver, &plan->enc);
  nets::plan_mlp(nets.projector, N, training, carver, &plan->proj);
  const int64_t out = static_cast<int64_t>(N) * config.projector_out;
  carver.request(&plan->z_online, out);
  if (!training) return;
  if (nets.has_predictor) {
    nets::plan_mlp(nets.predictor, N, true, carver, &plan->pred);
    carver.request(&plan->p, out);
    carver.request(&plan->dz, out);
  }
  carver.request(&plan->z1, out);
  carver.request(&plan->z2, out);
  carver.request(&plan->dp, out);
  carver.request(&plan->dfeatures, static_cast<int64_t>(N) * nets.encoder.feature_dim);
  if (nets.has_classifier) {
    const int64_t logits = static_cast<int64_t>(N) * nets.classifier.out;
    plan->readback = kLogitsOffset + logits;
    carver.request(&plan->loss, plan->readback);  // logits: set after the carver assigns
    carver.request(&plan->labels, N);
    carver.request(&plan->probs, logits);
    carver.request(&plan->dlogits, logits);
  } else {
    carver.request(&plan->loss, 2);
  }
}

// Re-plans `slot` for (N, H, W) when the shape changed. The old allocation is kept when the
// new plan fits in it (a smaller last batch), and freed before a larger one is made.
ModelPlan& get_plan(std::unique_ptr<ModelPlan>& slot, Backend* backend, const ModelNets& nets,
                    const ModelConfig& config, int N, int H, int W, bool training) {
  if (slot && slot->N == N && slot->H == H && slot->W == W) return *slot;
  auto plan = std::make_unique<ModelPlan>();
  nets::BufferCarver carver;
  carve_plan(nets, config, N, H, W, training, carver, plan.get());
  if (slot && slot->memory.nbytes() >= carver.bytes()) {
    plan->memory = slot->memory;
  } else {
    slot.reset();
    plan->memory = Tensor(backend, {static_cast<int64_t>(std::max<size_t>(carver.bytes(), 1))}, DType::u8);
  }
  carver.assign(plan->memory.raw());
  if (training && nets.has_classifier) plan->logits = plan->loss + kLogitsOffset;
  slot = std::move(plan);
  return *slot;
}

}  // namespace

ModelPlan& ByolModel::train_plan(int N, int H, int W) {
  return get_plan(train_plan_, backend_, *nets_, config_, N, H, W, true);
}
ModelPlan& ByolModel::eval_plan(int N, int H, int W) {
  return get_plan(eval_plan_, backend_, *nets_, config_, N, H, W, false);
}

void ByolModel::check_images(const Tensor& images, const char* name, int min_batch) const {
  BYOL_CHECK(images.defined(), "expected a tensor for ", name, " but received an empty one");
  BYOL_CHECK(images.dtype() == DType::f32, "expected float32 data for ", name, " but received ",
             dtype_name(images.dtype()));
  BYOL_CHECK(images.ndim() == 4, "expected a 4-D image batch (N, C, H, W) for ", name, " but received shape ",
             shape_string(images.shape()));
  BYOL_CHECK(images.backend() == backend_, "expected ", name, " on the model's device (",
             device_name(backend_->type()), ") but it is on ", device_name(images.device()),
             images.device() == backend_->type() ? " (another device of that type)" : "");
  const std::vector<int64_t> shape = nchw(images);
  BYOL_CHECK(shape[1] == config_.encoder.in_channels, "expected ", config_.encoder.in_channels, " channels for ",
             name, " (encoder.inChannels) but received shape ", shape_string(shape), " (N, C, H, W)");
  BYOL_CHECK(shape[0] >= min_batch, "expected a batch of at least ", min_batch, " images for ", name,
             min_batch > 1 ? " (BatchNorm needs 2 samples for batch statistics)" : "", " but received shape ",
             shape_string(shape));
  BYOL_CHECK(shape[2] >= 1 && shape[3] >= 1, "expected images of at least 1x1 pixels for ", name,
             " but received shape ", shape_string(shape));
  BYOL_CHECK(shape[0] <= (1 << 24) && shape[2] <= (1 << 16) && shape[3] <= (1 << 16), "image batch ", name,
             " of shape ", shape_string(shape), " is too large");
}

// ---------------------------------------------------------------------------------------
// The step.

namespace {

// Eager steps of a batch shape before its step is captured: the first use of a shape builds
// the backend's caches (convolution plans and algorithms, workspaces, the optimizer's segment
// table), which must not happen inside a capture.
constexpr int kGraphWarmupSteps = 2;

// Where view 2 starts in a plan's graph inputs: 256-byte aligned like the views the warm-up
// steps read (libraries pick kernels by pointer alignment; the capture must see the same).
int64_t view2_offset(int64_t view_floats) { return (view_floats + 63) / 64 * 64; }

}  // namespace

void ByolModel::set_use_graphs(bool on) {
  use_graphs_ = on;
  if (!on && train_plan_) train_plan_->graph.reset();
}

// The step's ops, from the target forwards to the EMA, reading every value that changes
// between steps from memory: the views x1, x2 and step_scalars_ (lr, tau, AdamW's bias
// corrections). `optimizer_step` (1-based) only feeds the host-side argument checks.
void ByolModel::step_ops(ModelPlan& plan, const float* x1, const float* x2, float lr, float tau,
                         int64_t optimizer_step) {
  Backend* be = backend_;
  const ModelNets& nets = *nets_;
  const int N = plan.N;
  const nets::BnMode mode{true, config_.bn_momentum, config_.bn_eps};
  const int D = config_.projector_out;
  float* online = online_params_.f32();
  float* target = target_params_.f32();
  float* grads = grads_.f32();
  float* online_stats = online_stats_.f32();
  float* target_stats = target_stats_.f32();
  const float* scalars = step_scalars_.f32();

  // Target network: training-mode BatchNorm (batch statistics, its own running stats).
  auto target_forward = [&](const float* x, float* z) {
    const Range range(be, "target forward");
    nets::resnet_forward(be, nets.encoder, plan.enc, x, target, target_stats, mode);
    nets::mlp_forward(be, nets.projector, plan.proj, z, plan.enc.features, target, target_stats, mode);
  };
  auto online_forward = [&](const float* x) -> const float* {
    const Range range(be, "online forward");
    nets::resnet_forward(be, nets.encoder, plan.enc, x, online, online_stats, mode);
    nets::mlp_forward(be, nets.projector, plan.proj, plan.z_online, plan.enc.features, online, online_stats, mode);
    if (!nets.has_predictor) return plan.z_online;
    nets::mlp_forward(be, nets.predictor, plan.pred, plan.p, plan.z_online, online, online_stats, mode);
    return plan.p;
  };
  // The loss range holds its gradient dL/dp too; backward starts at the predictor.
  auto loss = [&](const float* p, const float* z, bool accumulate) {
    const Range range(be, "loss");
    be->byol_loss_forward(plan.loss, p, z, N, D, accumulate);
    be->byol_loss_backward(plan.dp, p, z, 1.0f, N, D);
  };
  auto online_backward = [&](const float* x, bool accumulate) {
    const Range range(be, "backward");
    const float* dz = plan.dp;
    if (nets.has_predictor) {
      nets::mlp_backward(be, nets.predictor, plan.pred, plan.dz, plan.dp, plan.z_online, online, grads, accumulate);
      dz = plan.dz;
    }
    nets::mlp_backward(be, nets.projector, plan.proj, plan.dfeatures, dz, plan.enc.features, online, grads,
                       accumulate);
    nets::resnet_backward(be, nets.encoder, plan.enc, plan.dfeatures, x, online, grads, accumulate);
  };

  target_forward(x1, plan.z1);
  target_forward(x2, plan.z2);

  const float* p1 = online_forward(x1);
  if (nets.has_classifier) {
    // On stop_gradient(y1): its gradient goes to the classifier's tensors only (=), and the
    // encoder's backward below never sees it.
    const Range range(be, nets.classifier.range.forward.c_str());
    const nets::Linear& c = nets.classifier;
    be->linear_forward(plan.logits, plan.enc.features, online + c.weight, online + c.bias, N, c.in, c.out);
    be->cross_entropy_forward(plan.loss + 1, plan.probs, plan.logits, plan.labels, N, c.out);
    be->cross_entropy_backward(plan.dlogits, plan.probs, plan.labels, 1.0f, N, c.out);
    be->linear_backward(nullptr, grads + c.weight, grads + c.bias, plan.dlogits, plan.enc.features, online + c.weight,
                        N, c.in, c.out, false);
  }
  loss(p1, plan.z2, false);
  online_backward(x1, false);

  const float* p2 = online_forward(x2);
  loss(p2, plan.z1, true);
  online_backward(x2, true);

  {
    const Range range(be, "optimizer");
    optimizer_update(be, config_.optimizer, lr, optimizer_step, online, optimizer_state_.f32(), grads, segments_,
                     scalars);
  }
  {
    const Range range(be, "ema");
    be->ema_update(target, online, static_cast<size_t>(num_target_params_), tau, scalars + kScalarTau);
  }
}

// Records step_ops for `plan` reading the views from plan.inputs. On failure (the backend
// cannot capture, or an op could not be captured) graphs stay off for this model and the
// reason is kept in graph_error_; nothing recorded has run, so the step then runs eagerly.
void ByolModel::capture_step(ModelPlan& plan, float lr, float tau, int64_t optimizer_step, int64_t view_floats) {
  // Allocated before the capture: an allocation inside it would belong to the graph.
  if (!plan.inputs.defined()) plan.inputs = Tensor(backend_, {2 * view2_offset(view_floats)}, DType::f32);
  const float* x1 = plan.inputs.f32();
  const float* x2 = x1 + view2_offset(view_floats);
  std::string error;
  if (!backend_->begin_capture()) {
    plan.inputs = Tensor();
    backend_->end_capture(&error);  // what the backend says about it
    graph_error_ = error;
    use_graphs_ = false;
    return;
  }
  try {
    step_ops(plan, x1, x2, lr, tau, optimizer_step);
  } catch (const std::exception& e) {
    backend_->end_capture(&error);
    graph_error_ = std::string("capturing the step failed: ") + e.what();
    use_graphs_ = false;
    return;
  }
  plan.graph = backend_->end_capture(&error);
  if (!plan.graph) {
    graph_error_ = error.empty() ? std::string("capturing the step failed") : error;
    use_graphs_ = false;
  }
}

float ByolModel::step(const Tensor& view1, const Tensor& view2, float lr, float tau, const int32_t* labels) {
  const Range step_range(backend_, "byol step");
  check_images(view1, "view1", 2);
  check_images(view2, "view2", 2);
  BYOL_CHECK(view1.shape() == view2.shape(), "expected view2 to have the shape of view1 ", shape_string(nchw(view1)),
             " but received ", shape_string(nchw(view2)));
  BYOL_CHECK(std::isfinite(lr) && lr >= 0, "expected lr >= 0 but received ", lr);
  BYOL_CHECK(std::isfinite(tau) && tau >= 0 && tau <= 1, "expected tau in [0, 1] but received ", tau);
  const int N = static_cast<int>(view1.dim(0)), H = static_cast<int>(view1.dim(1)),
            W = static_cast<int>(view1.dim(2));
  const int classes = config_.classifier_classes;
  if (classes > 0) {
    BYOL_CHECK(labels != nullptr, "expected labels (", N, " class indices) for the online classifier (classifier.classes ",
               classes, ") but received none");
    for (int i = 0; i < N; ++i)
      BYOL_CHECK(labels[i] >= 0 && labels[i] < classes, "expected labels in [0, ", classes,
                 ") (classifier.classes) but labels[", i, "] is ", labels[i]);
  } else {
    BYOL_CHECK(labels == nullptr, "received labels but the model has no online classifier (set classifier.classes)");
  }
  ModelPlan& plan = train_plan(N, H, W);
  Backend* be = backend_;
  const int64_t optimizer_step = optimizer_steps_ + 1;

  // This step's scalars, in backend memory before the ops that read them (stream-ordered).
  float scalars[kNumStepScalars] = {lr, tau, 1.0f, 1.0f};
  if (config_.optimizer.kind == OptimizerKind::adamw) {
    const optim::AdamWBias bias = optim::adamw_bias(config_.optimizer.beta1, config_.optimizer.beta2, optimizer_step);
    scalars[kScalarAdamBias1] = bias.bias1;
    scalars[kScalarAdamBias2Sqrt] = bias.bias2_sqrt;
  }
  be->upload(step_scalars_.raw(), scalars, sizeof(scalars));
  if (classes > 0) be->upload(plan.labels, labels, static_cast<size_t>(N) * sizeof(int32_t));

  const int64_t view_floats = view1.numel();
  if (use_graphs_ && !plan.graph && plan.eager_steps >= kGraphWarmupSteps)
    capture_step(plan, lr, tau, optimizer_step, view_floats);
  if (plan.graph) {
    const Range range(be, "graph launch");
    be->copy(plan.inputs.raw(), view1.raw(), view1.nbytes());
    be->copy(plan.inputs.f32() + view2_offset(view_floats), view2.raw(), view2.nbytes());
    plan.graph->launch();
    ++graph_launches_;
  } else {
    step_ops(plan, view1.f32(), view2.f32(), lr, tau, optimizer_step);
    ++plan.eager_steps;
  }

  for (auto& count : online_tracked_) count += 2;
  for (auto& count : target_tracked_) count += 2;
  optimizer_steps_ = optimizer_step;

  // The step's one host synchronization: on a GPU this range is the wait for the queue. One
  // copy brings the losses and (with the classifier) view 1's logits.
  const Range range(be, "loss readback");
  std::vector<float> values(static_cast<size_t>(plan.readback));
  be->download(values.data(), plan.loss, values.size() * sizeof(float));
  last_classifier_ = ClassifierStats();
  if (classes > 0) {
    // The argmax of each row of view 1's logits (the first of equal maxima) against its label.
    const float* logits = values.data() + kLogitsOffset;
    int64_t correct = 0;
    for (int i = 0; i < N; ++i) {
      const float* row = logits + static_cast<size_t>(i) * classes;
      correct += std::max_element(row, row + classes) - row == labels[i];
    }
    last_classifier_ = {values[1], correct, N};
  }
  return values[0];
}

// The eval-mode encoder forward that embed, classify and project share: checks `images`, plans
// their shape and runs the online (or target) encoder with running statistics; y is left in
// the returned plan's enc.features.
ModelPlan& ByolModel::eval_encoder(const Tensor& images, bool target) {
  check_images(images, "images", 1);
  ModelPlan& plan = eval_plan(static_cast<int>(images.dim(0)), static_cast<int>(images.dim(1)),
                              static_cast<int>(images.dim(2)));
  const nets::BnMode mode{false, config_.bn_momentum, config_.bn_eps};
  nets::resnet_forward(backend_, nets_->encoder, plan.enc, images.f32(),
                       target ? target_params_.f32() : online_params_.f32(),
                       target ? target_stats_.f32() : online_stats_.f32(), mode);
  return plan;
}

Tensor ByolModel::embed(const Tensor& images) {
  const Range range(backend_, "embed");
  ModelPlan& plan = eval_encoder(images, false);
  Tensor y(backend_, {images.dim(0), nets_->encoder.feature_dim}, DType::f32);
  backend_->copy(y.raw(), plan.enc.features, y.nbytes());
  return y;
}

Tensor ByolModel::classify(const Tensor& images) {
  const Range range(backend_, "classify");
  BYOL_CHECK(nets_->has_classifier, "classify: the model has no online classifier (set classifier.classes)");
  ModelPlan& plan = eval_encoder(images, false);
  const nets::Linear& c = nets_->classifier;
  const float* online = online_params_.f32();
  Tensor logits(backend_, {images.dim(0), c.out}, DType::f32);
  backend_->linear_forward(logits.f32(), plan.enc.features, online + c.weight, online + c.bias,
                           static_cast<int>(images.dim(0)), c.in, c.out);
  return logits;
}

Tensor ByolModel::project(const Tensor& images, bool target) {
  const Range range(backend_, "project");
  ModelPlan& plan = eval_encoder(images, target);
  const nets::BnMode mode{false, config_.bn_momentum, config_.bn_eps};
  float* params = target ? target_params_.f32() : online_params_.f32();
  float* stats = target ? target_stats_.f32() : online_stats_.f32();
  nets::mlp_forward(backend_, nets_->projector, plan.proj, plan.z_online, plan.enc.features, params, stats, mode);
  Tensor z(backend_, {images.dim(0), config_.projector_out}, DType::f32);
  backend_->copy(z.raw(), plan.z_online, z.nbytes());
  return z;
}

// ---------------------------------------------------------------------------------------
// Weights files.

namespace {

constexpr const char* kFormat = "byol.weights.v1";

// Everything a weights file holds, on the host.
struct HostState {
  std::vector<float> online, target, online_stats, target_stats, optimizer;
  std::vector<int64_t> online_tracked, target_tracked;
};

// One tensor of a file: where its data lives in HostState.
struct Entry {
  std::string name;
  std::vector<int64_t> shape;
  float* f32 = nullptr;
  int64_t* i64 = nullptr;  // num_batches_tracked (shape [])
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::string file_name(const std::string& internal, bool target) {
  if (target) return "target." + internal;
  // BYOL.md: the predictor has no network prefix; nor has the online classifier (online only too).
  if (starts_with(internal, "predictor.") || starts_with(internal, "classifier.")) return internal;
  return "online." + internal;
}

// The entries of one network's parameters and BN buffers in PyTorch state_dict order.
void network_entries(const std::vector<ParamInfo>& params, size_t num_params, const std::vector<BatchNormInfo>& bns,
                     size_t num_bns, float* values, float* stats, int64_t* tracked,
                     const std::function<std::string(const std::string&)>& rename, std::vector<Entry>* out) {
  std::map<std::string, size_t> bn_by_bias;
  for (size_t b = 0; b < num_bns; ++b) bn_by_bias[bns[b].name + ".bias"] = b;
  for (size_t i = 0; i < num_params; ++i) {
    const ParamInfo& p = params[i];
    out->push_back({rename(p.name), p.shape, values + p.segment.offset, nullptr});
    auto found = bn_by_bias.find(p.name);
    if (found == bn_by_bias.end()) continue;
    const BatchNormInfo& bn = bns[found->second];
    const std::string base = rename(bn.name);
    out->push_back({base + ".running_mean", {bn.channels}, stats + bn.offset, nullptr});
    out->push_back({base + ".running_var", {bn.channels}, stats + bn.offset + bn.channels, nullptr});
    out->push_back({base + ".num_batches_tracked", {}, nullptr, tracked + found->second});
  }
}

struct WeightsLayout {
  HostState host;
  std::vector<Entry> entries;           // model tensors (no optimizer)
  std::vector<Entry> optimizer_entries;  // optimizer.*
};

std::string offsets_json(const std::vector<ParamInfo>& params) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < params.size(); ++i) {
    os << (i ? "," : "") << "[" << json_quote(params[i].name) << "," << params[i].segment.offset << ","
       << params[i].segment.size << "]";
  }
  os << "]";
  return os.str();
}

// Builds the entry list over freshly sized host buffers (the caller fills or reads them).
void make_layout(const ByolModel& m, size_t num_target_tensors, WeightsLayout* w) {
  HostState& h = w->host;
  h.online.assign(static_cast<size_t>(m.num_params()), 0.0f);
  h.target.assign(static_cast<size_t>(m.num_target_params()), 0.0f);
  h.online_stats.assign(static_cast<size_t>(m.num_stats()), 0.0f);
  h.target_stats.assign(static_cast<size_t>(m.num_target_stats()), 0.0f);
  h.optimizer.assign(static_cast<size_t>(m.optimizer_state().numel()), 0.0f);
  h.online_tracked.assign(m.batchnorms().size(), 0);
  h.target_tracked.assign(static_cast<size_t>(m.num_target_batchnorms()), 0);
  auto online_name = [](const std::string& n) { return file_name(n, false); };
  auto target_name = [](const std::string& n) { return file_name(n, true); };
  network_entries(m.params(), m.params().size(), m.batchnorms(), m.batchnorms().size(), h.online.data(),
                  h.online_stats.data(), h.online_tracked.data(), online_name, &w->entries);
  network_entries(m.params(), num_target_tensors, m.batchnorms(), static_cast<size_t>(m.num_target_batchnorms()),
                  h.target.data(), h.target_stats.data(), h.target_tracked.data(), target_name, &w->entries);
  const int64_t n = m.num_params();
  if (m.config().optimizer.kind == OptimizerKind::adamw) {
    w->optimizer_entries.push_back({"optimizer.exp_avg", {n}, h.optimizer.data(), nullptr});
    w->optimizer_entries.push_back({"optimizer.exp_avg_sq", {n}, h.optimizer.data() + n, nullptr});
  } else {
    w->optimizer_entries.push_back({"optimizer.momentum", {n}, h.optimizer.data(), nullptr});
  }
}

size_t count_target_tensors(const std::vector<ParamInfo>& params, int64_t num_target_params) {
  size_t n = 0;
  while (n < params.size() && params[n].segment.offset < num_target_params) ++n;
  return n;
}

void download_state(const ByolModel& m, HostState* h) {
  Backend* be = m.backend();
  be->download(h->online.data(), m.online_params().raw(), m.online_params().nbytes());
  be->download(h->target.data(), m.target_params().raw(), m.target_params().nbytes());
  be->download(h->online_stats.data(), m.online_stats().raw(), m.online_stats().nbytes());
  be->download(h->target_stats.data(), m.target_stats().raw(), m.target_stats().nbytes());
  be->download(h->optimizer.data(), m.optimizer_state().raw(), m.optimizer_state().nbytes());
  h->online_tracked = m.online_batches_tracked();
  h->target_tracked = m.target_batches_tracked();
}

SafeTensorSource source_of(const Entry& e) {
  SafeTensorSource s;
  s.name = e.name;
  s.shape = e.shape;
  if (e.i64) {
    s.dtype = SafeDType::I64;
    s.data = e.i64;
    s.nbytes = sizeof(int64_t);
  } else {
    s.dtype = SafeDType::F32;
    s.data = e.f32;
    s.nbytes = static_cast<size_t>(e.numel()) * sizeof(float);
  }
  return s;
}

}  // namespace

std::vector<ByolModel::NamedHostTensor> ByolModel::named_tensors(bool with_optimizer) const {
  WeightsLayout w;
  make_layout(*this, count_target_tensors(params_, num_target_params_), &w);
  download_state(*this, &w.host);
  std::vector<NamedHostTensor> out;
  auto add = [&](const Entry& e) {
    NamedHostTensor t;
    t.name = e.name;
    t.shape = e.shape;
    if (e.i64) {
      t.is_int64 = true;
      t.i64 = *e.i64;
    } else {
      t.f32.assign(e.f32, e.f32 + e.numel());
    }
    out.push_back(std::move(t));
  };
  for (const Entry& e : w.entries) add(e);
  if (with_optimizer)
    for (const Entry& e : w.optimizer_entries) add(e);
  return out;
}

void ByolModel::save_weights(const std::string& path, bool with_optimizer) const {
  const Range range(backend_, "save weights");
  WeightsLayout w;
  make_layout(*this, count_target_tensors(params_, num_target_params_), &w);
  download_state(*this, &w.host);
  std::vector<SafeTensorSource> sources;
  for (const Entry& e : w.entries) sources.push_back(source_of(e));
  std::map<std::string, std::string> metadata = {{"byol.format", kFormat},
                                                 {"byol.config", model_config_json(config_)}};
  if (with_optimizer) {
    for (const Entry& e : w.optimizer_entries) sources.push_back(source_of(e));
    metadata["byol.optimizer"] = optimizer_name(config_.optimizer.kind);
    metadata["byol.optimizer_steps"] = std::to_string(optimizer_steps_);
    metadata["byol.param_offsets"] = offsets_json(params_);
  }
  write_safetensors(path, sources, metadata);
}

void ByolModel::save_encoder(const std::string& path) const {
  const Range range(backend_, "save encoder");
  WeightsLayout w;
  make_layout(*this, count_target_tensors(params_, num_target_params_), &w);
  download_state(*this, &w.host);
  std::vector<SafeTensorSource> sources;
  const std::string prefix = "online.encoder.";
  for (const Entry& e : w.entries) {
    if (!starts_with(e.name, prefix)) continue;
    SafeTensorSource s = source_of(e);
    s.name = e.name.substr(prefix.size());
    sources.push_back(s);
  }
  write_safetensors(path, sources,
                    {{"byol.format", "byol.encoder.v1"},
                     {"byol.config", model_config_json(config_)}});
}

namespace {

void read_entry(const SafeTensorsFile& file, const Entry& e) {
  const SafeTensor& t = file.at(e.name);
  if (e.i64) {
    BYOL_CHECK(t.numel() == 1 && t.shape().size() <= 1, "weights file ", file.path(), ": expected ", e.name,
               " to be a scalar but it has shape ", shape_string(t.shape()));
    BYOL_CHECK(t.dtype() == SafeDType::I64 || t.dtype() == SafeDType::I32, "weights file ", file.path(),
               ": expected ", e.name, " to be int64 but it is ", safe_dtype_name(t.dtype()));
    *e.i64 = t.dtype() == SafeDType::I64 ? t.to_i64()[0] : t.to_i32()[0];
    return;
  }
  BYOL_CHECK(t.dtype() == SafeDType::F32, "weights file ", file.path(), ": expected ", e.name,
             " to be F32 but it is ", safe_dtype_name(t.dtype()));
  BYOL_CHECK(t.shape() == e.shape, "weights file ", file.path(), ": expected ", e.name, " of shape ",
             shape_string(e.shape), " but it has shape ", shape_string(t.shape()),
             " (was it saved from another encoder arch, width or head size?)");
  std::vector<float> v = t.to_f32();
  std::copy(v.begin(), v.end(), e.f32);
}

// Up to 8 names, comma-separated ("..." after them when there are more).
std::string name_list(const std::vector<std::string>& names) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < 8; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > 8) os << ", ...";
  return os.str();
}

void fail_if_missing(const SafeTensorsFile& file, const std::vector<std::string>& missing, const char* what) {
  if (missing.empty()) return;
  // Names close to the first missing one usually show a prefix or architecture mismatch.
  const std::vector<std::string> similar = file.similar_names(missing[0], 3);
  std::string hint;
  for (size_t i = 0; i < similar.size(); ++i) hint += (i ? ", " : "") + similar[i];
  BYOL_FAIL(what, file.path(), " lacks ", missing.size(), " tensors this model needs: ", name_list(missing),
            similar.empty() ? "" : " (names close to the first: " + hint + ")");
}

void fail_if_unexpected(const SafeTensorsFile& file, const std::vector<std::string>& unexpected, const char* what,
                        const ModelConfig& config) {
  if (unexpected.empty()) return;
  BYOL_FAIL(what, file.path(), " has ", unexpected.size(), " tensors this model does not: ", name_list(unexpected),
            " (this model: ", model_config_json(config), ")");
}

}  // namespace

bool ByolModel::load_weights(const std::string& path) {
  const Range range(backend_, "load weights");
  return load_state(SafeTensorsFile::read(path), "", true);
}

bool ByolModel::load_state(const SafeTensorsFile& file, const std::string& prefix, bool strict) {
  const std::string& path = file.path();
  WeightsLayout w;
  make_layout(*this, count_target_tensors(params_, num_target_params_), &w);
  for (Entry& e : w.entries) e.name = prefix + e.name;
  for (Entry& e : w.optimizer_entries) e.name = prefix + e.name;

  std::set<std::string> known;
  std::vector<std::string> missing;
  for (const Entry& e : w.entries) {
    known.insert(e.name);
    if (!file.contains(e.name)) missing.push_back(e.name);
  }
  fail_if_missing(file, missing, "weights file ");
  bool has_optimizer = false;
  for (const Entry& e : w.optimizer_entries) has_optimizer = has_optimizer || file.contains(e.name);
  // State of another optimizer (e.g. AdamW moments for a LARS model) is named as such.
  const auto& meta = file.metadata();
  auto kind = meta.find("byol.optimizer");
  bool any_optimizer_tensor = false;
  for (const std::string& name : file.names())
    any_optimizer_tensor = any_optimizer_tensor || starts_with(name, prefix + "optimizer.");
  if (kind != meta.end() && any_optimizer_tensor) {
    BYOL_CHECK(kind->second == optimizer_name(config_.optimizer.kind), "weights file ", path, " holds ", kind->second,
               " optimizer state but this model uses ", optimizer_name(config_.optimizer.kind),
               " (create the model with optimizer.name '", kind->second, "', or save the weights without the optimizer)");
  }
  if (strict) {
    std::vector<std::string> unexpected;
    for (const std::string& name : file.names()) {
      if (!starts_with(name, prefix) || known.count(name)) continue;
      bool is_optimizer = false;
      for (const Entry& e : w.optimizer_entries) is_optimizer = is_optimizer || e.name == name;
      if (!is_optimizer) unexpected.push_back(name);
    }
    fail_if_unexpected(file, unexpected, "weights file ", config_);
  }
  for (const Entry& e : w.entries) read_entry(file, e);

  int64_t steps = 0;
  if (has_optimizer) {
    for (const Entry& e : w.optimizer_entries) read_entry(file, e);
    auto count = meta.find("byol.optimizer_steps");
    if (count != meta.end()) {
      steps = parse_json(count->second, "metadata byol.optimizer_steps of " + path).as_int64("byol.optimizer_steps");
      BYOL_CHECK(steps >= 0, "weights file ", path, ": byol.optimizer_steps is negative (", steps, ")");
    }
    auto offsets = meta.find("byol.param_offsets");
    if (offsets != meta.end()) {
      BYOL_CHECK(offsets->second == offsets_json(params_), "weights file ", path,
                 ": the optimizer state was saved for another parameter layout (byol.param_offsets differs)");
    }
  }

  // Everything was read and checked: only now does the model change.
  const HostState& h = w.host;
  backend_->upload(online_params_.raw(), h.online.data(), online_params_.nbytes());
  backend_->upload(target_params_.raw(), h.target.data(), target_params_.nbytes());
  backend_->upload(online_stats_.raw(), h.online_stats.data(), online_stats_.nbytes());
  backend_->upload(target_stats_.raw(), h.target_stats.data(), target_stats_.nbytes());
  backend_->upload(optimizer_state_.raw(), h.optimizer.data(), optimizer_state_.nbytes());
  online_tracked_ = h.online_tracked;
  target_tracked_ = h.target_tracked;
  optimizer_steps_ = steps;
  return has_optimizer;
}

std::vector<std::string> ByolModel::load_encoder(const std::string& path, bool to_target) {
  const Range range(backend_, "load encoder");
  const SafeTensorsFile file = SafeTensorsFile::read(path);
  const std::string online = "online.encoder.", target = "target.encoder.";
  BYOL_CHECK(!file.contains(online + "conv1.weight"), "encoder file ", path, " holds a whole BYOL model (",
             online, "*): load it with loadWeights(), or write the encoder alone with saveEncoder()");
  WeightsLayout w;
  make_layout(*this, count_target_tensors(params_, num_target_params_), &w);
  download_state(*this, &w.host);  // what the file does not replace stays as it is
  std::vector<Entry> wanted;        // entries renamed to the file's (torchvision) names
  std::set<std::string> known;
  std::vector<std::string> missing;
  const std::string tracked = ".num_batches_tracked";
  for (const Entry& e : w.entries) {
    const bool is_online = starts_with(e.name, online);
    if (!is_online && !(to_target && starts_with(e.name, target))) continue;
    Entry r = e;
    r.name = e.name.substr(is_online ? online.size() : target.size());
    const bool optional = r.name.size() > tracked.size() &&
                          r.name.compare(r.name.size() - tracked.size(), tracked.size(), tracked) == 0;
    if (is_online) {
      known.insert(r.name);
      if (!file.contains(r.name) && !optional) missing.push_back(r.name);
    }
    if (file.contains(r.name)) wanted.push_back(std::move(r));
  }
  fail_if_missing(file, missing, "encoder file ");
  std::vector<std::string> ignored, unexpected;
  for (const std::string& name : file.names()) {
    if (known.count(name)) continue;
    (name == "fc.weight" || name == "fc.bias" ? ignored : unexpected).push_back(name);
  }
  fail_if_unexpected(file, unexpected, "encoder file ", config_);
  for (const Entry& e : wanted) read_entry(file, e);

  // Everything was read and checked: only now does the model change.
  const HostState& h = w.host;
  backend_->upload(online_params_.raw(), h.online.data(), online_params_.nbytes());
  backend_->upload(online_stats_.raw(), h.online_stats.data(), online_stats_.nbytes());
  online_tracked_ = h.online_tracked;
  if (to_target) {
    backend_->upload(target_params_.raw(), h.target.data(), target_params_.nbytes());
    backend_->upload(target_stats_.raw(), h.target_stats.data(), target_stats_.nbytes());
    target_tracked_ = h.target_tracked;
  }
  return ignored;
}

}  // namespace byol
