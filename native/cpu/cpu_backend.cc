// cpu_backend.cc: the CPU backend's factory, description, memory, elementwise ops and the
// oneDNN plan cache. Host memory is the device memory here: pointers are plain pointers,
// allocations are 64-byte aligned (AVX-512 lines, oneDNN's preference).
#include "cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "augment_cpu.h"
#include "optim_cpu.h"
#include "parallel.h"

namespace byol {

std::unique_ptr<Backend> make_cpu_backend(int threads, bool conv_bf16) {
  auto backend = std::make_unique<cpu::CpuBackend>(threads);
  backend->set_conv_bf16(conv_bf16);
  return backend;
}

namespace cpu {
namespace {

std::string read_cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    size_t start = line.find_first_not_of(" \t", colon + 1);
    return start == std::string::npos ? "unknown CPU" : line.substr(start);
  }
  return "unknown CPU";
}

const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "generic";
  }
}

// Large copies are split over the team: one core cannot saturate memory bandwidth on a
// server part, and parameter and activation buffers run to hundreds of MiB. Below about
// 4 MiB (work / 128 under threads_for's threshold) one memcpy is faster.
void parallel_memcpy(void* dst, const void* src, size_t bytes) {
  const int64_t len = static_cast<int64_t>(bytes);
  parallel_blocks(len, len / 128, [&](int64_t b, int64_t e) {
    std::memcpy(static_cast<char*>(dst) + b, static_cast<const char*>(src) + b,
                static_cast<size_t>(e - b));
  });
}

}  // namespace

bool PlanKey::operator==(const PlanKey& o) const {
  return op == o.op && accumulate == o.accumulate && std::memcmp(dims, o.dims, sizeof dims) == 0;
}

size_t PlanKeyHash::operator()(const PlanKey& k) const {
  // FNV-1a over the fields: keys are few and small, any decent mix will do.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  mix(static_cast<uint64_t>(k.op));
  mix(k.accumulate);
  for (int32_t d : k.dims) mix(static_cast<uint32_t>(d));
  return static_cast<size_t>(h);
}

ScratchBuffer::~ScratchBuffer() { std::free(data_); }

void* ScratchBuffer::get(size_t bytes) {
  if (bytes <= bytes_) return data_;
  size_t rounded = (bytes + 63) / 64 * 64;
  void* fresh = std::aligned_alloc(64, rounded);
  BYOL_CHECK(fresh != nullptr, "cpu: out of memory allocating ", rounded,
             " bytes of oneDNN scratch");
  std::free(data_);
  data_ = fresh;
  bytes_ = rounded;
  return data_;
}

CpuBackend::CpuBackend(int threads)
    // "All cores" is resolved once, here: OpenMP's default (OMP_NUM_THREADS, else the CPUs
    // this process may run on), so later ops do not depend on which host thread calls them.
    : threads_(threads > 0 ? threads : omp_get_max_threads()), cpu_model_(read_cpu_model()) {
  use_threads();
  try {
    engine_ = dnnl::engine(dnnl::engine::kind::cpu, 0);
    stream_ = dnnl::stream(engine_);
  } catch (const dnnl::error& e) {
    BYOL_FAIL("cpu: could not create the oneDNN CPU engine: ", e.what());
  }
  conv_gemm_auto_ = cpu_capabilities().conv_gemm_auto;
  set_conv_algorithm(parse_conv_algorithm(conv_algorithm_setting(), "BYOL_CPU_CONV"));
}

CpuBackend::~CpuBackend() = default;

namespace {
thread_local bool t_serial = false;
}  // namespace

void set_thread_serial(bool serial) {
  t_serial = serial;
  if (serial && omp_get_max_threads() != 1) omp_set_num_threads(1);
}

void CpuBackend::use_threads() const {
  const int n = t_serial ? 1 : threads_.load();
  if (omp_get_max_threads() != n) omp_set_num_threads(n);
}

void CpuBackend::set_threads(int threads) {
  BYOL_CHECK(threads >= 1, "cpu: expected a thread count >= 1 but received ", threads);
  threads_.store(threads);
}

