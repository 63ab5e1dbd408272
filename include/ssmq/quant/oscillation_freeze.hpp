#pragma once
// Iterative freezing of oscillating shadows (Nagel et al. 2022, "Overcoming Oscillations in
// Quantization-Aware Training", section 4.2). Under the straight-through estimator a shadow
// whose gradient changes sign across a rounding threshold stays next to it and flips between
// two levels from step to step; at 4 bits a few such flips of C̄ cost points of validation
// accuracy (docs/qat.md, "Freezing oscillating values"). After every optimizer step each
// quantized value's integer level is compared with the last: a change against the direction
// of the previous change is an oscillation. An exponential moving average of those events
// (momentum m per step) estimates each value's oscillation frequency; a value whose frequency
// exceeds the threshold is frozen at the grid point of its moving-average level and held there
// (no gradient, its shadow put back after every step) to the end of the run.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "qat_model.hpp"

namespace ssmq::quant {

struct oscillation_options {
  double threshold = 0.0;  ///< 0: off; else the oscillation frequency (events per step) that freezes a value
  double momentum = 0.01;  ///< of the moving averages of the events and of the level (about 1/m steps)
  /// Values are frozen only from this epoch (0-based) on; frequencies are tracked from the
  /// start. A run that starts from a PTQ collapse changes most levels in its first epoch, and
  /// freezing then locks in levels of the collapse.
  std::size_t from_epoch = 0;
  /// Only values of tensors quantized to at most this many bits are frozen (all by default).
  /// The threshold counts level flips per step, which at 8 bits, with 16 times finer steps
  /// than at 4, is not the same criterion: freezing 8-bit values measured harmful.
  int max_bits = 16;
  [[nodiscard]] bool active() const noexcept { return threshold > 0.0; }
};

class oscillation_freezer {
 public:
  /// Starts tracking every quantized shadow of `model` (qat_model::for_each_quantized_shadow)
  /// at its present level.
  oscillation_freezer(const qat_model& model, oscillation_options o) : o_(o) {
    if (!(o.threshold > 0.0 && o.threshold <= 1.0))
      throw std::invalid_argument("ssmq: the oscillation threshold must lie in (0, 1] (events per step)");
    if (!(o.momentum > 0.0 && o.momentum <= 1.0))
      throw std::invalid_argument("ssmq: the oscillation momentum must lie in (0, 1]");
    if (o.max_bits < 2 || o.max_bits > 16)
      throw std::invalid_argument("ssmq: the largest bit-width to freeze must lie in [2, 16], got " + std::to_string(o.max_bits));
    const qat_prepared pp = model.prepare();
    model.for_each_quantized_shadow(pp, [&](const qat_model::quantized_view& v, auto) {
      tensor t;
      t.name = v.name;
      const std::size_t n = v.quantized.size();
      t.level.resize(n);
      for (std::size_t i = 0; i < n; ++i) t.level[i] = level_of(v, i);
      t.mean_level = t.level;
      t.direction.assign(n, 0.0f);
      t.frequency.assign(n, 0.0f);
      t.frozen.assign(n, 0.0f);
      t.held.assign(n, 0.0f);
      tensors_.push_back(std::move(t));
    });
  }

  /// Zeroes the gradients of the frozen values (before the optimizer step).
  void mask_gradients(const qat_model& model, const qat_prepared& pp, qat_params& grads) const {
    std::size_t k = 0;
    model.for_each_quantized_shadow(pp, [&](const qat_model::quantized_view&, auto get) {
      std::vector<float>& g = get(grads);
      const tensor& t = tensors_.at(k++);
      for (std::size_t i = 0; i < g.size(); ++i)
        if (t.frozen[i] != 0.0f) g[i] = 0.0f;
    });
  }

  /// Whether after_step may freeze values (qat_train sets it per epoch from from_epoch).
  void allow_freezing(bool on) noexcept { freezing_ = on; }

