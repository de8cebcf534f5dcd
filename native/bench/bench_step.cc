// bench_step.cc: byol_bench_step, the native BYOL training step (ByolModel::step: two views,
// online + target forward, symmetric loss, backward, optimizer, EMA) timed on one device
// without Node, for bench/gpu.sh to set beside PyTorch. Contract: prints exactly one JSON line
// on stdout (the result, or {"error": ...} when the step cannot run); exit 0 on success, 3 when
// the backend lacks an op the step needs (byol::NotSupported), 1 on any other failure, 2 on
// bad arguments (the reason on stderr, no JSON). Views are synthetic and pre-augmented (random
// normal NHWC floats uploaded once): augmentation is not part of the timed step.
#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "byol/backend.h"
#include "byol/model.h"
#include "byol/plugin.h"
#include "byol/safetensors.h"
#include "byol/tensor.h"

namespace {

const char* kUsage =
    "usage: byol_bench_step [--device cpu|cuda|cuda:N] [--variant fp32|tf32|bf16] [--arch resnet18|resnet34|resnet50]\n"
    "                       [--stem cifar|imagenet] [--width W] [--channels C] [--size S] [--batch N]\n"
    "                       [--hidden H] [--out D] [--pred-hidden H] [--optimizer lars|sgd|adamw]\n"
    "                       [--warmup K] [--steps K] [--max-seconds T] [--threads T] [--seed S]\n"
    "                       [--graphs on|off] [--op-times K] [--classes K]\n"
    "  --device       where the step runs (default cpu); cuda loads libbyol_cuda.so ($BYOL_CUDA_LIBRARY)\n"
    "  --variant      fp32 (default); tf32 (cuda: sets BYOL_CUDA_TF32=1); bf16 (cpu: bf16 convolutions)\n"
    "  --warmup       untimed steps first (default 3: cuDNN algorithm search, pool growth)\n"
    "  --steps        timed steps at most (default 20)\n"
    "  --max-seconds  stop timing after this many seconds once 2 steps ran (default 10)\n"
    "  --threads      CPU backend threads, 0 = all cores (default 0)\n"
    "  --graphs       on (default): steps after the first two replay as a CUDA graph where the\n"
    "                 backend captures (ByolModel::set_use_graphs); off: every step eager\n"
    "  --classes      K > 0: with the online classifier on K classes (labels i mod K); default 0\n"
    "  --op-times     K > 0: after the timed steps, K more eager steps with op timing on\n"
    "                 (Backend::set_op_timing): JSON field op_times, and a table on stderr of\n"
    "                 the time per step by phase and op (default 0: none)\n"
    "Defaults: ResNet-18 cifar stem, width 1, 3x32x32, batch 64, projector 4096/256, predictor 4096, LARS.\n"
    "cuDNN benchmark mode is on (BYOL_CUDNN_BENCHMARK=1) unless the environment sets it.\n";

struct Options {
  std::string device = "cpu";
  std::string variant = "fp32";
  byol::ModelConfig model;
  int batch = 64, size = 32;
  int warmup = 3, steps = 20;
  double max_seconds = 10;
  int threads = 0;
  int pred_hidden = -1;  // -1: the projector's hidden width
  bool graphs = true;
  int op_times = 0;  // eager steps timed op by op after the timed steps
};

struct UsageError {
  std::string message;
};

int parse_int(const std::string& flag, const std::string& text, int lo, int hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) {
    throw UsageError{"expected an integer between " + std::to_string(lo) + " and " + std::to_string(hi) +
                     " for " + flag + " but received '" + text + "'"};
  }
  return static_cast<int>(v);
}

