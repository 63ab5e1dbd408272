#pragma once
// Adam / AdamW with two parameter groups and optional gradient clipping by global norm.
// The SSM group (log_dt, log_A_real, A_imag) trains at min(lr, ssm_lr) without weight decay,
// as the S4D reference intends (its own optimizer ignored that; ssmq does not).
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../s4d/model.hpp"

namespace ssmq::train {

struct adam_options {
  double lr = 0.01;
  double ssm_lr = 0.001;       ///< learning-rate cap of the SSM group
  double weight_decay = 0.0;   ///< decoupled (AdamW) when > 0; regular group only
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double clip_norm = 0.0;      ///< clip the global gradient norm to this (0: off)
};

/// Works on any parameter set P with P::for_each(f(name, std::vector<T>&, param_group)):
/// s4d_model_params<T>, or QAT's shadows (quant::qat_params).
template <class T>
class adam {
 public:
  template <class P>
  adam(P& params, adam_options opts) : opts_(opts) {
    params.for_each([&](const std::string&, std::vector<T>& v, param_group) {
      m_.emplace_back(v.size(), T(0));
      v_.emplace_back(v.size(), T(0));
    });
  }

  [[nodiscard]] const adam_options& options() const noexcept { return opts_; }
  [[nodiscard]] std::size_t steps() const noexcept { return t_; }

  /// One update with learning-rate multiplier `lr_scale` (the schedule). Returns the global
  /// gradient norm before clipping.
  template <class P>
  double step(P& params, P& grads, double lr_scale) {
    std::vector<std::vector<T>*> g;
    grads.for_each([&](const std::string&, std::vector<T>& v, param_group) { g.push_back(&v); });
    double sq = 0.0;
    for (auto* gv : g)
      for (T x : *gv) sq += static_cast<double>(x) * static_cast<double>(x);
    const double norm = std::sqrt(sq);
    const double clip = (opts_.clip_norm > 0.0 && norm > opts_.clip_norm) ? opts_.clip_norm / norm : 1.0;
    ++t_;
    const double bc1 = 1.0 - std::pow(opts_.beta1, static_cast<double>(t_));
    const double bc2 = 1.0 - std::pow(opts_.beta2, static_cast<double>(t_));
    std::size_t k = 0;
    params.for_each([&](const std::string&, std::vector<T>& p, param_group group) {
      const bool ssm = group == param_group::ssm;
      const double lr = (ssm ? std::fmin(opts_.lr, opts_.ssm_lr) : opts_.lr) * lr_scale;
      const double wd = ssm ? 0.0 : opts_.weight_decay;
      std::vector<T>& m = m_[k];
      std::vector<T>& v = v_[k];
      const std::vector<T>& gr = *g[k];
      for (std::size_t i = 0; i < p.size(); ++i) {
        const double gi = static_cast<double>(gr[i]) * clip;
        const double mi = opts_.beta1 * static_cast<double>(m[i]) + (1.0 - opts_.beta1) * gi;
        const double vi = opts_.beta2 * static_cast<double>(v[i]) + (1.0 - opts_.beta2) * gi * gi;
        m[i] = static_cast<T>(mi);
        v[i] = static_cast<T>(vi);
        double pi = static_cast<double>(p[i]);
        if (wd > 0.0) pi -= lr * wd * pi;
        pi -= lr * (mi / bc1) / (std::sqrt(vi / bc2) + opts_.eps);
        p[i] = static_cast<T>(pi);
      }
      ++k;
    });
    return norm;
  }

  /// The optimizer state, for resumable runs: the step count and the moments (kept in T,
  /// like the parameters, so that saving and restoring them is exact).
  [[nodiscard]] std::vector<std::vector<T>>& first_moments() noexcept { return m_; }
  [[nodiscard]] std::vector<std::vector<T>>& second_moments() noexcept { return v_; }
  void set_steps(std::size_t steps) noexcept { t_ = steps; }

 private:
  adam_options opts_;
  std::size_t t_ = 0;
  std::vector<std::vector<T>> m_, v_;
};

/// Cosine schedule over `epochs`, stepped per epoch: scale(e) = (1 + cos(pi e / epochs)) / 2,
/// from 1 at epoch 0 down toward 0 (a plain cosine to zero over all epochs; the reference's
/// T_max = 20 over 30 epochs made the rate climb again at the end).
[[nodiscard]] inline double cosine_scale(std::size_t epoch, std::size_t epochs) noexcept {
  if (epochs == 0) return 1.0;
  return 0.5 * (1.0 + std::cos(3.141592653589793 * static_cast<double>(epoch) / static_cast<double>(epochs)));
}

}  // namespace ssmq::train
