// conv.cc: 2-D convolution (forward, backward-data, backward-weight) on oneDNN.
// Contract: byol/backend.h. Activations are NHWC and handed to oneDNN as they are; weights
// are OIHW in our buffers and reordered to whatever layout oneDNN picks (format_tag::any),
// because its fast kernels want blocked weights and a weights reorder costs far less than
// the convolution. Primitives are built once per shape and cached.
#include <omp.h>

#include <algorithm>
#include <sstream>
#include <vector>

#include "cpu_backend.h"

namespace byol {
namespace cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr memory::data_type kF32 = memory::data_type::f32;
constexpr memory::data_type kBF16 = memory::data_type::bf16;

std::string shape_text(const ConvShape& s) {
  std::ostringstream os;
  os << "input (N=" << s.N << ", H=" << s.H << ", W=" << s.W << ", C=" << s.C << "), weight (K="
     << s.K << ", C=" << s.C << ", R=" << s.R << ", S=" << s.S << "), stride " << s.stride
     << ", pad " << s.pad;
  return os.str();
}

// The convolutions whose weight gradient conv2d_backward_weight computes as a GEMM instead of
// with oneDNN (see there): 1x1, unpadded, strided, fewer than 8 input channels. Their work is
// tiny (a downsample shortcut of a very narrow network), so the GEMM's extra copy costs nothing.
bool strided_1x1_with_few_channels(const ConvShape& s) {
  return s.R == 1 && s.S == 1 && s.pad == 0 && s.stride > 1 && s.C < 8;
}

void check_shape(const char* op, const ConvShape& s) {
  BYOL_CHECK(s.N > 0 && s.H > 0 && s.W > 0 && s.C > 0 && s.K > 0 && s.R > 0 && s.S > 0, op,
             ": expected every size > 0 but received ", shape_text(s));
  BYOL_CHECK(s.stride > 0, op, ": expected stride > 0 but received ", s.stride);
  BYOL_CHECK(s.pad >= 0, op, ": expected pad >= 0 but received ", s.pad);
  BYOL_CHECK(s.H + 2 * s.pad >= s.R && s.W + 2 * s.pad >= s.S, op,
             ": the kernel does not fit the padded input: ", shape_text(s));
}

}  // namespace

