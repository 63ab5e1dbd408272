#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <ssmq/io/safetensors.hpp>

namespace {

namespace io = ssmq::io;
namespace fs = std::filesystem;
using bytes = std::vector<std::uint8_t>;

bytes le64(std::uint64_t n) {
  bytes out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
  return out;
}

bytes f32_bytes(std::initializer_list<float> values) {
  bytes out(values.size() * sizeof(float));
  if (!out.empty()) std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

bytes concat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

bytes text(std::string_view s) { return bytes(s.begin(), s.end()); }

/// Concatenation by appending ("literal" + std::string trips a false GCC 12 -Wrestrict).
template <class... Parts>
std::string join(const Parts&... parts) {
  std::string s;
  (s.append(std::string_view(parts)), ...);
  return s;
}

/// A file with `header` (padded with spaces to a multiple of 8, as writers do) and `data`.
bytes file_with(std::string header, const bytes& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return concat({le64(header.size()), text(header), data});
}

constexpr std::string_view source = "test.safetensors";

/// The message of the checkpoint_error that loading `b` throws ("<no error>" if none).
std::string load_error(const bytes& b, std::string_view name = source) {
  try {
    (void)io::from_bytes(b, name);
  } catch (const io::checkpoint_error& e) {
    return e.what();
  }
  return "<no error>";
}

/// Loading must fail with "ssmq: test.safetensors: ..." containing every part.
void check_rejected(const bytes& b, std::initializer_list<std::string_view> parts) {
  const std::string message = load_error(b);
  INFO("message: ", message);
  CHECK(message.starts_with("ssmq: test.safetensors: "));
  for (std::string_view part : parts) CHECK_MESSAGE(message.find(part) != std::string::npos, part);
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](float x, float y) {
           return std::bit_cast<std::uint32_t>(x) == std::bit_cast<std::uint32_t>(y);
         });
}

void check_same_content(const io::safetensors_file& a, const io::safetensors_file& b) {
  CHECK(a.metadata == b.metadata);
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (const auto& entry : a.tensors) {
    INFO("tensor ", entry.first);
    const auto it = b.tensors.find(entry.first);
    REQUIRE(it != b.tensors.end());
    CHECK(it->second.shape == entry.second.shape);
    CHECK(same_bits(it->second.values, entry.second.values));
  }
}

io::safetensors_file sample() {
  constexpr auto lim = std::numeric_limits<float>{};
  io::safetensors_file f;
  // -0, subnormals and the extremes must survive bit for bit.
  f.tensors["encoder.weight"] = {{3, 1}, {0.5f, -0.0f, 1e-40f}};
  f.tensors["scalar"] = {{}, {3.25f}};
  f.tensors["empty"] = {{4, 0, 2}, {}};
  f.tensors["s4_layers.0.kernel.C"] = {
      {2, 2, 2}, {lim.max(), lim.lowest(), lim.min(), lim.denorm_min(), 1, 2, 3, -4}};
  f.metadata = {{"ssmq.layers", "4"}, {"note", "unicode \u00e9 \u2713"}, {"empty", ""}};
  return f;
}

bytes read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// A fresh directory under the system's temporary directory, removed at the end.
struct scratch_dir {
  fs::path path;
  scratch_dir() {
    std::random_device entropy;
    path = fs::temp_directory_path() /
           join("ssmq-test-io-", std::to_string(entropy()), "-", std::to_string(entropy()));
    fs::create_directories(path);
  }
  ~scratch_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

// {"a": F32 [2] = 1.0, -2.0}, written by hand from the specification.
constexpr std::string_view golden_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
const bytes golden_data = {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0};  // 1.0f, -2.0f

}  // namespace

// ---- round trips and determinism ------------------------------------------------------------

TEST_CASE("round trip in memory keeps values bit for bit, shapes and metadata") {
  const auto original = sample();
  const auto loaded = io::from_bytes(io::to_bytes(original), "memory");
  check_same_content(original, loaded);
  CHECK(loaded.source == "memory");
  CHECK(loaded.tensors.at("scalar").shape.empty());
  CHECK(loaded.tensors.at("scalar").values.size() == 1);
  CHECK(loaded.tensors.at("empty").shape == std::vector<std::size_t>{4, 0, 2});
  CHECK(loaded.tensors.at("empty").values.empty());
}

