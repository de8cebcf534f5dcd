// safetensors.cc: the safetensors reader/writer and the JSON reader behind it (see
// byol/safetensors.h). Validation follows the reference implementation (huggingface
// safetensors): header <= 100 MB, tensor data contiguous from offset 0 to the end of the
// file with no gap, overlap or trailing bytes, byte counts equal to numel * element size.
#include "byol/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>

#include "byol/error.h"

namespace byol {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian data; big-endian hosts are not supported");

// ============================== JSON ==============================

JsonValue JsonValue::make_bool(bool b) {
  JsonValue v;
  v.kind_ = Kind::boolean;
  v.bool_ = b;
  return v;
}
JsonValue JsonValue::make_number(double value, std::string text) {
  JsonValue v;
  v.kind_ = Kind::number;
  v.number_ = value;
  v.text_ = std::move(text);
  return v;
}
JsonValue JsonValue::make_string(std::string s) {
  JsonValue v;
  v.kind_ = Kind::string;
  v.text_ = std::move(s);
  return v;
}
JsonValue JsonValue::make_array(std::vector<JsonValue> elements) {
  JsonValue v;
  v.kind_ = Kind::array;
  v.elements_ = std::move(elements);
  return v;
}
JsonValue JsonValue::make_object(std::vector<std::pair<std::string, JsonValue>> members) {
  JsonValue v;
  v.kind_ = Kind::object;
  v.members_ = std::move(members);
  return v;
}

const char* JsonValue::kind_name() const {
  switch (kind_) {
    case Kind::null: return "null";
    case Kind::boolean: return "a boolean";
    case Kind::number: return "a number";
    case Kind::string: return "a string";
    case Kind::array: return "an array";
    case Kind::object: return "an object";
  }
  return "unknown";
}

bool JsonValue::as_bool(const std::string& what) const {
  BYOL_CHECK(is_bool(), what, ": expected a boolean but found ", kind_name());
  return bool_;
}
double JsonValue::as_double(const std::string& what) const {
  BYOL_CHECK(is_number(), what, ": expected a number but found ", kind_name());
  return number_;
}
int64_t JsonValue::as_int64(const std::string& what) const {
  BYOL_CHECK(is_number(), what, ": expected an integer but found ", kind_name());
  int64_t out = 0;
  const char* begin = text_.data();
  const char* end = begin + text_.size();
  auto [ptr, ec] = std::from_chars(begin, end, out);
  BYOL_CHECK(ec != std::errc::result_out_of_range, what, ": integer ", text_, " is out of range");
  BYOL_CHECK(ec == std::errc() && ptr == end, what, ": expected an integer but found ", text_);
  return out;
}
int JsonValue::as_int(const std::string& what) const {
  int64_t v = as_int64(what);
  BYOL_CHECK(v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max(), what,
             ": integer ", v, " does not fit in int");
  return static_cast<int>(v);
}
const std::string& JsonValue::as_string(const std::string& what) const {
  BYOL_CHECK(is_string(), what, ": expected a string but found ", kind_name());
  return text_;
}
const std::vector<JsonValue>& JsonValue::elements(const std::string& what) const {
  BYOL_CHECK(is_array(), what, ": expected an array but found ", kind_name());
  return elements_;
}
const std::vector<std::pair<std::string, JsonValue>>& JsonValue::members(const std::string& what) const {
  BYOL_CHECK(is_object(), what, ": expected an object but found ", kind_name());
  return members_;
}

const JsonValue* JsonValue::find(const std::string& key) const {
  if (!is_object()) return nullptr;
  for (const auto& m : members_)
    if (m.first == key) return &m.second;
  return nullptr;
}

const JsonValue& JsonValue::at(const std::string& key, const std::string& what) const {
  BYOL_CHECK(is_object(), what, ": expected an object but found ", kind_name());
  const JsonValue* v = find(key);
  if (!v) {
    std::ostringstream keys;
    for (size_t i = 0; i < members_.size(); ++i) keys << (i ? ", " : "") << members_[i].first;
    BYOL_FAIL(what, ": missing key '", key, "' (keys present: ",
              members_.empty() ? std::string("none") : keys.str(), ")");
  }
  return *v;
}

std::string json_quote(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through unchanged
        }
    }
  }
  out += '"';
  return out;
}

