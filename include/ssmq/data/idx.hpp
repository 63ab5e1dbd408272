#pragma once
// IDX files, the format of MNIST: magic 0x00 0x00 <element type> <number of dimensions>,
// one big-endian uint32 per dimension, then the elements in row-major order. Files may be
// raw or gzip-compressed (detected by the gzip magic 1f 8b, not by the file name).
//
// Reading is strict: the data must be exactly as long as the header says. A short file is
// an error, never a silently smaller dataset, and bytes after the data are an error too (a
// concatenation or a wrong file is more likely than a harmless pad). Every error is a
// data_error whose message names the file and the problem.
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "error.hpp"

namespace ssmq::data {

/// Element types of the IDX format (the third magic byte). ssmq reads `u8`.
enum class idx_type : std::uint8_t {
  u8 = 0x08,
  i8 = 0x09,
  i16 = 0x0B,
  i32 = 0x0C,
  f32 = 0x0D,
  f64 = 0x0E,
};

/// ssmq accepts 1 to 4 dimensions (MNIST uses 1 for labels and 3 for images).
inline constexpr std::size_t idx_max_dims = 4;

/// The contents of an IDX file of unsigned bytes: its dimensions and its elements.
struct idx_array {
  std::vector<std::size_t> dims;
  std::vector<std::uint8_t> data;  ///< product(dims) elements, row-major

  [[nodiscard]] std::size_t count() const noexcept { return data.size(); }
};

enum class idx_compression : unsigned char { raw, gzip };

namespace detail {

inline std::string hex_byte(unsigned v) {
  constexpr char digits[] = "0123456789ABCDEF";
  std::string s = "0x";
  s += digits[(v >> 4) & 0xF];
  s += digits[v & 0xF];
  return s;
}

inline std::string bytes_text(std::size_t n) {
  return cat(n, n == 1 ? " byte" : " bytes");
}

inline std::string dims_text(std::span<const std::size_t> dims) {
  std::string s;
  for (std::size_t i = 0; i < dims.size(); ++i) s += cat(i ? " x " : "", dims[i]);
  return s;
}

inline const char* idx_type_name(unsigned t) {
  switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "16-bit integer";
    case 0x0C: return "32-bit integer";
    case 0x0D: return "32-bit float";
    case 0x0E: return "64-bit float";
    default: return nullptr;
  }
}

inline std::string quoted(const std::filesystem::path& p) { return cat("'", p.string(), "'"); }

struct idx_header {
  std::vector<std::size_t> dims;
  std::size_t header_bytes = 0;
};

/// Validates everything but the element bytes themselves. `name` is how messages name the
/// source; `decompressed` says that sizes refer to the gunzipped contents.
inline idx_header parse_idx_header(std::span<const std::uint8_t> bytes, std::string_view name,
                                   bool decompressed) {
  const std::string where = cat("ssmq: IDX file ", name, ": ");
  const char* contents = decompressed ? "the decompressed contents have " : "the file has ";
  if (bytes.size() < 4)
    throw data_error(cat(where, "truncated header: ", contents, bytes_text(bytes.size()),
                         ", the magic number alone needs 4"));
  if (bytes[0] != 0 || bytes[1] != 0)
    throw data_error(cat(where, "bad magic number ", hex_byte(bytes[0]), " ", hex_byte(bytes[1]),
                         " ", hex_byte(bytes[2]), " ", hex_byte(bytes[3]),
                         ": an IDX file starts with two zero bytes (not an IDX file?)"));
  const unsigned type = bytes[2];
  if (type != static_cast<unsigned>(idx_type::u8)) {
    const char* tn = idx_type_name(type);
    throw data_error(tn ? cat(where, "element type ", hex_byte(type), " (", tn,
                              ") is not supported: ssmq reads only 0x08 (unsigned byte)")
                        : cat(where, "unknown element type ", hex_byte(type),
                              ": ssmq reads only 0x08 (unsigned byte)"));
  }
  const std::size_t nd = bytes[3];
  if (nd == 0 || nd > idx_max_dims)
    throw data_error(cat(where, "bad number of dimensions ", nd, ": ssmq reads 1 to ", idx_max_dims));
  idx_header h;
  h.header_bytes = 4 + 4 * nd;
  if (bytes.size() < h.header_bytes)
    throw data_error(cat(where, "truncated header: a ", nd, "-dimensional IDX file has a ",
                         h.header_bytes, "-byte header, ", contents, bytes_text(bytes.size())));
  // The bound keeps every size a valid std::vector / std::ptrdiff_t size.
  constexpr auto limit = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());
  std::size_t product = 1;
  bool overflow = false;
  for (std::size_t i = 0; i < nd; ++i) {
    const std::uint8_t* p = bytes.data() + 4 + 4 * i;
    const std::size_t d = (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) |
                          (std::size_t{p[2]} << 8) | std::size_t{p[3]};
    if (d == 0)
      throw data_error(cat(where, "dimension ", i + 1, " of ", nd, " is 0"));
    if (product > limit / d) overflow = true;
    if (!overflow) product *= d;
    h.dims.push_back(d);
  }
  if (overflow || product > limit - h.header_bytes)
    throw data_error(cat(where, "dimensions ", dims_text(h.dims),
                         " are too large (their product overflows the addressable size)"));
  const std::size_t payload = bytes.size() - h.header_bytes;
  if (payload < product)
    throw data_error(cat(where, "truncated data: the header (", dims_text(h.dims), ") announces ",
                         product, " bytes of data, ", contents, payload, " after the header"));
  if (payload > product)
    throw data_error(cat(where, "trailing garbage: ", bytes_text(payload - product), " after the ",
                         product, " bytes of data the header (", dims_text(h.dims), ") announces"));
  return h;
}

