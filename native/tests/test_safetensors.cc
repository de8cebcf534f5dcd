// test_safetensors.cc: the safetensors reader/writer and its JSON parser: round trips of every
// dtype, a file from the official writer, loading into byol::Tensor, and damaged files
// (each must throw a byol::Error naming the file and the problem, never crash).
#include <dirent.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "byol/safetensors.h"
#include "runner.h"

namespace byol_test {
namespace {

using byol::JsonValue;
using byol::SafeDType;
using byol::SafeTensorsFile;
using byol::SafeTensorSource;

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  BYOL_CHECK(f.good(), "test: cannot write ", path);
}

// A file image from a raw header string and data bytes (length field computed unless given).
std::vector<uint8_t> image(const std::string& header, size_t data_bytes, int64_t length_field = -1) {
  uint64_t len = length_field < 0 ? header.size() : static_cast<uint64_t>(length_field);
  std::vector<uint8_t> out(8);
  for (int k = 0; k < 8; ++k) out[k] = static_cast<uint8_t>(len >> (8 * k));
  out.insert(out.end(), header.begin(), header.end());
  for (size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<uint8_t>(i * 7));
  return out;
}

std::string scratch(const std::string& name) { return scratch_dir() + "/" + name; }

// Writes `bytes` to a file named `name` and expects reading it to fail with all `needles`
// (the path is always one of them: errors must name the file).
void expect_damaged(const std::string& name, const std::vector<uint8_t>& bytes, std::vector<std::string> needles) {
  const std::string path = scratch(name);
  write_bytes(path, bytes);
  needles.push_back(path);
  expect_error(name, [&] { SafeTensorsFile::read(path); }, needles);
}

BYOL_TEST("safetensors/round_trip_all_dtypes", ctx) {
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, -0.125f, 1e-30f};
  std::vector<int32_t> i32 = {-3, 0, 7, 2147483647};
  int64_t scalar = 123456789012;
  std::vector<uint8_t> u8 = {0, 37, 255, 9, 1};
  std::vector<uint16_t> f16 = {0x3E00, 0xC000, 0x3400};
  std::vector<double> f64 = {3.141592653589793};
  const std::string odd_name = "odd \"name\" \\ with/slash \xc3\xbc \xf0\x9f\x98\x80";
  std::vector<SafeTensorSource> src = {
      {"u8", SafeDType::U8, {5}, u8.data(), u8.size()},
      {"online.encoder.conv1.weight", SafeDType::F32, {2, 3}, f32.data(), f32.size() * 4},
      {"online.encoder.bn1.num_batches_tracked", SafeDType::I64, {}, &scalar, 8},
      {odd_name, SafeDType::I32, {2, 2}, i32.data(), 16},
      {"f16", SafeDType::F16, {3}, f16.data(), 6},
      {"f64", SafeDType::F64, {1, 1}, f64.data(), 8},
      {"empty", SafeDType::F32, {0, 4}, nullptr, 0},
  };
  std::map<std::string, std::string> meta = {{"config", "{\"arch\":\"resnet18\"}"},
                                             {"note", "line1\nline2\t\"quoted\" \xc3\xa9\x01"}};
  const std::string path = scratch("round_trip.safetensors");
  byol::write_safetensors(path, src, meta);
  SafeTensorsFile f = SafeTensorsFile::read(path);
  expect_true(f.size() == src.size(), "tensor count", std::to_string(f.size()));
  expect_true(f.metadata() == meta, "metadata round trip");
  for (const auto& s : src) {
    bool present = f.contains(s.name);
    expect_true(present, "contains '" + s.name + "'");
    if (!present) continue;
    const auto& t = f.at(s.name);
    bool same = t.dtype() == s.dtype && t.shape() == s.shape && t.nbytes() == s.nbytes &&
                (s.nbytes == 0 || std::memcmp(t.data(), s.data, s.nbytes) == 0);
    expect_true(same, "'" + s.name + "' dtype, shape and bytes");
  }
  check("f32 values", f.at("online.encoder.conv1.weight").to_f32(), f32, 0, 0);
  expect_true(f.at("online.encoder.bn1.num_batches_tracked").to_i64() == std::vector<int64_t>{scalar},
              "i64 scalar (shape [])");
  expect_error("typed getter with the wrong dtype", [&] { f.at("u8").to_f32(); }, {"'u8'", "F32", "U8", path});

