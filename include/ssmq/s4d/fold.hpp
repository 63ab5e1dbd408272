#pragma once
// Folding B̄ into C̄. Each head of an S4D layer has one input u, so its output is
//   y_k = 2 Re(sum_n C_n x_{n,k}),  x_{n,k} = Ā_n x_{n,k-1} + B̄_n u_k,
// and B̄_n and C_n enter y only through the product C_n B̄_n. With one real number b_h per
// head, the change of state coordinates x'_n = x_n b_h / B̄_n gives the same y with
//   B̄'_n = b_h (real, one per head),   C'_n = C_n B̄_n / b_h.
// So the H x N/2 complex B̄ collapses to H real numbers. b_h = min_n |B̄_n| keeps
// |x'_n| <= |x_n|: the state stays in the units the state clamp was chosen for.
#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <stdexcept>
#include <vector>

namespace ssmq {

/// Folds B̄ into C (both [H, M] as re, im arrays) in place: afterwards B̄ is real and
/// constant over each head's modes (see above). Computed in double. Throws
/// std::invalid_argument, changing nothing, for a wrong size, a mode whose B̄ is zero or not
/// finite, or a C that is not finite.
template <class T>
void fold_bbar_into_c(std::vector<T>& bbar_re, std::vector<T>& bbar_im, std::vector<T>& c_re, std::vector<T>& c_im,
                      std::size_t heads, std::size_t modes) {
  const std::size_t n = heads * modes;
  if (bbar_re.size() != n || bbar_im.size() != n || c_re.size() != n || c_im.size() != n)
    throw std::invalid_argument("ssmq: fold_bbar_into_c: B̄ and C must both be [heads, modes]");
  // Checked before anything changes.
  std::vector<double> smallest(heads, INFINITY);
  for (std::size_t i = 0; i < n; ++i) {
    const double mag = std::hypot(static_cast<double>(bbar_re[i]), static_cast<double>(bbar_im[i]));
    if (!(mag > 0.0) || !std::isfinite(mag) || !std::isfinite(static_cast<double>(c_re[i])) ||
        !std::isfinite(static_cast<double>(c_im[i])))
      throw std::invalid_argument("ssmq: fold_bbar_into_c: a mode's B̄ is zero or not finite, or its C is not finite");
    smallest[i / modes] = std::min(smallest[i / modes], mag);
  }
  for (std::size_t h = 0; h < heads; ++h) {
    const std::size_t base = h * modes;
    const double b = smallest[h];
    for (std::size_t m = 0; m < modes; ++m) {
      const std::size_t i = base + m;
      const std::complex<double> c(c_re[i], c_im[i]), bb(bbar_re[i], bbar_im[i]);
      const std::complex<double> folded = c * bb / b;
      c_re[i] = static_cast<T>(folded.real());
      c_im[i] = static_cast<T>(folded.imag());
      bbar_re[i] = static_cast<T>(b);
      bbar_im[i] = T(0);
    }
  }
}

/// True when B̄ is in folded form: real, and one value per head.
template <class T>
[[nodiscard]] bool bbar_is_folded(const std::vector<T>& bbar_re, const std::vector<T>& bbar_im, std::size_t heads,
                                  std::size_t modes) {
  if (bbar_re.size() != heads * modes || bbar_im.size() != heads * modes) return false;
  for (std::size_t h = 0; h < heads; ++h)
    for (std::size_t m = 0; m < modes; ++m)
      if (bbar_im[h * modes + m] != T(0) || bbar_re[h * modes + m] != bbar_re[h * modes]) return false;
  return true;
}

}  // namespace ssmq