inline std::vector<std::uint8_t> read_file_bytes(const std::filesystem::path& path,
                                                 std::string_view what) {
  const std::string where = cat("ssmq: ", what, " ", quoted(path), ": ");
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (st.type() == std::filesystem::file_type::not_found)
    throw data_error(cat(where, "file not found"));
  if (ec) throw data_error(cat(where, "cannot access: ", ec.message()));
  if (std::filesystem::is_directory(st)) throw data_error(cat(where, "is a directory, not a file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw data_error(cat(where, "cannot open for reading"));
  std::vector<std::uint8_t> bytes;
  if (std::filesystem::is_regular_file(st)) {
    const auto size = std::filesystem::file_size(path, ec);
    if (!ec) bytes.reserve(static_cast<std::size_t>(size));
  }
  // Chunked, so that non-regular files (pipes) work and a file that changes size is read
  // as it is rather than as it was stat'ed.
  constexpr std::size_t chunk = std::size_t{1} << 20;
  std::size_t used = 0;
  while (in) {
    bytes.resize(used + chunk);
    in.read(reinterpret_cast<char*>(bytes.data() + used), static_cast<std::streamsize>(chunk));
    used += static_cast<std::size_t>(in.gcount());
  }
  if (in.bad()) throw data_error(cat(where, "read error"));
  bytes.resize(used);
  return bytes;
}

}  // namespace detail

/// True when `bytes` starts with the gzip magic number 1f 8b.
[[nodiscard]] inline bool is_gzip(std::span<const std::uint8_t> bytes) noexcept {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

/// Decompresses a complete gzip file (one or more concatenated members, RFC 1952) and checks
/// its CRC and length trailers (zlib does). `name` names the source in error messages.
/// Throws data_error on a corrupt stream, a truncated stream or bytes after the last member.
[[nodiscard]] inline std::vector<std::uint8_t> gunzip(std::span<const std::uint8_t> in,
                                                      std::string_view name) {
  const std::string where = detail::cat("ssmq: gzip file ", name, ": ");
  z_stream zs{};
  if (const int rc = inflateInit2(&zs, 16 + MAX_WBITS); rc != Z_OK) {
    if (rc == Z_MEM_ERROR) throw std::bad_alloc();
    throw data_error(detail::cat(where, "zlib initialisation failed (", rc, ")"));
  }
  struct end_guard {
    z_stream* s;
    ~end_guard() { inflateEnd(s); }
  } guard{&zs};
  // zlib counts in uInt: feed it at most 1 GiB at a time on either side.
  constexpr std::size_t max_step = std::size_t{1} << 30;
  std::vector<std::uint8_t> out(std::max<std::size_t>(in.size() * 4, 4096));
  std::size_t consumed = 0, produced = 0;
  for (;;) {
    if (produced == out.size()) out.resize(out.size() * 2);
    // zlib's next_in is not const unless ZLIB_CONST is defined before <zlib.h>; it only reads.
    zs.next_in = const_cast<Bytef*>(in.data() + consumed);
    zs.avail_in = static_cast<uInt>(std::min(in.size() - consumed, max_step));
    zs.next_out = out.data() + produced;
    zs.avail_out = static_cast<uInt>(std::min(out.size() - produced, max_step));
    const uInt in_given = zs.avail_in, out_given = zs.avail_out;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    consumed += in_given - zs.avail_in;
    produced += out_given - zs.avail_out;
    if (rc == Z_STREAM_END) {
      if (consumed == in.size()) break;
      if (is_gzip(in.subspan(consumed))) {  // another member follows
        inflateReset(&zs);
        continue;
      }
      throw data_error(detail::cat(where, "trailing garbage: ", detail::bytes_text(in.size() - consumed),
                                   " after the end of the gzip stream"));
    }
    if (rc == Z_MEM_ERROR) throw std::bad_alloc();
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      throw data_error(zs.msg ? detail::cat(where, "corrupt gzip stream (", zs.msg, ")")
                              : detail::cat(where, "corrupt gzip stream (zlib error ", rc, ")"));
    // All input used, room left for output, and still no end marker: the file was cut.
    if (consumed == in.size() && zs.avail_out != 0)
      throw data_error(detail::cat(where, "truncated gzip stream (the file ends before the end ",
                                   "of the compressed data)"));
  }
  out.resize(produced);
  out.shrink_to_fit();
  return out;
}

/// Parses an IDX image of unsigned bytes held in memory. `name` names the source in errors.
[[nodiscard]] inline idx_array parse_idx(std::span<const std::uint8_t> bytes,
                                         std::string_view name = "<memory>") {
  auto h = detail::parse_idx_header(bytes, name, false);
  return {std::move(h.dims), {bytes.begin() + static_cast<std::ptrdiff_t>(h.header_bytes), bytes.end()}};
}

/// Reads an IDX file of unsigned bytes, raw or gzip-compressed.
/// Throws data_error naming the file: missing or unreadable file, corrupt or truncated gzip
/// stream, bad magic, unsupported element type, bad dimensions, short or long data.
[[nodiscard]] inline idx_array read_idx(const std::filesystem::path& path) {
  std::vector<std::uint8_t> bytes = detail::read_file_bytes(path, "IDX file");
  const bool compressed = is_gzip(bytes);
  if (compressed) bytes = gunzip(bytes, detail::quoted(path));
  const std::string name = detail::quoted(path) + (compressed ? " (gzip)" : "");
  auto h = detail::parse_idx_header(bytes, name, compressed);
  // Drop the header in place: no second copy of a 47 MB image file.
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(h.header_bytes));
  return {std::move(h.dims), std::move(bytes)};
}

/// The bytes of an IDX file of unsigned bytes with the given dimensions.
/// Throws std::invalid_argument if the dimensions are not 1..4 non-zero values below 2^32
/// whose product is data.size().
[[nodiscard]] inline std::vector<std::uint8_t> encode_idx(std::span<const std::size_t> dims,
                                                          std::span<const std::uint8_t> data) {
  if (dims.empty() || dims.size() > idx_max_dims)
    throw std::invalid_argument(
        detail::cat("ssmq: encode_idx: an IDX file has 1 to 4 dimensions, got ", dims.size()));
  std::size_t product = 1;
  for (const std::size_t d : dims) {
    if (d == 0 || d > 0xFFFFFFFFu)
      throw std::invalid_argument(
          detail::cat("ssmq: encode_idx: dimension ", d, " is not in 1..2^32-1"));
    if (product > data.size()) break;  // cannot match; stops overflow early
    product *= d;
  }
  if (product != data.size())
    throw std::invalid_argument(detail::cat("ssmq: encode_idx: dimensions ", detail::dims_text(dims),
                                            " do not match ", data.size(), " elements"));
  std::vector<std::uint8_t> bytes = {0, 0, static_cast<std::uint8_t>(idx_type::u8),
                                     static_cast<std::uint8_t>(dims.size())};
  for (const std::size_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<std::uint8_t>(d >> shift));
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

/// Writes an IDX file of unsigned bytes, raw or gzip-compressed (zlib's gz* writer).
/// Throws std::invalid_argument for bad dimensions, data_error if the file cannot be written.
inline void write_idx(const std::filesystem::path& path, std::span<const std::size_t> dims,
                      std::span<const std::uint8_t> data,
                      idx_compression compression = idx_compression::raw) {
  const std::vector<std::uint8_t> bytes = encode_idx(dims, data);
  const std::string where = detail::cat("ssmq: cannot write IDX file ", detail::quoted(path));
  if (compression == idx_compression::raw) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) throw data_error(where);
    return;
  }
  gzFile gz = gzopen(path.c_str(), "wb");
  if (gz == nullptr) throw data_error(detail::cat(where, ": gzopen failed"));
  constexpr std::size_t max_step = std::size_t{1} << 30;
  bool ok = true;
  for (std::size_t pos = 0; ok && pos < bytes.size();) {
    const auto n = static_cast<unsigned>(std::min(bytes.size() - pos, max_step));
    ok = gzwrite(gz, bytes.data() + pos, n) == static_cast<int>(n);
    pos += n;
  }
  const bool closed = gzclose(gz) == Z_OK;
  if (!ok || !closed) throw data_error(detail::cat(where, ": gzip write failed"));
}

}  // namespace ssmq::data
