#pragma once
// safetensors checkpoints: F32 tensors (and the I8, I16, I32 integer tensors of quantized
// models) plus a string -> string metadata map, read and written in the format of
// https://github.com/huggingface/safetensors (docs/checkpoints.md).
//
// Loading validates the whole file before returning anything: every rule of the reference
// implementation (header length, JSON, offsets contiguous and covering the buffer exactly,
// sizes matching shapes) and a few more (duplicate keys, unknown fields, NaN/Inf values).
// A bad file is an ssmq::io::checkpoint_error naming the file and the problem, never a crash
// or a partial load. Writing is deterministic (tensors and metadata sorted by name, header
// padded with spaces to a multiple of 8, as the reference writer does) and atomic on disk.
#include "../util/cat.hpp"
#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#if defined(__unix__) || defined(__APPLE__)
#include <cerrno>
#include <fcntl.h>
#include <unistd.h>
#endif

namespace ssmq::io {

// Tensor bytes are copied as they are: the file is little-endian IEEE-754 binary32.
static_assert(std::endian::native == std::endian::little,
              "ssmq: safetensors files store little-endian floats and ssmq copies them as they "
              "are: a big-endian host would need a byte swap here");
static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4,
              "ssmq: safetensors F32 is IEEE-754 binary32");

/// Every problem with a checkpoint: the message is "ssmq: <file>: <problem>".
class checkpoint_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The element types ssmq reads and writes. Declared in the reference writer's dtype order
/// (it lays tensors out by descending dtype, then by name, so that each is aligned).
enum class tensor_dtype : std::uint8_t { i8, i16, i32, f32 };

[[nodiscard]] constexpr std::string_view dtype_name(tensor_dtype t) noexcept {
  switch (t) {
    case tensor_dtype::i8: return "I8";
    case tensor_dtype::i16: return "I16";
    case tensor_dtype::i32: return "I32";
    case tensor_dtype::f32: break;
  }
  return "F32";
}
[[nodiscard]] constexpr std::size_t dtype_bytes(tensor_dtype t) noexcept {
  return t == tensor_dtype::i8 ? 1 : t == tensor_dtype::i16 ? 2 : 4;
}
/// The range of an integer dtype (I32's for F32, which has no integer range).
[[nodiscard]] constexpr std::pair<std::int32_t, std::int32_t> dtype_range(tensor_dtype t) noexcept {
  if (t == tensor_dtype::i8) return {-128, 127};
  if (t == tensor_dtype::i16) return {-32768, 32767};
  return {std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()};
}

/// A dense row-major tensor. An empty shape is a scalar (one value); a zero dimension makes
/// an empty tensor. F32 tensors hold `values`; integer tensors hold `ints` (widened to
/// int32) and leave `values` empty.
struct tensor {
  std::vector<std::size_t> shape;
  std::vector<float> values;
  tensor_dtype dtype = tensor_dtype::f32;
  std::vector<std::int32_t> ints{};
};

/// An integer tensor of dtype `type` (I8, I16 or I32).
[[nodiscard]] inline tensor int_tensor(std::vector<std::size_t> shape, tensor_dtype type,
                                       std::vector<std::int32_t> ints) {
  return tensor{std::move(shape), {}, type, std::move(ints)};
}

/// A checkpoint in memory. std::less<> lets lookups take a std::string_view.
struct safetensors_file {
  std::map<std::string, tensor, std::less<>> tensors;
  std::map<std::string, std::string, std::less<>> metadata;
  std::string source;  ///< where it was loaded from, for error messages; never written
};

/// The reference implementation's limit: a longer header is treated as corrupt.
inline constexpr std::uint64_t max_header_bytes = 100'000'000;

