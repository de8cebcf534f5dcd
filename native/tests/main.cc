// main.cc: the C++ test runner. Runs every registered case (BYOL_TEST) and every generated
// case (one per fixture op case and backend) and prints one line per case, then exactly
// "N passed, N failed, N skipped". Exit status 1 when any case failed, 2 on bad arguments.
// Usage: byol_tests [--fixtures DIR] [--filter SUBSTR] [--skip A,B] [--backend cpu|cuda|emu|all] [--verbose]
//        [--list]
// The same source builds byol_tests_race (cuda_emu/emu.h, "Race check"), which runs only the
// emulator's cases.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "byol/backend.h"
#include "byol/plugin.h"
#include "cuda_emu/emu_backend.h"
#include "runner.h"

#ifndef BYOL_FIXTURES_DIR
#define BYOL_FIXTURES_DIR "test/fixtures"
#endif

namespace {

const char* kUsage =
    "usage: byol_tests [--fixtures DIR] [--filter SUBSTR] [--skip A,B] [--backend cpu|cuda|emu|all] [--verbose]\n"
    "                  [--list]\n"
    "  --fixtures DIR   folder with ops_v1.safetensors (default " BYOL_FIXTURES_DIR ")\n"
    "  --filter SUBSTR  run only cases whose name contains SUBSTR\n"
    "  --skip A,B       leave out cases whose name contains A or B (counted in a line of its own)\n"
    "  --backend B      backends for the op table: cpu, cuda, emu (the CUDA kernels emulated on\n"
    "                   the CPU) or all (default all)\n"
    "  --verbose        print every check, not only those of failing cases\n"
    "  --list           print the case names and exit\n";

// The first line of a load error, without a trailing list header ("...; tried:"): short
// enough to repeat on every skipped case; the full text is printed once at the top.
std::string short_reason(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  while (!line.empty() && (line.back() == ':' || line.back() == ' ')) line.pop_back();
  const std::string tried = "; tried";
  if (line.size() > tried.size() && line.compare(line.size() - tried.size(), tried.size(), tried) == 0)
    line.resize(line.size() - tried.size());
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace byol_test;
  Context ctx;
  ctx.fixtures_dir = BYOL_FIXTURES_DIR;
  std::string backend_choice = "all";
  std::vector<std::string> skip_parts;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool takes_value = a == "--fixtures" || a == "--filter" || a == "--skip" || a == "--backend";
    if (takes_value && i + 1 >= argc) {
      std::fprintf(stderr, "byol_tests: %s needs a value\n%s", a.c_str(), kUsage);
      return 2;
    }
    if (a == "--fixtures") ctx.fixtures_dir = argv[++i];
    else if (a == "--filter") ctx.filter = argv[++i];
    else if (a == "--skip") {
      const std::string list = argv[++i];
      for (size_t at = 0; at <= list.size();) {
        const size_t comma = std::min(list.find(',', at), list.size());
        if (comma > at) skip_parts.push_back(list.substr(at, comma - at));
        at = comma + 1;
      }
    }
    else if (a == "--backend") backend_choice = argv[++i];
    else if (a == "--verbose" || a == "-v") ctx.verbose = true;
    else if (a == "--list") list = true;
    else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "byol_tests: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (backend_choice != "cpu" && backend_choice != "cuda" && backend_choice != "emu" && backend_choice != "all") {
    std::fprintf(stderr, "byol_tests: expected cpu, cuda, emu or all for --backend but received '%s'\n",
                 backend_choice.c_str());
    return 2;
  }

  // Backends. The CPU backend is the reference for CUDA comparisons, so it is created even
  // under --backend cuda; only the op table is restricted by the flag.
  std::unique_ptr<byol::Backend> cpu, cuda;
  std::vector<BackendSlot> slots;
  BackendSlot cpu_slot{"cpu", nullptr, "", true};
  try {
    cpu = byol::make_cpu_backend(runner_setup().cpu_threads);
    cpu_slot.backend = cpu.get();
  } catch (const std::exception& e) {
    cpu_slot.unavailable = std::string("the CPU backend failed to start: ") + e.what();
  }
  // The CUDA backend's kernels on the CPU (cuda_emu/): always there when the CPU backend is.
  std::unique_ptr<byol::Backend> emu;
  BackendSlot emu_slot{"emu", nullptr, "", true};
  if (cpu) {
    try {
      emu = make_emu_backend(cpu.get());
      emu_slot.backend = emu.get();
    } catch (const std::exception& e) {
      emu_slot.unavailable = std::string("the emulated CUDA backend failed to start: ") + e.what();
    }
  } else {
    emu_slot.unavailable = "the emulated CUDA backend needs the CPU backend";
  }
  BackendSlot cuda_slot{"cuda", nullptr, "", false};
  if (backend_choice == "cpu" || backend_choice == "emu") {
    cuda_slot.unavailable = "not requested (--backend " + backend_choice + ")";
  } else if (!list) {
    try {
      // The CUDA cases compare against the CPU backend in full FP32 (the backend's default is
      // TF32, ~1e-3 off): forced before the backend reads its settings.
      const char* tf32 = std::getenv("BYOL_CUDA_TF32");
      if (tf32 && std::string(tf32) != "0")
        std::printf("byol_tests: BYOL_CUDA_TF32=%s ignored: the CUDA cases compare in full FP32\n", tf32);
      ::setenv("BYOL_CUDA_TF32", "0", 1);
      cuda = byol::load_cuda_backend(0);
      cuda_slot.backend = cuda.get();
    } catch (const std::exception& e) {
      cuda_slot.unavailable = std::string("CUDA backend unavailable: ") + e.what();
    }
  } else {
    cuda_slot.unavailable = "not loaded under --list";
  }
  ctx.cpu = cpu_slot.backend;
  ctx.cuda = cuda_slot.backend;
  ctx.emu = emu_slot.backend;

