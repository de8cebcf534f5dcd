// test_ops.cc: the op table. For every case of test/fixtures/ops_v1.safetensors (PyTorch
// reference, tools/gen_fixtures.py) and every backend, runs the op through the Backend
// interface (upload, run, download) and checks every output and gradient against the fixture
// with the op's documented tolerance. Also checked: accumulate=true paths (previous + new),
// the aliasing backend.h allows, that (=) outputs overwrite every element (buffers start as
// NaN), and that read-only inputs come back unchanged.
// A new op is: the Backend method, a generator function in tools/gen_fixtures.py, and one
// entry in kOps below. A fixture op without an entry fails loudly.
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "../cpu/cpu_backend.h"
#include "byol/backend.h"
#include "byol/safetensors.h"
#include "byol/tensor.h"
#include "runner.h"

namespace byol_test {
namespace {

using byol::Backend;
using byol::DType;
using byol::JsonValue;
using byol::Tensor;

constexpr const char* kFixtureFile = "ops_v1.safetensors";

// ---- tolerances: an element passes when |got - want| <= atol + rtol * |want|. ----
// The fixtures are PyTorch fp32 on the CPU. `tools/gen_fixtures.py --report` prints how far
// each output is from an fp64 computation on the same inputs: the error any honest fp32
// implementation also has. The bounds below leave 10x-100x over that, and are still orders
// of magnitude below what an indexing, layout or formula bug produces (errors of O(|want|)).
// Fixture values are O(0.01)..O(30) (O(1e5) only for the zero-row BYOL gradient).
struct Tol {
  float atol, rtol;
};
// Selection ops (max, ReLU mask, argmax) copy a value: any difference is a bug.
constexpr Tol kExact{0.0f, 0.0f};
// One or two roundings per element (add, lerp, mask * gradient, scaling by 1/HW); an FMA or
// another association moves the last bits only.
constexpr Tol kElementwise{1e-7f, 1e-6f};
// fp32 convolution: oneDNN and cuDNN reorder into blocked layouts and accumulate C*R*S (up
// to 833 here) or N*P*Q products in another order, or pick Winograd/implicit-GEMM variants:
// ~1e-4 relative is the accepted bound for such libraries (torch's own fp32 error is 5e-6
// absolute on these cases).
constexpr Tol kConv{1e-4f, 1e-4f};
// Reductions over rows or columns (batch-norm statistics and gradients, GEMMs with I <= 64,
// row norms, softmax sums): another summation order changes results by ~1e-6; 1e-5 leaves room.
constexpr Tol kReduction{1e-5f, 1e-5f};
// Small outputs whose scale is known to be ~1e-2..1e-4 (softmax gradients, optimizer
// momenta, BYOL gradients of rows with norms up to 10): the absolute floor is scaled down
// so that it stays ~1e-4 of the values it guards.
constexpr Tol kReductionSmall{1e-8f, 1e-5f};
constexpr Tol kElementwiseSmall{1e-9f, 1e-6f};

// ---------------------------------------------------------------------------------------
// One fixture case: its tensors ("<name>/<role>") and its JSON parameters.
class OpCase {
 public:
  OpCase(std::shared_ptr<const byol::SafeTensorsFile> file, std::string name, JsonValue params)
      : file_(std::move(file)), name_(std::move(name)), params_(std::move(params)) {}

  const std::string& name() const { return name_; }
  std::string what() const { return "fixture case '" + name_ + "'"; }
  std::string op() const { return params_.at("op", what()).as_string(what() + " op"); }

  bool has(const std::string& role) const { return file_->contains(name_ + "/" + role); }
  const byol::SafeTensor& tensor(const std::string& role) const { return file_->at(name_ + "/" + role); }
  std::vector<float> f32(const std::string& role) const { return tensor(role).to_f32(); }
  std::vector<int64_t> shape(const std::string& role) const { return tensor(role).shape(); }
  size_t numel(const std::string& role) const { return static_cast<size_t>(tensor(role).numel()); }
  Tensor upload(Backend* b, const std::string& role) const { return byol::load_tensor(b, *file_, name_ + "/" + role); }

  const JsonValue& param(const std::string& key) const { return params_.at(key, what()); }
  int geti(const std::string& key) const { return param(key).as_int(what() + " parameter " + key); }
  float getf(const std::string& key) const {
    return static_cast<float>(param(key).as_double(what() + " parameter " + key));
  }
  bool getb(const std::string& key) const { return param(key).as_bool(what() + " parameter " + key); }

