// harness.h: the C++ test runner's registry. A test file defines cases with BYOL_TEST and
// reports each compared tensor with check(); a case fails when any check fails or it throws.
// A case that needs what this machine lacks (a GPU) calls skip("why"): it is counted as
// skipped and printed, never silently dropped.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "byol/backend.h"

namespace byol_test {

struct Context {
  std::string fixtures_dir;   // test/fixtures
  byol::Backend* cpu = nullptr;
  byol::Backend* cuda = nullptr;  // null when no GPU/plugin: CUDA cases skip
  byol::Backend* emu = nullptr;   // the CUDA backend's kernels emulated on the CPU (cuda_emu/)
  std::string filter;
  bool verbose = false;
};

struct SkipTest {
  std::string why;
};
[[noreturn]] inline void skip(const std::string& why) { throw SkipTest{why}; }

// A GPU without stream-ordered memory pools cannot capture steps (CudaBackend::begin_capture
// says so in the model's graph_error): the graph cases skip there, with that reason.
inline void skip_if_graphs_unavailable(const std::string& graph_error) {
  if (graph_error.find("need stream-ordered memory pools") != std::string::npos) skip(graph_error);
}

// Compares `got` with `want` elementwise. Error metric: max |got - want| / (atol + rtol*|want|)
// must be <= 1. Prints one line: "  <name>  max_abs=... max_rel=... tol=(atol, rtol) ok|FAIL".
// Returns whether it passed; the case fails if any check failed.
bool check(const std::string& name, const float* got, const float* want, size_t n, float atol,
           float rtol);
bool check(const std::string& name, const std::vector<float>& got, const std::vector<float>& want,
           float atol, float rtol);

// A number for a log line, 3 significant digits ("0.000123", "4.56e+03").
std::string fmt(double v);

struct TestCase {
  std::string name;
  std::function<void(Context&)> fn;
};
std::vector<TestCase>& registry();
struct Registrar {
  Registrar(const char* name, std::function<void(Context&)> fn) {
    registry().push_back({name, std::move(fn)});
  }
};

}  // namespace byol_test

#define BYOL_TEST_CAT2(a, b) a##b
#define BYOL_TEST_CAT(a, b) BYOL_TEST_CAT2(a, b)
// BYOL_TEST("group/name", ctx) { ... } — registers a case at static-init time.
#define BYOL_TEST(name, ctx)                                                          \
  static void BYOL_TEST_CAT(byol_test_fn_, __LINE__)(::byol_test::Context & ctx);     \
  static ::byol_test::Registrar BYOL_TEST_CAT(byol_test_reg_, __LINE__)(             \
      name, BYOL_TEST_CAT(byol_test_fn_, __LINE__));                                  \
  static void BYOL_TEST_CAT(byol_test_fn_, __LINE__)(::byol_test::Context & ctx)
