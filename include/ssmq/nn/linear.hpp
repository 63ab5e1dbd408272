#pragma once
// Linear layer over the channel dimension of a [B, C, L] tensor (a 1x1 convolution, as the
// reference's output_linear): out[b,o,:] = bias[o] + sum_c W[o,c] in[b,c,:].
// For L > 1 every output value is the bias, then one fused multiply-add per input channel in
// channel order, wherever the value sits (vector lane or tail). The kernels are
// register-blocked: a tile of outputs x time steps stays in registers while the inputs
// stream past (each loaded value feeds several FMAs). L = 1 (the streaming step, the
// decoder) is a matrix-vector product, a dot product per row of W: it agrees with L > 1 to
// rounding, and bit for bit with fewer inputs than one SIMD batch holds (e.g. the encoder of
// a one-pixel model), where both are the same FMA chain.
#include <algorithm>
#include <cstddef>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../simd/vector_ops.hpp"

namespace ssmq::nn {

template <class T>
struct linear_params {
  std::size_t in = 0, out = 0;
  std::vector<T> W, bias;  ///< W is [out, in]
  linear_params() = default;
  linear_params(std::size_t i, std::size_t o) : in(i), out(o), W(i * o), bias(o) {}
};

namespace detail {
// Accumulators per tile: O rows x R vectors (<= 16 registers with AVX-512's 32, 8 otherwise).
#if defined(__AVX512F__)
inline constexpr std::size_t lin_rows = 4, lin_vecs = 4;
#else
inline constexpr std::size_t lin_rows = 4, lin_vecs = 2;
#endif

// dW tile: rows of dy x rows of x, one accumulator each.
#if defined(__AVX512F__)
inline constexpr std::size_t dw_rows = 4, dw_cols = 4;
#else
inline constexpr std::size_t dw_rows = 4, dw_cols = 2;
#endif

/// out[o * ld + c] += <a_o, b_c> (rows of length L) for o < O, c < C: each loaded vector of
/// a and b feeds C or O fused multiply-adds.
template <std::size_t O, std::size_t C, class T>
inline void dot_tile(std::size_t L, const T* a, const T* b, T* out, std::size_t ld) {
  using batch = xsimd::batch<T>;
  constexpr std::size_t W = batch::size;
  batch acc[O][C];
  for (auto& row : acc)
    for (auto& v : row) v = batch(T(0));
  const std::size_t full = L / W * W;
  std::size_t l = 0;
  for (; l < full; l += W) {
    batch bv[C];
    for (std::size_t c = 0; c < C; ++c) bv[c] = batch::load_unaligned(b + c * L + l);
    for (std::size_t o = 0; o < O; ++o) {
      const batch av = batch::load_unaligned(a + o * L + l);
      for (std::size_t c = 0; c < C; ++c) acc[o][c] = simd::fmadd(av, bv[c], acc[o][c]);
    }
  }
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t c = 0; c < C; ++c) {
      T s = xsimd::hadd(acc[o][c]);
      for (std::size_t t = l; t < L; ++t) s = simd::fmadd(a[o * L + t], b[c * L + t], s);
      out[o * ld + c] += s;
    }
}

/// acc[o][r] (+)= sum_k coef(o, k) * src[k * ld + l0 + r W] for k < K, k in order; o < O
/// rows of dst (row stride ld). Starts from init(o) when `from_dst` is false.
template <std::size_t O, std::size_t R, class T, class Coef, class Init>
inline void lin_tile(std::size_t K, const T* src, std::size_t ld, std::size_t l0, T* dst, bool from_dst, Coef coef,
                     Init init) {
  using batch = xsimd::batch<T>;
  constexpr std::size_t W = batch::size;
  batch acc[O][R];
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t r = 0; r < R; ++r)
      acc[o][r] = from_dst ? batch::load_unaligned(dst + o * ld + l0 + r * W) : batch(init(o));
  for (std::size_t k = 0; k < K; ++k) {
    batch x[R];
    for (std::size_t r = 0; r < R; ++r) x[r] = batch::load_unaligned(src + k * ld + l0 + r * W);
    for (std::size_t o = 0; o < O; ++o) {
      const batch c(coef(o, k));
      for (std::size_t r = 0; r < R; ++r) acc[o][r] = simd::fmadd(c, x[r], acc[o][r]);
    }
  }
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t r = 0; r < R; ++r) acc[o][r].store_unaligned(dst + o * ld + l0 + r * W);
}