 private:
  std::shared_ptr<const byol::SafeTensorsFile> file_;
  std::string name_;
  JsonValue params_;
};

// The fixture and backend.h disagreeing on a shape is a bug in one of them, not a tolerance
// question: throw (the case fails with the message).
void require_shape(const OpCase& c, const std::string& role, const std::vector<int64_t>& want) {
  BYOL_CHECK(c.shape(role) == want, c.what(), ": tensor '", role, "' has shape ", byol::shape_string(c.shape(role)),
             " but the parameters and backend.h give ", byol::shape_string(want));
}

// An output buffer full of NaN: an element the backend forgets to write fails the check, and
// a (=) output that is accumulated into instead of overwritten stays NaN.
Tensor poisoned(Backend* b, const std::vector<int64_t>& shape) {
  Tensor t(b, shape, DType::f32);
  if (t.numel() > 0) b->fill(t.f32(), std::nanf(""), static_cast<size_t>(t.numel()));
  return t;
}

Tensor poisoned_i32(Backend* b, const std::vector<int64_t>& shape) {
  Tensor t(b, shape, DType::i32);
  std::vector<int32_t> junk(static_cast<size_t>(t.numel()), -12345);
  if (!junk.empty()) b->upload(t.raw(), junk.data(), junk.size() * sizeof(int32_t));
  return t;
}

Tensor host_tensor(Backend* b, const std::vector<float>& v, const std::vector<int64_t>& shape) {
  return Tensor::from_host(b, v.data(), shape, DType::f32);
}

// What a parameter-gradient buffer holds before an accumulate=true call: values of the
// order of the gradients, different per element, so a (=) write or a doubled add shows.
std::vector<float> previous_values(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.5f * std::sin(0.37f * static_cast<float>(i) + 1.0f);
  return v;
}

std::vector<float> download(Backend* b, const Tensor& t) {
  b->synchronize();  // an asynchronous backend reports a failed kernel here, before the compare
  return t.to_vector_f32();
}

void expect(Backend* b, const OpCase& c, const std::string& role, const Tensor& got, Tol tol,
            const std::string& label = "") {
  check(label.empty() ? role : label, download(b, got), c.f32(role), tol.atol, tol.rtol);
}

void expect_i32(Backend* b, const OpCase& c, const std::string& role, const Tensor& got) {
  b->synchronize();
  std::vector<int32_t> g(static_cast<size_t>(got.numel()));
  got.to_host(g.data());
  std::vector<int32_t> w = c.tensor(role).to_i32();
  // Flat indices are far below 2^24, so the float comparison is exact.
  check(role, std::vector<float>(g.begin(), g.end()), std::vector<float>(w.begin(), w.end()), 0.0f, 0.0f);
}

// Inputs are const in the interface: a backend scribbling on them breaks the step silently.
void expect_unchanged(Backend* b, const OpCase& c, const std::string& role, const Tensor& t) {
  check(role + " (input unchanged)", download(b, t), c.f32(role), 0.0f, 0.0f);
}

// Runs `op` on a buffer holding previous_values() and expects previous + fixture[role].
void expect_accumulates(Backend* b, const OpCase& c, const std::string& role, Tol tol,
                        const std::function<void(float*)>& op) {
  std::vector<float> prev = previous_values(c.numel(role));
  Tensor t = host_tensor(b, prev, c.shape(role));
  op(t.f32());
  std::vector<float> want = c.f32(role);
  for (size_t i = 0; i < want.size(); ++i) want[i] += prev[i];
  check(role + " (accumulate=true)", download(b, t), want, tol.atol, tol.rtol);
}

// ---------------------------------------------------------------------------------------
// Op handlers: one per fixture "op".

void run_conv2d(Backend* b, const OpCase& c) {
  byol::ConvShape s;
  s.N = c.geti("N"), s.H = c.geti("H"), s.W = c.geti("W"), s.C = c.geti("C");
  s.K = c.geti("K"), s.R = c.geti("R"), s.S = c.geti("S"), s.stride = c.geti("stride"), s.pad = c.geti("pad");
  require_shape(c, "inp", {s.N, s.H, s.W, s.C});
  require_shape(c, "weight", {s.K, s.C, s.R, s.S});
  require_shape(c, "out", {s.N, s.P(), s.Q(), s.K});
  Tensor inp = c.upload(b, "inp"), weight = c.upload(b, "weight"), dout = c.upload(b, "dout");

  Tensor out = poisoned(b, c.shape("out"));
  b->conv2d_forward(out.f32(), inp.f32(), weight.f32(), s);
  expect(b, c, "out", out, kConv);

  Tensor dinp = poisoned(b, c.shape("dinp"));
  b->conv2d_backward_data(dinp.f32(), dout.f32(), weight.f32(), s);
  expect(b, c, "dinp", dinp, kConv);

  Tensor dweight = poisoned(b, c.shape("dweight"));
  b->conv2d_backward_weight(dweight.f32(), dout.f32(), inp.f32(), s, false);
  expect(b, c, "dweight", dweight, kConv);
  expect_accumulates(b, c, "dweight", kConv,
                     [&](float* p) { b->conv2d_backward_weight(p, dout.f32(), inp.f32(), s, true); });

  expect_unchanged(b, c, "inp", inp);
  expect_unchanged(b, c, "weight", weight);
  expect_unchanged(b, c, "dout", dout);
}

void run_batchnorm(Backend* b, const OpCase& c) {
  const int M = c.geti("M"), C = c.geti("C");
  const float momentum = c.getf("momentum"), eps = c.getf("eps");
  BYOL_CHECK(static_cast<int64_t>(M) * C == c.tensor("inp").numel(), c.what(), ": M*C != numel(inp)");
  require_shape(c, "gamma", {C});
  Tensor inp = c.upload(b, "inp"), gamma = c.upload(b, "gamma"), beta = c.upload(b, "beta");
  Tensor dout = c.upload(b, "dout");

  {  // training forward, running statistics updated in place
    Tensor out = poisoned(b, c.shape("out")), mean = poisoned(b, {C}), rstd = poisoned(b, {C});
    Tensor rmean = c.upload(b, "running_mean"), rvar = c.upload(b, "running_var");
    b->batchnorm_forward_train(out.f32(), mean.f32(), rstd.f32(), rmean.f32(), rvar.f32(), inp.f32(), gamma.f32(),
                               beta.f32(), M, C, momentum, eps, byol::BnEpilogue{});
    expect(b, c, "out", out, kReduction);
    expect(b, c, "save_mean", mean, kReduction);
    expect(b, c, "save_rstd", rstd, kReduction);
    expect(b, c, "running_mean_out", rmean, kReduction);
    expect(b, c, "running_var_out", rvar, kReduction);
  }
  {  // training forward without running statistics (null pointers: nothing to update)
    Tensor out = poisoned(b, c.shape("out")), mean = poisoned(b, {C}), rstd = poisoned(b, {C});
    b->batchnorm_forward_train(out.f32(), mean.f32(), rstd.f32(), nullptr, nullptr, inp.f32(), gamma.f32(),
                               beta.f32(), M, C, momentum, eps, byol::BnEpilogue{});
    expect(b, c, "out", out, kReduction, "out (no running stats)");
    expect(b, c, "save_mean", mean, kReduction, "save_mean (no running stats)");
    expect(b, c, "save_rstd", rstd, kReduction, "save_rstd (no running stats)");
  }
  {  // evaluation forward with the running statistics the case started from
    Tensor out = poisoned(b, c.shape("out_eval"));
    Tensor rmean = c.upload(b, "running_mean"), rvar = c.upload(b, "running_var");
    b->batchnorm_forward_eval(out.f32(), inp.f32(), gamma.f32(), beta.f32(), rmean.f32(), rvar.f32(), M, C, eps,
                              byol::BnEpilogue{});
    expect(b, c, "out_eval", out, kReduction);
  }
  // Backward from the fixture's saved statistics, so it is tested independently of the
  // forward. With M = 2, dinp vanishes up to eps/var terms (~1e-5): the atol covers that.
  Tensor mean = c.upload(b, "save_mean"), rstd = c.upload(b, "save_rstd");
  {
    Tensor dinp = poisoned(b, c.shape("dinp")), dgamma = poisoned(b, {C}), dbeta = poisoned(b, {C});
    b->batchnorm_backward(dinp.f32(), dgamma.f32(), dbeta.f32(), dout.f32(), inp.f32(), mean.f32(), rstd.f32(),
                          gamma.f32(), M, C, false, nullptr);
    expect(b, c, "dinp", dinp, kReduction);
    expect(b, c, "dgamma", dgamma, kReduction);
    expect(b, c, "dbeta", dbeta, kReduction);
  }
  {  // accumulate=true: dgamma/dbeta add, dinp is still written (=)
    Tensor dinp = poisoned(b, c.shape("dinp"));
    std::vector<float> prev = previous_values(C);
    Tensor dgamma = host_tensor(b, prev, {C}), dbeta = host_tensor(b, prev, {C});
    b->batchnorm_backward(dinp.f32(), dgamma.f32(), dbeta.f32(), dout.f32(), inp.f32(), mean.f32(), rstd.f32(),
                          gamma.f32(), M, C, true, nullptr);
    expect(b, c, "dinp", dinp, kReduction, "dinp (accumulate=true run)");
    std::vector<float> wg = c.f32("dgamma"), wb = c.f32("dbeta");
    for (int i = 0; i < C; ++i) wg[i] += prev[i], wb[i] += prev[i];
    check("dgamma (accumulate=true)", download(b, dgamma), wg, kReduction.atol, kReduction.rtol);
    check("dbeta (accumulate=true)", download(b, dbeta), wb, kReduction.atol, kReduction.rtol);
  }
  expect_unchanged(b, c, "inp", inp);
  expect_unchanged(b, c, "dout", dout);
  expect_unchanged(b, c, "gamma", gamma);
}

void run_relu(Backend* b, const OpCase& c) {
  const size_t n = static_cast<size_t>(c.geti("n"));
  BYOL_CHECK(n == c.numel("inp"), c.what(), ": n != numel(inp)");
  Tensor inp = c.upload(b, "inp"), dout = c.upload(b, "dout"), out_ref = c.upload(b, "out");
  Tensor out = poisoned(b, c.shape("out"));
  b->relu_forward(out.f32(), inp.f32(), n);
  expect(b, c, "out", out, kExact);
  Tensor dinp = poisoned(b, c.shape("dinp"));
  b->relu_backward(dinp.f32(), dout.f32(), out_ref.f32(), n);
  expect(b, c, "dinp", dinp, kExact);
  Tensor inplace = c.upload(b, "dout");  // dinp aliasing dout is allowed
  b->relu_backward(inplace.f32(), inplace.f32(), out_ref.f32(), n);
  expect(b, c, "dinp", inplace, kExact, "dinp (in place over dout)");
  expect_unchanged(b, c, "inp", inp);
}

void run_add(Backend* b, const OpCase& c) {
  const size_t n = static_cast<size_t>(c.geti("n"));
  BYOL_CHECK(n == c.numel("a"), c.what(), ": n != numel(a)");
  Tensor a = c.upload(b, "a"), bb = c.upload(b, "b");
  Tensor out = poisoned(b, c.shape("out"));
  b->add(out.f32(), a.f32(), bb.f32(), n);
  expect(b, c, "out", out, kElementwise);
  Tensor alias_a = c.upload(b, "a");
  b->add(alias_a.f32(), alias_a.f32(), bb.f32(), n);
  expect(b, c, "out", alias_a, kElementwise, "out (aliasing a)");
  Tensor alias_b = c.upload(b, "b");
  b->add(alias_b.f32(), a.f32(), alias_b.f32(), n);
  expect(b, c, "out", alias_b, kElementwise, "out (aliasing b)");
  // accumulate(dst, src) is the same sum in place.
  Tensor dst = c.upload(b, "a");
  b->accumulate(dst.f32(), bb.f32(), n);
  expect(b, c, "out", dst, kElementwise, "accumulate (dst += src)");
  expect_unchanged(b, c, "a", a);
  expect_unchanged(b, c, "b", bb);
}

void run_ema(Backend* b, const OpCase& c) {
  const size_t n = static_cast<size_t>(c.geti("n"));
  const float tau = c.getf("tau");
  Tensor target = c.upload(b, "target"), online = c.upload(b, "online");
  b->ema_update(target.f32(), online.f32(), n, tau, nullptr);
  expect(b, c, "target_out", target, kElementwiseSmall);
  expect_unchanged(b, c, "online", online);
}

void run_maxpool(Backend* b, const OpCase& c) {
  byol::PoolShape s;
  s.N = c.geti("N"), s.H = c.geti("H"), s.W = c.geti("W"), s.C = c.geti("C");
  s.kernel = c.geti("kernel"), s.stride = c.geti("stride"), s.pad = c.geti("pad");
  require_shape(c, "out", {s.N, s.P(), s.Q(), s.C});
  Tensor inp = c.upload(b, "inp"), dout = c.upload(b, "dout"), argmax_ref = c.upload(b, "argmax");
  Tensor out = poisoned(b, c.shape("out"));
  Tensor argmax = poisoned_i32(b, c.shape("argmax"));
  b->maxpool2d_forward(out.f32(), argmax.i32(), inp.f32(), s);
  expect(b, c, "out", out, kExact);
  expect_i32(b, c, "argmax", argmax);
  // Backward from the fixture's argmax. Windows overlap (3x3 stride 2), so a pixel can
  // collect up to four gradients, summed in any order: elementwise tolerance, not exact.
  Tensor dinp = poisoned(b, c.shape("dinp"));
  b->maxpool2d_backward(dinp.f32(), dout.f32(), argmax_ref.i32(), s);
  expect(b, c, "dinp", dinp, kElementwise);
  expect_unchanged(b, c, "inp", inp);
}

void run_avgpool(Backend* b, const OpCase& c) {
  const int N = c.geti("N"), HW = c.geti("HW"), C = c.geti("C");
  require_shape(c, "out", {N, C});
  Tensor inp = c.upload(b, "inp"), dout = c.upload(b, "dout");
  Tensor out = poisoned(b, c.shape("out"));
  b->avgpool_forward(out.f32(), inp.f32(), N, HW, C);
  expect(b, c, "out", out, kReduction);
  Tensor dinp = poisoned(b, c.shape("dinp"));
  b->avgpool_backward(dinp.f32(), dout.f32(), N, HW, C);
  expect(b, c, "dinp", dinp, kElementwise);
  expect_unchanged(b, c, "inp", inp);
}

void run_linear(Backend* b, const OpCase& c) {
  const int B = c.geti("B"), I = c.geti("I"), O = c.geti("O");
  const bool has_bias = c.getb("bias");
  require_shape(c, "weight", {O, I});
  require_shape(c, "out", {B, O});
  BYOL_CHECK(has_bias == c.has("bias"), c.what(), ": parameter bias=", has_bias, " disagrees with the tensors");
  Tensor inp = c.upload(b, "inp"), weight = c.upload(b, "weight"), dout = c.upload(b, "dout");
  Tensor bias = has_bias ? c.upload(b, "bias") : Tensor();
  float* bias_ptr = has_bias ? bias.f32() : nullptr;

  Tensor out = poisoned(b, c.shape("out"));
  b->linear_forward(out.f32(), inp.f32(), weight.f32(), bias_ptr, B, I, O);
  expect(b, c, "out", out, kReduction);

  {
    Tensor dinp = poisoned(b, c.shape("dinp")), dweight = poisoned(b, c.shape("dweight"));
    Tensor dbias = has_bias ? poisoned(b, {O}) : Tensor();
    b->linear_backward(dinp.f32(), dweight.f32(), has_bias ? dbias.f32() : nullptr, dout.f32(), inp.f32(),
                       weight.f32(), B, I, O, false);
    expect(b, c, "dinp", dinp, kReduction);
    expect(b, c, "dweight", dweight, kReduction);
    if (has_bias) expect(b, c, "dbias", dbias, kReduction);
  }
  {  // accumulate=true: parameter gradients add, dinp is still written
    Tensor dinp = poisoned(b, c.shape("dinp"));
    std::vector<float> prev_w = previous_values(c.numel("dweight"));
    std::vector<float> prev_b = previous_values(static_cast<size_t>(O));
    Tensor dweight = host_tensor(b, prev_w, c.shape("dweight"));
    Tensor dbias = has_bias ? host_tensor(b, prev_b, {O}) : Tensor();
    b->linear_backward(dinp.f32(), dweight.f32(), has_bias ? dbias.f32() : nullptr, dout.f32(), inp.f32(),
                       weight.f32(), B, I, O, true);
    expect(b, c, "dinp", dinp, kReduction, "dinp (accumulate=true run)");
    std::vector<float> ww = c.f32("dweight");
    for (size_t i = 0; i < ww.size(); ++i) ww[i] += prev_w[i];
    check("dweight (accumulate=true)", download(b, dweight), ww, kReduction.atol, kReduction.rtol);
    if (has_bias) {
      std::vector<float> wb = c.f32("dbias");
      for (size_t i = 0; i < wb.size(); ++i) wb[i] += prev_b[i];
      check("dbias (accumulate=true)", download(b, dbias), wb, kReduction.atol, kReduction.rtol);
    }
  }
  {  // dinp == null: the first layer needs no input gradient
    Tensor dweight = poisoned(b, c.shape("dweight"));
    Tensor dbias = has_bias ? poisoned(b, {O}) : Tensor();
    b->linear_backward(nullptr, dweight.f32(), has_bias ? dbias.f32() : nullptr, dout.f32(), inp.f32(),
                       weight.f32(), B, I, O, false);
    expect(b, c, "dweight", dweight, kReduction, "dweight (dinp = null)");
    if (has_bias) expect(b, c, "dbias", dbias, kReduction, "dbias (dinp = null)");
  }
  expect_unchanged(b, c, "inp", inp);
  expect_unchanged(b, c, "weight", weight);
  expect_unchanged(b, c, "dout", dout);
}

void run_byol_loss(Backend* b, const OpCase& c) {
  const int B = c.geti("B"), D = c.geti("D");
  const float dloss = c.getf("dloss");
  require_shape(c, "p", {B, D});
  Tensor p = c.upload(b, "p"), z = c.upload(b, "z");
  Tensor loss = poisoned(b, {1});
  b->byol_loss_forward(loss.f32(), p.f32(), z.f32(), B, D, false);
  expect(b, c, "loss", loss, kReduction);
  // accumulate=true adds this direction's loss to the other's (the symmetrized loss).
  const float previous = 0.8125f;
  Tensor acc = host_tensor(b, {previous}, {1});
  b->byol_loss_forward(acc.f32(), p.f32(), z.f32(), B, D, true);
  check("loss (accumulate=true)", download(b, acc), {previous + c.f32("loss")[0]}, kReduction.atol,
        kReduction.rtol);
  // Rows have norms 0.1..10, so gradients are ~1e-4..1e-2 (~1e5 on a zero row of p, where the
  // clamp makes n'(p) = 1e6): scaled absolute floor, relative bound for the large ones.
  Tensor dp = poisoned(b, c.shape("dp"));
  b->byol_loss_backward(dp.f32(), p.f32(), z.f32(), dloss, B, D);
  expect(b, c, "dp", dp, kReductionSmall);
  expect_unchanged(b, c, "p", p);
  expect_unchanged(b, c, "z", z);
}

void run_cross_entropy(Backend* b, const OpCase& c) {
  const int B = c.geti("B"), K = c.geti("K");
  const float dloss = c.getf("dloss");
  require_shape(c, "logits", {B, K});
  Tensor logits = c.upload(b, "logits"), labels = c.upload(b, "labels"), probs_ref = c.upload(b, "probs");
  Tensor loss = poisoned(b, {1}), probs = poisoned(b, c.shape("probs"));
  b->cross_entropy_forward(loss.f32(), probs.f32(), logits.f32(), labels.i32(), B, K);
  expect(b, c, "loss", loss, kReduction);
  expect(b, c, "probs", probs, {1e-7f, 1e-5f});  // probabilities in [0, 1]: exp + normalizing sum
  Tensor dlogits = poisoned(b, c.shape("dlogits"));
  b->cross_entropy_backward(dlogits.f32(), probs_ref.f32(), labels.i32(), dloss, B, K);
  // (p - onehot) * dloss / B: where p ~ 1, torch's gradient (from exp(log_softmax)) and one
  // from the saved probs differ by ~ulp(1) * dloss / B (7e-8 at B = 1): that sets the floor.
  expect(b, c, "dlogits", dlogits, {2e-7f, 1e-5f});
  expect_unchanged(b, c, "logits", logits);
}

std::vector<byol::ParamSegment> segments_of(const OpCase& c) {
  std::vector<byol::ParamSegment> segs;
  for (const JsonValue& s : c.param("segments").elements(c.what() + " segments")) {
    byol::ParamSegment seg;
    seg.offset = s.at("offset", c.what() + " segment").as_int64("segment offset");
    seg.size = s.at("size", c.what() + " segment").as_int64("segment size");
    seg.decay = s.at("decay", c.what() + " segment").as_bool("segment decay");
    segs.push_back(seg);
  }
  return segs;
}

// Optimizers: params and state updated in place, grads read-only.
void run_optimizer(Backend* b, const OpCase& c) {
  const std::string op = c.op();
  std::vector<byol::ParamSegment> segs = segments_of(c);
  Tensor params = c.upload(b, "params"), state = c.upload(b, "state"), grads = c.upload(b, "grads");
  if (op == "lars") {
    byol::LarsOptions o;
    o.lr = c.getf("lr"), o.weight_decay = c.getf("weight_decay"), o.momentum = c.getf("momentum");
    o.trust_coefficient = c.getf("trust_coefficient"), o.eps = c.getf("eps"), o.solo_learn = c.getb("solo_learn");
    b->lars_update(params.f32(), state.f32(), grads.f32(), segs.data(), static_cast<int>(segs.size()), o);
  } else if (op == "sgd") {
    byol::SgdOptions o;
    o.lr = c.getf("lr"), o.weight_decay = c.getf("weight_decay"), o.momentum = c.getf("momentum");
    o.nesterov = c.getb("nesterov");
    b->sgd_update(params.f32(), state.f32(), grads.f32(), segs.data(), static_cast<int>(segs.size()), o);
  } else {
    byol::AdamWOptions o;
    o.lr = c.getf("lr"), o.weight_decay = c.getf("weight_decay"), o.beta1 = c.getf("beta1");
    o.beta2 = c.getf("beta2"), o.eps = c.getf("eps"), o.step = c.geti("step");
    b->adamw_update(params.f32(), state.f32(), grads.f32(), segs.data(), static_cast<int>(segs.size()), o);
  }
  // Parameters ~0.2 change by ~1e-3 (weight decay by ~1e-6 of them): a tight relative bound
  // (~15 ulp) so that a decay applied to the wrong segments shows.
  expect(b, c, "params_out", params, {1e-8f, 1e-6f});
  // Momenta and first moments are ~1e-2 with elements near 0 after cancellation: the floor
  // is ~ulp of the operands. Second moments (AdamW) are sums of positive terms ~1e-6..1e-4:
  // relative bound only.
  std::vector<float> got = download(b, state), want = c.f32("state_out");
  if (op == "adamw") {
    const size_t n = want.size() / 2;
    check("state_out exp_avg", got.data(), want.data(), n, 1e-9f, 1e-5f);
    check("state_out exp_avg_sq", got.data() + n, want.data() + n, n, 1e-13f, 1e-5f);
  } else {
    check("state_out momentum", got, want, 1e-9f, 1e-5f);
  }
  expect_unchanged(b, c, "grads", grads);
}

const std::map<std::string, void (*)(Backend*, const OpCase&)>& op_table() {
  static const std::map<std::string, void (*)(Backend*, const OpCase&)> table = {
      {"conv2d", run_conv2d},       {"batchnorm", run_batchnorm},   {"relu", run_relu},
      {"add", run_add},             {"ema", run_ema},               {"maxpool", run_maxpool},
      {"avgpool", run_avgpool},     {"linear", run_linear},         {"byol_loss", run_byol_loss},
      {"cross_entropy", run_cross_entropy},                         {"lars", run_optimizer},
      {"sgd", run_optimizer},       {"adamw", run_optimizer},
  };
  return table;
}

// Memory primitives every other case relies on: odd sizes, offsets, fill, copy.
void run_memory(Backend* b) {
  const size_t n = 1037;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(i) * 0.25f - 100.0f;
  float* a = static_cast<float*>(b->alloc(n * sizeof(float)));
  float* d = static_cast<float*>(b->alloc(n * sizeof(float)));
  std::vector<float> back(n, 0.0f);
  try {
    b->upload(a, host.data(), n * sizeof(float));
    b->download(back.data(), a, n * sizeof(float));
    check("upload/download round trip", back, host, 0, 0);
    b->fill(d, 3.5f, n);
    b->copy(d + 1, a + 2, 500 * sizeof(float));  // unaligned sub-ranges
    b->synchronize();
    b->download(back.data(), d, n * sizeof(float));
    std::vector<float> want(n, 3.5f);
    for (size_t i = 0; i < 500; ++i) want[1 + i] = host[2 + i];
    check("fill + copy of a sub-range", back, want, 0, 0);
  } catch (...) {
    b->release(a);
    b->release(d);
    throw;
  }
  b->release(a);
  b->release(d);
}

GeneratorRegistrar generate_op_cases([](Context& ctx, const std::vector<BackendSlot>& slots,
                                        std::vector<TestCase>& out) {
  // Called per backend slot: skip when the backend is missing (CUDA without a GPU), fail when
  // it must exist (CPU).
  auto guard = [](const BackendSlot& slot) {
    if (slot.backend) return;
    if (slot.fail_if_missing) throw byol::Error(slot.unavailable);
    skip(slot.unavailable.substr(0, slot.unavailable.find('\n')));
  };
  for (const BackendSlot& slot : slots)
    out.push_back({"backend/memory@" + slot.name, [slot, guard](Context&) {
                     guard(slot);
                     run_memory(slot.backend);
                   }});

  const std::string path = ctx.fixtures_dir + "/" + kFixtureFile;
  std::shared_ptr<const byol::SafeTensorsFile> file;
  try {
    file = std::make_shared<const byol::SafeTensorsFile>(byol::SafeTensorsFile::read(path));
  } catch (const std::exception& e) {
    std::string msg = std::string(e.what()) + " (regenerate with: PYTHONPATH=/root/.cache/byol/py python3 "
                                              "tools/gen_fixtures.py, or pass --fixtures DIR)";
    out.push_back({"ops/fixtures", [msg](Context&) { throw byol::Error(msg); }});
    return;
  }
  const std::string prefix = "case:";
  for (const auto& [key, value] : file->metadata()) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string name = key.substr(prefix.size());
    for (const BackendSlot& slot : slots) {
      out.push_back({"ops/" + name + "@" + slot.name, [file, name, value, slot, guard](Context&) {
                       guard(slot);
                       OpCase c(file, name, byol::parse_json(value, "metadata of fixture case '" + name + "'"));
                       const std::string op = c.op();
                       auto it = op_table().find(op);
                       BYOL_CHECK(it != op_table().end(), c.what(), ": no handler for op '", op,
                                  "' in native/tests/test_ops.cc (add one to op_table)");
                       it->second(slot.backend, c);
                     }});
      // The CPU backend's convolutions once more through im2col + SGEMM (conv_gemm.cc), which
      // the automatic rule picks only for some shapes and only below AVX-512.
      if (slot.name == "cpu" && name.rfind("conv2d", 0) == 0)
        out.push_back({"ops/" + name + "@cpu-gemm", [file, name, value](Context&) {
                         static byol::cpu::CpuBackend gemm(0);
                         gemm.set_conv_algorithm(byol::cpu::ConvAlgorithm::gemm);
                         OpCase c(file, name, byol::parse_json(value, "metadata of fixture case '" + name + "'"));
                         BYOL_CHECK(c.op() == "conv2d", c.what(), ": expected op conv2d");
                         run_conv2d(&gemm, c);
                       }});
    }
  }
});


// ---------------------------------------------------------------------------------------
// Self-test of the op table: a backend that forwards to the CPU backend but carries one
// plausible bug at a time. Every bug must make at least one check of its op's cases fail;
// the bug-free wrapper must pass them all. This is what shows the tolerances are tight
// enough and the accumulate/alias/poison checks actually bite.
enum class Bug {
  none,
  conv_wgrad_ignores_accumulate,
  conv_dgrad_skips_last_element,
  bn_momentum_reversed,
  bn_eps_ignored,
  bn_eval_uses_batch_stats,
  bn_bwd_ignores_accumulate,
  relu_mask_from_dout,
  add_breaks_alias_b,
  maxpool_argmax_in_padded_coords,
  avgpool_bwd_no_divide,
  linear_ignores_bias,
  linear_dbias_overwrites,
  byol_loss_ignores_accumulate,
  byol_grad_ignores_dloss,
  ce_grad_sum_not_mean,
  ema_tau_swapped,
  lars_decays_every_segment,
  sgd_ignores_nesterov,
  adamw_step_off_by_one,
};

struct BugInfo {
  Bug bug;
  const char* name;
  const char* op;  // fixture op whose cases must catch it
};
const BugInfo kBugs[] = {
    {Bug::conv_wgrad_ignores_accumulate, "conv2d dweight ignores accumulate", "conv2d"},
    {Bug::conv_dgrad_skips_last_element, "conv2d dinp leaves its last element unwritten", "conv2d"},
    {Bug::bn_momentum_reversed, "batchnorm momentum applied as 1 - m", "batchnorm"},
    {Bug::bn_eps_ignored, "batchnorm without eps", "batchnorm"},
    {Bug::bn_eval_uses_batch_stats, "batchnorm eval uses batch statistics", "batchnorm"},
    {Bug::bn_bwd_ignores_accumulate, "batchnorm dgamma/dbeta ignore accumulate", "batchnorm"},
    {Bug::relu_mask_from_dout, "relu backward masks by dout", "relu"},
    {Bug::add_breaks_alias_b, "add(out = b) computes 2a", "add"},
    {Bug::maxpool_argmax_in_padded_coords, "maxpool argmax in padded coordinates", "maxpool"},
    {Bug::avgpool_bwd_no_divide, "avgpool backward without 1/HW", "avgpool"},
    {Bug::linear_ignores_bias, "linear forward drops the bias", "linear"},
    {Bug::linear_dbias_overwrites, "linear dbias overwritten under accumulate", "linear"},
    {Bug::byol_loss_ignores_accumulate, "byol loss ignores accumulate", "byol_loss"},
    {Bug::byol_grad_ignores_dloss, "byol loss backward ignores dloss", "byol_loss"},
    {Bug::ce_grad_sum_not_mean, "cross-entropy gradient summed, not averaged", "cross_entropy"},
    {Bug::ema_tau_swapped, "ema with tau and 1 - tau swapped", "ema"},
    {Bug::lars_decays_every_segment, "lars decays biases and BN parameters", "lars"},
    {Bug::sgd_ignores_nesterov, "sgd ignores nesterov", "sgd"},
    {Bug::adamw_step_off_by_one, "adamw bias correction one step off", "adamw"},
};

class BrokenBackend : public Backend {
 public:
  BrokenBackend(Backend* inner, Bug bug) : in_(inner), bug_(bug) {}
  byol::DeviceType type() const override { return in_->type(); }
  std::string describe() const override { return "broken(" + in_->describe() + ")"; }
  void* alloc(size_t bytes) override { return in_->alloc(bytes); }
  void release(void* p) override { in_->release(p); }
  void upload(void* d, const void* s, size_t n) override { in_->upload(d, s, n); }
  void download(void* d, const void* s, size_t n) override { in_->download(d, s, n); }
  void copy(void* d, const void* s, size_t n) override { in_->copy(d, s, n); }
  void fill(float* d, float v, size_t n) override { in_->fill(d, v, n); }
  void synchronize() override { in_->synchronize(); }

