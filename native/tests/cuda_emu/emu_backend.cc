// emu_backend.cc: the emulated CUDA backend of emu_backend.h. Each op mirrors the CudaBackend
// method of the same name (cuda_backend.cc, conv.cc, linear.cc, optim.cc, augment.cc) down to
// its launcher calls; argument checks beyond what the kernels need are the real backend's
// business and are not repeated here.
#include "emu_backend.h"

#include "byol/backend.h"

// Before prelude.h, which renames the token `cuda` (byol::cuda -> byol::cuda_emu) from there on.
namespace {
constexpr byol::DeviceType kCudaDevice = byol::DeviceType::cuda;
}

#include "prelude.h"

#include <cstring>
#include <vector>

#include "../../core/augment_math.h"
#include "../../core/optim_math.h"
#include "guarded_heap.h"
#include "kernels.h"

namespace byol_test {
namespace {

using byol::AugmentParams;
using byol::BnEpilogue;
using byol::ConvShape;
using byol::ParamSegment;
using byol::PoolShape;
namespace k = byol::cuda;  // the emulated launchers (byol::cuda_emu)

using GuardedHeap = byol_emu::GuardedHeap;

class EmuBackend final : public byol::Backend {
 public:
  EmuBackend(byol::Backend* reference, int num_sms) : ref_(reference), num_sms_(num_sms) {
    BYOL_CHECK(reference && reference->type() == byol::DeviceType::cpu,
               "make_emu_backend: expected the CPU backend as the reference");
    status_ = static_cast<unsigned*>(alloc(sizeof(unsigned)));
    *status_ = 0;
  }
  ~EmuBackend() override { heap_.release(status_); }

  byol::DeviceType type() const override { return kCudaDevice; }
  std::string describe() const override {
    return "cuda kernels emulated on the CPU (" + std::to_string(num_sms_) +
           " SMs for the batch norm split; convolutions and GEMMs by the CPU backend)";
  }

  void* alloc(size_t bytes) override {
    void* ptr = heap_.alloc(bytes);
    BYOL_CHECK(ptr, "cuda (emulated): alloc: could not map ", bytes, " bytes");
    return ptr;
  }
  void release(void* ptr) override { heap_.release(ptr); }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
    check_status();
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes && dst != src) std::memmove(dst, src, bytes);
  }
  void fill(float* dst, float value, size_t n) override {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    if (bits == 0)
      std::memset(dst, 0, n * sizeof(float));  // cudaMemsetAsync
    else
      k::fill(dst, value, n, nullptr);
  }
  void synchronize() override { check_status(); }

  // ---- convolutions: cuDNN's part by the CPU backend, with conv.cc's weight reorders ----
  void conv2d_forward(float* out, const float* inp, const float* weight, const ConvShape& s) override {
    Scratch w(this, weight_floats(s));
    through_krsc(w.f32(), weight, s);
    ref_->conv2d_forward(out, inp, w.f32(), s);
  }
  void conv2d_backward_data(float* dinp, const float* dout, const float* weight, const ConvShape& s) override {
    Scratch w(this, weight_floats(s));
    through_krsc(w.f32(), weight, s);
    ref_->conv2d_backward_data(dinp, dout, w.f32(), s);
  }
  void conv2d_backward_weight(float* dweight, const float* dout, const float* inp, const ConvShape& s,
                              bool accumulate) override {
    // cuDNN writes the KRSC gradient; krsc_to_oihw adds or writes it into dweight.
    Scratch oihw(this, weight_floats(s)), krsc(this, weight_floats(s));
    ref_->conv2d_backward_weight(oihw.f32(), dout, inp, s, false);
    k::oihw_to_krsc(krsc.f32(), oihw.f32(), s.K, s.C, s.R, s.S, nullptr);
    k::krsc_to_oihw(dweight, krsc.f32(), s.K, s.C, s.R, s.S, accumulate, nullptr);
  }