namespace detail {

using ssmq::cat;

/// Throws checkpoint_error("ssmq: <source>: <parts...>").
template <class... Parts>
[[noreturn]] void fail(std::string_view source, const Parts&... parts) {
  throw checkpoint_error(cat("ssmq: ", source.empty() ? std::string_view("checkpoint") : source,
                             ": ", parts...));
}

inline std::string in_quotes(std::string_view s) { return cat("'", s, "'"); }

inline std::string shape_text(std::span<const std::size_t> shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  out += "]";
  return out;
}

inline std::string range_text(std::uint64_t begin, std::uint64_t end) {
  return cat("[", begin, ", ", end, "]");
}

/// Product of the dimensions, or false on overflow (a corrupt header must not wrap around).
inline bool element_count(std::span<const std::size_t> shape, std::size_t& count) {
  count = 1;
  for (std::size_t d : shape) {
    if (d != 0 && count > std::numeric_limits<std::size_t>::max() / d) return false;
    count *= d;
  }
  return true;
}

/// "'a', 'b', 'c'", or the first `limit` names and how many more.
template <class Range>
std::string name_list(const Range& names, std::size_t limit = 16) {
  std::string out;
  std::size_t n = 0;
  for (const auto& name : names) {
    if (n == limit) return cat(out, " and ", std::size(names) - limit, " more");
    if (n++ > 0) out += ", ";
    out += in_quotes(name);
  }
  return out;
}

inline std::string tensor_names(const safetensors_file& file) {
  if (file.tensors.empty()) return "the checkpoint holds no tensors";
  std::vector<std::string_view> names;
  for (const auto& [name, t] : file.tensors) names.push_back(name);
  return cat("the checkpoint holds ", name_list(names));
}

inline std::string_view json_type(const nlohmann::json& j) { return j.type_name(); }

/// Short text of an untrusted JSON value for a message. Only flat values are printed:
/// dump() recurses, and a hostile header can nest arrays a million deep.
inline std::string brief(const nlohmann::json& j) {
  const bool flat = j.is_primitive() ||
                    (j.is_array() && j.size() <= 8 &&
                     std::all_of(j.begin(), j.end(), [](const auto& e) { return e.is_primitive(); }));
  if (!flat) return cat("a JSON ", json_type(j), " of ", j.size(), " elements");
  std::string text = j.dump();
  if (text.size() > 80) text = cat(std::string_view(text).substr(0, 77), "...");
  return text;
}

/// Size in bytes of the reference implementation's dtypes (0: not a safetensors dtype).
inline std::size_t dtype_size(std::string_view dtype) {
  static constexpr std::pair<std::string_view, std::size_t> sizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  for (const auto& [name, size] : sizes)
    if (name == dtype) return size;
  return 0;
}

/// Reads a JSON non-negative integer that fits size_t (serde's usize in the reference).
inline bool as_size(const nlohmann::json& j, std::size_t& out) {
  if (!j.is_number_unsigned()) return false;
  const auto v = j.get<std::uint64_t>();
  if (v > std::numeric_limits<std::size_t>::max()) return false;
  out = static_cast<std::size_t>(v);
  return true;
}

/// One tensor's header entry, validated on its own (layout checks come after all entries).
struct entry {
  std::string name;
  tensor_dtype type = tensor_dtype::f32;
  std::vector<std::size_t> shape;
  std::size_t count = 0;
  std::size_t begin = 0;
  std::size_t end = 0;
};

inline entry parse_entry(std::string_view source, const std::string& name,
                         const nlohmann::json& j) {
  const std::string who = cat("tensor ", in_quotes(name));
  if (!j.is_object())
    fail(source, who, ": its header entry is a JSON ", json_type(j), ", not an object");
  for (const auto& [key, value] : j.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail(source, who, ": unknown field ", in_quotes(key),
           " (an entry holds dtype, shape and data_offsets)");
  entry e;
  e.name = name;

  const auto dtype = j.find("dtype");
  if (dtype == j.end()) fail(source, who, " has no \"dtype\"");
  if (!dtype->is_string())
    fail(source, who, ": \"dtype\" is a JSON ", json_type(*dtype), ", not a string");
  const auto& type = dtype->get_ref<const std::string&>();
  bool known = false;
  for (const auto t : {tensor_dtype::f32, tensor_dtype::i8, tensor_dtype::i16, tensor_dtype::i32})
    if (type == io::dtype_name(t)) {
      e.type = t;
      known = true;
    }
  if (!known) {
    if (dtype_size(type) == 0) fail(source, who, " has unknown dtype ", in_quotes(type));
    fail(source, who, " has dtype ", type,
         "; ssmq reads F32 tensors only (and I8, I16, I32 for quantized models)");
  }

  const auto shape = j.find("shape");
  if (shape == j.end()) fail(source, who, " has no \"shape\"");
  if (!shape->is_array())
    fail(source, who, ": \"shape\" is a JSON ", json_type(*shape), ", not an array");
  for (const auto& d : *shape) {
    std::size_t v = 0;
    if (!as_size(d, v))
      fail(source, who, ": shape must hold non-negative integers, got ", brief(*shape));
    e.shape.push_back(v);
  }

  const auto offsets = j.find("data_offsets");
  if (offsets == j.end()) fail(source, who, " has no \"data_offsets\"");
  if (!offsets->is_array() || offsets->size() != 2 || !as_size((*offsets)[0], e.begin) ||
      !as_size((*offsets)[1], e.end))
    fail(source, who, ": data_offsets must be [begin, end], two non-negative integers, got ",
         brief(*offsets));
  if (e.end < e.begin)
    fail(source, who, ": data_offsets ", range_text(e.begin, e.end), " end before they begin");

  // Checked from left to right like the reference: huge dimensions overflow even before a 0.
  const std::size_t size = dtype_bytes(e.type);
  if (!element_count(e.shape, e.count) || e.count > std::numeric_limits<std::size_t>::max() / size)
    fail(source, who, ": shape ", shape_text(e.shape), " has too many elements");
  if (e.end - e.begin != e.count * size)
    fail(source, who, " has shape ", shape_text(e.shape), " (", e.count, " ", io::dtype_name(e.type),
         " values, ", e.count * size, " bytes) but its data_offsets ", range_text(e.begin, e.end),
         " span ", e.end - e.begin, " bytes");
  return e;
}

/// nlohmann::json keeps the last of duplicate keys silently; a checkpoint with two tensors
/// of one name is ambiguous, so the parser callback records the first duplicate.
struct duplicate_key_finder {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool found = false;

  bool operator()(int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using ev = nlohmann::json::parse_event_t;
    if (event == ev::object_start) {
      open_objects.emplace_back();
    } else if (event == ev::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == ev::key && !found && !open_objects.empty() && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) {
        duplicate = key;
        found = true;
      }
    }
    return true;
  }
};

/// "holds NaN at index 5 (element [1, 2] of shape [2, 3])"
inline std::string bad_value_text(float v, std::size_t index, std::span<const std::size_t> shape) {
  const std::string_view what = std::isnan(v) ? "NaN" : (v > 0 ? "+inf" : "-inf");
  std::vector<std::size_t> position(shape.size());
  std::size_t rest = index;
  for (std::size_t k = shape.size(); k-- > 0;) {
    position[k] = rest % shape[k];
    rest /= shape[k];
  }
  return cat("holds ", what, " at index ", index, " (element ", shape_text(position),
             " of shape ", shape_text(shape), ")");
}

/// A little-endian integer of `type` at p, sign-extended (unsigned -> signed conversions
/// are modular since C++20).
inline std::int32_t read_int(const std::uint8_t* p, tensor_dtype type) noexcept {
  std::uint32_t u = 0;
  for (std::size_t k = 0; k < dtype_bytes(type); ++k) u |= std::uint32_t{p[k]} << (8 * k);
  if (type == tensor_dtype::i8) return static_cast<std::int8_t>(u);
  if (type == tensor_dtype::i16) return static_cast<std::int16_t>(u);
  return static_cast<std::int32_t>(u);
}

inline void write_int(std::uint8_t* p, std::int32_t v, tensor_dtype type) noexcept {
  const auto u = static_cast<std::uint32_t>(v);
  for (std::size_t k = 0; k < dtype_bytes(type); ++k) p[k] = static_cast<std::uint8_t>(u >> (8 * k));
}

/// Checks one tensor's content against its dtype and shape (what the loader would refuse).
inline void check_content(std::string_view destination, const std::string& name, const tensor& t,
                          std::size_t& count) {
  const std::string who = cat("tensor ", in_quotes(name));
  const bool is_float = t.dtype == tensor_dtype::f32;
  const std::size_t held = is_float ? t.values.size() : t.ints.size();
  if (!element_count(t.shape, count) || count != held)
    fail(destination, who, " has shape ", shape_text(t.shape), " but holds ", held, " values");
  if (!(is_float ? t.ints.empty() : t.values.empty()))
    fail(destination, who, " is ", io::dtype_name(t.dtype), " but also holds ",
         is_float ? "integer" : "float", " values");
  for (std::size_t i = 0; i < t.values.size(); ++i)
    if (!std::isfinite(t.values[i]))
      fail(destination, who, " ", bad_value_text(t.values[i], i, t.shape),
           "; a checkpoint with it could not be loaded");
  const auto [lo, hi] = dtype_range(t.dtype);
  for (std::size_t i = 0; i < t.ints.size(); ++i)
    if (t.ints[i] < lo || t.ints[i] > hi)
      fail(destination, who, " holds ", t.ints[i], " at index ", i, ", outside the range of ",
           io::dtype_name(t.dtype), " [", lo, ", ", hi, "]");
}

#if defined(__unix__) || defined(__APPLE__)
/// Flushes a file (or directory) to the disk, so that the rename below publishes complete
/// data even after a power loss. `required`: fail if the system cannot do it.
inline void sync_to_disk(const std::filesystem::path& path, bool required, std::string_view source) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (required) fail(source, "cannot reopen ", path.string(), " to flush it to disk");
    return;
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // EINVAL: the file system cannot sync (e.g. some virtual ones); nothing more can be done.
  if (rc != 0 && required && err != EINVAL)
    fail(source, "flushing ", path.string(), " to disk failed: ",
         std::generic_category().message(err));
}
#else
inline void sync_to_disk(const std::filesystem::path&, bool, std::string_view) {}
#endif

}  // namespace detail

