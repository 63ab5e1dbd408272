#pragma once
// The float shadows QAT trains, under one of four parameterizations of the state matrix Ā
// (the paper's Discrete, Continuous, Frozen, plus Polar):
//   discrete   - Ā, B̄ (re, im) trained directly;
//   continuous - log_dt, log_A_real, A_imag trained; Ā, B̄ re-discretised (ZOH) every step;
//   frozen     - Ā fixed at its quantized pre-trained value; B̄ trained;
//   polar      - |Ā| and arg Ā trained (quantized as magnitude and phase); B̄ trained.
// C̄ (= C), D and every Linear train in all four. Under Cbar<b>f B̄ is folded into C̄
// (s4d/fold.hpp) and stays fixed. for_each() visits exactly the trained
// tensors, so an optimizer sees only those.
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../s4d/fold.hpp"
#include "../s4d/model.hpp"

namespace ssmq::quant {

enum class abar_parameterization : unsigned char { discrete, continuous, frozen, polar };

[[nodiscard]] inline std::string_view to_string(abar_parameterization p) noexcept {
  switch (p) {
    case abar_parameterization::discrete: return "discrete";
    case abar_parameterization::continuous: return "continuous";
    case abar_parameterization::frozen: return "frozen";
    case abar_parameterization::polar: return "polar";
  }
  return "?";
}

[[nodiscard]] inline abar_parameterization parameterization_from_name(std::string_view s) {
  for (auto p : {abar_parameterization::discrete, abar_parameterization::continuous, abar_parameterization::frozen,
                 abar_parameterization::polar})
    if (s == to_string(p)) return p;
  throw std::invalid_argument("ssmq: unknown parameterization '" + std::string(s) +
                              "' (expected discrete, continuous, frozen or polar)");
}

struct qat_layer_params {
  s4d_params<float> ssm;                ///< continuous: log_dt, log_A_real, A_imag; always C, D
  std::vector<float> abar0, abar1;      ///< discrete and frozen: Ā re, im; polar: |Ā|, arg Ā
  std::vector<float> bbar_re, bbar_im;  ///< all but continuous
  nn::linear_params<float> out;
  nn::layer_norm_params<float> norm;
};

/// Every shadow of a QAT model; the same struct holds their gradients.
struct qat_params {
  model_shape shape;
  abar_parameterization param = abar_parameterization::discrete;
  /// B̄ folded into C (s4d/fold.hpp): B̄ stays at its folded per-head value and is not trained.
  bool bbar_folded = false;
  nn::linear_params<float> encoder, decoder;
  std::vector<qat_layer_params> layers;

  qat_params() = default;
  qat_params(const model_shape& s, abar_parameterization p) : shape(s), param(p) {
    const s4d_model_params<float> shaped(s);
    encoder = shaped.encoder;
    decoder = shaped.decoder;
    for (const auto& l : shaped.layers) {
      qat_layer_params q;
      q.ssm = l.ssm;
      q.out = l.out;
      q.norm = l.norm;
      for (auto* v : {&q.abar0, &q.abar1, &q.bbar_re, &q.bbar_im}) v->assign(s.heads * s.modes(), 0.0f);
      layers.push_back(std::move(q));
    }
  }

  /// The shadows of a float model: its parameters, and its discretisation (`method`) where
  /// the parameterization trains Ā, B̄.
  static qat_params from_float(const s4d_model<float>& m, abar_parameterization p) {
    qat_params q(m.shape(), p);
    q.encoder = m.params.encoder;
    q.decoder = m.params.decoder;
    for (std::size_t i = 0; i < q.layers.size(); ++i) {
      auto& l = q.layers[i];
      const auto& src = m.params.layers[i];
      l.ssm = src.ssm;
      l.out = src.out;
      l.norm = src.norm;
      const discrete_ssm<float> d = discretize(src.ssm, m.options.disc);
      l.bbar_re = d.bbar_re;
      l.bbar_im = d.bbar_im;
      if (p == abar_parameterization::polar) {
        for (std::size_t j = 0; j < d.abar_re.size(); ++j) {
          l.abar0[j] = std::hypot(d.abar_re[j], d.abar_im[j]);
          l.abar1[j] = std::atan2(d.abar_im[j], d.abar_re[j]);
        }
      } else {
        l.abar0 = d.abar_re;
        l.abar1 = d.abar_im;
      }
    }
    return q;
  }

  /// Folds B̄ into C in every layer (s4d/fold.hpp); from then on B̄ is not trained. Not for
  /// the continuous parameterization, which re-discretises B̄ at every step.
  void fold_bbar() {
    if (param == abar_parameterization::continuous)
      throw std::invalid_argument("ssmq: B̄ cannot be folded into C̄ (Cbar<b>f) under the continuous parameterization, "
                                  "which re-discretises B̄ from Δ and A at every step");
    for (auto& l : layers) fold_bbar_into_c(l.bbar_re, l.bbar_im, l.ssm.C_re, l.ssm.C_im, shape.heads, shape.modes());
    bbar_folded = true;
  }

  /// f(name, std::vector<float>&, param_group) for every trained tensor, in a fixed order.
  template <class F>
  void for_each(F&& f) {
    f(std::string("encoder.weight"), encoder.W, param_group::regular);
    f(std::string("encoder.bias"), encoder.bias, param_group::regular);
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const std::string k = "s4_layers." + std::to_string(i) + ".";
      auto& l = layers[i];
      switch (param) {
        case abar_parameterization::continuous:
          f(k + "kernel.log_dt", l.ssm.log_dt, param_group::ssm);
          f(k + "kernel.log_A_real", l.ssm.log_A_real, param_group::ssm);
          f(k + "kernel.A_imag", l.ssm.A_imag, param_group::ssm);
          break;
        case abar_parameterization::discrete:
          f(k + "kernel.Abar_re", l.abar0, param_group::ssm);
          f(k + "kernel.Abar_im", l.abar1, param_group::ssm);
          break;
        case abar_parameterization::polar:
          f(k + "kernel.Abar_mag", l.abar0, param_group::ssm);
          f(k + "kernel.Abar_phase", l.abar1, param_group::ssm);
          break;
        case abar_parameterization::frozen: break;
      }
      if (param != abar_parameterization::continuous && !bbar_folded) {
        f(k + "kernel.Bbar_re", l.bbar_re, param_group::regular);
        f(k + "kernel.Bbar_im", l.bbar_im, param_group::regular);
      }
      f(k + "kernel.C_re", l.ssm.C_re, param_group::regular);
      f(k + "kernel.C_im", l.ssm.C_im, param_group::regular);
      f(k + "D", l.ssm.D, param_group::regular);
      f(k + "output_linear.0.weight", l.out.W, param_group::regular);
      f(k + "output_linear.0.bias", l.out.bias, param_group::regular);
      if (shape.norm != norm_placement::none) {
        f("norms." + std::to_string(i) + ".weight", l.norm.weight, param_group::regular);
        f("norms." + std::to_string(i) + ".bias", l.norm.bias, param_group::regular);
      }
    }
    f(std::string("decoder.weight"), decoder.W, param_group::regular);
    f(std::string("decoder.bias"), decoder.bias, param_group::regular);
  }
  void zero() {
    for_each([](const std::string&, std::vector<float>& v, param_group) { std::fill(v.begin(), v.end(), 0.0f); });
  }
};

}  // namespace ssmq::quant
