#pragma once
// A fused multiply-add that is fused on every x86 SIMD level ssmq builds for. xsimd 8.1
// implements fma() with FMA instructions only for its fma3 architectures; on AVX-512 it
// falls back to x * y + z, which -ffp-contract=off (set by ssmq::ssmq) keeps unfused: half
// the speed, and a second rounding.
// The scalar overload rounds exactly like the batch one (fused where the batch one is), so
// that a loop's scalar tail, or an L = 1 special case, gives the bits its vector body would.
#include <cmath>
#include <type_traits>

#include <xsimd/xsimd.hpp>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ssmq::simd {

template <class T, class A>
[[nodiscard]] inline xsimd::batch<T, A> fmadd(const xsimd::batch<T, A>& x, const xsimd::batch<T, A>& y,
                                              const xsimd::batch<T, A>& z) noexcept {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) * xsimd::batch<T, A>::size == 64) {
    if constexpr (std::is_same_v<T, float>) return _mm512_fmadd_ps(x, y, z);
    if constexpr (std::is_same_v<T, double>) return _mm512_fmadd_pd(x, y, z);
  }
#endif
  return xsimd::fma(x, y, z);
}

/// Whether fmadd on batches is a true fused multiply-add on this target (xsimd's fma3
/// architectures, and AVX-512 through the intrinsics above); without FMA it is x * y + z.
inline constexpr bool fmadd_is_fused =
#if defined(__FMA__) || defined(__AVX512F__)
    true;
#else
    false;
#endif

/// x * y + z on scalars, rounded as the batch fmadd rounds each lane.
template <class T>
  requires std::is_floating_point_v<T>
[[nodiscard]] inline T fmadd(T x, T y, T z) noexcept {
  if constexpr (fmadd_is_fused) return std::fma(x, y, z);
  else return x * y + z;
}

}  // namespace ssmq::simd
