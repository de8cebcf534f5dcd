// linear.cc: fully connected layers on oneDNN matmul. Contract: byol/backend.h
// (inp (B, I), weight (O, I) as PyTorch stores it, out (B, O)). Every transpose is a
// stride pattern in the memory descriptor, never a copy; the weight-gradient accumulate
// is matmul's sum post-op, so both views' gradients add in place.
#include <vector>

#include "cpu_backend.h"
#include "parallel.h"

namespace byol {
namespace cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr memory::data_type kF32 = memory::data_type::f32;

void check_sizes(const char* op, int B, int I, int O) {
  BYOL_CHECK(B > 0 && I > 0 && O > 0, op, ": expected B, I, O > 0 but received B=", B, ", I=", I,
             ", O=", O);
}

}  // namespace

LinearPlan& CpuBackend::linear_plan(PlanOp op, int B, int I, int O, bool has_bias,
                                    bool accumulate) {
  PlanKey key{op, {B, I, O, has_bias ? 1 : 0, 0, 0, 0, 0, 0, 0, omp_get_max_threads()}, accumulate};
  auto found = linear_plans_.find(key);
  if (found != linear_plans_.end()) return *found->second;
  limit_cache();

  auto plan = std::make_unique<LinearPlan>();
  // User-mode scratchpad, as for the convolutions (conv_plan says why).
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  switch (op) {
    case PlanOp::linear_forward:
      // out (B, O) = inp (B, I) x weight^T; weight (O, I) row-major is (I, O) in `ba`.
      plan->src_md = memory::desc({B, I}, kF32, Tag::ab);
      plan->weights_md = memory::desc({I, O}, kF32, Tag::ba);
      if (has_bias) plan->bias_md = memory::desc({1, O}, kF32, Tag::ab);
      plan->dst_md = memory::desc({B, O}, kF32, Tag::ab);
      break;
    case PlanOp::linear_backward_data:
      // dinp (B, I) = dout (B, O) x weight (O, I).
      plan->src_md = memory::desc({B, O}, kF32, Tag::ab);
      plan->weights_md = memory::desc({O, I}, kF32, Tag::ab);
      plan->dst_md = memory::desc({B, I}, kF32, Tag::ab);
      break;
    case PlanOp::linear_backward_weight: {
      // dweight (O, I) (+)= dout^T x inp; dout (B, O) row-major is (O, B) in `ba`.
      plan->src_md = memory::desc({O, B}, kF32, Tag::ba);
      plan->weights_md = memory::desc({B, I}, kF32, Tag::ab);
      plan->dst_md = memory::desc({O, I}, kF32, Tag::ab);
      if (accumulate) {
        dnnl::post_ops sum;
        sum.append_sum(1.f);
        attr.set_post_ops(sum);
      }
      break;
    }
    default:
      BYOL_FAIL("linear_plan: op ", static_cast<int>(op), " is not a linear op");
  }
  dnnl::matmul::desc desc = has_bias && op == PlanOp::linear_forward
                                ? dnnl::matmul::desc(plan->src_md, plan->weights_md,
                                                     plan->bias_md, plan->dst_md)
                                : dnnl::matmul::desc(plan->src_md, plan->weights_md, plan->dst_md);
  const dnnl::matmul::primitive_desc pd(desc, attr, engine_);
  plan->primitive = dnnl::matmul(pd);
  plan->scratchpad_md = pd.scratchpad_desc();

  LinearPlan& ref = *plan;
  linear_plans_.emplace(key, std::move(plan));
  return ref;
}

void CpuBackend::linear_forward(float* out, const float* inp, const float* weight,
                                const float* bias, int B, int I, int O) {
  const char* op = "linear_forward";
  OpClock op_clock(this, op);
  op_clock.work([&] { return linear_work(B, I, O, false); });
  check_sizes(op, B, I, O);
  BYOL_CPU_CHECK_PTR(op, out);
  BYOL_CPU_CHECK_PTR(op, inp);
  BYOL_CPU_CHECK_PTR(op, weight);
  use_threads();
  std::lock_guard<std::mutex> lock(dnnl_mutex_);
  try {
    const bool has_bias = bias != nullptr;
    LinearPlan& plan = linear_plan(PlanOp::linear_forward, B, I, O, has_bias, false);
    memory src(plan.src_md, engine_, const_cast<float*>(inp));
    memory weights(plan.weights_md, engine_, const_cast<float*>(weight));
    memory dst(plan.dst_md, engine_, out);
    if (has_bias) {
      memory bias_mem(plan.bias_md, engine_, const_cast<float*>(bias));
      plan.primitive.execute(stream_, {{DNNL_ARG_SRC, src},
                                       {DNNL_ARG_WEIGHTS, weights},
                                       {DNNL_ARG_BIAS, bias_mem},
                                       {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad(plan.scratchpad_md)}});
    } else {
      plan.primitive.execute(stream_,
                             {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad(plan.scratchpad_md)}});
    }
    stream_.wait();
  } catch (const dnnl::error& e) {
    BYOL_FAIL(op, ": oneDNN failed (", e.what(), ") for B=", B, ", I=", I, ", O=", O);
  }
}

void CpuBackend::linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                 const float* inp, const float* weight, int B, int I, int O,
                                 bool accumulate) {
  const char* op = "linear_backward";
  OpClock op_clock(this, op);
  op_clock.work([&] { return linear_work(B, I, O, true); });
  check_sizes(op, B, I, O);
  BYOL_CPU_CHECK_PTR(op, dweight);
  BYOL_CPU_CHECK_PTR(op, dout);
  BYOL_CPU_CHECK_PTR(op, inp);
  if (dinp != nullptr) BYOL_CPU_CHECK_PTR(op, weight);
  use_threads();
  {
    std::lock_guard<std::mutex> lock(dnnl_mutex_);
    try {
      if (dinp != nullptr) {
        LinearPlan& plan = linear_plan(PlanOp::linear_backward_data, B, I, O, false, false);
        memory src(plan.src_md, engine_, const_cast<float*>(dout));
        memory weights(plan.weights_md, engine_, const_cast<float*>(weight));
        memory dst(plan.dst_md, engine_, dinp);
        plan.primitive.execute(
            stream_, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad(plan.scratchpad_md)}});
      }
      LinearPlan& plan = linear_plan(PlanOp::linear_backward_weight, B, I, O, false, accumulate);
      memory src(plan.src_md, engine_, const_cast<float*>(dout));
      memory weights(plan.weights_md, engine_, const_cast<float*>(inp));
      memory dst(plan.dst_md, engine_, dweight);
      plan.primitive.execute(stream_,
                             {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad(plan.scratchpad_md)}});
      stream_.wait();
    } catch (const dnnl::error& e) {
      BYOL_FAIL(op, ": oneDNN failed (", e.what(), ") for B=", B, ", I=", I, ", O=", O);
    }
  }
  if (dbias != nullptr) {
    // dbias = column sums of dout, in double like batch norm's sums.
    std::vector<double> sums(static_cast<size_t>(O));
    column_reduce(B, O, 1, sums.data(), [&](int64_t begin, int64_t end, double* acc) {
      for (int64_t b = begin; b < end; ++b) {
        const float* row = dout + b * O;
#pragma omp simd
        for (int o = 0; o < O; ++o) acc[o] += row[o];
      }
    });
    for (int o = 0; o < O; ++o)
      dbias[o] = accumulate ? dbias[o] + static_cast<float>(sums[o]) : static_cast<float>(sums[o]);
  }
}

}  // namespace cpu
}  // namespace byol
