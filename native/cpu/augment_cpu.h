// augment_cpu.h: the CPU augmentation kernel (the CpuBackend's `augment` delegates here).
// Contract: applies already-drawn AugmentParams (byol/augment.h documents the pipeline and its
// conventions); deterministic for given parameters whatever the thread count.
#pragma once
#include <cstdint>

#include "byol/augment.h"

namespace byol {
namespace cpu {

// images (N, H, W, C) uint8, C in {1, 3}; params: N host structs; out (N, out_h, out_w, C)
// float32, normalized. Validates every parameter set first and throws byol::Error naming the
// sample; OpenMP over samples.
void augment(float* out, const uint8_t* images, const AugmentParams* params, int N, int H, int W,
             int C, int out_h, int out_w);

}  // namespace cpu
}  // namespace byol