TEST_CASE("round trip through a file") {
  scratch_dir dir;
  const auto path = dir.path / "model.safetensors";
  io::save_safetensors(path, sample());
  const auto loaded = io::load_safetensors(path);
  check_same_content(sample(), loaded);
  CHECK(loaded.source == path.string());
  CHECK(read_all(path) == io::to_bytes(sample()));
}

TEST_CASE("an empty checkpoint round-trips") {
  const io::safetensors_file nothing;
  const auto b = io::to_bytes(nothing);
  CHECK(b == concat({le64(8), text("{}      ")}));
  const auto loaded = io::from_bytes(b, "empty");
  CHECK(loaded.tensors.empty());
  CHECK(loaded.metadata.empty());
}

TEST_CASE("writing is deterministic: same content, same bytes") {
  scratch_dir dir;
  io::save_safetensors(dir.path / "one.safetensors", sample());
  io::save_safetensors(dir.path / "two.safetensors", sample());
  CHECK(read_all(dir.path / "one.safetensors") == read_all(dir.path / "two.safetensors"));

  // Insertion order does not matter: tensors and metadata are written sorted by name.
  io::safetensors_file reversed;
  const auto s = sample();
  for (auto it = s.tensors.rbegin(); it != s.tensors.rend(); ++it) reversed.tensors.insert(*it);
  for (auto it = s.metadata.rbegin(); it != s.metadata.rend(); ++it) reversed.metadata.insert(*it);
  CHECK(io::to_bytes(reversed) == io::to_bytes(s));

  // The header is padded with spaces to a multiple of 8 and starts with '{'.
  const auto b = io::to_bytes(s);
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= std::uint64_t{b[static_cast<std::size_t>(i)]} << (8 * i);
  CHECK(n % 8 == 0);
  CHECK(b[8] == '{');
  const std::string header(b.begin() + 8, b.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  const auto last = header.find_last_not_of(' ');
  CHECK(header[last] == '}');
  CHECK(header.size() - last - 1 < 8);
  // __metadata__ first, then tensors by name; entries as dtype, shape, data_offsets.
  CHECK(header.starts_with(R"({"__metadata__":{"empty":"","note":)"));
  CHECK(header.find(R"("empty":{"dtype":"F32","shape":[4,0,2],"data_offsets":[0,0]})") !=
        std::string::npos);
  CHECK(header.find(R"("encoder.weight":{"dtype":"F32","shape":[3,1],"data_offsets":[0,12]})") !=
        std::string::npos);
  CHECK(header.find(R"("scalar":{"dtype":"F32","shape":[],"data_offsets":[44,48]})") !=
        std::string::npos);
}

// ---- golden bytes ---------------------------------------------------------------------------

TEST_CASE("golden: a file made by hand from the specification") {
  REQUIRE(golden_header.size() == 54);
  // Unpadded (padding is optional) and padded with trailing spaces: both are valid.
  for (const bytes& b : {concat({le64(54), text(golden_header), golden_data}),
                         concat({le64(58), text(golden_header), text("    "), golden_data})}) {
    const auto f = io::from_bytes(b, "golden");
    REQUIRE(f.tensors.size() == 1);
    CHECK(f.metadata.empty());
    const auto& a = f.tensors.at("a");
    CHECK(a.shape == std::vector<std::size_t>{2});
    CHECK(same_bits(a.values, std::vector<float>{1.0f, -2.0f}));
  }

  // ssmq's writer: the same JSON, padded to 56 bytes, then the data. Pinned byte for byte.
  io::safetensors_file f;
  f.tensors["a"] = {{2}, {1.0f, -2.0f}};
  const bytes expected = concat({{56, 0, 0, 0, 0, 0, 0, 0}, text(golden_header), text("  "),
                                 {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0}});
  CHECK(io::to_bytes(f) == expected);
  CHECK(expected.size() == 72);
}

TEST_CASE("golden: the writer reproduces the reference implementation's test vectors") {
  // safetensors/src/tensor.rs, test_serialization: "attn.0" F32 [1, 2, 3] = 0..5.
  io::safetensors_file f;
  f.tensors["attn.0"] = {{1, 2, 3}, {0, 1, 2, 3, 4, 5}};
  const bytes attn = {
      64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
      116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
      58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
      101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
      0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64};
  CHECK(io::to_bytes(f) == attn);
  check_same_content(f, io::from_bytes(attn, "attn"));

  // test_empty: no tensors, without and with metadata {"framework": "pt"}.
  io::safetensors_file empty;
  CHECK(io::to_bytes(empty) == bytes{8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32});
  empty.metadata["framework"] = "pt";
  const bytes with_metadata = {
      40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
      95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
      116, 34, 125, 125, 32, 32, 32, 32, 32};
  CHECK(io::to_bytes(empty) == with_metadata);
  CHECK(io::from_bytes(with_metadata, "md").metadata.at("framework") == "pt");
}

TEST_CASE("tensors may appear in any order in the header, and empty tensors share offsets") {
  const auto b = file_with(
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
      R"("y":{"dtype":"F32","shape":[3,0],"data_offsets":[4,4]},)"
      R"("a":{"shape":[1],"data_offsets":[4,8],"dtype":"F32"}})",
      f32_bytes({7.0f, 8.0f}));
  const auto f = io::from_bytes(b, "order");
  CHECK(f.tensors.at("a").values == std::vector<float>{8.0f});
  CHECK(f.tensors.at("b").values == std::vector<float>{7.0f});
  CHECK(f.tensors.at("y").values.empty());
  CHECK(f.tensors.at("z").values.empty());
}

// ---- corrupt files --------------------------------------------------------------------------

TEST_CASE("every truncation of a valid file is rejected") {
  const auto full = io::to_bytes(sample());
  REQUIRE_NOTHROW((void)io::from_bytes(full, "full"));
  for (std::size_t size = 0; size < full.size(); ++size) {
    INFO("cut at ", size, " of ", full.size(), " bytes");
    const bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(size));
    const std::string message = load_error(cut, "cut.safetensors");
    INFO("message: ", message);
    CHECK(message.starts_with("ssmq: cut.safetensors: "));
    CHECK((message.find("truncated") != std::string::npos ||
           message.find("shorter than the 8-byte header length") != std::string::npos));
  }
}