  void conv2d_forward(float* out, const float* inp, const float* w, const byol::ConvShape& s) override {
    in_->conv2d_forward(out, inp, w, s);
  }
  void conv2d_backward_data(float* dinp, const float* dout, const float* w, const byol::ConvShape& s) override {
    if (bug_ != Bug::conv_dgrad_skips_last_element) return in_->conv2d_backward_data(dinp, dout, w, s);
    size_t n = size_t(s.N) * s.H * s.W * s.C;
    Tensor tmp(in_, {int64_t(n)}, DType::f32);
    in_->conv2d_backward_data(tmp.f32(), dout, w, s);
    in_->copy(dinp, tmp.f32(), (n - 1) * sizeof(float));
  }
  void conv2d_backward_weight(float* dw, const float* dout, const float* inp, const byol::ConvShape& s,
                              bool acc) override {
    in_->conv2d_backward_weight(dw, dout, inp, s, bug_ == Bug::conv_wgrad_ignores_accumulate ? false : acc);
  }
  void batchnorm_forward_train(float* out, float* sm, float* sr, float* rm, float* rv, const float* inp,
                               const float* g, const float* b, int M, int C, float mom, float eps,
                               const byol::BnEpilogue& ep) override {
    in_->batchnorm_forward_train(out, sm, sr, rm, rv, inp, g, b, M, C,
                                 bug_ == Bug::bn_momentum_reversed ? 1.0f - mom : mom,
                                 bug_ == Bug::bn_eps_ignored ? 0.0f : eps, ep);
  }
  void batchnorm_forward_eval(float* out, const float* inp, const float* g, const float* b, const float* rm,
                              const float* rv, int M, int C, float eps, const byol::BnEpilogue& ep) override {
    if (bug_ != Bug::bn_eval_uses_batch_stats) return in_->batchnorm_forward_eval(out, inp, g, b, rm, rv, M, C, eps, ep);
    Tensor sm(in_, {C}, DType::f32), sr(in_, {C}, DType::f32);
    in_->batchnorm_forward_train(out, sm.f32(), sr.f32(), nullptr, nullptr, inp, g, b, M, C, 0.1f, eps, ep);
  }
  void batchnorm_backward(float* dinp, float* dg, float* db, const float* dout, const float* inp, const float* sm,
                          const float* sr, const float* g, int M, int C, bool acc, const float* relu_out) override {
    in_->batchnorm_backward(dinp, dg, db, dout, inp, sm, sr, g, M, C,
                            bug_ == Bug::bn_bwd_ignores_accumulate ? false : acc, relu_out);
  }
  void relu_forward(float* out, const float* inp, size_t n) override { in_->relu_forward(out, inp, n); }
  void relu_backward(float* dinp, const float* dout, const float* out, size_t n) override {
    in_->relu_backward(dinp, dout, bug_ == Bug::relu_mask_from_dout ? dout : out, n);
  }
  void add(float* out, const float* a, const float* b, size_t n) override {
    if (bug_ != Bug::add_breaks_alias_b) return in_->add(out, a, b, n);
    if (out != a) in_->copy(out, a, n * sizeof(float));
    in_->accumulate(out, b, n);
  }
  void accumulate(float* dst, const float* src, size_t n) override { in_->accumulate(dst, src, n); }
  void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const byol::PoolShape& s) override {
    in_->maxpool2d_forward(out, argmax, inp, s);
    if (bug_ != Bug::maxpool_argmax_in_padded_coords) return;
    std::vector<int32_t> idx(size_t(s.N) * s.P() * s.Q() * s.C);
    in_->download(idx.data(), argmax, idx.size() * 4);
    for (int32_t& i : idx) i = (i / s.W + s.pad) * (s.W + 2 * s.pad) + i % s.W + s.pad;
    in_->upload(argmax, idx.data(), idx.size() * 4);
  }
  void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const byol::PoolShape& s) override {
    in_->maxpool2d_backward(dinp, dout, argmax, s);
  }
  void avgpool_forward(float* out, const float* inp, int N, int HW, int C) override {
    in_->avgpool_forward(out, inp, N, HW, C);
  }
  void avgpool_backward(float* dinp, const float* dout, int N, int HW, int C) override {
    in_->avgpool_backward(dinp, dout, N, HW, C);
    if (bug_ != Bug::avgpool_bwd_no_divide) return;
    std::vector<float> v(size_t(N) * HW * C);
    in_->download(v.data(), dinp, v.size() * 4);
    for (float& x : v) x *= static_cast<float>(HW);
    in_->upload(dinp, v.data(), v.size() * 4);
  }
  void linear_forward(float* out, const float* inp, const float* w, const float* bias, int B, int I, int O) override {
    in_->linear_forward(out, inp, w, bug_ == Bug::linear_ignores_bias ? nullptr : bias, B, I, O);
  }
  void linear_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w, int B,
                       int I, int O, bool acc) override {
    if (!(bug_ == Bug::linear_dbias_overwrites && acc && db))
      return in_->linear_backward(dinp, dw, db, dout, inp, w, B, I, O, acc);
    Tensor fresh = Tensor::zeros(in_, {O});
    in_->linear_backward(dinp, dw, fresh.f32(), dout, inp, w, B, I, O, true);
    in_->copy(db, fresh.f32(), size_t(O) * sizeof(float));
  }
  void byol_loss_forward(float* loss, const float* p, const float* z, int B, int D, bool acc) override {
    in_->byol_loss_forward(loss, p, z, B, D, bug_ == Bug::byol_loss_ignores_accumulate ? false : acc);
  }
  void byol_loss_backward(float* dp, const float* p, const float* z, float dloss, int B, int D) override {
    in_->byol_loss_backward(dp, p, z, bug_ == Bug::byol_grad_ignores_dloss ? 1.0f : dloss, B, D);
  }
  void cross_entropy_forward(float* loss, float* probs, const float* logits, const int32_t* labels, int B,
                             int K) override {
    in_->cross_entropy_forward(loss, probs, logits, labels, B, K);
  }
  void cross_entropy_backward(float* dl, const float* probs, const int32_t* labels, float dloss, int B,
                              int K) override {
    in_->cross_entropy_backward(dl, probs, labels, bug_ == Bug::ce_grad_sum_not_mean ? dloss * B : dloss, B, K);
  }
  // The model passes tau, lr and AdamW's bias corrections in memory (host memory here: this
  // wraps the CPU backend); a bug that changes them reads them and passes host values instead.
  void ema_update(float* t, const float* o, size_t n, float tau, const float* tau_device) override {
    if (bug_ != Bug::ema_tau_swapped) return in_->ema_update(t, o, n, tau, tau_device);
    if (tau_device) tau = *tau_device;
    in_->ema_update(t, o, n, 1.0f - tau, nullptr);
  }
  void lars_update(float* p, float* m, const float* g, const byol::ParamSegment* segs, int ns,
                   const byol::LarsOptions& o) override {
    std::vector<byol::ParamSegment> s(segs, segs + ns);
    if (bug_ == Bug::lars_decays_every_segment)
      for (auto& x : s) x.decay = true;
    in_->lars_update(p, m, g, s.data(), ns, o);
  }
  void sgd_update(float* p, float* m, const float* g, const byol::ParamSegment* segs, int ns,
                  const byol::SgdOptions& o) override {
    byol::SgdOptions oo = o;
    if (bug_ == Bug::sgd_ignores_nesterov) oo.nesterov = false;
    in_->sgd_update(p, m, g, segs, ns, oo);
  }
  void adamw_update(float* p, float* st, const float* g, const byol::ParamSegment* segs, int ns,
                    const byol::AdamWOptions& o) override {
    byol::AdamWOptions oo = o;
    if (bug_ == Bug::adamw_step_off_by_one) {
      if (oo.lr_device) oo.lr = *oo.lr_device;
      oo.lr_device = oo.bias_device = nullptr;  // the bias corrections from `step` instead
      oo.step += 1;
    }
    in_->adamw_update(p, st, g, segs, ns, oo);
  }

 private:
  Backend* in_;
  Bug bug_;
};

