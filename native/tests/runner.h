// runner.h: what test files share beyond harness.h: cases generated at run time (one per
// fixture case and backend), the per-case log that check() writes to, boolean and
// exception expectations, and a scratch folder removed at exit.
// Contract: a case fails when any expectation or check() failed or it threw; its log is
// printed when it fails or under --verbose.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "byol/model.h"
#include "harness.h"

namespace byol_test {

// One backend the run covers (--backend). `backend` is null when it could not be created;
// `unavailable` then says why, and `fail_if_missing` tells whether that is a failure (the
// CPU backend must always exist) or a skip (no GPU on this machine).
struct BackendSlot {
  std::string name;  // "cpu", "cuda", "emu"
  byol::Backend* backend = nullptr;
  std::string unavailable;
  bool fail_if_missing = false;
};

// Generators add cases once the context and backends exist (the fixture file is only read
// then). Register with a static GeneratorRegistrar in the test file.
using Generator =
    std::function<void(Context& ctx, const std::vector<BackendSlot>& backends, std::vector<TestCase>& out)>;
std::vector<Generator>& generators();
struct GeneratorRegistrar {
  explicit GeneratorRegistrar(Generator g) { generators().push_back(std::move(g)); }
};

// ---- per-case log and outcome (harness.cc) ----
void begin_case();
int case_failures();              // failed checks/expectations since begin_case()
const std::string& case_log();    // lines written since begin_case()
void log_line(const std::string& line);
// Run after every case; a non-empty answer fails it with that reason (the race-check
// runner's: ThreadSanitizer reported a race during the case, cuda_emu/emu.cc).
std::vector<std::function<std::string()>>& case_probes();
// What a runner build changes (the race-check build: one CPU thread, emulator cases only),
// and a line saying so under the backends line.
struct RunnerSetup {
  int cpu_threads = 0;  // 0: all cores
  std::string note;
  std::function<bool(const std::string& case_name)> only;  // empty: every case (like --filter)
};
RunnerSetup& runner_setup();

// Records a named boolean expectation: "  <what>  ok|FAIL[: detail]".
bool expect_true(bool cond, const std::string& what, const std::string& detail = "");
// Runs fn and expects a byol::Error whose message contains every string in `needles`
// (case-sensitive). Logs the message either way, so reviews can read the wording.
bool expect_error(const std::string& what, const std::function<void()>& fn,
                  const std::vector<std::string>& needles);
// Runs fn and returns the message of the byol::Error it throws, or "(no error)" (to compare
// two backends' wording of the same failure).
std::string error_message(const std::function<void()>& fn);

// Runs fn as a nested case (tests of the runner itself): its checks go to `log` and its own
// failure count, not the current case's. Returns that count; an exception counts as one.
int run_nested(const std::function<void()>& fn, std::string* log);

// The small BYOL model of the step tests: width 1/16, projector 64/32, predictor 64, seed 5
// (ResNet-18 cifar stem unless asked; 3 input channels; LARS).
byol::ModelConfig small_model_config(byol::ResNetArch arch = byol::ResNetArch::resnet18,
                                     byol::Stem stem = byol::Stem::cifar);

// A fresh folder under $TMPDIR (or /tmp) for this process, removed at exit.
const std::string& scratch_dir();

}  // namespace byol_test