TEST_CASE("every flipped bit of the header length is rejected") {
  const auto full = io::to_bytes(sample());
  for (std::size_t bit = 0; bit < 64; ++bit) {
    INFO("bit ", bit);
    auto b = full;
    b[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    CHECK_THROWS_AS((void)io::from_bytes(b, source), io::checkpoint_error);
  }
}

TEST_CASE("random byte corruptions load or throw checkpoint_error, nothing else") {
  const auto full = io::to_bytes(sample());
  std::mt19937 rng(12345);  // fixed seed: the same corruptions on every run
  std::uniform_int_distribution<std::size_t> position(0, full.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  int rejected = 0;
  for (int round = 0; round < 3000; ++round) {
    auto b = full;
    const int flips = 1 + round % 4;
    for (int k = 0; k < flips; ++k) b[position(rng)] = static_cast<std::uint8_t>(byte(rng));
    try {
      const auto f = io::from_bytes(b, source);
      // Whatever loads must be a consistent checkpoint: it writes and reloads unchanged.
      check_same_content(f, io::from_bytes(io::to_bytes(f), source));
    } catch (const io::checkpoint_error& e) {
      ++rejected;
      CHECK(std::string_view(e.what()).starts_with("ssmq: test.safetensors: "));
    }
  }
  CHECK(rejected > 1000);
}

TEST_CASE("header length absurd, larger than the file, or too short") {
  const auto good = concat({le64(54), text(golden_header), golden_data});
  check_rejected({}, {"the file is 0 bytes, shorter than the 8-byte header length"});
  check_rejected({1, 2, 3}, {"the file is 3 bytes"});

  auto b = good;
  std::copy_n(le64(100'000'001).begin(), 8, b.begin());
  check_rejected(b, {"header length 100000001 is absurd (more than 100 MB)"});
  std::copy_n(le64(std::numeric_limits<std::uint64_t>::max()).begin(), 8, b.begin());
  check_rejected(b, {"header length 18446744073709551615 is absurd"});
  std::copy_n(le64(63).begin(), 8, b.begin());
  check_rejected(b, {"header length 63 is larger than the rest of the file (62 bytes)"});
  std::copy_n(le64(0).begin(), 8, b.begin());
  check_rejected(b, {"the header is not valid JSON"});
  std::copy_n(le64(53).begin(), 8, b.begin());  // cuts the closing brace
  check_rejected(b, {"the header is not valid JSON"});
}

TEST_CASE("the header must be a JSON object in valid UTF-8 with unique keys") {
  const bytes four = f32_bytes({1.0f});
  check_rejected(file_with(R"({"a":{"dtype":"F32",)", four), {"the header is not valid JSON"});
  check_rejected(file_with("{} x", {}), {"the header is not valid JSON"});
  check_rejected(concat({le64(8), text("{}"), bytes(6, 0)}),
                 {"the header is not valid JSON: a NUL byte at offset 2 of the header"});
  check_rejected(file_with(std::string("{\"a\0\":1}", 8), {}), {"a NUL byte at offset 3"});
  check_rejected(file_with("[1, 2]", {}), {"the header is a JSON array, not an object"});
  check_rejected(file_with("\"a\"", {}), {"the header is a JSON string, not an object"});
  check_rejected(file_with(" {}", {}), {"requires '{' as its first byte"});
  check_rejected(file_with("{\"a\xff\":{}}", {}), {"the header is not valid JSON", "UTF-8"});
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                           four),
                 {"key 'a' appears twice in one header object"});
  check_rejected(
      file_with(R"({"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", four),
      {"key 'dtype' appears twice"});
  // The same key in two different objects is fine.
  CHECK_NOTHROW((void)io::from_bytes(
      file_with(R"({"__metadata__":{"a":"x"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                four),
      source));
}

TEST_CASE("missing or invalid dtype, shape and data_offsets") {
  const bytes four = f32_bytes({1.0f});
  auto one = [&](std::string_view entry) {
    return file_with(join(R"({"w":)", entry, "}"), four);
  };
  check_rejected(one("[1]"), {"tensor 'w': its header entry is a JSON array, not an object"});
  check_rejected(one(R"({"shape":[1],"data_offsets":[0,4]})"), {"tensor 'w' has no \"dtype\""});
  check_rejected(one(R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})"),
                 {"tensor 'w': \"dtype\" is a JSON number, not a string"});
  check_rejected(one(R"({"dtype":"F16","shape":[2],"data_offsets":[0,4]})"),
                 {"tensor 'w' has dtype F16; ssmq reads F32 tensors only"});
  check_rejected(one(R"({"dtype":"float32","shape":[1],"data_offsets":[0,4]})"),
                 {"tensor 'w' has unknown dtype 'float32'"});
  check_rejected(one(R"({"dtype":"F32","data_offsets":[0,4]})"), {"tensor 'w' has no \"shape\""});
  check_rejected(one(R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})"),
                 {"tensor 'w': \"shape\" is a JSON string, not an array"});
  check_rejected(one(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})"),
                 {"tensor 'w': shape must hold non-negative integers, got [-1]"});
  check_rejected(one(R"({"dtype":"F32","shape":[1.0],"data_offsets":[0,4]})"),
                 {"must hold non-negative integers"});
  check_rejected(one(R"({"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]})"),
                 {"must hold non-negative integers"});
  // Deeply nested values are rejected without recursing over them.
  check_rejected(one(join(R"({"dtype":"F32","shape":)", std::string(100000, '['),
                          std::string(100000, ']'), R"(,"data_offsets":[0,4]})")),
                 {"shape must hold non-negative integers, got a JSON array of 1 elements"});
  check_rejected(one(R"({"dtype":"F32","shape":[1]})"), {"tensor 'w' has no \"data_offsets\""});
  for (std::string_view offsets : {"[0]", "[0,4,8]", "[0,-4]", "[0,4.0]", "\"0,4\"", "{}"})
    check_rejected(one(join(R"({"dtype":"F32","shape":[1],"data_offsets":)", offsets, "}")),
                   {"tensor 'w': data_offsets must be [begin, end], two non-negative integers, got "});
  check_rejected(one(R"({"dtype":"F32","shape":[0],"data_offsets":[4,0]})"),
                 {"tensor 'w': data_offsets [4, 0] end before they begin"});
  check_rejected(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4],"offset":0})"),
                 {"tensor 'w': unknown field 'offset'"});
}

