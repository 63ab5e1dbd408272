#pragma once
// Discretisation of an S4D layer: (log_dt, A, B = 1) -> (Ā, B̄) per head and mode, and its
// backward pass. Computed in double whatever T is: it is O(H M) work per forward pass.
//   ZOH:      Ā = exp(dt A),                 B̄ = (exp(dt A) - 1) / A
//   bilinear: Ā = (1 + dt A/2) / (1 - dt A/2), B̄ = dt / (1 - dt A/2)
// Gradients of a real loss w.r.t. a complex value z are carried as g = dL/dRe z + i dL/dIm z;
// for a holomorphic z = f(p), g_p = conj(f'(p)) g_z, and for a real parameter t,
// dL/dt = Re(conj(dz/dt) g_z).
#include <complex>
#include <cstddef>
#include <vector>

#include "params.hpp"

namespace ssmq {

enum class discretization : unsigned char { zoh, bilinear };

/// Ā and B̄ as separate real and imaginary arrays [H, M] (kernels never multiply std::complex).
template <class T>
struct discrete_ssm {
  std::size_t heads = 0, modes = 0;
  std::vector<T> abar_re, abar_im, bbar_re, bbar_im;
  discrete_ssm() = default;
  discrete_ssm(std::size_t h, std::size_t m)
      : heads(h), modes(m), abar_re(h * m), abar_im(h * m), bbar_re(h * m), bbar_im(h * m) {}
};

namespace detail {
using cd = std::complex<double>;
template <class T>
cd continuous_A(const s4d_params<T>& p, std::size_t i) {
  return {-std::exp(static_cast<double>(p.log_A_real[i])), static_cast<double>(p.A_imag[i])};
}
/// Ā, B̄ and their derivatives w.r.t. A (complex) and dt (real) for one mode.
struct disc_point {
  cd abar, bbar, dabar_dA, dbbar_dA, dabar_ddt, dbbar_ddt;
};
inline disc_point discretize_point(cd A, double dt, discretization method) {
  disc_point d;
  if (method == discretization::zoh) {
    const cd e = std::exp(dt * A);
    d.abar = e;
    d.bbar = (e - 1.0) / A;
    d.dabar_dA = dt * e;
    d.dabar_ddt = A * e;
    d.dbbar_dA = (dt * e * A - (e - 1.0)) / (A * A);
    d.dbbar_ddt = e;
  } else {
    const cd q = dt * A / 2.0;
    const cd inv = 1.0 / (1.0 - q);
    d.abar = (1.0 + q) * inv;
    d.bbar = dt * inv;
    const cd dabar_dq = 2.0 * inv * inv;
    d.dabar_dA = dabar_dq * (dt / 2.0);
    d.dabar_ddt = dabar_dq * (A / 2.0);
    d.dbbar_dA = dt * (dt / 2.0) * inv * inv;
    d.dbbar_ddt = inv + dt * (A / 2.0) * inv * inv;
  }
  return d;
}
}  // namespace detail

template <class T>
[[nodiscard]] discrete_ssm<T> discretize(const s4d_params<T>& p, discretization method) {
  discrete_ssm<T> d(p.heads, p.modes);
  for (std::size_t h = 0; h < p.heads; ++h) {
    const double dt = std::exp(static_cast<double>(p.log_dt[h]));
    for (std::size_t n = 0; n < p.modes; ++n) {
      const std::size_t i = h * p.modes + n;
      const auto pt = detail::discretize_point(detail::continuous_A(p, i), dt, method);
      d.abar_re[i] = static_cast<T>(pt.abar.real());
      d.abar_im[i] = static_cast<T>(pt.abar.imag());
      d.bbar_re[i] = static_cast<T>(pt.bbar.real());
      d.bbar_im[i] = static_cast<T>(pt.bbar.imag());
    }
  }
  return d;
}

/// Adds to `grad` (log_dt, log_A_real, A_imag) the gradient that flows from gradients
/// w.r.t. Ā and B̄ (`g`, same layout as a discrete_ssm).
template <class T>
void discretize_backward(const s4d_params<T>& p, discretization method, const discrete_ssm<T>& g,
                         s4d_params<T>& grad) {
  for (std::size_t h = 0; h < p.heads; ++h) {
    const double dt = std::exp(static_cast<double>(p.log_dt[h]));
    double g_dt = 0.0;
    for (std::size_t n = 0; n < p.modes; ++n) {
      const std::size_t i = h * p.modes + n;
      const detail::cd A = detail::continuous_A(p, i);
      const auto pt = detail::discretize_point(A, dt, method);
      const detail::cd ga(g.abar_re[i], g.abar_im[i]), gb(g.bbar_re[i], g.bbar_im[i]);
      const detail::cd gA = std::conj(pt.dabar_dA) * ga + std::conj(pt.dbbar_dA) * gb;
      g_dt += (std::conj(pt.dabar_ddt) * ga + std::conj(pt.dbbar_ddt) * gb).real();
      grad.log_A_real[i] += static_cast<T>(gA.real() * A.real());  // dA_re/dlog_A_real = A_re
      grad.A_imag[i] += static_cast<T>(gA.imag());
    }
    grad.log_dt[h] += static_cast<T>(g_dt * dt);
  }
}

}  // namespace ssmq
