// model.cc (addon): the BYOL model bindings (byol/model.h) behind lib/byol.ts.
//   createModel(options, device) -> Promise<NativeModel>   (allocation + init off the main thread)
//   NativeModel: step(view1, view2, lr, tau, labels?: Int32Array) -> Promise<{loss, classifier:
//     null | {loss, correct, count}}>; embed(images) / project(images, target) / classify(images)
//     -> Promise<NativeTensor>; saveWeights(path, optimizer) / loadWeights(path) ->
//     Promise<boolean (file had optimizer state)>; saveEncoder(path); loadEncoder(path, target) ->
//     Promise<string[] (skipped tensors)>; dispose(); info();
//     setUseGraphs(on): applied by the next step (CUDA graph replay, byol/model.h).
//   learningRate(step, baseLr, batchSize, warmupSteps, totalSteps), emaTau(step, tauBase, totalSteps).
//   profilerStart(device) / profilerStop(device) -> boolean: the nsys capture window (CUDA only).
//   setOpTiming(device, on) -> boolean; opTimes(device, reset) -> [{phase, op, calls, ms, flops,
//     bytes}]: the
//     backend's op timing (Backend::set_op_timing / op_times).
// Contract: arguments are checked again here (lib/byol.ts checks them first, same messages);
// every model call runs in an AsyncWorker and calls on one model are serialized by its mutex.
// dispose() frees the model at once unless a call is running, then when that call ends.
#include <napi.h>

#include <cmath>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "addon.h"
#include "byol/model.h"

namespace byol_addon {


namespace {


double GetNumber(const Napi::Object& obj, const char* key, double lo, double hi) {
  Napi::Env env = obj.Env();
  Napi::Value v = obj.Get(key);
  if (!v.IsNumber()) ThrowExpected(env, key, "number", v);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d < lo || d > hi) {
    std::ostringstream expected;
    expected << "number between " << lo << " and " << hi;
    ThrowExpected(env, key, expected.str(), v);
  }
  return d;
}

int GetInt(const Napi::Object& obj, const char* key, int lo, int hi) {
  const double d = GetNumber(obj, key, lo, hi);
  if (std::floor(d) != d) ThrowExpected(obj.Env(), key, "integer", obj.Get(key));
  return static_cast<int>(d);
}

bool GetBool(const Napi::Object& obj, const char* key) {
  Napi::Value v = obj.Get(key);
  if (!v.IsBoolean()) ThrowExpected(obj.Env(), key, "boolean", v);
  return v.As<Napi::Boolean>().Value();
}

std::string GetString(const Napi::Object& obj, const char* key) {
  Napi::Value v = obj.Get(key);
  if (!v.IsString()) ThrowExpected(obj.Env(), key, "string", v);
  return v.As<Napi::String>().Utf8Value();
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString() || info[i].As<Napi::String>().Utf8Value().empty())
    ThrowExpected(info.Env(), name, "non-empty string", info.Length() > i ? info[i] : info.Env().Undefined());
  return info[i].As<Napi::String>().Utf8Value();
}

bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info.Length() > i ? info[i] : info.Env().Undefined();
  if (!v.IsBoolean()) ThrowExpected(info.Env(), name, "boolean", v);
  return v.As<Napi::Boolean>().Value();
}