TEST_CASE("offsets out of range, overlapping, with gaps or not covering the buffer") {
  auto two = [](std::string_view a, std::string_view b, std::size_t data_bytes) {
    return file_with(join(R"({"a":)", a, R"(,"b":)", b, "}"),
                     bytes(data_bytes, 0));
  };
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", bytes(4, 0)),
                 {"tensor 'a': data_offsets [0, 8] run past the end of the data buffer (4 bytes)",
                  "truncated"});
  check_rejected(two(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})",
                     R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})", 12),
                 {"tensors 'a' [0, 8] and 'b' [4, 12] overlap in the data buffer"});
  check_rejected(two(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})",
                     R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8),
                 {"tensors 'a' [0, 8] and 'b' [0, 8] overlap"});
  check_rejected(two(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})",
                     R"({"dtype":"F32","shape":[0],"data_offsets":[4,4]})", 8),
                 {"tensors 'a' [0, 8] and 'b' [4, 4] overlap"});
  check_rejected(two(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})",
                     R"({"dtype":"F32","shape":[1],"data_offsets":[8,12]})", 12),
                 {"bytes [4, 8) of the data buffer belong to no tensor (a gap before 'b')"});
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", bytes(8, 0)),
                 {"bytes [0, 4) of the data buffer belong to no tensor (a gap before 'a')"});
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", bytes(8, 0)),
                 {"the data buffer has 4 bytes after the last tensor's data (tensors cover 4 of 8 bytes)"});
  check_rejected(file_with("{}", bytes(4, 0)), {"the data buffer has 4 bytes after the last tensor"});
}

