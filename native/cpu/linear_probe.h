// linear_probe.h: one minibatch step of the evaluation's linear probe (SgdLinearHead.step in
// lib/eval/linear.ts, which is its JavaScript reference): softmax cross-entropy of a linear
// classifier [classes, dim] in double precision, then PyTorch's SGD update (momentum,
// optional Nesterov, weight decay on the weights only).
#pragma once
#include <cstdint>

namespace byol {
namespace cpu {

struct SgdLinearState {
  double* weights;      // [classes, dim], row-major (PyTorch's Linear.weight)
  double* bias;         // [classes]
  double* velocity_w;   // [classes, dim]
  double* velocity_b;   // [classes]
  int64_t dim;
  int classes;
};

// Rows rows[start .. start + count) of x [*, dim] (their labels: labels[row]) at learning rate
// lr. Returns the summed cross-entropy of those rows before the update. Per element the sums
// run in the reference's order (rows in fours, then the rest); threads split rows for the
// logits and classes for the gradient, so the result does not depend on the thread count.
double sgd_linear_step(const SgdLinearState& state, const float* x, const int32_t* rows, int64_t start,
                       int64_t count, const int32_t* labels, double lr, double momentum, bool nesterov,
                       double weight_decay);

}  // namespace cpu
}  // namespace byol
