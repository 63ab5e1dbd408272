#pragma once
// The affine quantizer's parameters: q = clamp(round_half_up(v / scale) + zero_point, qmin,
// qmax), v ~ (q - zero_point) * scale. Ranges include 0 so that 0 (the initial state,
// padding) is exactly representable - except the parts of a complex parameter ranged apart
// (quant_spec::split_parts): where Ā's modes turn slowly its real parts lie in a narrow band
// just below 1, and a range stretched to 0 would leave them a few levels. Their zero-point
// then lies outside [qmin, qmax].
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "integer_storage.hpp"
#include "quant_spec.hpp"
#include "rounding.hpp"

namespace ssmq {

/// Scale, its reciprocal (kernels multiply by it) and the zero-point of one head.
struct affine_params {
  float scale = 1.0f;
  float inv_scale = 1.0f;
  std::int32_t zero_point = 0;
  friend constexpr bool operator==(const affine_params&, const affine_params&) = default;
};

/// Smallest scale ssmq produces: a range narrower than this (e.g. a head whose values are
/// all 0) gets this scale instead of 0, so the reciprocal stays finite and nothing is NaN.
inline constexpr float min_scale = std::numeric_limits<float>::epsilon();

/// How far a zero-point may lie outside [qmin, qmax] (split parts only): 2^14 levels. The
/// scale is kept at least max(|lo|, |hi|) / 2^14 so that v / scale stays an exact float.
inline constexpr std::int32_t max_zero_point_offset = 1 << 14;

/// The zero-points a spec's parameters may have.
[[nodiscard]] constexpr int_limits zero_point_limits(const quant_spec& spec) noexcept {
  const int_limits lim = spec.limits();
  if (!spec.split_parts) return lim;
  return {lim.qmin - max_zero_point_offset, lim.qmax + max_zero_point_offset};
}

/// Parameters that map the real range [lo, hi] (widened to include 0, unless the spec
/// ranges complex parts apart) onto [qmin, qmax].
/// Asymmetric: scale = (hi - lo) / (qmax - qmin), zero_point = qmin - round(lo / scale).
/// Symmetric: scale = max(|lo|, |hi|) / qmax (signed) with zero_point 0, so that the largest
/// magnitude maps to qmax; unsigned symmetric uses the same scale (the range is [0, max]).
[[nodiscard]] inline affine_params params_from_range(float lo, float hi, const quant_spec& spec) {
  if (!spec.quantized()) throw std::invalid_argument("ssmq: params_from_range on an fp32 spec");
  if (std::isnan(lo) || std::isnan(hi))
    throw std::invalid_argument("ssmq: cannot calibrate a quantizer from a NaN range");
  const auto [qmin, qmax] = spec.limits();
  if (!spec.split_parts) {
    lo = std::min(lo, 0.0f);
    hi = std::max(hi, 0.0f);
  }
  // Infinite ranges are clamped to the largest float so the scale stays finite.
  lo = std::max(lo, -std::numeric_limits<float>::max());
  hi = std::min(hi, std::numeric_limits<float>::max());
  affine_params p;
  if (spec.sym == symmetry::symmetric) {
    const double amax = std::max(-static_cast<double>(lo), static_cast<double>(hi));
    p.scale = static_cast<float>(amax / qmax);
    p.scale = std::max(p.scale, min_scale);
    p.zero_point = spec.sign == signedness::signed_int ? 0 : qmin;
  } else {
    const double span = static_cast<double>(hi) - static_cast<double>(lo);
    p.scale = std::max(static_cast<float>(span / (static_cast<double>(qmax) - qmin)), min_scale);
    if (spec.split_parts) {
      const double amax = std::max(std::abs(static_cast<double>(lo)), std::abs(static_cast<double>(hi)));
      p.scale = std::max(p.scale, static_cast<float>(amax / max_zero_point_offset));
    }
    const double zp = qmin - static_cast<double>(round_half_up(lo / p.scale));
    const int_limits zl = zero_point_limits(spec);
    p.zero_point = static_cast<std::int32_t>(std::clamp<double>(zp, zl.qmin, zl.qmax));
  }
  p.inv_scale = 1.0f / p.scale;
  return p;
}

/// Where the heads are in a flat tensor: the tensor is [outer, heads, inner] in row-major
/// order, so element i belongs to head (i / inner) % heads. Per-tensor quantization is the
/// layout with one head.
struct head_layout {
  std::size_t heads = 1;
  std::size_t inner = 1;

  /// Layout of a tensor whose leading dimension is the head: [heads, inner].
  [[nodiscard]] static head_layout leading(std::size_t heads, std::size_t size) {
    if (heads == 0 || size % heads != 0)
      throw std::invalid_argument("ssmq: tensor of " + std::to_string(size) +
                                  " values does not split into " + std::to_string(heads) +
                                  " heads");
    return {heads, size / heads};
  }
  /// The layout as seen by a quantizer of granularity g: per-tensor collapses the heads.
  [[nodiscard]] head_layout for_granularity(granularity g) const noexcept {
    return g == granularity::per_tensor ? head_layout{1, heads * inner} : *this;
  }
  [[nodiscard]] std::size_t head_of(std::size_t i) const noexcept { return (i / inner) % heads; }
  /// Throws unless a buffer of `size` values is a whole number of [heads, inner] blocks.
  void check(std::size_t size) const {
    if (heads == 0 || inner == 0 || size % (heads * inner) != 0)
      throw std::invalid_argument("ssmq: buffer of " + std::to_string(size) +
                                  " values is not a whole number of [" + std::to_string(heads) +
                                  " heads x " + std::to_string(inner) + "] blocks");
  }
};

/// Calls f(head, offset, length) for each contiguous run of one head's values.
template <class F>
void for_each_head_run(const head_layout& layout, std::size_t size, F&& f) {
  layout.check(size);
  for (std::size_t off = 0; off < size; off += layout.inner)
    f(layout.head_of(off), off, layout.inner);
}

}  // namespace ssmq
