// harness.cc: implements harness.h and runner.h: tensor comparison, the case registry, the
// per-case log, expectations and the scratch folder.
// Contract: check() never throws; it logs one line and counts a failure in the current case.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <sstream>

#include "byol/error.h"
#include "runner.h"

namespace byol_test {

namespace {
struct CaseState {
  int failures = 0;
  std::string log;
};
CaseState& state() {
  static CaseState s;
  return s;
}
}  // namespace

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::vector<TestCase>& registry() {
  static std::vector<TestCase> r;
  return r;
}

std::vector<Generator>& generators() {
  static std::vector<Generator> g;
  return g;
}

void begin_case() { state() = CaseState{}; }
std::vector<std::function<std::string()>>& case_probes() {
  static std::vector<std::function<std::string()>> p;
  return p;
}

RunnerSetup& runner_setup() {
  static RunnerSetup s;
  return s;
}
int case_failures() { return state().failures; }
const std::string& case_log() { return state().log; }
void log_line(const std::string& line) { state().log += line + "\n"; }

bool check(const std::string& name, const float* got, const float* want, size_t n, float atol, float rtol) {
  double max_abs = 0, max_rel = 0, worst = -1;
  size_t worst_i = 0, bad = 0;
  for (size_t i = 0; i < n; ++i) {
    double g = got[i], w = want[i];
    double err;
    if (std::isnan(w)) {
      err = std::isnan(g) ? 0 : std::numeric_limits<double>::infinity();
    } else if (std::isinf(w)) {
      err = g == w ? 0 : std::numeric_limits<double>::infinity();
    } else if (!std::isfinite(g)) {
      // NaN compares false with everything: catch it explicitly (the runner pre-fills
      // outputs with NaN, so an element a backend forgot to write lands here).
      err = std::numeric_limits<double>::infinity();
      max_abs = std::numeric_limits<double>::infinity();
    } else {
      double d = std::fabs(g - w);
      max_abs = std::max(max_abs, d);
      if (w != 0) max_rel = std::max(max_rel, d / std::fabs(w));
      double bound = double(atol) + double(rtol) * std::fabs(w);
      err = bound > 0 ? d / bound : (d > 0 ? std::numeric_limits<double>::infinity() : 0);
    }
    if (err > 1) ++bad;
    if (err > worst) {
      worst = err;
      worst_i = i;
    }
  }
  bool ok = bad == 0;
  std::ostringstream os;
  os << "  " << name << "  max_abs=" << fmt(max_abs) << " max_rel=" << fmt(max_rel) << " tol=(" << fmt(atol)
     << ", " << fmt(rtol) << ") n=" << n << " err/tol=" << fmt(std::max(worst, 0.0)) << (ok ? " ok" : " FAIL");
  if (!ok)
    os << ": " << bad << " bad, worst [" << worst_i << "] got=" << got[worst_i] << " want=" << want[worst_i];
  log_line(os.str());
  if (!ok) ++state().failures;
  return ok;
}

bool check(const std::string& name, const std::vector<float>& got, const std::vector<float>& want, float atol,
           float rtol) {
  if (got.size() != want.size()) {
    log_line("  " + name + "  FAIL: got " + std::to_string(got.size()) + " elements, want " +
             std::to_string(want.size()));
    ++state().failures;
    return false;
  }
  return check(name, got.data(), want.data(), got.size(), atol, rtol);
}

bool expect_true(bool cond, const std::string& what, const std::string& detail) {
  log_line("  " + what + (cond ? "  ok" : "  FAIL") + (detail.empty() ? "" : ": " + detail));
  if (!cond) ++state().failures;
  return cond;
}

bool expect_error(const std::string& what, const std::function<void()>& fn,
                  const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const byol::Error& e) {
    std::string msg = e.what();
    std::string missing;
    for (const auto& n : needles)
      if (msg.find(n) == std::string::npos) missing += (missing.empty() ? "'" : ", '") + n + "'";
    if (!missing.empty()) return expect_true(false, what, "message lacks " + missing + ": " + msg);
    return expect_true(true, what, msg);
  } catch (const std::exception& e) {
    return expect_true(false, what, std::string("threw a non-byol exception: ") + e.what());
  }
  return expect_true(false, what, "no error thrown");
}

std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const byol::Error& e) {
    return e.what();
  }
  return "(no error)";
}

int run_nested(const std::function<void()>& fn, std::string* log) {
  CaseState outer = state();
  state() = CaseState{};
  try {
    fn();
  } catch (const std::exception& e) {
    log_line(std::string("  threw: ") + e.what());
    ++state().failures;
  }
  int failures = state().failures;
  if (log) *log = state().log;
  state() = outer;
  return failures;
}

namespace {
struct ScratchDir {
  std::string path;
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base && *base ? base : "/tmp") + "/byol_tests.XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    BYOL_CHECK(::mkdtemp(buf.data()) != nullptr, "cannot create a scratch folder from ", templ);
    path = buf.data();
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};
}  // namespace

const std::string& scratch_dir() {
  static ScratchDir dir;
  return dir.path;
}

byol::ModelConfig small_model_config(byol::ResNetArch arch, byol::Stem stem) {
  byol::ModelConfig c;
  c.encoder.arch = arch;
  c.encoder.stem = stem;
  c.encoder.width = 0.0625;
  c.projector_hidden = 64;
  c.projector_out = 32;
  c.predictor_hidden = 64;
  c.seed = 5;
  return c;
}

}  // namespace byol_test