/// Parses and validates a whole safetensors file held in memory. `source_name` names it in
/// error messages (a path, or e.g. "<memory>").
inline safetensors_file from_bytes(std::span<const std::uint8_t> bytes,
                                   std::string_view source_name) {
  const std::string source(source_name.empty() ? "<memory>" : source_name);
  const auto fail = [&source](const auto&... parts) { detail::fail(source, parts...); };
  using detail::in_quotes;
  using detail::range_text;

  if (bytes.size() < 8)
    fail("the file is ", bytes.size(),
         " bytes, shorter than the 8-byte header length (truncated, or not a safetensors file)");
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < 8; ++i) n |= std::uint64_t{bytes[i]} << (8 * i);
  if (n > max_header_bytes)
    fail("header length ", n, " is absurd (more than 100 MB): corrupt, or not a safetensors file");
  if (n > bytes.size() - 8)
    fail("header length ", n, " is larger than the rest of the file (", bytes.size() - 8,
         " bytes): the file is truncated");
  const auto header_bytes = bytes.subspan(8, static_cast<std::size_t>(n));
  const auto buffer = bytes.subspan(8 + static_cast<std::size_t>(n));

  // nlohmann's lexer takes a NUL byte for the end of the input, which would accept
  // "{...}\0garbage"; valid JSON never holds one (control characters must be escaped).
  if (const auto nul = std::find(header_bytes.begin(), header_bytes.end(), std::uint8_t{0});
      nul != header_bytes.end())
    fail("the header is not valid JSON: a NUL byte at offset ", nul - header_bytes.begin(),
         " of the header");
  nlohmann::json header;
  detail::duplicate_key_finder duplicates;
  try {
    header = nlohmann::json::parse(header_bytes.begin(), header_bytes.end(), std::ref(duplicates));
  } catch (const nlohmann::json::exception& e) {
    // nlohmann quotes the bytes it last read, which may be invalid UTF-8: keep messages ASCII.
    std::string why = e.what();
    std::replace_if(why.begin(), why.end(), [](char c) { return (c & 0x80) != 0; }, '?');
    fail("the header is not valid JSON: ", why);
  }
  if (duplicates.found)
    fail("key ", in_quotes(duplicates.duplicate), " appears twice in one header object");
  if (!header.is_object())
    fail("the header is a JSON ", detail::json_type(header), ", not an object");
  if (header_bytes[0] != '{')
    fail("the header starts with whitespace; safetensors requires '{' as its first byte");

  safetensors_file file;
  file.source = source;
  std::vector<detail::entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object())
        fail("__metadata__ is a JSON ", detail::json_type(value), ", not an object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string())
          fail("metadata ", in_quotes(key), " is a JSON ", detail::json_type(text),
               ", not a string");
        file.metadata.emplace(key, text.template get<std::string>());
      }
      continue;
    }
    entries.push_back(detail::parse_entry(source, name, value));
  }

  // The tensors must tile the data buffer: sorted by offset, each begins where the previous
  // one ended, the first at 0 and the last at the end of the file.
  for (const auto& e : entries)
    if (e.end > buffer.size())
      fail("tensor ", in_quotes(e.name), ": data_offsets ", range_text(e.begin, e.end),
           " run past the end of the data buffer (", buffer.size(),
           " bytes): the file is truncated");
  std::sort(entries.begin(), entries.end(), [](const detail::entry& a, const detail::entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  std::size_t cursor = 0;
  const detail::entry* previous = nullptr;
  for (const auto& e : entries) {
    if (e.begin < cursor)
      fail("tensors ", in_quotes(previous->name), " ", range_text(previous->begin, previous->end),
           " and ", in_quotes(e.name), " ", range_text(e.begin, e.end),
           " overlap in the data buffer");
    if (e.begin > cursor)
      fail("bytes [", cursor, ", ", e.begin, ") of the data buffer belong to no tensor (a gap before ",
           in_quotes(e.name), ")");
    cursor = e.end;
    previous = &e;
  }
  if (cursor != buffer.size())
    fail("the data buffer has ", buffer.size() - cursor,
         " bytes after the last tensor's data (tensors cover ", cursor, " of ", buffer.size(),
         " bytes)");

  for (auto& e : entries) {
    tensor t;
    t.dtype = e.type;
    if (e.type == tensor_dtype::f32) {
      t.values.resize(e.count);
      if (e.count > 0) std::memcpy(t.values.data(), buffer.data() + e.begin, e.count * sizeof(float));
      for (std::size_t i = 0; i < t.values.size(); ++i)
        if (!std::isfinite(t.values[i]))
          fail("tensor ", in_quotes(e.name), " ", detail::bad_value_text(t.values[i], i, e.shape));
    } else {
      t.ints.resize(e.count);
      for (std::size_t i = 0; i < e.count; ++i)
        t.ints[i] = detail::read_int(buffer.data() + e.begin + i * dtype_bytes(e.type), e.type);
    }
    t.shape = std::move(e.shape);
    file.tensors.emplace(std::move(e.name), std::move(t));
  }
  return file;
}

/// The file's bytes: deterministic (same content, same bytes). Throws checkpoint_error,
/// naming `destination`, for content that could not be loaded back: a shape that does not
/// match the value count, NaN/Inf, an integer outside its dtype's range, the reserved name
/// "__metadata__", invalid UTF-8.
inline std::vector<std::uint8_t> to_bytes(const safetensors_file& file,
                                          std::string_view destination = "<memory>") {
  const auto fail = [destination](const auto&... parts) { detail::fail(destination, parts...); };
  using detail::in_quotes;

  // The reference writer's layout: by descending dtype (F32, I32, I16, I8), then by name.
  using item = std::map<std::string, tensor, std::less<>>::value_type;
  std::vector<const item*> order;
  for (const auto& it : file.tensors) order.push_back(&it);
  std::stable_sort(order.begin(), order.end(),
                   [](const item* a, const item* b) { return a->second.dtype > b->second.dtype; });

  // ordered_json keeps insertion order: __metadata__ first, then the tensors in layout order,
  // each entry as dtype, shape, data_offsets: byte for byte what the reference writer produces.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!file.metadata.empty()) {
    auto& metadata = header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [key, value] : file.metadata) metadata[key] = value;
  }
  std::size_t offset = 0;
  for (const item* it : order) {
    const auto& [name, t] = *it;
    if (name == "__metadata__") fail("\"__metadata__\" is reserved and cannot name a tensor");
    std::size_t count = 0;
    detail::check_content(destination, name, t, count);
    const std::size_t size = count * dtype_bytes(t.dtype);
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = dtype_name(t.dtype);
    entry["shape"] = nlohmann::ordered_json::array();
    for (std::size_t d : t.shape) entry["shape"].push_back(d);
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, offset + size});
    header[name] = std::move(entry);
    offset += size;
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("a tensor name or metadata string is not valid UTF-8: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the reference writer aligns the data to 8
  if (text.size() > max_header_bytes)
    fail("the header would be ", text.size(), " bytes, more than 100 MB");

  std::vector<std::uint8_t> out(8 + text.size() + offset);
  const std::uint64_t n = text.size();
  for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::size_t at = 8 + text.size();
  for (const item* it : order) {
    const tensor& t = it->second;
    if (!t.values.empty())
      std::memcpy(out.data() + at, t.values.data(), t.values.size() * sizeof(float));
    at += t.values.size() * sizeof(float);
    for (const std::int32_t v : t.ints) {
      detail::write_int(out.data() + at, v, t.dtype);
      at += dtype_bytes(t.dtype);
    }
  }
  return out;
}