// The flat options object lib/byol.ts builds (names as in its error messages).
byol::ModelConfig ParseConfig(const Napi::Object& o) {
  Napi::Env env = o.Env();
  byol::ModelConfig c;
  auto wrap = [&](auto&& body) {
    try {
      body();
    } catch (const byol::Error& e) {
      throw Napi::TypeError::New(env, e.what());
    }
  };
  wrap([&] { c.encoder.arch = byol::parse_arch(GetString(o, "encoder.arch"), "encoder.arch"); });
  wrap([&] { c.encoder.stem = byol::parse_stem(GetString(o, "encoder.stem"), "encoder.stem"); });
  c.encoder.in_channels = GetInt(o, "encoder.inChannels", 1, 3);
  c.encoder.width = GetNumber(o, "encoder.width", 1.0 / 64, 64);
  c.projector_hidden = GetInt(o, "projector.hidden", 1, 65536);
  c.projector_out = GetInt(o, "projector.out", 1, 65536);
  c.predictor = GetBool(o, "predictor");
  if (c.predictor) c.predictor_hidden = GetInt(o, "predictor.hidden", 1, 65536);
  wrap([&] { c.optimizer.kind = byol::parse_optimizer(GetString(o, "optimizer.name"), "optimizer.name"); });
  c.optimizer.weight_decay = static_cast<float>(GetNumber(o, "optimizer.weightDecay", 0, 1000));
  c.optimizer.momentum = static_cast<float>(GetNumber(o, "optimizer.momentum", 0, 1));
  c.optimizer.trust_coefficient = static_cast<float>(GetNumber(o, "optimizer.trustCoefficient", 0, 1000));
  c.optimizer.lars_eps = static_cast<float>(GetNumber(o, "optimizer.eps", 0, 1));
  c.optimizer.solo_learn = GetBool(o, "optimizer.soloLearn");
  c.optimizer.nesterov = GetBool(o, "optimizer.nesterov");
  c.optimizer.beta1 = static_cast<float>(GetNumber(o, "optimizer.beta1", 0, 0.999999));
  c.optimizer.beta2 = static_cast<float>(GetNumber(o, "optimizer.beta2", 0, 0.999999999));
  c.optimizer.adam_eps = static_cast<float>(GetNumber(o, "optimizer.adamEps", 0, 1));
  const double seed = GetNumber(o, "seed", 0, 9007199254740991.0);
  if (std::floor(seed) != seed) ThrowExpected(env, "seed", "integer", o.Get("seed"));
  c.seed = static_cast<uint64_t>(seed);
  wrap([&] { c.target_init = byol::parse_target_init(GetString(o, "initTarget"), "initTarget"); });
  c.bn_momentum = static_cast<float>(GetNumber(o, "bnMomentum", 0, 1));
  c.bn_eps = static_cast<float>(GetNumber(o, "bnEps", 1e-12, 1));
  c.classifier_classes = GetInt(o, "classifier.classes", 0, 65536);
  wrap([&] { byol::validate_model_config(c); });
  return c;
}

// The graph-replay state as info() reports it. The model's own fields change only inside
// step() under the slot's mutex, which info() (JS thread) must not wait for; StepWorker
// copies them here after each step instead.
struct GraphSnapshot {
  bool enabled = true;
  int64_t launches = 0;
  std::string error;
};

// What workers share with the handle: the model (null once disposed) and the lock that
// serializes calls. Workers keep their own reference to the model, so dispose() during a
// call frees the memory when the call ends. info_mutex guards graphs and graphs_request
// (a setUseGraphs() value the next step applies before it runs).
struct ModelSlot {
  std::mutex mutex;
  std::shared_ptr<byol::ByolModel> model;
  std::string device;
  std::mutex info_mutex;
  GraphSnapshot graphs;
  std::optional<bool> graphs_request;
};

// A worker around one model call; Execute() never touches JS. Errors come back as strings.
class ModelWorker : public Napi::AsyncWorker {
 public:
  ModelWorker(Napi::Env env, const char* name, std::shared_ptr<ModelSlot> slot)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), slot_(std::move(slot)),
        model_(slot_->model), name_(name) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      std::lock_guard<std::mutex> lock(slot_->mutex);
      RunWhereDeviceComputes(model_->backend(), [&] { Run(*model_, *slot_); });
    } catch (const std::bad_alloc&) {
      SetError(std::string(name_) + ": out of memory");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnError(const Napi::Error& error) override { deferred_.Reject(Napi::Error::New(Env(), error.Message()).Value()); }

 protected:
  // `slot`: for the state that info() reads (the model itself is `model`).
  virtual void Run(byol::ByolModel& model, ModelSlot& slot) = 0;
  Napi::Promise::Deferred deferred_;

 private:
  std::shared_ptr<ModelSlot> slot_;
  std::shared_ptr<byol::ByolModel> model_;
  const char* name_;
};

