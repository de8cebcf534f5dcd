// knn.cc: weighted kNN classification (knn.h).
#include "knn.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <oneapi/dnnl/dnnl.h>

#include "byol/error.h"

namespace byol {
namespace cpu {
namespace {

// The k largest (similarity, index) pairs seen so far: a min-heap, root = the smallest kept.
// Pushes in index order and the same comparisons as TopK in lib/eval/knn.ts.
class TopK {
 public:
  explicit TopK(int k) : k_(k), sims_(k), indices_(k) {}
  void reset() { size_ = 0; }
  int size() const { return size_; }
  float sim(int i) const { return sims_[i]; }
  int64_t index(int i) const { return indices_[i]; }
  // Anything not above this is rejected.
  float floor() const { return size_ < k_ ? -INFINITY : sims_[0]; }

  void push(float sim, int64_t index) {
    if (size_ < k_) {
      int i = size_++;
      while (i > 0) {
        const int parent = (i - 1) >> 1;
        if (sims_[parent] <= sim) break;
        sims_[i] = sims_[parent];
        indices_[i] = indices_[parent];
        i = parent;
      }
      sims_[i] = sim;
      indices_[i] = index;
      return;
    }
    if (sim <= sims_[0]) return;
    int i = 0;
    for (;;) {
      const int left = 2 * i + 1;
      if (left >= size_) break;
      const int right = left + 1;
      const int child = right < size_ && sims_[right] < sims_[left] ? right : left;
      if (sims_[child] >= sim) break;
      sims_[i] = sims_[child];
      indices_[i] = indices_[child];
      i = child;
    }
    sims_[i] = sim;
    indices_[i] = index;
  }

 private:
  int k_;
  int size_ = 0;
  std::vector<float> sims_;
  std::vector<int64_t> indices_;
};

}  // namespace

KnnCounts knn_classify(const float* train, const int32_t* train_labels, int64_t n, const float* test,
                       const int32_t* test_labels, int64_t m, int64_t dim, int classes, int k,
                       double temperature) {
  BYOL_CHECK(n > 0, "knn: expected at least one training row but received ", n);
  BYOL_CHECK(m >= 0 && dim > 0, "knn: expected m >= 0 and dim > 0 but received m = ", m, ", dim = ", dim);
  BYOL_CHECK(classes > 0 && k > 0, "knn: expected classes > 0 and k > 0 but received ", classes, " and ", k);
  BYOL_CHECK(temperature > 0, "knn: expected temperature > 0 but received ", temperature);
  KnnCounts counts;
  if (m == 0) return counts;
  const int kk = static_cast<int>(std::min<int64_t>(k, n));
  const double inv_t = 1.0 / temperature;
  const int64_t block = std::clamp<int64_t>((int64_t(64) << 20) / (n * int64_t(sizeof(float))), 1, 256);
  std::vector<float> sims(static_cast<size_t>(std::min(block, m) * n));
  int64_t top1 = 0, top5 = 0;
  for (int64_t first = 0; first < m; first += block) {
    const int64_t rows = std::min(block, m - first);
    // sims[r][j] = test[first + r] . train[j]
    const dnnl_status_t status = dnnl_sgemm('N', 'T', rows, n, dim, 1.f, test + first * dim, dim, train, dim, 0.f,
                                            sims.data(), n);
    BYOL_CHECK(status == dnnl_success, "knn: oneDNN's sgemm failed (status ", static_cast<int>(status), ") for ",
               rows, " x ", n, " similarities of dim ", dim);
#pragma omp parallel reduction(+ : top1, top5)
    {
      TopK heap(kk);
      std::vector<double> scores(classes);
#pragma omp for schedule(dynamic, 1)
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = sims.data() + r * n;
        heap.reset();
        float floor = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          if (row[j] > floor) {
            heap.push(row[j], j);
            floor = heap.floor();
          }
        }
        std::fill(scores.begin(), scores.end(), 0.0);
        for (int i = 0; i < heap.size(); ++i)
          scores[train_labels[heap.index(i)]] += std::exp(static_cast<double>(heap.sim(i)) * inv_t);
        const int label = test_labels[first + r];
        int rank = 0;
        for (int c = 0; c < classes; ++c)
          if (scores[c] > scores[label] || (scores[c] == scores[label] && c < label)) ++rank;
        if (rank == 0) ++top1;
        if (rank < 5) ++top5;
      }
    }
  }
  counts.top1 = top1;
  counts.top5 = top5;
  return counts;
}

}  // namespace cpu
}  // namespace byol