ConvPlan& CpuBackend::conv_plan(PlanOp op, const ConvShape& s, bool accumulate) {
  // bf16 applies to forward and backward-data only (cpu_backend.h, set_conv_bf16).
  const bool bf16 = conv_bf16() && op != PlanOp::conv_backward_weight;
  PlanKey key{op, {s.N, s.H, s.W, s.C, s.K, s.R, s.S, s.stride, s.pad, bf16 ? 1 : 0, omp_get_max_threads()}, accumulate};
  auto found = conv_plans_.find(key);
  if (found != conv_plans_.end()) return *found->second;
  limit_cache();

  const int P = s.P(), Q = s.Q();
  // The primitive's input (forward: src, backward-data: diff_dst) and its weights are bf16 in
  // a bf16 plan; what it writes is float32 either way.
  const memory::data_type in_type = bf16 ? kBF16 : kF32;
  memory::desc src_md({s.N, s.C, s.H, s.W}, kF32, Tag::nhwc);
  memory::desc dst_md({s.N, s.K, P, Q}, kF32, Tag::nhwc);
  // The forward descriptor (also the hint for the backward ones) reads bf16 src in a bf16
  // plan and writes bf16 dst where that dst is backward-data's bf16 diff_dst.
  memory::desc fwd_src_md({s.N, s.C, s.H, s.W}, in_type, Tag::nhwc);
  memory::desc fwd_dst_md({s.N, s.K, P, Q}, op == PlanOp::conv_backward_data ? in_type : kF32,
                          Tag::nhwc);
  memory::desc any_weights_md({s.K, s.C, s.R, s.S}, in_type, Tag::any);
  memory::desc user_weights_md({s.K, s.C, s.R, s.S}, kF32, Tag::oihw);
  // PyTorch's output size rounds down, so the right/bottom padding actually used can be
  // less than `pad` (even negative: input rows the kernel never reaches). oneDNN wants
  // the exact amount, the same value ideep hands it for torch's own CPU convolutions.
  memory::dims strides{s.stride, s.stride};
  memory::dims pad_l{s.pad, s.pad};
  memory::dims pad_r{(P - 1) * s.stride + s.R - s.H - s.pad, (Q - 1) * s.stride + s.S - s.W - s.pad};

  // Direct convolution, never Winograd: results must match PyTorch to ~1e-5.
  dnnl::convolution_forward::desc fwd_desc(dnnl::prop_kind::forward_training,
                                           dnnl::algorithm::convolution_direct, fwd_src_md,
                                           any_weights_md, fwd_dst_md, strides, pad_l, pad_r);
  // Scratchpads in user mode: oneDNN's default keeps one global scratchpad per thread, sized
  // when a primitive is created on that thread, so a plan created on one thread and executed
  // on another (the addon's steps run on whichever libuv worker is free) wrote through a null
  // scratchpad (a crash at address 0x100 in the gemm-based backward-weights kernel on AVX2).
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::convolution_forward::primitive_desc fwd_pd(fwd_desc, attr, engine_);

  auto plan = std::make_unique<ConvPlan>();
  plan->user_weights_md = user_weights_md;
  switch (op) {
    case PlanOp::conv_forward: {
      plan->primitive = dnnl::convolution_forward(fwd_pd);
      plan->input_md = fwd_src_md;
      plan->output_md = dst_md;
      plan->weights_md = fwd_pd.weights_desc();
      plan->impl = fwd_pd.impl_info_str();
      plan->scratchpad_md = fwd_pd.scratchpad_desc();
      break;
    }
    case PlanOp::conv_backward_data: {
      dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, src_md,
                                                 any_weights_md, fwd_dst_md, strides, pad_l,
                                                 pad_r);
      dnnl::convolution_backward_data::primitive_desc pd(desc, attr, engine_, fwd_pd);
      plan->primitive = dnnl::convolution_backward_data(pd);
      plan->input_md = fwd_dst_md;
      plan->output_md = src_md;
      plan->weights_md = pd.weights_desc();
      plan->impl = pd.impl_info_str();
      plan->scratchpad_md = pd.scratchpad_desc();
      break;
    }
    case PlanOp::conv_backward_weight: {
      dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, src_md,
                                                    any_weights_md, dst_md, strides, pad_l,
                                                    pad_r);
      dnnl::convolution_backward_weights::primitive_desc pd(desc, attr, engine_, fwd_pd);
      plan->primitive = dnnl::convolution_backward_weights(pd);
      plan->input_md = src_md;
      plan->output_md = dst_md;
      plan->weights_md = pd.diff_weights_desc();
      plan->impl = pd.impl_info_str();
      plan->scratchpad_md = pd.scratchpad_desc();
      break;
    }
    default:
      BYOL_FAIL("conv_plan: op ", static_cast<int>(op), " is not a convolution");
  }

  if (bf16) {
    plan->bf16 = true;
    plan->input_bf16_md = plan->input_md;
    plan->input_md = memory::desc(plan->input_md.dims(), kF32, Tag::nhwc);
    plan->input_reorder = dnnl::reorder(
        dnnl::reorder::primitive_desc(engine_, plan->input_md, engine_, plan->input_bf16_md));
  }

  if (op == PlanOp::conv_backward_weight) {
    // Backward-weight has no sum post-op in oneDNN, but a reorder does: the gradient lands
    // in scratch in oneDNN's layout and one reorder both converts it to OIHW and, when
    // accumulating, adds it to what the buffer holds (dst = src + 1.0 * dst).
    plan->via_scratch = accumulate || plan->weights_md != user_weights_md;
    if (plan->via_scratch) {
      dnnl::primitive_attr attr;
      if (accumulate) {
        dnnl::post_ops sum;
        sum.append_sum(1.f);
        attr.set_post_ops(sum);
      }
      plan->weights_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
          engine_, plan->weights_md, engine_, user_weights_md, attr));
    }
  } else {
    plan->via_scratch = plan->weights_md != user_weights_md;
    if (plan->via_scratch)
      plan->weights_reorder = dnnl::reorder(
          dnnl::reorder::primitive_desc(engine_, user_weights_md, engine_, plan->weights_md));
  }

  ConvPlan& ref = *plan;
  conv_plans_.emplace(key, std::move(plan));
  return ref;
}