  // Layout: the data section starts 8-aligned and each tensor is aligned for its type.
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t hlen = 0;
  for (int k = 7; k >= 0; --k) hlen = (hlen << 8) | bytes[k];
  expect_true((8 + hlen) % 8 == 0, "header padded to a multiple of 8", std::to_string(hlen));
  bool aligned = true;
  // Offsets relative to the data start: recover them from the serialized header.
  JsonValue header = byol::parse_json(std::string(bytes.begin() + 8, bytes.begin() + 8 + hlen), "header");
  for (const auto& [name, v] : header.members("header")) {
    if (name == "__metadata__") continue;
    int64_t begin = v.at("data_offsets", name).elements(name)[0].as_int64(name);
    SafeDType d;
    byol::parse_safe_dtype(v.at("dtype", name).as_string(name), &d);
    if (begin % static_cast<int64_t>(byol::safe_dtype_size(d)) != 0) aligned = false;
  }
  expect_true(aligned, "every tensor aligned to its element size");
  // serialize_safetensors gives the same image as the file.
  expect_true(byol::serialize_safetensors(src, meta) == bytes, "serialize_safetensors == written file");
}

BYOL_TEST("safetensors/reads_official_writer", ctx) {
  // test/fixtures/interop_v1.safetensors comes from safetensors.torch.save_file
  // (tools/gen_fixtures.py): values here are the ones that script wrote.
  SafeTensorsFile f = SafeTensorsFile::read(ctx.fixtures_dir + "/interop_v1.safetensors");
  expect_true(f.size() == 7, "7 tensors", std::to_string(f.size()));
  expect_true(f.metadata().size() == 1 && f.metadata_at("format") == "pt", "metadata {format: pt}");
  std::vector<float> conv(24);
  for (int i = 0; i < 24; ++i) conv[i] = static_cast<float>(i) * 0.5f - 3.0f;
  const auto& w = f.at("online.encoder.conv1.weight");
  expect_true(w.shape() == std::vector<int64_t>{2, 3, 2, 2}, "conv weight shape OIHW");
  check("conv weight values", w.to_f32(), conv, 0, 0);
  const auto& nbt = f.at("online.encoder.bn1.num_batches_tracked");
  expect_true(nbt.shape().empty() && nbt.to_i64() == std::vector<int64_t>{123456789012}, "i64 scalar");
  expect_true(f.at("labels").to_i32() == std::vector<int32_t>{-3, 0, 7, 2147483647}, "i32 values");
  std::vector<uint8_t> px(7);
  for (int i = 0; i < 7; ++i) px[i] = static_cast<uint8_t>(i * 37);
  expect_true(f.at("pixels").to_u8() == px, "u8 values");
  const auto& half = f.at("half");
  const uint16_t want_half[3] = {0x3E00, 0xC000, 0x3400};
  expect_true(half.dtype() == SafeDType::F16 && half.nbytes() == 6 && std::memcmp(half.data(), want_half, 6) == 0,
              "f16 bytes");
  const uint16_t want_bf16[2] = {0x3F80, 0xBF00};
  expect_true(f.at("bf16").dtype() == SafeDType::BF16 && std::memcmp(f.at("bf16").data(), want_bf16, 4) == 0,
              "bf16 bytes");
  expect_true(f.at("empty").shape() == std::vector<int64_t>{0, 3} && f.at("empty").nbytes() == 0, "empty tensor");
}