/// dst[o, l] (+)= sum_k coef(o, k) src[k, l] for all rows o < rows and l < L: one sample.
/// Time chunks are the outer loop, so that a chunk of src (K rows) stays in L1 while every
/// block of rows uses it.
template <class T, class Coef, class Init>
inline void lin_rows_all(std::size_t rows, std::size_t K, const T* src, std::size_t L, T* dst, bool from_dst,
                         Coef coef, Init init) {
  constexpr std::size_t W = xsimd::batch<T>::size, O = lin_rows, R = lin_vecs;
  static_assert(O == 4);
  auto tile = [&]<std::size_t RR>(std::size_t o0, std::size_t l0) {
    T* d = dst + o0 * L;
    auto c = [&](std::size_t o, std::size_t k) { return coef(o0 + o, k); };
    auto i = [&](std::size_t o) { return init(o0 + o); };
    switch (std::min(O, rows - o0)) {
      case 4: lin_tile<4, RR>(K, src, L, l0, d, from_dst, c, i); break;
      case 3: lin_tile<3, RR>(K, src, L, l0, d, from_dst, c, i); break;
      case 2: lin_tile<2, RR>(K, src, L, l0, d, from_dst, c, i); break;
      default: lin_tile<1, RR>(K, src, L, l0, d, from_dst, c, i); break;
    }
  };
  const std::size_t tiles = L / (R * W) * (R * W), full = L / W * W;
  std::size_t l = 0;
  for (; l < tiles; l += R * W)
    for (std::size_t o0 = 0; o0 < rows; o0 += O) tile.template operator()<R>(o0, l);
  for (; l < full; l += W)
    for (std::size_t o0 = 0; o0 < rows; o0 += O) tile.template operator()<1>(o0, l);
  for (; l < L; ++l)  // the tail, rounding as the lanes do
    for (std::size_t o = 0; o < rows; ++o) {
      T acc = from_dst ? dst[o * L + l] : init(o);
      for (std::size_t k = 0; k < K; ++k) acc = simd::fmadd(coef(o, k), src[k * L + l], acc);
      dst[o * L + l] = acc;
    }
}
/// y = bias + W x for one vector: a dot product over each contiguous row of W (vectorized
/// over the inputs), the bias added first and the inputs past the last full batch last.
/// (Not xsimd::haddp over W rows at once: xsimd 8.1's AVX-512 haddp returns its sums in a
/// permuted order.)
template <class T>
inline void matvec(const linear_params<T>& p, const T* x, T* y) {
  using batch = xsimd::batch<T>;
  constexpr std::size_t W = batch::size;
  const std::size_t in = p.in, full = in / W * W;
  for (std::size_t o = 0; o < p.out; ++o) {
    const T* row = p.W.data() + o * in;
    T s = p.bias[o];
    if (full > 0) {
      batch acc(T(0));
      for (std::size_t c = 0; c < full; c += W)
        acc = simd::fmadd(batch::load_unaligned(row + c), batch::load_unaligned(x + c), acc);
      s += xsimd::hadd(acc);
    }
    for (std::size_t c = full; c < in; ++c) s = simd::fmadd(row[c], x[c], s);
    y[o] = s;
  }
}
}  // namespace detail

template <class T>
void linear_forward(const linear_params<T>& p, const T* x, T* y, std::size_t B, std::size_t L) {
  const T* W = p.W.data();
  const std::size_t in = p.in;
  if (L == 1) {  // matrix-vector (the streaming step, the decoder)
    for (std::size_t b = 0; b < B; ++b) detail::matvec(p, x + b * in, y + b * p.out);
    return;
  }
  for (std::size_t b = 0; b < B; ++b)
    detail::lin_rows_all(
        p.out, in, x + b * in * L, L, y + b * p.out * L, false, [W, in](std::size_t o, std::size_t c) { return W[o * in + c]; },
        [&p](std::size_t o) { return p.bias[o]; });
}

/// dx += W^T dy (when dx is not null); dW += dy x^T; dbias += sum dy.
template <class T>
void linear_backward(const linear_params<T>& p, const T* x, const T* dy, T* dx, linear_params<T>& g,
                     std::size_t B, std::size_t L) {
  const std::size_t in = p.in, out = p.out;
  for (std::size_t b = 0; b < B; ++b) {
    const T* xb = x + b * in * L;
    const T* dyb = dy + b * out * L;
    for (std::size_t o = 0; o < out; ++o) g.bias[o] += simd::sum(L, dyb + o * L);
    // dW[o, c] += <dy_o, x_c>: a tile of dot products shares its loads.
    constexpr std::size_t TO = detail::dw_rows, TC = detail::dw_cols;
    for (std::size_t o0 = 0; o0 < out; o0 += TO)
      for (std::size_t c0 = 0; c0 < in; c0 += TC) {
        if (o0 + TO <= out && c0 + TC <= in) {
          detail::dot_tile<TO, TC>(L, dyb + o0 * L, xb + c0 * L, g.W.data() + o0 * in + c0, in);
        } else {
          for (std::size_t o = o0; o < std::min(out, o0 + TO); ++o)
            for (std::size_t c = c0; c < std::min(in, c0 + TC); ++c) g.W[o * in + c] += simd::dot(L, dyb + o * L, xb + c * L);
        }
      }
    // dx[c, :] += sum_o W[o, c] dy[o, :], o in order.
    if (dx != nullptr) {
      const T* Wp = p.W.data();
      detail::lin_rows_all(
          in, out, dyb, L, dx + b * in * L, true, [Wp, in](std::size_t c, std::size_t o) { return Wp[o * in + c]; },
          [](std::size_t) { return T(0); });
    }
  }
}

}  // namespace ssmq::nn
