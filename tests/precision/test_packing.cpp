#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <ssmq/precision/packing.hpp>

TEST_CASE("int4: pack/unpack round-trips every byte value, first element in the low nibble") {
  using q4 = ssmq::qint<4>;
  for (unsigned b = 0; b < 256; ++b) {
    const std::array<std::uint8_t, 1> byte{static_cast<std::uint8_t>(b)};
    std::array<std::int8_t, 2> v{};
    ssmq::unpack<q4>(byte, v);
    const int lo = static_cast<int>(b & 0xF), hi = static_cast<int>(b >> 4);
    REQUIRE(v[0] == (lo >= 8 ? lo - 16 : lo));
    REQUIRE(v[1] == (hi >= 8 ? hi - 16 : hi));
    std::array<std::uint8_t, 1> again{};
    ssmq::pack<q4>(v, again);
    REQUIRE(again[0] == b);
  }
}

TEST_CASE("uint4 and int2: every byte value round-trips") {
  using u4 = ssmq::qint<4, ssmq::signedness::unsigned_int>;
  using q2 = ssmq::qint<2>;
  for (unsigned b = 0; b < 256; ++b) {
    const std::array<std::uint8_t, 1> byte{static_cast<std::uint8_t>(b)};
    std::array<std::uint8_t, 2> u{};
    ssmq::unpack<u4>(byte, u);
    REQUIRE(u[0] == (b & 0xF));
    REQUIRE(u[1] == (b >> 4));
    std::array<std::int8_t, 4> s{};
    ssmq::unpack<q2>(byte, s);
    for (int k = 0; k < 4; ++k) {
      const int slot = static_cast<int>((b >> (2 * k)) & 3u);
      REQUIRE(s[static_cast<std::size_t>(k)] == (slot >= 2 ? slot - 4 : slot));
    }
    std::array<std::uint8_t, 1> again{};
    ssmq::pack<q2>(s, again);
    REQUIRE(again[0] == b);
  }
}

TEST_CASE("pack: odd counts leave the unused high nibble zero, sizes are checked") {
  using q4 = ssmq::qint<4>;
  const std::vector<std::int8_t> v{-8, 7, -1};
  CHECK(ssmq::packed_bytes<q4>(3) == 2);
  std::vector<std::uint8_t> bytes(2);
  ssmq::pack<q4>(v, bytes);
  CHECK(bytes[0] == 0x78);
  CHECK(bytes[1] == 0x0F);
  std::vector<std::uint8_t> wrong(3);
  CHECK_THROWS_AS(ssmq::pack<q4>(v, wrong), std::invalid_argument);
  std::vector<std::int8_t> out(5);  // needs 3 bytes
  CHECK_THROWS_AS(ssmq::unpack<q4>(bytes, out), std::invalid_argument);
}

TEST_CASE("packed_vector: 3-bit values in 4-bit slots, get/set, range checks") {
  using q3 = ssmq::qint<3>;
  static_assert(q3::per_byte == 2);
  ssmq::packed_vector<q3> pv(5);
  CHECK(pv.bytes().size() == 3);
  const std::array<std::int8_t, 5> vals{-4, 3, 0, -1, 2};
  for (std::size_t i = 0; i < vals.size(); ++i) pv.set(i, vals[i]);
  for (std::size_t i = 0; i < vals.size(); ++i) CHECK(pv.get(i) == vals[i]);
  CHECK_THROWS_AS(pv.set(0, 4), std::out_of_range);   // 3-bit signed max is 3
  CHECK_THROWS_AS(pv.set(0, -5), std::out_of_range);
  CHECK_THROWS_AS((void)pv.get(5), std::out_of_range);
  ssmq::packed_vector<ssmq::qint<12>> wide(3);
  CHECK(wide.bytes().size() == 6);
  wide.set(1, -2048);
  wide.set(2, 2047);
  CHECK(wide.get(0) == 0);
  CHECK(wide.get(1) == -2048);
  CHECK(wide.get(2) == 2047);
}
