#pragma once
// Linear layer over the channel dimension of a [B, C, L] tensor (a 1x1 convolution, as the
// reference's output_linear): out[b,o,:] = bias[o] + sum_c W[o,c] in[b,c,:]. Time is the
// contiguous axis, so each weight is one axpy of length L.
#include <cstddef>
#include <vector>

#include "../simd/vector_ops.hpp"

namespace ssmq::nn {

template <class T>
struct linear_params {
  std::size_t in = 0, out = 0;
  std::vector<T> W, bias;  ///< W is [out, in]
  linear_params() = default;
  linear_params(std::size_t i, std::size_t o) : in(i), out(o), W(i * o), bias(o) {}
};

template <class T>
void linear_forward(const linear_params<T>& p, const T* x, T* y, std::size_t B, std::size_t L) {
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t o = 0; o < p.out; ++o) {
      T* yo = y + (b * p.out + o) * L;
      for (std::size_t l = 0; l < L; ++l) yo[l] = p.bias[o];
      for (std::size_t c = 0; c < p.in; ++c) simd::axpy(L, p.W[o * p.in + c], x + (b * p.in + c) * L, yo);
    }
}

/// dx += W^T dy (when dx is not null); dW += dy x^T; dbias += sum dy.
template <class T>
void linear_backward(const linear_params<T>& p, const T* x, const T* dy, T* dx, linear_params<T>& g,
                     std::size_t B, std::size_t L) {
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t o = 0; o < p.out; ++o) {
      const T* dyo = dy + (b * p.out + o) * L;
      T s = T(0);
      for (std::size_t l = 0; l < L; ++l) s += dyo[l];
      g.bias[o] += s;
      for (std::size_t c = 0; c < p.in; ++c) {
        const T* xc = x + (b * p.in + c) * L;
        g.W[o * p.in + c] += simd::dot(L, dyo, xc);
        if (dx != nullptr) simd::axpy(L, p.W[o * p.in + c], dyo, dx + (b * p.in + c) * L);
      }
    }
}

}  // namespace ssmq::nn