  // ---- batch norm ----
  void batchnorm_forward_train(float* out, float* save_mean, float* save_rstd, float* running_mean,
                               float* running_var, const float* inp, const float* gamma, const float* beta, int M,
                               int C, float momentum, float eps, const BnEpilogue& epilogue) override {
    const k::BatchNormSplit split = k::batchnorm_split(M, C, num_sms_);
    Scratch scratch(this, split.forward_scratch_floats(C));
    k::batchnorm_forward_train(out, save_mean, save_rstd, running_mean, running_var, scratch.f32(), inp, gamma,
                               beta, M, C, momentum, eps, epilogue.residual, epilogue.relu, split, nullptr);
  }
  void batchnorm_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int M, int C, float eps,
                              const BnEpilogue& epilogue) override {
    k::batchnorm_forward_eval(out, inp, gamma, beta, running_mean, running_var, M, C, eps, epilogue.residual,
                              epilogue.relu, nullptr);
  }
  void batchnorm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                          const float* save_mean, const float* save_rstd, const float* gamma, int M, int C,
                          bool accumulate, const float* relu_out) override {
    const k::BatchNormSplit split = k::batchnorm_split(M, C, num_sms_);
    Scratch scratch(this, split.backward_scratch_floats(C));
    k::batchnorm_backward(dinp, dgamma, dbeta, scratch.f32(), dout, inp, save_mean, save_rstd, gamma, relu_out, M, C,
                          accumulate, split, nullptr);
  }

  // ---- elementwise and pooling ----
  void relu_forward(float* out, const float* inp, size_t n) override { k::relu_forward(out, inp, n, nullptr); }
  void relu_backward(float* dinp, const float* dout, const float* out, size_t n) override {
    k::relu_backward(dinp, dout, out, n, nullptr);
  }
  void add(float* out, const float* a, const float* b, size_t n) override { k::add(out, a, b, n, nullptr); }
  void accumulate(float* dst, const float* src, size_t n) override { k::accumulate(dst, src, n, nullptr); }
  void ema_update(float* target, const float* online, size_t n, float tau, const float* tau_device) override {
    k::ema_update(target, online, n, tau, tau_device, nullptr);
  }
  void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const PoolShape& s) override {
    k::maxpool2d_forward(out, argmax, inp, s.N, s.H, s.W, s.C, s.kernel, s.stride, s.pad, s.P(), s.Q(), nullptr);
  }
  void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const PoolShape& s) override {
    k::maxpool2d_backward(dinp, dout, argmax, s.N, s.H, s.W, s.C, s.kernel, s.stride, s.pad, s.P(), s.Q(), nullptr);
  }
  void avgpool_forward(float* out, const float* inp, int N, int HW, int C) override {
    k::reduce_rows(out, inp, N, HW, C, 1.0f / float(HW), false, nullptr);
  }
  void avgpool_backward(float* dinp, const float* dout, int N, int HW, int C) override {
    k::avgpool_backward(dinp, dout, N, HW, C, nullptr);
  }

  // ---- linear: cuBLAS's part by the CPU backend, with linear.cc's bias kernels ----
  void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int I,
                      int O) override {
    if (!bias) return ref_->linear_forward(out, inp, weight, nullptr, B, I, O);
    // out = bias rows, then the GEMM adds (beta = 1).
    Scratch product(this, size_t(B) * O);
    ref_->linear_forward(product.f32(), inp, weight, nullptr, B, I, O);
    k::broadcast_rows(out, bias, B, O, nullptr);
    k::accumulate(out, product.f32(), size_t(B) * O, nullptr);
  }
  void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int B, int I, int O, bool accumulate) override {
    ref_->linear_backward(dinp, dweight, nullptr, dout, inp, weight, B, I, O, accumulate);
    if (dbias) k::reduce_rows(dbias, dout, 1, B, O, 1.0f, accumulate, nullptr);
  }

  // ---- losses ----
  void byol_loss_forward(float* loss, const float* p, const float* z, int B, int D, bool accumulate) override {
    Scratch rows(this, size_t(B));
    k::byol_loss_forward(loss, rows.f32(), p, z, B, D, accumulate, nullptr);
  }
  void byol_loss_backward(float* dp, const float* p, const float* z, float dloss, int B, int D) override {
    k::byol_loss_backward(dp, p, z, dloss, B, D, nullptr);
  }
  void cross_entropy_forward(float* loss, float* probs, const float* logits, const int32_t* labels, int B,
                             int K) override {
    Scratch rows(this, size_t(B));
    k::cross_entropy_forward(loss, probs, rows.f32(), status_, logits, labels, B, K, nullptr);
  }
  void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* labels, float dloss, int B,
                              int K) override {
    k::cross_entropy_backward(dlogits, status_, probs, labels, dloss, B, K, nullptr);
  }

  // ---- optimizers: optim.cc's tables (cut_segments), in backend memory ----
  void lars_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                   int num_segments, const byol::LarsOptions& opt) override {
    if (byol::optim::check_lars("cuda: lars_update", params, momentum, grads, segments, num_segments, opt) == 0)
      return;
    Table t(this, segments, num_segments);
    Scratch scratch(this, (k::lars_scratch_bytes(t.num_chunks, num_segments) + 3) / 4);
    k::lars_update(params, momentum, scratch.f32(), grads, t.chunks(), t.num_chunks, t.ranges(), num_segments, opt,
                   nullptr);
  }
  void sgd_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                  int num_segments, const byol::SgdOptions& opt) override {
    if (byol::optim::check_sgd("cuda: sgd_update", params, momentum, grads, segments, num_segments, opt) == 0) return;
    Table t(this, segments, num_segments);
    k::sgd_update(params, momentum, grads, t.chunks(), t.num_chunks, t.ranges(), opt, nullptr);
  }
  void adamw_update(float* params, float* state, const float* grads, const ParamSegment* segments, int num_segments,
                    const byol::AdamWOptions& opt) override {
    const int64_t extent =
        byol::optim::check_adamw("cuda: adamw_update", params, state, grads, segments, num_segments, opt);
    if (extent == 0) return;
    Table t(this, segments, num_segments);
    k::adamw_update(params, state, state + extent, grads, t.chunks(), t.num_chunks, t.ranges(),
                    byol::optim::adamw_constants(opt), nullptr);
  }

  // ---- augmentation: augment.cc's argument block ----
  void augment(float* out, const uint8_t* images, const AugmentParams* params, int N, int H, int W, int C, int out_h,
               int out_w) override {
    if (!byol::augment_math::check_augment_args("cuda: ", out, images, params, N, H, W, C, out_h, out_w)) return;
    const k::AugmentArgs layout = k::augment_args(params, N);
    Scratch args(this, (layout.total_bytes + 3) / 4);
    char* device_args = reinterpret_cast<char*>(args.f32());
    k::stage_augment_args(device_args, params, N, layout);
    Scratch blur(this, layout.any_blur ? size_t(N) * out_h * out_w * C : 0);
    k::augment(out, reinterpret_cast<float*>(device_args + layout.staged_bytes), layout.any_blur ? blur.f32() : nullptr,
               images, reinterpret_cast<const AugmentParams*>(device_args),
               reinterpret_cast<const float*>(device_args + layout.params_bytes), layout.taps_stride, N, H, W, C,
               out_h, out_w, layout.any_jitter, layout.any_blur, nullptr);
  }

 private:
  // Scratch of one op (DeviceBuffer), in floats.
  class Scratch {
   public:
    Scratch(EmuBackend* b, size_t floats) : b_(b), p_(floats ? static_cast<float*>(b->alloc(floats * 4)) : nullptr) {}
    ~Scratch() { b_->release(p_); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    float* f32() const { return p_; }

   private:
    EmuBackend* b_;
    float* p_;
  };

  // A segment table as optim.cc uploads it: chunks, then ranges, in one buffer.
  class Table {
   public:
    Table(EmuBackend* b, const ParamSegment* segments, int num_segments) {
      std::vector<k::OptimChunk> chunks;
      std::vector<k::OptimSegment> ranges;
      k::cut_segments(segments, num_segments, &chunks, &ranges);
      num_chunks = static_cast<int>(chunks.size());
      const size_t chunk_bytes = chunks.size() * sizeof(k::OptimChunk), range_bytes = ranges.size() * sizeof(k::OptimSegment);
      memory_ = std::make_unique<Scratch>(b, (chunk_bytes + range_bytes + 3) / 4);
      char* m = reinterpret_cast<char*>(memory_->f32());
      std::memcpy(m, chunks.data(), chunk_bytes);
      std::memcpy(m + chunk_bytes, ranges.data(), range_bytes);
      ranges_offset_ = chunk_bytes;
    }
    const k::OptimChunk* chunks() const { return reinterpret_cast<const k::OptimChunk*>(memory_->f32()); }
    const k::OptimSegment* ranges() const {
      return reinterpret_cast<const k::OptimSegment*>(reinterpret_cast<const char*>(memory_->f32()) + ranges_offset_);
    }
    int num_chunks = 0;

   private:
    std::unique_ptr<Scratch> memory_;
    size_t ranges_offset_ = 0;
  };

  static size_t weight_floats(const ConvShape& s) { return size_t(s.K) * s.C * s.R * s.S; }

  // OIHW -> KRSC (what conv.cc hands cuDNN) -> OIHW again for the CPU convolution: equal to
  // `weight` only if both reorder kernels are right.
  void through_krsc(float* oihw_out, const float* weight, const ConvShape& s) {
    Scratch krsc(this, weight_floats(s));
    k::oihw_to_krsc(krsc.f32(), weight, s.K, s.C, s.R, s.S, nullptr);
    k::krsc_to_oihw(oihw_out, krsc.f32(), s.K, s.C, s.R, s.S, false, nullptr);
  }

  // CudaBackend::check_device_status.
  void check_status() {
    const unsigned bits = *status_;
    if (bits == 0) return;
    *status_ = 0;
    std::string where;
    if (bits & k::kStatusCrossEntropyForwardLabel) where += "cross_entropy_forward";
    if (bits & k::kStatusCrossEntropyBackwardLabel)
      where += where.empty() ? "cross_entropy_backward" : " and cross_entropy_backward";
    throw byol::Error("cuda (emulated): " + where + ": a label was outside [0, K) (its loss/gradient was set to NaN)");
  }

  byol::Backend* ref_;
  int num_sms_;
  GuardedHeap heap_{"cuda (emulated)"};
  unsigned* status_ = nullptr;
};

}  // namespace

std::unique_ptr<byol::Backend> make_emu_backend(byol::Backend* reference, int num_sms) {
  return std::make_unique<EmuBackend>(reference, num_sms);
}

void with_reverse_schedule(const std::function<void()>& fn) {
  byol_emu::set_order(byol_emu::Order::reverse);
  try {
    fn();
  } catch (...) {
    byol_emu::set_order(byol_emu::Order::forward);
    throw;
  }
  byol_emu::set_order(byol_emu::Order::forward);
}

}  // namespace byol_test