TEST_CASE("the data size must match the shape") {
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", bytes(8, 0)),
                 {"tensor 'a' has shape [3] (3 F32 values, 12 bytes) but its data_offsets [0, 8] "
                  "span 8 bytes"});
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,0]}})", {}),
                 {"tensor 'a' has shape [] (1 F32 values, 4 bytes)"});
  check_rejected(
      file_with(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", {}),
      {"tensor 'a': shape [4294967296, 4294967296] has too many elements"});
  check_rejected(
      file_with(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", {}),
      {"has too many elements"});
  // As in the reference, the product is checked from left to right: a 0 before huge
  // dimensions gives an empty tensor, huge dimensions before a 0 overflow.
  check_rejected(
      file_with(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})",
                {}),
      {"has too many elements"});
  CHECK(io::from_bytes(file_with(R"({"a":{"dtype":"F32","shape":[3,0,4294967296,4294967296],)"
                                 R"("data_offsets":[0,0]}})",
                                 {}),
                       source)
            .tensors.at("a")
            .values.empty());
}

TEST_CASE("NaN and infinities are rejected on load with their position") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                           f32_bytes({1.0f, nan})),
                 {"tensor 'a' holds NaN at index 1 (element [1] of shape [2])"});
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})",
                           f32_bytes({1.0f, 2.0f, 3.0f, inf})),
                 {"tensor 'a' holds +inf at index 3 (element [1, 1] of shape [2, 2])"});
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
                           f32_bytes({-inf})),
                 {"tensor 'a' holds -inf at index 0 (element [] of shape [])"});
  // A negative NaN with a payload is still NaN.
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                           {0x01, 0x00, 0xC0, 0xFF}),
                 {"holds NaN at index 0"});
}

TEST_CASE("metadata must be an object of strings") {
  check_rejected(file_with(R"({"__metadata__":{"k":3}})", {}),
                 {"metadata 'k' is a JSON number, not a string"});
  check_rejected(file_with(R"({"__metadata__":{"k":null}})", {}),
                 {"metadata 'k' is a JSON null, not a string"});
  check_rejected(file_with(R"({"__metadata__":["k"]})", {}),
                 {"__metadata__ is a JSON array, not an object"});
  check_rejected(file_with("{\"__metadata__\":{\"k\":\"\xc3\x28\"}}", {}),
                 {"the header is not valid JSON"});
  const auto f = io::from_bytes(file_with(R"({"__metadata__":{"k":"v","":""}})", {}), source);
  CHECK(f.metadata == std::map<std::string, std::string, std::less<>>{{"k", "v"}, {"", ""}});
}

// ---- the writer's own checks ----------------------------------------------------------------

