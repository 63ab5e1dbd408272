#pragma once
// Integer domains for a bit-width chosen at compile time: the storage type, the clamp range
// [qmin, qmax] (signed or unsigned, full or narrow range) and the accumulator width needed
// for products and sums, so bit growth is computed rather than guessed.
#include <cstdint>
#include <limits>
#include <type_traits>

namespace ssmq {

/// Marks "not quantized": a component at fp32 keeps float32 values.
inline constexpr int fp32 = 32;

enum class signedness : std::uint8_t { signed_int, unsigned_int };
enum class int_range : std::uint8_t { full, narrow };

/// True for the integer bit-widths ssmq supports.
[[nodiscard]] constexpr bool valid_int_bits(int bits) noexcept { return bits >= 2 && bits <= 16; }
/// True for any precision: an integer width or fp32.
[[nodiscard]] constexpr bool valid_precision_bits(int bits) noexcept {
  return valid_int_bits(bits) || bits == fp32;
}

/// Smallest signed integer type with at least `bits` bits (8, 16, 32 or 64).
template <int Bits>
using signed_int_for_t = std::conditional_t<
    (Bits <= 8), std::int8_t,
    std::conditional_t<(Bits <= 16), std::int16_t,
                       std::conditional_t<(Bits <= 32), std::int32_t, std::int64_t>>>;

/// Smallest unsigned integer type with at least `bits` bits.
template <int Bits>
using unsigned_int_for_t = std::conditional_t<
    (Bits <= 8), std::uint8_t,
    std::conditional_t<(Bits <= 16), std::uint16_t,
                       std::conditional_t<(Bits <= 32), std::uint32_t, std::uint64_t>>>;

/// The clamp range of a b-bit integer (runtime form, shared with qint below).
struct int_limits {
  std::int32_t qmin;
  std::int32_t qmax;
};

/// For a width outside 2..16 (e.g. fp32: not an integer precision) the range is empty {0, 0}.
[[nodiscard]] constexpr int_limits limits_of(int bits, signedness s, int_range r) noexcept {
  if (!valid_int_bits(bits)) return {0, 0};
  if (s == signedness::signed_int) {
    const std::int32_t lo = -(std::int32_t{1} << (bits - 1));
    return {r == int_range::narrow ? lo + 1 : lo, (std::int32_t{1} << (bits - 1)) - 1};
  }
  const std::int32_t hi = (std::int32_t{1} << bits) - 1;
  return {0, r == int_range::narrow ? hi - 1 : hi};
}

/// Bits a packed element occupies in memory: sub-byte widths are packed in 2- or 4-bit
/// slots (several values per byte), wider ones use whole bytes.
[[nodiscard]] constexpr int storage_bits(int bits) noexcept {
  if (bits == fp32) return 32;
  if (bits <= 2) return 2;
  if (bits <= 4) return 4;
  if (bits <= 8) return 8;
  return 16;
}

/// A b-bit integer domain: the compile-time fixed-point vocabulary.
template <int Bits, signedness Sign = signedness::signed_int, int_range Range = int_range::full>
struct qint {
  static_assert(Bits >= 2 && Bits <= 16,
                "ssmq: integer precision must be 2..16 bits; use ssmq::fp32 for float");
  static constexpr int bits = Bits;
  static constexpr signedness sign = Sign;
  static constexpr int_range range = Range;
  static constexpr bool is_signed = Sign == signedness::signed_int;
  using storage_type =
      std::conditional_t<is_signed, signed_int_for_t<Bits>, unsigned_int_for_t<Bits>>;
  static constexpr std::int32_t qmin = limits_of(Bits, Sign, Range).qmin;
  static constexpr std::int32_t qmax = limits_of(Bits, Sign, Range).qmax;
  /// Values per byte in packed storage (1 for widths above 4 bits).
  static constexpr int per_byte = storage_bits(Bits) < 8 ? 8 / storage_bits(Bits) : 1;
  static constexpr bool packed = per_byte > 1;
};

/// Bits needed to hold any sum of `terms` products of an a-bit and a b-bit signed value.
[[nodiscard]] constexpr int accumulator_bits(int a_bits, int b_bits, long long terms) noexcept {
  int growth = 0;
  while ((1LL << growth) < terms) ++growth;
  return a_bits + b_bits + growth;
}

/// The narrowest signed type that accumulates `Terms` products of A and B without overflow.
template <class A, class B, long long Terms = 1>
using accumulator_t = signed_int_for_t<accumulator_bits(A::bits, B::bits, Terms)>;

/// Saturates a wide integer to [lo, hi].
template <class T>
[[nodiscard]] constexpr std::int32_t saturate(T v, std::int32_t lo, std::int32_t hi) noexcept {
  return v < lo ? lo : (v > hi ? hi : static_cast<std::int32_t>(v));
}

}  // namespace ssmq