double parse_double(const std::string& flag, const std::string& text, double lo, double hi) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(v) || v < lo || v > hi) {
    std::ostringstream os;
    os << "expected a number between " << lo << " and " << hi << " for " << flag << " but received '" << text << "'";
    throw UsageError{os.str()};
  }
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  o.model.encoder.arch = byol::ResNetArch::resnet18;
  o.model.encoder.stem = byol::Stem::cifar;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") throw UsageError{""};
    if (i + 1 >= argc) throw UsageError{flag + " needs a value"};
    const std::string v = argv[++i];
    // The model's own parsers name the flag and list the allowed values.
    if (flag == "--device") o.device = v;
    else if (flag == "--variant") o.variant = v;
    else if (flag == "--arch") o.model.encoder.arch = byol::parse_arch(v, flag);
    else if (flag == "--stem") o.model.encoder.stem = byol::parse_stem(v, flag);
    else if (flag == "--width") o.model.encoder.width = parse_double(flag, v, 1.0 / 64, 16);
    else if (flag == "--channels") o.model.encoder.in_channels = parse_int(flag, v, 1, 3);
    else if (flag == "--size") o.size = parse_int(flag, v, 8, 4096);
    else if (flag == "--batch") o.batch = parse_int(flag, v, 2, 1 << 16);
    else if (flag == "--hidden") o.model.projector_hidden = parse_int(flag, v, 1, 1 << 16);
    else if (flag == "--out") o.model.projector_out = parse_int(flag, v, 1, 1 << 16);
    else if (flag == "--pred-hidden") o.pred_hidden = parse_int(flag, v, 1, 1 << 16);
    else if (flag == "--optimizer") o.model.optimizer.kind = byol::parse_optimizer(v, flag);
    else if (flag == "--warmup") o.warmup = parse_int(flag, v, 0, 1000);
    else if (flag == "--steps") o.steps = parse_int(flag, v, 1, 100000);
    else if (flag == "--max-seconds") o.max_seconds = parse_double(flag, v, 0, 86400);
    else if (flag == "--threads") o.threads = parse_int(flag, v, 0, 4096);
    else if (flag == "--seed") o.model.seed = static_cast<uint64_t>(parse_int(flag, v, 0, 1 << 30));
    else if (flag == "--op-times") o.op_times = parse_int(flag, v, 0, 1000);
    else if (flag == "--classes") o.model.classifier_classes = parse_int(flag, v, 0, 65536);
    else if (flag == "--graphs") {
      if (v != "on" && v != "off") throw UsageError{"expected on or off for --graphs but received '" + v + "'"};
      o.graphs = v == "on";
    }
    else throw UsageError{"unknown flag '" + flag + "'"};
  }
  o.model.predictor_hidden = o.pred_hidden > 0 ? o.pred_hidden : o.model.projector_hidden;
  if (o.variant != "fp32" && o.variant != "tf32" && o.variant != "bf16")
    throw UsageError{"expected fp32, tf32 or bf16 for --variant but received '" + o.variant + "'"};
  return o;
}

// "cpu" | "cuda" | "cuda:N" -> -1 for the CPU, else the GPU index.
int parse_device(const std::string& name) {
  if (name == "cpu") return -1;
  if (name == "cuda") return 0;
  const std::string prefix = "cuda:";
  if (name.compare(0, prefix.size(), prefix) == 0) {
    const std::string digits = name.substr(prefix.size());
    bool ok = !digits.empty() && digits.size() <= 4;
    for (char c : digits) ok = ok && c >= '0' && c <= '9';
    if (ok) return std::stoi(digits);
  }
  throw UsageError{"expected cpu, cuda or cuda:N for --device but received '" + name + "'"};
}

// Device-wide memory in use (total - free) through the CUDA runtime the plugin runs on.
// byol::Backend has no memory-statistics accessor yet, so this is the number both engines can
// be measured by alike: it includes the CUDA context, cuDNN/cuBLAS state and whatever the
// allocator holds (byol's pool keeps all it ever reserved, PyTorch's cache likewise), so after
// the timed steps it is the run's high-water mark of the device. -1 when unavailable.
class DeviceMemoryProbe {
 public:
  explicit DeviceMemoryProbe(int device) : device_(device) {
#ifdef BYOL_BENCH_CUDART
    // The same file the plugin links (its RPATH points at it): one runtime, one context.
    handle_ = ::dlopen(BYOL_BENCH_CUDART, RTLD_NOW | RTLD_LOCAL);
#endif
    if (!handle_) handle_ = ::dlopen("libcudart.so", RTLD_NOW | RTLD_LOCAL);
    if (!handle_) return;
    set_device_ = reinterpret_cast<SetDeviceFn>(::dlsym(handle_, "cudaSetDevice"));
    mem_get_info_ = reinterpret_cast<MemGetInfoFn>(::dlsym(handle_, "cudaMemGetInfo"));
  }
  ~DeviceMemoryProbe() {
    if (handle_) ::dlclose(handle_);
  }
  DeviceMemoryProbe(const DeviceMemoryProbe&) = delete;
  DeviceMemoryProbe& operator=(const DeviceMemoryProbe&) = delete;

