// optim_cpu.h: the CPU optimizer updates over flat parameter buffers (LARS as in BYOL's
// reference implementation or solo-learn's variant, SGD with momentum, AdamW as PyTorch).
// Contract: the Backend virtuals of byol/backend.h (same signatures); the CPU backend's
// overrides forward here. Deterministic for any thread count: per-tensor norms are summed in
// double over fixed chunks, combined in chunk order.
#pragma once
#include "byol/backend.h"

namespace byol {
namespace cpu {

// Per segment (decay = true, reference mode): g' = g + wd*p; u = g' * eta*|p|/|g'| when both
// norms are > 0 (else u = g'); m = momentum*m + u; p -= lr*m. decay = false: u = g.
// solo_learn: for decay segments with |p|, |g| > 0: u = (g + wd*p) * eta*|p| / (|g| + wd*|p| + eps),
// else u = g.
void lars_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                 int num_segments, const LarsOptions& opt);
// torch.optim.SGD (dampening 0): d = g (+ wd*p on decay segments); m = momentum*m + d;
// d = nesterov ? d + momentum*m : m; p -= lr*d. momentum 0 leaves `momentum` untouched.
void sgd_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                int num_segments, const SgdOptions& opt);
// torch.optim.AdamW: p *= 1 - lr*wd (decay segments); m = b1*m + (1-b1)*g;
// v = b2*v + (1-b2)*g^2; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
// state = [m (n floats), v (n floats)] with n = max(offset + size) over the segments.
void adamw_update(float* params, float* state, const float* grads, const ParamSegment* segments,
                  int num_segments, const AdamWOptions& opt);

}  // namespace cpu
}  // namespace byol
