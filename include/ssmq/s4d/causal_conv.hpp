#pragma once
// The causal convolution of S4D's convolutional mode, per head, over a batch laid out
// [B, H, L]:
//   forward   y[l]  = sum_{k<=l} K[k] u[l-k]
//   backward  du[j] = sum_{k<=L-1-j} K[k] dy[j+k]      (correlation with the kernel)
//             dK[k] += sum_{l>=k} dy[l] u[l-k]          (summed over the batch)
// Direct form (L^2/2 multiply-adds per sequence and head); the model convolves by FFT by
// default (fft_conv.hpp, faster at L = 784) and keeps this form selectable
// (conv_algorithm::direct) and as the check of the FFT. Each output is computed
// "output-stationary": R vectors of consecutive outputs stay in registers while the inner
// loop streams one broadcast coefficient and one unaligned load per vector - about twice the
// arithmetic per memory access of an axpy formulation. Inputs are copied into zero-padded
// buffers so that lanes past either end read zeros instead of branching.
#include <algorithm>
#include <cstddef>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../simd/fma.hpp"

namespace ssmq {

namespace detail {
inline constexpr std::size_t conv_vectors = 4;  // R: output vectors per register block

/// out[o] (+)= sum_{k in [k_lo(o0), k_hi(o0)]} coef[k] * src[base(o0) + step * k + lane] for
/// a block of R*W outputs starting at o0. `src_at(o0, k)` returns the pointer of lane 0.
template <class T, class Src, class Range>
inline void conv_block(std::size_t o0, T* out, bool accumulate, const T* coef, Range k_range, Src src_at) {
  using batch = xsimd::batch<T>;
  constexpr std::size_t W = batch::size, R = conv_vectors;
  batch acc[R];
  for (std::size_t r = 0; r < R; ++r) acc[r] = accumulate ? batch::load_unaligned(out + r * W) : batch(T(0));
  const auto [k_lo, k_hi] = k_range(o0);
  for (std::size_t k = k_lo; k < k_hi; ++k) {
    const batch c(coef[k]);
    const T* s = src_at(o0, k);
    for (std::size_t r = 0; r < R; ++r) acc[r] = simd::fmadd(c, batch::load_unaligned(s + r * W), acc[r]);
  }
  for (std::size_t r = 0; r < R; ++r) acc[r].store_unaligned(out + r * W);
}

template <class T>
constexpr std::size_t conv_block_size() {
  return xsimd::batch<T>::size * conv_vectors;
}
}  // namespace detail

/// y = K * u (overwrites y). K is [H, L]; u and y are [B, H, L].
template <class T>
void causal_conv_forward(const T* K, const T* u, T* y, std::size_t B, std::size_t H, std::size_t L) {
  constexpr std::size_t BS = detail::conv_block_size<T>();
  const std::size_t P = BS, Lb = (L + BS - 1) / BS * BS;  // front padding, blocked length
  std::vector<T> up(P + Lb, T(0)), yp(Lb);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h) {
      const T* kh = K + h * L;
      std::copy_n(u + (b * H + h) * L, L, up.begin() + static_cast<std::ptrdiff_t>(P));
      for (std::size_t o0 = 0; o0 < Lb; o0 += BS)
        detail::conv_block(
            o0, yp.data() + o0, false, kh, [&](std::size_t o) { return std::pair{std::size_t{0}, std::min(L, o + BS)}; },
            [&](std::size_t o, std::size_t k) { return up.data() + P + o - k; });
      std::copy_n(yp.begin(), L, y + (b * H + h) * L);
    }
}

/// du += K^T * dy (correlation), dK += sum over the batch of dy (x) u.
template <class T>
void causal_conv_backward(const T* K, const T* u, const T* dy, T* du, T* dK, std::size_t B, std::size_t H,
                          std::size_t L) {
  constexpr std::size_t BS = detail::conv_block_size<T>();
  const std::size_t Lb = (L + BS - 1) / BS * BS;
  std::vector<T> dyp(Lb + BS, T(0)), urp(Lb + BS, T(0)), dup(Lb), dkp(Lb);
  for (std::size_t h = 0; h < H; ++h) {
    const T* kh = K + h * L;
    std::fill(dkp.begin(), dkp.end(), T(0));
    for (std::size_t b = 0; b < B; ++b) {
      const T* uh = u + (b * H + h) * L;
      const T* dyh = dy + (b * H + h) * L;
      std::copy_n(dyh, L, dyp.begin());
      for (std::size_t i = 0; i < L; ++i) urp[i] = uh[L - 1 - i];  // reversed u
      // du[j] = sum_{k < L - j} K[k] dy[j + k]
      for (std::size_t o0 = 0; o0 < Lb; o0 += BS)
        detail::conv_block(
            o0, dup.data() + o0, false, kh, [&](std::size_t o) { return std::pair{std::size_t{0}, o < L ? L - o : 0}; },
            [&](std::size_t o, std::size_t k) { return dyp.data() + o + k; });
      T* duh = du + (b * H + h) * L;
      for (std::size_t i = 0; i < L; ++i) duh[i] += dup[i];
      // dK[k] += sum_{l >= k} dy[l] u[l - k] = sum_l dy[l] ur[L - 1 - l + k]
      for (std::size_t o0 = 0; o0 < Lb; o0 += BS)
        detail::conv_block(
            o0, dkp.data() + o0, true, dyh, [&](std::size_t o) { return std::pair{std::min(o, L), L}; },
            [&](std::size_t o, std::size_t l) { return urp.data() + (L - 1 - l) + o; });
    }
    T* dkh = dK + h * L;
    for (std::size_t i = 0; i < L; ++i) dkh[i] += dkp[i];
  }
}

}  // namespace ssmq
