#pragma once
// Range observers for static calibration: watch batches with quantization off, then freeze
// the ranges into affine parameters. The same code computes dynamic parameters (ranges from
// the current tensor alone).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <stdexcept>
#include <vector>

#include "affine.hpp"
#include "quant_spec.hpp"

namespace ssmq {

/// The p-th percentile (0..100) of values, by linear interpolation between closest ranks
/// (numpy's default): position p/100 * (n - 1) in sorted order. Reorders `values`.
[[nodiscard]] inline float percentile_of(std::vector<float>& values, double p) {
  if (values.empty()) throw std::invalid_argument("ssmq: percentile of an empty set");
  const double pos = p / 100.0 * static_cast<double>(values.size() - 1);
  const auto k = static_cast<std::size_t>(std::floor(pos));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k), values.end());
  const double lo = values[k];
  if (k + 1 >= values.size()) return static_cast<float>(lo);
  const double hi = *std::min_element(values.begin() + static_cast<std::ptrdiff_t>(k + 1), values.end());
  return static_cast<float>(lo + (pos - static_cast<double>(k)) * (hi - lo));
}

/// Records per-head ranges over observed batches.
///  - minmax: the running minimum and maximum over all batches;
///  - percentile: per batch, the (100 - p)-th and p-th percentiles of each head; the frozen
///    range is the mean of these over the batches (exact percentiles of all observed values
///    would need every value kept; the mean of per-batch percentiles needs O(heads)).
/// NaN in an observed batch is an error: a range cannot be learnt from it.
class range_observer {
 public:
  range_observer(const quant_spec& spec, std::size_t heads)
      : spec_(spec),
        heads_(spec.gran == granularity::per_tensor ? 1 : heads),
        lo_(heads_, std::numeric_limits<double>::infinity()),
        hi_(heads_, -std::numeric_limits<double>::infinity()) {
    if (heads == 0) throw std::invalid_argument("ssmq: range_observer needs at least one head");
    if (spec.calib == calibration::percentile) {
      lo_.assign(heads_, 0.0);
      hi_.assign(heads_, 0.0);
    }
  }

  /// Observes one batch laid out as `layout` ([outer, heads, inner]).
  void observe(std::span<const float> x, const head_layout& layout) {
    const head_layout l = layout.for_granularity(spec_.gran);
    if (l.heads != heads_)
      throw std::invalid_argument("ssmq: observed tensor has a different number of heads");
    std::vector<std::vector<float>> per_head(heads_);
    for_each_head_run(l, x.size(), [&](std::size_t h, std::size_t off, std::size_t len) {
      for (std::size_t i = off; i < off + len; ++i)
        if (std::isnan(x[i])) throw std::invalid_argument("ssmq: NaN in a calibration batch");
      if (spec_.calib == calibration::minmax) {
        const auto [mn, mx] = std::minmax_element(x.begin() + static_cast<std::ptrdiff_t>(off),
                                                  x.begin() + static_cast<std::ptrdiff_t>(off + len));
        lo_[h] = std::min(lo_[h], static_cast<double>(*mn));
        hi_[h] = std::max(hi_[h], static_cast<double>(*mx));
      } else {
        per_head[h].insert(per_head[h].end(), x.begin() + static_cast<std::ptrdiff_t>(off),
                           x.begin() + static_cast<std::ptrdiff_t>(off + len));
      }
    });
    if (spec_.calib == calibration::percentile) {
      const double p = spec_.percentile();
      for (std::size_t h = 0; h < heads_; ++h) {
        lo_[h] += percentile_of(per_head[h], 100.0 - p);
        hi_[h] += percentile_of(per_head[h], p);
      }
    }
    ++batches_;
  }

  [[nodiscard]] std::size_t batches() const noexcept { return batches_; }
  [[nodiscard]] std::size_t heads() const noexcept { return heads_; }

  /// The recorded range [lo, hi] of head h.
  [[nodiscard]] std::pair<float, float> range(std::size_t h) const {
    if (batches_ == 0) throw std::logic_error("ssmq: range_observer has observed no batch");
    if (spec_.calib == calibration::minmax)
      return {static_cast<float>(lo_.at(h)), static_cast<float>(hi_.at(h))};
    const auto n = static_cast<double>(batches_);
    return {static_cast<float>(lo_.at(h) / n), static_cast<float>(hi_.at(h) / n)};
  }

  /// Frozen parameters, one per head (one in all for per-tensor).
  [[nodiscard]] std::vector<affine_params> freeze() const {
    std::vector<affine_params> out(heads_);
    for (std::size_t h = 0; h < heads_; ++h) {
      const auto [lo, hi] = range(h);
      out[h] = params_from_range(lo, hi, spec_);
    }
    return out;
  }

 private:
  quant_spec spec_;
  std::size_t heads_;
  std::vector<double> lo_, hi_;
  std::size_t batches_ = 0;
};

/// Dynamic quantization: parameters from the current tensor alone.
[[nodiscard]] inline std::vector<affine_params> dynamic_params(std::span<const float> x,
                                                               const head_layout& layout,
                                                               const quant_spec& spec) {
  range_observer obs(spec, layout.heads);
  obs.observe(x, layout);
  return obs.freeze();
}

}  // namespace ssmq