std::string JsonValue::dump() const {
  switch (kind_) {
    case Kind::null: return "null";
    case Kind::boolean: return bool_ ? "true" : "false";
    case Kind::number: return text_;
    case Kind::string: return json_quote(text_);
    case Kind::array: {
      std::string out = "[";
      for (size_t i = 0; i < elements_.size(); ++i) out += (i ? "," : "") + elements_[i].dump();
      return out + "]";
    }
    case Kind::object: {
      std::string out = "{";
      for (size_t i = 0; i < members_.size(); ++i)
        out += (i ? "," : "") + json_quote(members_[i].first) + ":" + members_[i].second.dump();
      return out + "}";
    }
  }
  return "null";
}

namespace {

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& what) : s_(text), what_(what) {}

  JsonValue parse_document() {
    skip_ws();
    JsonValue v = parse_value(0);
    skip_ws();
    if (i_ != s_.size()) fail("unexpected '" + printable(s_[i_]) + "' after the end of the document");
    return v;
  }

 private:
  // Headers nest three levels; the cap only guards the stack against hostile files.
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void fail(const std::string& why) const {
    BYOL_FAIL("bad JSON in ", what_, " at byte ", i_, ": ", why);
  }
  static std::string printable(char c) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) return std::string(1, c);
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", u);
    return buf;
  }
  bool at_end() const { return i_ >= s_.size(); }
  void skip_ws() {
    while (!at_end() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect_literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.compare(i_, n, word) != 0) fail(std::string("expected '") + word + "'");
    i_ += n;
  }

  JsonValue parse_value(int depth) {
    if (at_end()) fail("unexpected end of input, expected a value");
    if (depth > kMaxDepth) fail("nesting deeper than 64 levels");
    char c = s_[i_];
    switch (c) {
      case '{': return parse_object(depth);
      case '[': return parse_array(depth);
      case '"': return JsonValue::make_string(parse_string());
      case 't': expect_literal("true"); return JsonValue::make_bool(true);
      case 'f': expect_literal("false"); return JsonValue::make_bool(false);
      case 'n': expect_literal("null"); return JsonValue::make_null();
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        fail("unexpected '" + printable(c) + "', expected a value");
    }
  }

  JsonValue parse_object(int depth) {
    ++i_;  // '{'
    std::vector<std::pair<std::string, JsonValue>> members;
    skip_ws();
    if (!at_end() && s_[i_] == '}') {
      ++i_;
      return JsonValue::make_object(std::move(members));
    }
    for (;;) {
      skip_ws();
      if (at_end()) fail("unexpected end of input inside an object");
      if (s_[i_] != '"') fail("expected '\"' to start an object key but found '" + printable(s_[i_]) + "'");
      size_t key_at = i_;
      std::string key = parse_string();
      for (const auto& m : members)
        if (m.first == key) {
          i_ = key_at;
          fail("duplicate key " + json_quote(key));
        }
      skip_ws();
      if (at_end() || s_[i_] != ':') fail("expected ':' after object key " + json_quote(key));
      ++i_;
      skip_ws();
      JsonValue v = parse_value(depth + 1);
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (at_end()) fail("unexpected end of input inside an object");
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == '}') {
        ++i_;
        return JsonValue::make_object(std::move(members));
      }
      fail("expected ',' or '}' in an object but found '" + printable(s_[i_]) + "'");
    }
  }

  JsonValue parse_array(int depth) {
    ++i_;  // '['
    std::vector<JsonValue> elements;
    skip_ws();
    if (!at_end() && s_[i_] == ']') {
      ++i_;
      return JsonValue::make_array(std::move(elements));
    }
    for (;;) {
      skip_ws();
      elements.push_back(parse_value(depth + 1));
      skip_ws();
      if (at_end()) fail("unexpected end of input inside an array");
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == ']') {
        ++i_;
        return JsonValue::make_array(std::move(elements));
      }
      fail("expected ',' or ']' in an array but found '" + printable(s_[i_]) + "'");
    }
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t parse_hex4() {
    if (i_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_ + k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad hex digit '" + printable(c) + "' in \\u escape");
    }
    i_ += 4;
    return v;
  }

  // Copies one UTF-8 sequence starting at i_, rejecting malformed, overlong and surrogate
  // encodings (the reference reader requires a valid UTF-8 header).
  void copy_utf8_sequence(std::string& out) {
    unsigned char c0 = static_cast<unsigned char>(s_[i_]);
    int len;
    uint32_t cp;
    if (c0 >= 0xC2 && c0 <= 0xDF) { len = 2; cp = c0 & 0x1F; }
    else if (c0 >= 0xE0 && c0 <= 0xEF) { len = 3; cp = c0 & 0x0F; }
    else if (c0 >= 0xF0 && c0 <= 0xF4) { len = 4; cp = c0 & 0x07; }
    else fail("invalid UTF-8 byte " + printable(s_[i_]) + " in a string");
    if (i_ + len > s_.size()) fail("truncated UTF-8 sequence in a string");
    for (int k = 1; k < len; ++k) {
      unsigned char c = static_cast<unsigned char>(s_[i_ + k]);
      if ((c & 0xC0) != 0x80) fail("invalid UTF-8 continuation byte in a string");
      cp = (cp << 6) | (c & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      fail("invalid UTF-8 sequence in a string");
    out.append(s_, i_, len);
    i_ += len;
  }

  std::string parse_string() {
    ++i_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return out;
      }
      if (c < 0x20) fail("control character " + printable(s_[i_]) + " inside a string (must be escaped)");
      if (c >= 0x80) {
        copy_utf8_sequence(out);
        continue;
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        ++i_;
        continue;
      }
      ++i_;
      if (at_end()) fail("unterminated escape in a string");
      char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.compare(i_, 2, "\\u") != 0) fail("high surrogate not followed by a low surrogate");
            i_ += 2;
            uint32_t lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("lone low surrogate in \\u escape");
          }
          append_utf8(out, cp);
          break;
        }
        default: --i_; fail("unknown escape '\\" + printable(e) + "'");
      }
    }
  }

  JsonValue parse_number() {
    size_t start = i_;
    if (s_[i_] == '-') ++i_;
    auto digits = [&]() {
      size_t d = i_;
      while (!at_end() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ - d;
    };
    if (at_end()) fail("truncated number");
    if (s_[i_] == '0') {
      ++i_;
      if (!at_end() && s_[i_] >= '0' && s_[i_] <= '9') fail("leading zero in a number");
    } else if (digits() == 0) {
      fail("expected a digit");
    }
    if (!at_end() && s_[i_] == '.') {
      ++i_;
      if (digits() == 0) fail("expected a digit after '.'");
    }
    if (!at_end() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (!at_end() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (digits() == 0) fail("expected a digit in the exponent");
    }
    std::string text = s_.substr(start, i_ - start);
    double value = 0;
    // from_chars is locale-independent (strtod would honour a ',' decimal locale).
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr != text.data() + text.size()) {
      i_ = start;
      fail(ec == std::errc::result_out_of_range ? "number " + text + " is out of double range"
                                                : "malformed number " + text);
    }
    return JsonValue::make_number(value, std::move(text));
  }

  const std::string& s_;
  const std::string& what_;
  size_t i_ = 0;
};

}  // namespace

