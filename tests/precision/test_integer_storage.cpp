#include <doctest/doctest.h>

#include <cstdint>
#include <type_traits>

#include <ssmq/precision/integer_storage.hpp>

using ssmq::int_range;
using ssmq::signedness;

TEST_CASE("limits_of: signed, unsigned, full and narrow ranges") {
  const auto s8 = ssmq::limits_of(8, signedness::signed_int, int_range::full);
  CHECK(s8.qmin == -128);
  CHECK(s8.qmax == 127);
  const auto s8n = ssmq::limits_of(8, signedness::signed_int, int_range::narrow);
  CHECK(s8n.qmin == -127);
  CHECK(s8n.qmax == 127);
  const auto u8 = ssmq::limits_of(8, signedness::unsigned_int, int_range::full);
  CHECK(u8.qmin == 0);
  CHECK(u8.qmax == 255);
  const auto u8n = ssmq::limits_of(8, signedness::unsigned_int, int_range::narrow);
  CHECK(u8n.qmax == 254);
  const auto s2 = ssmq::limits_of(2, signedness::signed_int, int_range::full);
  CHECK(s2.qmin == -2);
  CHECK(s2.qmax == 1);
  const auto s16 = ssmq::limits_of(16, signedness::signed_int, int_range::full);
  CHECK(s16.qmin == -32768);
  CHECK(s16.qmax == 32767);
  for (int b = 2; b <= 16; ++b) {
    const auto l = ssmq::limits_of(b, signedness::signed_int, int_range::full);
    CHECK(l.qmax - l.qmin + 1 == (1 << b));
  }
}

TEST_CASE("saturate clamps wide values") {
  CHECK(ssmq::saturate(1000LL, -128, 127) == 127);
  CHECK(ssmq::saturate(-1000LL, -128, 127) == -128);
  CHECK(ssmq::saturate(5LL, -128, 127) == 5);
  CHECK(ssmq::saturate(static_cast<long long>(INT64_MIN), -8, 7) == -8);
}

TEST_CASE("accumulator_bits counts product and sum growth") {
  CHECK(ssmq::accumulator_bits(8, 8, 1) == 16);
  CHECK(ssmq::accumulator_bits(8, 8, 2) == 17);
  CHECK(ssmq::accumulator_bits(8, 8, 1024) == 26);
  CHECK(ssmq::accumulator_bits(8, 8, 1025) == 27);
  CHECK(ssmq::accumulator_bits(4, 6, 16) == 14);
}

TEST_CASE("limits_of a width that is not an integer precision is empty, not undefined behaviour") {
  const auto f = ssmq::limits_of(ssmq::fp32, signedness::signed_int, int_range::full);
  CHECK(f.qmin == 0);
  CHECK(f.qmax == 0);
  CHECK(ssmq::limits_of(1, signedness::unsigned_int, int_range::full).qmax == 0);
}
