#pragma once
// Parameters of one S4D layer (the standard S4D of Gu et al. 2022, as in the reference
// models/s4/s4d.py), for H heads and M = N/2 stored complex modes per head:
//   log_dt [H], log_A_real [H, M], A_imag [H, M], C [H, M] complex (re, im), D [H];  B = 1.
//   A = -exp(log_A_real) + i A_imag.
// Initialisations: S4D-Lin (A = -1/2 + i pi n) and S4D-Inv (A = -1/2 + i N/pi (N/(2n+1) - 1));
// log_dt ~ U[ln dt_min, ln dt_max]; C ~ complex normal with variance 1/2 per real part;
// D ~ N(0, 1).
#include <cmath>
#include <cstddef>
#include <numbers>
#include <random>
#include <stdexcept>
#include <vector>

namespace ssmq {

enum class s4d_init : unsigned char { lin, inv };

template <class T>
struct s4d_params {
  std::size_t heads = 0;  ///< H
  std::size_t modes = 0;  ///< M = N/2
  std::vector<T> log_dt, log_A_real, A_imag, C_re, C_im, D;

  s4d_params() = default;
  s4d_params(std::size_t h, std::size_t m)
      : heads(h), modes(m), log_dt(h), log_A_real(h * m), A_imag(h * m), C_re(h * m), C_im(h * m), D(h) {
    if (h == 0 || m == 0) throw std::invalid_argument("ssmq: an S4D layer needs H >= 1 and N/2 >= 1");
  }

  /// Calls f(name, vector) for each parameter tensor (a stable order for optimizers).
  template <class F>
  void for_each(F&& f) {
    f("log_dt", log_dt);
    f("log_A_real", log_A_real);
    f("A_imag", A_imag);
    f("C_re", C_re);
    f("C_im", C_im);
    f("D", D);
  }
};

/// Initialises p in place. `N` (= 2 M) enters S4D-Inv's formula.
template <class T, class Rng>
void init_s4d(s4d_params<T>& p, s4d_init init, Rng& rng, double dt_min = 0.001, double dt_max = 0.1) {
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::normal_distribution<double> normal(0.0, 1.0);
  const double lo = std::log(dt_min), hi = std::log(dt_max);
  const double N = 2.0 * static_cast<double>(p.modes);
  for (auto& v : p.log_dt) v = static_cast<T>(lo + uni(rng) * (hi - lo));
  for (std::size_t h = 0; h < p.heads; ++h)
    for (std::size_t n = 0; n < p.modes; ++n) {
      const std::size_t i = h * p.modes + n;
      p.log_A_real[i] = static_cast<T>(std::log(0.5));
      const double dn = static_cast<double>(n);
      p.A_imag[i] = static_cast<T>(init == s4d_init::lin ? std::numbers::pi * dn
                                                          : N / std::numbers::pi * (N / (2.0 * dn + 1.0) - 1.0));
    }
  const double c_std = std::sqrt(0.5);
  for (std::size_t i = 0; i < p.C_re.size(); ++i) {
    p.C_re[i] = static_cast<T>(c_std * normal(rng));
    p.C_im[i] = static_cast<T>(c_std * normal(rng));
  }
  for (auto& v : p.D) v = static_cast<T>(normal(rng));
}

}  // namespace ssmq