JsonValue parse_json(const std::string& text, const std::string& what) {
  return JsonParser(text, what).parse_document();
}

// ============================== dtypes ==============================

namespace {
struct SafeDTypeInfo {
  SafeDType dtype;
  const char* name;
  size_t size;
};
constexpr SafeDTypeInfo kSafeDTypes[] = {
    {SafeDType::BOOL, "BOOL", 1},       {SafeDType::U8, "U8", 1},     {SafeDType::I8, "I8", 1},
    {SafeDType::U16, "U16", 2},         {SafeDType::I16, "I16", 2},   {SafeDType::F16, "F16", 2},
    {SafeDType::BF16, "BF16", 2},       {SafeDType::U32, "U32", 4},   {SafeDType::I32, "I32", 4},
    {SafeDType::F32, "F32", 4},         {SafeDType::U64, "U64", 8},   {SafeDType::I64, "I64", 8},
    {SafeDType::F64, "F64", 8},         {SafeDType::F8_E4M3, "F8_E4M3", 1},
    {SafeDType::F8_E5M2, "F8_E5M2", 1},
};

const SafeDTypeInfo& info_of(SafeDType d) {
  for (const auto& i : kSafeDTypes)
    if (i.dtype == d) return i;
  BYOL_FAIL("safetensors: invalid SafeDType value ", static_cast<int>(d));
}

std::string known_dtype_list() {
  std::string s;
  for (const auto& i : kSafeDTypes) s += (s.empty() ? "" : ", ") + std::string(i.name);
  return s;
}
}  // namespace

