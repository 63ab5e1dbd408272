#pragma once
// The one normative rounding rule of ssmq: round half up (ties toward +infinity).
//
//   round_half_up(v) = floor(v + 1/2)
//
// It is used by the fake quantizer (float shadow of QAT) and by the integer requantizer, so
// QAT simulates exactly what integer kernels compute. Pinned cases: 2.5 -> 3, -0.5 -> 0,
// -62.5 -> -62, -1.5 -> -1. See docs/design.md, "Rounding".
#include <cmath>
#include <cstdint>

namespace ssmq {

/// Round half up for float. Computed as floor(v) + (v - floor(v) >= 0.5): the fraction
/// v - floor(v) is exact in IEEE arithmetic, whereas floor(v + 0.5f) would round
/// 0.49999997f up to 1 because v + 0.5f itself rounds.
[[nodiscard]] inline float round_half_up(float v) noexcept {
  const float f = std::floor(v);
  return (v - f >= 0.5f) ? f + 1.0f : f;
}

/// Same rule in double, for reference computations in tests.
[[nodiscard]] inline double round_half_up(double v) noexcept {
  const double f = std::floor(v);
  return (v - f >= 0.5) ? f + 1.0 : f;
}

/// Integer form: floor(value / 2^shift + 1/2) for shift in [1, 62], i.e.
/// (value + 2^(shift-1)) >> shift with an arithmetic shift (defined in C++20).
/// The caller keeps |value| < 2^62 so that the addition cannot overflow.
[[nodiscard]] constexpr std::int64_t rounding_shift_right(std::int64_t value, int shift) noexcept {
  return (value + (std::int64_t{1} << (shift - 1))) >> shift;
}

}  // namespace ssmq