/// Reads and validates a checkpoint (see from_bytes).
inline safetensors_file load_safetensors(const std::filesystem::path& path) {
  const std::string source = path.string();
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) detail::fail(source, "is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    detail::fail(source, std::filesystem::exists(path, ec) ? "cannot open the file for reading"
                                                            : "no such file");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (!in || size < 0) detail::fail(source, "cannot determine the file's size");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  // Reading through char* is the sanctioned way to fill a byte buffer (no type punning).
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (in.gcount() != static_cast<std::streamsize>(bytes.size()))
    detail::fail(source, "could read only ", in.gcount(), " of ", bytes.size(), " bytes");
  return from_bytes(bytes, source);
}

/// Writes a checkpoint atomically: the bytes go to a temporary file in the same directory,
/// which is flushed to disk and then renamed over `path`. A crash at any point leaves either
/// the old file or the new one, never a half-written checkpoint; on failure the temporary
/// file is removed and `path` is untouched.
inline void save_safetensors(const std::filesystem::path& path, const safetensors_file& file) {
  namespace fs = std::filesystem;
  const std::string destination = path.string();
  if (!path.has_filename()) detail::fail(destination, "is not a file path");
  const auto bytes = to_bytes(file, destination);  // every content check before any disk I/O

  // A random name: two processes saving the same checkpoint do not share a temporary file.
  std::random_device entropy;
  const std::uint64_t tag = (std::uint64_t{entropy()} << 32) ^ entropy();
  char hex[17] = {};
  std::to_chars(hex, hex + 16, tag, 16);
  fs::path temporary = path;
  temporary += detail::cat(".tmp-", std::string_view(hex));

  try {
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      if (!out)
        detail::fail(destination, "cannot create the temporary file ", temporary.string(),
                     " (does the directory exist and is it writable?)");
      out.write(reinterpret_cast<const char*>(bytes.data()),
                static_cast<std::streamsize>(bytes.size()));
      out.close();
      if (!out) detail::fail(destination, "writing ", temporary.string(), " failed (disk full?)");
    }
    detail::sync_to_disk(temporary, true, destination);
    std::error_code ec;
    fs::rename(temporary, path, ec);
    if (ec) detail::fail(destination, "cannot rename ", temporary.string(), " to it: ", ec.message());
  } catch (...) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw;
  }
  // Make the rename itself durable; best effort (not every system can sync a directory).
  detail::sync_to_disk(path.has_parent_path() ? path.parent_path() : fs::path("."), false,
                       destination);
}