const char* safe_dtype_name(SafeDType d) { return info_of(d).name; }
size_t safe_dtype_size(SafeDType d) { return info_of(d).size; }

bool parse_safe_dtype(const std::string& name, SafeDType* out) {
  for (const auto& i : kSafeDTypes)
    if (name == i.name) {
      *out = i.dtype;
      return true;
    }
  return false;
}

SafeDType safe_dtype_of(DType d) {
  switch (d) {
    case DType::f32: return SafeDType::F32;
    case DType::i32: return SafeDType::I32;
    case DType::u8: return SafeDType::U8;
    case DType::i64: return SafeDType::I64;
  }
  BYOL_FAIL("safetensors: invalid DType value ", static_cast<int>(d));
}

bool dtype_of_safe(SafeDType d, DType* out) {
  switch (d) {
    case SafeDType::F32: *out = DType::f32; return true;
    case SafeDType::I32: *out = DType::i32; return true;
    case SafeDType::U8: *out = DType::u8; return true;
    case SafeDType::I64: *out = DType::i64; return true;
    default: return false;
  }
}

// ============================== reading ==============================

int64_t SafeTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

const uint8_t* SafeTensor::data() const {
  return buffer_ ? buffer_->data() + offset_ : nullptr;
}

void SafeTensor::expect_dtype(SafeDType want) const {
  BYOL_CHECK(dtype_ == want, "tensor '", name_, "' in ", path_, ": expected dtype ",
             safe_dtype_name(want), " but the file has ", safe_dtype_name(dtype_));
}

template <typename T>
static std::vector<T> copy_elements(const SafeTensor& t) {
  std::vector<T> out(t.nbytes() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), t.data(), t.nbytes());
  return out;
}

std::vector<float> SafeTensor::to_f32() const {
  expect_dtype(SafeDType::F32);
  return copy_elements<float>(*this);
}
std::vector<int32_t> SafeTensor::to_i32() const {
  expect_dtype(SafeDType::I32);
  return copy_elements<int32_t>(*this);
}
std::vector<int64_t> SafeTensor::to_i64() const {
  expect_dtype(SafeDType::I64);
  return copy_elements<int64_t>(*this);
}
std::vector<uint8_t> SafeTensor::to_u8() const {
  expect_dtype(SafeDType::U8);
  return copy_elements<uint8_t>(*this);
}