  // Bytes in use on the device, or -1.
  double used_bytes() const {
    if (!set_device_ || !mem_get_info_ || set_device_(device_) != 0) return -1;
    size_t free_bytes = 0, total_bytes = 0;
    if (mem_get_info_(&free_bytes, &total_bytes) != 0) return -1;
    return double(total_bytes - free_bytes);
  }

 private:
  using SetDeviceFn = int (*)(int);
  using MemGetInfoFn = int (*)(size_t*, size_t*);
  int device_;
  void* handle_ = nullptr;
  SetDeviceFn set_device_ = nullptr;
  MemGetInfoFn mem_get_info_ = nullptr;
};

double peak_rss_bytes() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

// Deterministic pseudo-random normal NHWC views (the values do not matter for speed, but
// finite, unit-scale inputs keep the loss and the BatchNorm statistics ordinary).
byol::Tensor synthetic_view(byol::Backend* backend, const Options& o, std::mt19937& gen) {
  const int C = o.model.encoder.in_channels;
  std::vector<float> host(static_cast<size_t>(o.batch) * o.size * o.size * C);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (float& v : host) v = normal(gen);
  return byol::Tensor::from_host(backend, host.data(), {o.batch, o.size, o.size, C}, byol::DType::f32);
}

std::string number(double v, int digits = 6) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string mib(double bytes) { return bytes < 0 ? "null" : number(bytes / (1 << 20), 7); }

// The fields every line carries (result or error), so the report can place an error line in
// its table row.
std::string common_fields(const Options& o) {
  std::ostringstream os;
  os << "\"engine\":\"byol\",\"variant\":" << byol::json_quote(o.variant)
     << ",\"device\":" << byol::json_quote(o.device)
     << ",\"arch\":" << byol::json_quote(byol::arch_name(o.model.encoder.arch))
     << ",\"stem\":" << byol::json_quote(byol::stem_name(o.model.encoder.stem))
     << ",\"width\":" << number(o.model.encoder.width) << ",\"channels\":" << o.model.encoder.in_channels
     << ",\"size\":" << o.size << ",\"batch\":" << o.batch << ",\"hidden\":" << o.model.projector_hidden
     << ",\"out\":" << o.model.projector_out << ",\"pred_hidden\":" << o.model.predictor_hidden
     << ",\"optimizer\":" << byol::json_quote(byol::optimizer_name(o.model.optimizer.kind))
     << ",\"graphs\":" << (o.graphs ? "true" : "false");
  return os.str();
}

