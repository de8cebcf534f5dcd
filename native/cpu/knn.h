// knn.h: the weighted kNN classifier of the evaluation (lib/eval/knn.ts has the JavaScript
// reference): cosine similarities by one oneDNN GEMM per block of test rows, the k most
// similar training rows per test row, each voting exp(sim / T) for its class.
#pragma once
#include <cstdint>

namespace byol {
namespace cpu {

struct KnnCounts {
  int64_t top1 = 0;  // test rows whose true class scored highest (ties count against it)
  int64_t top5 = 0;  // ... among the five highest
};

// train: n x dim and test: m x dim row-major, rows already L2-normalized by the caller;
// labels in [0, classes); k is capped at n. Blocks of test rows are sized so that their
// similarities take at most ~64 MiB. Runs with the calling thread's OpenMP thread count.
// Neighbours are chosen as the JavaScript reference chooses them (a min-heap that keeps the
// first of equal similarities), so both give the same counts for the same similarities.
KnnCounts knn_classify(const float* train, const int32_t* train_labels, int64_t n, const float* test,
                       const int32_t* test_labels, int64_t m, int64_t dim, int classes, int k,
                       double temperature);

}  // namespace cpu
}  // namespace byol