TEST_CASE("the writer refuses content it could not load back") {
  auto error = [](const io::safetensors_file& f) -> std::string {
    try {
      (void)io::to_bytes(f, "out.safetensors");
    } catch (const io::checkpoint_error& e) {
      return e.what();
    }
    return "<no error>";
  };
  io::safetensors_file f;
  f.tensors["a"] = {{2, 2}, {1, 2, 3}};
  CHECK(error(f) == "ssmq: out.safetensors: tensor 'a' has shape [2, 2] but holds 3 values");
  f.tensors["a"] = {{4611686018427387904, 4611686018427387904}, {}};
  CHECK(error(f) ==
        "ssmq: out.safetensors: tensor 'a' has shape [4611686018427387904, 4611686018427387904] "
        "but holds 0 values");
  f.tensors["a"] = {{2}, {1, std::numeric_limits<float>::quiet_NaN()}};
  CHECK(error(f) == "ssmq: out.safetensors: tensor 'a' holds NaN at index 1 (element [1] of shape "
                    "[2]); a checkpoint with it could not be loaded");
  f.tensors.clear();
  f.tensors["__metadata__"] = {{1}, {1}};
  CHECK(error(f) ==
        "ssmq: out.safetensors: \"__metadata__\" is reserved and cannot name a tensor");
  f.tensors.clear();
  f.tensors["bad\xff"] = {{1}, {1}};
  CHECK(error(f).starts_with(
      "ssmq: out.safetensors: a tensor name or metadata string is not valid UTF-8"));
  f.tensors.clear();
  f.metadata["k"] = "\xc3\x28";
  CHECK(error(f).starts_with(
      "ssmq: out.safetensors: a tensor name or metadata string is not valid UTF-8"));
}

// ---- helpers for model loaders --------------------------------------------------------------

TEST_CASE("expect_tensor says exactly what is wrong") {
  io::safetensors_file f;
  f.source = "model.safetensors";
  f.tensors["s4_layers.0.kernel.C"] = {{16, 32, 2}, std::vector<float>(16 * 32 * 2, 0.5f)};
  f.tensors["decoder.weight"] = {{10, 16}, std::vector<float>(160, 1.0f)};

  const auto c = io::expect_tensor(f, "s4_layers.0.kernel.C", {16, 32, 2});
  CHECK(c.size() == 1024);
  CHECK(c.data() == f.tensors.at("s4_layers.0.kernel.C").values.data());
  const std::vector<std::size_t> shape{10, 16};
  CHECK(io::expect_tensor(f, "decoder.weight", shape).size() == 160);

  CHECK_THROWS_WITH_AS((void)io::expect_tensor(f, "s4_layers.0.kernel.C", {16, 64, 2}),
                       "ssmq: model.safetensors: tensor 's4_layers.0.kernel.C' has shape "
                       "[16, 32, 2] but the model needs [16, 64, 2]",
                       io::checkpoint_error);
  CHECK_THROWS_WITH_AS((void)io::expect_tensor(f, "decoder.bias", {10}),
                       "ssmq: model.safetensors: the model needs tensor 'decoder.bias' [10], which "
                       "the checkpoint does not hold; the checkpoint holds 'decoder.weight', "
                       "'s4_layers.0.kernel.C'",
                       io::checkpoint_error);
  CHECK_THROWS_WITH_AS((void)io::expect_tensor(f, "decoder.weight", {}),
                       "ssmq: model.safetensors: tensor 'decoder.weight' has shape [10, 16] but "
                       "the model needs []",
                       io::checkpoint_error);

  io::safetensors_file many;
  for (int i = 100; i < 120; ++i) many.tensors[join("t", std::to_string(i))] = {{1}, {0}};
  CHECK_THROWS_WITH_AS((void)io::expect_tensor(many, "x", {1}),
                       "ssmq: checkpoint: the model needs tensor 'x' [1], which the checkpoint "
                       "does not hold; the checkpoint holds 't100', 't101', 't102', 't103', "
                       "'t104', 't105', 't106', 't107', 't108', 't109', 't110', 't111', 't112', "
                       "'t113', 't114', 't115' and 4 more",
                       io::checkpoint_error);
  CHECK_THROWS_WITH_AS((void)io::expect_tensor(io::safetensors_file{}, "x", {1}),
                       "ssmq: checkpoint: the model needs tensor 'x' [1], which the checkpoint "
                       "does not hold; the checkpoint holds no tensors",
                       io::checkpoint_error);

  // A tensor built in memory with a shape that does not match its values.
  f.tensors["bad"] = {{2, 2}, {1, 2, 3}};
  CHECK_THROWS_WITH_AS((void)io::expect_tensor(f, "bad", {2, 2}),
                       "ssmq: model.safetensors: tensor 'bad' has shape [2, 2] but holds 3 values",
                       io::checkpoint_error);
}