class StepWorker : public ModelWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<ModelSlot> slot, byol::Tensor v1, byol::Tensor v2, float lr, float tau,
             std::optional<std::vector<int32_t>> labels)
      : ModelWorker(env, "byol:Byol.step", std::move(slot)), v1_(std::move(v1)), v2_(std::move(v2)), lr_(lr), tau_(tau),
        labels_(std::move(labels)) {}
  void Run(byol::ByolModel& model, ModelSlot& slot) override {
    std::optional<bool> request;
    {
      std::lock_guard<std::mutex> info_lock(slot.info_mutex);
      request.swap(slot.graphs_request);
    }
    if (request) model.set_use_graphs(*request);
    // Refreshed when the step throws too: the graph state may have changed before the failure.
    try {
      loss_ = model.step(v1_, v2_, lr_, tau_, labels_ ? labels_->data() : nullptr);
    } catch (...) {
      RefreshGraphs(model, slot);
      throw;
    }
    RefreshGraphs(model, slot);
    classifier_ = model.last_classifier();
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object result = Napi::Object::New(env);
    result.Set("loss", loss_);
    if (labels_) {
      Napi::Object c = Napi::Object::New(env);
      c.Set("loss", classifier_.loss);
      c.Set("correct", static_cast<double>(classifier_.correct));
      c.Set("count", static_cast<double>(classifier_.count));
      result.Set("classifier", c);
    } else {
      result.Set("classifier", env.Null());
    }
    deferred_.Resolve(result);
  }

 private:
  static void RefreshGraphs(const byol::ByolModel& model, ModelSlot& slot) {
    std::lock_guard<std::mutex> info_lock(slot.info_mutex);
    // A request made while this step ran wins until the next step applies it.
    slot.graphs.enabled = slot.graphs_request.value_or(model.use_graphs());
    slot.graphs.launches = model.graph_launches();
    slot.graphs.error = model.graph_error();
  }

  byol::Tensor v1_, v2_;
  float lr_, tau_, loss_ = 0;
  std::optional<std::vector<int32_t>> labels_;
  byol::ByolModel::ClassifierStats classifier_;
};

class ForwardWorker : public ModelWorker {
 public:
  enum class Kind { embed, project_online, project_target, classify };
  ForwardWorker(Napi::Env env, std::shared_ptr<ModelSlot> slot, byol::Tensor images, Kind kind)
      : ModelWorker(env, "byol:Byol.embed", std::move(slot)), images_(std::move(images)), kind_(kind) {}
  void Run(byol::ByolModel& model, ModelSlot&) override {
    switch (kind_) {
      case Kind::embed: out_ = model.embed(images_); break;
      case Kind::classify: out_ = model.classify(images_); break;
      default: out_ = model.project(images_, kind_ == Kind::project_target);
    }
  }
  void OnOK() override { deferred_.Resolve(WrapTensor(Env(), std::move(out_))); }

 private:
  byol::Tensor images_, out_;
  Kind kind_;
};

class FileWorker : public ModelWorker {
 public:
  enum class Kind { save_weights, save_weights_with_optimizer, load_weights, save_encoder, load_encoder,
                    load_encoder_online_only };
  FileWorker(Napi::Env env, std::shared_ptr<ModelSlot> slot, std::string path, Kind kind)
      : ModelWorker(env, "byol:Byol.weights", std::move(slot)), path_(std::move(path)), kind_(kind) {}
  void Run(byol::ByolModel& model, ModelSlot&) override {
    switch (kind_) {
      case Kind::save_weights: model.save_weights(path_, false); break;
      case Kind::save_weights_with_optimizer: model.save_weights(path_, true); break;
      case Kind::load_weights: had_optimizer_ = model.load_weights(path_); break;
      case Kind::save_encoder: model.save_encoder(path_); break;
      case Kind::load_encoder: ignored_ = model.load_encoder(path_, true); break;
      case Kind::load_encoder_online_only: ignored_ = model.load_encoder(path_, false); break;
    }
  }
  void OnOK() override {
    if (kind_ != Kind::load_encoder && kind_ != Kind::load_encoder_online_only) {
      deferred_.Resolve(Napi::Boolean::New(Env(), had_optimizer_));
      return;
    }
    Napi::Array ignored = Napi::Array::New(Env(), ignored_.size());
    for (size_t i = 0; i < ignored_.size(); ++i) ignored.Set(static_cast<uint32_t>(i), ignored_[i]);
    deferred_.Resolve(ignored);
  }

 private:
  std::string path_;
  Kind kind_;
  bool had_optimizer_ = false;
  std::vector<std::string> ignored_;  // load_encoder: tensors of the file it skipped
};

