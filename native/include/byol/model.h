// model.h: the BYOL model of BYOL.md: ResNet encoder + MLP projector/predictor (online) and
// encoder + projector (target), their flat parameter buffers, and the training step.
// Contract: backend-agnostic (every op goes through byol::Backend); images are NHWC float32
// tensors on the model's backend; weights files use BYOL.md's names and PyTorch layouts.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "byol/backend.h"
#include "byol/tensor.h"

namespace byol {

class SafeTensorsFile;  // byol/safetensors.h

enum class ResNetArch { resnet18 = 0, resnet34 = 1, resnet50 = 2 };
// cifar: 3x3 conv stride 1, no max-pool. imagenet: 7x7 conv stride 2 + 3x3 max-pool stride 2.
enum class Stem { cifar = 0, imagenet = 1 };
enum class OptimizerKind { lars = 0, sgd = 1, adamw = 2 };
// copy: the target starts as a copy of the online encoder + projector (most reproductions);
// random: it gets its own initialization from the seed (the reference implementation).
enum class TargetInit { copy = 0, random = 1 };

const char* arch_name(ResNetArch a);
const char* stem_name(Stem s);
const char* optimizer_name(OptimizerKind k);
const char* target_init_name(TargetInit t);
// Parse the names above; throw byol::Error naming `what`, the value and the allowed names.
ResNetArch parse_arch(const std::string& name, const std::string& what);
Stem parse_stem(const std::string& name, const std::string& what);
OptimizerKind parse_optimizer(const std::string& name, const std::string& what);
TargetInit parse_target_init(const std::string& name, const std::string& what);

struct EncoderConfig {
  ResNetArch arch = ResNetArch::resnet18;
  Stem stem = Stem::cifar;
  int in_channels = 3;  // 1 or 3
  // Stage widths are 64*width, 128*width, 256*width, 512*width; 64*width must be a positive
  // integer (0.25 -> 16).
  double width = 1.0;
};

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::lars;
  float weight_decay = 1.5e-6f;
  float momentum = 0.9f;           // lars, sgd
  float trust_coefficient = 1e-3f;  // lars
  float lars_eps = 0.0f;            // lars (solo-learn variant only)
  bool solo_learn = false;          // lars: trust = eta|p| / (|g| + wd|p| + eps)
  bool nesterov = false;            // sgd
  float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;  // adamw
};

struct ModelConfig {
  EncoderConfig encoder;
  int projector_hidden = 4096, projector_out = 256;
  bool predictor = true;  // false: the no-predictor ablation (p = z)
  int predictor_hidden = 4096;
  OptimizerConfig optimizer;
  uint64_t seed = 0;
  TargetInit target_init = TargetInit::copy;
  float bn_momentum = 0.1f;  // PyTorch sense
  float bn_eps = 1e-5f;
  // The online linear classifier of the reference implementation (BYOL.md "Evaluation"):
  // Linear(feature_dim, classes, bias) on stop_gradient(y) of view 1, trained with softmax
  // cross-entropy on the step's labels by the same optimizer step. It adds nothing to the
  // BYOL update (no gradient reaches the encoder) and has no target copy. 0: none.
  int classifier_classes = 0;
};

// Throws byol::Error naming the first invalid field (e.g. "encoder.width").
void validate_model_config(const ModelConfig& config);
// The configuration as a JSON object (stored in weights files' metadata).
std::string model_config_json(const ModelConfig& config);

// ---- schedules of BYOL.md (k = step, K = total steps) ----
// base_lr * batch / 256, linear warmup over warmup_steps, then cosine decay to 0 at K;
// steps past K stay at 0. Throws naming the bad argument.
double learning_rate(int64_t step, double base_lr, int64_t batch_size, int64_t warmup_steps,
                     int64_t total_steps);
// 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2, with k clamped to K.
double ema_tau(int64_t step, double tau_base, int64_t total_steps);

// ---- the parameter layout ----
// One tensor of the online parameter buffer. `name` is the module path without a network
// prefix: "encoder.layer1.0.conv1.weight", "projector.net.0.bias", "predictor.net.3.weight".
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;  // PyTorch layout: conv OIHW, linear [out, in]
  ParamSegment segment;        // offset/size in floats, decay false for biases and BN params
};
// One BatchNorm layer's running statistics: running_mean at `offset`, running_var at
// offset + channels, in the network's statistics buffer.
struct BatchNormInfo {
  std::string name;  // "encoder.bn1", "projector.net.1", ...
  int channels = 0;
  int64_t offset = 0;
};

struct ModelPlan;  // activation buffers for one batch shape (model.cc)
struct ModelNets;  // layer lists of the encoder and heads (model.cc)