TEST_CASE("check_no_unexpected lists the tensors the model does not use") {
  io::safetensors_file f;
  f.source = "model.safetensors";
  for (const char* name : {"encoder.weight", "encoder.bias", "norms.0.weight", "typo.weight"})
    f.tensors[name] = {{1}, {0}};
  CHECK_NOTHROW(io::check_no_unexpected(
      f, {"encoder.weight", "encoder.bias", "norms.0.weight", "typo.weight", "decoder.bias"}));
  CHECK_THROWS_WITH_AS(io::check_no_unexpected(f, {"encoder.weight", "encoder.bias"}),
                       "ssmq: model.safetensors: the checkpoint holds 2 tensors the model does not "
                       "use: 'norms.0.weight', 'typo.weight'",
                       io::checkpoint_error);
  const std::set<std::string> almost{"encoder.weight", "encoder.bias", "norms.0.weight"};
  CHECK_THROWS_WITH_AS(io::check_no_unexpected(f, almost),
                       "ssmq: model.safetensors: the checkpoint holds 1 tensor the model does not "
                       "use: 'typo.weight'",
                       io::checkpoint_error);
}

TEST_CASE("metadata helpers read strings, integers and doubles with clear errors") {
  io::safetensors_file f;
  f.source = "model.safetensors";
  CHECK_THROWS_WITH_AS((void)io::metadata_string(f, "ssmq.layers"),
                       "ssmq: model.safetensors: metadata 'ssmq.layers' is missing; the checkpoint "
                       "has no metadata",
                       io::checkpoint_error);
  f.metadata = {{"ssmq.layers", "4"},  {"ssmq.norm", "pre"},  {"neg", "-3"},
                {"bad", "4x"},         {"plus", "+4"},        {"space", " 4"},
                {"empty", ""},         {"huge", "99999999999999999999"},
                {"mean", "0.1307"},    {"exp", "1e-3"},       {"nan", "nan"},
                {"inf", "inf"},        {"over", "1e400"},     {"word", "abc"}};
  CHECK(io::metadata_string(f, "ssmq.norm") == "pre");
  CHECK(io::metadata_integer(f, "ssmq.layers") == 4);
  CHECK(io::metadata_integer(f, "ssmq.layers", 1, 64) == 4);
  CHECK(io::metadata_integer(f, "neg") == -3);
  CHECK_THROWS_WITH_AS((void)io::metadata_string(f, "ssmq.heads"),
                       "ssmq: model.safetensors: metadata 'ssmq.heads' is missing; the metadata "
                       "holds 'bad', 'empty', 'exp', 'huge', 'inf', 'mean', 'nan', 'neg', 'over', "
                       "'plus', 'space', 'ssmq.layers', 'ssmq.norm', 'word'",
                       io::checkpoint_error);
  for (const char* key : {"bad", "plus", "space", "empty", "mean"}) {
    INFO(key);
    CHECK_THROWS_WITH_AS((void)io::metadata_integer(f, key),
                         join("ssmq: model.safetensors: metadata '", key, "' = '",
                              f.metadata.at(key), "' is not an integer")
                             .c_str(),
                         io::checkpoint_error);
  }
  CHECK_THROWS_WITH_AS((void)io::metadata_integer(f, "huge"),
                       "ssmq: model.safetensors: metadata 'huge' = '99999999999999999999' does not "
                       "fit a 64-bit integer",
                       io::checkpoint_error);
  CHECK_THROWS_WITH_AS((void)io::metadata_integer(f, "neg", 0, 64),
                       "ssmq: model.safetensors: metadata 'neg' = -3 is out of range [0, 64]",
                       io::checkpoint_error);

  CHECK(io::metadata_double(f, "mean") == 0.1307);
  CHECK(io::metadata_double(f, "exp") == 1e-3);
  CHECK(io::metadata_double(f, "ssmq.layers") == 4.0);
  for (const char* key : {"nan", "inf", "over", "word", "empty", "bad"}) {
    INFO(key);
    CHECK_THROWS_WITH_AS((void)io::metadata_double(f, key),
                         join("ssmq: model.safetensors: metadata '", key, "' = '",
                              f.metadata.at(key), "' is not a finite number")
                             .c_str(),
                         io::checkpoint_error);
  }
}