const napi_type_tag kModelTag = {0x6279'6f6c'4d6f'6465ULL, 0x1c5e'93a7'0b42'd8f6ULL};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {
                           InstanceMethod<&NativeModel::Step>("step"),
                           InstanceMethod<&NativeModel::Embed>("embed"),
                           InstanceMethod<&NativeModel::Project>("project"),
                           InstanceMethod<&NativeModel::Classify>("classify"),
                           InstanceMethod<&NativeModel::SaveWeights>("saveWeights"),
                           InstanceMethod<&NativeModel::LoadWeights>("loadWeights"),
                           InstanceMethod<&NativeModel::SaveEncoder>("saveEncoder"),
                           InstanceMethod<&NativeModel::LoadEncoder>("loadEncoder"),
                           InstanceMethod<&NativeModel::Info>("info"),
                           InstanceMethod<&NativeModel::SetUseGraphs>("setUseGraphs"),
                           InstanceMethod<&NativeModel::Dispose>("dispose"),
                       });
  }

  // Only createModel constructs handles (the slot comes in an External).
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "NativeModel cannot be constructed from JavaScript; use Byol.create()");
    slot_ = *info[0].As<Napi::External<std::shared_ptr<ModelSlot>>>().Data();
    info.This().As<Napi::Object>().TypeTag(&kModelTag);
  }

 private:
  std::shared_ptr<ModelSlot> Live(Napi::Env env, const char* method) {
    if (!slot_ || !slot_->model)
      throw Napi::Error::New(env, std::string("Byol model was disposed: cannot call ") + method + " after dispose()");
    return slot_;
  }

  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto slot = Live(env, "step()");
    byol::Tensor v1 = UnwrapTensor(info.Length() > 0 ? info[0] : env.Undefined(), "view1");
    byol::Tensor v2 = UnwrapTensor(info.Length() > 1 ? info[1] : env.Undefined(), "view2");
    const float lr = static_cast<float>(ArgNumber(info, 2, "lr", 0, 1e6));
    const float tau = static_cast<float>(ArgNumber(info, 3, "tau", 0, 1));
    // Copied: the step runs on a worker thread while JavaScript may reuse the array.
    std::optional<std::vector<int32_t>> labels;
    if (info.Length() > 4 && !info[4].IsUndefined()) {
      if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        ThrowExpected(env, "labels", "Int32Array", info[4]);
      Napi::Int32Array a = info[4].As<Napi::Int32Array>();
      labels.emplace(a.Data(), a.Data() + a.ElementLength());
      // (A view1 that is not 4-D is refused by the step before any label is read.)
      if (v1.ndim() == 4 && labels->size() != static_cast<size_t>(v1.dim(0))) {
        std::ostringstream expected;
        expected << "Int32Array of " << v1.dim(0) << " labels (one per image of view1)";
        ThrowExpected(env, "labels", expected.str(), info[4]);
      }
    }
    auto* worker = new StepWorker(env, slot, std::move(v1), std::move(v2), lr, tau, std::move(labels));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Forward(const Napi::CallbackInfo& info, ForwardWorker::Kind kind, const char* method) {
    Napi::Env env = info.Env();
    auto slot = Live(env, method);
    byol::Tensor images = UnwrapTensor(info.Length() > 0 ? info[0] : env.Undefined(), "images");
    auto* worker = new ForwardWorker(env, slot, std::move(images), kind);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }
  Napi::Value Embed(const Napi::CallbackInfo& info) { return Forward(info, ForwardWorker::Kind::embed, "embed()"); }
  Napi::Value Classify(const Napi::CallbackInfo& info) {
    return Forward(info, ForwardWorker::Kind::classify, "classify()");
  }
  Napi::Value Project(const Napi::CallbackInfo& info) {
    const bool target = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    return Forward(info, target ? ForwardWorker::Kind::project_target : ForwardWorker::Kind::project_online,
                   "project()");
  }

  Napi::Value File(const Napi::CallbackInfo& info, FileWorker::Kind kind, const char* method) {
    Napi::Env env = info.Env();
    auto slot = Live(env, method);
    std::string path = ArgString(info, 0, "path");
    auto* worker = new FileWorker(env, slot, std::move(path), kind);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }
  Napi::Value SaveWeights(const Napi::CallbackInfo& info) {
    const bool optimizer = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    return File(info, optimizer ? FileWorker::Kind::save_weights_with_optimizer : FileWorker::Kind::save_weights,
                "saveWeights()");
  }
  Napi::Value LoadWeights(const Napi::CallbackInfo& info) {
    return File(info, FileWorker::Kind::load_weights, "loadWeights()");
  }
  Napi::Value SaveEncoder(const Napi::CallbackInfo& info) {
    return File(info, FileWorker::Kind::save_encoder, "saveEncoder()");
  }
  // loadEncoder(path, target: boolean) -> Promise<string[] (tensors of the file skipped)>.
  Napi::Value LoadEncoder(const Napi::CallbackInfo& info) {
    const bool target = !(info.Length() > 1 && info[1].IsBoolean() && !info[1].As<Napi::Boolean>().Value());
    return File(info, target ? FileWorker::Kind::load_encoder : FileWorker::Kind::load_encoder_online_only,
                "loadEncoder()");
  }

  // Sizes of the model, read without the lock: they never change after construction, except
  // the counters, which are read as a snapshot (graphs: the copy the last step left).
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto slot = Live(env, "info()");
    const byol::ByolModel& m = *slot->model;
    Napi::Object o = Napi::Object::New(env);
    o.Set("featureDim", m.feature_dim());
    o.Set("outputDim", m.output_dim());
    o.Set("numParams", static_cast<double>(m.num_params()));
    o.Set("numTargetParams", static_cast<double>(m.num_target_params()));
    o.Set("classifierClasses", m.classifier_classes());
    o.Set("device", slot->device);
    o.Set("config", byol::model_config_json(m.config()));
    GraphSnapshot snapshot;
    {
      std::lock_guard<std::mutex> info_lock(slot->info_mutex);
      snapshot = slot->graphs;
    }
    Napi::Object graphs = Napi::Object::New(env);
    graphs.Set("enabled", snapshot.enabled);
    graphs.Set("launches", static_cast<double>(snapshot.launches));
    graphs.Set("error", snapshot.error.empty() ? env.Null() : Napi::String::New(env, snapshot.error));
    o.Set("graphs", graphs);
    return o;
  }

  // Synchronous: records the request, which the next step applies under the model's lock
  // (a step may be running now). info() reports the requested state at once.
  Napi::Value SetUseGraphs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto slot = Live(env, "setUseGraphs()");
    Napi::Value v = info.Length() > 0 ? info[0] : env.Undefined();
    if (!v.IsBoolean()) ThrowExpected(env, "on", "boolean", v);
    const bool on = v.As<Napi::Boolean>().Value();
    std::lock_guard<std::mutex> info_lock(slot->info_mutex);
    slot->graphs_request = on;
    slot->graphs.enabled = on;
    return env.Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (slot_) slot_->model.reset();  // a running worker holds its own reference
    return info.Env().Undefined();
  }

  std::shared_ptr<ModelSlot> slot_;
};