BYOL_TEST("safetensors/load_tensor", ctx) {
  if (!ctx.cpu) skip("needs the CPU backend");
  std::vector<float> w(2 * 3 * 3 * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i);
  int64_t nbt = 7;
  std::vector<uint16_t> half(4, 0x3C00);
  std::vector<float> bn(3, 1.0f);
  std::vector<SafeTensorSource> src = {
      {"online.encoder.layer1.0.conv1.weight", SafeDType::F32, {2, 3, 3, 3}, w.data(), w.size() * 4},
      {"online.encoder.layer1.0.bn1.weight", SafeDType::F32, {3}, bn.data(), 12},
      {"target.encoder.layer1.0.conv1.weight", SafeDType::F32, {2, 3, 3, 3}, w.data(), w.size() * 4},
      {"online.encoder.layer1.0.bn1.num_batches_tracked", SafeDType::I64, {}, &nbt, 8},
      {"half", SafeDType::F16, {4}, half.data(), 8},
  };
  const std::string path = scratch("weights.safetensors");
  byol::write_safetensors(path, src);
  SafeTensorsFile f = SafeTensorsFile::read(path);

  byol::Tensor t = byol::load_tensor(ctx.cpu, f, "online.encoder.layer1.0.conv1.weight", byol::DType::f32, {2, 3, 3, 3});
  expect_true(t.dtype() == byol::DType::f32 && t.shape() == std::vector<int64_t>{2, 3, 3, 3}, "f32 dtype and shape");
  check("f32 values on the backend", t.to_vector_f32(), w, 0, 0);
  byol::Tensor n = byol::load_tensor(ctx.cpu, f, "online.encoder.layer1.0.bn1.num_batches_tracked");
  int64_t got = 0;
  n.to_host(&got);
  expect_true(n.dtype() == byol::DType::i64 && n.ndim() == 0 && got == 7, "i64 scalar");

  // A missing prefix: both prefixed names are offered.
  expect_error("missing key lists similar names",
               [&] { byol::load_tensor(ctx.cpu, f, "encoder.layer1.0.conv1.weight"); },
               {"'encoder.layer1.0.conv1.weight' not found", path, "online.encoder.layer1.0.conv1.weight",
                "target.encoder.layer1.0.conv1.weight"});
  expect_error("typo lists the near name",
               [&] { byol::load_tensor(ctx.cpu, f, "online.encoder.layer1.0.conv2.weight"); },
               {"similar names", "online.encoder.layer1.0.conv1.weight"});
  expect_error("nothing similar lists the first names",
               [&] { byol::load_tensor(ctx.cpu, f, "zzz"); }, {"'zzz' not found", "no similar names", "half"});
  expect_error("unsupported dtype", [&] { byol::load_tensor(ctx.cpu, f, "half"); }, {"'half'", "F16", path});
  expect_error("shape mismatch",
               [&] { byol::load_tensor(ctx.cpu, f, "online.encoder.layer1.0.bn1.weight", byol::DType::f32, {4}); },
               {"expected shape [4]", "found [3]", "online.encoder.layer1.0.bn1.weight"});
  expect_error("dtype mismatch",
               [&] { byol::load_tensor(ctx.cpu, f, "online.encoder.layer1.0.bn1.weight", byol::DType::i32, {3}); },
               {"expected dtype I32", "found F32"});

  // save_tensors downloads from the backend and writes; reading back gives the same bytes.
  const std::string saved = scratch("saved.safetensors");
  byol::save_tensors(saved, {{"w", t}, {"n", n}}, {{"step", "12"}});
  SafeTensorsFile g = SafeTensorsFile::read(saved);
  check("save_tensors f32", g.at("w").to_f32(), w, 0, 0);
  expect_true(g.at("n").to_i64() == std::vector<int64_t>{7} && g.metadata_at("step") == "12", "save_tensors i64 + metadata");
}