TEST_CASE("set_metadata writes text that reads back exactly") {
  io::safetensors_file f;
  io::set_metadata(f, "ssmq.layers", 4);
  io::set_metadata(f, "ssmq.heads", std::size_t{16});
  io::set_metadata(f, "neg", -7L);
  io::set_metadata(f, "ssmq.norm", "none");
  io::set_metadata(f, "name", std::string("s4d"));
  io::set_metadata(f, "ssmq.input_mean", 0.1307);
  io::set_metadata(f, "third", 1.0 / 3.0);
  io::set_metadata(f, "tenth_f", 0.1f);
  io::set_metadata(f, "tiny", 5e-324);
  CHECK(f.metadata.at("ssmq.layers") == "4");
  CHECK(f.metadata.at("ssmq.heads") == "16");
  CHECK(f.metadata.at("neg") == "-7");
  CHECK(f.metadata.at("ssmq.norm") == "none");
  CHECK(f.metadata.at("name") == "s4d");
  CHECK(f.metadata.at("ssmq.input_mean") == "0.1307");
  const auto loaded = io::from_bytes(io::to_bytes(f), "md");
  CHECK(io::metadata_integer(loaded, "ssmq.heads") == 16);
  CHECK(io::metadata_integer(loaded, "neg") == -7);
  CHECK(io::metadata_double(loaded, "ssmq.input_mean") == 0.1307);
  CHECK(io::metadata_double(loaded, "third") == 1.0 / 3.0);
  CHECK(static_cast<float>(io::metadata_double(loaded, "tenth_f")) == 0.1f);
  CHECK(io::metadata_double(loaded, "tiny") == 5e-324);
  CHECK_THROWS_AS(io::set_metadata(f, "x", std::numeric_limits<double>::quiet_NaN()),
                  io::checkpoint_error);
}

// ---- files on disk --------------------------------------------------------------------------

TEST_CASE("save is atomic: no temporary file is left behind, failures leave the old file") {
  scratch_dir dir;
  const auto path = dir.path / "model.safetensors";
  io::save_safetensors(path, sample());
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});

  // Overwriting replaces the content and still leaves one file.
  io::safetensors_file other;
  other.tensors["a"] = {{2}, {1.0f, -2.0f}};
  io::save_safetensors(path, other);
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});
  const auto before = read_all(path);
  CHECK(before == io::to_bytes(other));

  // Content that cannot be written: nothing on disk changes.
  io::safetensors_file broken;
  broken.tensors["a"] = {{1}, {std::numeric_limits<float>::infinity()}};
  CHECK_THROWS_AS(io::save_safetensors(path, broken), io::checkpoint_error);
  CHECK(read_all(path) == before);
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});

  // A missing directory: the error names the destination.
  const auto nowhere = dir.path / "missing" / "model.safetensors";
  try {
    io::save_safetensors(nowhere, other);
    FAIL("no error");
  } catch (const io::checkpoint_error& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(message.starts_with(join("ssmq: ", nowhere.string(), ": cannot create the temporary file")));
  }
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});

  // The rename fails (the destination is a directory): the temporary file is removed.
  fs::create_directory(dir.path / "sub");
  try {
    io::save_safetensors(dir.path / "sub", other);
    FAIL("no error");
  } catch (const io::checkpoint_error& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(message.starts_with(join("ssmq: ", (dir.path / "sub").string(), ": cannot rename")));
  }
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors", "sub"});
  CHECK(fs::is_empty(dir.path / "sub"));
  CHECK_THROWS_AS(io::save_safetensors(dir.path / "sub" / "", other), io::checkpoint_error);
}

TEST_CASE("loading a missing file, a directory or a corrupt file names the file") {
  scratch_dir dir;
  const auto missing = dir.path / "missing.safetensors";
  CHECK_THROWS_WITH_AS((void)io::load_safetensors(missing),
                       join("ssmq: ", missing.string(), ": no such file").c_str(),
                       io::checkpoint_error);
  CHECK_THROWS_WITH_AS((void)io::load_safetensors(dir.path),
                       join("ssmq: ", dir.path.string(), ": is a directory, not a file").c_str(),
                       io::checkpoint_error);
  const auto corrupt = dir.path / "corrupt.safetensors";
  {
    auto b = io::to_bytes(sample());
    b.pop_back();
    std::ofstream out(corrupt, std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  try {
    (void)io::load_safetensors(corrupt);
    FAIL("no error");
  } catch (const io::checkpoint_error& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(message.starts_with(join("ssmq: ", corrupt.string(), ": tensor ")));
    CHECK(message.find("the file is truncated") != std::string::npos);
  }
}
