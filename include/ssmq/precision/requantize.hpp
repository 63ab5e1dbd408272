#pragma once
// Requantization for integer pipelines: a real multiplier (e.g. s_in * s_w / s_out) is
// encoded as an int32 mantissa M0 in [2^30, 2^31) and a right shift s, real ~ M0 * 2^-s, and
// applied with a single rounding (round half up, see rounding.hpp):
//   out = saturate(((acc * M0 + 2^(s-1)) >> s) + zero_point, qmin, qmax)
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "integer_storage.hpp"
#include "rounding.hpp"

namespace ssmq {

/// M0 * 2^-shift approximates a positive real multiplier; shift is in [1, 62] so that the
/// rounding term 2^(shift-1) exists and acc * M0 + 2^(shift-1) fits int64 for int32 acc.
struct fixed_multiplier {
  std::int32_t m0 = 0;
  int shift = 1;
  [[nodiscard]] double value() const noexcept { return std::ldexp(static_cast<double>(m0), -shift); }
  friend constexpr bool operator==(const fixed_multiplier&, const fixed_multiplier&) = default;
};

/// Encodes a real multiplier in [0, 2^30). Multipliers so small that every int32
/// accumulator would round to 0 (below 2^-32) encode as M0 = 0.
[[nodiscard]] inline fixed_multiplier make_fixed_multiplier(double real) {
  if (!(real >= 0.0) || !std::isfinite(real))
    throw std::invalid_argument("ssmq: a requantization multiplier must be finite and >= 0, got " +
                                std::to_string(real));
  if (real >= std::ldexp(1.0, 30))
    throw std::invalid_argument("ssmq: requantization multiplier " + std::to_string(real) +
                                " is too large (must be < 2^30)");
  if (real == 0.0) return {0, 1};
  int exponent = 0;
  const double mantissa = std::frexp(real, &exponent);  // real = mantissa * 2^exponent, [0.5, 1)
  auto m0 = static_cast<std::int64_t>(round_half_up(mantissa * 2147483648.0));  // * 2^31
  if (m0 == (std::int64_t{1} << 31)) {  // mantissa rounded up to 1.0
    m0 /= 2;
    ++exponent;
  }
  const int shift = 31 - exponent;
  if (shift > 62) return {0, 1};
  return {static_cast<std::int32_t>(m0), shift};
}

/// Applies a fixed multiplier to one accumulator (the scalar reference).
[[nodiscard]] constexpr std::int32_t requantize(std::int32_t acc, fixed_multiplier m,
                                                std::int32_t zero_point, int_limits lim) noexcept {
  const std::int64_t scaled = rounding_shift_right(std::int64_t{acc} * m.m0, m.shift);
  return saturate(scaled + zero_point, lim.qmin, lim.qmax);
}

}  // namespace ssmq
