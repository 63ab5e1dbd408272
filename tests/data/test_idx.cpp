// IDX reading: raw and gzip files built here byte by byte, and each way a file can be wrong.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <ssmq/data/idx.hpp>

namespace fs = std::filesystem;
using ssmq::data::data_error;
using bytes = std::vector<std::uint8_t>;

namespace {

// A fresh directory under the system's temporary directory, removed with its contents.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::random_device rd;
    for (;;) {
      path = fs::temp_directory_path() / "ssmq-test-idx";
      path += ssmq::data::detail::cat("-", rd(), "-", rd());
      if (fs::create_directory(path)) break;
    }
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  fs::path operator/(const std::string& name) const { return path / name; }
};

fs::path write_raw(const fs::path& p, const bytes& b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
  return p;
}

// One gzip member holding b, written with zlib's own gzip writer.
fs::path write_gz(const fs::path& p, const bytes& b) {
  gzFile gz = gzopen(p.c_str(), "wb");
  REQUIRE(gz != nullptr);
  REQUIRE(gzwrite(gz, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
  REQUIRE(gzclose(gz) == Z_OK);
  return p;
}

bytes read_raw(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A 2 x 2 x 3 IDX file of unsigned bytes: header then the values 0, 10, ..., 110.
bytes sample_idx() {
  bytes b = {0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
  for (std::uint8_t v = 0; v < 12; ++v) b.push_back(static_cast<std::uint8_t>(v * 10));
  return b;
}

// Runs f, which must throw data_error; checks that the message starts with "ssmq: " and
// contains every one of `parts` (the file name, the problem).
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  std::string message;
  try {
    f();
  } catch (const data_error& e) {
    message = e.what();
  }
  INFO("message: ", message);
  REQUIRE_MESSAGE(!message.empty(), "expected a data_error");
  CHECK(message.rfind("ssmq: ", 0) == 0);
  for (const std::string& part : parts) CHECK_MESSAGE(message.find(part) != std::string::npos, part);
}

}  // namespace

TEST_CASE("idx: encode_idx writes the big-endian header and the data") {
  const std::vector<std::size_t> dims = {2, 3};
  const bytes data = {1, 2, 3, 4, 5, 6};
  CHECK(ssmq::data::encode_idx(dims, data) ==
        bytes{0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6});
  const std::vector<std::size_t> big = {0x01020304};
  const bytes many(0x01020304, 7);
  const bytes head = ssmq::data::encode_idx(big, many);
  CHECK(bytes(head.begin(), head.begin() + 8) == bytes{0, 0, 8, 1, 1, 2, 3, 4});
  const std::vector<std::size_t> wrong = {2, 2};
  CHECK_THROWS_AS((void)ssmq::data::encode_idx(wrong, data), std::invalid_argument);
  const std::vector<std::size_t> none = {};
  CHECK_THROWS_AS((void)ssmq::data::encode_idx(none, data), std::invalid_argument);
}

TEST_CASE("idx: a raw file gives its dimensions and values") {
  temp_dir tmp;
  const auto a = ssmq::data::read_idx(write_raw(tmp / "a.idx", sample_idx()));
  CHECK(a.dims == std::vector<std::size_t>{2, 2, 3});
  REQUIRE(a.count() == 12);
  for (std::size_t i = 0; i < 12; ++i) CHECK(a.data[i] == i * 10);

  // 1 and 4 dimensions, and a dimension that needs all four header bytes.
  const auto one = ssmq::data::read_idx(write_raw(tmp / "one", {0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9}));
  CHECK(one.dims == std::vector<std::size_t>{3});
  CHECK(one.data == bytes{7, 8, 9});
  bytes four = {0, 0, 8, 4, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2, 3, 4};
  CHECK(ssmq::data::read_idx(write_raw(tmp / "four", four)).dims == std::vector<std::size_t>{1, 2, 1, 2});
  const std::vector<std::size_t> long_dims = {70000};
  const bytes long_data(70000, 3);
  ssmq::data::write_idx(tmp / "long", long_dims, long_data);
  const auto l = ssmq::data::read_idx(tmp / "long");
  CHECK(l.dims == long_dims);
  CHECK(l.data == long_data);
  CHECK(read_raw(tmp / "long").size() == 8 + 70000);

  // The in-memory parser agrees.
  const bytes mem = sample_idx();
  CHECK(ssmq::data::parse_idx(mem).data == a.data);
}

TEST_CASE("idx: a gzip file reads the same as the raw file") {
  temp_dir tmp;
  const auto raw = ssmq::data::read_idx(write_raw(tmp / "a.idx", sample_idx()));
  // The name does not matter: gzip is detected from the magic bytes 1f 8b.
  for (const char* name : {"a.idx.gz", "a-no-suffix"}) {
    const auto gz = ssmq::data::read_idx(write_gz(tmp / name, sample_idx()));
    CHECK(gz.dims == raw.dims);
    CHECK(gz.data == raw.data);
  }
  // Two concatenated gzip members are one valid gzip file (RFC 1952).
  const bytes whole = sample_idx();
  const bytes first(whole.begin(), whole.begin() + 10), second(whole.begin() + 10, whole.end());
  bytes cat = read_raw(write_gz(tmp / "m1.gz", first));
  const bytes tail = read_raw(write_gz(tmp / "m2.gz", second));
  cat.insert(cat.end(), tail.begin(), tail.end());
  CHECK(ssmq::data::read_idx(write_raw(tmp / "cat.gz", cat)).data == raw.data);
  // The library's writer, raw and gzip, round-trips too.
  ssmq::data::write_idx(tmp / "w.gz", raw.dims, raw.data, ssmq::data::idx_compression::gzip);
  CHECK(ssmq::data::is_gzip(read_raw(tmp / "w.gz")));
  CHECK(ssmq::data::read_idx(tmp / "w.gz").data == raw.data);
}

TEST_CASE("idx: a missing file or a directory is an error naming the path") {
  temp_dir tmp;
  const fs::path missing = tmp / "no-such-file-idx3-ubyte";
  expect_error([&] { (void)ssmq::data::read_idx(missing); }, {missing.string(), "file not found"});
  expect_error([&] { (void)ssmq::data::read_idx(tmp.path); }, {tmp.path.string(), "is a directory"});
}

TEST_CASE("idx: header errors name the file and the problem") {
  temp_dir tmp;
  auto check = [&](const std::string& name, const bytes& b, std::initializer_list<std::string> parts) {
    CAPTURE(name);
    const fs::path p = write_raw(tmp / name, b);
    std::vector<std::string> all(parts);
    all.push_back(p.string());
    std::string message;
    try {
      (void)ssmq::data::read_idx(p);
    } catch (const data_error& e) {
      message = e.what();
    }
    INFO("message: ", message);
    REQUIRE_MESSAGE(!message.empty(), "expected a data_error");
    for (const auto& part : all) CHECK_MESSAGE(message.find(part) != std::string::npos, part);
  };
  check("empty", {}, {"truncated header", "0 bytes"});
  check("magic-only-3", {0, 0, 8}, {"truncated header", "3 bytes"});
  check("header-cut", {0, 0, 8, 3, 0, 0, 0, 2, 0, 0}, {"truncated header", "16-byte header", "10 bytes"});
  check("bad-magic", {0x50, 0x4B, 3, 4, 0, 0, 0, 1, 9}, {"bad magic number 0x50 0x4B 0x03 0x04"});
  check("float-type", {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0},
        {"element type 0x0D (32-bit float) is not supported", "only 0x08"});
  check("unknown-type", {0, 0, 0x07, 1, 0, 0, 0, 1, 9}, {"unknown element type 0x07"});
  check("zero-dims", {0, 0, 8, 0}, {"bad number of dimensions 0", "1 to 4"});
  check("five-dims", {0, 0, 8, 5}, {"bad number of dimensions 5"});
  check("zero-dim", {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3}, {"dimension 2 of 3 is 0"});
  check("overflow",
        {0, 0, 8, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
         0xFF, 0xFF, 0xFF, 0xFF},
        {"too large", "4294967295 x 4294967295"});
}

TEST_CASE("idx: data shorter or longer than the header says is an error") {
  temp_dir tmp;
  bytes cut = sample_idx();
  cut.pop_back();
  expect_error([&] { (void)ssmq::data::read_idx(write_raw(tmp / "cut", cut)); },
               {"cut", "truncated data", "(2 x 2 x 3) announces 12 bytes", "11 after the header"});
  bytes longer = sample_idx();
  longer.push_back(0);
  expect_error([&] { (void)ssmq::data::read_idx(write_raw(tmp / "long", longer)); },
               {"long", "trailing garbage: 1 byte after the 12 bytes of data"});
  // The same checks apply to the decompressed contents of a gzip file.
  expect_error([&] { (void)ssmq::data::read_idx(write_gz(tmp / "cut.gz", cut)); },
               {"cut.gz", "(gzip)", "truncated data", "decompressed contents have 11"});
  expect_error([&] { (void)ssmq::data::read_idx(write_gz(tmp / "long.gz", longer)); },
               {"long.gz", "trailing garbage"});
  // A gzip file whose contents are not IDX.
  expect_error([&] { (void)ssmq::data::read_idx(write_gz(tmp / "text.gz", {'h', 'e', 'l', 'l', 'o'})); },
               {"text.gz", "bad magic number"});
}

TEST_CASE("idx: a corrupt or truncated gzip stream is an error") {
  temp_dir tmp;
  const bytes good = read_raw(write_gz(tmp / "good.gz", sample_idx()));
  REQUIRE(good.size() > 20);

  bytes crc = good;  // the CRC-32 trailer: 8 bytes from the end
  crc[crc.size() - 8] ^= 0xFF;
  expect_error([&] { (void)ssmq::data::read_idx(write_raw(tmp / "crc.gz", crc)); },
               {"crc.gz", "corrupt gzip stream", "incorrect data check"});

  bytes method = good;  // the compression method byte: 8 (deflate) is the only one
  method[2] = 7;
  expect_error([&] { (void)ssmq::data::read_idx(write_raw(tmp / "method.gz", method)); },
               {"method.gz", "corrupt gzip stream"});

  const bytes cut(good.begin(), good.end() - 5);
  expect_error([&] { (void)ssmq::data::read_idx(write_raw(tmp / "cut.gz", cut)); },
               {"cut.gz", "truncated gzip stream"});
  expect_error([&] { (void)ssmq::data::read_idx(write_raw(tmp / "magic.gz", {0x1f, 0x8b})); },
               {"magic.gz", "truncated gzip stream"});

  bytes garbage = good;
  garbage.push_back(0);
  garbage.push_back(0);
  expect_error([&] { (void)ssmq::data::read_idx(write_raw(tmp / "garbage.gz", garbage)); },
               {"garbage.gz", "trailing garbage: 2 bytes after the end of the gzip stream"});
}