// What an op's nominal work over its time comes to: "312 GFLOP/s" (convolutions, linear
// layers), "18.2 GB/s" (memory-bound ops), "-" when the op gives no work.
std::string op_rate(double flops, double bytes, double ms) {
  if (ms <= 0 || (flops <= 0 && bytes <= 0)) return "-";
  char buf[48];
  if (flops > 0) std::snprintf(buf, sizeof buf, "%.1f GFLOP/s", flops / ms / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f GB/s", bytes / ms / 1e6);
  return buf;
}

// --op-times: `steps` eager steps with the backend timing every op. Returns the JSON value of
// the op_times field ({"steps", "ms_per_step", "rows": [{phase, op, calls, ms, flops, bytes}]},
// all per step) or null, and prints the rows as a table on stderr, longest first.
std::string profile_ops(byol::Backend* backend, byol::ByolModel& model, const byol::Tensor& view1,
                        const byol::Tensor& view2, const int32_t* labels, int steps) {
  if (steps <= 0) return "null";
  if (!backend->set_op_timing(true)) return "null";
  model.set_use_graphs(false);  // op by op: a graph replay would be one op
  backend->op_times(true);      // drop anything timed before
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) model.step(view1, view2, 0.1f, 0.99f, labels);
  std::vector<byol::OpTime> rows = backend->op_times(true);
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  backend->set_op_timing(false);

  double total = 0;
  for (const byol::OpTime& r : rows) total += r.ms;
  std::ostringstream json;
  json << "{\"steps\":" << steps << ",\"ms_per_step\":" << number(wall_ms / steps)
       << ",\"op_ms_per_step\":" << number(total / steps) << ",\"rows\":[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const byol::OpTime& r = rows[i];
    json << (i ? "," : "") << "{\"phase\":" << byol::json_quote(r.phase) << ",\"op\":" << byol::json_quote(r.op)
         << ",\"calls\":" << number(double(r.calls) / steps) << ",\"ms\":" << number(r.ms / steps)
         << ",\"flops\":" << number(r.flops / steps) << ",\"bytes\":" << number(r.bytes / steps) << "}";
  }
  json << "]}";

  std::sort(rows.begin(), rows.end(), [](const byol::OpTime& a, const byol::OpTime& b) { return a.ms > b.ms; });
  std::fprintf(stderr, "op times over %d eager steps: %.3f ms/step wall, %.3f ms/step in ops\n", steps,
               wall_ms / steps, total / steps);
  std::fprintf(stderr, "%-16s %-24s %8s %10s %6s  %s\n", "phase", "op", "calls", "ms/step", "%", "rate");
  for (const byol::OpTime& r : rows)
    std::fprintf(stderr, "%-16s %-24s %8.1f %10.3f %6.1f  %s\n", r.phase.c_str(), r.op.c_str(),
                 double(r.calls) / steps, r.ms / steps, total > 0 ? 100 * r.ms / total : 0.0,
                 op_rate(r.flops, r.bytes, r.ms).c_str());
  return json.str();
}

int report_error(const Options& o, const std::string& phase, const std::string& message, bool not_supported) {
  std::printf("{%s,\"error\":%s,\"phase\":%s,\"not_supported\":%s}\n", common_fields(o).c_str(),
              byol::json_quote(message).c_str(), byol::json_quote(phase).c_str(), not_supported ? "true" : "false");
  std::fflush(stdout);
  return not_supported ? 3 : 1;
}

