// params.cc: the flat parameter layout (names, shapes, offsets, decay flags), parameter
// initialization from a seeded platform-independent generator, activation buffer carving,
// and the model configuration's names, validation and JSON form.
#include <cmath>
#include <cstring>
#include <sstream>

#include "byol/model.h"
#include "nets.h"

namespace byol {

// ---------------------------------------------------------------------------------------
// Names.

const char* arch_name(ResNetArch a) {
  switch (a) {
    case ResNetArch::resnet18: return "resnet18";
    case ResNetArch::resnet34: return "resnet34";
    case ResNetArch::resnet50: return "resnet50";
  }
  return "unknown";
}
const char* stem_name(Stem s) {
  switch (s) {
    case Stem::cifar: return "cifar";
    case Stem::imagenet: return "imagenet";
  }
  return "unknown";
}
const char* optimizer_name(OptimizerKind k) {
  switch (k) {
    case OptimizerKind::lars: return "lars";
    case OptimizerKind::sgd: return "sgd";
    case OptimizerKind::adamw: return "adamw";
  }
  return "unknown";
}
const char* target_init_name(TargetInit t) {
  switch (t) {
    case TargetInit::copy: return "copy";
    case TargetInit::random: return "random";
  }
  return "unknown";
}

namespace {
template <typename E, size_t N>
E parse_enum(const std::string& name, const std::string& what, const E (&values)[N],
             const char* (*to_name)(E)) {
  std::string allowed;
  for (size_t i = 0; i < N; ++i) {
    if (name == to_name(values[i])) return values[i];
    allowed += (i ? ", '" : "'") + std::string(to_name(values[i])) + "'";
  }
  BYOL_FAIL("expected one of ", allowed, " for ", what, " but received '", name, "'");
}
}  // namespace

ResNetArch parse_arch(const std::string& name, const std::string& what) {
  static const ResNetArch v[] = {ResNetArch::resnet18, ResNetArch::resnet34, ResNetArch::resnet50};
  return parse_enum(name, what, v, arch_name);
}
Stem parse_stem(const std::string& name, const std::string& what) {
  static const Stem v[] = {Stem::cifar, Stem::imagenet};
  return parse_enum(name, what, v, stem_name);
}
OptimizerKind parse_optimizer(const std::string& name, const std::string& what) {
  static const OptimizerKind v[] = {OptimizerKind::lars, OptimizerKind::sgd, OptimizerKind::adamw};
  return parse_enum(name, what, v, optimizer_name);
}
TargetInit parse_target_init(const std::string& name, const std::string& what) {
  static const TargetInit v[] = {TargetInit::copy, TargetInit::random};
  return parse_enum(name, what, v, target_init_name);
}

// ---------------------------------------------------------------------------------------
// Configuration.

namespace {
void check_range(const char* name, double value, double lo, double hi) {
  BYOL_CHECK(std::isfinite(value) && value >= lo && value <= hi, "expected ", name, " in [", lo,
             ", ", hi, "] but received ", value);
}
}  // namespace

void validate_model_config(const ModelConfig& c) {
  BYOL_CHECK(c.encoder.in_channels == 1 || c.encoder.in_channels == 3,
             "expected encoder.inChannels 1 or 3 but received ", c.encoder.in_channels);
  const double base = 64.0 * c.encoder.width;
  BYOL_CHECK(std::isfinite(base) && base >= 1 && base <= 4096 && std::fabs(base - std::round(base)) < 1e-9,
             "expected encoder.width such that 64*width is an integer in [1, 4096] (e.g. 0.25 -> 16) "
             "but received ",
             c.encoder.width);
  // 2^16 keeps every hidden activation (B x hidden) and weight well inside int32 sizes.
  check_range("projector.hidden", c.projector_hidden, 1, 65536);
  check_range("projector.out", c.projector_out, 1, 65536);
  if (c.predictor) check_range("predictor.hidden", c.predictor_hidden, 1, 65536);
  const OptimizerConfig& o = c.optimizer;
  check_range("optimizer.weightDecay", o.weight_decay, 0, 1e3);
  check_range("optimizer.momentum", o.momentum, 0, 1);
  check_range("optimizer.trustCoefficient", o.trust_coefficient, 0, 1e3);
  check_range("optimizer.eps", o.lars_eps, 0, 1);
  check_range("optimizer.beta1", o.beta1, 0, 0.999999);
  check_range("optimizer.beta2", o.beta2, 0, 0.999999999);
  check_range("optimizer.adamEps", o.adam_eps, 0, 1);
  if (o.kind == OptimizerKind::adamw)
    BYOL_CHECK(o.adam_eps > 0, "expected optimizer.adamEps > 0 for adamw but received ", o.adam_eps);
  check_range("bnMomentum", c.bn_momentum, 0, 1);
  check_range("bnEps", c.bn_eps, 1e-12, 1);
  if (c.classifier_classes != 0) check_range("classifier.classes", c.classifier_classes, 2, 65536);
}

std::string model_config_json(const ModelConfig& c) {
  std::ostringstream os;
  os.precision(9);
  const OptimizerConfig& o = c.optimizer;
  os << "{\"encoder\":{\"arch\":\"" << arch_name(c.encoder.arch) << "\",\"stem\":\""
     << stem_name(c.encoder.stem) << "\",\"inChannels\":" << c.encoder.in_channels
     << ",\"width\":" << c.encoder.width << "},\"projector\":{\"hidden\":" << c.projector_hidden
     << ",\"out\":" << c.projector_out << "},\"predictor\":";
  if (c.predictor) os << "{\"hidden\":" << c.predictor_hidden << "}";
  else os << "false";
  os << ",\"optimizer\":{\"name\":\"" << optimizer_name(o.kind) << "\",\"weightDecay\":" << o.weight_decay
     << ",\"momentum\":" << o.momentum << ",\"trustCoefficient\":" << o.trust_coefficient
     << ",\"eps\":" << o.lars_eps << ",\"soloLearn\":" << (o.solo_learn ? "true" : "false")
     << ",\"nesterov\":" << (o.nesterov ? "true" : "false") << ",\"beta1\":" << o.beta1
     << ",\"beta2\":" << o.beta2 << ",\"adamEps\":" << o.adam_eps << "},\"seed\":" << c.seed
     << ",\"initTarget\":\"" << target_init_name(c.target_init) << "\",\"bnMomentum\":" << c.bn_momentum
     << ",\"bnEps\":" << c.bn_eps << ",\"classifier\":";
  if (c.classifier_classes > 0) os << "{\"classes\":" << c.classifier_classes << "}";
  else os << "false";
  os << "}";
  return os.str();
}

int64_t optimizer_state_floats(OptimizerKind kind, int64_t num_params) {
  return kind == OptimizerKind::adamw ? 2 * num_params : num_params;
}

namespace nets {

// ---------------------------------------------------------------------------------------
// Layout.

int64_t LayoutBuilder::add_param(const std::string& name, std::vector<int64_t> shape, bool decay,
                                 InitSpec init) {
  int64_t size = 1;
  for (int64_t d : shape) size *= d;
  ParamInfo info;
  info.name = name;
  info.shape = std::move(shape);
  info.segment.offset = num_params;
  info.segment.size = size;
  info.segment.decay = decay;
  params.push_back(std::move(info));
  inits.push_back(init);
  num_params += size;
  return params.back().segment.offset;
}

int64_t LayoutBuilder::add_stats(const std::string& name, int channels) {
  BatchNormInfo info;
  info.name = name;
  info.channels = channels;
  info.offset = num_stats;
  batchnorms.push_back(info);
  num_stats += 2 * static_cast<int64_t>(channels);
  return info.offset;
}

ConvShape Conv::shape(int N, int H, int W) const {
  ConvShape s;
  s.N = N;
  s.H = H;
  s.W = W;
  s.C = in;
  s.K = out;
  s.R = kernel;
  s.S = kernel;
  s.stride = stride;
  s.pad = pad;
  return s;
}

// ---------------------------------------------------------------------------------------
// Buffer carving.

void BufferCarver::add(void** slot, size_t bytes) {
  // 64-byte alignment: cache lines, AVX-512 loads, and oneDNN's preference.
  size_t offset = (bytes_ + 63) / 64 * 64;
  requests_.push_back({slot, offset});
  bytes_ = offset + bytes;
}
void BufferCarver::request(float** slot, int64_t count) {
  BYOL_CHECK(count >= 0, "BufferCarver: negative size ", count);
  add(reinterpret_cast<void**>(slot), static_cast<size_t>(count) * sizeof(float));
}
void BufferCarver::request(int32_t** slot, int64_t count) {
  BYOL_CHECK(count >= 0, "BufferCarver: negative size ", count);
  add(reinterpret_cast<void**>(slot), static_cast<size_t>(count) * sizeof(int32_t));
}
void BufferCarver::assign(void* base) {
  for (const Request& r : requests_) *r.slot = static_cast<char*>(base) + r.offset;
}

// ---------------------------------------------------------------------------------------
// Generator and initialization.

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ULL);
  for (auto& s : s_) s = splitmix64(x);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1;
  do u1 = uniform();
  while (u1 <= 0.0);
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double theta = 2.0 * M_PI * u2;
  spare_ = r * std::sin(theta);
  has_spare_ = true;
  return r * std::cos(theta);
}

void init_params(float* host, const std::vector<ParamInfo>& params, const std::vector<InitSpec>& inits,
                 size_t count, Rng& rng) {
  for (size_t i = 0; i < count; ++i) {
    float* p = host + params[i].segment.offset;
    const int64_t n = params[i].segment.size;
    const InitSpec& init = inits[i];
    switch (init.kind) {
      case InitKind::kaiming_normal_fan_out:
        for (int64_t j = 0; j < n; ++j) p[j] = static_cast<float>(rng.normal() * init.scale);
        break;
      case InitKind::uniform:
        for (int64_t j = 0; j < n; ++j) p[j] = static_cast<float>((2.0 * rng.uniform() - 1.0) * init.scale);
        break;
      case InitKind::ones:
        for (int64_t j = 0; j < n; ++j) p[j] = 1.0f;
        break;
      case InitKind::zeros:
        std::memset(p, 0, static_cast<size_t>(n) * sizeof(float));
        break;
    }
  }
}

}  // namespace nets
}  // namespace byol