namespace {

// The reference implementation's limit; a larger "length" means this is not a safetensors
// file (or a corrupted one), and refusing early avoids a giant allocation.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

// numel * element size, or false on overflow.
bool byte_count(const std::vector<int64_t>& shape, size_t elem, uint64_t* out) {
  unsigned __int128 n = elem;
  for (int64_t d : shape) {
    n *= static_cast<uint64_t>(d);
    if (n > std::numeric_limits<uint64_t>::max()) return false;
  }
  *out = static_cast<uint64_t>(n);
  return true;
}

std::string offsets_string(uint64_t b, uint64_t e) {
  return "[" + std::to_string(b) + ", " + std::to_string(e) + "]";
}

struct Entry {
  std::string name;
  SafeDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

}  // namespace

SafeTensorsFile SafeTensorsFile::parse(std::vector<uint8_t> bytes, const std::string& label) {
  SafeTensorsFile file;
  file.path_ = label;
  const size_t size = bytes.size();
  BYOL_CHECK(size >= 8, "safetensors file ", label, " is ", size,
             " bytes, shorter than its 8-byte header length: truncated or not a safetensors file");
  const uint64_t header_len = read_le64(bytes.data());
  BYOL_CHECK(header_len <= kMaxHeaderBytes, "safetensors file ", label, ": header length ", header_len,
             " exceeds the 100 MB limit: not a safetensors file or corrupted");
  BYOL_CHECK(header_len <= size - 8, "safetensors file ", label, " is truncated: the header length says ",
             header_len, " bytes but only ", size - 8, " follow the length field");
  BYOL_CHECK(header_len >= 2, "safetensors file ", label, ": header length ", header_len,
             " is too short for a JSON object");

  const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, header_len);
  const std::string what = "header of safetensors file " + label;
  BYOL_CHECK(header[0] == '{', "safetensors file ", label,
             ": the header does not start with '{': not a safetensors file or corrupted");
  const JsonValue root = parse_json(header, what);
  BYOL_CHECK(root.is_object(), what, ": expected a JSON object but found ", root.kind_name());

  const uint64_t data_size = size - 8 - header_len;
  std::vector<Entry> entries;
  for (const auto& [name, value] : root.members(what)) {
    if (name == "__metadata__") {
      const std::string mwhat = what + ": __metadata__";
      for (const auto& [key, v] : value.members(mwhat))
        file.metadata_[key] = v.as_string(mwhat + " value of '" + key + "'");
      continue;
    }
    const std::string twhat = what + ": tensor '" + name + "'";
    BYOL_CHECK(!name.empty(), what, ": a tensor has an empty name");
    BYOL_CHECK(value.is_object(), twhat, ": expected an object {dtype, shape, data_offsets} but found ",
               value.kind_name());
    Entry e;
    e.name = name;
    const std::string& dtype_name = value.at("dtype", twhat).as_string(twhat + " dtype");
    BYOL_CHECK(parse_safe_dtype(dtype_name, &e.dtype), twhat, ": unknown dtype '", dtype_name,
               "' (expected one of ", known_dtype_list(), ")");
    for (const JsonValue& d : value.at("shape", twhat).elements(twhat + " shape")) {
      int64_t v = d.as_int64(twhat + " shape entry");
      BYOL_CHECK(v >= 0, twhat, ": negative dimension ", v, " in shape");
      e.shape.push_back(v);
    }
    const auto& offs = value.at("data_offsets", twhat).elements(twhat + " data_offsets");
    BYOL_CHECK(offs.size() == 2, twhat, ": data_offsets must be [begin, end] but has ", offs.size(),
               " entries");
    int64_t b = offs[0].as_int64(twhat + " data_offsets begin");
    int64_t en = offs[1].as_int64(twhat + " data_offsets end");
    BYOL_CHECK(b >= 0 && en >= b, twhat, ": invalid data_offsets ", "[", b, ", ", en,
               "] (expected 0 <= begin <= end)");
    e.begin = static_cast<uint64_t>(b);
    e.end = static_cast<uint64_t>(en);
    BYOL_CHECK(e.end <= data_size, "safetensors file ", label, " is truncated: tensor '", name,
               "' data_offsets ", offsets_string(e.begin, e.end), " run past the end of the data (",
               data_size, " bytes after the header)");
    uint64_t want = 0;
    BYOL_CHECK(byte_count(e.shape, safe_dtype_size(e.dtype), &want), twhat, ": shape ",
               shape_string(e.shape), " overflows");
    BYOL_CHECK(want == e.end - e.begin, twhat, ": shape ", shape_string(e.shape), " of dtype ",
               dtype_name, " needs ", want, " bytes but data_offsets ", offsets_string(e.begin, e.end),
               " hold ", e.end - e.begin);
    entries.push_back(std::move(e));
  }