// Floats of optimizer state for `num_params` parameters (AdamW keeps two moments).
int64_t optimizer_state_floats(OptimizerKind kind, int64_t num_params);
// The values a step reads from backend memory rather than from op arguments, so that a
// captured step (Backend::begin_capture) replays with the values of the step it runs: indices
// into the model's float[kNumStepScalars] buffer, written before the step's ops run.
enum StepScalar : int {
  kScalarLr = 0,
  kScalarTau = 1,
  kScalarAdamBias1 = 2,      // 1 - beta1^t (optim::adamw_bias)
  kScalarAdamBias2Sqrt = 3,  // sqrt(1 - beta2^t); must follow kScalarAdamBias1
  kNumStepScalars = 4,
};

// One optimizer update through the backend. `step` is 1-based (AdamW bias correction).
// step_scalars: null, or the buffer above in backend memory, holding this step's lr (and
// AdamW's bias corrections) that the update then reads instead of `lr` and `step`.
void optimizer_update(Backend* backend, const OptimizerConfig& config, float lr, int64_t step,
                      float* params, float* state, const float* grads,
                      const std::vector<ParamSegment>& segments, const float* step_scalars);

class ByolModel {
 public:
  // Builds the networks, allocates the flat buffers on `backend` and initializes them
  // (kaiming normal fan_out for convs, BN weight 1 / bias 0, PyTorch's Linear default) from
  // a generator seeded with config.seed. Throws naming the bad config field.
  ByolModel(Backend* backend, const ModelConfig& config);
  ~ByolModel();
  ByolModel(const ByolModel&) = delete;
  ByolModel& operator=(const ByolModel&) = delete;

  const ModelConfig& config() const { return config_; }
  Backend* backend() const { return backend_; }
  int feature_dim() const;  // y: 512*width (resnet18/34), 2048*width (resnet50)
  int output_dim() const { return config_.projector_out; }
  int classifier_classes() const { return config_.classifier_classes; }

  // One BYOL step (BYOL.md "One training step") on two augmented views of the same batch,
  // each NHWC float32 (N, H, W, in_channels) on this backend, N >= 2. Returns the loss
  // L = loss(p1, z2) + loss(p2, z1) computed before the update.
  // labels: a HOST array of N class indices in [0, classifier_classes), required when the
  // model has the online classifier and refused when it has none; its loss and hits are read
  // back with the step's loss (last_classifier()).
  float step(const Tensor& view1, const Tensor& view2, float lr, float tau, const int32_t* labels = nullptr);
  // The online classifier's result of the last step (count 0 before the first, or without one):
  // its cross-entropy (mean over the batch, before the update) and how many of the batch's
  // argmax predictions were right.
  struct ClassifierStats {
    float loss = 0;
    int64_t correct = 0, count = 0;
  };
  const ClassifierStats& last_classifier() const { return last_classifier_; }
  // Online classifier logits (N, classifier_classes) of the encoder in eval mode (running
  // statistics). Throws when the model has no classifier.
  Tensor classify(const Tensor& images);
  // Encoder output y (N, feature_dim) with BatchNorm in eval mode (running statistics).
  Tensor embed(const Tensor& images);
  // Projections z (N, output_dim) of the online (or target) encoder + projector, BatchNorm
  // in eval mode; their normalized spread measures collapse.
  Tensor project(const Tensor& images, bool target = false);

  // Weights files (BYOL.md "Weights"): online.encoder.*, online.projector.*, predictor.*,
  // target.encoder.*, target.projector.*, and with `with_optimizer` the optimizer state
  // (optimizer.momentum | optimizer.exp_avg + optimizer.exp_avg_sq, step count and the
  // offsets table in the metadata). Atomic write.
  void save_weights(const std::string& path, bool with_optimizer) const;
  // Loads every tensor save_weights writes (dtypes and shapes checked, missing and unknown
  // names are errors naming them). Optimizer state is loaded when present in the file and
  // reset to zero (fresh optimizer) otherwise. Returns whether the file had optimizer state.
  bool load_weights(const std::string& path);
  // The same from tensors named `prefix` + <weights file name> of an open file (e.g. one step
  // "step2/" of a test fixture). `strict`: other tensors under the prefix are an error.
  // Optimizer metadata (kind, step count, layout) is checked when the file has it.
  bool load_state(const SafeTensorsFile& file, const std::string& prefix, bool strict);
  // Just the online encoder with torchvision's names (conv1.weight, bn1.*, layer1.0...),
  // so torchvision's resnet (stem swapped for 'cifar', fc = Identity) loads it strictly.
  void save_encoder(const std::string& path) const;
  // Loads such an encoder file (save_encoder's, or a torchvision resnet state_dict saved as
  // safetensors) into the online encoder, and with `to_target` into the target encoder too
  // (the copy init of BYOL.md); everything else (heads, optimizer state, counters) is kept.
  // Every encoder tensor must be present with its shape and dtype (num_batches_tracked may
  // be absent: the count is then kept); torchvision's classifier head (fc.weight, fc.bias) is
  // skipped and returned; any other extra tensor, a missing one or a whole BYOL weights file
  // is an error naming them, and the model is unchanged.
  std::vector<std::string> load_encoder(const std::string& path, bool to_target);