// ---- helpers for model loaders --------------------------------------------------------------

namespace detail {
/// Tensor `name`, which must exist with exactly `type` and `shape`.
inline const tensor& expect(const safetensors_file& file, std::string_view name, tensor_dtype type,
                            std::span<const std::size_t> shape) {
  const auto it = file.tensors.find(name);
  if (it == file.tensors.end())
    fail(file.source, "the model needs tensor ", in_quotes(name), " ", shape_text(shape),
         ", which the checkpoint does not hold; ", tensor_names(file));
  const tensor& t = it->second;
  if (t.dtype != type)
    fail(file.source, "tensor ", in_quotes(name), " has dtype ", io::dtype_name(t.dtype),
         " but the model needs ", io::dtype_name(type));
  if (!std::ranges::equal(t.shape, shape))
    fail(file.source, "tensor ", in_quotes(name), " has shape ", shape_text(t.shape),
         " but the model needs ", shape_text(shape));
  const std::size_t held = type == tensor_dtype::f32 ? t.values.size() : t.ints.size();
  std::size_t count = 0;
  if (!element_count(shape, count) || count != held)
    fail(file.source, "tensor ", in_quotes(name), " has shape ", shape_text(shape), " but holds ",
         held, " values");
  return t;
}
}  // namespace detail