  // Data must tile [0, data_size) exactly: a gap or an overlap means a damaged header, and
  // trailing bytes mean the header lost entries (both are refused by the reference reader).
  std::vector<size_t> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return entries[a].begin != entries[b].begin ? entries[a].begin < entries[b].begin
                                                : entries[a].end < entries[b].end;
  });
  uint64_t expected = 0;
  const Entry* prev = nullptr;
  for (size_t idx : order) {
    const Entry& e = entries[idx];
    if (e.begin < expected)
      BYOL_FAIL(what, ": tensor '", e.name, "' data_offsets ", offsets_string(e.begin, e.end),
                " overlap tensor '", prev->name, "' ", offsets_string(prev->begin, prev->end));
    if (e.begin > expected)
      BYOL_FAIL(what, ": ", e.begin - expected, " bytes before tensor '", e.name, "' (data_offsets ",
                offsets_string(e.begin, e.end), ") belong to no tensor",
                prev ? " (previous tensor '" + prev->name + "' ends at " + std::to_string(prev->end) + ")"
                     : std::string(" (the first tensor must start at 0)"));
    expected = e.end;
    prev = &e;
  }
  BYOL_CHECK(expected == data_size, "safetensors file ", label, ": ", data_size - expected,
             " bytes after the last tensor's data belong to no tensor (tensors end at ", expected,
             ", data is ", data_size, " bytes)");

  const size_t data_start = 8 + static_cast<size_t>(header_len);
  auto buffer = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  for (Entry& e : entries) {
    SafeTensor t;
    t.name_ = e.name;
    t.path_ = label;
    t.dtype_ = e.dtype;
    t.shape_ = std::move(e.shape);
    t.buffer_ = buffer;
    t.offset_ = data_start + static_cast<size_t>(e.begin);
    t.nbytes_ = static_cast<size_t>(e.end - e.begin);
    file.tensors_.emplace(e.name, std::move(t));
  }
  return file;
}

SafeTensorsFile SafeTensorsFile::read(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    BYOL_FAIL("cannot open safetensors file ", path, ": ", std::strerror(errno));
  BYOL_CHECK(S_ISREG(st.st_mode), "cannot read safetensors file ", path, ": not a regular file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) BYOL_FAIL("cannot open safetensors file ", path, ": ", std::strerror(errno));
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), f);
  int read_errno = std::ferror(f) ? errno : 0;
  std::fclose(f);
  BYOL_CHECK(read_errno == 0, "error reading safetensors file ", path, ": ", std::strerror(read_errno));
  // The file shrank between stat and read: parse what is there, which reports truncation.
  bytes.resize(got);
  return parse(std::move(bytes), path);
}

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}
}  // namespace

std::vector<std::string> SafeTensorsFile::similar_names(const std::string& name, size_t max) const {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& kv : tensors_) {
    const std::string& key = kv.first;
    size_t d = edit_distance(name, key);
    // A missing or extra prefix ("online.encoder." vs none) is the common weights mistake;
    // containment catches it even when the prefix is longer than the edit threshold.
    bool contained = key.find(name) != std::string::npos || name.find(key) != std::string::npos;
    size_t threshold = std::max<size_t>(2, std::max(name.size(), key.size()) / 3);
    if (contained || d <= threshold) scored.emplace_back(d, key);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < max; ++i) out.push_back(scored[i].second);
  return out;
}

const SafeTensor& SafeTensorsFile::at(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return it->second;
  std::ostringstream os;
  os << "tensor '" << name << "' not found in " << path_ << " (" << tensors_.size() << " tensors)";
  std::vector<std::string> similar = similar_names(name);
  if (!similar.empty()) {
    os << "; similar names:";
    for (size_t i = 0; i < similar.size(); ++i) os << (i ? ", " : " ") << similar[i];
  } else if (!tensors_.empty()) {
    os << "; no similar names, the file starts with:";
    size_t i = 0;
    for (auto t = tensors_.begin(); t != tensors_.end() && i < 5; ++t, ++i) os << (i ? ", " : " ") << t->first;
  }
  BYOL_FAIL(os.str());
}

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

