#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include <ssmq/precision/requantize.hpp>

TEST_CASE("make_fixed_multiplier: M0 between 2^30 and 2^31, value within 2^-31 relative") {
  for (const double real : {1e-9, 3.1e-5, 0.0123, 0.25, 0.5, 0.75, 0.999999999, 1.0, 3.7, 1000.0}) {
    const auto m = ssmq::make_fixed_multiplier(real);
    REQUIRE(m.m0 >= (1 << 30));
    REQUIRE(m.shift >= 1);
    REQUIRE(m.shift <= 62);
    CHECK(std::fabs(m.value() - real) <= real * std::ldexp(1.0, -31));
  }
  // A power of two is exact.
  const auto half = ssmq::make_fixed_multiplier(0.5);
  CHECK(half.m0 == (1 << 30));
  CHECK(half.shift == 31);
  // A mantissa that rounds up to 1.0 moves to the next exponent.
  const auto almost_one = ssmq::make_fixed_multiplier(std::nextafter(1.0, 0.0));
  CHECK(almost_one.m0 == (1 << 30));
  CHECK(almost_one.shift == 30);
}

TEST_CASE("make_fixed_multiplier: zero, tiny and invalid multipliers") {
  CHECK(ssmq::make_fixed_multiplier(0.0).m0 == 0);
  CHECK(ssmq::make_fixed_multiplier(1e-20).m0 == 0);  // below 2^-32: every int32 rounds to 0
  CHECK_THROWS_AS((void)ssmq::make_fixed_multiplier(-0.5), std::invalid_argument);
  CHECK_THROWS_AS((void)ssmq::make_fixed_multiplier(std::nan("")), std::invalid_argument);
  CHECK_THROWS_AS((void)ssmq::make_fixed_multiplier(std::ldexp(1.0, 30)), std::invalid_argument);
}

TEST_CASE("requantize: single rounding, half up, then zero-point and saturation") {
  const ssmq::int_limits s8{-128, 127};
  const ssmq::fixed_multiplier half{1 << 30, 31};  // exactly 0.5
  CHECK(ssmq::requantize(5, half, 0, s8) == 3);      // 2.5 -> 3
  CHECK(ssmq::requantize(-5, half, 0, s8) == -2);    // -2.5 -> -2
  CHECK(ssmq::requantize(-125, half, 0, s8) == -62); // -62.5 -> -62
  CHECK(ssmq::requantize(-1, half, 0, s8) == 0);     // -0.5 -> 0
  CHECK(ssmq::requantize(4, half, 10, s8) == 12);    // zero-point added after rounding
  CHECK(ssmq::requantize(1000, half, 0, s8) == 127); // saturates high
  CHECK(ssmq::requantize(-1000, half, 0, s8) == -128);
  const auto big = ssmq::make_fixed_multiplier(1000.0);
  CHECK(ssmq::requantize(std::numeric_limits<std::int32_t>::max(), big, 0, s8) == 127);
  CHECK(ssmq::requantize(std::numeric_limits<std::int32_t>::min(), big, 0, s8) == -128);
}

TEST_CASE("requantize agrees with the real-valued formula") {
  const ssmq::int_limits s16{-32768, 32767};
  for (const double real : {0.00371, 0.1, 0.7, 1.3}) {
    const auto m = ssmq::make_fixed_multiplier(real);
    for (std::int32_t acc = -200'000; acc <= 200'000; acc += 997) {
      const double exact = std::floor(static_cast<double>(acc) * m.value() + 0.5);
      const double clamped = std::fmin(std::fmax(exact + 3, -32768.0), 32767.0);
      REQUIRE(ssmq::requantize(acc, m, 3, s16) == static_cast<std::int32_t>(clamped));
    }
  }
}