BYOL_TEST("safetensors/damaged_files", ctx) {
  const std::string ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  // Sanity: the undamaged image reads.
  write_bytes(scratch("ok.safetensors"), image(ok, 8));
  expect_true(SafeTensorsFile::read(scratch("ok.safetensors")).size() == 1, "undamaged image reads");

  expect_error("missing file", [&] { SafeTensorsFile::read(scratch("nope.safetensors")); },
               {scratch("nope.safetensors"), "No such file"});
  expect_error("a folder", [&] { SafeTensorsFile::read(scratch_dir()); }, {scratch_dir(), "not a regular file"});
  expect_damaged("empty.safetensors", {}, {"0 bytes", "truncated"});
  expect_damaged("short.safetensors", {1, 2, 3}, {"3 bytes", "truncated"});
  expect_damaged("length_past_end.safetensors", image(ok, 8, 500), {"truncated", "header length says 500"});
  expect_damaged("length_huge.safetensors", image(ok, 8, int64_t(1) << 40), {"100 MB"});
  expect_damaged("not_object.safetensors", image("[1,2]   ", 0), {"does not start with '{'"});
  expect_damaged("bad_json.safetensors", image("{\"a\":{\"dtype\":\"F32\",", 0), {"bad JSON", "end of input"});
  expect_damaged("bad_json_trailing.safetensors", image("{} x", 0), {"bad JSON", "after the end"});
  expect_damaged("bad_json_comma.safetensors",
                 image("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,],\"data_offsets\":[0,8]}}", 8), {"bad JSON", "byte"});
  expect_damaged("duplicate_key.safetensors",
                 image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                       8),
                 {"duplicate key \"a\""});
  expect_damaged("bad_utf8.safetensors", image("{\"\xff\":{}}", 0), {"UTF-8"});
  expect_damaged("unknown_dtype.safetensors",
                 image("{\"w\":{\"dtype\":\"F17\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                 {"tensor 'w'", "unknown dtype 'F17'", "F32"});
  expect_damaged("shape_bytes.safetensors",
                 image("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
                 {"tensor 'w'", "needs 12 bytes", "hold 8"});
  expect_damaged("negative_dim.safetensors",
                 image("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8), {"negative dimension"});
  expect_damaged("fraction_dim.safetensors",
                 image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8),
                 {"expected an integer", "2.5"});
  expect_damaged("three_offsets.safetensors",
                 image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 8), {"[begin, end]"});
  expect_damaged("reversed_offsets.safetensors",
                 image("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8), {"invalid data_offsets"});
  expect_damaged("missing_field.safetensors", image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8),
                 {"missing key 'data_offsets'", "tensor 'w'"});
  expect_damaged("offsets_past_end.safetensors",
                 image("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8),
                 {"truncated", "tensor 'w'", "[0, 16]"});
  expect_damaged("overlap.safetensors",
                 image("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                       12),
                 {"overlap", "'b'", "'a'"});
  expect_damaged("gap.safetensors",
                 image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                       12),
                 {"4 bytes before tensor 'b'", "belong to no tensor"});
  expect_damaged("not_from_zero.safetensors",
                 image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), {"must start at 0"});
  expect_damaged("trailing_bytes.safetensors", image(ok, 12), {"4 bytes after the last tensor"});
  expect_damaged("metadata_not_string.safetensors", image("{\"__metadata__\":{\"k\":3}}", 0),
                 {"__metadata__", "'k'", "expected a string"});
  expect_damaged("tensor_not_object.safetensors", image("{\"w\":[1]}", 0), {"tensor 'w'", "expected an object"});
  // Truncating a real file anywhere must give an error, never a crash or a silent success.
  std::ifstream in(ctx.fixtures_dir + "/interop_v1.safetensors", std::ios::binary);
  std::vector<uint8_t> good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int silent = 0;
  for (size_t cut = 0; cut + 1 < good.size(); cut += 7) {
    try {
      SafeTensorsFile::parse(std::vector<uint8_t>(good.begin(), good.begin() + cut), "cut");
      ++silent;
    } catch (const byol::Error&) {
    }
  }
  expect_true(!good.empty() && silent == 0, "every truncation of the interop file is refused",
              std::to_string(silent) + " accepted");
  // Flipping any single header byte must never crash (it may still parse: a digit in a name).
  if (good.size() > 8) {
    for (size_t i = 8; i < good.size() && i < 8 + 300; ++i) {
      std::vector<uint8_t> bad = good;
      bad[i] ^= 0x5a;
      try {
        SafeTensorsFile::parse(std::move(bad), "flipped");
      } catch (const byol::Error&) {
      }
    }
    expect_true(true, "single-byte corruptions of the header throw or parse, never crash");
  }
}

BYOL_TEST("safetensors/atomic_write", ctx) {
  std::vector<float> a = {1, 2, 3}, b = {4, 5};
  const std::string dir = scratch("atomic");
  ::mkdir(dir.c_str(), 0755);
  const std::string path = dir + "/model.safetensors";
  byol::write_safetensors(path, {{"x", SafeDType::F32, {3}, a.data(), 12}});
  byol::write_safetensors(path, {{"y", SafeDType::F32, {2}, b.data(), 8}});  // replaces
  SafeTensorsFile f = SafeTensorsFile::read(path);
  expect_true(f.contains("y") && !f.contains("x"), "second write replaced the first");
  int entries = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) ++entries;
    ::closedir(d);
  }
  expect_true(entries == 1, "no temp file left beside the target", std::to_string(entries) + " entries");

  expect_error("folder missing", [&] { byol::write_safetensors(dir + "/no/such/x.safetensors", {}); },
               {dir + "/no/such/x.safetensors", "No such file"});
  expect_error("duplicate names",
               [&] {
                 byol::write_safetensors(path, {{"x", SafeDType::F32, {1}, a.data(), 4}, {"x", SafeDType::F32, {1}, a.data(), 4}});
               },
               {"'x' appears twice", path});
  expect_error("byte count", [&] { byol::write_safetensors(path, {{"x", SafeDType::F32, {2}, a.data(), 12}}); },
               {"'x'", "8 bytes", "has 12"});
  expect_error("reserved name",
               [&] { byol::write_safetensors(path, {{"__metadata__", SafeDType::F32, {1}, a.data(), 4}}); },
               {"reserved"});
  expect_error("null data", [&] { byol::write_safetensors(path, {{"x", SafeDType::F32, {1}, nullptr, 4}}); },
               {"null data"});
  // A failed write leaves the previous file intact.
  expect_true(SafeTensorsFile::read(path).contains("y"), "failed writes left the file intact");
}

BYOL_TEST("safetensors/json", ctx) {
  JsonValue v = byol::parse_json(
      " {\"i\": 9007199254740993, \"neg\": -12, \"f\": -1.5e-3, \"s\": \"a\\u00e9\\ud83d\\ude00\\n\\\"\","
      " \"arr\": [true, false, null, []], \"o\": {}} ",
      "test");
  expect_true(v.at("i", "t").as_int64("i") == 9007199254740993LL, "int64 exact beyond 2^53");
  expect_true(v.at("neg", "t").as_int("neg") == -12, "negative int");
  expect_true(v.at("f", "t").as_double("f") == -1.5e-3, "double");
  expect_true(v.at("s", "t").as_string("s") == "a\xc3\xa9\xf0\x9f\x98\x80\n\"", "escapes and surrogate pair");
  expect_true(v.at("arr", "t").elements("arr").size() == 4, "array");
  expect_true(byol::parse_json(v.dump(), "dump").dump() == v.dump(), "dump round trip");
  expect_error("fraction as int", [&] { v.at("f", "t").as_int64("key f"); }, {"key f", "expected an integer"});
  expect_error("int overflow", [&] { byol::parse_json("99999999999999999999", "t").as_int64("big"); }, {"out of range"});
  expect_error("missing key", [&] { v.at("zz", "params"); }, {"params", "missing key 'zz'", "neg"});
  expect_error("wrong type", [&] { v.at("s", "t").as_bool("key s"); }, {"key s", "expected a boolean", "a string"});
  for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "\"\\x\"", "\"\x01\"", "\"\\ud800\"",
                          "\"\\udc00\"", "tru", "{\"a\":1,}", "[1 2]", "1e", "\"abc"})
    expect_error(std::string("rejects ") + byol::json_quote(bad), [&] { byol::parse_json(bad, "src"); },
                 {"bad JSON in src"});
  std::string deep(100, '[');
  deep += std::string(100, ']');
  expect_error("nesting limit", [&] { byol::parse_json(deep, "src"); }, {"nesting"});
}

}  // namespace
}  // namespace byol_test
