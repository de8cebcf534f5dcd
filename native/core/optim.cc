// optim.cc: turns a model's OptimizerConfig into one backend update call over the flat
// buffers (LARS, SGD with momentum, AdamW). Contract: model.h optimizer_update; the segment
// table is the model's offsets table, `state` holds optimizer_state_floats() floats.
#include <cmath>

#include "byol/model.h"

namespace byol {

void optimizer_update(Backend* backend, const OptimizerConfig& config, float lr, int64_t step, float* params,
                      float* state, const float* grads, const std::vector<ParamSegment>& segments,
                      const float* step_scalars) {
  const float* lr_device = step_scalars ? step_scalars + kScalarLr : nullptr;
  BYOL_CHECK(std::isfinite(lr) && lr >= 0, "expected lr >= 0 but received ", lr);
  BYOL_CHECK(step >= 1, "optimizer step must be >= 1 but is ", step);
  const int num_segments = static_cast<int>(segments.size());
  switch (config.kind) {
    case OptimizerKind::lars: {
      LarsOptions o;
      o.lr = lr;
      o.weight_decay = config.weight_decay;
      o.momentum = config.momentum;
      o.trust_coefficient = config.trust_coefficient;
      o.eps = config.lars_eps;
      o.solo_learn = config.solo_learn;
      o.lr_device = lr_device;
      backend->lars_update(params, state, grads, segments.data(), num_segments, o);
      return;
    }
    case OptimizerKind::sgd: {
      SgdOptions o;
      o.lr = lr;
      o.weight_decay = config.weight_decay;
      o.momentum = config.momentum;
      o.nesterov = config.nesterov;
      o.lr_device = lr_device;
      backend->sgd_update(params, state, grads, segments.data(), num_segments, o);
      return;
    }
    case OptimizerKind::adamw: {
      AdamWOptions o;
      o.lr = lr;
      o.weight_decay = config.weight_decay;
      o.beta1 = config.beta1;
      o.beta2 = config.beta2;
      o.eps = config.adam_eps;
      o.step = step;
      o.lr_device = lr_device;
      o.bias_device = step_scalars ? step_scalars + kScalarAdamBias1 : nullptr;
      backend->adamw_update(params, state, grads, segments.data(), num_segments, o);
      return;
    }
  }
  BYOL_FAIL("unknown optimizer kind ", static_cast<int>(config.kind));
}

}  // namespace byol
