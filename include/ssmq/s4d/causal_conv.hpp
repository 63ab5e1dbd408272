#pragma once
// The causal convolution of S4D's convolutional mode, per head, over a batch laid out
// [B, H, L]:  y[b,h,l] = sum_{k<=l} K[h,k] u[b,h,l-k]. Direct form, vectorized along time as
// L axpy's of decreasing length (L^2/2 multiply-adds per sequence and head).
// Backward:   du[b,h,j] = sum_{l>=j} K[h,l-j] dy[b,h,l],  dK[h,k] += sum_b sum_l dy[b,h,l] u[b,h,l-k].
#include <cstddef>

#include "../simd/vector_ops.hpp"

namespace ssmq {

/// y = K * u (overwrites y). K is [H, L]; u and y are [B, H, L].
template <class T>
void causal_conv_forward(const T* K, const T* u, T* y, std::size_t B, std::size_t H, std::size_t L) {
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h) {
      const T* kh = K + h * L;
      const T* uh = u + (b * H + h) * L;
      T* yh = y + (b * H + h) * L;
      for (std::size_t l = 0; l < L; ++l) yh[l] = T(0);
      for (std::size_t k = 0; k < L; ++k) simd::axpy(L - k, kh[k], uh, yh + k);
    }
}

/// du += K^T * dy (correlation), dK += sum over the batch of dy (x) u.
template <class T>
void causal_conv_backward(const T* K, const T* u, const T* dy, T* du, T* dK, std::size_t B, std::size_t H,
                          std::size_t L) {
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h) {
      const T* kh = K + h * L;
      const T* uh = u + (b * H + h) * L;
      const T* dyh = dy + (b * H + h) * L;
      T* duh = du + (b * H + h) * L;
      T* dkh = dK + h * L;
      for (std::size_t k = 0; k < L; ++k) {
        simd::axpy(L - k, kh[k], dyh + k, duh);            // du[j] += K[k] dy[j + k]
        dkh[k] += simd::dot(L - k, dyh + k, uh);            // dK[k] += sum_j dy[j + k] u[j]
      }
    }
}

}  // namespace ssmq
