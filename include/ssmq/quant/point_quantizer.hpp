#pragma once
// One quantization point of the fake-quantized model: a quant_spec, its frozen parameters
// (one per head, or one for per-tensor), and the layout its tensors have. An inactive point
// (fp32 spec) passes values through unchanged. Dynamic points compute their parameters
// from the tensor they quantize, at every use.
//
// Complex tensors (Ā, B̄, C̄) are quantized in one of two formats: (re, im) pairs sharing one
// parameter set per head (the paper's default; under spec.split_parts the real and the
// imaginary parts each have their own), or polar: the magnitude and the phase, each with its
// own per-head parameters, then re/im rebuilt from them. Polar keeps every magnitude within
// the head's largest one, so a stable Ā stays stable at any bit-width.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "../precision/calibration.hpp"
#include "../precision/kernels.hpp"

namespace ssmq::quant {

enum class complex_format : std::uint8_t { re_im, polar };

/// A complex tensor in polar form, each [heads, inner]: magnitude >= 0, phase in [-pi, pi].
struct polar_values {
  std::vector<float> mag, phase;
};

/// Magnitude and phase of each value; the phase of 0 is 0 (atan2 would give 0 or ±pi by the
/// signs of the zeros, widening the phase range for nothing).
[[nodiscard]] inline polar_values to_polar(std::span<const float> re, std::span<const float> im) {
  polar_values p{std::vector<float>(re.size()), std::vector<float>(re.size())};
  for (std::size_t i = 0; i < re.size(); ++i) {
    p.mag[i] = std::hypot(re[i], im[i]);
    p.phase[i] = p.mag[i] == 0.0f ? 0.0f : std::atan2(im[i], re[i]);
  }
  return p;
}

/// re = mag cos(phase), im = mag sin(phase), computed in double and rounded once (fewer
/// differences between C libraries than float cos/sin); a zero magnitude gives +0, +0. A
/// quantized model file stores magnitude and phase levels and rebuilds re/im with this.
inline void from_polar(const polar_values& p, std::span<float> re, std::span<float> im) {
  for (std::size_t i = 0; i < p.mag.size(); ++i) {
    const double m = p.mag[i], a = p.phase[i];
    re[i] = m == 0.0 ? 0.0f : static_cast<float>(m * std::cos(a));
    im[i] = m == 0.0 ? 0.0f : static_cast<float>(m * std::sin(a));
  }
}

struct point_quantizer {
  quant_spec spec;                     ///< bits == fp32: not quantized
  std::size_t heads = 1;               ///< heads of the tensors this point sees
  std::vector<affine_params> params;   ///< frozen parameters (static); heads or 1 entries;
                                       ///< the magnitude's for a polar point, the real
                                       ///< part's under spec.split_parts
  complex_format format = complex_format::re_im;  ///< for complex tensors (apply_complex)
  std::vector<affine_params> second_params{};     ///< polar: the phase's parameters; (re, im)
                                                  ///< under spec.split_parts: the imaginary part's

  [[nodiscard]] bool active() const noexcept { return spec.quantized(); }
  [[nodiscard]] bool is_static() const noexcept { return spec.mode == range_mode::static_range; }
  /// Whether a complex tensor has a second parameter set (polar, or split (re, im)).
  [[nodiscard]] bool two_sets() const noexcept { return format == complex_format::polar || spec.split_parts; }
  [[nodiscard]] bool frozen() const noexcept { return !params.empty() && (!two_sets() || !second_params.empty()); }