std::mutex g_constructors_mutex;
std::unordered_map<napi_env, Napi::FunctionReference*> g_constructors;

Napi::Function ModelConstructor(Napi::Env env) {
  std::lock_guard<std::mutex> lock(g_constructors_mutex);
  auto found = g_constructors.find(env);
  BYOL_CHECK(found != g_constructors.end(), "byol: the model module is not initialized in this environment");
  return found->second->Value();
}

class CreateWorker : public Napi::AsyncWorker {
 public:
  CreateWorker(Napi::Env env, byol::Backend* backend, byol::ModelConfig config, std::string device)
      : Napi::AsyncWorker(env, "byol:Byol.create"), deferred_(Napi::Promise::Deferred::New(env)), backend_(backend),
        config_(config), device_(std::move(device)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Execute() override {
    try {
      slot_ = std::make_shared<ModelSlot>();
      RunWhereDeviceComputes(backend_, [&] { slot_->model = std::make_shared<byol::ByolModel>(backend_, config_); });
      slot_->device = device_;
    } catch (const std::bad_alloc&) {
      SetError("Byol.create: out of memory allocating the model");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(ModelConstructor(env).New({Napi::External<std::shared_ptr<ModelSlot>>::New(env, &slot_)}));
    } catch (const std::exception& e) {
      deferred_.Reject(Napi::Error::New(env, e.what()).Value());
    }
  }
  void OnError(const Napi::Error& error) override { deferred_.Reject(Napi::Error::New(Env(), error.Message()).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  byol::Backend* backend_;
  byol::ModelConfig config_;
  std::string device_;
  std::shared_ptr<ModelSlot> slot_;
};

Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) ThrowExpected(env, "options", "object", info.Length() ? info[0] : env.Undefined());
  byol::ModelConfig config = ParseConfig(info[0].As<Napi::Object>());
  const std::string device = ArgString(info, 1, "device");
  byol::Backend* backend = nullptr;
  try {
    backend = GetBackend(device);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  auto* worker = new CreateWorker(env, backend, config, BackendDeviceName(backend));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value LearningRate(const Napi::CallbackInfo& info) {
  const double kMax = 9007199254740991.0;
  const int64_t step = ArgInteger(info, 0, "step", 0, kMax);
  const double base = ArgNumber(info, 1, "baseLr", 0, 1e6);
  const int64_t batch = ArgInteger(info, 2, "batchSize", 1, kMax);
  const int64_t warmup = ArgInteger(info, 3, "warmupSteps", 0, kMax);
  const int64_t total = ArgInteger(info, 4, "totalSteps", 1, kMax);
  try {
    return Napi::Number::New(info.Env(), byol::learning_rate(step, base, batch, warmup, total));
  } catch (const byol::Error& e) {
    throw Napi::RangeError::New(info.Env(), e.what());
  }
}

Napi::Value EmaTau(const Napi::CallbackInfo& info) {
  const double kMax = 9007199254740991.0;
  const int64_t step = ArgInteger(info, 0, "step", 0, kMax);
  const double base = ArgNumber(info, 1, "tauBase", 0, 1);
  const int64_t total = ArgInteger(info, 2, "totalSteps", 1, kMax);
  try {
    return Napi::Number::New(info.Env(), byol::ema_tau(step, base, total));
  } catch (const byol::Error& e) {
    throw Napi::RangeError::New(info.Env(), e.what());
  }
}

// The profiler capture window of a device's backend (Backend::profiler_start/stop): true
// when the backend has one (CUDA: cudaProfilerStart/Stop for nsys), false when it has none
// (CPU). Synchronous: it is a switch, and stop waits only for the work already queued.
Napi::Value ProfilerSwitch(const Napi::CallbackInfo& info, bool start) {
  Napi::Env env = info.Env();
  const std::string device = ArgString(info, 0, "device");
  try {
    byol::Backend* backend = GetBackend(device);
    return Napi::Boolean::New(env, start ? backend->profiler_start() : backend->profiler_stop());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string(start ? "profilerStart" : "profilerStop") + ": " + e.what());
  }
}
Napi::Value ProfilerStart(const Napi::CallbackInfo& info) { return ProfilerSwitch(info, true); }
Napi::Value ProfilerStop(const Napi::CallbackInfo& info) { return ProfilerSwitch(info, false); }

// Op timing of a device's backend (Backend::set_op_timing): true when the backend can time ops.
Napi::Value SetOpTiming(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string device = ArgString(info, 0, "device");
  const bool on = ArgBool(info, 1, "on");
  try {
    return Napi::Boolean::New(env, GetBackend(device)->set_op_timing(on));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("setOpTiming: ") + e.what());
  }
}

// The sums so far (Backend::op_times). Synchronous: it waits for the device's queued work, which
// after an awaited step is none.
Napi::Value OpTimes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string device = ArgString(info, 0, "device");
  const bool reset = ArgBool(info, 1, "reset");
  std::vector<byol::OpTime> rows;
  try {
    rows = GetBackend(device)->op_times(reset);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("opTimes: ") + e.what());
  }
  Napi::Array out = Napi::Array::New(env, rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    Napi::Object row = Napi::Object::New(env);
    row.Set("phase", rows[i].phase);
    row.Set("op", rows[i].op);
    row.Set("calls", static_cast<double>(rows[i].calls));
    row.Set("ms", rows[i].ms);
    row.Set("flops", rows[i].flops);
    row.Set("bytes", rows[i].bytes);
    out.Set(static_cast<uint32_t>(i), row);
  }
  return out;
}

}  // namespace

