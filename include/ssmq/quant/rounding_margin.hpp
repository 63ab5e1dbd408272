#pragma once
// How close quantized values sit to a rounding threshold of their quantizer. Under the
// straight-through estimator a shadow whose gradient changes sign across a threshold stays
// near it, and the least step then flips its level (Nagel et al. 2022): a spread piled up at
// the thresholds shows such oscillating values (`ssmq margins`, docs/qat.md).
#include <cmath>
#include <cstddef>
#include <span>
#include <stdexcept>

#include "../precision/affine.hpp"
#include "point_quantizer.hpp"

namespace ssmq::quant {

struct margin_summary {
  std::size_t values = 0;      ///< values inside the quantizer's range (the others are clipped)
  std::size_t clipped = 0;     ///< values beyond half a step outside [qmin, qmax]
  std::size_t within_1pc = 0;  ///< within 0.01 of a step of a rounding threshold
  std::size_t within_5pc = 0;  ///< within 0.05 of a step
};

/// Counts, for `v` laid out as [heads, inner] under the frozen point `q`, how many values lie
/// within 1 % and 5 % of a quantization step of a rounding threshold (a spread that is uniform
/// between grid points gives 2 % and 10 %). `imaginary`: v is a complex tensor's imaginary
/// part (its own parameters under flag r). Throws std::invalid_argument for a point that is
/// not quantized or has no parameters.
[[nodiscard]] inline margin_summary rounding_margins(std::span<const float> v, const point_quantizer& q,
                                                     std::size_t inner, bool imaginary = false) {
  if (!q.active() || q.params.empty() || (imaginary && q.spec.split_parts && q.second_params.empty()))
    throw std::invalid_argument("ssmq: rounding_margins needs a quantized point with parameters");
  const head_layout layout = head_layout{q.heads, inner}.for_granularity(q.spec.gran);
  const int_limits lim = q.spec.limits();
  margin_summary s;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const affine_params& p = q.of_head(layout.head_of(i), imaginary);
    const double t = static_cast<double>(v[i]) / p.scale + p.zero_point;  // in steps
    if (t < lim.qmin - 0.5 || t > lim.qmax + 0.5) {
      ++s.clipped;
      continue;
    }
    const double to_threshold = std::fabs(t - std::floor(t) - 0.5);  // 0 on a threshold, 0.5 on a level
    ++s.values;
    s.within_1pc += to_threshold < 0.01;
    s.within_5pc += to_threshold < 0.05;
  }
  return s;
}

}  // namespace ssmq::quant