  /// Parameters of head h (per-tensor points have one); `imaginary`: those of a complex
  /// tensor's imaginary part (the same set unless spec.split_parts).
  [[nodiscard]] const affine_params& of_head(std::size_t h, bool imaginary = false) const {
    const std::size_t k = spec.gran == granularity::per_tensor ? 0 : h;
    return imaginary && spec.split_parts ? second_params[k] : params[k];
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

  /// Fake-quantizes a complex tensor kept as real and imaginary arrays [heads, inner] each:
  /// re_im: both parts of a head share its parameters; polar: see quantize_polar.
  void apply_complex(std::span<float> re, std::span<float> im, std::size_t inner) const {
    if (!active()) return;
    if (format == complex_format::polar) {
      from_polar(quantize_polar(re, im, inner), re, im);
      return;
    }
    const head_layout layout = head_layout{heads, inner}.for_granularity(spec.gran);
    std::pair<std::vector<affine_params>, std::vector<affine_params>> dyn;
    if (!is_static()) dyn = complex_params(re, im, inner);
    else if (!frozen()) throw std::logic_error("ssmq: a static quantization point was used before calibration");
    const std::span<const affine_params> p_re = is_static() ? std::span<const affine_params>(params) : dyn.first;
    const std::span<const affine_params> p_im =
        !spec.split_parts ? p_re : is_static() ? std::span<const affine_params>(second_params) : dyn.second;
    kernels::scalar::fake_quant(re, re, p_re, layout, spec.limits());
    kernels::scalar::fake_quant(im, im, p_im, layout, spec.limits());
  }

  /// Parameters of a complex tensor [heads, inner] in (re, im) format: one set covering both
  /// parts (second empty), or under spec.split_parts the real part's and the imaginary part's.
  [[nodiscard]] std::pair<std::vector<affine_params>, std::vector<affine_params>> complex_params(
      std::span<const float> re, std::span<const float> im, std::size_t inner) const {
    if (spec.split_parts) return {dynamic_params(re, {heads, inner}, spec), dynamic_params(im, {heads, inner}, spec)};
    const std::size_t outer = re.size() / (heads * inner);
    std::vector<float> both(2 * re.size());
    for (std::size_t o = 0; o < outer; ++o)
      for (std::size_t h = 0; h < heads; ++h) {
        const std::size_t src = (o * heads + h) * inner, dst = (o * heads + h) * 2 * inner;
        std::copy_n(re.begin() + static_cast<std::ptrdiff_t>(src), inner, both.begin() + static_cast<std::ptrdiff_t>(dst));
        std::copy_n(im.begin() + static_cast<std::ptrdiff_t>(src), inner,
                    both.begin() + static_cast<std::ptrdiff_t>(dst + inner));
      }
    return {dynamic_params(both, {heads, 2 * inner}, spec), {}};
  }

  /// The fake-quantized magnitude and phase of a complex tensor [heads, inner] (polar
  /// format; an inactive point returns them unquantized).
  [[nodiscard]] polar_values quantize_polar(std::span<const float> re, std::span<const float> im,
                                            std::size_t inner) const {
    polar_values p = to_polar(re, im);
    if (!active()) return p;
    const head_layout layout = head_layout{heads, inner}.for_granularity(spec.gran);
    std::pair<std::vector<affine_params>, std::vector<affine_params>> dyn;
    if (!is_static()) dyn = polar_params(p, inner);
    else if (!frozen()) throw std::logic_error("ssmq: a static quantization point was used before calibration");
    kernels::scalar::fake_quant(p.mag, p.mag, is_static() ? params : dyn.first, layout, spec.limits());
    kernels::scalar::fake_quant(p.phase, p.phase, is_static() ? second_params : dyn.second, layout, spec.limits());
    return p;
  }

  /// Parameters of a polar tensor: the magnitude's and the phase's, from their own values.
  /// The magnitude's scale is lowered (by an ulp or two) where its rounding would put the top
  /// level above the head's largest magnitude: no quantized magnitude exceeds that maximum.
  [[nodiscard]] std::pair<std::vector<affine_params>, std::vector<affine_params>> polar_params(
      const polar_values& p, std::size_t inner) const {
    const head_layout layout{heads, inner};
    std::vector<affine_params> mag = dynamic_params(p.mag, layout, spec);
    const head_layout l = layout.for_granularity(spec.gran);
    std::vector<float> max_mag(l.heads, 0.0f);
    for_each_head_run(l, p.mag.size(), [&](std::size_t h, std::size_t off, std::size_t len) {
      for (std::size_t i = off; i < off + len; ++i) max_mag[h] = std::max(max_mag[h], p.mag[i]);
    });
    const std::int32_t top = spec.limits().qmax;
    for (std::size_t h = 0; h < mag.size(); ++h)
      // At min_scale (all magnitudes below ~2^-23 * levels) the grid cannot be finer.
      while (mag[h].scale > min_scale && kernels::scalar::dequantize_value(top, mag[h]) > max_mag[h]) {
        mag[h].scale = std::nextafter(mag[h].scale, 0.0f);
        mag[h].inv_scale = 1.0f / mag[h].scale;
      }
    return {std::move(mag), dynamic_params(p.phase, layout, spec)};
  }

  /// Parameters from the values themselves (used for weights, whose range follows them).
  void fit(std::span<const float> x, std::size_t inner) {
    if (!active()) return;
    params = dynamic_params(x, {heads, inner}, spec);
  }

  /// Parameters of a complex tensor [heads, inner] from its own values, in this point's
  /// format (used for Ā, B̄, C̄).
  void fit_complex(std::span<const float> re, std::span<const float> im, std::size_t inner) {
    if (!active()) return;
    if (format == complex_format::polar) std::tie(params, second_params) = polar_params(to_polar(re, im), inner);
    else std::tie(params, second_params) = complex_params(re, im, inner);
  }

  /// Under spec.inside_unit_circle (Ā in (re, im) format; otherwise nothing): every value of
  /// the fake-quantized tensor (re, im) [outer, heads, inner] on or outside the unit circle
  /// moves to the grid point strictly inside it nearest to its unquantized value (ref_re,
  /// ref_im; a reference on or outside the circle is first pulled half a (larger) step inside,
  /// or to 0 when a step exceeds the circle). Rounding both levels of the reference toward
  /// smaller magnitudes (toward 0, or for a part ranged apart whose grid lies above 0, down)
  /// gives a point inside within one level of its nearest, so the nearest inside point lies
  /// within 3 levels of it: the search covers that window.
  void keep_inside_unit_circle(std::span<const float> ref_re, std::span<const float> ref_im, std::span<float> re,
                               std::span<float> im, std::size_t inner) const {
    if (!active() || !spec.inside_unit_circle || format != complex_format::re_im) return;
    const int_limits lim = spec.limits();
    auto norm2 = [](double a, double b) { return a * a + b * b; };
    for (std::size_t i = 0; i < re.size(); ++i) {
      if (!(norm2(re[i], im[i]) >= 1.0)) continue;  // inside, or NaN
      const affine_params& p_re = of_head((i / inner) % heads);
      const affine_params& p_im = of_head((i / inner) % heads, true);
      double tr = ref_re[i], ti = ref_im[i];
      if (const double r = std::hypot(tr, ti); !(r < 1.0)) {
        const double step = std::max(p_re.scale, p_im.scale);
        const double pull = std::max(0.0, 1.0 - 0.5 * step) / r;  // half a step inside
        tr *= pull;
        ti *= pull;
      }
      const auto lr = static_cast<std::int32_t>(kernels::scalar::level(static_cast<float>(tr), p_re, lim));
      const auto li = static_cast<std::int32_t>(kernels::scalar::level(static_cast<float>(ti), p_im, lim));
      double best = std::numeric_limits<double>::infinity();
      for (std::int32_t a = std::max(lr - 3, lim.qmin); a <= std::min(lr + 3, lim.qmax); ++a)
        for (std::int32_t b = std::max(li - 3, lim.qmin); b <= std::min(li + 3, lim.qmax); ++b) {
          const float vr = kernels::scalar::dequantize_value(a, p_re), vi = kernels::scalar::dequantize_value(b, p_im);
          if (!(norm2(vr, vi) < 1.0)) continue;
          const double d = (vr - tr) * (vr - tr) + (vi - ti) * (vi - ti);
          if (d < best) {
            best = d;
            re[i] = vr;
            im[i] = vi;
          }
        }
    }
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