const std::string& SafeTensorsFile::metadata_at(const std::string& key) const {
  auto it = metadata_.find(key);
  BYOL_CHECK(it != metadata_.end(), "safetensors file ", path_, ": __metadata__ has no key '", key,
             "' (", metadata_.size(), " keys)");
  return it->second;
}

// ============================== writing ==============================

namespace {

struct Layout {
  std::string header;           // padded JSON
  std::vector<size_t> order;    // tensor indices in data order
};

Layout plan_layout(const std::vector<SafeTensorSource>& tensors,
                   const std::map<std::string, std::string>& metadata, const std::string& label) {
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafeTensorSource& t = tensors[i];
    BYOL_CHECK(!t.name.empty(), "writing ", label, ": tensor #", i, " has an empty name");
    BYOL_CHECK(t.name != "__metadata__", "writing ", label,
               ": '__metadata__' is reserved and cannot name a tensor");
    auto [it, fresh] = seen.emplace(t.name, i);
    BYOL_CHECK(fresh, "writing ", label, ": tensor name '", t.name, "' appears twice (#", it->second,
               " and #", i, ")");
    for (int64_t d : t.shape)
      BYOL_CHECK(d >= 0, "writing ", label, ": tensor '", t.name, "' has negative dimension ", d,
                 " in shape ", shape_string(t.shape));
    uint64_t want = 0;
    BYOL_CHECK(byte_count(t.shape, safe_dtype_size(t.dtype), &want), "writing ", label, ": tensor '",
               t.name, "' shape ", shape_string(t.shape), " overflows");
    BYOL_CHECK(want == t.nbytes, "writing ", label, ": tensor '", t.name, "' has shape ",
               shape_string(t.shape), " of ", safe_dtype_name(t.dtype), " = ", want,
               " bytes but its buffer has ", t.nbytes);
    BYOL_CHECK(t.nbytes == 0 || t.data != nullptr, "writing ", label, ": tensor '", t.name,
               "' has a null data pointer");
  }

  Layout layout;
  layout.order.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) layout.order[i] = i;
  // Larger elements first keeps every tensor aligned to its element size (all sizes are
  // powers of two and the data section starts 8-aligned), so memory-mapping readers can use
  // the data in place.
  std::stable_sort(layout.order.begin(), layout.order.end(), [&](size_t a, size_t b) {
    return safe_dtype_size(tensors[a].dtype) > safe_dtype_size(tensors[b].dtype);
  });

  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool mfirst = true;
    for (const auto& [k, v] : metadata) {
      h += (mfirst ? "" : ",") + json_quote(k) + ":" + json_quote(v);
      mfirst = false;
    }
    h += "}";
    first = false;
  }
  uint64_t offset = 0;
  for (size_t idx : layout.order) {
    const SafeTensorSource& t = tensors[idx];
    h += (first ? "" : ",") + json_quote(t.name) + ":{\"dtype\":\"" + safe_dtype_name(t.dtype) +
         "\",\"shape\":[";
    for (size_t d = 0; d < t.shape.size(); ++d) h += (d ? "," : "") + std::to_string(t.shape[d]);
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.nbytes) + "]}";
    offset += t.nbytes;
    first = false;
  }
  h += "}";
  // The data section must start 8-byte aligned: pad the header with spaces (valid JSON
  // whitespace), as the specification asks.
  while (h.size() % 8 != 0) h += ' ';
  layout.header = std::move(h);
  return layout;
}

void put_le64(uint8_t* p, uint64_t v) {
  for (int k = 0; k < 8; ++k) p[k] = static_cast<uint8_t>(v >> (8 * k));
}

}  // namespace

