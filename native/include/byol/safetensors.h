// safetensors.h: reads and writes the safetensors format (weights interchange with PyTorch,
// checkpoints, test fixtures), plus the small JSON reader its header needs.
// Contract: a file is fully validated on read (header JSON, dtypes, shapes against byte
// counts, offsets contiguous and inside the file) and every error names the file and what is
// wrong; writes are atomic (temp file in the same folder, then rename). Little-endian hosts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "byol/tensor.h"

namespace byol {

// ---------------------------------------------------------------------------------------
// JSON (RFC 8259), enough for safetensors headers and the JSON strings kept in their
// __metadata__. Objects keep their key order; duplicate keys are an error.
class JsonValue {
 public:
  enum class Kind { null, boolean, number, string, array, object };

  JsonValue() = default;
  static JsonValue make_null() { return JsonValue(); }
  static JsonValue make_bool(bool b);
  // `text` is the number as written; it is kept so integers convert exactly.
  static JsonValue make_number(double value, std::string text);
  static JsonValue make_string(std::string s);
  static JsonValue make_array(std::vector<JsonValue> elements);
  static JsonValue make_object(std::vector<std::pair<std::string, JsonValue>> members);

  Kind kind() const { return kind_; }
  const char* kind_name() const;
  bool is_null() const { return kind_ == Kind::null; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_number() const { return kind_ == Kind::number; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }

  // Typed accessors throw byol::Error naming `what` (e.g. "conv2d case 'x': key 'N'") and
  // the kind found when the value has another type.
  bool as_bool(const std::string& what) const;
  double as_double(const std::string& what) const;
  // Exact integer: rejects fractions, exponents and values outside int64.
  int64_t as_int64(const std::string& what) const;
  int as_int(const std::string& what) const;  // also range-checked for int
  const std::string& as_string(const std::string& what) const;
  const std::vector<JsonValue>& elements(const std::string& what) const;
  const std::vector<std::pair<std::string, JsonValue>>& members(const std::string& what) const;

  // Object lookup: find returns null when absent; at throws naming `what`, the key and
  // the keys present.
  const JsonValue* find(const std::string& key) const;
  const JsonValue& at(const std::string& key, const std::string& what) const;

  // Compact serialization (strings escaped, numbers as originally written).
  std::string dump() const;

 private:
  Kind kind_ = Kind::null;
  bool bool_ = false;
  double number_ = 0;
  std::string text_;  // string value, or the number's source text
  std::vector<JsonValue> elements_;
  std::vector<std::pair<std::string, JsonValue>> members_;
};

// Parses one JSON document (surrounding whitespace allowed). `what` names the source in
// errors ("header of /path/model.safetensors"); errors give the byte offset and the cause.
JsonValue parse_json(const std::string& text, const std::string& what);
// A JSON string literal for `s` (quoted and escaped), for building headers and metadata.
std::string json_quote(const std::string& s);

// ---------------------------------------------------------------------------------------
// safetensors element types, spelled as in the header.
enum class SafeDType { BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64, F8_E4M3, F8_E5M2 };
const char* safe_dtype_name(SafeDType d);
size_t safe_dtype_size(SafeDType d);
// False when `name` is not a safetensors dtype.
bool parse_safe_dtype(const std::string& name, SafeDType* out);
SafeDType safe_dtype_of(DType d);
// False for safetensors dtypes that have no byol::DType (F16, F64, ...).
bool dtype_of_safe(SafeDType d, DType* out);

// One tensor of a file that was read. The bytes live in a buffer shared by the whole file
// (copies of a SafeTensor are cheap). They are not aligned for the element type, so the
// typed getters copy.
class SafeTensor {
 public:
  const std::string& name() const { return name_; }
  SafeDType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const;
  size_t nbytes() const { return nbytes_; }
  const uint8_t* data() const;

  // Copies of the elements; each throws naming the tensor and file unless dtype matches.
  std::vector<float> to_f32() const;
  std::vector<int32_t> to_i32() const;
  std::vector<int64_t> to_i64() const;
  std::vector<uint8_t> to_u8() const;

 private:
  friend class SafeTensorsFile;
  void expect_dtype(SafeDType want) const;
  std::string name_, path_;
  SafeDType dtype_ = SafeDType::F32;
  std::vector<int64_t> shape_;
  std::shared_ptr<const std::vector<uint8_t>> buffer_;
  size_t offset_ = 0, nbytes_ = 0;
};

class SafeTensorsFile {
 public:
  // Reads and validates a whole file. Throws byol::Error naming `path` on any problem.
  static SafeTensorsFile read(const std::string& path);
  // Parses a file image already in memory; `label` stands for the path in errors.
  static SafeTensorsFile parse(std::vector<uint8_t> bytes, const std::string& label);

  const std::string& path() const { return path_; }
  size_t size() const { return tensors_.size(); }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws naming the key, the file, and the most similar names present.
  const SafeTensor& at(const std::string& name) const;
  const std::map<std::string, SafeTensor>& tensors() const { return tensors_; }
  std::vector<std::string> names() const;  // sorted

  // __metadata__ (string -> string; empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Throws naming the key and the file when it is absent.
  const std::string& metadata_at(const std::string& key) const;

  // Up to `max` names close to `name` (shared suffix or prefix, or small edit distance),
  // best first. Used by error messages.
  std::vector<std::string> similar_names(const std::string& name, size_t max = 5) const;

 private:
  std::string path_;
  std::map<std::string, SafeTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: host memory of exactly numel(shape) * size(dtype) bytes.
struct SafeTensorSource {
  std::string name;
  SafeDType dtype = SafeDType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes `tensors` (names unique and non-empty, "__metadata__" reserved) with optional
// metadata. Data are laid out by decreasing element size (then given order) so each tensor
// is aligned for its type, as the reference implementation does; the header is padded with
// spaces to a multiple of 8 bytes. Atomic: a temp file beside `path` is renamed over it.
void write_safetensors(const std::string& path, const std::vector<SafeTensorSource>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Byte image of the file write_safetensors would write (tests, small files).
std::vector<uint8_t> serialize_safetensors(const std::vector<SafeTensorSource>& tensors,
                                           const std::map<std::string, std::string>& metadata = {});

// ---------------------------------------------------------------------------------------
// byol::Tensor helpers.

// Loads `name` (F32, I32, U8 or I64) onto `backend`. A missing name throws with the most
// similar names in the file; another dtype throws naming the one found.
Tensor load_tensor(Backend* backend, const SafeTensorsFile& file, const std::string& name);
// Same, and checks dtype and shape against what the caller (a model) expects.
Tensor load_tensor(Backend* backend, const SafeTensorsFile& file, const std::string& name,
                   DType expected_dtype, const std::vector<int64_t>& expected_shape);

// Downloads each tensor (any backend) and writes them as one file, atomically.
void save_tensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata = {});

}  // namespace byol
