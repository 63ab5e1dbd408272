#pragma once
// Pointwise activations and their derivatives: GELU (exact, erf form, PyTorch's default)
// and GLU over the channel dimension (first half times the sigmoid of the second half).
// The scalar functions are the reference; the array forms (gelu_forward, gelu_backward,
// glu_forward, glu_backward) run the same formulas on xsimd batches, in float with xsimd's
// erf and exp, which agree with the C library's to a few ulp (tests/nn/test_activations.cpp).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numbers>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "../simd/vector_ops.hpp"

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

namespace vec {
// The formulas above on batches, operation for operation. float uses xsimd's erf and exp.
// double (the gradient tests' type) applies the scalar functions lane by lane: xsimd 8.1's
// double erf/exp cast lanes to int64 with a scalar conversion, undefined behaviour for the
// NaN lanes its unselected branches produce (at x = 0), which UBSan stops on.
template <class B, class F>
[[nodiscard]] inline B lanewise(const B& x, F f) noexcept {
  alignas(64) typename B::value_type v[B::size];
  x.store_aligned(v);
  for (auto& e : v) e = f(e);
  return B::load_aligned(v);
}
template <class B>
inline constexpr bool use_scalar = !std::is_same_v<typename B::value_type, float>;

template <class B>
[[nodiscard]] inline B gelu(const B& x) noexcept {
  using T = typename B::value_type;
  if constexpr (use_scalar<B>) return lanewise(x, [](T e) { return nn::gelu(e); });
  else return B(T(0.5)) * x * (B(T(1)) + xsimd::erf(x * B(static_cast<T>(std::numbers::sqrt2 / 2))));
}
template <class B>
[[nodiscard]] inline B gelu_grad(const B& x) noexcept {
  using T = typename B::value_type;
  if constexpr (use_scalar<B>) {
    return lanewise(x, [](T e) { return nn::gelu_grad(e); });
  } else {
    const B cdf = B(T(0.5)) * (B(T(1)) + xsimd::erf(x * B(static_cast<T>(std::numbers::sqrt2 / 2))));
    const B pdf = xsimd::exp(B(T(-0.5)) * x * x) * B(static_cast<T>(std::numbers::inv_sqrtpi / std::numbers::sqrt2));
    return cdf + x * pdf;
  }
}
template <class B>
[[nodiscard]] inline B sigmoid(const B& x) noexcept {
  using T = typename B::value_type;
  if constexpr (use_scalar<B>) return lanewise(x, [](T e) { return nn::sigmoid(e); });
  else return B(T(1)) / (B(T(1)) + xsimd::exp(-x));
}
}  // namespace vec

/// y[i] = gelu(x[i]), i < n (y may be x).
template <class T>
void gelu_forward(const T* x, T* y, std::size_t n) {
  simd::map(n, y, [](auto v) { return vec::gelu(v); }, x);
}

/// d[i] *= gelu'(x[i]), i < n: turns dLoss/dGELU(x) into dLoss/dx.
template <class T>
void gelu_backward(const T* x, T* d, std::size_t n) {
  simd::map(n, d, [](auto v, auto g) { return g * vec::gelu_grad(v); }, x, static_cast<const T*>(d));
}

/// GLU on [B, 2C, L] -> [B, C, L]: v = a * sigmoid(g), a = channels [0, C), g = [C, 2C).
template <class T>
void glu_forward(const T* o, T* v, std::size_t B, std::size_t C, std::size_t L) {
  for (std::size_t b = 0; b < B; ++b) {
    // Rows of one sample are contiguous in both halves: one pass over C * L values.
    const T* a = o + b * 2 * C * L;
    simd::map(C * L, v + b * C * L, [](auto av, auto gv) { return av * vec::sigmoid(gv); }, a, a + C * L);
  }
}

template <class T>
void glu_backward(const T* o, const T* dv, T* d_o, std::size_t B, std::size_t C, std::size_t L) {
  using batch = xsimd::batch<T>;
  constexpr std::size_t w = batch::size;
  const std::size_t n = C * L;
  auto step = [](batch a, batch g, batch d, batch& da, batch& dg) {
    const batch s = vec::sigmoid(g);
    da = d * s;
    dg = d * a * s * (batch(T(1)) - s);
  };
  for (std::size_t b = 0; b < B; ++b) {
    const T* a = o + b * 2 * n;
    const T* g = a + n;
    const T* d = dv + b * n;
    T* da = d_o + b * 2 * n;
    T* dg = da + n;
    batch x, y;
    const std::size_t full = n / w * w;
    std::size_t i = 0;
    for (; i < full; i += w) {
      step(batch::load_unaligned(a + i), batch::load_unaligned(g + i), batch::load_unaligned(d + i), x, y);
      x.store_unaligned(da + i);
      y.store_unaligned(dg + i);
    }
    if (i < n) {  // the tail through the same batch code, as simd::map does
      alignas(64) T pa[w] = {}, pg[w] = {}, pd[w] = {}, ra[w], rg[w];
      std::copy_n(a + i, n - i, pa);
      std::copy_n(g + i, n - i, pg);
      std::copy_n(d + i, n - i, pd);
      step(batch::load_aligned(pa), batch::load_aligned(pg), batch::load_aligned(pd), x, y);
      x.store_aligned(ra);
      y.store_aligned(rg);
      std::copy_n(ra, n - i, da + i);
      std::copy_n(rg, n - i, dg + i);
    }
  }
}

}  // namespace ssmq::nn
