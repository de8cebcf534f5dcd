// bench_conv.cc: byol_bench_conv, the CPU backend's convolutions timed per shape and algorithm
// (oneDNN's direct kernels against im2col + SGEMM, conv_gemm.cc), for the shapes of a ResNet
// step. It prints one row per shape and pass with GFLOP/s of each algorithm, their ratio and
// which one the automatic rule picks (CpuBackend::conv_uses_gemm), so the rule can be checked
// on any machine: bench/conv_cpu.mjs runs it and writes BENCHMARKS.md.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../cpu/cpu_backend.h"
#include "byol/backend.h"

namespace {

using byol::ConvShape;
using byol::cpu::ConvAlgorithm;
using byol::cpu::CpuBackend;
using byol::cpu::PlanOp;

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Options {
  double width = 1.0;
  int size = 32, batch = 64, reps = 5, threads = 0;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "%s%susage: byol_bench_conv [--width W] [--size S] [--batch N] [--reps K] [--threads T]\n"
               "  The 3x3 and 1x1 convolutions of a ResNet-18 cifar-stem network of width W on SxS\n"
               "  images (defaults: width 1, 32x32, batch 64), each pass timed K times (default 5; the\n"
               "  median is reported) with oneDNN and with im2col + SGEMM. JSON lines on stdout, a\n"
               "  table on stderr.\n",
               why, *why ? "\n" : "");
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--width") o.width = std::atof(value());
    else if (a == "--size") o.size = std::atoi(value());
    else if (a == "--batch") o.batch = std::atoi(value());
    else if (a == "--reps") o.reps = std::atoi(value());
    else if (a == "--threads") o.threads = std::atoi(value());
    else if (a == "--help" || a == "-h") usage("");
    else usage(("unknown option " + a).c_str());
  }
  if (!(o.width > 0) || o.size < 4 || o.batch < 1 || o.reps < 1) usage("expected width > 0, size >= 4, batch >= 1, reps >= 1");
  return o;
}

// The distinct convolutions after the stem of a ResNet-18 (cifar stem: no downsampling before
// layer1): per stage a 3x3 at the stage's width, and from layer2 on the strided 3x3 and 1x1
// shortcut that enter it.
std::vector<ConvShape> resnet18_shapes(const Options& o) {
  std::vector<ConvShape> shapes;
  int prev = 0, h = o.size;
  for (int stage = 0; stage < 4; ++stage) {
    const int c = std::max(1, static_cast<int>(std::lround(64 * o.width * (1 << stage))));
    auto add = [&](int C, int H, int K, int R, int stride) {
      ConvShape s;
      s.N = o.batch, s.H = s.W = H, s.C = C, s.K = K, s.R = s.S = R, s.stride = stride, s.pad = R / 2;
      shapes.push_back(s);
    };
    if (stage > 0) {
      add(prev, h, c, 3, 2);
      add(prev, h, c, 1, 2);
      h = (h + 1) / 2;
    }
    add(c, h, c, 3, 1);
    prev = c;
  }
  return shapes;
}

const char* pass_name(PlanOp op) {
  switch (op) {
    case PlanOp::conv_forward: return "forward";
    case PlanOp::conv_backward_data: return "backward-data";
    default: return "backward-weight";
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    CpuBackend cpu(o.threads);
    std::fprintf(stderr, "%s\n", cpu.describe().c_str());
    std::fprintf(stderr, "%-34s %-16s %9s %9s %7s  %s\n", "shape (NxHxWxC -> K, RxS/stride)", "pass", "oneDNN", "gemm",
                 "gemm/x", "auto picks");
    for (const ConvShape& s : resnet18_shapes(o)) {
      const size_t nx = size_t(s.N) * s.H * s.W * s.C, ny = size_t(s.N) * s.P() * s.Q() * s.K,
                   nw = size_t(s.K) * s.C * s.R * s.S;
      std::vector<float> x(nx), y(ny), w(nw), dx(nx), dw(nw);
      for (size_t i = 0; i < nx; ++i) x[i] = float((i * 7919) % 97) / 97.0f - 0.5f;
      for (size_t i = 0; i < ny; ++i) y[i] = float((i * 104729) % 89) / 89.0f - 0.5f;
      for (size_t i = 0; i < nw; ++i) w[i] = float((i * 31) % 53) / 53.0f - 0.5f;
      const double gflop = 2.0 * double(s.N) * s.P() * s.Q() * s.K * s.C * s.R * s.S / 1e9;
      char shape[64];
      std::snprintf(shape, sizeof shape, "%dx%dx%dx%d -> %d, %dx%d/%d", s.N, s.H, s.W, s.C, s.K, s.R, s.S, s.stride);
      for (PlanOp op : {PlanOp::conv_forward, PlanOp::conv_backward_data, PlanOp::conv_backward_weight}) {
        double rate[2];
        for (int a = 0; a < 2; ++a) {
          cpu.set_conv_algorithm(a == 0 ? ConvAlgorithm::onednn : ConvAlgorithm::gemm);
          std::vector<double> ms;
          for (int rep = 0; rep <= o.reps; ++rep) {  // the first call builds plans: untimed
            const double t0 = now_ms();
            if (op == PlanOp::conv_forward) cpu.conv2d_forward(y.data(), x.data(), w.data(), s);
            else if (op == PlanOp::conv_backward_data) cpu.conv2d_backward_data(dx.data(), y.data(), w.data(), s);
            else cpu.conv2d_backward_weight(dw.data(), y.data(), x.data(), s, false);
            if (rep > 0) ms.push_back(now_ms() - t0);
          }
          std::sort(ms.begin(), ms.end());
          rate[a] = gflop / (ms[ms.size() / 2] / 1e3);
        }
        cpu.set_conv_algorithm(ConvAlgorithm::automatic);
        const bool picks_gemm = cpu.conv_uses_gemm(op, s);
        std::fprintf(stderr, "%-34s %-16s %9.1f %9.1f %7.2f  %s\n", shape, pass_name(op), rate[0], rate[1],
                     rate[1] / rate[0], picks_gemm ? "gemm" : "oneDNN");
        std::printf(
            "{\"N\":%d,\"H\":%d,\"C\":%d,\"K\":%d,\"R\":%d,\"stride\":%d,\"pass\":\"%s\",\"onednn_gflops\":%.2f,"
            "\"gemm_gflops\":%.2f,\"auto\":\"%s\"}\n",
            s.N, s.H, s.C, s.K, s.R, s.stride, pass_name(op), rate[0], rate[1], picks_gemm ? "gemm" : "onednn");
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "byol_bench_conv: %s\n", e.what());
    return 1;
  }
  return 0;
}
