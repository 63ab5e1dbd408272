#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include <ssmq/precision/rounding.hpp>

TEST_CASE("round_half_up: ties go toward +infinity") {
  CHECK(ssmq::round_half_up(2.5f) == 3.0f);
  CHECK(ssmq::round_half_up(-0.5f) == 0.0f);
  CHECK(ssmq::round_half_up(-62.5f) == -62.0f);
  CHECK(ssmq::round_half_up(-1.5f) == -1.0f);
  CHECK(ssmq::round_half_up(0.5f) == 1.0f);
  CHECK(ssmq::round_half_up(-2.5) == -2.0);
  CHECK(ssmq::round_half_up(2.5) == 3.0);
}

TEST_CASE("round_half_up: non-ties round to nearest") {
  CHECK(ssmq::round_half_up(2.4f) == 2.0f);
  CHECK(ssmq::round_half_up(2.6f) == 3.0f);
  CHECK(ssmq::round_half_up(-2.4f) == -2.0f);
  CHECK(ssmq::round_half_up(-2.6f) == -3.0f);
  // The float just below 0.5: floor(x + 0.5f) would give 1 because x + 0.5f rounds up.
  const float below_half = std::nextafter(0.5f, 0.0f);
  CHECK(ssmq::round_half_up(below_half) == 0.0f);
  CHECK(ssmq::round_half_up(-std::nextafter(0.5f, 1.0f)) == -1.0f);
}

TEST_CASE("round_half_up: large and special values") {
  CHECK(ssmq::round_half_up(16777216.0f) == 16777216.0f);  // 2^24: already an integer
  CHECK(ssmq::round_half_up(-8388607.5f) == -8388607.0f);  // largest tie a float can hold
  CHECK(std::isinf(ssmq::round_half_up(std::numeric_limits<float>::infinity())));
  CHECK(std::isnan(ssmq::round_half_up(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("rounding_shift_right is round half up of value / 2^shift") {
  CHECK(ssmq::rounding_shift_right(5, 1) == 3);     // 2.5 -> 3
  CHECK(ssmq::rounding_shift_right(-5, 1) == -2);   // -2.5 -> -2
  CHECK(ssmq::rounding_shift_right(-125, 1) == -62);  // -62.5 -> -62
  CHECK(ssmq::rounding_shift_right(-1, 1) == 0);    // -0.5 -> 0
  CHECK(ssmq::rounding_shift_right(7, 2) == 2);     // 1.75 -> 2
  CHECK(ssmq::rounding_shift_right(-7, 2) == -2);   // -1.75 -> -2
  CHECK(ssmq::rounding_shift_right(-6, 2) == -1);   // -1.5 -> -1
  // The float rule and the integer rule agree on every tie and non-tie in a range.
  for (int v = -1000; v <= 1000; ++v)
    for (int s = 1; s <= 4; ++s)
      REQUIRE(ssmq::rounding_shift_right(v, s) ==
              static_cast<long long>(ssmq::round_half_up(static_cast<double>(v) / (1 << s))));
}