/// The values of F32 tensor `name`, which must exist with exactly `shape`. The message says
/// what is wrong: "tensor 's4_layers.0.kernel.C' has shape [16, 32, 2] but the model needs
/// [16, 64, 2]". The span lives as long as `file`.
inline std::span<const float> expect_tensor(const safetensors_file& file, std::string_view name,
                                            std::span<const std::size_t> shape) {
  return detail::expect(file, name, tensor_dtype::f32, shape).values;
}

inline std::span<const float> expect_tensor(const safetensors_file& file, std::string_view name,
                                            std::initializer_list<std::size_t> shape) {
  return expect_tensor(file, name, std::span<const std::size_t>(shape.begin(), shape.size()));
}

/// The values of integer tensor `name`, which must exist with exactly `type` and `shape`
/// ("tensor 'w.q' has dtype F32 but the model needs I8").
inline std::span<const std::int32_t> expect_int_tensor(const safetensors_file& file, std::string_view name,
                                                       tensor_dtype type, std::span<const std::size_t> shape) {
  return detail::expect(file, name, type, shape).ints;
}

inline std::span<const std::int32_t> expect_int_tensor(const safetensors_file& file, std::string_view name,
                                                       tensor_dtype type,
                                                       std::initializer_list<std::size_t> shape) {
  return expect_int_tensor(file, name, type, std::span<const std::size_t>(shape.begin(), shape.size()));
}

