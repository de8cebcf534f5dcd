// knn.cc: knnClassify(train, trainLabels, test, testLabels, dim, classes, k, temperature) ->
// Promise<{ top1, top5 }> (counts), the weighted kNN of lib/eval/knn.ts on the compute thread
// (native/cpu/knn.h: one oneDNN GEMM per block of test rows).
// The typed arrays are read in place while the promise is pending (the worker holds
// references to them): the caller must not write to them until it settles.
#include <string>

#include "../cpu/knn.h"
#include "addon.h"

namespace byol_addon {
namespace {

class KnnWorker : public Napi::AsyncWorker {
 public:
  KnnWorker(Napi::Env env, Napi::Float32Array train, Napi::Int32Array train_labels, Napi::Float32Array test,
            Napi::Int32Array test_labels, int64_t dim, int classes, int k, double temperature)
      : Napi::AsyncWorker(env, "byol:knnClassify"),
        deferred_(Napi::Promise::Deferred::New(env)),
        refs_{Napi::Persistent(train.As<Napi::Object>()), Napi::Persistent(train_labels.As<Napi::Object>()),
              Napi::Persistent(test.As<Napi::Object>()), Napi::Persistent(test_labels.As<Napi::Object>())},
        train_(train.Data()), train_labels_(train_labels.Data()), test_(test.Data()), test_labels_(test_labels.Data()),
        n_(static_cast<int64_t>(train_labels.ElementLength())), m_(static_cast<int64_t>(test_labels.ElementLength())),
        dim_(dim), classes_(classes), k_(k), temperature_(temperature) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      RunOnComputeThread([&] {
        counts_ = byol::cpu::knn_classify(train_, train_labels_, n_, test_, test_labels_, m_, dim_, classes_, k_,
                                          temperature_);
      });
    } catch (const std::bad_alloc&) {
      SetError("knnClassify: out of memory for the similarities");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object result = Napi::Object::New(env);
    result.Set("top1", static_cast<double>(counts_.top1));
    result.Set("top5", static_cast<double>(counts_.top5));
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error& error) override { deferred_.Reject(Napi::Error::New(Env(), error.Message()).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference refs_[4];  // keep the arrays (and their memory) alive
  const float* train_;
  const int32_t* train_labels_;
  const float* test_;
  const int32_t* test_labels_;
  int64_t n_, m_, dim_;
  int classes_, k_;
  double temperature_;
  byol::cpu::KnnCounts counts_;
};

Napi::Value KnnClassify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto train = ArgTypedArray(info, 0, "train", napi_float32_array, "Float32Array").As<Napi::Float32Array>();
  auto train_labels = ArgTypedArray(info, 1, "trainLabels", napi_int32_array, "Int32Array").As<Napi::Int32Array>();
  auto test = ArgTypedArray(info, 2, "test", napi_float32_array, "Float32Array").As<Napi::Float32Array>();
  auto test_labels = ArgTypedArray(info, 3, "testLabels", napi_int32_array, "Int32Array").As<Napi::Int32Array>();
  const int64_t dim = ArgInteger(info, 4, "dim", 1, 1 << 24);
  const int classes = static_cast<int>(ArgInteger(info, 5, "classes", 1, 1 << 20));
  const int k = static_cast<int>(ArgInteger(info, 6, "k", 1, 1 << 20));
  const double temperature = ArgNumber(info, 7, "temperature", 1e-6, 1e6);
  const size_t n = train_labels.ElementLength(), m = test_labels.ElementLength();
  if (n == 0) ThrowExpected(env, "trainLabels", "at least one label", info[1]);
  if (train.ElementLength() != n * dim) ThrowExpected(env, "train", std::to_string(n * dim) + " values (trainLabels x dim)", info[0]);
  if (test.ElementLength() != m * dim) ThrowExpected(env, "test", std::to_string(m * dim) + " values (testLabels x dim)", info[2]);
  for (auto [labels, name] : {std::pair{train_labels, "trainLabels"}, std::pair{test_labels, "testLabels"}}) {
    for (size_t i = 0; i < labels.ElementLength(); ++i) {
      if (labels[i] < 0 || labels[i] >= classes) {
        throw Napi::RangeError::New(env, std::string("Expected ") + name + " in [0, " + std::to_string(classes) +
                                             ") but found " + std::to_string(labels[i]) + " at index " + std::to_string(i));
      }
    }
  }
  auto* worker = new KnnWorker(env, train, train_labels, test, test_labels, dim, classes, k, temperature);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

void InitKnn(Napi::Env env, Napi::Object exports) {
  exports.Set("knnClassify", Napi::Function::New(env, KnnClassify, "knnClassify"));
}

}  // namespace byol_addon
