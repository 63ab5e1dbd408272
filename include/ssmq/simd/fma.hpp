#pragma once
// A fused multiply-add that is fused on every x86 SIMD level ssmq builds for. xsimd 8.1
// implements fma() with FMA instructions only for its fma3 architectures; on AVX-512 it
// falls back to x * y + z, which -ffp-contract=off (set by ssmq::ssmq) keeps unfused: half
// the speed, and a second rounding.
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

}  // namespace ssmq::simd