namespace {
double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

OpClock::OpClock(CpuBackend* backend, const char* op) : op_(op) {
  if (!backend->op_timer_.on() || !nesting_.outermost()) return;
  timer_ = &backend->op_timer_;
  phase_ = timer_->phase();
  start_ms_ = now_ms();
}

OpClock::~OpClock() {
  if (timer_) timer_->add(phase_, op_, now_ms() - start_ms_, work_);
}

void CpuBackend::range_push(const char* name) noexcept {
  try {
    op_timer_.push(name);
  } catch (...) {  // out of memory for a name: that range's ops count under the outer phase
  }
}

void CpuBackend::range_pop() noexcept { op_timer_.pop(); }

bool CpuBackend::set_op_timing(bool on) {
  op_timer_.set(on);
  return true;
}

std::vector<OpTime> CpuBackend::op_times(bool reset) { return op_timer_.rows(reset); }

std::string CpuBackend::describe() const {
  const CpuCapabilities caps = cpu_capabilities();
  std::ostringstream os;
  const int threads = threads_.load();
  os << "cpu: " << cpu_model_ << ", " << threads << (threads == 1 ? " thread" : " threads") << ", oneDNN " << caps.onednn_version
     << " (" << caps.onednn_isa << ")";
  if (conv_bf16()) os << ", bf16 convolutions";
  if (conv_algorithm() != ConvAlgorithm::automatic)
    os << ", " << conv_algorithm_name(conv_algorithm()) << " convolutions";
  else if (conv_gemm_auto_)
    os << ", im2col+SGEMM for wide convolutions";
  return os.str();
}

namespace {

// The path each BYOL_CPU_KERNEL loop takes is chosen by GCC's ifunc resolver from the same
// target list (parallel.h). Overloads on the same targets go through that resolver too, so
// this answers with the clone the kernels actually run, not a re-implementation of its rules.
#define BYOL_CPU_STRINGIFY_(x) #x
#define BYOL_CPU_STRINGIFY(x) BYOL_CPU_STRINGIFY_(x)
// BYOL_CPU_KERNEL expands to nothing where parallel.h builds one path only.
constexpr bool kKernelsMultiversioned = sizeof(BYOL_CPU_STRINGIFY(BYOL_CPU_KERNEL)) > 1;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BYOL_CPU_HAVE_DISPATCH_PROBE 1
__attribute__((target("default"))) const char* dispatched_variant() { return "x86-64"; }
__attribute__((target("arch=x86-64-v3"))) const char* dispatched_variant() { return "x86-64-v3"; }
__attribute__((target("arch=x86-64-v4"))) const char* dispatched_variant() { return "x86-64-v4"; }
#endif

// The one path a build without multiversioning has: what the compiler targeted.
const char* build_variant() {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
  return "x86-64-v4";
#elif defined(__AVX2__) && defined(__FMA__)
  return "x86-64-v3";
#elif defined(__x86_64__)
  return "x86-64";
#elif defined(__aarch64__)
  return "aarch64";
#else
  return "generic";
#endif
}

const char* variant_isa(const std::string& variant) {
  if (variant == "x86-64-v4") return "AVX-512 (F, BW, CD, DQ, VL)";
  if (variant == "x86-64-v3") return "AVX2, FMA, BMI2, F16C";
  if (variant == "x86-64") return "SSE2 (x86-64 baseline)";
  if (variant == "aarch64") return "NEON (Armv8-A baseline)";
  return "compiler default";
}

}  // namespace

const char* conv_algorithm_name(ConvAlgorithm a) {
  switch (a) {
    case ConvAlgorithm::onednn: return "onednn";
    case ConvAlgorithm::gemm: return "gemm";
    default: return "auto";
  }
}

std::string conv_algorithm_setting() {
  const char* env = std::getenv("BYOL_CPU_CONV");
  return env && *env ? env : "auto";
}

ConvAlgorithm parse_conv_algorithm(const std::string& text, const std::string& what) {
  for (ConvAlgorithm a : {ConvAlgorithm::automatic, ConvAlgorithm::onednn, ConvAlgorithm::gemm})
    if (text == conv_algorithm_name(a)) return a;
  BYOL_FAIL(what, ": expected 'auto', 'onednn' or 'gemm' but received '", text, "'");
}

void CpuBackend::set_conv_bf16(bool bf16) {
  if (bf16 && !cpu_capabilities().bf16_supported)
    throw NotSupported(std::string("cpu: bf16 convolutions need a CPU with AVX-512 (oneDNN runs ") +
                       isa_name(dnnl::get_effective_cpu_isa()) + " code here); use float32");
  conv_bf16_.store(bf16);
}

CpuCapabilities cpu_capabilities() {
  CpuCapabilities caps;
  const dnnl_version_t* v = dnnl_version();
  caps.onednn_version = std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                        std::to_string(v->patch);
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  caps.onednn_isa = isa_name(isa);
  caps.bf16_native = isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
  caps.bf16_supported = caps.bf16_native || isa == dnnl::cpu_isa::avx512_core || isa == dnnl::cpu_isa::avx512_core_vnni;
  // cpu_isa values are feature masks (avx2_vnni is numerically above avx512_core).
  const int avx512 = static_cast<int>(dnnl::cpu_isa::avx512_core);
  caps.conv_gemm_auto = (static_cast<int>(isa) & avx512) != avx512;
  caps.kernels_multiversioned = kKernelsMultiversioned;
  caps.kernel_variant = build_variant();
  caps.kernel_variants = {caps.kernel_variant};
#ifdef BYOL_CPU_HAVE_DISPATCH_PROBE
  if (kKernelsMultiversioned) {
    caps.kernel_variant = dispatched_variant();
    caps.kernel_variants = {"x86-64-v4", "x86-64-v3", "x86-64"};
  }
#endif
  caps.kernel_isa = variant_isa(caps.kernel_variant);
#if defined(__clang__)
  caps.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  caps.compiler = std::string("GCC ") + __VERSION__;
#elif defined(_MSC_VER)
  caps.compiler = "MSVC " + std::to_string(_MSC_FULL_VER);
#else
  caps.compiler = "unknown compiler";
#endif
  return caps;
}

size_t CpuBackend::cached_plans() const {
  std::lock_guard<std::mutex> lock(dnnl_mutex_);
  return conv_plans_.size() + linear_plans_.size();
}

void CpuBackend::limit_cache() {
  // A training run uses a few dozen shapes; evaluation with ragged last batches adds a
  // handful more. Dropping everything past the bound keeps memory flat for callers that
  // sweep shapes, and oneDNN's own primitive cache makes the rebuilds cheap.
  constexpr size_t kMaxPlans = 256;
  if (conv_plans_.size() + linear_plans_.size() >= kMaxPlans) {
    conv_plans_.clear();
    linear_plans_.clear();
  }
}

// ---- memory ----

void* CpuBackend::alloc(size_t bytes) {
  // aligned_alloc wants a multiple of the alignment; zero bytes still gets a unique pointer.
  size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  BYOL_CHECK(rounded >= bytes, "cpu: alloc: ", bytes, " bytes overflows the address space");
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    std::ostringstream size;
    size.setf(std::ios::fixed);
    size.precision(1);
    size << bytes / double(1 << 20) << " MiB";
    BYOL_FAIL("cpu: out of memory allocating ", bytes, " bytes (", size.str(), ")");
  }
  return p;
}

