// tensor.cc: Tensor and Storage (see byol/tensor.h).
#include "byol/tensor.h"

#include <sstream>

namespace byol {

const char* device_name(DeviceType d) {
  switch (d) {
    case DeviceType::cpu: return "cpu";
    case DeviceType::cuda: return "cuda";
  }
  return "unknown";
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "float32";
    case DType::i32: return "int32";
    case DType::u8: return "uint8";
    case DType::i64: return "int64";
  }
  return "unknown";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::f32: return 4;
    case DType::i32: return 4;
    case DType::u8: return 1;
    case DType::i64: return 8;
  }
  return 0;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

Storage::Storage(Backend* backend, size_t bytes) : backend_(backend), data_(nullptr), bytes_(bytes) {
  BYOL_CHECK(backend != nullptr, "Storage: backend is null");
  // Zero-byte tensors are legal (a dim of 0); they own no memory.
  if (bytes > 0) data_ = backend->alloc(bytes);
}

Storage::~Storage() {
  if (data_) backend_->release(data_);
}

Tensor::Tensor(Backend* backend, std::vector<int64_t> shape, DType dtype)
    : shape_(std::move(shape)), dtype_(dtype) {
  for (size_t i = 0; i < shape_.size(); ++i)
    BYOL_CHECK(shape_[i] >= 0, "Tensor: expected dimension ", i, " of shape ", shape_string(shape_),
               " to be >= 0 but received ", shape_[i]);
  storage_ = std::make_shared<Storage>(backend, nbytes());
}

Tensor Tensor::zeros(Backend* backend, std::vector<int64_t> shape, DType dtype) {
  Tensor t(backend, std::move(shape), dtype);
  if (t.nbytes() == 0) return t;
  if (dtype == DType::f32) {
    backend->fill(t.f32(), 0.0f, static_cast<size_t>(t.numel()));
  } else {
    std::vector<uint8_t> zero(t.nbytes(), 0);
    backend->upload(t.raw(), zero.data(), zero.size());
  }
  return t;
}

Tensor Tensor::from_host(Backend* backend, const void* host, std::vector<int64_t> shape, DType dtype) {
  Tensor t(backend, std::move(shape), dtype);
  if (t.nbytes() > 0) backend->upload(t.raw(), host, t.nbytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  int j = i < 0 ? i + n : i;
  BYOL_CHECK(j >= 0 && j < n, "Tensor::dim: index ", i, " out of range for shape ", shape_string(shape_));
  return shape_[j];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

DeviceType Tensor::device() const {
  BYOL_CHECK(defined(), "Tensor::device: tensor is empty");
  return backend()->type();
}

float* Tensor::f32() const {
  BYOL_CHECK(dtype_ == DType::f32, "expected a float32 tensor but it is ", dtype_name(dtype_));
  return static_cast<float*>(raw());
}
int32_t* Tensor::i32() const {
  BYOL_CHECK(dtype_ == DType::i32, "expected an int32 tensor but it is ", dtype_name(dtype_));
  return static_cast<int32_t*>(raw());
}
uint8_t* Tensor::u8() const {
  BYOL_CHECK(dtype_ == DType::u8, "expected a uint8 tensor but it is ", dtype_name(dtype_));
  return static_cast<uint8_t*>(raw());
}

void Tensor::to_host(void* host_dst) const {
  BYOL_CHECK(defined(), "Tensor::to_host: tensor is empty");
  if (nbytes() > 0) backend()->download(host_dst, raw(), nbytes());
}

std::vector<float> Tensor::to_vector_f32() const {
  std::vector<float> v(static_cast<size_t>(numel()));
  (void)f32();
  to_host(v.data());
  return v;
}

Tensor Tensor::clone() const {
  BYOL_CHECK(defined(), "Tensor::clone: tensor is empty");
  Tensor t(backend(), shape_, dtype_);
  if (nbytes() > 0) backend()->copy(t.raw(), raw(), nbytes());
  return t;
}

Tensor Tensor::to(Backend* target) const {
  BYOL_CHECK(defined(), "Tensor::to: tensor is empty");
  if (target == backend()) return *this;
  std::vector<uint8_t> host(nbytes());
  to_host(host.data());
  return from_host(target, host.data(), shape_, dtype_);
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype_;
  t.storage_ = storage_;
  BYOL_CHECK(t.numel() == numel(), "Tensor::reshape: cannot view shape ", shape_string(shape_),
             " as ", shape_string(t.shape_), " (", numel(), " vs ", t.numel(), " elements)");
  return t;
}

}  // namespace byol
