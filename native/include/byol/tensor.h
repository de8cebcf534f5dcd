// tensor.h: a typed n-d array whose storage belongs to one backend's allocator.
// Contract: contiguous, row-major, shape in the core's layout (images NHWC; the addon
// converts from/to the NCHW that users see). Storage is shared between copies of a Tensor
// (shared_ptr), freed by the backend that allocated it. Copies of the data are explicit.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "byol/backend.h"

namespace byol {

enum class DType { f32 = 0, i32 = 1, u8 = 2, i64 = 3 };
const char* dtype_name(DType d);
size_t dtype_size(DType d);

std::string shape_string(const std::vector<int64_t>& shape);

// Bytes allocated from one backend; move-only RAII, frees on destruction.
class Storage {
 public:
  Storage(Backend* backend, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Backend* backend() const { return backend_; }

 private:
  Backend* backend_;
  void* data_;
  size_t bytes_;
};

class Tensor {
 public:
  Tensor() = default;
  // Allocates uninitialized storage; checks every dim is >= 0 (names the bad dim).
  Tensor(Backend* backend, std::vector<int64_t> shape, DType dtype);

  static Tensor zeros(Backend* backend, std::vector<int64_t> shape, DType dtype = DType::f32);
  // Copies host data of exactly numel() * dtype_size bytes.
  static Tensor from_host(Backend* backend, const void* host, std::vector<int64_t> shape,
                          DType dtype);

  bool defined() const { return storage_ != nullptr; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const;  // negative i counts from the end
  int ndim() const { return static_cast<int>(shape_.size()); }
  DType dtype() const { return dtype_; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  Backend* backend() const { return storage_ ? storage_->backend() : nullptr; }
  DeviceType device() const;

  void* raw() const { return storage_ ? storage_->data() : nullptr; }
  float* f32() const;      // throws unless dtype is f32
  int32_t* i32() const;    // throws unless dtype is i32
  uint8_t* u8() const;     // throws unless dtype is u8

  void to_host(void* host_dst) const;          // copies nbytes()
  std::vector<float> to_vector_f32() const;    // f32 only
  Tensor clone() const;                        // same backend, new storage
  Tensor to(Backend* backend) const;           // copy onto another backend (via host)
  // Same storage, new shape with the same numel.
  Tensor reshape(std::vector<int64_t> shape) const;

 private:
  std::vector<int64_t> shape_;
  DType dtype_ = DType::f32;
  std::shared_ptr<Storage> storage_;
};

}  // namespace byol