void CpuBackend::release(void* ptr) { std::free(ptr); }

void CpuBackend::upload(void* dst, const void* host_src, size_t bytes) {
  OpClock op_clock(this, "upload");
  op_clock.work([&] { return OpWork{0, double(bytes)}; });
  if (bytes == 0) return;
  BYOL_CPU_CHECK_PTR("upload", dst);
  BYOL_CPU_CHECK_PTR("upload", host_src);
  use_threads();
  parallel_memcpy(dst, host_src, bytes);
}

void CpuBackend::download(void* host_dst, const void* src, size_t bytes) {
  OpClock op_clock(this, "download");
  op_clock.work([&] { return OpWork{0, double(bytes)}; });
  if (bytes == 0) return;
  BYOL_CPU_CHECK_PTR("download", host_dst);
  BYOL_CPU_CHECK_PTR("download", src);
  use_threads();
  parallel_memcpy(host_dst, src, bytes);
}

void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  OpClock op_clock(this, "copy");
  op_clock.work([&] { return OpWork{0, 2.0 * double(bytes)}; });
  if (bytes == 0 || dst == src) return;
  BYOL_CPU_CHECK_PTR("copy", dst);
  BYOL_CPU_CHECK_PTR("copy", src);
  use_threads();
  parallel_memcpy(dst, src, bytes);
}

void CpuBackend::fill(float* dst, float value, size_t n) {
  OpClock op_clock(this, "fill");
  op_clock.work([&] { return float_passes(1, double(n)); });
  if (n == 0) return;
  BYOL_CPU_CHECK_PTR("fill", dst);
  use_threads();
  const int64_t len = static_cast<int64_t>(n);
  parallel_blocks(len, len / 8, [&](int64_t b, int64_t e) { std::fill(dst + b, dst + e, value); });
}

// ---- elementwise ----