// The primitive's input memory for a user's float32 NHWC buffer: the buffer itself, or in a
// bf16 plan its bf16 copy in input_scratch_ (valid until the next call).
memory CpuBackend::plan_input(ConvPlan& plan, const float* inp) {
  memory user(plan.input_md, engine_, const_cast<float*>(inp));
  if (!plan.bf16) return user;
  memory converted(plan.input_bf16_md, engine_,
                   input_scratch_.get(plan.input_bf16_md.get_size()));
  plan.input_reorder.execute(stream_, user, converted);
  return converted;
}

std::string CpuBackend::conv_implementation(PlanOp op, const ConvShape& s) {
  check_shape("conv_implementation", s);
  if (conv_uses_gemm(op, s)) return gemm_conv_implementation(s);
  std::lock_guard<std::mutex> lock(dnnl_mutex_);
  return conv_plan(op, s, false).impl;
}

void CpuBackend::conv2d_forward(float* out, const float* inp, const float* weight,
                                const ConvShape& s) {
  const char* op = "conv2d_forward";
  OpClock op_clock(this, op);
  op_clock.work([&] { return conv_work(s); });
  check_shape(op, s);
  BYOL_CPU_CHECK_PTR(op, out);
  BYOL_CPU_CHECK_PTR(op, inp);
  BYOL_CPU_CHECK_PTR(op, weight);
  use_threads();
  std::lock_guard<std::mutex> lock(dnnl_mutex_);
  if (conv_uses_gemm(PlanOp::conv_forward, s)) return gemm_conv_forward(out, inp, weight, s);
  try {
    ConvPlan& plan = conv_plan(PlanOp::conv_forward, s, false);
    memory user_weights(plan.user_weights_md, engine_, const_cast<float*>(weight));
    memory weights = user_weights;
    if (plan.via_scratch) {
      weights = memory(plan.weights_md, engine_, scratch_.get(plan.weights_md.get_size()));
      plan.weights_reorder.execute(stream_, user_weights, weights);
    }
    memory src = plan_input(plan, inp);
    memory dst(plan.output_md, engine_, out);
    plan.primitive.execute(stream_, {{DNNL_ARG_SRC, src},
                                     {DNNL_ARG_WEIGHTS, weights},
                                     {DNNL_ARG_DST, dst},
                                     {DNNL_ARG_SCRATCHPAD, scratchpad(plan.scratchpad_md)}});
    stream_.wait();
  } catch (const dnnl::error& e) {
    BYOL_FAIL(op, ": oneDNN failed (", e.what(), ") for ", shape_text(s));
  }
}

void CpuBackend::conv2d_backward_data(float* dinp, const float* dout, const float* weight,
                                      const ConvShape& s) {
  const char* op = "conv2d_backward_data";
  OpClock op_clock(this, op);
  op_clock.work([&] { return conv_work(s); });
  check_shape(op, s);
  BYOL_CPU_CHECK_PTR(op, dinp);
  BYOL_CPU_CHECK_PTR(op, dout);
  BYOL_CPU_CHECK_PTR(op, weight);
  use_threads();
  std::lock_guard<std::mutex> lock(dnnl_mutex_);
  if (conv_uses_gemm(PlanOp::conv_backward_data, s)) return gemm_conv_backward_data(dinp, dout, weight, s);
  try {
    ConvPlan& plan = conv_plan(PlanOp::conv_backward_data, s, false);
    memory user_weights(plan.user_weights_md, engine_, const_cast<float*>(weight));
    memory weights = user_weights;
    if (plan.via_scratch) {
      weights = memory(plan.weights_md, engine_, scratch_.get(plan.weights_md.get_size()));
      plan.weights_reorder.execute(stream_, user_weights, weights);
    }
    memory diff_dst = plan_input(plan, dout);
    memory diff_src(plan.output_md, engine_, dinp);
    plan.primitive.execute(stream_, {{DNNL_ARG_DIFF_DST, diff_dst},
                                     {DNNL_ARG_WEIGHTS, weights},
                                     {DNNL_ARG_DIFF_SRC, diff_src},
                                     {DNNL_ARG_SCRATCHPAD, scratchpad(plan.scratchpad_md)}});
    stream_.wait();
  } catch (const dnnl::error& e) {
    BYOL_FAIL(op, ": oneDNN failed (", e.what(), ") for ", shape_text(s));
  }
}