/// Throws if the checkpoint holds tensors the model does not use (a misspelt or extra layer
/// would otherwise be ignored silently), listing them.
inline void check_no_unexpected(const safetensors_file& file,
                                const std::set<std::string>& expected) {
  std::vector<std::string_view> unexpected;
  for (const auto& [name, t] : file.tensors)
    if (!expected.contains(name)) unexpected.push_back(name);
  if (!unexpected.empty())
    detail::fail(file.source, "the checkpoint holds ", unexpected.size(),
                 unexpected.size() == 1 ? " tensor" : " tensors", " the model does not use: ",
                 detail::name_list(unexpected));
}

/// A required metadata value.
inline const std::string& metadata_string(const safetensors_file& file, std::string_view key) {
  const auto it = file.metadata.find(key);
  if (it == file.metadata.end()) {
    std::vector<std::string_view> keys;
    for (const auto& [k, v] : file.metadata) keys.push_back(k);
    detail::fail(file.source, "metadata ", detail::in_quotes(key), " is missing; ",
                 keys.empty() ? std::string("the checkpoint has no metadata")
                              : detail::cat("the metadata holds ", detail::name_list(keys)));
  }
  return it->second;
}

/// A required metadata value written as a decimal integer ("16", "-3"; no sign '+', no
/// spaces), within [min, max].
inline std::int64_t metadata_integer(const safetensors_file& file, std::string_view key,
                                     std::int64_t min = std::numeric_limits<std::int64_t>::min(),
                                     std::int64_t max = std::numeric_limits<std::int64_t>::max()) {
  using detail::in_quotes;
  const std::string& text = metadata_string(file, key);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range)
    detail::fail(file.source, "metadata ", in_quotes(key), " = ", in_quotes(text),
                 " does not fit a 64-bit integer");
  if (ec != std::errc{} || end != text.data() + text.size())
    detail::fail(file.source, "metadata ", in_quotes(key), " = ", in_quotes(text),
                 " is not an integer");
  if (value < min || value > max)
    detail::fail(file.source, "metadata ", in_quotes(key), " = ", text, " is out of range [", min,
                 ", ", max, "]");
  return value;
}

/// A required metadata value written as a finite decimal number ("0.1307", "1e-3").
inline double metadata_double(const safetensors_file& file, std::string_view key) {
  const std::string& text = metadata_string(file, key);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value))
    detail::fail(file.source, "metadata ", detail::in_quotes(key), " = ", detail::in_quotes(text),
                 " is not a finite number");
  return value;
}

/// Stores a metadata value as text that the getters above read back exactly: integers in
/// decimal, floating-point values as the shortest text that parses back to the same double
/// (a float is widened first, so casting metadata_double's result back gives the same float).
template <class T>
void set_metadata(safetensors_file& file, std::string key, const T& value) {
  if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    file.metadata[std::move(key)] = std::string(std::string_view(value));
  } else if constexpr (std::integral<T>) {
    static_assert(!std::is_same_v<T, bool> && !std::is_same_v<T, char>,
                  "ssmq: store a flag or a character as an integer or a word");
    file.metadata[std::move(key)] = std::to_string(value);
  } else {
    static_assert(std::floating_point<T>, "ssmq: metadata values are strings, integers or floats");
    const double v = static_cast<double>(value);
    if (!std::isfinite(v))
      detail::fail(file.source, "metadata ", detail::in_quotes(key), " must be finite");
    char text[32];  // the shortest round-trip form of a double needs at most 24 characters
    const auto result = std::to_chars(text, text + sizeof(text), v);
    file.metadata[std::move(key)] = std::string(text, result.ptr);
  }
}

}  // namespace ssmq::io