namespace {

// `x < 0 ? 0 : x` (not `x > 0 ? x : 0`) lets NaN through, as torch.relu does, so a
// diverging run is caught at the loss instead of being silently zeroed.
BYOL_CPU_KERNEL void relu_forward_kernel(float* out, const float* inp, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = inp[i] < 0.f ? 0.f : inp[i];
}

BYOL_CPU_KERNEL void relu_backward_kernel(float* dinp, const float* dout, const float* out,
                                          int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dinp[i] = out[i] > 0.f ? dout[i] : 0.f;
}

BYOL_CPU_KERNEL void add_kernel(float* out, const float* a, const float* b, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

BYOL_CPU_KERNEL void accumulate_kernel(float* dst, const float* src, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

BYOL_CPU_KERNEL void ema_kernel(float* target, const float* online, float rate, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) target[i] += rate * (online[i] - target[i]);
}

}  // namespace

void CpuBackend::relu_forward(float* out, const float* inp, size_t n) {
  OpClock op_clock(this, "relu_forward");
  op_clock.work([&] { return float_passes(2, double(n)); });
  if (n == 0) return;
  BYOL_CPU_CHECK_PTR("relu_forward", out);
  BYOL_CPU_CHECK_PTR("relu_forward", inp);
  use_threads();
  const int64_t len = static_cast<int64_t>(n);
  parallel_blocks(len, len, [&](int64_t b, int64_t e) { relu_forward_kernel(out + b, inp + b, e - b); });
}

void CpuBackend::relu_backward(float* dinp, const float* dout, const float* out, size_t n) {
  OpClock op_clock(this, "relu_backward");
  op_clock.work([&] { return float_passes(3, double(n)); });
  if (n == 0) return;
  BYOL_CPU_CHECK_PTR("relu_backward", dinp);
  BYOL_CPU_CHECK_PTR("relu_backward", dout);
  BYOL_CPU_CHECK_PTR("relu_backward", out);
  use_threads();
  const int64_t len = static_cast<int64_t>(n);
  parallel_blocks(len, len, [&](int64_t b, int64_t e) {
    relu_backward_kernel(dinp + b, dout + b, out + b, e - b);
  });
}

void CpuBackend::add(float* out, const float* a, const float* b, size_t n) {
  OpClock op_clock(this, "add");
  op_clock.work([&] { return float_passes(3, double(n)); });
  if (n == 0) return;
  BYOL_CPU_CHECK_PTR("add", out);
  BYOL_CPU_CHECK_PTR("add", a);
  BYOL_CPU_CHECK_PTR("add", b);
  use_threads();
  const int64_t len = static_cast<int64_t>(n);
  parallel_blocks(len, len, [&](int64_t lo, int64_t hi) { add_kernel(out + lo, a + lo, b + lo, hi - lo); });
}

void CpuBackend::accumulate(float* dst, const float* src, size_t n) {
  OpClock op_clock(this, "accumulate");
  op_clock.work([&] { return float_passes(3, double(n)); });
  if (n == 0) return;
  BYOL_CPU_CHECK_PTR("accumulate", dst);
  BYOL_CPU_CHECK_PTR("accumulate", src);
  use_threads();
  const int64_t len = static_cast<int64_t>(n);
  parallel_blocks(len, len, [&](int64_t b, int64_t e) { accumulate_kernel(dst + b, src + b, e - b); });
}

void CpuBackend::ema_update(float* target, const float* online, size_t n, float tau, const float* tau_device) {
  OpClock op_clock(this, "ema_update");
  op_clock.work([&] { return float_passes(3, double(n)); });
  if (n == 0) return;
  BYOL_CPU_CHECK_PTR("ema_update", target);
  BYOL_CPU_CHECK_PTR("ema_update", online);
  if (tau_device) tau = *tau_device;
  BYOL_CHECK(tau >= 0.f && tau <= 1.f, "ema_update: expected tau in [0, 1] but received ", tau);
  use_threads();
  const int64_t len = static_cast<int64_t>(n);
  const float rate = 1.f - tau;
  parallel_blocks(len, len, [&](int64_t b, int64_t e) { ema_kernel(target + b, online + b, rate, e - b); });
}

// ---- optimizers and augmentation: kernels in optim_cpu.cc and augment_cpu.cc ----

void CpuBackend::lars_update(float* params, float* momentum, const float* grads,
                             const ParamSegment* segments, int num_segments,
                             const LarsOptions& opt) {
  OpClock op_clock(this, "lars_update");
  op_clock.work([&] { return optimizer_work(7, segments, num_segments); });
  use_threads();
  cpu::lars_update(params, momentum, grads, segments, num_segments, opt);
}

void CpuBackend::sgd_update(float* params, float* momentum, const float* grads,
                            const ParamSegment* segments, int num_segments,
                            const SgdOptions& opt) {
  OpClock op_clock(this, "sgd_update");
  op_clock.work([&] { return optimizer_work(5, segments, num_segments); });
  use_threads();
  cpu::sgd_update(params, momentum, grads, segments, num_segments, opt);
}

void CpuBackend::adamw_update(float* params, float* state, const float* grads,
                              const ParamSegment* segments, int num_segments,
                              const AdamWOptions& opt) {
  OpClock op_clock(this, "adamw_update");
  op_clock.work([&] { return optimizer_work(7, segments, num_segments); });
  use_threads();
  cpu::adamw_update(params, state, grads, segments, num_segments, opt);
}

void CpuBackend::augment(float* out, const uint8_t* images, const AugmentParams* params, int N,
                         int H, int W, int C, int out_h, int out_w) {
  const OpClock op_clock(this, "augment");
  use_threads();
  cpu::augment(out, images, params, N, H, W, C, out_h, out_w);
}

}  // namespace cpu
}  // namespace byol