  /// After the optimizer step: puts the frozen shadows back, then updates every other value's
  /// level, oscillation frequency and mean level, and (when allowed) freezes those above the
  /// threshold at the grid point of their rounded mean level. `before`: the step's prepare()
  /// (it names the tensors to hold; the levels come from a prepare() after the hold).
  void after_step(qat_model& model, const qat_prepared& before) {
    hold(model, before);
    const qat_prepared pp = model.prepare();
    const float m = static_cast<float>(o_.momentum);
    std::size_t k = 0;
    model.for_each_quantized_shadow(pp, [&](const qat_model::quantized_view& v, auto get) {
      std::vector<float>& w = get(model.shadows);
      tensor& t = tensors_.at(k++);
      const bool may_freeze = freezing_ && v.point.spec.bits <= o_.max_bits;
      for (std::size_t i = 0; i < w.size(); ++i) {
        if (t.frozen[i] != 0.0f) continue;
        const float lv = level_of(v, i);
        const float step = lv - t.level[i];
        float event = 0.0f;
        if (step != 0.0f) {
          const float dir = step > 0.0f ? 1.0f : -1.0f;
          event = (t.direction[i] != 0.0f && dir != t.direction[i]) ? 1.0f : 0.0f;
          t.direction[i] = dir;
        }
        t.level[i] = lv;
        t.frequency[i] = m * event + (1.0f - m) * t.frequency[i];
        t.mean_level[i] = m * lv + (1.0f - m) * t.mean_level[i];
        if (may_freeze && t.frequency[i] > static_cast<float>(o_.threshold)) {
          const affine_params& p = v.params_of(i);
          const int_limits lim = v.point.spec.limits();
          const double q = std::clamp(std::nearbyint(static_cast<double>(t.mean_level[i])), static_cast<double>(lim.qmin),
                                      static_cast<double>(lim.qmax));
          t.frozen[i] = 1.0f;
          t.held[i] = static_cast<float>((q - p.zero_point) * p.scale);
          w[i] = t.held[i];
        }
      }
    });
  }

  /// Writes the held values of the frozen shadows back into model.shadows (pp: any prepare()
  /// of the model; it names the tensors).
  void hold(qat_model& model, const qat_prepared& pp) const {
    std::size_t k = 0;
    model.for_each_quantized_shadow(pp, [&](const qat_model::quantized_view&, auto get) {
      std::vector<float>& w = get(model.shadows);
      const tensor& t = tensors_.at(k++);
      for (std::size_t i = 0; i < w.size(); ++i)
        if (t.frozen[i] != 0.0f) w[i] = t.held[i];
    });
  }

  /// Frozen values per tensor name, in visiting order.
  [[nodiscard]] std::vector<std::pair<std::string, std::size_t>> frozen_counts() const {
    std::vector<std::pair<std::string, std::size_t>> out;
    for (const tensor& t : tensors_) {
      std::size_t n = 0;
      for (const float f : t.frozen) n += f != 0.0f;
      out.emplace_back(t.name, n);
    }
    return out;
  }
  [[nodiscard]] std::size_t frozen_total() const {
    std::size_t n = 0;
    for (const auto& c : frozen_counts()) n += c.second;
    return n;
  }

  /// f(name, std::vector<float>&) for every piece of state ("<tensor>.<field>"): what a
  /// resumed run must restore to continue bit-identically.
  template <class F>
  void for_each_state(F&& f) {
    for (tensor& t : tensors_) {
      f(t.name + ".level", t.level);
      f(t.name + ".mean_level", t.mean_level);
      f(t.name + ".direction", t.direction);
      f(t.name + ".frequency", t.frequency);
      f(t.name + ".frozen", t.frozen);
      f(t.name + ".held", t.held);
    }
  }

 private:
  struct tensor {
    std::string name;
    // Per value, float so that the state saves like the shadows (levels are small integers).
    std::vector<float> level, mean_level, direction, frequency, frozen, held;
  };

  /// The integer level of a fake-quantized value (it sits on its grid point).
  static float level_of(const qat_model::quantized_view& v, std::size_t i) {
    const affine_params& p = v.params_of(i);
    return static_cast<float>(std::nearbyint(static_cast<double>(v.quantized[i]) / p.scale) + p.zero_point);
  }
  oscillation_options o_;
  bool freezing_ = true;
  std::vector<tensor> tensors_;
};

}  // namespace ssmq::quant