dnnl::memory CpuBackend::scratchpad(const dnnl::memory::desc& md) {
  const size_t bytes = md.get_size();
  return dnnl::memory(md, engine_, bytes ? primitive_scratchpad_.get(bytes) : nullptr);
}

void CpuBackend::conv2d_backward_weight(float* dweight, const float* dout, const float* inp,
                                        const ConvShape& s, bool accumulate) {
  const char* op = "conv2d_backward_weight";
  OpClock op_clock(this, op);
  op_clock.work([&] { return conv_work(s); });
  check_shape(op, s);
  BYOL_CPU_CHECK_PTR(op, dweight);
  BYOL_CPU_CHECK_PTR(op, dout);
  BYOL_CPU_CHECK_PTR(op, inp);
  if (conv_uses_gemm(PlanOp::conv_backward_weight, s)) {
    use_threads();
    std::lock_guard<std::mutex> lock(dnnl_mutex_);
    return gemm_conv_backward_weight(dweight, dout, inp, s, accumulate);
  }
  if (strided_1x1_with_few_channels(s)) {
    // oneDNN 2.6's jit_1x1 backward-weights kernel for a strided 1x1 convolution with fewer
    // than 8 input channels (padded to its 8-channel block) writes outside its buffers: wrong
    // gradients that change from call to call (errors of order 1), and heap corruption with
    // one thread (reproduced for C = 1..7, any K, stride 2 and 3; C >= 8 is exact). Such a
    // convolution is a GEMM over the strided pixels: dW (K, C) (+)= dout^T (K, NPQ) x (NPQ, C).
    const int P = s.P(), Q = s.Q();
    std::vector<float> picked(size_t(s.N) * P * Q * s.C);
    float* dst = picked.data();
    for (int n = 0; n < s.N; ++n)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q, dst += s.C)
          std::copy_n(inp + ((size_t(n) * s.H + size_t(p) * s.stride) * s.W + size_t(q) * s.stride) * s.C, s.C, dst);
    linear_backward(nullptr, dweight, nullptr, dout, picked.data(), nullptr, s.N * P * Q, s.C, s.K, accumulate);
    return;
  }
  // oneDNN 2.6's jit backward-weights convolution corrupts memory when it runs with more
  // threads than images (reproduced: a batch of 8 with OMP_NUM_THREADS >= 9 crashes in the
  // next oneDNN call, 8 threads never do). Its thread count is fixed when the primitive is
  // created, so both creation and execution run with at most N threads; the plan cache key
  // holds N, so one key always means one thread count.
  const int threads = std::max(1, std::min(threads_.load(), s.N));
  if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
  std::lock_guard<std::mutex> lock(dnnl_mutex_);
  try {
    ConvPlan& plan = conv_plan(PlanOp::conv_backward_weight, s, accumulate);
    memory user_dweights(plan.user_weights_md, engine_, dweight);
    memory dweights = user_dweights;
    if (plan.via_scratch)
      dweights = memory(plan.weights_md, engine_, scratch_.get(plan.weights_md.get_size()));
    memory src(plan.input_md, engine_, const_cast<float*>(inp));
    memory diff_dst(plan.output_md, engine_, const_cast<float*>(dout));
    plan.primitive.execute(stream_, {{DNNL_ARG_SRC, src},
                                     {DNNL_ARG_DIFF_DST, diff_dst},
                                     {DNNL_ARG_DIFF_WEIGHTS, dweights},
                                     {DNNL_ARG_SCRATCHPAD, scratchpad(plan.scratchpad_md)}});
    if (plan.via_scratch) plan.weights_reorder.execute(stream_, dweights, user_dweights);
    stream_.wait();
  } catch (const dnnl::error& e) {
    BYOL_FAIL(op, ": oneDNN failed (", e.what(), ") for ", shape_text(s));
  }
}

}  // namespace cpu
}  // namespace byol