void InitModel(Napi::Env env, Napi::Object exports) {
  Napi::Function constructor = NativeModel::Define(env);
  {
    std::lock_guard<std::mutex> lock(g_constructors_mutex);
    g_constructors[static_cast<napi_env>(env)] = new Napi::FunctionReference(Napi::Persistent(constructor));
  }
  napi_env raw_env = env;
  env.AddCleanupHook([raw_env]() {
    std::lock_guard<std::mutex> lock(g_constructors_mutex);
    auto found = g_constructors.find(raw_env);
    if (found == g_constructors.end()) return;
    delete found->second;
    g_constructors.erase(found);
  });
  exports.Set("NativeModel", constructor);
  exports.Set("createModel", Napi::Function::New(env, CreateModel, "createModel"));
  exports.Set("learningRate", Napi::Function::New(env, LearningRate, "learningRate"));
  exports.Set("emaTau", Napi::Function::New(env, EmaTau, "emaTau"));
  exports.Set("profilerStart", Napi::Function::New(env, ProfilerStart, "profilerStart"));
  exports.Set("profilerStop", Napi::Function::New(env, ProfilerStop, "profilerStop"));
  exports.Set("setOpTiming", Napi::Function::New(env, SetOpTiming, "setOpTiming"));
  exports.Set("opTimes", Napi::Function::New(env, OpTimes, "opTimes"));
}

}  // namespace byol_addon