  // ---- layout and raw state (tests, checkpoints) ----
  const std::vector<ParamInfo>& params() const { return params_; }
  const std::vector<ParamSegment>& segments() const { return segments_; }
  const std::vector<BatchNormInfo>& batchnorms() const { return batchnorms_; }
  int64_t num_params() const { return num_params_; }          // online, with predictor
  int64_t num_target_params() const { return num_target_params_; }  // prefix of the layout
  int64_t num_stats() const { return num_stats_; }            // online BN statistics floats
  int64_t num_target_stats() const { return num_target_stats_; }
  int num_target_batchnorms() const { return num_target_batchnorms_; }
  const Tensor& online_params() const { return online_params_; }
  const Tensor& target_params() const { return target_params_; }
  const Tensor& grads() const { return grads_; }
  const Tensor& optimizer_state() const { return optimizer_state_; }
  const Tensor& online_stats() const { return online_stats_; }
  const Tensor& target_stats() const { return target_stats_; }
  // num_batches_tracked per BatchNorm layer (online: all; target: the prefix).
  const std::vector<int64_t>& online_batches_tracked() const { return online_tracked_; }
  const std::vector<int64_t>& target_batches_tracked() const { return target_tracked_; }
  int64_t optimizer_steps() const { return optimizer_steps_; }
  // Bytes of activation buffers currently held (the step plan and the eval plan).
  size_t activation_bytes() const;

  // ---- graph replay (CUDA graphs) ----
  // On (the default), a backend that captures (Backend::begin_capture) runs each batch shape's
  // step eagerly twice, then records it once and replays the recording every later step of
  // that shape: the host enqueues one launch instead of hundreds of ops, with identical
  // results (the same kernels on the same memory; the views are copied into the plan and
  // lr, tau and AdamW's bias corrections read from memory). A backend that cannot capture
  // (CPU) or a capture that fails turns it off for this model, with the reason in
  // graph_error(). A new batch shape records again. Off: every step runs eagerly (profiles
  // then show every op under its layer's range instead of one "graph launch").
  void set_use_graphs(bool on);
  bool use_graphs() const { return use_graphs_; }
  const std::string& graph_error() const { return graph_error_; }
  int64_t graph_launches() const { return graph_launches_; }  // steps run as a graph so far

  // Every tensor of a weights file as (name, host data) pairs, in file order.
  struct NamedHostTensor {
    std::string name;
    std::vector<int64_t> shape;
    bool is_int64 = false;
    std::vector<float> f32;
    int64_t i64 = 0;
  };
  std::vector<NamedHostTensor> named_tensors(bool with_optimizer) const;

 private:
  ModelPlan& train_plan(int N, int H, int W);
  ModelPlan& eval_plan(int N, int H, int W);
  ModelPlan& eval_encoder(const Tensor& images, bool target);
  void check_images(const Tensor& images, const char* name, int min_batch) const;
  void init_parameters();
  void step_ops(ModelPlan& plan, const float* x1, const float* x2, float lr, float tau, int64_t optimizer_step);
  void capture_step(ModelPlan& plan, float lr, float tau, int64_t optimizer_step, int64_t view_floats);

  Backend* backend_;
  ModelConfig config_;
  std::unique_ptr<ModelNets> nets_;
  std::vector<ParamInfo> params_;
  std::vector<ParamSegment> segments_;
  std::vector<BatchNormInfo> batchnorms_;
  int64_t num_params_ = 0, num_target_params_ = 0;
  int64_t num_stats_ = 0, num_target_stats_ = 0;
  int num_target_batchnorms_ = 0;

  Tensor online_params_, target_params_, grads_, optimizer_state_;
  Tensor online_stats_, target_stats_;
  std::vector<int64_t> online_tracked_, target_tracked_;
  int64_t optimizer_steps_ = 0;
  ClassifierStats last_classifier_;

  Tensor step_scalars_;  // float[kNumStepScalars] on the backend: this step's lr, tau, ...
  bool use_graphs_ = true;
  std::string graph_error_;
  int64_t graph_launches_ = 0;

  std::unique_ptr<ModelPlan> train_plan_, eval_plan_;
};

}  // namespace byol
