#pragma once
// One quantization point of the fake-quantized model: a quant_spec, its frozen parameters
// (one per head, or one for per-tensor), and the layout its tensors have. An inactive point
// (fp32 spec) passes values through unchanged. Dynamic points compute their parameters
// from the tensor they quantize, at every use.
#include <algorithm>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <vector>

#include "../precision/calibration.hpp"
#include "../precision/kernels.hpp"

namespace ssmq::quant {

struct point_quantizer {
  quant_spec spec;                     ///< bits == fp32: not quantized
  std::size_t heads = 1;               ///< heads of the tensors this point sees
  std::vector<affine_params> params;   ///< frozen parameters (static); heads or 1 entries

  [[nodiscard]] bool active() const noexcept { return spec.quantized(); }
  [[nodiscard]] bool is_static() const noexcept { return spec.mode == range_mode::static_range; }
  [[nodiscard]] bool frozen() const noexcept { return !params.empty(); }

  /// Parameters of head h (per-tensor points have one).
  [[nodiscard]] const affine_params& of_head(std::size_t h) const {
    return params[spec.gran == granularity::per_tensor ? 0 : h];
  }

  /// Fake-quantizes x in place; x is laid out [outer, heads, inner]. Static points must be
  /// frozen first; dynamic ones take their range from x.
  void apply(std::span<float> x, std::size_t inner) const {
    if (!active()) return;
    const head_layout layout{heads, inner};
    if (is_static()) {
      if (!frozen()) throw std::logic_error("ssmq: a static quantization point was used before calibration");
      // Small tensors (one time step) are the common case: no per-run dispatch.
      const int_limits lim = spec.limits();
      const bool per_tensor = spec.gran == granularity::per_tensor;
      for (std::size_t i = 0; i < x.size(); ++i)
        x[i] = kernels::scalar::fake_quant_value(x[i], params[per_tensor ? 0 : (i / inner) % heads], lim);
    } else {
      const auto p = dynamic_params(x, layout, spec);
      kernels::scalar::fake_quant(x, x, p, layout.for_granularity(spec.gran), spec.limits());
    }
  }

  /// Fake-quantizes a complex tensor kept as real and imaginary arrays [heads, inner] each;
  /// both parts of a head share its parameters.
  void apply_complex(std::span<float> re, std::span<float> im, std::size_t inner) const {
    if (!active()) return;
    const head_layout layout = head_layout{heads, inner}.for_granularity(spec.gran);
    std::vector<affine_params> dyn;
    if (!is_static()) dyn = complex_params(re, im, inner);
    else if (!frozen()) throw std::logic_error("ssmq: a static quantization point was used before calibration");
    const std::span<const affine_params> p = is_static() ? std::span<const affine_params>(params) : dyn;
    kernels::scalar::fake_quant(re, re, p, layout, spec.limits());
    kernels::scalar::fake_quant(im, im, p, layout, spec.limits());
  }

  /// Parameters covering both parts of a complex tensor [heads, inner] (re and im).
  [[nodiscard]] std::vector<affine_params> complex_params(std::span<const float> re, std::span<const float> im,
                                                          std::size_t inner) const {
    const std::size_t outer = re.size() / (heads * inner);
    std::vector<float> both(2 * re.size());
    for (std::size_t o = 0; o < outer; ++o)
      for (std::size_t h = 0; h < heads; ++h) {
        const std::size_t src = (o * heads + h) * inner, dst = (o * heads + h) * 2 * inner;
        std::copy_n(re.begin() + static_cast<std::ptrdiff_t>(src), inner, both.begin() + static_cast<std::ptrdiff_t>(dst));
        std::copy_n(im.begin() + static_cast<std::ptrdiff_t>(src), inner,
                    both.begin() + static_cast<std::ptrdiff_t>(dst + inner));
      }
    return dynamic_params(both, {heads, 2 * inner}, spec);
  }

  /// Parameters from the values themselves (used for weights, whose range follows them).
  void fit(std::span<const float> x, std::size_t inner) {
    if (!active()) return;
    params = dynamic_params(x, {heads, inner}, spec);
  }
};

/// A range observer bound to a point (inactive points observe nothing).
class point_observer {
 public:
  explicit point_observer(const point_quantizer& q)
      : active_(q.active() && q.is_static()), heads_(q.heads),
        obs_(q.active() ? q.spec : quant_spec{8}, q.heads) {}
  void observe(std::span<const float> x, std::size_t inner) {
    if (active_) obs_.observe(x, {heads_, inner});
  }
  void freeze_into(point_quantizer& q) const {
    if (active_ && obs_.batches() > 0) q.params = obs_.freeze();
  }

 private:
  bool active_;
  std::size_t heads_;
  range_observer obs_;
};

}  // namespace ssmq::quant
