#pragma once
// The S4D convolution kernel K[h, l] = 2 Re(sum_n C_n B̄_n Ā_n^l), l < L, and its backward
// pass to (Ā, B̄, C). Powers Ā^l are formed by repeated multiplication in double, whatever T
// is (O(H M L) work, small next to the convolution).
#include <complex>
#include <cstddef>
#include <vector>

#include "discretize.hpp"
#include "params.hpp"

namespace ssmq {

/// K as [H, L] row-major.
template <class T>
[[nodiscard]] std::vector<T> ssm_kernel(const discrete_ssm<T>& d, const std::vector<T>& C_re,
                                        const std::vector<T>& C_im, std::size_t L) {
  using cd = std::complex<double>;
  std::vector<double> acc(d.heads * L, 0.0);
  for (std::size_t h = 0; h < d.heads; ++h)
    for (std::size_t n = 0; n < d.modes; ++n) {
      const std::size_t i = h * d.modes + n;
      const cd a(d.abar_re[i], d.abar_im[i]);
      cd w = cd(C_re[i], C_im[i]) * cd(d.bbar_re[i], d.bbar_im[i]);  // w Ā^l, starting at l = 0
      double* row = acc.data() + h * L;
      for (std::size_t l = 0; l < L; ++l) {
        row[l] += 2.0 * w.real();
        w *= a;
      }
    }
  return {acc.begin(), acc.end()};
}

/// Given G = dLoss/dK [H, L], adds gradients w.r.t. Ā, B̄ (into g_disc) and C (g_C_re/im).
///   w = C B̄:  g_w = 2 sum_l G_l conj(Ā^l);  g_C = conj(B̄) g_w;  g_B̄ = conj(C) g_w;
///   g_Ā = 2 conj(w) sum_{l>=1} G_l l conj(Ā^(l-1)).
template <class T>
void ssm_kernel_backward(const discrete_ssm<T>& d, const std::vector<T>& C_re, const std::vector<T>& C_im,
                         const std::vector<T>& G, std::size_t L, discrete_ssm<T>& g_disc,
                         std::vector<T>& g_C_re, std::vector<T>& g_C_im) {
  using cd = std::complex<double>;
  for (std::size_t h = 0; h < d.heads; ++h)
    for (std::size_t n = 0; n < d.modes; ++n) {
      const std::size_t i = h * d.modes + n;
      const cd a(d.abar_re[i], d.abar_im[i]);
      const cd a_conj = std::conj(a);
      const cd c(C_re[i], C_im[i]), b(d.bbar_re[i], d.bbar_im[i]);
      const T* g = G.data() + h * L;
      cd s1 = 0.0, s2 = 0.0;  // sum G_l conj(Ā)^l, sum G_l l conj(Ā)^(l-1)
      cd pw = 1.0, pw_prev = 0.0;  // conj(Ā)^l and conj(Ā)^(l-1)
      for (std::size_t l = 0; l < L; ++l) {
        const double gl = static_cast<double>(g[l]);
        s1 += gl * pw;
        s2 += gl * static_cast<double>(l) * pw_prev;
        pw_prev = pw;
        pw *= a_conj;
      }
      const cd gw = 2.0 * s1;
      const cd gc = std::conj(b) * gw, gb = std::conj(c) * gw, ga = 2.0 * std::conj(c * b) * s2;
      g_C_re[i] += static_cast<T>(gc.real());
      g_C_im[i] += static_cast<T>(gc.imag());
      g_disc.bbar_re[i] += static_cast<T>(gb.real());
      g_disc.bbar_im[i] += static_cast<T>(gb.imag());
      g_disc.abar_re[i] += static_cast<T>(ga.real());
      g_disc.abar_im[i] += static_cast<T>(ga.imag());
    }
}

}  // namespace ssmq
