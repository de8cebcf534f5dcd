// resnet.cc: the ResNet v1 encoder (torchvision layout: BasicBlock for 18/34, Bottleneck v1.5
// with the stride on the 3x3 for 50) as a straight list of backend calls; backward is the
// same list reversed. Contract: nets.h. Activations NHWC, conv weights OIHW, no conv bias.
// Profiler ranges: the network, each block, and each conv+BN(+ReLU) unit inside a block.
#include <algorithm>
#include <cmath>
#include <string>

#include "nets.h"

namespace byol {
namespace nets {

namespace {

Conv add_conv(LayoutBuilder& layout, const std::string& name, int in, int out, int kernel, int stride,
              int pad) {
  Conv c;
  c.name = name;
  c.range = RangeNames(name);
  c.in = in;
  c.out = out;
  c.kernel = kernel;
  c.stride = stride;
  c.pad = pad;
  // torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = sqrt(2 / fan_out).
  const double fan_out = static_cast<double>(out) * kernel * kernel;
  c.weight = layout.add_param(name + ".weight", {out, in, kernel, kernel}, true,
                              {InitKind::kaiming_normal_fan_out, std::sqrt(2.0 / fan_out)});
  return c;
}

BatchNorm add_bn(LayoutBuilder& layout, const std::string& name, int channels) {
  BatchNorm b;
  b.name = name;
  b.channels = channels;
  b.gamma = layout.add_param(name + ".weight", {channels}, false, {InitKind::ones, 0});
  b.beta = layout.add_param(name + ".bias", {channels}, false, {InitKind::zeros, 0});
  b.stats = layout.add_stats(name, channels);
  return b;
}

}  // namespace

ResNet build_resnet(LayoutBuilder& layout, const EncoderConfig& config, const std::string& prefix) {
  static const int kBlocks18[4] = {2, 2, 2, 2};
  static const int kBlocks34[4] = {3, 4, 6, 3};
  const bool bottleneck = config.arch == ResNetArch::resnet50;
  const int* counts = config.arch == ResNetArch::resnet18 ? kBlocks18 : kBlocks34;
  const int expansion = bottleneck ? 4 : 1;
  const int base = static_cast<int>(std::lround(64.0 * config.width));

  ResNet net;
  net.in_channels = config.in_channels;
  net.range = RangeNames(prefix);
  net.maxpool_range = RangeNames(prefix + ".maxpool");
  net.avgpool_range = RangeNames(prefix + ".avgpool");
  if (config.stem == Stem::cifar) {
    net.conv1 = add_conv(layout, prefix + ".conv1", config.in_channels, base, 3, 1, 1);
  } else {
    net.conv1 = add_conv(layout, prefix + ".conv1", config.in_channels, base, 7, 2, 3);
    net.maxpool = true;
  }
  net.bn1 = add_bn(layout, prefix + ".bn1", base);

  int inplanes = base;
  for (int stage = 0; stage < 4; ++stage) {
    const int planes = base << stage;
    for (int b = 0; b < counts[stage]; ++b) {
      const int stride = (stage > 0 && b == 0) ? 2 : 1;
      const std::string name = prefix + ".layer" + std::to_string(stage + 1) + "." + std::to_string(b);
      Block blk;
      blk.bottleneck = bottleneck;
      blk.range = RangeNames(name);
      // Registration order = torchvision's named_parameters() order.
      if (bottleneck) {
        blk.conv1 = add_conv(layout, name + ".conv1", inplanes, planes, 1, 1, 0);
        blk.bn1 = add_bn(layout, name + ".bn1", planes);
        blk.conv2 = add_conv(layout, name + ".conv2", planes, planes, 3, stride, 1);
        blk.bn2 = add_bn(layout, name + ".bn2", planes);
        blk.conv3 = add_conv(layout, name + ".conv3", planes, planes * expansion, 1, 1, 0);
        blk.bn3 = add_bn(layout, name + ".bn3", planes * expansion);
      } else {
        blk.conv1 = add_conv(layout, name + ".conv1", inplanes, planes, 3, stride, 1);
        blk.bn1 = add_bn(layout, name + ".bn1", planes);
        blk.conv2 = add_conv(layout, name + ".conv2", planes, planes, 3, 1, 1);
        blk.bn2 = add_bn(layout, name + ".bn2", planes);
      }
      if (stride != 1 || inplanes != planes * expansion) {
        blk.downsample = true;
        blk.ds_conv = add_conv(layout, name + ".downsample.0", inplanes, planes * expansion, 1, stride, 0);
        blk.ds_conv.range = RangeNames(name + ".downsample");
        blk.ds_bn = add_bn(layout, name + ".downsample.1", planes * expansion);
      }
      inplanes = planes * expansion;
      net.blocks.push_back(blk);
    }
  }
  net.feature_dim = inplanes;
  return net;
}

void plan_resnet(const ResNet& net, int N, int H, int W, bool training, BufferCarver& carver,
                 ResNetActs* acts) {
  acts->N = N;
  acts->H = H;
  acts->W = W;
  int64_t max_size = 0;
  auto act = [&](float** slot, int64_t count) {
    carver.request(slot, count);
    max_size = std::max(max_size, count);
  };
  auto save = [&](BnSave* s, int channels) {
    if (!training) return;
    carver.request(&s->mean, channels);
    carver.request(&s->rstd, channels);
  };
  auto check_output = [&](const ConvShape& s, const std::string& layer) {
    BYOL_CHECK(s.P() >= 1 && s.Q() >= 1, "images of ", H, "x", W, " are too small for this encoder: ", layer,
               " would get a ", s.H, "x", s.W, " input and an empty output");
  };

  acts->stem = net.conv1.shape(N, H, W);
  check_output(acts->stem, net.conv1.name);
  int h = acts->stem.P(), w = acts->stem.Q();
  const int64_t stem_size = static_cast<int64_t>(N) * h * w * net.conv1.out;
  act(&acts->stem_c, stem_size);
  act(&acts->stem_r, stem_size);
  save(&acts->stem_bn, net.bn1.channels);
  if (net.maxpool) {
    PoolShape p;
    p.N = N;
    p.H = h;
    p.W = w;
    p.C = net.conv1.out;
    p.kernel = 3;
    p.stride = 2;
    p.pad = 1;
    acts->pool = p;
    BYOL_CHECK(p.P() >= 1 && p.Q() >= 1, "images of ", H, "x", W, " are too small for the max-pool of the imagenet stem");
    h = p.P();
    w = p.Q();
    const int64_t pooled = static_cast<int64_t>(N) * h * w * p.C;
    act(&acts->pooled, pooled);
    carver.request(&acts->argmax, pooled);
  }

  acts->blocks.assign(net.blocks.size(), BlockActs());
  for (size_t i = 0; i < net.blocks.size(); ++i) {
    const Block& b = net.blocks[i];
    BlockActs& a = acts->blocks[i];
    a.s1 = b.conv1.shape(N, h, w);
    check_output(a.s1, b.conv1.name);
    const int64_t n1 = static_cast<int64_t>(N) * a.s1.P() * a.s1.Q() * b.conv1.out;
    act(&a.c1, n1);
    act(&a.r1, n1);
    save(&a.bn1, b.bn1.channels);
    a.s2 = b.conv2.shape(N, a.s1.P(), a.s1.Q());
    check_output(a.s2, b.conv2.name);
    const int64_t n2 = static_cast<int64_t>(N) * a.s2.P() * a.s2.Q() * b.conv2.out;
    act(&a.c2, n2);
    save(&a.bn2, b.bn2.channels);
    int oh = a.s2.P(), ow = a.s2.Q();
    int64_t n_out = n2;
    if (b.bottleneck) {
      act(&a.r2, n2);
      a.s3 = b.conv3.shape(N, oh, ow);
      n_out = static_cast<int64_t>(N) * oh * ow * b.conv3.out;
      act(&a.c3, n_out);
      save(&a.bn3, b.bn3.channels);
    }
    act(&a.out, n_out);
    if (b.downsample) {
      a.sds = b.ds_conv.shape(N, h, w);
      BYOL_CHECK(a.sds.P() == oh && a.sds.Q() == ow, "internal: downsample of ", b.ds_conv.name,
                 " gives ", a.sds.P(), "x", a.sds.Q(), " but the block gives ", oh, "x", ow);
      act(&a.ds_c, n_out);
      act(&a.ds_out, n_out);
      save(&a.bnds, b.ds_bn.channels);
    }
    h = oh;
    w = ow;
  }
  acts->out_hw = h * w;
  acts->out_c = net.feature_dim;
  carver.request(&acts->features, static_cast<int64_t>(N) * net.feature_dim);
  if (training) {
    for (auto& g : acts->grad) carver.request(&g, max_size);
  }
}

namespace {

// The BatchNorm calls of one network, in training (batch statistics, running statistics
// updated) or eval mode (running statistics).
struct BnCaller {
  Backend* be;
  const float* params;
  float* stats;
  const BnMode& mode;
  // out = relu?(bn(inp) + residual?) in one backend call (BnEpilogue).
  void forward(const BatchNorm& bn, float* out, const float* inp, int64_t M, const BnSave& save,
               const BnEpilogue& epilogue) const {
    float* mean = stats + bn.stats;
    float* var = mean + bn.channels;
    if (mode.training) {
      be->batchnorm_forward_train(out, save.mean, save.rstd, mean, var, inp, params + bn.gamma,
                                  params + bn.beta, static_cast<int>(M), bn.channels, mode.momentum,
                                  mode.eps, epilogue);
    } else {
      be->batchnorm_forward_eval(out, inp, params + bn.gamma, params + bn.beta, mean, var,
                                 static_cast<int>(M), bn.channels, mode.eps, epilogue);
    }
  }
};

int64_t rows(const ConvShape& s) { return static_cast<int64_t>(s.N) * s.P() * s.Q(); }

}  // namespace

void resnet_forward(Backend* be, const ResNet& net, ResNetActs& acts, const float* x, const float* params,
                    float* stats, const BnMode& mode) {
  const Range network(be, net.range.forward.c_str());
  const BnCaller bn{be, params, stats, mode};
  const BnEpilogue relu{nullptr, true};
  const int64_t stem_rows = rows(acts.stem);
  {
    const Range range(be, net.conv1.range.forward.c_str());
    be->conv2d_forward(acts.stem_c, x, params + net.conv1.weight, acts.stem);
    bn.forward(net.bn1, acts.stem_r, acts.stem_c, stem_rows, acts.stem_bn, relu);
  }
  const float* cur = acts.stem_r;
  if (net.maxpool) {
    const Range range(be, net.maxpool_range.forward.c_str());
    be->maxpool2d_forward(acts.pooled, acts.argmax, acts.stem_r, acts.pool);
    cur = acts.pooled;
  }
  for (size_t i = 0; i < net.blocks.size(); ++i) {
    const Block& b = net.blocks[i];
    BlockActs& a = acts.blocks[i];
    const Range block(be, b.range.forward.c_str());
    // The shortcut first: the block's last BN adds it and applies the ReLU in the same call.
    const float* identity = cur;
    if (b.downsample) {
      const Range range(be, b.ds_conv.range.forward.c_str());
      be->conv2d_forward(a.ds_c, cur, params + b.ds_conv.weight, a.sds);
      bn.forward(b.ds_bn, a.ds_out, a.ds_c, rows(a.sds), a.bnds, BnEpilogue{});
      identity = a.ds_out;
    }
    const BnEpilogue add_relu{identity, true};
    {
      const Range range(be, b.conv1.range.forward.c_str());
      be->conv2d_forward(a.c1, cur, params + b.conv1.weight, a.s1);
      bn.forward(b.bn1, a.r1, a.c1, rows(a.s1), a.bn1, relu);
    }
    {
      const Range range(be, b.conv2.range.forward.c_str());
      be->conv2d_forward(a.c2, a.r1, params + b.conv2.weight, a.s2);
      if (b.bottleneck)
        bn.forward(b.bn2, a.r2, a.c2, rows(a.s2), a.bn2, relu);
      else
        bn.forward(b.bn2, a.out, a.c2, rows(a.s2), a.bn2, add_relu);
    }
    if (b.bottleneck) {
      const Range range(be, b.conv3.range.forward.c_str());
      be->conv2d_forward(a.c3, a.r2, params + b.conv3.weight, a.s3);
      bn.forward(b.bn3, a.out, a.c3, rows(a.s3), a.bn3, add_relu);
    }
    cur = a.out;
  }
  const Range range(be, net.avgpool_range.forward.c_str());
  be->avgpool_forward(acts.features, cur, acts.N, acts.out_hw, acts.out_c);
}

void resnet_backward(Backend* be, const ResNet& net, ResNetActs& acts, const float* dfeatures, const float* x,
                     const float* params, float* grads, bool accumulate) {
  const Range network(be, net.range.backward.c_str());
  float* const* G = acts.grad;
  // relu_out: the unit's BN+ReLU output, whose ReLU the same call differentiates (null: none).
  auto bn_backward = [&](const BatchNorm& bn, float* dinp, const float* dout, const float* inp, int64_t M,
                         const BnSave& save, const float* relu_out) {
    be->batchnorm_backward(dinp, grads + bn.gamma, grads + bn.beta, dout, inp, save.mean, save.rstd,
                           params + bn.gamma, static_cast<int>(M), bn.channels, accumulate, relu_out);
  };

  // d: the scratch buffer holding the gradient of the current block's output. The other
  // three serve the branch; the block-input gradient lands in one of them, which becomes d.
  int d = 0;
  {
    const Range range(be, net.avgpool_range.backward.c_str());
    be->avgpool_backward(G[d], dfeatures, acts.N, acts.out_hw, acts.out_c);
  }
  for (size_t ii = net.blocks.size(); ii-- > 0;) {
    const Block& b = net.blocks[ii];
    BlockActs& a = acts.blocks[ii];
    const Range block(be, b.range.backward.c_str());
    const float* input = ii > 0 ? acts.blocks[ii - 1].out : (net.maxpool ? acts.pooled : acts.stem_r);
    const int t1 = (d + 1) % 4, t2 = (d + 2) % 4, t3 = (d + 3) % 4;
    const ConvShape& s_last = b.bottleneck ? a.s3 : a.s2;
    const int out_c = b.bottleneck ? b.conv3.out : b.conv2.out;
    const int64_t n_out = rows(s_last) * out_c;

    // Each unit's backward mirrors its forward: BN (with the ReLU when the unit has one), conv.
    // The block's closing ReLU comes first on its own: both branches read its gradient.
    be->relu_backward(G[d], G[d], a.out, static_cast<size_t>(n_out));
    if (b.bottleneck) {
      {
        const Range range(be, b.conv3.range.backward.c_str());
        bn_backward(b.bn3, G[t1], G[d], a.c3, rows(a.s3), a.bn3, nullptr);
        be->conv2d_backward_weight(grads + b.conv3.weight, G[t1], a.r2, a.s3, accumulate);
        be->conv2d_backward_data(G[t2], G[t1], params + b.conv3.weight, a.s3);
      }
      const Range range(be, b.conv2.range.backward.c_str());
      bn_backward(b.bn2, G[t1], G[t2], a.c2, rows(a.s2), a.bn2, a.r2);
      be->conv2d_backward_weight(grads + b.conv2.weight, G[t1], a.r1, a.s2, accumulate);
      be->conv2d_backward_data(G[t2], G[t1], params + b.conv2.weight, a.s2);
    } else {
      const Range range(be, b.conv2.range.backward.c_str());
      bn_backward(b.bn2, G[t1], G[d], a.c2, rows(a.s2), a.bn2, nullptr);
      be->conv2d_backward_weight(grads + b.conv2.weight, G[t1], a.r1, a.s2, accumulate);
      be->conv2d_backward_data(G[t2], G[t1], params + b.conv2.weight, a.s2);
    }
    {
      const Range range(be, b.conv1.range.backward.c_str());
      bn_backward(b.bn1, G[t1], G[t2], a.c1, rows(a.s1), a.bn1, a.r1);
      be->conv2d_backward_weight(grads + b.conv1.weight, G[t1], input, a.s1, accumulate);
      be->conv2d_backward_data(G[t2], G[t1], params + b.conv1.weight, a.s1);
    }
    const size_t n_in = static_cast<size_t>(a.s1.N) * a.s1.H * a.s1.W * a.s1.C;
    if (b.downsample) {
      const Range range(be, b.ds_conv.range.backward.c_str());
      bn_backward(b.ds_bn, G[t1], G[d], a.ds_c, rows(a.sds), a.bnds, nullptr);
      be->conv2d_backward_weight(grads + b.ds_conv.weight, G[t1], input, a.sds, accumulate);
      be->conv2d_backward_data(G[t3], G[t1], params + b.ds_conv.weight, a.sds);
      be->add(G[t2], G[t2], G[t3], n_in);
    } else {
      be->accumulate(G[t2], G[d], n_in);
    }
    d = t2;
  }

  const int64_t stem_rows = rows(acts.stem);
  float* dstem = G[d];
  if (net.maxpool) {
    const Range range(be, net.maxpool_range.backward.c_str());
    dstem = G[(d + 1) % 4];
    be->maxpool2d_backward(dstem, G[d], acts.argmax, acts.pool);
  }
  const Range range(be, net.conv1.range.backward.c_str());
  float* dconv = G[(d + 2) % 4];
  bn_backward(net.bn1, dconv, dstem, acts.stem_c, stem_rows, acts.stem_bn, acts.stem_r);
  be->conv2d_backward_weight(grads + net.conv1.weight, dconv, x, acts.stem, accumulate);
}

}  // namespace nets
}  // namespace byol
