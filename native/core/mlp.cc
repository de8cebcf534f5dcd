// mlp.cc: the projector / predictor head of BYOL.md,
// Linear(in, hidden, bias) -> BatchNorm1d(hidden) -> ReLU -> Linear(hidden, out, no bias),
// with PyTorch's names (net.0, net.1, net.3) and default initialization; one profiler range
// per head and per layer (net.1 covers BatchNorm + ReLU). Contract: nets.h.
#include <cmath>

#include "nets.h"

namespace byol {
namespace nets {

Mlp build_mlp(LayoutBuilder& layout, const std::string& prefix, int in, int hidden, int out) {
  Mlp m;
  m.range = RangeNames(prefix);
  // nn.Linear's default: kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(in), 1/sqrt(in)) for the
  // weight, and the bias uses the same bound.
  const double bound1 = 1.0 / std::sqrt(static_cast<double>(in));
  m.fc1.name = prefix + ".net.0";
  m.fc1.in = in;
  m.fc1.out = hidden;
  m.fc1.range = RangeNames(m.fc1.name);
  m.fc1.weight = layout.add_param(m.fc1.name + ".weight", {hidden, in}, true, {InitKind::uniform, bound1});
  m.fc1.bias = layout.add_param(m.fc1.name + ".bias", {hidden}, false, {InitKind::uniform, bound1});
  m.bn.name = prefix + ".net.1";
  m.bn.channels = hidden;
  m.bn_range = RangeNames(m.bn.name);
  m.bn.gamma = layout.add_param(m.bn.name + ".weight", {hidden}, false, {InitKind::ones, 0});
  m.bn.beta = layout.add_param(m.bn.name + ".bias", {hidden}, false, {InitKind::zeros, 0});
  m.bn.stats = layout.add_stats(m.bn.name, hidden);
  const double bound2 = 1.0 / std::sqrt(static_cast<double>(hidden));
  m.fc2.name = prefix + ".net.3";
  m.fc2.in = hidden;
  m.fc2.out = out;
  m.fc2.range = RangeNames(m.fc2.name);
  m.fc2.weight = layout.add_param(m.fc2.name + ".weight", {out, hidden}, true, {InitKind::uniform, bound2});
  m.fc2.bias = -1;
  return m;
}

void plan_mlp(const Mlp& mlp, int B, bool training, BufferCarver& carver, MlpActs* acts) {
  acts->B = B;
  const int64_t n = static_cast<int64_t>(B) * mlp.fc1.out;
  carver.request(&acts->h, n);
  carver.request(&acts->a, n);
  if (training) {
    carver.request(&acts->bn.mean, mlp.bn.channels);
    carver.request(&acts->bn.rstd, mlp.bn.channels);
    carver.request(&acts->da, n);
    carver.request(&acts->dh, n);
  }
}

void mlp_forward(Backend* be, const Mlp& mlp, MlpActs& acts, float* out, const float* in, const float* params,
                 float* stats, const BnMode& mode) {
  const Range head(be, mlp.range.forward.c_str());
  const int B = acts.B, H = mlp.fc1.out;
  {
    const Range range(be, mlp.fc1.range.forward.c_str());
    be->linear_forward(acts.h, in, params + mlp.fc1.weight, params + mlp.fc1.bias, B, mlp.fc1.in, H);
  }
  {
    const Range range(be, mlp.bn_range.forward.c_str());
    float* mean = stats + mlp.bn.stats;
    float* var = mean + H;
    const BnEpilogue relu{nullptr, true};  // BN and ReLU in one call
    if (mode.training) {
      be->batchnorm_forward_train(acts.a, acts.bn.mean, acts.bn.rstd, mean, var, acts.h, params + mlp.bn.gamma,
                                  params + mlp.bn.beta, B, H, mode.momentum, mode.eps, relu);
    } else {
      be->batchnorm_forward_eval(acts.a, acts.h, params + mlp.bn.gamma, params + mlp.bn.beta, mean, var, B, H,
                                 mode.eps, relu);
    }
  }
  const Range range(be, mlp.fc2.range.forward.c_str());
  be->linear_forward(out, acts.a, params + mlp.fc2.weight, nullptr, B, H, mlp.fc2.out);
}

void mlp_backward(Backend* be, const Mlp& mlp, MlpActs& acts, float* din, const float* dout, const float* in,
                  const float* params, float* grads, bool accumulate) {
  const Range head(be, mlp.range.backward.c_str());
  const int B = acts.B, H = mlp.fc1.out;
  {
    const Range range(be, mlp.fc2.range.backward.c_str());
    be->linear_backward(acts.da, grads + mlp.fc2.weight, nullptr, dout, acts.a, params + mlp.fc2.weight, B, H,
                        mlp.fc2.out, accumulate);
  }
  {
    const Range range(be, mlp.bn_range.backward.c_str());
    be->batchnorm_backward(acts.dh, grads + mlp.bn.gamma, grads + mlp.bn.beta, acts.da, acts.h, acts.bn.mean,
                           acts.bn.rstd, params + mlp.bn.gamma, B, H, accumulate, acts.a);
  }
  const Range range(be, mlp.fc1.range.backward.c_str());
  be->linear_backward(din, grads + mlp.fc1.weight, grads + mlp.fc1.bias, acts.dh, in, params + mlp.fc1.weight, B,
                      mlp.fc1.in, H, accumulate);
}

}  // namespace nets
}  // namespace byol