std::vector<uint8_t> serialize_safetensors(const std::vector<SafeTensorSource>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  Layout layout = plan_layout(tensors, metadata, "safetensors image");
  size_t total = 8 + layout.header.size();
  for (const auto& t : tensors) total += t.nbytes;
  std::vector<uint8_t> out(total);
  put_le64(out.data(), layout.header.size());
  std::memcpy(out.data() + 8, layout.header.data(), layout.header.size());
  size_t at = 8 + layout.header.size();
  for (size_t idx : layout.order) {
    if (tensors[idx].nbytes) std::memcpy(out.data() + at, tensors[idx].data, tensors[idx].nbytes);
    at += tensors[idx].nbytes;
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<SafeTensorSource>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  BYOL_CHECK(!path.empty(), "write_safetensors: path is empty");
  Layout layout = plan_layout(tensors, metadata, path);

  // Same folder as the target so rename() is atomic (same file system); the pid and a
  // counter keep concurrent writers from sharing a temp file.
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) BYOL_FAIL("cannot write safetensors file ", path, ": creating ", tmp, ": ", std::strerror(errno));

  auto fail_io = [&](const char* step) {
    int err = errno;
    std::fclose(f);
    std::remove(tmp.c_str());
    BYOL_FAIL("cannot write safetensors file ", path, ": ", step, ": ", std::strerror(err));
  };
  uint8_t len[8];
  put_le64(len, layout.header.size());
  if (std::fwrite(len, 1, 8, f) != 8) fail_io("writing the header length");
  if (std::fwrite(layout.header.data(), 1, layout.header.size(), f) != layout.header.size())
    fail_io("writing the header");
  for (size_t idx : layout.order) {
    const SafeTensorSource& t = tensors[idx];
    if (t.nbytes && std::fwrite(t.data, 1, t.nbytes, f) != t.nbytes) fail_io("writing tensor data");
  }
  if (std::fflush(f) != 0) fail_io("flushing");
  // fsync before rename: otherwise a crash can leave the new name pointing at an empty file.
  if (::fsync(::fileno(f)) != 0) fail_io("fsync");
  if (std::fclose(f) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    BYOL_FAIL("cannot write safetensors file ", path, ": closing: ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    BYOL_FAIL("cannot write safetensors file ", path, ": renaming ", tmp, ": ", std::strerror(err));
  }
  // Persist the rename itself (best effort: some file systems refuse fsync on folders).
  std::string dir = ".";
  size_t slash = path.find_last_of('/');
  if (slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

// ============================== byol::Tensor ==============================

Tensor load_tensor(Backend* backend, const SafeTensorsFile& file, const std::string& name) {
  BYOL_CHECK(backend != nullptr, "load_tensor('", name, "'): backend is null");
  const SafeTensor& t = file.at(name);
  DType dtype;
  BYOL_CHECK(dtype_of_safe(t.dtype(), &dtype), "tensor '", name, "' in ", file.path(), " has dtype ",
             safe_dtype_name(t.dtype()), ", which byol cannot load (expected F32, I32, U8 or I64)");
  return Tensor::from_host(backend, t.data(), t.shape(), dtype);
}

Tensor load_tensor(Backend* backend, const SafeTensorsFile& file, const std::string& name,
                   DType expected_dtype, const std::vector<int64_t>& expected_shape) {
  const SafeTensor& t = file.at(name);
  BYOL_CHECK(t.dtype() == safe_dtype_of(expected_dtype), "tensor '", name, "' in ", file.path(),
             ": expected dtype ", safe_dtype_name(safe_dtype_of(expected_dtype)), " but found ",
             safe_dtype_name(t.dtype()));
  BYOL_CHECK(t.shape() == expected_shape, "tensor '", name, "' in ", file.path(), ": expected shape ",
             shape_string(expected_shape), " but found ", shape_string(t.shape()));
  return load_tensor(backend, file, name);
}

void save_tensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<std::vector<uint8_t>> host(tensors.size());
  std::vector<SafeTensorSource> sources(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    BYOL_CHECK(t.defined(), "save_tensors(", path, "): tensor '", name, "' is empty (undefined)");
    host[i].resize(t.nbytes());
    t.to_host(host[i].data());
    sources[i] = SafeTensorSource{name, safe_dtype_of(t.dtype()), t.shape(), host[i].data(), host[i].size()};
  }
  write_safetensors(path, sources, metadata);
}

}  // namespace byol
