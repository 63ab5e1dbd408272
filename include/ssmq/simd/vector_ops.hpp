#pragma once
// Small xsimd loops over contiguous float/double arrays. Tails use the scalar fmadd, which
// rounds like the vector lanes, so a value does not depend on where in the array it sits.
// Loop bounds are computed once (n / w * w): with the `i + w <= n` form GCC 12 reports
// -Waggressive-loop-optimizations once a constant n is inlined (an error here).
// Used by the float layers (training); the quantized kernels have their own.
#include <algorithm>
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
  const std::size_t full = n / w * w;
  std::size_t i = 0;
  for (; i < full; i += w)
    fmadd(av, batch::load_unaligned(x + i), batch::load_unaligned(y + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = fmadd(a, x[i], y[i]);
}

/// sum_i x[i] * y[i], i < n. Four lane-wise partial sums (independent FMA chains: one chain
/// would wait out the FMA latency at every step), then a horizontal add.
template <class T>
[[nodiscard]] inline T dot(std::size_t n, const T* x, const T* y) noexcept {
  using batch = xsimd::batch<T>;
  constexpr std::size_t w = batch::size;
  batch a0(T(0)), a1(T(0)), a2(T(0)), a3(T(0));
  const std::size_t full4 = n / (4 * w) * (4 * w), full = n / w * w;
  std::size_t i = 0;
  for (; i < full4; i += 4 * w) {
    a0 = fmadd(batch::load_unaligned(x + i), batch::load_unaligned(y + i), a0);
    a1 = fmadd(batch::load_unaligned(x + i + w), batch::load_unaligned(y + i + w), a1);
    a2 = fmadd(batch::load_unaligned(x + i + 2 * w), batch::load_unaligned(y + i + 2 * w), a2);
    a3 = fmadd(batch::load_unaligned(x + i + 3 * w), batch::load_unaligned(y + i + 3 * w), a3);
  }
  for (; i < full; i += w) a0 = fmadd(batch::load_unaligned(x + i), batch::load_unaligned(y + i), a0);
  T s = xsimd::hadd((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) s = fmadd(x[i], y[i], s);
  return s;
}

/// sum_i x[i], i < n (lane-wise partial sums, then a horizontal add).
template <class T>
[[nodiscard]] inline T sum(std::size_t n, const T* x) noexcept {
  using batch = xsimd::batch<T>;
  constexpr std::size_t w = batch::size;
  batch acc(T(0));
  const std::size_t full = n / w * w;
  std::size_t i = 0;
  for (; i < full; i += w) acc += batch::load_unaligned(x + i);
  T s = xsimd::hadd(acc);
  for (; i < n; ++i) s += x[i];
  return s;
}

/// y[i] = a * x[i] + b, i < n.
template <class T>
inline void scale_shift(std::size_t n, T a, const T* x, T b, T* y) noexcept {
  using batch = xsimd::batch<T>;
  constexpr std::size_t w = batch::size;
  const batch av(a), bv(b);
  const std::size_t full = n / w * w;
  std::size_t i = 0;
  for (; i < full; i += w) fmadd(av, batch::load_unaligned(x + i), bv).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = fmadd(a, x[i], b);
}

/// f(i, batch...) -> batch over n values of k input arrays, written to out. The tail (fewer
/// than one batch) goes through the same batch code on zero-padded copies, so every value
/// is computed by the same instructions wherever it sits.
template <class T, class F, class... In>
inline void map(std::size_t n, T* out, F&& f, const In*... in) {
  using batch = xsimd::batch<T>;
  constexpr std::size_t w = batch::size;
  const std::size_t full = n / w * w;
  std::size_t i = 0;
  for (; i < full; i += w) f(batch::load_unaligned(in + i)...).store_unaligned(out + i);
  if (i == n) return;
  const std::size_t r = n - i;
  auto padded = [&](const T* p) {
    alignas(64) T tmp[w] = {};
    std::copy_n(p + i, r, tmp);
    return batch::load_aligned(tmp);
  };
  alignas(64) T res[w];
  f(padded(in)...).store_aligned(res);
  std::copy_n(res, r, out + i);
}

}  // namespace ssmq::simd