  if (!list) {
    std::string full_cuda_reason = cuda_slot.unavailable;
    std::printf("backends: %s | %s\n",
                cpu ? cpu->describe().c_str() : ("cpu: FAILED (" + short_reason(cpu_slot.unavailable) + ")").c_str(),
                cuda ? cuda->describe().c_str() : ("cuda: none (" + short_reason(full_cuda_reason) + ")").c_str());
    // The full reason once (it lists every path tried); case lines repeat only its summary.
    if (!cuda && (backend_choice == "cuda" || backend_choice == "all") && full_cuda_reason.find('\n') != std::string::npos)
      std::printf("%s\n", full_cuda_reason.c_str());
    if (!cpu) std::printf("%s\n", cpu_slot.unavailable.c_str());
    if (!runner_setup().note.empty()) std::printf("%s\n", runner_setup().note.c_str());
    std::fflush(stdout);
  }
  cpu_slot.unavailable = short_reason(cpu_slot.unavailable);
  cuda_slot.unavailable = short_reason(cuda_slot.unavailable);
  slots.clear();
  if (backend_choice == "cpu" || backend_choice == "all") slots.push_back(cpu_slot);
  if (backend_choice == "cuda" || backend_choice == "all") slots.push_back(cuda_slot);
  if (backend_choice == "emu" || backend_choice == "all") slots.push_back(emu_slot);

  std::vector<TestCase> cases = registry();
  for (auto& gen : generators()) {
    try {
      gen(ctx, slots, cases);
    } catch (const std::exception& e) {
      std::string msg = e.what();
      cases.push_back({"generator", [msg](Context&) { throw byol::Error("could not generate cases: " + msg); }});
    }
  }
  std::stable_sort(cases.begin(), cases.end(),
                   [](const TestCase& a, const TestCase& b) { return a.name < b.name; });

  auto selected = [&](const std::string& name) {
    if (!ctx.filter.empty() && name.find(ctx.filter) == std::string::npos) return false;
    return !runner_setup().only || runner_setup().only(name);
  };
  auto skipped_by_flag = [&](const std::string& name) {
    return std::any_of(skip_parts.begin(), skip_parts.end(),
                       [&](const std::string& part) { return name.find(part) != std::string::npos; });
  };
  if (list) {
    for (const auto& c : cases)
      if (selected(c.name) && !skipped_by_flag(c.name)) std::printf("%s\n", c.name.c_str());
    return 0;
  }

  int passed = 0, failed = 0, skipped = 0, left_out = 0;
  for (const auto& c : cases) {
    if (!selected(c.name)) continue;
    if (skipped_by_flag(c.name)) {
      ++left_out;
      continue;
    }
    begin_case();
    std::string status, why;
    auto t0 = std::chrono::steady_clock::now();
    try {
      c.fn(ctx);
    } catch (const SkipTest& s) {
      status = "SKIP";
      why = s.why;
    } catch (const byol::NotSupported& e) {
      status = "SKIP";
      why = std::string("not supported: ") + e.what();
    } catch (const std::exception& e) {
      status = "FAIL";
      why = std::string("threw: ") + e.what();
    } catch (...) {
      status = "FAIL";
      why = "threw a non-standard exception";
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    for (auto& probe : case_probes()) {
      const std::string found = probe();
      if (found.empty()) continue;
      status = "FAIL";
      why = why.empty() ? found : why + "; " + found;
    }
    // A failed check wins over a later skip: what was compared already disagreed.
    if (case_failures() > 0 && status != "FAIL") {
      why = status == "SKIP" ? "checks failed before: " + why : "";
      status = "FAIL";
    }
    if (status.empty()) status = "PASS";
    if (status == "PASS") ++passed;
    else if (status == "FAIL") ++failed;
    else ++skipped;
    std::printf("%s %s", status.c_str(), c.name.c_str());
    if (!why.empty()) std::printf(": %s", why.c_str());
    if (status != "SKIP") std::printf(" (%.1f ms)", ms);
    std::printf("\n");
    if (status == "FAIL" || ctx.verbose) std::fputs(case_log().c_str(), stdout);
    std::fflush(stdout);
  }
  if (left_out > 0) std::printf("%d cases left out by --skip\n", left_out);
  std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed > 0 ? 1 : 0;
}
