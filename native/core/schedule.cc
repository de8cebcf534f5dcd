// schedule.cc: BYOL.md's schedules, as the reference implementation computes them:
// learning rate = base_lr * batch / 256 with linear warmup then cosine decay, and the EMA
// decay tau rising from tau_base to 1 on a cosine. Pure functions of the step.
#include <algorithm>
#include <cmath>

#include "byol/model.h"

namespace byol {

namespace {
// 0.5 * (1 + cos(pi * k / K)) with k clamped to K: steps past the end stay at the end value.
double cosine_decay(double step, double max_steps) {
  const double k = std::min(step, max_steps);
  return 0.5 * (1.0 + std::cos(M_PI * k / max_steps));
}
}  // namespace

double learning_rate(int64_t step, double base_lr, int64_t batch_size, int64_t warmup_steps,
                     int64_t total_steps) {
  BYOL_CHECK(step >= 0, "expected step >= 0 but received ", step);
  BYOL_CHECK(std::isfinite(base_lr) && base_lr >= 0, "expected baseLr >= 0 but received ", base_lr);
  BYOL_CHECK(batch_size >= 1, "expected batchSize >= 1 but received ", batch_size);
  BYOL_CHECK(total_steps >= 1, "expected totalSteps >= 1 but received ", total_steps);
  BYOL_CHECK(warmup_steps >= 0 && warmup_steps <= total_steps, "expected warmupSteps in [0, totalSteps = ",
             total_steps, "] but received ", warmup_steps);
  const double scaled = base_lr * static_cast<double>(batch_size) / 256.0;
  if (step < warmup_steps) return scaled * static_cast<double>(step) / static_cast<double>(warmup_steps);
  // warmup == total: the schedule ends with the warmup; what follows is past the end (0).
  if (total_steps == warmup_steps) return 0.0;
  return scaled * cosine_decay(static_cast<double>(step - warmup_steps),
                               static_cast<double>(total_steps - warmup_steps));
}

double ema_tau(int64_t step, double tau_base, int64_t total_steps) {
  BYOL_CHECK(step >= 0, "expected step >= 0 but received ", step);
  BYOL_CHECK(std::isfinite(tau_base) && tau_base >= 0 && tau_base <= 1, "expected tauBase in [0, 1] but received ",
             tau_base);
  BYOL_CHECK(total_steps >= 1, "expected totalSteps >= 1 but received ", total_steps);
  return 1.0 - (1.0 - tau_base) * cosine_decay(static_cast<double>(step), static_cast<double>(total_steps));
}

}  // namespace byol