// Failed checks of every fixture case of `op` (all cases when op is empty) on `backend`.
// Ops the backend does not support are not failures; their names go to `unsupported`.
int failures_on(Backend* backend, const std::shared_ptr<const byol::SafeTensorsFile>& file, const std::string& op,
                std::string* first_log, std::set<std::string>* unsupported) {
  int total = 0;
  for (const auto& [key, value] : file->metadata()) {
    if (key.rfind("case:", 0) != 0) continue;
    OpCase c(file, key.substr(5), byol::parse_json(value, key));
    if (!op.empty() && c.op() != op) continue;
    std::string log;
    int f = run_nested(
        [&] {
          try {
            op_table().at(c.op())(backend, c);
          } catch (const byol::NotSupported&) {
            unsupported->insert(c.op());
          }
        },
        &log);
    if (f > 0 && first_log && first_log->empty()) *first_log = c.name() + ":\n" + log;
    total += f;
  }
  return total;
}

BYOL_TEST("ops/self_test/broken_backends_are_caught", ctx) {
  if (!ctx.cpu) skip("needs the CPU backend");
  auto file = std::make_shared<const byol::SafeTensorsFile>(
      byol::SafeTensorsFile::read(ctx.fixtures_dir + "/" + kFixtureFile));
  // The wrapper without a bug must be invisible; otherwise "caught" below means nothing.
  BrokenBackend clean(ctx.cpu, Bug::none);
  std::string log;
  std::set<std::string> unsupported;
  int clean_failures = failures_on(&clean, file, "", &log, &unsupported);
  // A failing op (a CPU bug) already fails its own cases; here it would only blur the question.
  expect_true(clean_failures == 0, "bug-free wrapper passes every case",
              std::to_string(clean_failures) + " failed checks; first: " + log);
  for (const BugInfo& info : kBugs) {
    if (unsupported.count(info.op)) {
      log_line(std::string("  not checked: ") + info.name + " (the CPU backend does not support " + info.op + ")");
      continue;
    }
    BrokenBackend broken(ctx.cpu, info.bug);
    int f = failures_on(&broken, file, info.op, nullptr, &unsupported);
    expect_true(f > 0, std::string("caught: ") + info.name, std::to_string(f) + " failed checks in " + info.op + " cases");
  }
}
}  // namespace
}  // namespace byol_test