int run(const Options& o) {
  using Clock = std::chrono::steady_clock;
  const int device_index = parse_device(o.device);
  const bool cuda = device_index >= 0;
  if (!cuda && o.variant == "tf32")
    throw UsageError{"--variant tf32 needs a CUDA device: the CPU backend's reduced precision is bf16"};
  if (cuda && o.variant == "bf16")
    throw UsageError{"--variant bf16 is the CPU backend's: on CUDA use fp32 or tf32"};
  if (cuda) {
    // The backend reads its settings once, when it is created.
    ::setenv("BYOL_CUDA_TF32", o.variant == "tf32" ? "1" : "0", 1);
    ::setenv("BYOL_CUDNN_BENCHMARK", "1", 0);
  }

  std::string phase = "load backend";
  try {
    std::unique_ptr<DeviceMemoryProbe> probe;
    double used_before = -1;
    if (cuda) {
      probe = std::make_unique<DeviceMemoryProbe>(device_index);
      used_before = probe->used_bytes();  // the bare context: the baseline of the delta below
    }
    std::unique_ptr<byol::Backend> backend =
        cuda ? byol::load_cuda_backend(device_index)
             : byol::make_cpu_backend(o.threads, o.variant == "bf16");

    phase = "build model";
    byol::ByolModel model(backend.get(), o.model);
    model.set_use_graphs(o.graphs);
    std::mt19937 gen(static_cast<uint32_t>(o.model.seed) + 1);
    byol::Tensor view1 = synthetic_view(backend.get(), o, gen);
    byol::Tensor view2 = synthetic_view(backend.get(), o, gen);
    const float lr = 0.1f, tau = 0.99f;
    // With --classes: the online classifier's labels, the same every step.
    std::vector<int32_t> label_values(static_cast<size_t>(o.batch));
    for (int i = 0; i < o.batch; ++i) label_values[i] = o.model.classifier_classes > 0 ? i % o.model.classifier_classes : 0;
    const int32_t* labels = o.model.classifier_classes > 0 ? label_values.data() : nullptr;

    phase = "warm-up";
    float loss = NAN;
    const Clock::time_point warm_start = Clock::now();
    for (int i = 0; i < o.warmup; ++i) loss = model.step(view1, view2, lr, tau, labels);
    backend->synchronize();
    const double warmup_seconds = std::chrono::duration<double>(Clock::now() - warm_start).count();

    phase = "timed steps";
    // step() reads the loss back, so each step ends with the queue drained: per-step times
    // are real, and a training loop that logs every loss pays exactly this.
    std::vector<double> step_seconds;
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < o.steps; ++i) {
      const Clock::time_point t0 = Clock::now();
      loss = model.step(view1, view2, lr, tau, labels);
      step_seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      if (step_seconds.size() >= 2 && std::chrono::duration<double>(Clock::now() - start).count() >= o.max_seconds)
        break;
    }
    backend->synchronize();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const double used_after = probe ? probe->used_bytes() : -1;

    phase = "op times";
    const std::string op_times = profile_ops(backend.get(), model, view1, view2, labels, o.op_times);

    std::vector<double> sorted = step_seconds;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    const double steps = double(step_seconds.size());
    // Every tensor the model and this program allocated through the backend; op scratch
    // (cuDNN workspaces, cuBLAS) is not in it.
    const double tensor_bytes = double(model.online_params().nbytes() + model.target_params().nbytes() +
                                       model.grads().nbytes() + model.optimizer_state().nbytes() +
                                       model.online_stats().nbytes() + model.target_stats().nbytes() +
                                       model.activation_bytes() + view1.nbytes() + view2.nbytes());

    std::printf(
        "{%s,\"backend\":%s,\"params\":%lld,\"warmup\":%d,\"warmup_seconds\":%s,\"steps\":%d,\"seconds\":%s,"
        "\"steps_per_s\":%s,\"images_per_s\":%s,\"ms_per_step\":%s,\"ms_per_step_median\":%s,"
        "\"ms_per_step_min\":%s,\"ms_per_step_max\":%s,\"loss\":%s,\"tensor_mb\":%s,\"device_used_before_mb\":%s,"
        "\"device_used_mb\":%s,\"peak_allocated_mb\":null,\"peak_rss_mb\":%s,\"graph_launches\":%lld,"
        "\"graph_error\":%s,\"op_times\":%s,\"model_config\":%s}\n",
        common_fields(o).c_str(), byol::json_quote(backend->describe()).c_str(),
        static_cast<long long>(model.num_params()), o.warmup, number(warmup_seconds).c_str(),
        static_cast<int>(steps), number(seconds).c_str(), number(steps / seconds).c_str(),
        number(steps * o.batch / seconds).c_str(), number(1000 * seconds / steps).c_str(),
        number(1000 * median).c_str(), number(1000 * sorted.front()).c_str(), number(1000 * sorted.back()).c_str(),
        number(loss).c_str(), mib(tensor_bytes).c_str(), mib(used_before).c_str(), mib(used_after).c_str(),
        mib(peak_rss_bytes()).c_str(), static_cast<long long>(model.graph_launches()),
        // The CPU cannot capture: no error to report there (graphs are a CUDA matter).
        cuda && !model.graph_error().empty() ? byol::json_quote(model.graph_error()).c_str() : "null",
        op_times.c_str(), byol::model_config_json(o.model).c_str());
    std::fflush(stdout);
    return 0;
  } catch (const byol::NotSupported& e) {
    return report_error(o, phase, e.what(), true);
  } catch (const std::bad_alloc&) {
    return report_error(o, phase, "out of host memory", false);
  } catch (const std::exception& e) {
    return report_error(o, phase, e.what(), false);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_args(argc, argv);
    byol::validate_model_config(options.model);
    return run(options);
  } catch (const UsageError& e) {
    if (e.message.empty()) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "byol_bench_step: %s (--help for usage)\n", e.message.c_str());
    return 2;
  } catch (const std::exception& e) {  // the model's parsers and validate_model_config
    std::fprintf(stderr, "byol_bench_step: %s (--help for usage)\n", e.what());
    return 2;
  }
}
