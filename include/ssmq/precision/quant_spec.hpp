#pragma once
// How one tensor is quantized, as a literal value type: bit-width plus the orthogonal policy
// choices (symmetry, granularity, calibration, static/dynamic range, signedness, narrow
// range). Policy tag types (ssmq::symmetric, ssmq::per_tensor, ...) edit a quant_spec at
// compile time; the same value drives runtime code such as the command-line tool.
#include <concepts>
#include <cstdint>

#include "integer_storage.hpp"

namespace ssmq {

enum class symmetry : std::uint8_t { asymmetric, symmetric };
enum class granularity : std::uint8_t { per_head, per_tensor };
enum class calibration : std::uint8_t { percentile, minmax };
enum class range_mode : std::uint8_t { static_range, dynamic_range };

/// One tensor's quantization recipe. bits == fp32 means "not quantized".
struct quant_spec {
  int bits = fp32;
  symmetry sym = symmetry::asymmetric;
  granularity gran = granularity::per_head;
  calibration calib = calibration::percentile;
  range_mode mode = range_mode::static_range;
  int_range range = int_range::full;
  signedness sign = signedness::signed_int;
  /// Percentile for calibration::percentile, in thousandths of a percent (99999 = 99.999 %).
  int percentile_milli = 99'999;
  /// Ā only: a complex value whose nearest (re, im) grid point lies on or outside the unit
  /// circle takes the nearest grid point strictly inside it, so a stable Ā stays stable.
  bool inside_unit_circle = false;
  /// C̄ only: C̄ carries B̄ (s4d/fold.hpp). With one input per head, B̄ and C̄ enter the output
  /// only as the product C̄_n B̄_n, so B̄ folds into C̄ exactly and leaves one float per head.
  bool carries_bbar = false;
  /// Complex tensors only (Ā, B̄, C̄), in (re, im) format: the real and the imaginary parts
  /// each get their own range (per head, or per tensor). Where Ā's modes turn slowly its
  /// real parts crowd just below 1: one range shared with the imaginary parts and 0 leaves
  /// them, which set each mode's decay, a handful of levels.
  bool split_parts = false;

  [[nodiscard]] constexpr bool quantized() const noexcept { return bits != fp32; }
  [[nodiscard]] constexpr int_limits limits() const noexcept { return limits_of(bits, sign, range); }
  [[nodiscard]] constexpr double percentile() const noexcept { return percentile_milli / 1000.0; }
  friend constexpr bool operator==(const quant_spec&, const quant_spec&) = default;
};

// ---- policy tags: each one edits the spec it is applied to --------------------------------
struct symmetric {
  static constexpr void apply(quant_spec& s) noexcept { s.sym = symmetry::symmetric; }
};
struct asymmetric {
  static constexpr void apply(quant_spec& s) noexcept { s.sym = symmetry::asymmetric; }
};
struct per_head {
  static constexpr void apply(quant_spec& s) noexcept { s.gran = granularity::per_head; }
};
struct per_tensor {
  static constexpr void apply(quant_spec& s) noexcept { s.gran = granularity::per_tensor; }
};
struct minmax {
  static constexpr void apply(quant_spec& s) noexcept { s.calib = calibration::minmax; }
};
/// Percentile calibration; Milli is the percentile in thousandths of a percent.
template <int Milli = 99'999>
struct percentile {
  static_assert(Milli > 50'000 && Milli <= 100'000,
                "ssmq: a calibration percentile must lie in (50, 100] percent");
  static constexpr void apply(quant_spec& s) noexcept {
    s.calib = calibration::percentile;
    s.percentile_milli = Milli;
  }
};
struct dynamic {
  static constexpr void apply(quant_spec& s) noexcept { s.mode = range_mode::dynamic_range; }
};
struct static_calibrated {
  static constexpr void apply(quant_spec& s) noexcept { s.mode = range_mode::static_range; }
};
struct narrow_range {
  static constexpr void apply(quant_spec& s) noexcept { s.range = int_range::narrow; }
};
struct unsigned_int {
  static constexpr void apply(quant_spec& s) noexcept { s.sign = signedness::unsigned_int; }
};
/// Ā only: round every mode to a grid point strictly inside the unit circle (see quant_spec).
struct inside_unit_circle {
  static constexpr void apply(quant_spec& s) noexcept { s.inside_unit_circle = true; }
};

/// C̄ only: fold B̄ into C̄ (see quant_spec::carries_bbar); the configuration names no B̄.
struct carries_bbar {
  static constexpr void apply(quant_spec& s) noexcept { s.carries_bbar = true; }
};

/// Ā, B̄, C̄ only: the real and imaginary parts get their own ranges (see quant_spec).
struct split_re_im {
  static constexpr void apply(quant_spec& s) noexcept { s.split_parts = true; }
};

/// A policy tag: something that edits a quant_spec.
template <class P>
concept quant_policy = requires(quant_spec& s) {
  { P::apply(s) } -> std::same_as<void>;
};

/// Applies policy tags, in order, to a base spec.
template <class... Policies>
[[nodiscard]] constexpr quant_spec apply_policies(quant_spec base) noexcept {
  (Policies::apply(base), ...);
  return base;
}

}  // namespace ssmq
