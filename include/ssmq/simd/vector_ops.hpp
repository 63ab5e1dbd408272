#pragma once
// Small xsimd loops over contiguous float/double arrays, each with a plain scalar tail.
// Used by the float layers (training); the quantized kernels have their own.
#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "fma.hpp"

namespace ssmq::simd {

/// y[i] += a * x[i], i < n.
template <class T>
inline void axpy(std::size_t n, T a, const T* x, T* y) noexcept {
  using batch = xsimd::batch<T>;
  constexpr std::size_t w = batch::size;
  const batch av(a);
  std::size_t i = 0;
  for (; i + w <= n; i += w)
    fmadd(av, batch::load_unaligned(x + i), batch::load_unaligned(y + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

/// sum_i x[i] * y[i], i < n (lane-wise partial sums, then a horizontal add).
template <class T>
[[nodiscard]] inline T dot(std::size_t n, const T* x, const T* y) noexcept {
  using batch = xsimd::batch<T>;
  constexpr std::size_t w = batch::size;
  batch acc(T(0));
  std::size_t i = 0;
  for (; i + w <= n; i += w) acc = fmadd(batch::load_unaligned(x + i), batch::load_unaligned(y + i), acc);
  T s = xsimd::hadd(acc);
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

/// y[i] = a * x[i] + b, i < n.
template <class T>
inline void scale_shift(std::size_t n, T a, const T* x, T b, T* y) noexcept {
  using batch = xsimd::batch<T>;
  constexpr std::size_t w = batch::size;
  const batch av(a), bv(b);
  std::size_t i = 0;
  for (; i + w <= n; i += w) fmadd(av, batch::load_unaligned(x + i), bv).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = a * x[i] + b;
}

}  // namespace ssmq::simd
