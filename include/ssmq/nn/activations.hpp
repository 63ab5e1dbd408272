#pragma once
// Pointwise activations and their derivatives: GELU (exact, erf form, PyTorch's default)
// and GLU over the channel dimension (first half times the sigmoid of the second half).
#include <cmath>
#include <cstddef>
#include <numbers>

namespace ssmq::nn {

template <class T>
[[nodiscard]] inline T gelu(T x) noexcept {
  return T(0.5) * x * (T(1) + std::erf(x * static_cast<T>(std::numbers::sqrt2 / 2)));
}
template <class T>
[[nodiscard]] inline T gelu_grad(T x) noexcept {
  const T cdf = T(0.5) * (T(1) + std::erf(x * static_cast<T>(std::numbers::sqrt2 / 2)));
  const T pdf = std::exp(T(-0.5) * x * x) * static_cast<T>(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
  return cdf + x * pdf;
}
template <class T>
[[nodiscard]] inline T sigmoid(T x) noexcept {
  return T(1) / (T(1) + std::exp(-x));
}

/// GLU on [B, 2C, L] -> [B, C, L]: v = a * sigmoid(g), a = channels [0, C), g = [C, 2C).
template <class T>
void glu_forward(const T* o, T* v, std::size_t B, std::size_t C, std::size_t L) {
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t c = 0; c < C; ++c) {
      const T* a = o + (b * 2 * C + c) * L;
      const T* g = o + (b * 2 * C + C + c) * L;
      T* out = v + (b * C + c) * L;
      for (std::size_t l = 0; l < L; ++l) out[l] = a[l] * sigmoid(g[l]);
    }
}

template <class T>
void glu_backward(const T* o, const T* dv, T* d_o, std::size_t B, std::size_t C, std::size_t L) {
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t c = 0; c < C; ++c) {
      const T* a = o + (b * 2 * C + c) * L;
      const T* g = o + (b * 2 * C + C + c) * L;
      const T* dvc = dv + (b * C + c) * L;
      T* da = d_o + (b * 2 * C + c) * L;
      T* dg = d_o + (b * 2 * C + C + c) * L;
      for (std::size_t l = 0; l < L; ++l) {
        const T s = sigmoid(g[l]);
        da[l] = dvc[l] * s;
        dg[l] = dvc[l] * a[l] * s * (T(1) - s);
      }
    }
}

}  // namespace ssmq::nn
