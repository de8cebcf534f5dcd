// nets.h (private to native/core): the layer lists of the ResNet encoder and the MLP heads,
// the flat parameter layout they are carved from, their activation plans and the straight
// forward / reversed backward call lists. Contract: backend-agnostic (byol::Backend only);
// offsets are in floats into the network's parameter / statistics buffers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "byol/backend.h"
#include "byol/model.h"

namespace byol {
namespace nets {

// How a parameter is initialized (PyTorch / torchvision defaults).
enum class InitKind { kaiming_normal_fan_out, uniform, ones, zeros };
struct InitSpec {
  InitKind kind = InitKind::zeros;
  double scale = 0;  // kaiming: std; uniform: bound
};

// Builds the parameter layout tensor by tensor, in PyTorch's named_parameters() order, and
// the BatchNorm statistics layout beside it.
class LayoutBuilder {
 public:
  int64_t add_param(const std::string& name, std::vector<int64_t> shape, bool decay, InitSpec init);
  // Returns the offset of running_mean in the statistics buffer (running_var follows).
  int64_t add_stats(const std::string& name, int channels);
  int num_batchnorms() const { return static_cast<int>(batchnorms.size()); }
  int64_t num_params = 0, num_stats = 0;
  std::vector<ParamInfo> params;
  std::vector<InitSpec> inits;
  std::vector<BatchNormInfo> batchnorms;
};

// The profiler range names of one layer unit (Backend::range_push), built once with the
// network so a step does no string work: `forward` is the module path of the unit
// ("encoder.layer2.1.conv1", the prefix of its weight names), `backward` adds " backward".
struct RangeNames {
  std::string forward, backward;
  RangeNames() = default;
  explicit RangeNames(const std::string& name) : forward(name), backward(name + " backward") {}
};

// `range` covers the conv together with the BatchNorm (and ReLU) that follow it.
struct Conv {
  std::string name;
  RangeNames range;
  int64_t weight = 0;
  int in = 0, out = 0, kernel = 1, stride = 1, pad = 0;
  ConvShape shape(int N, int H, int W) const;
};
struct BatchNorm {
  std::string name;
  int64_t gamma = 0, beta = 0, stats = 0;
  int channels = 0;
};
// torchvision BasicBlock (conv1 3x3 stride, conv2 3x3) or Bottleneck v1.5 (conv1 1x1,
// conv2 3x3 stride, conv3 1x1 to 4x), with an optional downsample (1x1 stride conv + BN).
struct Block {
  bool bottleneck = false;
  Conv conv1, conv2, conv3;
  BatchNorm bn1, bn2, bn3;
  bool downsample = false;
  Conv ds_conv;  // its range is the downsample unit, "<block>.downsample"
  BatchNorm ds_bn;
  RangeNames range;  // the whole block, "encoder.layer2.1"
};
struct ResNet {
  Conv conv1;
  BatchNorm bn1;
  bool maxpool = false;
  std::vector<Block> blocks;
  int in_channels = 3, feature_dim = 0;
  RangeNames range, maxpool_range, avgpool_range;  // "encoder", "encoder.maxpool", "encoder.avgpool"
};
struct Linear {
  std::string name;
  RangeNames range;
  int64_t weight = 0, bias = -1;  // bias -1: none
  int in = 0, out = 0;
};
// Linear(in, hidden, bias) -> BatchNorm1d(hidden) -> ReLU -> Linear(hidden, out, no bias).
struct Mlp {
  Linear fc1;
  BatchNorm bn;
  Linear fc2;
  RangeNames range, bn_range;  // the head ("projector"); BatchNorm + ReLU ("projector.net.1")
};

// `prefix` is "encoder" / "projector" / "predictor"; names follow torchvision / BYOL.md.
ResNet build_resnet(LayoutBuilder& layout, const EncoderConfig& config, const std::string& prefix);
Mlp build_mlp(LayoutBuilder& layout, const std::string& prefix, int in, int hidden, int out);

// Collects buffer requests, then hands out slices of one allocation (64-byte aligned).
class BufferCarver {
 public:
  void request(float** slot, int64_t count);
  void request(int32_t** slot, int64_t count);
  size_t bytes() const { return bytes_; }
  void assign(void* base);

 private:
  struct Request {
    void** slot;
    size_t offset;
  };
  void add(void** slot, size_t bytes);
  std::vector<Request> requests_;
  size_t bytes_ = 0;
};

struct BnSave {
  float* mean = nullptr;
  float* rstd = nullptr;
};
// Activations of one block. r1/r2: BN output with ReLU applied in place (BN's backward needs
// its input, ReLU's its output, so one buffer serves both). out: bn_last + identity, ReLU
// in place.
struct BlockActs {
  ConvShape s1, s2, s3, sds;
  float *c1 = nullptr, *r1 = nullptr, *c2 = nullptr, *r2 = nullptr, *c3 = nullptr;
  float *out = nullptr, *ds_c = nullptr, *ds_out = nullptr;
  BnSave bn1, bn2, bn3, bnds;
};
struct ResNetActs {
  int N = 0, H = 0, W = 0;
  ConvShape stem;
  PoolShape pool;
  float *stem_c = nullptr, *stem_r = nullptr, *pooled = nullptr;
  int32_t* argmax = nullptr;
  BnSave stem_bn;
  std::vector<BlockActs> blocks;
  int out_hw = 0, out_c = 0;       // last block output (N, out_hw, out_c)
  float* features = nullptr;       // y (N, feature_dim)
  float* grad[4] = {nullptr, nullptr, nullptr, nullptr};  // backward scratch, each max-size
};
struct MlpActs {
  int B = 0;
  float *h = nullptr, *a = nullptr;  // fc1 output; BN output with ReLU in place
  BnSave bn;
  float *da = nullptr, *dh = nullptr;
};

// Plans the activations for input (N, H, W, in_channels). `training` adds the BN save
// buffers and the backward scratch. Throws naming the image size when a layer would be empty.
void plan_resnet(const ResNet& net, int N, int H, int W, bool training, BufferCarver& carver,
                 ResNetActs* acts);
void plan_mlp(const Mlp& mlp, int B, bool training, BufferCarver& carver, MlpActs* acts);

// BatchNorm settings shared by every layer of a network.
struct BnMode {
  bool training = true;
  float momentum = 0.1f, eps = 1e-5f;
};

// The forward and backward calls below push a range per network, block and layer unit
// (RangeNames), balanced even when an op throws.
// x is (N, H, W, C) NHWC; writes acts.features (N, feature_dim). stats: the network's
// running statistics (updated in training mode, read in eval mode).
void resnet_forward(Backend* be, const ResNet& net, ResNetActs& acts, const float* x,
                    const float* params, float* stats, const BnMode& mode);
// dfeatures (N, feature_dim) -> parameter gradients (+= when accumulate). The input image
// gets no gradient.
void resnet_backward(Backend* be, const ResNet& net, ResNetActs& acts, const float* dfeatures,
                     const float* x, const float* params, float* grads, bool accumulate);
// in (B, in) -> out (B, out).
void mlp_forward(Backend* be, const Mlp& mlp, MlpActs& acts, float* out, const float* in,
                 const float* params, float* stats, const BnMode& mode);
// dout (B, out) -> din (B, in) (=; skipped when din is null) and parameter gradients.
void mlp_backward(Backend* be, const Mlp& mlp, MlpActs& acts, float* din, const float* dout,
                  const float* in, const float* params, float* grads, bool accumulate);

// Deterministic, platform-independent generator (xoshiro256** seeded by splitmix64) and the
// initializer that draws every parameter of `params` in layout order.
class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream);
  uint64_t next();
  double uniform();  // [0, 1)
  double normal();   // Box-Muller

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0;
};
void init_params(float* host, const std::vector<ParamInfo>& params,
                 const std::vector<InitSpec>& inits, size_t count, Rng& rng);

}  // namespace nets
}  // namespace byol
